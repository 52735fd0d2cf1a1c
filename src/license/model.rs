//! The license model.

use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::envelope::{self, Envelope, Kind};
use crate::util::format_time;
use crate::{Error, Result};

/// What one seat covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CountingUnit {
    /// One machine, physical or virtual: every process on it shares one seat.
    Station,
    /// One login or terminal-server session.
    Session,
    /// One process.
    Process,
    /// Each acquire.
    Handle,
}

impl CountingUnit {
    /// Parses `station`, `session`, `process` or `handle`.
    pub fn parse(s: &str) -> Option<CountingUnit> {
        match s.to_ascii_lowercase().as_str() {
            "station" => Some(CountingUnit::Station),
            "session" => Some(CountingUnit::Session),
            "process" => Some(CountingUnit::Process),
            "handle" => Some(CountingUnit::Handle),
            _ => None,
        }
    }

    /// The stable number used in the C API (`TESSERA_UNIT_*`).
    pub fn code(self) -> u32 {
        match self {
            CountingUnit::Station => 1,
            CountingUnit::Session => 2,
            CountingUnit::Process => 3,
            CountingUnit::Handle => 4,
        }
    }
}

impl fmt::Display for CountingUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CountingUnit::Station => "station",
            CountingUnit::Session => "session",
            CountingUnit::Process => "process",
            CountingUnit::Handle => "handle",
        })
    }
}

/// Whether a license may be used on a virtual machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmPolicy {
    /// Virtual machines are allowed (each counts as a machine of its own).
    Allow,
    /// Virtual machines are refused.
    Deny,
}

impl fmt::Display for VmPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmPolicy::Allow => "allowed",
            VmPolicy::Deny => "denied",
        })
    }
}

/// What a license is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Binding {
    /// Usable only in the container with this serial and signing key.
    Container {
        /// The container serial.
        serial: String,
        /// The container's Ed25519 public key.
        key: [u8; 32],
    },
    /// Usable in every member container of a license-server pool: the same license (one
    /// license id, one quantity) in each member's container, counted once in the pool's
    /// shared seat table. A member grants seats only while a strict majority of these
    /// members are registered in the pool's etcd cluster (`server::pool::members`), so the
    /// publisher's signature over this list is what stops a split pool from counting twice.
    /// (Variants are numbered on the wire: new ones go last.)
    Pool {
        /// The pool's name (its etcd prefix defaults to `/tessera/<name>/`).
        name: String,
        /// The member containers: serial and Ed25519 key, each serial once.
        members: Vec<PoolMember>,
    },
}

/// A pool member: its container serial and Ed25519 key.
pub type PoolMember = (String, [u8; 32]);

/// The longest pool name (it is part of the pool's etcd keys).
pub const MAX_POOL_NAME: usize = 64;
/// The most members a pool activation may name.
pub const MAX_POOL_MEMBERS: usize = 64;

/// Checks a pool's name and member list as the publisher's tool and the runtime want them:
/// a name of 1 to [`MAX_POOL_NAME`] letters, digits, `.`, `_` or `-`; 1 to
/// [`MAX_POOL_MEMBERS`] members, each serial once.
pub fn check_pool(name: &str, members: &[PoolMember]) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_POOL_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Error::InvalidArgument(format!(
            "pool name `{name}`: 1 to {MAX_POOL_NAME} letters, digits, `.`, `_` or `-`"
        )));
    }
    if members.is_empty() || members.len() > MAX_POOL_MEMBERS {
        return Err(Error::InvalidArgument(format!(
            "pool {name} has {} members (1 to {MAX_POOL_MEMBERS})",
            members.len()
        )));
    }
    for (i, (serial, _)) in members.iter().enumerate() {
        if members[..i].iter().any(|(s, _)| s == serial) {
            return Err(Error::InvalidArgument(format!(
                "pool {name} names container {serial} twice"
            )));
        }
    }
    Ok(())
}

impl Binding {
    /// The pool's name and members, for a pool binding.
    pub fn pool(&self) -> Option<(&str, &[PoolMember])> {
        match self {
            Binding::Pool { name, members } => Some((name, members)),
            Binding::Container { .. } => None,
        }
    }

    /// Whether the container with `serial` and, when known, signing `key` may hold a
    /// license with this binding.
    pub fn admits(&self, serial: &str, key: Option<&[u8; 32]>) -> bool {
        match self {
            Binding::Container {
                serial: bound,
                key: bound_key,
            } => bound == serial && key.is_none_or(|k| k == bound_key),
            Binding::Pool { members, .. } => members
                .iter()
                .any(|(s, k)| s == serial && key.is_none_or(|key| key == k)),
        }
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binding::Container { serial, key } => {
                write!(f, "container {serial} (key {})", &hex::encode(key)[..16])
            }
            Binding::Pool { name, members } => {
                write!(f, "pool {name} of {} member(s): ", members.len())?;
                for (i, (serial, key)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{serial} (key {})", &hex::encode(key)[..16])?;
                }
                Ok(())
            }
        }
    }
}

/// A license: a publisher's statement of what a container may grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    /// Unique id, chosen by the publisher's tool.
    pub license_id: [u8; 16],
    /// The publisher.
    pub vendor_id: u32,
    /// The product.
    pub product_code: u32,
    /// A name for people.
    pub product_name: String,
    /// Feature bits granted.
    pub features: u32,
    /// How many seats.
    pub quantity: u32,
    /// What one seat covers.
    pub counting_unit: CountingUnit,
    /// Whether an app may take the license exclusively.
    pub exclusive_allowed: bool,
    /// When it was issued (Unix seconds).
    pub issued_at: u64,
    /// When it stops (Unix seconds), or `None` for a perpetual license.
    pub expiry: Option<u64>,
    /// Whether virtual machines are allowed.
    pub vm_policy: VmPolicy,
    /// What it is bound to.
    pub binding: Binding,
    /// For how many days a seat of it may be borrowed from a license server into a
    /// client's own container (0: not borrowable). Added in license format 2: a license
    /// with 0 here is written as format 1, which older runtimes read.
    pub borrow_days: u16,
}

/// The body of a format-1 license: [`License`] before `borrow_days`.
#[derive(Serialize, Deserialize)]
struct LicenseV1 {
    license_id: [u8; 16],
    vendor_id: u32,
    product_code: u32,
    product_name: String,
    features: u32,
    quantity: u32,
    counting_unit: CountingUnit,
    exclusive_allowed: bool,
    issued_at: u64,
    expiry: Option<u64>,
    vm_policy: VmPolicy,
    binding: Binding,
}

impl From<LicenseV1> for License {
    fn from(l: LicenseV1) -> License {
        License {
            license_id: l.license_id,
            vendor_id: l.vendor_id,
            product_code: l.product_code,
            product_name: l.product_name,
            features: l.features,
            quantity: l.quantity,
            counting_unit: l.counting_unit,
            exclusive_allowed: l.exclusive_allowed,
            issued_at: l.issued_at,
            expiry: l.expiry,
            vm_policy: l.vm_policy,
            binding: l.binding,
            borrow_days: 0,
        }
    }
}

/// The longest borrowing a license may allow, in days.
pub const MAX_BORROW_DAYS: u16 = 366;

impl License {
    /// Signs the license with the publisher's key: format 1 when it has no borrowing terms
    /// (so every runtime reads it), else format 2.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedLicense> {
        let bytes = if self.borrow_days == 0 {
            let v1 = LicenseV1 {
                license_id: self.license_id,
                vendor_id: self.vendor_id,
                product_code: self.product_code,
                product_name: self.product_name.clone(),
                features: self.features,
                quantity: self.quantity,
                counting_unit: self.counting_unit,
                exclusive_allowed: self.exclusive_allowed,
                issued_at: self.issued_at,
                expiry: self.expiry,
                vm_policy: self.vm_policy,
                binding: self.binding.clone(),
            };
            envelope::sign(Kind::License, &v1, key)?
        } else {
            envelope::sign_version(Kind::License, envelope::LICENSE_VERSION_2, self, key)?
        };
        Ok(SignedLicense {
            license: self.clone(),
            bytes,
        })
    }

    /// Decodes the body of a license envelope of either format. A format-2 body with
    /// `borrow_days` 0 (which format 1 writes) or above [`MAX_BORROW_DAYS`] is malformed, so
    /// every license has one encoding.
    pub fn decode(env: &Envelope) -> Result<License> {
        if env.version == envelope::ENVELOPE_VERSION {
            return Ok(env.decode::<LicenseV1>()?.into());
        }
        let l: License = env.decode()?;
        if l.borrow_days == 0 || l.borrow_days > MAX_BORROW_DAYS {
            return Err(Error::malformed(
                "license",
                format!(
                    "format 2 with borrow_days {} (1 to {MAX_BORROW_DAYS})",
                    l.borrow_days
                ),
            ));
        }
        Ok(l)
    }

    /// Whether the license has a time limit.
    pub fn is_time_limited(&self) -> bool {
        self.expiry.is_some()
    }

    /// Checks that the license grants `features` at `now` on `machine`: features, then (for
    /// a time-limited license) the clock — `clock_behind` is the container's high-water mark
    /// when the clock runs behind it — and the expiry, then the VM policy.
    pub fn check(
        &self,
        features: u32,
        now: u64,
        machine: &crate::host::MachineKind,
        clock_behind: Option<u64>,
    ) -> Result<()> {
        if features & !self.features != 0 {
            return Err(Error::FeatureMissing {
                requested: features,
                licensed: self.features,
            });
        }
        if let Some(expiry) = self.expiry {
            if let Some(high_water) = clock_behind {
                return Err(Error::ClockRollback { now, high_water });
            }
            if now >= expiry {
                return Err(Error::Expired { expiry });
            }
        }
        if self.vm_policy == VmPolicy::Deny && machine.is_virtual() {
            return Err(Error::VmNotAllowed(machine.to_string()));
        }
        Ok(())
    }

    /// Checks that the license is bound to the container with `serial` and, when known,
    /// signing `key`: a license signed for another container is refused
    /// (`BindingMismatch`) wherever it turns up, whatever else it grants.
    /// A pool license is accepted in any of its member containers.
    pub fn check_binding(&self, serial: &str, key: Option<&[u8; 32]>) -> Result<()> {
        if !self.binding.admits(serial, key) {
            let here = match key {
                Some(k) => format!("container {serial} (key {})", &hex::encode(k)[..16]),
                None => format!("container {serial}"),
            };
            return Err(Error::BindingMismatch(format!(
                "license {} is bound to {}, not to {here}",
                self.id_hex(),
                self.binding
            )));
        }
        Ok(())
    }

    /// The license id in hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.license_id)
    }
}

impl fmt::Display for License {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "license {}", self.id_hex())?;
        writeln!(
            f,
            "  product:     {} (vendor {:#x}, product {})",
            self.product_name, self.vendor_id, self.product_code
        )?;
        writeln!(f, "  features:    {:#010x}", self.features)?;
        writeln!(
            f,
            "  quantity:    {} per {}{}",
            self.quantity,
            self.counting_unit,
            if self.exclusive_allowed {
                ", exclusive use allowed"
            } else {
                ""
            }
        )?;
        writeln!(f, "  issued:      {}", format_time(self.issued_at))?;
        match self.expiry {
            Some(t) => writeln!(f, "  expires:     {}", format_time(t))?,
            None => writeln!(f, "  expires:     never")?,
        }
        writeln!(f, "  VMs:         {}", self.vm_policy)?;
        if self.borrow_days > 0 {
            writeln!(f, "  borrowing:   up to {} days", self.borrow_days)?;
        }
        write!(f, "  bound to:    {}", self.binding)
    }
}

/// A license together with its signed encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedLicense {
    /// The decoded license.
    pub license: License,
    /// The signed envelope it came in.
    pub bytes: Vec<u8>,
}

impl SignedLicense {
    /// Parses and verifies a signed license against the publisher key.
    pub fn verify(bytes: &[u8], publisher: &VerifyingKey) -> Result<SignedLicense> {
        let env = Envelope::parse(Kind::License, bytes)?;
        env.verify(publisher)?;
        let license = License::decode(&env)?;
        Ok(SignedLicense {
            license,
            bytes: bytes.to_vec(),
        })
    }

    /// Parses a signed license without checking its signature (for display only).
    pub fn parse_unverified(bytes: &[u8]) -> Result<License> {
        License::decode(&Envelope::parse(Kind::License, bytes)?)
    }

    /// Checks that the license belongs to `vendor_id`.
    pub fn check_vendor(&self, vendor_id: u32) -> Result<()> {
        if self.license.vendor_id != vendor_id {
            return Err(Error::WrongVendor {
                expected: vendor_id,
                found: self.license.vendor_id,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> License {
        License {
            license_id: [9; 16],
            vendor_id: 42,
            product_code: 7,
            product_name: "Sample".into(),
            features: 0b1011,
            quantity: 3,
            counting_unit: CountingUnit::Process,
            exclusive_allowed: true,
            borrow_days: 0,
            issued_at: 1_700_000_000,
            expiry: Some(1_900_000_000),
            vm_policy: VmPolicy::Deny,
            binding: Binding::Container {
                serial: "SW-1".into(),
                key: [1; 32],
            },
        }
    }

    #[test]
    fn signed_license_round_trips_and_checks_signature_and_vendor() {
        let k = SigningKey::from_bytes(&[5; 32]);
        let s = sample().sign(&k).unwrap();
        let back = SignedLicense::verify(&s.bytes, &k.verifying_key()).unwrap();
        assert_eq!(back.license, sample());
        assert!(back.check_vendor(42).is_ok());
        assert!(matches!(
            back.check_vendor(43),
            Err(Error::WrongVendor {
                expected: 43,
                found: 42
            })
        ));
        let other = SigningKey::from_bytes(&[6; 32]);
        assert!(matches!(
            SignedLicense::verify(&s.bytes, &other.verifying_key()),
            Err(Error::BadSignature(_))
        ));
        assert!(sample().to_string().contains("3 per process"));
    }

    #[test]
    fn a_license_without_borrowing_stays_format_1_and_with_it_is_format_2() {
        let k = SigningKey::from_bytes(&[5; 32]);
        let plain = sample().sign(&k).unwrap();
        assert_eq!(plain.bytes[4..6], envelope::ENVELOPE_VERSION.to_le_bytes());
        let mut b = sample();
        b.borrow_days = 14;
        let borrowable = b.sign(&k).unwrap();
        assert_eq!(
            borrowable.bytes[4..6],
            envelope::LICENSE_VERSION_2.to_le_bytes()
        );
        let back = SignedLicense::verify(&borrowable.bytes, &k.verifying_key()).unwrap();
        assert_eq!(back.license.borrow_days, 14);
        assert!(back.license.to_string().contains("up to 14 days"));
        assert_eq!(
            SignedLicense::verify(&plain.bytes, &k.verifying_key())
                .unwrap()
                .license,
            sample()
        );
        // A format-2 body with 0 (format 1's encoding of it) or too many days is refused,
        // even signed.
        for days in [0, MAX_BORROW_DAYS + 1] {
            let mut l = sample();
            l.borrow_days = days;
            let bytes =
                envelope::sign_version(Kind::License, envelope::LICENSE_VERSION_2, &l, &k).unwrap();
            assert!(matches!(
                SignedLicense::verify(&bytes, &k.verifying_key()),
                Err(Error::Malformed { .. })
            ));
        }
        // Only licenses have a format 2.
        let cert = envelope::sign_version(Kind::Certificate, 2, &1u8, &k).unwrap();
        assert!(matches!(
            Envelope::parse(Kind::Certificate, &cert),
            Err(Error::UnknownVersion { found: 2, .. })
        ));
    }

    #[test]
    fn a_pool_license_binds_every_member_and_no_one_else() {
        let k = SigningKey::from_bytes(&[5; 32]);
        let mut l = sample();
        l.binding = Binding::Pool {
            name: "site-a".into(),
            members: vec![("SW-1".into(), [1; 32]), ("SW-2".into(), [2; 32])],
        };
        let back = SignedLicense::verify(&l.sign(&k).unwrap().bytes, &k.verifying_key()).unwrap();
        assert_eq!(back.license, l);
        for (serial, key) in [("SW-1", [1; 32]), ("SW-2", [2; 32])] {
            assert!(l.check_binding(serial, Some(&key)).is_ok());
            assert!(l.check_binding(serial, None).is_ok());
        }
        // A member's serial with another member's key, or a stranger.
        assert!(matches!(
            l.check_binding("SW-1", Some(&[2; 32])),
            Err(Error::BindingMismatch(_))
        ));
        let e = l.check_binding("SW-3", Some(&[3; 32])).unwrap_err();
        assert!(e.to_string().contains("pool site-a of 2 member(s)"), "{e}");
        assert!(l.to_string().contains("SW-1 (key 0101"), "{l}");
        assert_eq!(
            l.binding.pool().map(|(n, m)| (n, m.len())),
            Some(("site-a", 2))
        );
        assert_eq!(sample().binding.pool(), None);
    }

    #[test]
    fn pool_names_and_member_lists_are_checked() {
        let one = vec![("SW-1".to_string(), [1; 32])];
        assert!(check_pool("site-a.eu_1", &one).is_ok());
        for bad in ["", "a/b", "a b", &"x".repeat(MAX_POOL_NAME + 1)] {
            assert!(matches!(
                check_pool(bad, &one),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(check_pool("p", &[]).is_err());
        let twice = vec![("SW-1".to_string(), [1; 32]), ("SW-1".to_string(), [2; 32])];
        let e = check_pool("p", &twice).unwrap_err();
        assert!(e.to_string().contains("SW-1 twice"), "{e}");
    }

    #[test]
    fn counting_units_parse() {
        for u in [
            CountingUnit::Station,
            CountingUnit::Session,
            CountingUnit::Process,
            CountingUnit::Handle,
        ] {
            assert_eq!(CountingUnit::parse(&u.to_string()), Some(u));
        }
        assert_eq!(CountingUnit::parse("seat"), None);
    }
}
