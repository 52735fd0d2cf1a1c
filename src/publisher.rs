//! The publisher's side: the publisher key file, product secrets, and turning an activation
//! request into a signed activation. Used by `tessera-vendor`; the runtime never holds a
//! publisher's private key.
//!
//! Product secrets are derived from a master secret in the key file with HKDF-SHA256, one per
//! product code, so the key file is all a publisher must back up.

use std::fs;
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::cipher::{self, Key};
use crate::container::{Activation, ActivationRequest, ContainerCertificate};
use crate::license::{Binding, CountingUnit, Envelope, Kind, License, VmPolicy, envelope};
use crate::{Error, Result};

const KEY_MAGIC: [u8; 4] = *b"TSPk";
const KEY_VERSION: u16 = 1;

/// The vendor id of the built-in demo publisher.
pub const DEMO_VENDOR_ID: u32 = 0x7E55;
/// The product code the demo uses.
pub const DEMO_PRODUCT_CODE: u32 = 1;

/// Reads a vendor id as people write it, on a command line or in a file: decimal (`4242`)
/// or hex (`0x1092`), with `_` allowed between digits. 0 is refused ([`check_vendor_id`]).
/// Every tool and file reader takes vendor ids through this function.
pub fn parse_vendor_id(s: &str) -> Result<u32> {
    let v = crate::util::parse_u32(s).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "`{}` is not a vendor id (a 32-bit number, decimal or 0x hex)",
            s.trim()
        ))
    })?;
    check_vendor_id(v)
}

/// [`parse_vendor_id`] for a command-line parser (clap's `value_parser`): the message alone.
pub fn vendor_id_arg(s: &str) -> std::result::Result<u32, String> {
    parse_vendor_id(s).map_err(|e| match e {
        Error::InvalidArgument(m) => m,
        e => e.to_string(),
    })
}

/// `v` unless it is 0: no publisher has vendor id 0 (a blank dongle, certified for no
/// publisher yet, reports 0).
pub fn check_vendor_id(v: u32) -> Result<u32> {
    if v == 0 {
        return Err(Error::InvalidArgument(
            "vendor id 0 is no publisher's: a vendor id is 0x1 to 0xffffffff".into(),
        ));
    }
    Ok(v)
}

/// A vendor id as every tool prints it: hex, `0x1092` (what the README and the publisher
/// see in their key files' tools).
pub fn vendor_hex(v: u32) -> String {
    format!("{v:#x}")
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    vendor_id: u32,
    name: String,
    seed: [u8; 32],
    master: [u8; 32],
}

/// A publisher's private key material.
pub struct PublisherKey {
    /// The publisher's vendor id.
    pub vendor_id: u32,
    /// The publisher's name.
    pub name: String,
    signing: SigningKey,
    master: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherKey")
            .field("vendor_id", &self.vendor_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What the publisher grants in one license.
#[derive(Clone, Debug)]
pub struct LicenseSpec {
    /// The product.
    pub product_code: u32,
    /// A name for people.
    pub product_name: String,
    /// Feature bits.
    pub features: u32,
    /// Seats.
    pub quantity: u32,
    /// What one seat covers.
    pub counting_unit: CountingUnit,
    /// Whether exclusive use is allowed.
    pub exclusive_allowed: bool,
    /// Expiry (Unix seconds), or perpetual.
    pub expiry: Option<u64>,
    /// VM policy.
    pub vm_policy: VmPolicy,
    /// Days a seat may be borrowed from a license server (0: not borrowable).
    pub borrow_days: u16,
}

impl PublisherKey {
    /// A new random publisher key.
    pub fn generate(vendor_id: u32, name: &str) -> PublisherKey {
        PublisherKey {
            vendor_id,
            name: name.to_string(),
            signing: SigningKey::from_bytes(&crate::util::random()),
            master: Zeroizing::new(crate::util::random()),
        }
    }

    /// The built-in demo publisher. Its private key is public knowledge: it exists so that
    /// `make demo` and the examples run out of the box, and protects nothing.
    pub fn demo() -> PublisherKey {
        use sha2::Digest;
        let seed: [u8; 32] = Sha256::digest(b"tessera demo publisher signing key").into();
        let master: [u8; 32] = Sha256::digest(b"tessera demo publisher master secret").into();
        PublisherKey {
            vendor_id: DEMO_VENDOR_ID,
            name: "Tessera Demo Publisher (insecure, for examples only)".into(),
            signing: SigningKey::from_bytes(&seed),
            master: Zeroizing::new(master),
        }
    }

    /// The public key apps compile in.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The secret of `product_code`.
    pub fn product_secret(&self, product_code: u32) -> Key {
        let hk = Hkdf::<Sha256>::new(Some(&self.vendor_id.to_le_bytes()), self.master.as_ref());
        let mut info = b"tessera v1 product secret".to_vec();
        info.extend_from_slice(&product_code.to_le_bytes());
        let mut k = Zeroizing::new([0u8; 32]);
        let _ = hk.expand(&info, k.as_mut());
        k
    }

    /// A key from fixed parts (the fuzz targets' test publisher, `crate::fuzzing`).
    #[doc(hidden)]
    pub fn from_parts(
        vendor_id: u32,
        name: &str,
        seed: [u8; 32],
        master: [u8; 32],
    ) -> PublisherKey {
        PublisherKey {
            vendor_id,
            name: name.into(),
            signing: SigningKey::from_bytes(&seed),
            master: Zeroizing::new(master),
        }
    }

    /// The key file bytes (private: write with mode 0600).
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let kf = KeyFile {
            vendor_id: self.vendor_id,
            name: self.name.clone(),
            seed: self.signing.to_bytes(),
            master: *self.master,
        };
        let mut out = KEY_MAGIC.to_vec();
        out.extend_from_slice(&KEY_VERSION.to_le_bytes());
        postcard::to_io(&kf, &mut out).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Zeroizing::new(out))
    }

    /// Parses a key file.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublisherKey> {
        let what = "publisher key file";
        if bytes.len() < 6 || bytes[..4] != KEY_MAGIC {
            return Err(Error::malformed(what, "not a Tessera publisher key file"));
        }
        let v = u16::from_le_bytes([bytes[4], bytes[5]]);
        if v != KEY_VERSION {
            return Err(Error::UnknownVersion {
                what,
                found: v,
                supported: KEY_VERSION,
            });
        }
        let kf: KeyFile =
            postcard::from_bytes(&bytes[6..]).map_err(|e| Error::malformed(what, e.to_string()))?;
        check_vendor_id(kf.vendor_id)?;
        Ok(PublisherKey {
            vendor_id: kf.vendor_id,
            name: kf.name.clone(),
            signing: SigningKey::from_bytes(&kf.seed),
            master: Zeroizing::new(kf.master),
        })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<PublisherKey> {
        let b = Zeroizing::new(fs::read(path).map_err(|e| Error::io(path, e))?);
        Self::from_bytes(&b)
    }

    /// Writes the key file with mode 0600, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::util::write_atomic(path, &self.to_bytes()?, 0o600)
    }

    /// The public key file text: `tessera-publisher <vendor_id> <hex key>`.
    pub fn public_key_text(&self) -> String {
        format!(
            "tessera-publisher {} {}\n",
            self.vendor_id,
            hex::encode(self.public_key().to_bytes())
        )
    }

    /// Certifies the container named in `req`.
    pub fn certify(&self, req: &ActivationRequest, now: u64) -> Result<Vec<u8>> {
        let cert = ContainerCertificate {
            vendor_id: self.vendor_id,
            serial: req.serial.clone(),
            kind: req.kind,
            sign_key: req.sign_key,
            seal_key: req.seal_key,
            noise_key: req.noise_key,
            issued_at: now,
            expiry: None,
        };
        envelope::sign(Kind::Certificate, &cert, &self.signing)
    }

    /// A signed license bound to the container of `req`.
    pub fn issue(&self, req: &ActivationRequest, spec: &LicenseSpec, now: u64) -> Result<Vec<u8>> {
        self.issue_bound(
            spec,
            Binding::Container {
                serial: req.serial.clone(),
                key: req.sign_key,
            },
            now,
        )
    }

    /// A signed license of `spec` with `binding`, under a fresh license id.
    fn issue_bound(&self, spec: &LicenseSpec, binding: Binding, now: u64) -> Result<Vec<u8>> {
        if spec.quantity == 0 {
            return Err(Error::InvalidArgument(
                "license quantity must be at least 1".into(),
            ));
        }
        let lic = License {
            license_id: crate::util::random(),
            vendor_id: self.vendor_id,
            product_code: spec.product_code,
            product_name: spec.product_name.clone(),
            features: spec.features,
            quantity: spec.quantity,
            counting_unit: spec.counting_unit,
            exclusive_allowed: spec.exclusive_allowed,
            borrow_days: spec.borrow_days,
            issued_at: now,
            expiry: spec.expiry,
            vm_policy: spec.vm_policy,
            binding,
        };
        Ok(lic.sign(&self.signing)?.bytes)
    }

    /// Verifies an activation request (its self-signature and vendor) and decodes it.
    pub fn read_request(&self, bytes: &[u8]) -> Result<ActivationRequest> {
        let env = Envelope::parse(Kind::ActivationRequest, bytes)?;
        let req: ActivationRequest = env.decode()?;
        let key = VerifyingKey::from_bytes(&req.sign_key)
            .map_err(|_| Error::BadSignature("request names an invalid container key".into()))?;
        env.verify(&key)?;
        let blank_dongle =
            req.vendor_id == 0 && req.kind == crate::container::ContainerKind::Dongle;
        if req.vendor_id != self.vendor_id && !blank_dongle {
            return Err(Error::WrongVendor {
                expected: self.vendor_id,
                found: req.vendor_id,
            });
        }
        Ok(req)
    }

    /// Turns an activation request into a signed activation carrying `specs`.
    pub fn activate(&self, request: &[u8], specs: &[LicenseSpec], now: u64) -> Result<Vec<u8>> {
        if specs.is_empty() {
            return Err(Error::InvalidArgument(
                "an activation needs at least one license".into(),
            ));
        }
        let req = self.read_request(request)?;
        let mut licenses = Vec::new();
        for spec in specs {
            licenses.push(self.issue(&req, spec, now)?);
        }
        self.activation_for(&req, specs, licenses, now)
    }

    /// Activates a license-server pool: one activation per member request (in their order),
    /// each carrying the same licenses (one license id and quantity per spec, signed once)
    /// bound to the pool `name` and all its members (`Binding::Pool`), with the product
    /// secrets sealed to that member. Every member's request must verify and name a
    /// different container. Returns each member's serial and activation.
    pub fn activate_pool(
        &self,
        name: &str,
        requests: &[Vec<u8>],
        specs: &[LicenseSpec],
        now: u64,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        if specs.is_empty() {
            return Err(Error::InvalidArgument(
                "an activation needs at least one license".into(),
            ));
        }
        let reqs = requests
            .iter()
            .map(|r| self.read_request(r))
            .collect::<Result<Vec<_>>>()?;
        let members: Vec<(String, [u8; 32])> = reqs
            .iter()
            .map(|r| (r.serial.clone(), r.sign_key))
            .collect();
        crate::license::check_pool(name, &members)?;
        let binding = Binding::Pool {
            name: name.to_string(),
            members,
        };
        let licenses = specs
            .iter()
            .map(|spec| self.issue_bound(spec, binding.clone(), now))
            .collect::<Result<Vec<_>>>()?;
        reqs.iter()
            .map(|req| {
                let act = self.activation_for(req, specs, licenses.clone(), now)?;
                Ok((req.serial.clone(), act))
            })
            .collect()
    }

    /// The signed activation for `req` carrying the signed `licenses` of `specs` (in the same
    /// order) and their product secrets sealed to the container.
    fn activation_for(
        &self,
        req: &ActivationRequest,
        specs: &[LicenseSpec],
        licenses: Vec<Vec<u8>>,
        now: u64,
    ) -> Result<Vec<u8>> {
        let mut secrets: Vec<cipher::SealedSecret> = Vec::new();
        for spec in specs {
            if !secrets.iter().any(|s| s.product_code == spec.product_code) {
                secrets.push(cipher::seal_secret(
                    &req.seal_key,
                    self.vendor_id,
                    spec.product_code,
                    req.serial.as_bytes(),
                    &self.product_secret(spec.product_code),
                )?);
            }
        }
        let act = Activation {
            vendor_id: self.vendor_id,
            publisher_key: self.public_key().to_bytes(),
            serial: req.serial.clone(),
            sign_key: req.sign_key,
            certificate: self.certify(req, now)?,
            licenses,
            secrets,
            issued_at: now,
        };
        envelope::sign(Kind::Activation, &act, &self.signing)
    }
}

/// Parses a public key file (`tessera-publisher <vendor_id> <hex>`) or bare hex.
pub fn parse_public_key(text: &str) -> Result<(Option<u32>, VerifyingKey)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (vendor, hexkey) =
        match words.as_slice() {
            ["tessera-publisher", v, k] => (
                Some(parse_vendor_id(v).map_err(|e| {
                    Error::malformed("public key file", format!("bad vendor id: {e}"))
                })?),
                *k,
            ),
            [k] => (None, *k),
            _ => {
                return Err(Error::malformed(
                    "public key file",
                    "expected `tessera-publisher <vendor> <hex>`",
                ));
            }
        };
    let bytes: [u8; 32] = hex::decode(hexkey)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::malformed("public key file", "key is not 64 hex digits"))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| Error::malformed("public key file", "not an Ed25519 key"))?;
    Ok((vendor, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vendor_id_is_decimal_or_hex_and_never_0() {
        assert_eq!(parse_vendor_id("4242").unwrap(), 4242);
        assert_eq!(parse_vendor_id("0x1092").unwrap(), 4242);
        assert_eq!(parse_vendor_id(" 0X10_92 ").unwrap(), 4242);
        assert_eq!(parse_vendor_id("4_242").unwrap(), 4242);
        assert_eq!(parse_vendor_id("0xffffffff").unwrap(), u32::MAX);
        for zero in ["0", "0x0", "0x00000000", "000"] {
            let e = parse_vendor_id(zero).unwrap_err().to_string();
            assert!(e.contains("vendor id 0 is no publisher's"), "{zero}: {e}");
        }
        for bad in [
            "",
            "-1",
            "0x",
            "4294967296",
            "0x1_0000_0000",
            "acme",
            "0x12g",
        ] {
            let e = parse_vendor_id(bad).unwrap_err().to_string();
            assert!(e.contains("is not a vendor id"), "{bad}: {e}");
        }
        assert_eq!(vendor_hex(4242), "0x1092");
        // A public key file of vendor 0 is refused, one of a real vendor read in either base.
        let k = PublisherKey::demo().public_key();
        let hexkey = hex::encode(k.to_bytes());
        assert!(parse_public_key(&format!("tessera-publisher 0 {hexkey}")).is_err());
        assert_eq!(
            parse_public_key(&format!("tessera-publisher 0x7e55 {hexkey}")).unwrap(),
            (Some(DEMO_VENDOR_ID), k)
        );
    }

    #[test]
    fn a_key_file_of_vendor_0_does_not_load() {
        let k = PublisherKey::generate(0, "nobody");
        let e = PublisherKey::from_bytes(&k.to_bytes().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("vendor id 0"), "{e}");
    }

    #[test]
    fn key_file_round_trips_and_rejects_garbage() {
        let k = PublisherKey::generate(5, "Acme");
        let b = k.to_bytes().unwrap();
        let back = PublisherKey::from_bytes(&b).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        assert_eq!(*back.product_secret(3), *k.product_secret(3));
        assert_ne!(*k.product_secret(3), *k.product_secret(4));
        assert!(PublisherKey::from_bytes(b"nope").is_err());
        assert!(PublisherKey::from_bytes(&b[..b.len() - 3]).is_err());
        let (v, pk) = parse_public_key(&k.public_key_text()).unwrap();
        assert_eq!((v, pk), (Some(5), k.public_key()));
        assert!(parse_public_key("tessera-publisher x y").is_err());
    }

    #[test]
    fn demo_key_is_stable() {
        assert_eq!(
            PublisherKey::demo().public_key(),
            PublisherKey::demo().public_key()
        );
    }
}
