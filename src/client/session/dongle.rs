//! The dongle source: finding the dongles of the session's publisher, the acquire path
//! through them, and a dongle seat's keys. The dongles themselves (their connections,
//! discovery and licenses) are in [`crate::client::dongles`].

use std::sync::Arc;
use std::time::Duration;

use super::seat::{Backing, RemoteContainer};
use super::{Seat, Session, SourceKind, poisoned, sources};
use crate::cipher::{self, Header};
use crate::client::dongles::{Dongle, DongleContext, unexpected};
use crate::container::protocol::{Request, Response};
use crate::{Error, Result};

impl Session {
    /// Looks for dongles again (at open, and when an acquire finds nothing in the ones known).
    pub fn rediscover_dongles(&self) -> Result<()> {
        let i = &self.inner;
        if i.opts.sources & sources::DONGLE == 0 {
            return Ok(());
        }
        let (found, mut errors) = match i
            .env
            .host
            .trusted_fingerprint()
            .and_then(|fp| crate::client::hostkey::load_or_create(&i.env.home, fp))
        {
            Ok(host_secret) => Dongle::discover_all(&DongleContext {
                host_secret,
                host: i.env.host.clone(),
                publisher: i.opts.publisher_key,
                vendor_id: i.opts.vendor_id,
                timeout: i.opts.timeout,
            }),
            Err(e) => (Vec::new(), vec![e]),
        };
        let mut dongles = i.dongles.write().map_err(|_| poisoned())?;
        for d in found {
            if !dongles.iter().any(|k| k.serial == d.serial) {
                dongles.push(Arc::new(d));
            }
        }
        let mut e = i.dongle_errors.lock().map_err(|_| poisoned())?;
        e.clear();
        e.append(&mut errors);
        Ok(())
    }

    /// Whether enough time passed since the last look for new dongles (at most one look
    /// every two seconds, so acquires of software licenses stay cheap).
    pub(super) fn rediscovery_due(&self) -> bool {
        let Ok(mut last) = self.inner.last_discovery.lock() else {
            return false;
        };
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// The dongles this session knows.
    pub fn dongles(&self) -> Vec<Arc<Dongle>> {
        self.inner
            .dongles
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Tries the dongles for a seat; `None` when none holds the product.
    pub(super) fn acquire_from_dongles(
        &self,
        product_code: u32,
        features: u32,
        exclusive: bool,
        consider: &mut dyn FnMut(Error),
    ) -> Result<Option<Seat>> {
        let i = &self.inner;
        let now = i.env.clock.now();
        for d in self.dongles() {
            match d.is_shared() {
                Ok(false) => {}
                Ok(true) => {
                    consider(Error::DongleShared(format!(
                        "dongle {} is used by more than one host and is locked out",
                        d.serial
                    )));
                    continue;
                }
                Err(e) => {
                    consider(e);
                    continue;
                }
            }
            let lics = match d.licenses() {
                Ok(l) => l,
                Err(e) => {
                    consider(e);
                    continue;
                }
            };
            for lic in lics.into_iter().filter(|l| l.product_code == product_code) {
                // The dongle enforces its own clock and the binding on every key operation;
                // a license of another container is refused before a seat is counted.
                let checked = lic
                    .check_binding(&d.serial, d.sign_key.as_ref())
                    .and_then(|()| super::software::served_here(&lic))
                    .and_then(|()| lic.check(features, now, &i.env.host.machine, None));
                if let Err(e) = checked {
                    consider(e);
                    continue;
                }
                match self.take_seat(
                    lic,
                    Backing::Dongle(d.clone()),
                    SourceKind::Dongle,
                    exclusive,
                ) {
                    Ok(seat) => return Ok(Some(seat)),
                    Err(e) => consider(e),
                }
            }
        }
        Ok(None)
    }
}

pub(super) struct DongleLicense<'a>(pub(super) &'a Dongle, pub(super) [u8; 16]);

impl RemoteContainer for DongleLicense<'_> {
    fn derive_key(&self, header: &Header) -> Result<cipher::Key> {
        match self.0.call(&Request::DeriveKey {
            license_id: self.1,
            header: header.encode().to_vec(),
        })? {
            Response::Key(k) => Ok(zeroize::Zeroizing::new(k)),
            other => Err(unexpected(&other)),
        }
    }
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        match self.0.call(&Request::Encrypt {
            license_id: self.1,
            plaintext: plaintext.to_vec(),
        })? {
            Response::Data(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }
    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        match self.0.call(&Request::Decrypt {
            license_id: self.1,
            ciphertext: ciphertext.to_vec(),
        })? {
            Response::Data(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }
}
