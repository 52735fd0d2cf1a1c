//! What a session can see without taking a seat ([`Session::licenses`]), and an acquire
//! that waits for a seat to come free ([`Session::acquire_wait`]).

use std::time::{Duration, Instant};

use super::{Seat, Session, SourceKind, poisoned, sources};
use crate::client::seats::Registry;
use crate::container::ContainerKind;
use crate::container::engine::UseQuery;
use crate::dongle::client::DongleMode;
use crate::license::License;
use crate::net::proto::{NetRequest, NetResponse};
use crate::status::Status;
use crate::{Error, Result};

/// One license a session can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseEntry {
    /// The license (verified against the session's publisher key).
    pub license: License,
    /// Where it is.
    pub source: SourceKind,
    /// The serial of the container holding it.
    pub container_serial: String,
    /// The container kind.
    pub container_kind: ContainerKind,
    /// How the dongle is attached, for a dongle license.
    pub dongle_mode: Option<DongleMode>,
    /// The license server's name, for a network license.
    pub server: Option<String>,
    /// Seats of it in use now: on this machine for a local license, on the server for a
    /// network one.
    pub in_use: u32,
    /// What an acquire of it would meet now, free seats aside: [`Status::Ok`], or the
    /// verdict (expired, VM not allowed, clock set back, ...).
    pub verdict: Status,
    /// For a seat borrowed from a license server (source software, quantity 1): when it
    /// ends. `None` for any other license.
    pub borrowed_until: Option<u64>,
}

/// The first pause between two tries of [`Session::acquire_wait`]; it doubles up to
/// [`WAIT_MAX_PAUSE`].
const WAIT_FIRST_PAUSE: Duration = Duration::from_millis(20);
const WAIT_MAX_PAUSE: Duration = Duration::from_millis(500);

impl Session {
    /// The licenses of the session's publisher that its sources hold, verified against its
    /// publisher key, without taking a seat: software containers, dongles, then the license
    /// server (when one is configured or found). A source that cannot be read is an error
    /// only when nothing else could be listed.
    pub fn licenses(&self) -> Result<Vec<LicenseEntry>> {
        self.check_owner()?;
        let i = &self.inner;
        let now = i.env.clock.now();
        let registry = Registry::machine();
        let in_use =
            |serial: &str, lic: &License| registry.count_in_use(serial, &lic.id_hex()).unwrap_or(0);
        let verdict = |r: Result<()>| match r {
            Ok(()) => Status::Ok,
            Err(e) => Status::from_error(&e),
        };
        let mut out = Vec::new();
        let mut failure: Option<Error> = None;
        if i.opts.sources & sources::SOFTWARE != 0 {
            let query = UseQuery {
                features: 0,
                now,
                machine: i.env.host.machine.clone(),
            };
            for c in i.containers.read().map_err(|_| poisoned())?.iter() {
                let sc = c.container.read().map_err(|_| poisoned())?;
                for &idx in &c.verified {
                    let lic = sc.engine.licenses()[idx].clone();
                    out.push(LicenseEntry {
                        in_use: in_use(&c.serial, &lic),
                        verdict: verdict(sc.engine.check_use(idx, &query).map(drop)),
                        license: lic,
                        source: SourceKind::Software,
                        container_serial: c.serial.clone(),
                        container_kind: c.kind,
                        dongle_mode: None,
                        server: None,
                        borrowed_until: None,
                    });
                }
                // Borrowed seats: one seat each.
                for &idx in &c.borrowed {
                    let b = &sc.engine.borrowed()[idx];
                    let mut lic = sc.engine.borrowed_licenses()[idx].clone();
                    let pool = super::borrowed_pool_name(&lic, &b.seat_id);
                    lic.quantity = 1;
                    out.push(LicenseEntry {
                        in_use: registry.count_in_use(&c.serial, &pool).unwrap_or(0),
                        verdict: verdict(sc.engine.check_borrowed(idx, &query).map(drop)),
                        license: lic,
                        source: SourceKind::Software,
                        container_serial: c.serial.clone(),
                        container_kind: c.kind,
                        dongle_mode: None,
                        server: Some(b.server.clone()),
                        borrowed_until: Some(b.until),
                    });
                }
            }
            if let Some(e) = i.load_errors.lock().map_err(|_| poisoned())?.first() {
                failure = Some(super::clone_verdict(e));
            }
        }
        if i.opts.sources & sources::DONGLE != 0 {
            if self.dongles().is_empty() && self.rediscovery_due() {
                self.rediscover_dongles()?;
            }
            for d in self.dongles() {
                let lics = match d.is_shared() {
                    Ok(true) => Err(Error::DongleShared(format!(
                        "dongle {} is used by more than one host and is locked out",
                        d.serial
                    ))),
                    Ok(false) => d.licenses(),
                    Err(e) => Err(e),
                };
                let lics = match lics {
                    Ok(l) => l,
                    Err(e) => {
                        failure = Some(e);
                        continue;
                    }
                };
                for lic in lics {
                    let checked = lic
                        .check_binding(&d.serial, d.sign_key.as_ref())
                        .and_then(|()| lic.check(0, now, &i.env.host.machine, None));
                    out.push(LicenseEntry {
                        in_use: in_use(&d.serial, &lic),
                        verdict: verdict(checked),
                        license: lic,
                        source: SourceKind::Dongle,
                        container_serial: d.serial.clone(),
                        container_kind: ContainerKind::Dongle,
                        dongle_mode: Some(d.mode),
                        server: None,
                        borrowed_until: None,
                    });
                }
            }
        }
        if i.opts.sources & sources::NETWORK != 0 {
            match self.served_licenses(now) {
                Ok(mut v) => out.append(&mut v),
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// The licenses the license server serves, each verified against the publisher key (a
    /// listing the publisher did not sign is left out: the server's word is not trusted).
    fn served_licenses(&self, now: u64) -> Result<Vec<LicenseEntry>> {
        let i = &self.inner;
        let Some(net) = self.net_seats()? else {
            return Ok(Vec::new());
        };
        let served = match net.call(&NetRequest::Licenses {
            vendor_id: i.opts.vendor_id,
        })? {
            NetResponse::Licenses(v) => v,
            other => return Err(super::network::unexpected_net(&other)),
        };
        let server = net.server_name();
        Ok(served
            .into_iter()
            .filter_map(|s| {
                let lic = crate::license::SignedLicense::verify(&s.license, &i.opts.publisher_key)
                    .ok()?
                    .license;
                if lic.vendor_id != i.opts.vendor_id {
                    return None;
                }
                let verdict = match lic.check(0, now, &i.env.host.machine, None) {
                    Ok(()) => Status::Ok,
                    Err(e) => Status::from_error(&e),
                };
                Some(LicenseEntry {
                    license: lic,
                    source: SourceKind::Network,
                    container_kind: if s.container_serial.starts_with("DG-") {
                        ContainerKind::Dongle
                    } else {
                        ContainerKind::Software
                    },
                    container_serial: s.container_serial,
                    dongle_mode: None,
                    server: server.clone(),
                    in_use: s.in_use,
                    verdict,
                    borrowed_until: None,
                })
            })
            .collect())
    }

    /// Like [`Session::acquire`], but while the answer is that every seat is taken
    /// ([`Error::NoSeat`], or [`Error::ExclusiveDenied`] because of another holder) tries
    /// again, with pauses growing from 20 ms to 500 ms, until `timeout` has passed; then
    /// the last answer. Any other answer ends the wait at once. A zero `timeout` is one try.
    pub fn acquire_wait(
        &self,
        product_code: u32,
        features: u32,
        exclusive: bool,
        timeout: Duration,
    ) -> Result<Seat> {
        self.acquire_wait_unless(product_code, features, exclusive, timeout, &|| None)
    }

    /// [`Session::acquire_wait`] that also ends, with the error `cancelled` gives, as soon
    /// as it gives one (checked before every try: the C API's session closed meanwhile).
    pub fn acquire_wait_unless(
        &self,
        product_code: u32,
        features: u32,
        exclusive: bool,
        timeout: Duration,
        cancelled: &dyn Fn() -> Option<Error>,
    ) -> Result<Seat> {
        let deadline = Instant::now() + timeout;
        let mut pause = WAIT_FIRST_PAUSE;
        loop {
            if let Some(e) = cancelled() {
                return Err(e);
            }
            let e = match self.acquire(product_code, features, exclusive) {
                Ok(seat) => return Ok(seat),
                Err(e) => e,
            };
            let busy = match &e {
                Error::NoSeat { .. } => true,
                // Waiting helps only when a license of the product allows exclusive use.
                Error::ExclusiveDenied(_) => {
                    !exclusive || self.some_license_allows_exclusive(product_code)
                }
                _ => false,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !busy || left.is_zero() {
                return Err(e);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(WAIT_MAX_PAUSE);
        }
    }

    fn some_license_allows_exclusive(&self, product_code: u32) -> bool {
        self.licenses().is_ok_and(|v| {
            v.iter()
                .any(|l| l.license.product_code == product_code && l.license.exclusive_allowed)
        })
    }
}
