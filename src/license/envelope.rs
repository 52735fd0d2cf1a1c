//! The signed binary envelope every Tessera document travels in (licenses, activation
//! requests, activations, container certificates, delegations, usage checkpoints).
//!
//! ```text
//! magic[4] | version: u16 LE | body_len: u32 LE | body (postcard) | signature[64]
//! ```
//! The signature is Ed25519 over `"tessera-envelope" | magic | version | body`, so a
//! signature for one kind of document can never be replayed as another kind.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// The envelope format version of every document (and of a license without borrowing terms).
pub const ENVELOPE_VERSION: u16 = 1;
/// The version of a license whose body carries the fields added after format 1
/// (`borrow_days`). Only licenses have a second version: a license without those fields is
/// still written as version 1, so runtimes that predate it read it.
pub const LICENSE_VERSION_2: u16 = 2;
const HEADER: usize = 4 + 2 + 4;
const SIG: usize = 64;
/// Upper bound on a body, so a forged length never makes us allocate gigabytes.
pub const MAX_BODY: usize = 16 << 20;

/// The kinds of document, each with its own magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A license, signed by the publisher.
    License,
    /// An activation request, signed by the container that asks.
    ActivationRequest,
    /// An activation (licenses and sealed product secrets), signed by the publisher.
    Activation,
    /// A container certificate, signed by the publisher.
    Certificate,
    /// A container's delegation of its licenses to a license server's key.
    Delegation,
    /// A container's signature over a usage log checkpoint (`license::usage`).
    UsageCheckpoint,
    /// A seat of a network license lent by the container holding it to another machine's
    /// container for some days (`license::borrow`).
    Borrow,
    /// A license-server pool member's registration in the pool's etcd cluster, signed by the
    /// member's container (`license::pool`).
    PoolMember,
}

impl Kind {
    /// The four magic bytes that start a document of this kind.
    pub fn magic(self) -> [u8; 4] {
        match self {
            Kind::License => *b"TSLc",
            Kind::ActivationRequest => *b"TSRq",
            Kind::Activation => *b"TSAc",
            Kind::Certificate => *b"TSCe",
            Kind::Delegation => *b"TSDl",
            Kind::UsageCheckpoint => *b"TSUc",
            Kind::Borrow => *b"TSBw",
            Kind::PoolMember => *b"TSPm",
        }
    }

    /// What the document is called in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::License => "license",
            Kind::ActivationRequest => "activation request",
            Kind::Activation => "activation",
            Kind::Certificate => "container certificate",
            Kind::Delegation => "delegation",
            Kind::UsageCheckpoint => "usage checkpoint",
            Kind::Borrow => "borrowed seat",
            Kind::PoolMember => "pool member registration",
        }
    }

    /// The kind whose magic starts `bytes`, if any.
    pub fn sniff(bytes: &[u8]) -> Option<Kind> {
        let m = bytes.get(..4)?;
        [
            Kind::License,
            Kind::ActivationRequest,
            Kind::Activation,
            Kind::Certificate,
            Kind::Delegation,
            Kind::UsageCheckpoint,
            Kind::Borrow,
            Kind::PoolMember,
        ]
        .into_iter()
        .find(|k| k.magic() == m)
    }
}

/// A parsed, not yet verified, envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The document kind.
    pub kind: Kind,
    /// The format version (signed with the body).
    pub version: u16,
    /// The body, postcard-encoded.
    pub body: Vec<u8>,
    /// The Ed25519 signature.
    pub signature: [u8; SIG],
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn signed_message(kind: Kind, version: u16, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + 6 + body.len());
    m.extend_from_slice(b"tessera-envelope");
    m.extend_from_slice(&kind.magic());
    m.extend_from_slice(&version.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// Serializes `value` and signs it with `key` as a document of `kind`.
pub fn sign<T: Serialize>(kind: Kind, value: &T, key: &SigningKey) -> Result<Vec<u8>> {
    sign_version(kind, ENVELOPE_VERSION, value, key)
}

/// [`sign`] as format `version` (a license with borrowing terms is version 2).
pub fn sign_version<T: Serialize>(
    kind: Kind,
    version: u16,
    value: &T,
    key: &SigningKey,
) -> Result<Vec<u8>> {
    let body = postcard::to_stdvec(value)
        .map_err(|e| Error::Internal(format!("encoding {}: {e}", kind.name())))?;
    let sig = key.sign(&signed_message(kind, version, &body));
    let mut out = Vec::with_capacity(HEADER + body.len() + SIG);
    out.extend_from_slice(&kind.magic());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&sig.to_bytes());
    Ok(out)
}

impl Envelope {
    /// Parses the framing of a document that must be of `kind`. Checks magic, version and
    /// length; does not check the signature.
    pub fn parse(kind: Kind, bytes: &[u8]) -> Result<Envelope> {
        let what = kind.name();
        if bytes.len() < 4 {
            return Err(Error::malformed(what, "truncated: shorter than its header"));
        }
        if bytes[..4] != kind.magic() {
            let detail = match Kind::sniff(bytes) {
                Some(other) => format!(
                    "this is {} {}, not {} {what}",
                    article(other.name()),
                    other.name(),
                    article(what)
                ),
                None => "not a Tessera document (bad magic)".to_string(),
            };
            return Err(Error::malformed(what, detail));
        }
        if bytes.len() < HEADER {
            return Err(Error::malformed(what, "truncated: shorter than its header"));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        let newest = match kind {
            Kind::License => LICENSE_VERSION_2,
            _ => ENVELOPE_VERSION,
        };
        if version == 0 || version > newest {
            return Err(Error::UnknownVersion {
                what,
                found: version,
                supported: newest,
            });
        }
        let len = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
        if len > MAX_BODY {
            return Err(Error::malformed(
                what,
                format!("body length {len} is too large"),
            ));
        }
        let expected = HEADER + len + SIG;
        if bytes.len() < expected {
            return Err(Error::malformed(
                what,
                format!("truncated: {} of {expected} bytes", bytes.len()),
            ));
        }
        if bytes.len() > expected {
            return Err(Error::malformed(
                what,
                format!(
                    "{} trailing bytes after the signature",
                    bytes.len() - expected
                ),
            ));
        }
        let mut signature = [0u8; SIG];
        signature.copy_from_slice(&bytes[HEADER + len..]);
        Ok(Envelope {
            kind,
            version,
            body: bytes[HEADER..HEADER + len].to_vec(),
            signature,
        })
    }

    /// Checks the signature against `key`, strictly: a weak (small-order) key or `R` is
    /// refused. A plain Ed25519 verification accepts, for the identity as key, the signature
    /// (identity, 0) on any message: a self-signed document (an activation request names its
    /// own key) would then prove nothing, and every later signature "by" that key (delegations,
    /// usage checkpoints) could be forged by anyone.
    pub fn verify(&self, key: &VerifyingKey) -> Result<()> {
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(&signed_message(self.kind, self.version, &self.body), &sig)
            .map_err(|_| {
                Error::BadSignature(format!(
                    "{} is not signed by the expected key",
                    self.kind.name()
                ))
            })
    }

    /// Decodes the body.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        let (value, rest) = postcard::take_from_bytes::<T>(&self.body)
            .map_err(|e| Error::malformed(self.kind.name(), format!("body: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::malformed(self.kind.name(), "trailing bytes in body"));
        }
        Ok(value)
    }

    /// Parses, verifies against `key` and decodes in one step.
    pub fn open<T: DeserializeOwned>(kind: Kind, bytes: &[u8], key: &VerifyingKey) -> Result<T> {
        let env = Envelope::parse(kind, bytes)?;
        env.verify(key)?;
        env.decode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// Found by the `activation` fuzz target's check that a self-signed request verifies only
    /// under the key that signed it (`fuzz/regressions/activation/weak-key-request`).
    #[test]
    fn a_weak_key_verifies_nothing() {
        // The identity point as key, and the signature (R = identity, s = 0), which a plain
        // verification accepts for any message under that key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        let mut signature = [0u8; SIG];
        signature[..32].copy_from_slice(&identity);
        for kind in [
            Kind::ActivationRequest,
            Kind::Delegation,
            Kind::UsageCheckpoint,
        ] {
            let env = Envelope {
                kind,
                version: ENVELOPE_VERSION,
                body: b"anything at all".to_vec(),
                signature,
            };
            assert!(matches!(env.verify(&weak), Err(Error::BadSignature(_))));
        }
    }

    #[test]
    fn round_trip_and_every_flipped_bit_fails() {
        let k = key(1);
        let doc = sign(Kind::License, &(7u32, "hello".to_string()), &k).unwrap();
        let v: (u32, String) = Envelope::open(Kind::License, &doc, &k.verifying_key()).unwrap();
        assert_eq!(v, (7, "hello".to_string()));
        for i in 0..doc.len() * 8 {
            let mut bad = doc.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                Envelope::open::<(u32, String)>(Kind::License, &bad, &k.verifying_key()).is_err(),
                "bit {i} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn wrong_key_kind_version_and_truncation_are_named() {
        let k = key(1);
        let doc = sign(Kind::License, &1u8, &k).unwrap();
        assert!(matches!(
            Envelope::open::<u8>(Kind::License, &doc, &key(2).verifying_key()),
            Err(Error::BadSignature(_))
        ));
        let e = Envelope::parse(Kind::Activation, &doc).unwrap_err();
        assert!(e.to_string().contains("this is a license"), "{e}");
        let mut future = doc.clone();
        future[4] = 9;
        assert!(matches!(
            Envelope::parse(Kind::License, &future),
            Err(Error::UnknownVersion { found: 9, .. })
        ));
        for n in 0..doc.len() {
            assert!(
                matches!(
                    Envelope::parse(Kind::License, &doc[..n]),
                    Err(Error::Malformed { .. })
                ),
                "truncation to {n} bytes"
            );
        }
        let mut huge = doc.clone();
        huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Envelope::parse(Kind::License, &huge).is_err());
    }

    #[test]
    fn a_signature_of_one_kind_does_not_verify_as_another() {
        let k = key(3);
        let mut doc = sign(Kind::License, &5u32, &k).unwrap();
        doc[..4].copy_from_slice(&Kind::Certificate.magic());
        assert!(matches!(
            Envelope::open::<u32>(Kind::Certificate, &doc, &k.verifying_key()),
            Err(Error::BadSignature(_))
        ));
    }
}
