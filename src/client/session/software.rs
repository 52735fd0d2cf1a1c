//! The software source: the publisher's software containers on this machine, loaded at open
//! (and at reload), and the acquire path through them.

use std::sync::{Arc, RwLock};

use super::seat::Backing;
use super::{Environment, Seat, Session, SessionOptions, SourceKind, poisoned, sources};
use crate::container::engine::UseQuery;
use crate::container::software::scan_for_vendor;
use crate::container::{ContainerKind, SoftwareContainer};
use crate::{Error, Result};

/// A software container of the session's publisher, opened on this machine.
pub(super) struct Loaded {
    pub(super) container: RwLock<SoftwareContainer>,
    pub(super) serial: String,
    pub(super) kind: ContainerKind,
    /// Licenses that verify against the session's publisher key.
    pub(super) verified: Vec<usize>,
    /// Borrowed seats whose grant chain verifies against the session's publisher key.
    pub(super) borrowed: Vec<usize>,
    /// Borrowed seats (product, end) that had ended when the container was loaded: the save
    /// of the clock mark drops them, and an acquire of their product says they ended.
    pub(super) ended: Vec<(u32, u64)>,
}

/// Only persist the clock's high-water mark when it moved this far, to keep opens cheap.
const HIGH_WATER_PERSIST_STEP: u64 = 300;

fn load_one(env: &Environment, opts: &SessionOptions, path: &std::path::Path) -> Result<Loaded> {
    let mut c = SoftwareContainer::load(path, &env.host)?;
    if c.engine.state().vendor_id != opts.vendor_id {
        return Err(Error::WrongVendor {
            expected: opts.vendor_id,
            found: c.engine.state().vendor_id,
        });
    }
    let now = env.clock.now();
    let ended = c
        .engine
        .verified_borrowed(&opts.publisher_key, opts.vendor_id)
        .into_iter()
        .map(|i| (&c.engine.borrowed()[i], &c.engine.borrowed_licenses()[i]))
        .filter(|(b, _)| b.until <= now.max(c.engine.state().clock_high_water))
        .map(|(b, l)| (l.product_code, b.until))
        .collect();
    let persisted = c.engine.state().clock_high_water;
    c.engine.observe_clock(now);
    if now > persisted.saturating_add(HIGH_WATER_PERSIST_STEP) {
        // Best effort: a read-only home still lets the app run.
        let _ = c.update(&env.host, |e| {
            e.observe_clock(now);
            Ok(())
        });
    }
    let verified = c
        .engine
        .verified_licenses(&opts.publisher_key, opts.vendor_id);
    let borrowed = c
        .engine
        .verified_borrowed(&opts.publisher_key, opts.vendor_id);
    Ok(Loaded {
        borrowed,
        ended,
        serial: c.engine.serial().to_string(),
        kind: c.engine.state().kind,
        container: RwLock::new(c),
        verified,
    })
}

impl Session {
    /// Re-reads the software containers of the session's publisher.
    pub fn reload(&self) -> Result<()> {
        self.check_owner()?;
        let i = &self.inner;
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        if i.opts.sources & sources::SOFTWARE != 0 {
            match scan_for_vendor(&i.env.home, i.opts.vendor_id) {
                Ok(paths) => {
                    for p in paths {
                        match load_one(&i.env, &i.opts, &p) {
                            Ok(l) => loaded.push(Arc::new(l)),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        *i.containers.write().map_err(|_| poisoned())? = loaded;
        *i.load_errors.lock().map_err(|_| poisoned())? = errors;
        Ok(())
    }

    /// Tries the software containers for a seat; `None` when none holds the product.
    pub(super) fn acquire_from_software(
        &self,
        product_code: u32,
        features: u32,
        exclusive: bool,
        consider: &mut dyn FnMut(Error),
    ) -> Result<Option<Seat>> {
        let i = &self.inner;
        let now = i.env.clock.now();
        let query = UseQuery {
            features,
            now,
            machine: i.env.host.machine.clone(),
        };
        let containers = i.containers.read().map_err(|_| poisoned())?.clone();
        for c in containers {
            let mut sc = c.container.write().map_err(|_| poisoned())?;
            sc.engine.observe_clock(now);
            for &idx in &c.verified {
                let lic = sc.engine.licenses()[idx].clone();
                if lic.product_code != product_code {
                    continue;
                }
                if let Err(e) = served_here(&lic) {
                    consider(e);
                    continue;
                }
                if let Err(e) = sc.engine.check_use(idx, &query) {
                    consider(e);
                    continue;
                }
                match self.take_seat(
                    lic,
                    Backing::Software(c.clone(), idx),
                    SourceKind::Software,
                    exclusive,
                ) {
                    Ok(seat) => return Ok(Some(seat)),
                    Err(e) => consider(e),
                }
            }
            for &(product, until) in &c.ended {
                if product == product_code {
                    consider(Error::Expired { expiry: until });
                }
            }
            // Seats borrowed from a license server: one seat each, by the license's unit.
            for &idx in &c.borrowed {
                let lic = sc.engine.borrowed_licenses()[idx].clone();
                if lic.product_code != product_code {
                    continue;
                }
                if let Err(e) = sc.engine.check_borrowed(idx, &query) {
                    consider(e);
                    continue;
                }
                let b = &sc.engine.borrowed()[idx];
                // One seat, whatever the license's quantity.
                let mut lic = lic;
                lic.quantity = 1;
                let backing = Backing::Borrowed {
                    container: c.clone(),
                    seat_id: b.seat_id,
                    until: b.until,
                    server: b.server.clone(),
                };
                match self.take_seat(lic, backing, SourceKind::Software, exclusive) {
                    Ok(seat) => return Ok(Some(seat)),
                    Err(e) => consider(e),
                }
            }
        }
        Ok(None)
    }
}

/// A pool license (`Binding::Pool`) is served by the pool's license servers, which count it
/// once across the members; the member machines' containers do not serve it to local apps
/// (each would count its own seats).
pub(super) fn served_here(lic: &crate::license::License) -> Result<()> {
    match lic.binding.pool() {
        Some((pool, _)) => Err(Error::NoLicense(format!(
            "license {} belongs to pool {pool}: its seats come from the pool's license servers, not from this machine's container",
            lic.id_hex()
        ))),
        None => Ok(()),
    }
}
