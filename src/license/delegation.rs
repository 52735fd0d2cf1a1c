//! The delegation: a container's signature (envelope kind `Delegation`, with the container's
//! own key) handing its licenses to one license server's Noise static key for a while.
//!
//! A runtime trusts a license server only through one: the publisher key checks the
//! container's certificate, the certificate's key checks the delegation, and the delegation
//! names the key the server proved in its handshake ([`verify_chain`]). A server without the
//! container cannot make one, so it cannot grant a seat.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::certificate::ContainerCertificate;
use super::envelope::{self, Envelope, Kind};
use crate::{Error, Result};

/// A container's delegation of its licenses to a server key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The publisher.
    pub vendor_id: u32,
    /// The container serial.
    pub serial: String,
    /// The container's Ed25519 key (the signer).
    pub container_key: [u8; 32],
    /// The server's Noise static key.
    pub server_key: [u8; 32],
    /// Issued (Unix seconds).
    pub issued_at: u64,
    /// Expires (Unix seconds).
    pub expiry: u64,
}

/// Signs a delegation with the container's key.
pub fn sign_delegation(d: &Delegation, container_key: &SigningKey) -> Result<Vec<u8>> {
    envelope::sign(Kind::Delegation, d, container_key)
}

/// Checks one link pair of the chain: the publisher-signed `certificate` against
/// `publisher` and `vendor_id`, then the `delegation` against the certificate's key, naming
/// the same container, for `server_key`, unexpired at `now` (Unix seconds). Returns the
/// delegation.
pub fn verify_chain(
    certificate: &[u8],
    delegation: &[u8],
    publisher: &VerifyingKey,
    vendor_id: u32,
    server_key: &[u8; 32],
    now: u64,
) -> Result<Delegation> {
    let cert: ContainerCertificate = Envelope::open(Kind::Certificate, certificate, publisher)?;
    if cert.vendor_id != vendor_id {
        return Err(Error::WrongVendor {
            expected: vendor_id,
            found: cert.vendor_id,
        });
    }
    let ck = VerifyingKey::from_bytes(&cert.sign_key)
        .map_err(|_| Error::BadSignature("certificate names an invalid container key".into()))?;
    let d: Delegation = Envelope::open(Kind::Delegation, delegation, &ck)?;
    if d.serial != cert.serial || d.container_key != cert.sign_key || d.vendor_id != vendor_id {
        return Err(Error::BindingMismatch(
            "delegation and certificate name different containers".into(),
        ));
    }
    if d.server_key != *server_key {
        return Err(Error::BindingMismatch(
            "delegation is for another server key".into(),
        ));
    }
    if now >= d.expiry {
        return Err(Error::Expired { expiry: d.expiry });
    }
    Ok(d)
}
