//! A 32-byte secret bound to this machine's fingerprint traits, with a tolerance: the binding
//! of a software container's file key ([`super::software`]) and of the runtime's host key
//! (`client::hostkey`).
//!
//! The secret is split with Shamir's scheme (threshold `k` of the `n` traits it was made on,
//! `k = n - 1` when `n >= 3`); each share is encrypted (XChaCha20-Poly1305) under a key
//! derived from one trait and a per-binding salt. On another machine too few shares open:
//! `BindingMismatch`. One changed NIC or disk still leaves `k` shares: the secret opens. The
//! binding is kept as made, so it never drifts towards the machine it is copied to.

use blahaj::{Share, Sharks};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::host::{Fingerprint, TraitKind};
use crate::{Error, Result};

/// The threshold of traits that must match for a fingerprint of `n` traits.
pub fn threshold(n: usize) -> usize {
    if n >= 3 { n - 1 } else { n }
}

fn trait_key(salt: &[u8; 16], kind: TraitKind, digest: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(salt), digest);
    let mut k = Zeroizing::new([0u8; 32]);
    let info = format!("tessera v1 binding share {kind:?}");
    let _ = hk.expand(info.as_bytes(), k.as_mut());
    k
}

#[derive(Clone, Serialize, Deserialize)]
struct BoundShare {
    kind: TraitKind,
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
}

/// A secret sealed to a fingerprint: its salt, threshold and one encrypted share per trait.
/// Serialized (postcard) inside the files that carry it; the layout is the software
/// container's file format version 1.
#[derive(Clone, Serialize, Deserialize)]
pub struct MachineBinding {
    salt: [u8; 16],
    threshold: u8,
    shares: Vec<BoundShare>,
}

impl std::fmt::Debug for MachineBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineBinding")
            .field("threshold", &self.threshold)
            .field("shares", &self.shares.len())
            .finish_non_exhaustive()
    }
}

impl MachineBinding {
    /// Seals `secret` to `fingerprint`. `Unsupported` when the fingerprint has no trait
    /// (`what` names the secret in the message).
    pub fn seal(fingerprint: &Fingerprint, secret: &[u8; 32], what: &str) -> Result<Self> {
        if fingerprint.traits.is_empty() {
            return Err(Error::Unsupported(format!(
                "no machine traits could be read to bind {what} to"
            )));
        }
        let salt: [u8; 16] = crate::util::random();
        let n = fingerprint.traits.len().min(255);
        let k = threshold(n);
        let shares: Vec<Share> = Sharks(k as u8).dealer(secret).take(n).collect();
        let mut bound = Vec::with_capacity(n);
        for ((kind, digest), share) in fingerprint.digests(&salt).iter().zip(shares.iter()) {
            let tk = trait_key(&salt, *kind, digest);
            let nonce: [u8; 24] = crate::util::random();
            let plain = Zeroizing::new(Vec::from(share));
            let ciphertext = XChaCha20Poly1305::new(tk.as_ref().into())
                .encrypt(XNonce::from_slice(&nonce), plain.as_slice())
                .map_err(|_| Error::Internal("sealing a binding share failed".into()))?;
            bound.push(BoundShare {
                kind: *kind,
                nonce,
                ciphertext,
            });
        }
        Ok(MachineBinding {
            salt,
            threshold: k as u8,
            shares: bound,
        })
    }

    /// Opens the secret with `fingerprint`: `BindingMismatch` (naming `what`) when fewer
    /// than the threshold of traits match, `Tampered` when the shares do not combine.
    pub fn open(&self, fingerprint: &Fingerprint, what: &str) -> Result<Zeroizing<[u8; 32]>> {
        let digests = fingerprint.digests(&self.salt);
        let mut opened: Vec<Share> = Vec::new();
        for share in &self.shares {
            for (kind, d) in digests.iter().filter(|(k, _)| *k == share.kind) {
                let tk = trait_key(&self.salt, *kind, d);
                if let Ok(plain) = XChaCha20Poly1305::new(tk.as_ref().into()).decrypt(
                    XNonce::from_slice(&share.nonce),
                    share.ciphertext.as_slice(),
                ) {
                    let plain = Zeroizing::new(plain);
                    if let Ok(s) = Share::try_from(plain.as_slice()) {
                        opened.push(s);
                    }
                    break;
                }
            }
        }
        let need = self.threshold as usize;
        if need == 0 || opened.len() < need {
            return Err(Error::BindingMismatch(format!(
                "{what} is bound to another machine ({} of {} traits match, {need} needed)",
                opened.len(),
                self.shares.len()
            )));
        }
        let recovered = Zeroizing::new(
            Sharks(self.threshold)
                .recover(opened.iter().take(need))
                .map_err(|e| Error::Tampered(format!("binding shares do not combine: {e}")))?,
        );
        let key: [u8; 32] = recovered
            .as_slice()
            .try_into()
            .map_err(|_| Error::Tampered("binding key has the wrong length".into()))?;
        Ok(Zeroizing::new(key))
    }

    /// The per-binding salt (software containers bind their body to it).
    pub fn salt(&self) -> &[u8; 16] {
        &self.salt
    }

    /// The threshold and the share count.
    pub fn summary(&self) -> (usize, usize) {
        (self.threshold as usize, self.shares.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Trait;

    fn fp(values: &[(TraitKind, &str)]) -> Fingerprint {
        Fingerprint::from_traits(values.iter().map(|(k, v)| Trait::new(*k, *v)).collect())
    }

    fn machine(mac: &str, disk: &str) -> Fingerprint {
        fp(&[
            (TraitKind::MachineId, "0123456789abcdef"),
            (TraitKind::ProductUuid, "4C4C4544-0042"),
            (TraitKind::Mac, mac),
            (TraitKind::RootDisk, disk),
        ])
    }

    #[test]
    fn opens_with_one_changed_trait_and_not_with_two_or_none() {
        let secret = [9u8; 32];
        let b = MachineBinding::seal(&machine("aa", "d1"), &secret, "the key").unwrap();
        assert_eq!(b.summary(), (3, 4));
        assert_eq!(*b.open(&machine("aa", "d1"), "the key").unwrap(), secret);
        assert_eq!(*b.open(&machine("bb", "d1"), "the key").unwrap(), secret);
        let e = b.open(&machine("bb", "d2"), "the key").unwrap_err();
        assert!(matches!(e, Error::BindingMismatch(_)), "{e}");
        assert!(e.to_string().contains("the key"), "{e}");
        assert!(matches!(
            b.open(&Fingerprint::from_traits(Vec::new()), "k"),
            Err(Error::BindingMismatch(_))
        ));
        assert!(matches!(
            MachineBinding::seal(&Fingerprint::from_traits(Vec::new()), &secret, "k"),
            Err(Error::Unsupported(_))
        ));
    }
}
