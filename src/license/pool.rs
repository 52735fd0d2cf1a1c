//! The pool member registration: a license-server pool member's statement, signed by its
//! container's key (envelope kind `PoolMember`), that it serves the pool's license with this
//! server key in this etcd cluster.
//!
//! A pool license (`Binding::Pool`) names its member containers. A member grants seats only
//! while a strict majority of them have a registration in the pool's etcd cluster
//! (`server::pool::members`). [`PoolRegistration::verify`] is the check each member makes of
//! every registration it sees: signed by the key the license's binding gives that serial,
//! for this pool and license, and for this etcd cluster — a registration copied out of
//! another cluster (or another pool) names another cluster id (or pool) and does not count.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::envelope::{self, Envelope, Kind};
use super::model::License;
use crate::{Error, Result};

/// A pool member's registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRegistration {
    /// The pool's name (as the license's binding names it).
    pub pool: String,
    /// The pool license.
    pub license_id: [u8; 16],
    /// The member container's serial.
    pub serial: String,
    /// The member container's Ed25519 key (the signer).
    pub container_key: [u8; 32],
    /// The member server's Noise static key.
    pub server_key: [u8; 32],
    /// The etcd cluster id the member registers in (etcd's response header names it).
    pub cluster_id: u64,
    /// When the container signed it (Unix seconds, the container's clock).
    pub signed_at: u64,
}

impl PoolRegistration {
    /// Signs the registration with the member container's key.
    pub fn sign(&self, container_key: &SigningKey) -> Result<Vec<u8>> {
        envelope::sign(Kind::PoolMember, self, container_key)
    }

    /// Reads a registration without checking its signature (for display only).
    pub fn parse_unverified(bytes: &[u8]) -> Result<PoolRegistration> {
        Envelope::parse(Kind::PoolMember, bytes)?.decode()
    }

    /// Checks `bytes` as a registration of a member of `license`'s pool in the etcd cluster
    /// `cluster_id`: the license must be a pool license, the registration must name its
    /// pool and license id and that cluster, and be signed by the key the binding gives the
    /// serial it names. Returns the index of the member in the binding and the registration.
    pub fn verify(
        bytes: &[u8],
        license: &License,
        cluster_id: u64,
    ) -> Result<(usize, PoolRegistration)> {
        let (pool, members) = license.binding.pool().ok_or_else(|| {
            Error::BindingMismatch(format!(
                "license {} is not a pool license",
                license.id_hex()
            ))
        })?;
        let env = Envelope::parse(Kind::PoolMember, bytes)?;
        let r: PoolRegistration = env.decode()?;
        let index = members
            .iter()
            .position(|(s, _)| *s == r.serial)
            .ok_or_else(|| {
                Error::BindingMismatch(format!(
                    "container {} is not a member of pool {pool}",
                    r.serial
                ))
            })?;
        let key = VerifyingKey::from_bytes(&members[index].1).map_err(|_| {
            Error::BadSignature(format!("pool {pool} names an invalid key for {}", r.serial))
        })?;
        env.verify(&key)?;
        if r.container_key != members[index].1 {
            return Err(Error::BindingMismatch(format!(
                "registration of {} names another container key",
                r.serial
            )));
        }
        if r.pool != pool || r.license_id != license.license_id {
            return Err(Error::BindingMismatch(format!(
                "registration of {} is for pool {} (license {}), not pool {pool} (license {})",
                r.serial,
                r.pool,
                hex::encode(r.license_id),
                license.id_hex()
            )));
        }
        if r.cluster_id != cluster_id {
            return Err(Error::BindingMismatch(format!(
                "registration of {} is for etcd cluster {:x}, this is {cluster_id:x}",
                r.serial, r.cluster_id
            )));
        }
        Ok((index, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::{Binding, CountingUnit, VmPolicy};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn pool_license(name: &str, id: u8) -> License {
        License {
            license_id: [id; 16],
            vendor_id: 42,
            product_code: 7,
            product_name: "Pooled".into(),
            features: 1,
            quantity: 3,
            counting_unit: CountingUnit::Station,
            exclusive_allowed: false,
            issued_at: 1_700_000_000,
            expiry: None,
            vm_policy: VmPolicy::Allow,
            binding: Binding::Pool {
                name: name.into(),
                members: (1..=3)
                    .map(|i| (format!("SW-{i}"), key(i).verifying_key().to_bytes()))
                    .collect(),
            },
            borrow_days: 0,
        }
    }

    fn registration(
        member: u8,
        pool: &str,
        license_id: [u8; 16],
        cluster: u64,
    ) -> PoolRegistration {
        PoolRegistration {
            pool: pool.into(),
            license_id,
            serial: format!("SW-{member}"),
            container_key: key(member).verifying_key().to_bytes(),
            server_key: [member; 32],
            cluster_id: cluster,
            signed_at: 1_700_000_100,
        }
    }

    #[test]
    fn a_member_registration_verifies_for_its_pool_and_cluster_only() {
        let lic = pool_license("site-a", 1);
        let r = registration(2, "site-a", [1; 16], 77);
        let signed = r.sign(&key(2)).unwrap();
        assert_eq!(
            PoolRegistration::verify(&signed, &lic, 77).unwrap(),
            (1, r.clone())
        );
        assert_eq!(PoolRegistration::parse_unverified(&signed).unwrap(), r);
        // Copied into another etcd cluster.
        let e = PoolRegistration::verify(&signed, &lic, 78).unwrap_err();
        assert!(e.to_string().contains("etcd cluster 4d"), "{e}");
        // Copied from another pool, signed by the same container.
        let other = registration(2, "site-b", [2; 16], 77)
            .sign(&key(2))
            .unwrap();
        assert!(matches!(
            PoolRegistration::verify(&other, &lic, 77),
            Err(Error::BindingMismatch(_))
        ));
        // Signed by a non-member key, under a member's serial or its own.
        let forged = r.sign(&key(9)).unwrap();
        assert!(matches!(
            PoolRegistration::verify(&forged, &lic, 77),
            Err(Error::BadSignature(_))
        ));
        let mut stranger = registration(9, "site-a", [1; 16], 77);
        stranger.serial = "SW-9".into();
        let e = PoolRegistration::verify(&stranger.sign(&key(9)).unwrap(), &lic, 77).unwrap_err();
        assert!(e.to_string().contains("not a member"), "{e}");
        // Not a registration at all, or not a pool license.
        assert!(PoolRegistration::verify(b"garbage", &lic, 77).is_err());
        let mut single = lic.clone();
        single.binding = Binding::Container {
            serial: "SW-2".into(),
            key: key(2).verifying_key().to_bytes(),
        };
        assert!(PoolRegistration::verify(&signed, &single, 77).is_err());
    }
}
