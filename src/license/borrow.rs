//! Borrowing: a seat of a network license lent, for some days, by the container that holds
//! the license (on a license server) to a container of the borrowing machine (envelope kind
//! `Borrow`, signed with the lending container's own key).
//!
//! The chain a borrowing runtime checks ([`BorrowGrant::verify`]): the publisher key checks
//! the lender's certificate; the certificate's key checks the grant; the publisher key checks
//! the license inside it, which must be bound to that same container and allow borrowing for
//! at least the days lent. The product secret travels sealed to the borrowing container's
//! X25519 key, bound to its serial and the seat id ([`secret_context`]), exactly as an
//! activation carries secrets: only the borrowing container, on the machine it is bound to,
//! opens it.
//!
//! A return ([`return_message`]) is signed by the borrowing container, so only the holder of
//! the seat gives it back.

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::activation::ActivationRequest;
use super::certificate::ContainerCertificate;
use super::envelope::{self, Envelope, Kind};
use super::model::{License, SignedLicense};
use crate::cipher::SealedSecret;
use crate::util::format_time;
use crate::{Error, Result};

/// Seconds in a day of borrowing.
pub const DAY: u64 = 86_400;

/// A seat lent to another machine's container until `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BorrowGrant {
    /// The seat id the license server counts it under.
    pub seat_id: [u8; 16],
    /// The publisher.
    pub vendor_id: u32,
    /// The publisher-signed license it is a seat of (bound to the lender).
    pub license: Vec<u8>,
    /// The lending container's serial.
    pub lender_serial: String,
    /// The borrowing container's serial.
    pub borrower_serial: String,
    /// The borrowing container's Ed25519 key (a return is signed with it).
    pub borrower_key: [u8; 32],
    /// The borrowing machine's host name, for people.
    pub borrower_host: String,
    /// When it was lent (Unix seconds).
    pub issued_at: u64,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// The product secret, sealed to the borrowing container ([`secret_context`]).
    pub secret: SealedSecret,
}

/// What a sealed product secret of a borrowed seat is bound to: the borrowing container and
/// the seat.
pub fn secret_context(borrower_serial: &str, seat_id: &[u8; 16]) -> Vec<u8> {
    let mut c = b"tessera borrow ".to_vec();
    c.extend_from_slice(borrower_serial.as_bytes());
    c.push(0);
    c.extend_from_slice(seat_id);
    c
}

/// The message a borrowing container signs to give seat `seat_id` back early.
pub fn return_message(seat_id: &[u8; 16]) -> Vec<u8> {
    let mut m = b"tessera return borrowed seat ".to_vec();
    m.extend_from_slice(seat_id);
    m
}

/// Checks a return signature by `borrower_key` for `seat_id`.
pub fn verify_return(borrower_key: &[u8; 32], seat_id: &[u8; 16], signature: &[u8]) -> Result<()> {
    let bad = || Error::BadSignature("the return is not signed by the borrowing container".into());
    let key = VerifyingKey::from_bytes(borrower_key).map_err(|_| bad())?;
    let sig: [u8; 64] = signature.try_into().map_err(|_| bad())?;
    key.verify_strict(&return_message(seat_id), &Signature::from_bytes(&sig))
        .map_err(|_| bad())
}

/// Reads a borrowing container's activation request (`NetRequest::Borrow::borrower`,
/// `Request::Lend::borrower`): it must be signed by the key it names (so the sender holds
/// that container's key) and name `vendor_id`.
pub fn read_borrower(bytes: &[u8], vendor_id: u32) -> Result<ActivationRequest> {
    let env = Envelope::parse(Kind::ActivationRequest, bytes)?;
    let req: ActivationRequest = env.decode()?;
    let key = VerifyingKey::from_bytes(&req.sign_key)
        .map_err(|_| Error::BadSignature("the borrowing container names an invalid key".into()))?;
    env.verify(&key)?;
    if req.vendor_id != vendor_id {
        return Err(Error::WrongVendor {
            expected: vendor_id,
            found: req.vendor_id,
        });
    }
    Ok(req)
}

/// The longest borrowing `license` allows from `now`, capped by its expiry. `Err` when it is
/// not borrowable, or `days` is 0 or beyond what it allows.
pub fn borrow_until(license: &License, days: u32, now: u64) -> Result<u64> {
    if license.borrow_days == 0 {
        return Err(Error::NoLicense(format!(
            "license {} of product {} does not allow borrowing",
            license.id_hex(),
            license.product_code
        )));
    }
    if days == 0 || days > u32::from(license.borrow_days) {
        return Err(Error::InvalidArgument(format!(
            "a seat of product {} may be borrowed for 1 to {} days, not {days}",
            license.product_code, license.borrow_days
        )));
    }
    let until = now.saturating_add(u64::from(days) * DAY);
    Ok(match license.expiry {
        Some(e) => until.min(e),
        None => until,
    })
}

impl BorrowGrant {
    /// Signs the grant with the lending container's key.
    pub fn sign(&self, container_key: &SigningKey) -> Result<Vec<u8>> {
        envelope::sign(Kind::Borrow, self, container_key)
    }

    /// Parses without checking anything (for display).
    pub fn parse_unverified(bytes: &[u8]) -> Result<BorrowGrant> {
        Envelope::parse(Kind::Borrow, bytes)?.decode()
    }

    /// Verifies a grant and the lender's certificate against `publisher` for `vendor_id`,
    /// for the borrowing container `borrower_serial` with key `borrower_key`. Returns the
    /// grant and its license.
    pub fn verify(
        bytes: &[u8],
        certificate: &[u8],
        publisher: &VerifyingKey,
        vendor_id: u32,
        borrower_serial: &str,
        borrower_key: &[u8; 32],
    ) -> Result<(BorrowGrant, License)> {
        let cert: ContainerCertificate = Envelope::open(Kind::Certificate, certificate, publisher)?;
        if cert.vendor_id != vendor_id {
            return Err(Error::WrongVendor {
                expected: vendor_id,
                found: cert.vendor_id,
            });
        }
        let ck = VerifyingKey::from_bytes(&cert.sign_key).map_err(|_| {
            Error::BadSignature("certificate names an invalid container key".into())
        })?;
        let g: BorrowGrant = Envelope::open(Kind::Borrow, bytes, &ck)?;
        if g.vendor_id != vendor_id {
            return Err(Error::WrongVendor {
                expected: vendor_id,
                found: g.vendor_id,
            });
        }
        if g.lender_serial != cert.serial {
            return Err(Error::BindingMismatch(
                "the borrowed seat and the certificate name different containers".into(),
            ));
        }
        if g.borrower_serial != borrower_serial || g.borrower_key != *borrower_key {
            return Err(Error::BindingMismatch(format!(
                "the borrowed seat is for container {}, not {borrower_serial}",
                g.borrower_serial
            )));
        }
        let s = SignedLicense::verify(&g.license, publisher)?;
        s.check_vendor(vendor_id)?;
        s.license
            .check_binding(&cert.serial, Some(&cert.sign_key))?;
        if g.secret.vendor_id != vendor_id || g.secret.product_code != s.license.product_code {
            return Err(Error::BindingMismatch(
                "the sealed secret is for another product".into(),
            ));
        }
        if g.until <= g.issued_at || g.until - g.issued_at > u64::from(s.license.borrow_days) * DAY
        {
            return Err(Error::BindingMismatch(format!(
                "the seat is lent for longer than the license allows ({} days)",
                s.license.borrow_days
            )));
        }
        Ok((g, s.license))
    }
}

impl std::fmt::Display for BorrowGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "borrowed seat {}", hex::encode(self.seat_id))?;
        writeln!(f, "  vendor:      {:#x}", self.vendor_id)?;
        writeln!(f, "  product:     {}", self.secret.product_code)?;
        writeln!(f, "  lender:      {}", self.lender_serial)?;
        writeln!(
            f,
            "  borrower:    {} on {}",
            self.borrower_serial, self.borrower_host
        )?;
        writeln!(f, "  from:        {}", format_time(self.issued_at))?;
        write!(f, "  until:       {}", format_time(self.until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::{Binding, CountingUnit, VmPolicy};

    const NOW: u64 = 1_800_000_000;

    struct World {
        publisher: SigningKey,
        lender: SigningKey,
        cert: Vec<u8>,
        license: License,
        borrower: SigningKey,
    }

    fn world(borrow_days: u16) -> World {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let lender = SigningKey::from_bytes(&[2; 32]);
        let cert = envelope::sign(
            Kind::Certificate,
            &ContainerCertificate {
                vendor_id: 42,
                serial: "SW-LENDER".into(),
                kind: crate::license::ContainerKind::Software,
                sign_key: lender.verifying_key().to_bytes(),
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
            features: 1,
            quantity: 2,
            counting_unit: CountingUnit::Station,
            exclusive_allowed: false,
            issued_at: NOW,
            expiry: None,
            vm_policy: VmPolicy::Allow,
            binding: Binding::Container {
                serial: "SW-LENDER".into(),
                key: lender.verifying_key().to_bytes(),
            },
            borrow_days,
        };
        World {
            publisher,
            lender,
            cert,
            license,
            borrower: SigningKey::from_bytes(&[6; 32]),
        }
    }

    fn grant(w: &World, days: u32) -> BorrowGrant {
        let bk = w.borrower.verifying_key().to_bytes();
        BorrowGrant {
            seat_id: [8; 16],
            vendor_id: 42,
            license: w.license.sign(&w.publisher).unwrap().bytes,
            lender_serial: "SW-LENDER".into(),
            borrower_serial: "SW-BORROWER".into(),
            borrower_key: bk,
            borrower_host: "laptop".into(),
            issued_at: NOW,
            until: NOW + u64::from(days) * DAY,
            secret: crate::cipher::seal_secret(
                &[9; 32],
                42,
                7,
                &secret_context("SW-BORROWER", &[8; 16]),
                &[10; 32],
            )
            .unwrap(),
        }
    }

    fn verify(w: &World, bytes: &[u8]) -> Result<(BorrowGrant, License)> {
        BorrowGrant::verify(
            bytes,
            &w.cert,
            &w.publisher.verifying_key(),
            42,
            "SW-BORROWER",
            &w.borrower.verifying_key().to_bytes(),
        )
    }

    #[test]
    fn a_grant_verifies_through_the_chain_and_nothing_else_does() {
        let w = world(3);
        let g = grant(&w, 3);
        let bytes = g.sign(&w.lender).unwrap();
        let (back, lic) = verify(&w, &bytes).unwrap();
        assert_eq!(back, g);
        assert_eq!(lic.borrow_days, 3);
        // Signed by someone other than the lending container.
        assert!(matches!(
            verify(&w, &g.sign(&w.borrower).unwrap()),
            Err(Error::BadSignature(_))
        ));
        // For another borrowing container.
        let e = BorrowGrant::verify(
            &bytes,
            &w.cert,
            &w.publisher.verifying_key(),
            42,
            "SW-OTHER",
            &w.borrower.verifying_key().to_bytes(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::BindingMismatch(_)), "{e}");
        // Another vendor.
        assert!(
            BorrowGrant::verify(
                &bytes,
                &w.cert,
                &w.publisher.verifying_key(),
                43,
                "SW-BORROWER",
                &w.borrower.verifying_key().to_bytes()
            )
            .is_err()
        );
        // Longer than the license allows, even if the lender signs it.
        let long = grant(&w, 4);
        assert!(matches!(
            verify(&w, &long.sign(&w.lender).unwrap()),
            Err(Error::BindingMismatch(_))
        ));
        // A license bound to another container.
        let mut other = w.license.clone();
        other.binding = Binding::Container {
            serial: "SW-ELSE".into(),
            key: [0; 32],
        };
        let mut g2 = grant(&w, 1);
        g2.license = other.sign(&w.publisher).unwrap().bytes;
        assert!(matches!(
            verify(&w, &g2.sign(&w.lender).unwrap()),
            Err(Error::BindingMismatch(_))
        ));
        // Every flipped bit is refused.
        for i in (0..bytes.len() * 8).step_by(7) {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(verify(&w, &bad).is_err(), "bit {i}");
        }
    }

    #[test]
    fn borrowing_is_limited_by_the_license() {
        let w = world(0);
        assert!(matches!(
            borrow_until(&w.license, 1, NOW),
            Err(Error::NoLicense(_))
        ));
        let mut l = world(5).license;
        assert_eq!(borrow_until(&l, 5, NOW).unwrap(), NOW + 5 * DAY);
        assert!(matches!(
            borrow_until(&l, 6, NOW),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            borrow_until(&l, 0, NOW),
            Err(Error::InvalidArgument(_))
        ));
        l.expiry = Some(NOW + DAY);
        assert_eq!(borrow_until(&l, 5, NOW).unwrap(), NOW + DAY);
    }

    #[test]
    fn only_the_borrower_returns() {
        use ed25519_dalek::Signer;
        let w = world(3);
        let bk = w.borrower.verifying_key().to_bytes();
        let sig = w.borrower.sign(&return_message(&[8; 16]));
        verify_return(&bk, &[8; 16], &sig.to_bytes()).unwrap();
        assert!(verify_return(&bk, &[9; 16], &sig.to_bytes()).is_err());
        let other = w.lender.sign(&return_message(&[8; 16]));
        assert!(verify_return(&bk, &[8; 16], &other.to_bytes()).is_err());
        assert!(verify_return(&bk, &[8; 16], &[0; 10]).is_err());
    }
}
