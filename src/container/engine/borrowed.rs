//! Borrowed seats in the engine: a seat of a network license that the container holding the
//! license (on a license server) lent to this container until a time (`license::borrow`).
//!
//! Installing one checks the whole chain ([`BorrowGrant::verify`]: publisher → lender's
//! certificate → grant → publisher-signed license, lent to this very container) and opens the
//! product secret sealed to this container's key for the seat. A borrowed seat is served
//! until its `until` (and never past the license's own expiry), and refused when the clock
//! runs behind the container's high-water mark, so setting the clock back after it ran out
//! does not bring it back. A borrowed seat whose `until` the high-water mark has passed is
//! dropped from the state ([`Engine::prune_borrowed`], on every save of a software container).

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{CLOCK_TOLERANCE_SECS, Engine, UseQuery};
use crate::cipher::{self, Header, Key, Mode};
use crate::license::borrow::secret_context;
use crate::license::{BorrowGrant, License, SignedLicense};
use crate::{Error, Result};

/// A borrowed seat as stored in the engine: the verified grant and the lender's certificate
/// as they came, what they say, and the opened product secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct BorrowedSeat {
    /// The seat id the license server counts it under.
    pub seat_id: [u8; 16],
    /// The lending container's signed grant (envelope kind `Borrow`).
    pub grant: Vec<u8>,
    /// The lending container's publisher-signed certificate.
    pub certificate: Vec<u8>,
    /// When the seat ends (Unix seconds).
    pub until: u64,
    /// The license server it was borrowed from (`host:port`, for people and for the return).
    pub server: String,
    /// The product secret, opened from the grant.
    pub secret: [u8; 32],
}

impl Drop for BorrowedSeat {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl std::fmt::Debug for BorrowedSeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BorrowedSeat")
            .field("seat_id", &hex::encode(self.seat_id))
            .field("until", &self.until)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The license of a stored borrowed seat (its signatures were checked when it was installed).
pub(super) fn borrowed_license(b: &BorrowedSeat) -> Result<License> {
    let g = BorrowGrant::parse_unverified(&b.grant)?;
    SignedLicense::parse_unverified(&g.license)
}

impl Engine {
    /// Verifies a borrowed seat's grant against `publisher` (lent to this container, by a
    /// container the publisher certified, of a license the publisher signed), opens its
    /// product secret and stores it; a grant for a seat id already held replaces it (a
    /// retried borrow). `server` says where it came from. Refused (`Expired`) when the seat
    /// has already ended at `now`, and (`ClockRollback`) when `now` is behind the clock's
    /// high-water mark. Pins `publisher` as the container's publisher key when none is
    /// pinned yet; a container pinned to another key refuses it. All or nothing. Returns the
    /// grant and its license.
    pub fn install_borrowed(
        &mut self,
        grant: &[u8],
        certificate: &[u8],
        publisher: &VerifyingKey,
        server: &str,
        now: u64,
    ) -> Result<(BorrowGrant, License)> {
        if let Some(p) = self.state.publisher_key
            && p != publisher.to_bytes()
        {
            return Err(Error::BadSignature(
                "this container was activated by another publisher key".into(),
            ));
        }
        let (g, lic) = BorrowGrant::verify(
            grant,
            certificate,
            publisher,
            self.state.vendor_id,
            &self.state.serial,
            &self.sign_key().to_bytes(),
        )?;
        if now.saturating_add(CLOCK_TOLERANCE_SECS) < self.state.clock_high_water {
            return Err(Error::ClockRollback {
                now,
                high_water: self.state.clock_high_water,
            });
        }
        if now >= g.until {
            return Err(Error::Expired { expiry: g.until });
        }
        let secret: Zeroizing<[u8; 32]> = cipher::open_secret(
            &self.seal,
            &secret_context(&self.state.serial, &g.seat_id),
            &g.secret,
        )?;
        let stored = BorrowedSeat {
            seat_id: g.seat_id,
            grant: grant.to_vec(),
            certificate: certificate.to_vec(),
            until: g.until,
            server: server.to_string(),
            secret: *secret,
        };
        match self.borrowed_index(&g.seat_id) {
            Some(i) => {
                self.state.borrowed[i] = stored;
                self.borrowed[i] = lic.clone();
            }
            None => {
                self.state.borrowed.push(stored);
                self.borrowed.push(lic.clone());
            }
        }
        self.state.publisher_key = Some(publisher.to_bytes());
        self.observe_clock(now);
        Ok((g, lic))
    }

    /// The borrowed seats, as stored.
    pub fn borrowed(&self) -> &[BorrowedSeat] {
        &self.state.borrowed
    }

    /// The licenses of the borrowed seats, in the order of [`Engine::borrowed`].
    pub fn borrowed_licenses(&self) -> &[License] {
        &self.borrowed
    }

    /// The index of borrowed seat `seat_id`.
    pub fn borrowed_index(&self, seat_id: &[u8; 16]) -> Option<usize> {
        self.state
            .borrowed
            .iter()
            .position(|b| b.seat_id == *seat_id)
    }

    /// Indexes of the borrowed seats whose grant chain verifies against `publisher` for
    /// `vendor_id` (a state edited to hold someone else's grant serves nothing).
    pub fn verified_borrowed(&self, publisher: &VerifyingKey, vendor_id: u32) -> Vec<usize> {
        let key = self.sign_key().to_bytes();
        self.state
            .borrowed
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                BorrowGrant::verify(
                    &b.grant,
                    &b.certificate,
                    publisher,
                    vendor_id,
                    &self.state.serial,
                    &key,
                )
                .is_ok_and(|(g, _)| g.seat_id == b.seat_id && g.until == b.until)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Removes borrowed seat `seat_id`; whether it was there.
    pub fn remove_borrowed(&mut self, seat_id: &[u8; 16]) -> bool {
        match self.borrowed_index(seat_id) {
            Some(i) => {
                self.state.borrowed.remove(i);
                self.borrowed.remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes the borrowed seats that ended at or before the clock's high-water mark (the
    /// latest time the container has seen: setting the clock back does not keep them).
    /// Returns how many went.
    pub fn prune_borrowed(&mut self) -> usize {
        let mark = self.state.clock_high_water;
        let before = self.state.borrowed.len();
        let mut i = 0;
        while i < self.state.borrowed.len() {
            if self.state.borrowed[i].until <= mark {
                self.state.borrowed.remove(i);
                self.borrowed.remove(i);
            } else {
                i += 1;
            }
        }
        before - self.state.borrowed.len()
    }

    /// Checks that borrowed seat `index` may be used for `query`: `ClockRollback` when the
    /// clock runs behind the high-water mark, `Expired` (with the seat's end) from its
    /// `until` on, then the license's own checks (features, expiry, VM policy).
    pub fn check_borrowed(&self, index: usize, query: &UseQuery) -> Result<&License> {
        let (b, lic) = self.borrowed_at(index)?;
        if self.rollback
            || query.now.saturating_add(CLOCK_TOLERANCE_SECS) < self.state.clock_high_water
        {
            return Err(Error::ClockRollback {
                now: query.now,
                high_water: self.state.clock_high_water,
            });
        }
        if query.now >= b.until {
            return Err(Error::Expired { expiry: b.until });
        }
        lic.check(query.features, query.now, &query.machine, None)?;
        Ok(lic)
    }

    fn borrowed_at(&self, index: usize) -> Result<(&BorrowedSeat, &License)> {
        match (self.state.borrowed.get(index), self.borrowed.get(index)) {
            (Some(b), Some(l)) => Ok((b, l)),
            _ => Err(Error::Internal(format!(
                "no borrowed seat at index {index}"
            ))),
        }
    }

    /// The per-message key for `header` under borrowed seat `index`'s product secret. The
    /// caller has checked the seat with [`Engine::check_borrowed`].
    pub fn borrowed_message_key(&self, index: usize, header: &Header) -> Result<Key> {
        let (b, lic) = self.borrowed_at(index)?;
        if header.vendor_id != lic.vendor_id || header.product_code != lic.product_code {
            return Err(Error::NoLicense(format!(
                "ciphertext is for vendor {:#x} product {}, the seat holds vendor {:#x} product {}",
                header.vendor_id, header.product_code, lic.vendor_id, lic.product_code
            )));
        }
        Ok(cipher::message_key(&b.secret, header))
    }

    /// Encrypts in direct mode under borrowed seat `index` into `out`; returns the bytes
    /// written.
    pub fn borrowed_encrypt_direct(
        &self,
        index: usize,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        let (_, lic) = self.borrowed_at(index)?;
        let header = Header::new(Mode::Direct, lic.vendor_id, lic.product_code);
        let key = self.borrowed_message_key(index, &header)?;
        cipher::seal_with_key(&key, &header, plaintext, out)
    }

    /// Decrypts (any mode) under borrowed seat `index` into `out`; returns the plaintext
    /// length.
    pub fn borrowed_decrypt_direct(
        &self,
        index: usize,
        ct: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        let header = Header::parse(ct)?;
        let key = self.borrowed_message_key(index, &header)?;
        cipher::open_with_key(&key, &header, ct, out)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::container::{ContainerKind, EngineState};
    use crate::host::MachineKind;
    use crate::license::borrow::DAY;
    use crate::license::envelope::{self, Kind};
    use crate::license::{Binding, ContainerCertificate, CountingUnit, VmPolicy};

    const NOW: u64 = 1_800_000_000;

    struct Lender {
        publisher: SigningKey,
        key: SigningKey,
        cert: Vec<u8>,
        license: Vec<u8>,
    }

    fn lender(borrow_days: u16, expiry: Option<u64>) -> Lender {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let key = SigningKey::from_bytes(&[2; 32]);
        let cert = envelope::sign(
            Kind::Certificate,
            &ContainerCertificate {
                vendor_id: 42,
                serial: "SW-LENDER".into(),
                kind: ContainerKind::Software,
                sign_key: key.verifying_key().to_bytes(),
                seal_key: [3; 32],
                noise_key: [4; 32],
                issued_at: NOW,
                expiry: None,
            },
            &publisher,
        )
        .unwrap();
        let license = License {
            license_id: [5; 16],
            vendor_id: 42,
            product_code: 7,
            product_name: "P".into(),
            features: 3,
            quantity: 4,
            counting_unit: CountingUnit::Station,
            exclusive_allowed: false,
            issued_at: NOW,
            expiry,
            vm_policy: VmPolicy::Allow,
            binding: Binding::Container {
                serial: "SW-LENDER".into(),
                key: key.verifying_key().to_bytes(),
            },
            borrow_days,
        }
        .sign(&publisher)
        .unwrap()
        .bytes;
        Lender {
            publisher,
            key,
            cert,
            license,
        }
    }

    const SECRET: [u8; 32] = [9; 32];

    /// What the lending container signs for `borrower`, `days` from NOW.
    fn lend(l: &Lender, borrower: &Engine, seat_id: [u8; 16], days: u64) -> Vec<u8> {
        BorrowGrant {
            seat_id,
            vendor_id: 42,
            license: l.license.clone(),
            lender_serial: "SW-LENDER".into(),
            borrower_serial: borrower.serial().into(),
            borrower_key: borrower.sign_key().to_bytes(),
            borrower_host: "laptop".into(),
            issued_at: NOW,
            until: NOW + days * DAY,
            secret: cipher::seal_secret(
                &borrower.seal_key(),
                42,
                7,
                &secret_context(borrower.serial(), &seat_id),
                &SECRET,
            )
            .unwrap(),
        }
        .sign(&l.key)
        .unwrap()
    }

    fn query(now: u64) -> UseQuery {
        UseQuery {
            features: 1,
            now,
            machine: MachineKind::Physical,
        }
    }

    #[test]
    fn a_borrowed_seat_serves_until_its_end_and_not_after_even_with_the_clock_set_back() {
        let l = lender(3, None);
        let pk = l.publisher.verifying_key();
        let mut e = Engine::create(ContainerKind::Software, 42, NOW);
        let g = lend(&l, &e, [7; 16], 3);
        let (grant, lic) = e
            .install_borrowed(&g, &l.cert, &pk, "srv:22630", NOW)
            .unwrap();
        assert_eq!((grant.until, lic.product_code), (NOW + 3 * DAY, 7));
        assert_eq!(e.state().publisher_key, Some(pk.to_bytes()), "pinned");
        assert_eq!(e.verified_borrowed(&pk, 42), vec![0]);
        assert!(
            e.verified_borrowed(&SigningKey::from_bytes(&[8; 32]).verifying_key(), 42)
                .is_empty()
        );

        // The product secret is the lender's: ciphertext written with it opens here.
        let h = Header::new(Mode::Derived, 42, 7);
        assert_eq!(
            *e.borrowed_message_key(0, &h).unwrap(),
            *cipher::message_key(&SECRET, &h)
        );
        let mut ct = vec![0; cipher::ciphertext_len(5)];
        let n = e.borrowed_encrypt_direct(0, b"hello", &mut ct).unwrap();
        let mut pt = vec![0; 5];
        assert_eq!(e.borrowed_decrypt_direct(0, &ct[..n], &mut pt).unwrap(), 5);
        assert_eq!(&pt, b"hello");
        assert!(matches!(
            e.borrowed_message_key(0, &Header::new(Mode::Derived, 42, 8)),
            Err(Error::NoLicense(_))
        ));

        // Within its days: usable; features the license lacks are not.
        let last = NOW + 3 * DAY - 1;
        e.observe_clock(last);
        e.check_borrowed(0, &query(last)).unwrap();
        let mut more = query(last);
        more.features = 4;
        assert!(matches!(
            e.check_borrowed(0, &more),
            Err(Error::FeatureMissing { .. })
        ));
        // From its end on: expired.
        let end = NOW + 3 * DAY;
        e.observe_clock(end);
        assert!(matches!(
            e.check_borrowed(0, &query(end)),
            Err(Error::Expired { expiry }) if expiry == end
        ));
        // The clock set back to within the days: refused as rolled back, not served.
        e.observe_clock(NOW + DAY);
        assert!(matches!(
            e.check_borrowed(0, &query(NOW + DAY)),
            Err(Error::ClockRollback { .. })
        ));
        // And the next save drops it.
        assert_eq!(e.prune_borrowed(), 1);
        assert!(e.borrowed().is_empty() && e.borrowed_licenses().is_empty());
    }

    #[test]
    fn only_a_grant_lent_to_this_container_installs_and_a_retry_replaces() {
        let l = lender(3, Some(NOW + DAY));
        let pk = l.publisher.verifying_key();
        let mut e = Engine::create(ContainerKind::Software, 42, NOW);
        let other = Engine::create(ContainerKind::Software, 42, NOW);
        // Lent to another container.
        let g = lend(&l, &other, [7; 16], 1);
        assert!(matches!(
            e.install_borrowed(&g, &l.cert, &pk, "s", NOW),
            Err(Error::BindingMismatch(_))
        ));
        // Another publisher key.
        let g = lend(&l, &e, [7; 16], 1);
        let wrong = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(e.install_borrowed(&g, &l.cert, &wrong, "s", NOW).is_err());
        // Already over.
        assert!(matches!(
            e.install_borrowed(&g, &l.cert, &pk, "s", NOW + DAY),
            Err(Error::Expired { .. })
        ));
        assert!(
            e.borrowed().is_empty(),
            "nothing kept from a refused install"
        );
        // The same seat twice is one seat.
        e.install_borrowed(&g, &l.cert, &pk, "s", NOW).unwrap();
        e.install_borrowed(&g, &l.cert, &pk, "s", NOW + 10).unwrap();
        assert_eq!(e.borrowed().len(), 1);
        // The license's own expiry still holds inside the borrowed days.
        assert!(matches!(
            e.check_borrowed(0, &query(NOW + DAY)),
            Err(Error::Expired { .. })
        ));
        // A container pinned to another publisher refuses it.
        let mut pinned = Engine::create(ContainerKind::Software, 42, NOW);
        pinned.state.publisher_key = Some(wrong.to_bytes());
        let g = lend(&l, &pinned, [6; 16], 1);
        assert!(matches!(
            pinned.install_borrowed(&g, &l.cert, &pk, "s", NOW),
            Err(Error::BadSignature(_))
        ));
        assert!(e.remove_borrowed(&[7; 16]));
        assert!(!e.remove_borrowed(&[7; 16]));
    }

    #[test]
    fn borrowed_seats_survive_the_state_encoding_and_a_format_2_state_loads_without_any() {
        let l = lender(3, None);
        let pk = l.publisher.verifying_key();
        let mut e = Engine::create(ContainerKind::Software, 42, NOW);
        let g = lend(&l, &e, [7; 16], 2);
        e.install_borrowed(&g, &l.cert, &pk, "srv:1", NOW).unwrap();
        let bytes = postcard::to_allocvec(e.state()).unwrap();
        let back = Engine::from_state(EngineState::decode(&bytes).unwrap()).unwrap();
        assert_eq!(back.borrowed().len(), 1);
        assert_eq!(back.borrowed()[0].secret, SECRET);
        assert_eq!(back.borrowed()[0].server, "srv:1");
        assert_eq!(back.borrowed_licenses()[0].product_code, 7);
        assert_eq!(back.verified_borrowed(&pk, 42), vec![0]);

        // Format 2 is format 3 without the borrowed seats at the end (none is one byte).
        let fresh = Engine::create(ContainerKind::Software, 42, NOW);
        let mut v2 = fresh.state().clone();
        v2.version = 2;
        v2.usage_signatures = 5;
        let mut bytes = postcard::to_allocvec(&v2).unwrap();
        assert_eq!(bytes.pop(), Some(0));
        let old = EngineState::decode(&bytes).unwrap();
        assert_eq!(
            (old.version, old.usage_signatures),
            (super::super::STATE_VERSION, 5)
        );
        assert!(old.borrowed.is_empty());
        assert_eq!(old.seal_secret, fresh.state().seal_secret);
        Engine::from_state(old).unwrap();
    }
}
