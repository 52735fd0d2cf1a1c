//! The network source: the session's seats on license servers (configured, or found by a
//! discovery broadcast), the acquire path through them, and a server seat's keys.

use std::sync::Arc;
use std::time::Duration;

use super::seat::{Backing, RemoteContainer};
use super::{Seat, Session, SourceKind, poisoned};
use crate::cipher::{self, Header};
use crate::container::ContainerKind;
use crate::net::lease::NetSeats;
use crate::net::proto::{NetRequest, NetResponse};
use crate::{Error, Result};

impl Session {
    /// The session's server seats: the servers from the options (or `TESSERA_SERVERS`), else
    /// those that answer a discovery broadcast. `None` when there is no server.
    pub(super) fn net_seats(&self) -> Result<Option<Arc<NetSeats>>> {
        let i = &self.inner;
        let mut net = i.net.lock().map_err(|_| poisoned())?;
        if let Some(n) = net.as_ref() {
            return Ok(Some(n.clone()));
        }
        let mut servers = i.opts.servers.clone();
        if servers.is_empty() {
            let wait = i.opts.timeout.min(Duration::from_millis(500));
            servers = crate::net::discovery::discover(wait, crate::net::proto::DEFAULT_PORT)
                .into_iter()
                .map(|(addr, _)| addr.to_string())
                .collect();
        }
        if servers.is_empty() {
            return Ok(None);
        }
        let n = Arc::new(self.connect_to(servers)?);
        *net = Some(n.clone());
        Ok(Some(n))
    }

    /// Seats on `servers` as this host (nothing connects yet).
    pub(super) fn connect_to(&self, servers: Vec<String>) -> Result<NetSeats> {
        let i = &self.inner;
        let host_secret =
            crate::client::hostkey::load_or_create(&i.env.home, i.env.host.trusted_fingerprint()?)?;
        let h = &i.env.host;
        // A station named by a faked fingerprint means nothing: refuse, as a software
        // container does.
        let fingerprint = h.trusted_fingerprint()?;
        let client = crate::net::proto::ClientHello {
            version: crate::net::proto::PROTOCOL_VERSION,
            host: crate::net::proto::HostInfo {
                machine: h.machine.clone(),
                hostname: h.hostname.clone(),
                station: station_id(fingerprint),
                session: h.session.id.clone(),
                pid: std::process::id(),
                pid_namespace: crate::host::pid_namespace(),
            },
        };
        Ok(NetSeats::new(
            servers,
            &host_secret,
            client,
            i.opts.publisher_key,
            i.opts.vendor_id,
            i.opts.timeout,
        ))
    }

    /// Tries the license servers for a seat.
    pub(super) fn acquire_from_network(
        &self,
        product_code: u32,
        features: u32,
        exclusive: bool,
    ) -> Result<Option<Seat>> {
        let Some(net) = self.net_seats()? else {
            return Ok(None);
        };
        let i = &self.inner;
        let (seat_id, grant) = net.acquire(i.opts.vendor_id, product_code, features, exclusive)?;
        // The server proves its license with the publisher's signature, not its word.
        let lic = match crate::license::SignedLicense::verify(&grant.license, &i.opts.publisher_key)
        {
            Ok(s)
                if s.license.vendor_id == i.opts.vendor_id
                    && s.license.product_code == product_code =>
            {
                s.license
            }
            _ => {
                let _ = net.release(seat_id);
                return Err(Error::Tampered(
                    "the server granted a seat of a license the publisher did not sign".into(),
                ));
            }
        };
        let container_kind = if grant.container_serial.starts_with("DG-") {
            ContainerKind::Dongle
        } else {
            ContainerKind::Software
        };
        Ok(Some(Seat {
            session: self.clone(),
            backing: Backing::Network {
                net,
                seat_id,
                container_serial: grant.container_serial,
                container_kind,
            },
            license: lic,
            local: None,
            source: SourceKind::Network,
            exclusive,
        }))
    }
}

/// One id per physical or virtual machine: a digest of its fingerprint traits.
pub fn station_id(fp: &crate::host::Fingerprint) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tessera station v1");
    for (_, d) in fp.digests(b"station") {
        h.update(d);
    }
    h.finalize().into()
}

pub(super) struct ServerSeat<'a>(pub(super) &'a NetSeats, pub(super) [u8; 16]);

pub(super) fn unexpected_net(r: &NetResponse) -> Error {
    Error::malformed("server answer", format!("unexpected answer {r:?}"))
}

impl RemoteContainer for ServerSeat<'_> {
    fn derive_key(&self, header: &Header) -> Result<cipher::Key> {
        let req = NetRequest::DeriveKey {
            seat_id: self.1,
            header: header.encode().to_vec(),
        };
        match self.0.call_for_seat(self.1, req)? {
            NetResponse::Key(k) => Ok(zeroize::Zeroizing::new(k)),
            other => Err(unexpected_net(&other)),
        }
    }
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let req = NetRequest::Encrypt {
            seat_id: self.1,
            plaintext: plaintext.to_vec(),
        };
        match self.0.call_for_seat(self.1, req)? {
            NetResponse::Data(d) => Ok(d),
            other => Err(unexpected_net(&other)),
        }
    }
    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let req = NetRequest::Decrypt {
            seat_id: self.1,
            ciphertext: ciphertext.to_vec(),
        };
        match self.0.call_for_seat(self.1, req)? {
            NetResponse::Data(d) => Ok(d),
            other => Err(unexpected_net(&other)),
        }
    }
}
