//! The network source: the session's seats on license servers (configured, or found by a
//! discovery broadcast), the acquire path through them, and a server seat's keys.
//!
//! A network seat encrypts and decrypts in the app with keys it keeps
//! ([`crate::net::seat_keys`]): format 2 under its own seat key, fetched once when it is
//! acquired; other seats' format-2 ciphertext and format-1 ciphertext with keys fetched the
//! first time it opens them. While its lease runs, what needs no new key works with the
//! server out of reach (`docs/SERVER.md`, "Offline: a held seat without its server").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeroize::Zeroizing;

use super::seat::{Backing, RemoteContainer, copy_out};
use super::{Seat, Session, SourceKind, poisoned};
use crate::cipher::{self, Header, Mode};
use crate::container::ContainerKind;
use crate::net::lease::NetSeats;
use crate::net::proto::{NetRequest, NetResponse};
use crate::net::seat_keys::{Own, SeatKeys};
use crate::status::Status;
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
        // The seat's own seat key, fetched now while the server is surely there. A failure
        // here is not the acquire's: the first encryption asks again.
        if let Err(e) = NetworkSeat::new(&net, seat_id).own_key() {
            tracing::debug!(error = %e, "no seat key yet");
        }
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

/// A network seat's operations.
pub(super) struct NetworkSeat<'a> {
    net: &'a NetSeats,
    seat_id: [u8; 16],
}

fn lock_keys(k: &Mutex<SeatKeys>) -> std::sync::MutexGuard<'_, SeatKeys> {
    k.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a server's error means it does not know seat keys (an older server, or an older
/// container under it): its request did not decode.
fn no_seat_keys(e: &Error) -> bool {
    e.status() == Status::Malformed
}

/// A transport error while fetching a key this seat does not keep yet, said plainly: the
/// ciphertext was never opened while the server was reachable, and only the product secret in
/// the server's container opens it.
fn needs_server(e: Error) -> Error {
    const WHY: &str = "this seat has not opened this ciphertext while its license server was \
                       reachable, and opening it needs the server";
    match e {
        Error::Io {
            path,
            error: source,
        } => Error::io(format!("{WHY}: {}", path.display()), source),
        Error::Timeout(m) => Error::Timeout(format!("{WHY}: {m}")),
        other => other,
    }
}

impl<'a> NetworkSeat<'a> {
    pub(super) fn new(net: &'a NetSeats, seat_id: [u8; 16]) -> NetworkSeat<'a> {
        NetworkSeat { net, seat_id }
    }

    /// The seat's keys, if it is live (no I/O, no connection lock).
    fn keys(&self) -> Result<Arc<Mutex<SeatKeys>>> {
        self.net.keys(&self.seat_id)
    }

    fn lost() -> Error {
        Error::LeaseLost("the seat's lease ended and its keys are gone".into())
    }

    /// The own key id and seat key; `None` when the server does not hand out seat keys.
    /// Asks the server once (while it is not fetched yet).
    pub(super) fn own_key(&self) -> Result<Option<([u8; 12], cipher::Key)>> {
        let keys = self.keys()?;
        let key_id = match &lock_keys(&keys).own {
            Own::Key(id, k) => return Ok(Some((*id, Zeroizing::new(***k)))),
            Own::Unsupported => return Ok(None),
            Own::Gone => return Err(Self::lost()),
            Own::Pending(id) => *id,
        };
        let req = NetRequest::SeatKey {
            seat_id: self.seat_id,
            key_id,
        };
        let fetched = self.net.call_for_seat(self.seat_id, req);
        let mut k = lock_keys(&keys);
        match fetched {
            Ok(NetResponse::SeatKey { mut key }) => {
                if let Own::Pending(id) = k.own
                    && id == key_id
                {
                    k.own = Own::Key(key_id, Box::new(Zeroizing::new(key)));
                }
                zeroize::Zeroize::zeroize(&mut key);
                match &k.own {
                    Own::Key(id, k) => Ok(Some((*id, Zeroizing::new(***k)))),
                    Own::Gone => Err(Self::lost()),
                    _ => Err(Error::Internal(
                        "a seat key was fetched and not kept".into(),
                    )),
                }
            }
            Err(e) if no_seat_keys(&e) => {
                if matches!(k.own, Own::Pending(_)) {
                    k.own = Own::Unsupported;
                }
                Ok(None)
            }
            Ok(other) => Err(unexpected_net(&other)),
            Err(e) => Err(e),
        }
    }

    /// Encrypts: format 2 under the own seat key, locally; through the server (format 1)
    /// when it does not hand out seat keys.
    pub(super) fn encrypt(
        &self,
        (vendor_id, product_code): (u32, u32),
        mode: Mode,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        match self.own_key()? {
            Some((key_id, seat_key)) => {
                let h = Header::new_seat(mode, vendor_id, product_code, key_id);
                let key = cipher::seat_message_key(&seat_key, &h);
                cipher::seal_with_key(&key, &h, plaintext, out)
            }
            None => {
                let r = ServerSeat(self.net, self.seat_id);
                match mode {
                    Mode::Derived => {
                        let h = Header::new(mode, vendor_id, product_code);
                        let key = r.derive_key(&h)?;
                        cipher::seal_with_key(&key, &h, plaintext, out)
                    }
                    Mode::Direct => copy_out(r.encrypt(plaintext)?, out),
                }
            }
        }
    }

    /// Decrypts `ct` (whose header is `header`, checked to be of the seat's product) with a
    /// key the seat keeps, else one it fetches from the server and keeps once it opened.
    pub(super) fn decrypt(&self, header: &Header, ct: &[u8], out: &mut [u8]) -> Result<usize> {
        let keys = self.keys()?;
        let encoded = header.encode();
        let kept = {
            let k = lock_keys(&keys);
            if k.is_gone() {
                return Err(Self::lost());
            }
            match header.key_id() {
                Some(id) => k
                    .seat_key(&id)
                    .map(|sk| cipher::seat_message_key(&sk, header)),
                None => k.message_key(&encoded),
            }
        };
        if let Some(key) = kept {
            return cipher::open_with_key(&key, header, ct, out);
        }
        let own = self.own_key()?;
        // The own key, fetched just now.
        if let Some((id, seat_key)) = &own
            && header.key_id() == Some(*id)
        {
            let key = cipher::seat_message_key(seat_key, header);
            return cipher::open_with_key(&key, header, ct, out);
        }
        let server_keys = own.is_some();
        let r = ServerSeat(self.net, self.seat_id);
        match header.key_id() {
            Some(key_id) => {
                let req = NetRequest::SeatKey {
                    seat_id: self.seat_id,
                    key_id,
                };
                let seat_key = match self.net.call_for_seat(self.seat_id, req) {
                    Ok(NetResponse::SeatKey { mut key }) => {
                        let kept = Zeroizing::new(key);
                        zeroize::Zeroize::zeroize(&mut key);
                        kept
                    }
                    Ok(other) => return Err(unexpected_net(&other)),
                    Err(e) if no_seat_keys(&e) => {
                        return Err(Error::UnknownVersion {
                            what: "ciphertext (the license server does not know format 2)",
                            found: header.version as u16,
                            supported: cipher::CIPHER_VERSION as u16,
                        });
                    }
                    Err(e) => return Err(needs_server(e)),
                };
                let n = cipher::open_with_key(
                    &cipher::seat_message_key(&seat_key, header),
                    header,
                    ct,
                    out,
                )?;
                lock_keys(&keys).keep_seat_key(key_id, &seat_key);
                Ok(n)
            }
            None if server_keys => {
                // Format 1: its message key (a server that hands out seat keys also derives
                // direct-mode headers' message keys), kept once it opened.
                let key = r.derive_key(header).map_err(needs_server)?;
                let n = cipher::open_with_key(&key, header, ct, out)?;
                lock_keys(&keys).keep_message_key(encoded, &key);
                Ok(n)
            }
            None => match header.mode {
                Mode::Derived => {
                    let key = r.derive_key(header)?;
                    cipher::open_with_key(&key, header, ct, out)
                }
                Mode::Direct => copy_out(r.decrypt(ct)?, out),
            },
        }
    }

    /// Seats in use of the seat's license: the server's answer when the connection is up
    /// and free, else (down, busy reconnecting, failing on the transport) the last answer,
    /// while the seat's lease runs.
    pub(super) fn in_use(&self) -> Result<u32> {
        let keys = self.keys()?;
        let req = NetRequest::SeatInfo {
            seat_id: self.seat_id,
        };
        match self.net.try_call_for_seat(self.seat_id, &req) {
            Some(Ok(NetResponse::Info { in_use, .. })) => {
                lock_keys(&keys).in_use = in_use;
                Ok(in_use)
            }
            Some(Ok(other)) => Err(unexpected_net(&other)),
            Some(Err(e)) => Err(e),
            None => {
                // Checked again: the lease may have run out meanwhile.
                let keys = self.keys()?;
                let k = lock_keys(&keys);
                if k.is_gone() {
                    return Err(Self::lost());
                }
                Ok(k.in_use)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::conn::tests::{LEASE_MS, Mock, PRODUCT_SECRET, VENDOR, client_hello};
    use ed25519_dalek::SigningKey;

    const PRODUCT: (u32, u32) = (VENDOR, 7);

    fn held(mock: &Mock, publisher: &SigningKey) -> (NetSeats, [u8; 16]) {
        let net = NetSeats::new(
            vec![mock.address()],
            &[5; 32],
            client_hello(),
            publisher.verifying_key(),
            VENDOR,
            Duration::from_secs(1),
        );
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        (net, id)
    }

    fn enc(s: &NetworkSeat, mode: Mode, data: &[u8]) -> Vec<u8> {
        let mut ct = vec![0u8; cipher::ciphertext_len(data.len())];
        let n = s.encrypt(PRODUCT, mode, data, &mut ct).unwrap();
        ct.truncate(n);
        ct
    }

    fn dec(s: &NetworkSeat, ct: &[u8]) -> Result<Vec<u8>> {
        let h = Header::parse(ct)?;
        let mut out = vec![0u8; cipher::plaintext_len(ct.len())];
        let n = s.decrypt(&h, ct, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    fn key_calls(m: &Mock) -> usize {
        m.state.lock().unwrap().key_calls
    }

    #[test]
    fn one_seat_key_then_no_round_trip_and_what_was_opened_opens_offline() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mut mock = Mock::start("alpha", &publisher);
        let (net, id) = held(&mock, &publisher);
        let s = NetworkSeat::new(&net, id);
        let (key_id, _) = s.own_key().unwrap().expect("a seat key");
        assert_eq!(key_calls(&mock), 1);
        for mode in [Mode::Direct, Mode::Derived] {
            for i in 0..5u8 {
                let data = [i; 33];
                let ct = enc(&s, mode, &data);
                let h = Header::parse(&ct).unwrap();
                assert_eq!((h.version, h.mode, h.key_id()), (2, mode, Some(key_id)));
                assert_eq!(dec(&s, &ct).unwrap(), data);
                assert_eq!(cipher::decrypt(&PRODUCT_SECRET, &ct).unwrap(), data);
            }
        }
        assert_eq!(key_calls(&mock), 1, "no round trip after the seat key");
        // Format 1 (a local container's) and another seat's format 2: one request each, then
        // kept; a tampered one keeps nothing.
        let f1 = cipher::encrypt(
            &PRODUCT_SECRET,
            &Header::new(Mode::Direct, VENDOR, 7),
            b"f1",
        )
        .unwrap();
        let other = cipher::encrypt(
            &PRODUCT_SECRET,
            &Header::new_seat(Mode::Derived, VENDOR, 7, [5; 12]),
            b"other",
        )
        .unwrap();
        let mut bad = cipher::encrypt(
            &PRODUCT_SECRET,
            &Header::new(Mode::Derived, VENDOR, 7),
            b"bad",
        )
        .unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        for _ in 0..3 {
            assert_eq!(dec(&s, &f1).unwrap(), b"f1");
            assert_eq!(dec(&s, &other).unwrap(), b"other");
        }
        assert_eq!(key_calls(&mock), 3);
        assert!(matches!(dec(&s, &bad), Err(Error::Tampered(_))));
        assert!(matches!(dec(&s, &bad), Err(Error::Tampered(_))));
        assert_eq!(
            key_calls(&mock),
            5,
            "a ciphertext that did not open keeps no key"
        );
        assert_eq!(lock_keys(&net.keys(&id).unwrap()).kept(), (1, 1));

        // The server gone: what needs no new key works, with its last answers.
        mock.stop();
        assert_eq!(s.in_use().unwrap(), 1);
        let ct = enc(&s, Mode::Direct, b"offline");
        assert_eq!(dec(&s, &ct).unwrap(), b"offline");
        assert_eq!(dec(&s, &f1).unwrap(), b"f1");
        assert_eq!(dec(&s, &other).unwrap(), b"other");
        let never = cipher::encrypt(
            &PRODUCT_SECRET,
            &Header::new_seat(Mode::Derived, VENDOR, 7, [6; 12]),
            b"never",
        )
        .unwrap();
        let e = dec(&s, &never).unwrap_err();
        assert!(
            matches!(e, Error::Io { .. } | Error::Timeout(_))
                && e.to_string().contains("has not opened"),
            "{e}"
        );
        // Past the lease: lost, keys gone.
        std::thread::sleep(Duration::from_millis(LEASE_MS + 100));
        let mut out = [0u8; 64];
        assert!(matches!(
            s.encrypt(PRODUCT, Mode::Derived, b"x", &mut out),
            Err(Error::LeaseLost(_))
        ));
        assert!(matches!(dec(&s, &ct), Err(Error::LeaseLost(_))));
        assert!(matches!(s.in_use(), Err(Error::LeaseLost(_))));
    }

    #[test]
    fn a_server_without_seat_keys_is_asked_for_every_message_as_before() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mock = Mock::start("alpha", &publisher);
        mock.state.lock().unwrap().old = true;
        let (net, id) = held(&mock, &publisher);
        let s = NetworkSeat::new(&net, id);
        assert!(s.own_key().unwrap().is_none());
        assert!(s.own_key().unwrap().is_none());
        assert_eq!(key_calls(&mock), 1, "asked once");
        for mode in [Mode::Direct, Mode::Derived] {
            let ct = enc(&s, mode, b"as before");
            let h = Header::parse(&ct).unwrap();
            assert_eq!((h.version, h.mode), (1, mode));
            assert_eq!(dec(&s, &ct).unwrap(), b"as before");
            assert_eq!(cipher::decrypt(&PRODUCT_SECRET, &ct).unwrap(), b"as before");
        }
        assert_eq!(
            key_calls(&mock),
            5,
            "one request an encryption, one a decryption"
        );
        // Format 2 needs a server that knows it: a clear refusal.
        let v2 = cipher::encrypt(
            &PRODUCT_SECRET,
            &Header::new_seat(Mode::Derived, VENDOR, 7, [6; 12]),
            b"v2",
        )
        .unwrap();
        assert!(matches!(
            dec(&s, &v2),
            Err(Error::UnknownVersion { found: 2, .. })
        ));
    }
}
