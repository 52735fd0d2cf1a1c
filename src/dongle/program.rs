//! Programming a dongle: the publisher's tool certifies it for the publisher and writes
//! licenses and sealed product secrets into it, over the secure channel. The dongle writes
//! its new state atomically, so an interrupted programming leaves the old licenses or the
//! new ones.

use std::time::Duration;

use super::client::{Connection, Endpoint, discover};
use crate::channel::{HostHello, Trust};
use crate::container::protocol::{Request, Response};
use crate::publisher::{LicenseSpec, PublisherKey};
use crate::{Error, Result};

/// What programming did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programmed {
    /// The dongle serial.
    pub serial: String,
    /// Licenses added.
    pub added: u32,
    /// Licenses replaced.
    pub replaced: u32,
}

fn unexpected(r: &Response) -> Error {
    Error::malformed("dongle answer", format!("unexpected answer {r:?}"))
}

/// Connects to the dongle at `endpoint` as the publisher's tool (trust on first use: a blank
/// dongle has no certificate yet).
pub fn connect_for_programming(endpoint: &Endpoint, timeout: Duration) -> Result<Connection> {
    let host_secret = zeroize::Zeroizing::new(crate::util::random::<32>());
    Connection::connect(
        endpoint,
        &host_secret,
        HostHello {
            version: crate::channel::CHANNEL_VERSION,
            machine: crate::host::MachineKind::Physical,
            hostname: "tessera-vendor".into(),
        },
        Trust::FirstUse,
        timeout,
    )
}

/// Certifies the dongle for `key`'s publisher and writes `specs` into it.
pub fn program(
    key: &PublisherKey,
    conn: &mut Connection,
    specs: &[LicenseSpec],
) -> Result<Programmed> {
    if conn.vendor_id != 0 && conn.vendor_id != key.vendor_id {
        return Err(Error::WrongVendor {
            expected: key.vendor_id,
            found: conn.vendor_id,
        });
    }
    let request = match conn.call(&Request::ActivationRequest)? {
        Response::ActivationRequest(r) => r,
        other => return Err(unexpected(&other)),
    };
    let activation = key.activate(&request, specs, crate::util::now())?;
    match conn.call(&Request::Program { activation })? {
        Response::Programmed { added, replaced } => Ok(Programmed {
            serial: conn.serial.clone(),
            added,
            replaced,
        }),
        other => Err(unexpected(&other)),
    }
}

/// The dongle to program: the one with `serial` (or at that socket path / mount point), or
/// the only dongle attached when none is named.
pub fn find(which: Option<&str>, timeout: Duration) -> Result<Connection> {
    let endpoints = discover();
    let mut seen = Vec::new();
    for ep in &endpoints {
        let named = match (which, ep) {
            (None, _) => true,
            (Some(w), Endpoint::Socket(p) | Endpoint::Msd(p)) if p.to_string_lossy() == w => true,
            (Some(w), Endpoint::Hid(p)) if p == w => true,
            _ => false,
        };
        match connect_for_programming(ep, timeout) {
            Ok(c) if named || which == Some(c.serial.as_str()) => seen.push(c),
            Ok(_) => {}
            Err(e) if named && which.is_some() => return Err(e),
            Err(_) => {}
        }
    }
    match seen.len() {
        1 => Ok(seen.remove(0)),
        0 => Err(Error::NoLicense(match which {
            Some(w) => format!("no dongle {w} is attached"),
            None => "no dongle is attached".into(),
        })),
        n => Err(Error::InvalidArgument(format!(
            "{n} dongles are attached ({}); name one with --dongle SERIAL",
            seen.iter()
                .map(|c| c.serial.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
