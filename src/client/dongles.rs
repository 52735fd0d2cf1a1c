//! The dongle source of a session: the dongles attached to this machine, connected lazily
//! over their secure channel, their licenses checked against the app's publisher key, and a
//! reconnect after an unplug (the call that finds the dongle gone fails with a clear status;
//! the next one finds it again).

use std::sync::Mutex;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use crate::channel::{HostHello, Trust};
use crate::container::protocol::{Request, Response};
use crate::dongle::client::{Connection, DongleMode, Endpoint, discover};
use crate::host::HostIdentity;
use crate::license::{License, SignedLicense};
use crate::{Error, Result};

/// What a dongle connection needs from the session.
#[derive(Clone)]
pub struct DongleContext {
    /// The runtime's host key.
    pub host_secret: zeroize::Zeroizing<[u8; 32]>,
    /// This machine.
    pub host: HostIdentity,
    /// The publisher key the app trusts.
    pub publisher: VerifyingKey,
    /// The publisher's vendor id.
    pub vendor_id: u32,
    /// Per-operation timeout.
    pub timeout: Duration,
}

/// One dongle seen by a session.
pub struct Dongle {
    ctx: DongleContext,
    endpoint: Mutex<Endpoint>,
    conn: Mutex<Option<Connection>>,
    /// The dongle serial.
    pub serial: String,
    /// The dongle's Ed25519 key from its verified certificate, when it presented one.
    pub sign_key: Option<[u8; 32]>,
    /// How it is attached.
    pub mode: DongleMode,
    /// The process that connected: a forked child must not run the connection's
    /// destructors (see `Drop`).
    owner: crate::util::process::Owner,
}

impl Drop for Dongle {
    /// In a forked child the connection is the parent's: its transport's destructor may
    /// wait for a thread the child does not have (libusb's event thread) or take a lock a
    /// parent thread held at the fork (hidapi's). It is forgotten, unrun (`get_mut` takes
    /// no lock); the child's copies of its descriptors close at exit or exec.
    fn drop(&mut self) {
        if !self.owner.is_current() {
            let conn = match self.conn.get_mut() {
                Ok(c) => c.take(),
                Err(p) => p.into_inner().take(),
            };
            std::mem::forget(conn);
        }
    }
}

impl std::fmt::Debug for Dongle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dongle")
            .field("serial", &self.serial)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn hello(host: &HostIdentity) -> HostHello {
    HostHello {
        version: crate::channel::CHANNEL_VERSION,
        machine: host.machine.clone(),
        hostname: host.hostname.clone(),
    }
}

fn connect(ctx: &DongleContext, ep: &Endpoint) -> Result<Connection> {
    Connection::connect(
        ep,
        &ctx.host_secret,
        hello(&ctx.host),
        Trust::Publisher {
            key: &ctx.publisher,
            vendor_id: ctx.vendor_id,
            now: crate::util::now(),
        },
        ctx.timeout,
    )
}

/// Whether an error means the dongle went away (so the connection is dropped and the next
/// call reconnects), rather than a verdict.
fn is_link_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. } | Error::Timeout(_) | Error::Malformed { .. } | Error::Tampered(_)
    )
}

impl Dongle {
    /// Connects to every attached dongle of the publisher. Dongles of other publishers,
    /// forged or expired certificates are skipped; their errors are returned for reporting.
    pub fn discover_all(ctx: &DongleContext) -> (Vec<Dongle>, Vec<Error>) {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for ep in discover() {
            match connect(ctx, &ep) {
                Ok(c) => found.push(Dongle {
                    ctx: ctx.clone(),
                    serial: c.serial.clone(),
                    sign_key: c.certificate.as_ref().map(|cert| cert.sign_key),
                    mode: c.mode(),
                    endpoint: Mutex::new(ep),
                    conn: Mutex::new(Some(c)),
                    owner: crate::util::process::Owner::current(),
                }),
                // Another publisher's dongle is not this session's business: it is no
                // more a reason to refuse than an empty USB port.
                Err(Error::WrongVendor { .. }) => {}
                Err(e) => errors.push(e),
            }
        }
        (found, errors)
    }

    /// Sends `req`, reconnecting first if the last call lost the dongle. A link failure
    /// drops the connection and is returned as it is (a clear status); the next call tries
    /// again, also at the dongle's other endpoints (replugged elsewhere, or in another mode).
    pub fn call(&self, req: &Request) -> Result<Response> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| Error::Internal("dongle lock poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(self.reconnect()?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(Error::Internal("no dongle connection".into()));
        };
        match conn.call(req) {
            Ok(r) => Ok(r),
            Err(e) => {
                if is_link_error(&e) {
                    *guard = None;
                }
                Err(e)
            }
        }
    }

    fn reconnect(&self) -> Result<Connection> {
        let ep = self
            .endpoint
            .lock()
            .map_err(|_| Error::Internal("dongle lock poisoned".into()))?
            .clone();
        let mut last = match connect(&self.ctx, &ep) {
            Ok(c) if c.serial == self.serial => return Ok(c),
            Ok(_) => Error::NoLicense(format!("dongle {} is no longer attached", self.serial)),
            Err(e) => e,
        };
        for other in discover().into_iter().filter(|e| *e != ep) {
            match connect(&self.ctx, &other) {
                Ok(c) if c.serial == self.serial => {
                    if let Ok(mut e) = self.endpoint.lock() {
                        *e = other;
                    }
                    return Ok(c);
                }
                Ok(_) => {}
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Whether the dongle says it is shared by several hosts.
    pub fn is_shared(&self) -> Result<bool> {
        match self.call(&Request::Identify)? {
            Response::Identity { shared, .. } => Ok(shared),
            other => Err(unexpected(&other)),
        }
    }

    /// The dongle's licenses of the session's publisher that verify against its key.
    pub fn licenses(&self) -> Result<Vec<License>> {
        let list = crate::dongle::client::list_all_licenses(|r| self.call(r))?;
        Ok(list
            .iter()
            .filter_map(|b| SignedLicense::verify(b, &self.ctx.publisher).ok())
            .filter(|s| s.license.vendor_id == self.ctx.vendor_id)
            .map(|s| s.license)
            .collect())
    }
}

/// An answer of the wrong kind.
pub fn unexpected(r: &Response) -> Error {
    Error::malformed("dongle answer", format!("unexpected answer {r:?}"))
}
