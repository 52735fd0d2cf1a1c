//! The machine's TPM 2.0, when it has one: a secret sealed to it (a software container's key
//! share that only this TPM unseals) and NV monotonic counters (an NV index with the
//! `TPMA_NV_COUNTER` attribute only ever increments, and a counter defined anew starts at or
//! above the highest value any counter of that TPM ever had), which anchor a software
//! container's state so that a copy of its file put back is seen as rolled back.
//!
//! Which TPM: [`TpmConfig::from_env`]: `TESSERA_TPM_TCTI` (a TCTI configuration such as
//! `swtpm:host=127.0.0.1,port=2321`, or `none`), else the kernel's resource manager
//! `/dev/tpmrm0` when present, else none. Talks to it through the TSS2 ESAPI (`tss-esapi`),
//! with the owner hierarchy's authorization (empty, as on most machines) in a password
//! session. Built without the `tpm` feature, [`Tpm::open`] says so and nothing binds to one.

use zeroize::Zeroizing;

use crate::{Error, Result};

/// The environment variable that names the TPM (a TCTI configuration, or `none`).
pub const TCTI_ENV: &str = "TESSERA_TPM_TCTI";
/// The kernel's TPM resource manager device.
pub const DEVICE: &str = "/dev/tpmrm0";
/// Where this runtime's NV counters are placed: owner-defined indices `0x0154_xxxx`.
const NV_BASE: u32 = 0x0154_0000;

/// Which TPM to use: a TCTI configuration string (`device:/dev/tpmrm0`,
/// `swtpm:host=127.0.0.1,port=2321`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmConfig {
    /// The TCTI configuration.
    pub tcti: String,
}

impl TpmConfig {
    /// The TPM of this machine: `TESSERA_TPM_TCTI` when set (`none` or empty: no TPM), else
    /// `/dev/tpmrm0` when it exists, else none.
    pub fn from_env() -> Option<TpmConfig> {
        Self::choose(
            std::env::var(TCTI_ENV).ok().as_deref(),
            std::path::Path::new(DEVICE).exists(),
        )
    }

    /// [`from_env`](Self::from_env) on given inputs.
    pub fn choose(var: Option<&str>, device_present: bool) -> Option<TpmConfig> {
        match var.map(str::trim) {
            Some("") | Some("none") => None,
            Some(t) => Some(TpmConfig { tcti: t.to_owned() }),
            None if device_present => Some(TpmConfig {
                tcti: format!("device:{DEVICE}"),
            }),
            None => None,
        }
    }
}

/// A secret sealed to a TPM: the sealed object's public and private parts as the TPM
/// marshals them. Only the TPM that made it unseals it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedSecret {
    /// `TPM2B_PUBLIC` body, marshalled.
    pub public: Vec<u8>,
    /// `TPM2B_PRIVATE` body (encrypted by the TPM under its storage key).
    pub private: Vec<u8>,
}

/// The first NV index tried for a counter named by `hint`; collisions take the next ones.
fn first_index(hint: &[u8]) -> u32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(hint);
    NV_BASE | (u32::from(d[0]) << 8 | u32::from(d[1]))
}

fn tpm_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("TPM: {what} failed: {e}"))
}

#[cfg(feature = "tpm")]
mod imp {
    use std::str::FromStr;

    use tss_esapi::attributes::{NvIndexAttributesBuilder, ObjectAttributesBuilder};
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::constants::nv_index_type::NvIndexType;
    use tss_esapi::handles::{KeyHandle, NvIndexHandle, NvIndexTpmHandle, TpmHandle};
    use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
    use tss_esapi::interface_types::ecc::EccCurve;
    use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
    use tss_esapi::interface_types::session_handles::AuthSession;
    use tss_esapi::structures::CapabilityData;
    use tss_esapi::structures::{
        EccPoint, KeyedHashScheme, NvPublicBuilder, Private, Public, PublicBuilder,
        PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData,
        SymmetricDefinitionObject,
    };
    use tss_esapi::tcti_ldr::TctiNameConf;
    use tss_esapi::traits::{Marshall, UnMarshall};
    use tss_esapi::{Context, structures::Digest};

    use super::*;

    /// An open connection to a TPM.
    pub struct Tpm {
        ctx: Context,
    }

    impl std::fmt::Debug for Tpm {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Tpm").finish_non_exhaustive()
        }
    }

    /// The storage primary key's template (ECC P-256, AES-128-CFB, as the TCG's SRK
    /// template): the same template on the same TPM always gives the same key, so nothing
    /// needs to be made persistent.
    fn primary_template() -> tss_esapi::Result<Public> {
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_decrypt(true)
            .with_restricted(true)
            .with_no_da(true)
            .build()?;
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP256,
                )
                .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
    }

    fn sealed_template() -> tss_esapi::Result<Public> {
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_no_da(true)
            .with_user_with_auth(true)
            .build()?;
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(Digest::default())
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build()
    }

    impl Tpm {
        /// Connects to the TPM `config` names.
        pub fn open(config: &TpmConfig) -> Result<Tpm> {
            let tcti = TctiNameConf::from_str(&config.tcti).map_err(|e| {
                Error::InvalidArgument(format!(
                    "{TCTI_ENV}={:?} is not a TCTI configuration: {e}",
                    config.tcti
                ))
            })?;
            let mut ctx = Context::new(tcti).map_err(|e| {
                Error::Unsupported(format!(
                    "the TPM at {:?} cannot be reached: {e} (set {TCTI_ENV}=none to use no TPM)",
                    config.tcti
                ))
            })?;
            ctx.set_sessions((Some(AuthSession::Password), None, None));
            Ok(Tpm { ctx })
        }

        fn nv_handle(&mut self, index: u32) -> Result<NvIndexHandle> {
            let h = NvIndexTpmHandle::new(index)
                .map_err(|e| tpm_error(&format!("NV index {index:#010x}"), e))?;
            self.ctx
                .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(h)))
                .map(NvIndexHandle::from)
                .map_err(|e| {
                    Error::Tampered(format!(
                        "the TPM holds no NV counter {index:#010x} (it was deleted, or this is another TPM): {e}"
                    ))
                })
        }

        /// Defines a new NV monotonic counter (owner-authorized, 8 bytes) near an index
        /// derived from `hint`, increments it once so it can be read, and returns its index
        /// and value.
        pub fn create_counter(&mut self, hint: &[u8]) -> Result<(u32, u64)> {
            let first = first_index(hint);
            let defined = self.defined_indices()?;
            for i in 0..64u32 {
                let index = NV_BASE | ((first.wrapping_add(i)) & 0xffff);
                let tpm_handle = NvIndexTpmHandle::new(index)
                    .map_err(|e| tpm_error("choosing an NV index", e))?;
                if defined.contains(&index) {
                    continue;
                }
                let attrs = NvIndexAttributesBuilder::new()
                    .with_owner_write(true)
                    .with_owner_read(true)
                    .with_nv_index_type(NvIndexType::Counter)
                    .build()
                    .map_err(|e| tpm_error("NV counter attributes", e))?;
                let public = NvPublicBuilder::new()
                    .with_nv_index(tpm_handle)
                    .with_index_name_algorithm(HashingAlgorithm::Sha256)
                    .with_index_attributes(attrs)
                    .with_data_area_size(8)
                    .build()
                    .map_err(|e| tpm_error("NV counter template", e))?;
                self.ctx
                    .nv_define_space(Provision::Owner, None, public)
                    .map_err(|e| tpm_error("defining an NV counter", e))?;
                let value = self.increment(index)?;
                return Ok((index, value));
            }
            Err(Error::Unsupported(
                "TPM: no free NV index for a counter".into(),
            ))
        }

        /// The NV indices defined in this runtime's range (asking the TPM for the list rather
        /// than probing each, which the TSS would log as errors).
        fn defined_indices(&mut self) -> Result<Vec<u32>> {
            let mut out = Vec::new();
            let mut from = NV_BASE;
            loop {
                let (data, more) = self
                    .ctx
                    .execute_without_session(|c| {
                        c.get_capability(CapabilityType::Handles, from, 256)
                    })
                    .map_err(|e| tpm_error("listing NV indices", e))?;
                let CapabilityData::Handles(list) = data else {
                    return Err(tpm_error("listing NV indices", "unexpected answer"));
                };
                let mut last = None;
                for h in list.into_inner() {
                    let v = u32::from(h);
                    last = Some(v);
                    if v & 0xffff_0000 == NV_BASE {
                        out.push(v);
                    }
                }
                match last {
                    Some(v) if more && v & 0xffff_0000 == NV_BASE => from = v + 1,
                    _ => return Ok(out),
                }
            }
        }

        /// The counter's value.
        pub fn read_counter(&mut self, index: u32) -> Result<u64> {
            let h = self.nv_handle(index)?;
            let data = self
                .ctx
                .nv_read(NvAuth::Owner, h, 8, 0)
                .map_err(|e| tpm_error(&format!("reading NV counter {index:#010x}"), e))?;
            let bytes: [u8; 8] = data.value().try_into().map_err(|_| {
                Error::Tampered(format!("NV index {index:#010x} is not an 8-byte counter"))
            })?;
            Ok(u64::from_be_bytes(bytes))
        }

        /// Increments the counter and returns its new value.
        pub fn increment(&mut self, index: u32) -> Result<u64> {
            let h = self.nv_handle(index)?;
            self.ctx
                .nv_increment(NvAuth::Owner, h)
                .map_err(|e| tpm_error(&format!("incrementing NV counter {index:#010x}"), e))?;
            self.read_counter(index)
        }

        /// Deletes the counter (for the publisher's tools and tests; a counter defined anew
        /// starts no lower).
        pub fn remove_counter(&mut self, index: u32) -> Result<()> {
            let h = self.nv_handle(index)?;
            self.ctx
                .nv_undefine_space(Provision::Owner, h)
                .map_err(|e| tpm_error(&format!("deleting NV counter {index:#010x}"), e))
        }

        fn primary(&mut self) -> Result<KeyHandle> {
            let template = primary_template().map_err(|e| tpm_error("key template", e))?;
            self.ctx
                .create_primary(Hierarchy::Owner, template, None, None, None, None)
                .map(|r| r.key_handle)
                .map_err(|e| tpm_error("making the storage key", e))
        }

        /// Seals `secret` (at most 128 bytes) under the TPM's storage key.
        pub fn seal(&mut self, secret: &[u8]) -> Result<SealedSecret> {
            let parent = self.primary()?;
            let data = SensitiveData::try_from(secret.to_vec())
                .map_err(|e| tpm_error("sealing (secret too long)", e))?;
            let template = sealed_template().map_err(|e| tpm_error("sealed template", e))?;
            let made = self
                .ctx
                .create(parent, template, None, Some(data), None, None);
            let _ = self.ctx.flush_context(parent.into());
            let made = made.map_err(|e| tpm_error("sealing a secret", e))?;
            Ok(SealedSecret {
                public: made
                    .out_public
                    .marshall()
                    .map_err(|e| tpm_error("marshalling the sealed object", e))?,
                private: made.out_private.value().to_vec(),
            })
        }

        /// Unseals a secret this TPM sealed.
        pub fn unseal(&mut self, sealed: &SealedSecret) -> Result<Zeroizing<Vec<u8>>> {
            let public = Public::unmarshall(&sealed.public)
                .map_err(|e| Error::Tampered(format!("the TPM-sealed key is unreadable: {e}")))?;
            let private = Private::try_from(sealed.private.clone())
                .map_err(|e| Error::Tampered(format!("the TPM-sealed key is unreadable: {e}")))?;
            let parent = self.primary()?;
            let loaded = self.ctx.load(parent, private, public);
            let _ = self.ctx.flush_context(parent.into());
            let loaded = loaded.map_err(|e| {
                Error::BindingMismatch(format!(
                    "the container's key is sealed to another TPM (this one refuses it: {e})"
                ))
            })?;
            let out = self.ctx.unseal(loaded.into());
            let _ = self.ctx.flush_context(loaded.into());
            let out = out.map_err(|e| tpm_error("unsealing the container's key", e))?;
            Ok(Zeroizing::new(out.value().to_vec()))
        }
    }
}

#[cfg(not(feature = "tpm"))]
mod imp {
    use super::*;

    /// A TPM connection; this build has no TPM support, so none can be opened.
    #[derive(Debug)]
    pub struct Tpm(());

    fn unsupported<T>() -> Result<T> {
        Err(Error::Unsupported(
            "this build of Tessera has no TPM support (feature `tpm`)".into(),
        ))
    }

    impl Tpm {
        /// Always fails: no TPM support in this build.
        pub fn open(_config: &TpmConfig) -> Result<Tpm> {
            unsupported()
        }
        /// Unreachable without a TPM.
        pub fn create_counter(&mut self, _hint: &[u8]) -> Result<(u32, u64)> {
            unsupported()
        }
        /// Unreachable without a TPM.
        pub fn read_counter(&mut self, _index: u32) -> Result<u64> {
            unsupported()
        }
        /// Unreachable without a TPM.
        pub fn increment(&mut self, _index: u32) -> Result<u64> {
            unsupported()
        }
        /// Unreachable without a TPM.
        pub fn remove_counter(&mut self, _index: u32) -> Result<()> {
            unsupported()
        }
        /// Unreachable without a TPM.
        pub fn seal(&mut self, _secret: &[u8]) -> Result<SealedSecret> {
            unsupported()
        }
        /// Unreachable without a TPM.
        pub fn unseal(&mut self, _sealed: &SealedSecret) -> Result<Zeroizing<Vec<u8>>> {
            unsupported()
        }
    }
}

pub use imp::Tpm;

/// The tests' software TPM (shared with the integration tests).
#[cfg(test)]
#[path = "../../tests/common/swtpm.rs"]
pub(crate) mod swtpm;

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "tpm")]
    #[test]
    fn a_counter_only_goes_up_and_a_sealed_secret_opens_only_on_its_tpm() {
        let a = swtpm::Swtpm::start();
        let b = swtpm::Swtpm::start();
        let mut tpm = Tpm::open(&TpmConfig { tcti: a.tcti() }).unwrap();
        let (index, v0) = tpm.create_counter(b"SW-TEST").unwrap();
        assert_eq!(index & 0xffff_0000, NV_BASE);
        assert_eq!(tpm.read_counter(index).unwrap(), v0);
        assert_eq!(tpm.increment(index).unwrap(), v0 + 1);
        // A second counter with the same hint takes another index.
        let (other, _) = tpm.create_counter(b"SW-TEST").unwrap();
        assert_ne!(other, index);
        // Deleted and defined anew, a counter starts no lower than it was.
        tpm.remove_counter(index).unwrap();
        assert!(matches!(tpm.read_counter(index), Err(Error::Tampered(_))));
        let (again, v) = tpm.create_counter(b"SW-TEST").unwrap();
        assert_eq!(again, index);
        assert!(v > v0 + 1, "{v} after {}", v0 + 1);

        let sealed = tpm.seal(&[7u8; 32]).unwrap();
        drop(tpm);
        let mut tpm = Tpm::open(&TpmConfig { tcti: a.tcti() }).unwrap();
        assert_eq!(tpm.unseal(&sealed).unwrap().as_slice(), &[7u8; 32]);
        let mut other_tpm = Tpm::open(&TpmConfig { tcti: b.tcti() }).unwrap();
        assert!(matches!(
            other_tpm.unseal(&sealed),
            Err(Error::BindingMismatch(_))
        ));
        let mut bad = sealed.clone();
        bad.public.truncate(3);
        assert!(tpm.unseal(&bad).is_err());
    }

    #[test]
    fn an_unreachable_tpm_is_a_clear_error() {
        let e = Tpm::open(&TpmConfig {
            tcti: "swtpm:host=127.0.0.1,port=1".into(),
        })
        .and_then(|mut t| t.read_counter(NV_BASE))
        .unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
    }

    #[test]
    fn the_variable_names_the_tpm_and_the_device_is_the_default() {
        assert_eq!(TpmConfig::choose(None, false), None);
        assert_eq!(
            TpmConfig::choose(None, true),
            Some(TpmConfig {
                tcti: "device:/dev/tpmrm0".into()
            })
        );
        assert_eq!(TpmConfig::choose(Some("none"), true), None);
        assert_eq!(TpmConfig::choose(Some(" "), true), None);
        assert_eq!(
            TpmConfig::choose(Some("swtpm:host=127.0.0.1,port=2321"), false),
            Some(TpmConfig {
                tcti: "swtpm:host=127.0.0.1,port=2321".into()
            })
        );
    }

    #[test]
    fn counter_indices_stay_in_the_owner_range_set_aside() {
        for hint in [&b""[..], b"SW-0000-0000-0000", b"x"] {
            assert_eq!(first_index(hint) & 0xffff_0000, NV_BASE);
        }
    }
}
