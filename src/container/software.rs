//! The software container: the engine's state in a file under `TESSERA_HOME/containers`,
//! sealed with a key bound to this machine's fingerprint traits, with a tolerance.
//!
//! ```text
//! "TSSC" | version u16 LE | postcard(SealedFile) | SHA-256 of everything before it
//! ```
//! The file key is sealed to the machine's traits by a [`MachineBinding`] (Shamir's scheme,
//! threshold `k` of the `n` traits it was made on, `k = n - 1` when `n >= 3`, each share
//! encrypted under a key derived from one trait). On another machine too few shares open:
//! `BindingMismatch`. One changed NIC or disk still leaves `k` shares: the container opens. The digest at the end catches any edit
//! (`Tampered`), and the body is XChaCha20-Poly1305 under the file key. Writes are atomic
//! (temporary file, fsync, rename) and serialized across processes by an `flock` on a lock
//! file beside it, and the binding shares are kept as made, so the binding never drifts.
//!
//! **TPM binding** (format 2). Made on a machine with a TPM 2.0 ([`Machine::tpm`]), a
//! container also holds a 32-byte secret sealed to that TPM and the index of a TPM NV
//! monotonic counter; the body key is derived from the fingerprint key *and* the unsealed
//! secret, and the file records the counter value it was written at, authenticated as the
//! body's associated data. Every write raises it by one: the file is written first with the
//! next value, then the TPM counter is incremented (a write is done when both are). On load
//! the file's value must equal the TPM's; one more means a writer was interrupted between
//! the two steps, and the load finishes its increment (under the write lock); less means an
//! older copy of the file was put back: refused as rolled back (`Tampered`), and so is a
//! file ahead of the TPM. Without a TPM a container is format 1, as before.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::engine::{Engine, EngineState};
use super::machine_binding::MachineBinding;
use crate::host::tpm::{SealedSecret, Tpm, TpmConfig};
use crate::host::{Fingerprint, HostIdentity, OverMount};
use crate::license::ContainerKind;
use crate::license::usage::CounterAnchor;
use crate::util::{ensure_dir, write_atomic};
use crate::{Error, Result};

const MAGIC: [u8; 4] = *b"TSSC";
/// The software container file format version (bound to the fingerprint only).
pub const FILE_VERSION: u16 = 1;
/// The format of a container also bound to a TPM.
pub const FILE_VERSION_TPM: u16 = 2;
const DIGEST: usize = 32;
/// File name extension of software containers.
pub const EXTENSION: &str = "tsc";

pub use super::machine_binding::threshold;

#[derive(Serialize, Deserialize)]
struct SealedFile {
    binding: MachineBinding,
    body_nonce: [u8; 24],
    body: Vec<u8>,
}

/// The TPM part of a format-2 file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TpmAnchor {
    /// The NV counter's index.
    nv_index: u32,
    /// The counter value this file was written at.
    counter: u64,
    /// The secret the body key also derives from, sealed to the TPM.
    sealed: SealedSecret,
}

#[derive(Serialize, Deserialize)]
struct SealedFileTpm {
    binding: MachineBinding,
    tpm: TpmAnchor,
    body_nonce: [u8; 24],
    body: Vec<u8>,
}

/// A container's TPM binding while it is open.
struct TpmBound {
    config: TpmConfig,
    anchor: TpmAnchor,
    secret: Zeroizing<Vec<u8>>,
}

/// What a software container is bound to on this machine: its fingerprint traits and,
/// when it has one, its TPM.
#[derive(Clone, Copy, Debug)]
pub struct Machine<'a> {
    /// The machine's fingerprint traits.
    pub fingerprint: &'a Fingerprint,
    /// The machine's TPM 2.0.
    pub tpm: Option<&'a TpmConfig>,
    /// Set when detection found a fingerprint source covered by another mount: nothing is
    /// bound to or opened with such a fingerprint.
    pub overmounted: Option<&'a OverMount>,
}

impl<'a> Machine<'a> {
    /// The fingerprint to bind to or open with: refused (`BindingMismatch`, naming the
    /// over-mounted path) when its sources were covered by another mount.
    fn trusted_fingerprint(&self) -> Result<&'a Fingerprint> {
        match self.overmounted {
            Some(e) => Err(Error::BindingMismatch(e.to_string())),
            None => Ok(self.fingerprint),
        }
    }
}

impl<'a> From<&'a Fingerprint> for Machine<'a> {
    /// A machine known by its traits only (no TPM).
    fn from(fingerprint: &'a Fingerprint) -> Machine<'a> {
        Machine {
            fingerprint,
            tpm: None,
            overmounted: None,
        }
    }
}

impl<'a> From<&'a HostIdentity> for Machine<'a> {
    fn from(host: &'a HostIdentity) -> Machine<'a> {
        Machine {
            fingerprint: &host.fingerprint,
            tpm: host.tpm.as_ref(),
            overmounted: host.overmounted.as_ref(),
        }
    }
}

/// How a loaded file's counter value relates to the TPM's.
enum CounterCheck {
    Equal,
    /// One more: a writer stopped between writing the file and incrementing the counter.
    Interrupted,
    Behind(u64),
    Ahead(u64),
}

/// A software container loaded from (or made into) its file.
pub struct SoftwareContainer {
    path: PathBuf,
    binding: MachineBinding,
    key: Zeroizing<[u8; 32]>,
    tpm: Option<TpmBound>,
    /// The engine running on the container's state.
    pub engine: Engine,
}

impl std::fmt::Debug for SoftwareContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareContainer")
            .field("path", &self.path)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

fn body_aad(salt: &[u8; 16], tpm: Option<&TpmAnchor>) -> Vec<u8> {
    match tpm {
        None => {
            let mut a = b"tessera software container v1".to_vec();
            a.extend_from_slice(salt);
            a
        }
        Some(t) => {
            let mut a = b"tessera software container v2 tpm".to_vec();
            a.extend_from_slice(salt);
            a.extend_from_slice(&t.nv_index.to_le_bytes());
            a.extend_from_slice(&t.counter.to_le_bytes());
            a
        }
    }
}

/// The key the body is sealed with: the fingerprint key, and with a TPM binding both it and
/// the TPM-sealed secret.
fn body_key(key: &[u8; 32], salt: &[u8; 16], tpm: Option<&TpmBound>) -> Zeroizing<[u8; 32]> {
    match tpm {
        None => Zeroizing::new(*key),
        Some(t) => {
            let mut ikm = Zeroizing::new(key.to_vec());
            ikm.extend_from_slice(&t.secret);
            let hk = Hkdf::<Sha256>::new(Some(salt), &ikm);
            let mut k = Zeroizing::new([0u8; 32]);
            let _ = hk.expand(b"tessera v2 body key: fingerprint + tpm", k.as_mut());
            k
        }
    }
}

/// The directory holding software containers under `home`.
pub fn containers_dir(home: &Path) -> PathBuf {
    home.join("containers")
}

/// Paths of the software container files of `vendor_id` under `home`, sorted.
pub fn list_for_vendor(home: &Path, vendor_id: u32) -> Vec<PathBuf> {
    let prefix = format!("{vendor_id:08x}-");
    list(home)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// Paths of all software container files under `home`, sorted.
pub fn list(home: &Path) -> Vec<PathBuf> {
    scan(home).unwrap_or_default()
}

/// Like [`list_for_vendor`], but an error when the home cannot be read (it is a regular
/// file, it is not readable): a home that does not exist holds no containers, one that
/// cannot be read is an I/O failure, not "no license".
pub fn scan_for_vendor(home: &Path, vendor_id: u32) -> Result<Vec<PathBuf>> {
    let prefix = format!("{vendor_id:08x}-");
    Ok(scan(home)?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect())
}

fn scan(home: &Path) -> Result<Vec<PathBuf>> {
    let dir = containers_dir(home);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
        .collect();
    v.sort();
    Ok(v)
}

/// An exclusive `flock` on the container's lock file, held while it is rewritten.
struct WriteLock(#[allow(dead_code)] File);

impl WriteLock {
    fn take(path: &Path) -> Result<WriteLock> {
        let lock_path = path.with_extension("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(&lock_path, std::io::Error::last_os_error()));
        }
        Ok(WriteLock(f))
    }
}

impl SoftwareContainer {
    /// Makes a new, empty software container for `vendor_id` bound to `machine` (its
    /// fingerprint, and its TPM when it has one), and writes it under `home`.
    pub fn create<'a>(
        home: &Path,
        vendor_id: u32,
        machine: impl Into<Machine<'a>>,
        now: u64,
    ) -> Result<SoftwareContainer> {
        let machine = machine.into();
        let fingerprint = machine.trusted_fingerprint()?;
        let engine = Engine::create(ContainerKind::Software, vendor_id, now);
        let key = Zeroizing::new(crate::util::random::<32>());
        let binding = MachineBinding::seal(fingerprint, &key, "a software container")?;
        let tpm = match machine.tpm {
            None => None,
            Some(config) => {
                let mut t = Tpm::open(config)?;
                let secret = Zeroizing::new(crate::util::random::<32>().to_vec());
                let sealed = t.seal(&secret)?;
                let (nv_index, counter) = t.create_counter(engine.serial().as_bytes())?;
                Some(TpmBound {
                    config: config.clone(),
                    anchor: TpmAnchor {
                        nv_index,
                        counter,
                        sealed,
                    },
                    secret,
                })
            }
        };
        let dir = containers_dir(home);
        ensure_dir(&dir)?;
        let path = dir.join(format!("{vendor_id:08x}-{}.{EXTENSION}", engine.serial()));
        let mut c = SoftwareContainer {
            path,
            binding,
            key,
            tpm,
            engine,
        };
        c.set_anchor();
        // The counter already stands at the value the first file is written at.
        let _lock = WriteLock::take(&c.path)?;
        write_atomic(&c.path, &c.encode()?, 0o600)?;
        Ok(c)
    }

    /// Loads the container at `path`, unsealing it with `machine` (its fingerprint, and its
    /// TPM for a container bound to one; a `&Fingerprint` alone is a machine without one).
    pub fn load<'a>(path: &Path, machine: impl Into<Machine<'a>>) -> Result<SoftwareContainer> {
        let machine = machine.into();
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        match Self::from_bytes(path, &bytes, machine, None, false)? {
            Ok(c) => Ok(c),
            Err(()) => {
                // The counter and the file disagree: look again with no writer in between.
                let _lock = WriteLock::take(path)?;
                let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
                Self::from_bytes(path, &bytes, machine, None, true)?
                    .map_err(|()| Error::Internal("counter check under the lock".into()))
            }
        }
    }

    /// Decodes and opens the bytes of a container file (as [`load`](Self::load) does after
    /// reading it, under the write lock); for the fuzz targets (`crate::fuzzing`).
    pub(crate) fn open_bytes<'a>(
        path: &Path,
        bytes: &[u8],
        machine: impl Into<Machine<'a>>,
    ) -> Result<SoftwareContainer> {
        Self::from_bytes(path, bytes, machine.into(), None, true)?
            .map_err(|()| Error::Internal("counter check under the lock".into()))
    }

    /// Decodes and opens a container file. With a TPM binding, compares the file's counter
    /// value with the TPM's: `Ok(Err(()))` asks the caller to look again under the write
    /// lock when they differ and `locked` is false. `known` is this container as loaded
    /// before: its TPM secret is reused when the sealed blob is the same (no unseal).
    fn from_bytes(
        path: &Path,
        bytes: &[u8],
        machine: Machine<'_>,
        known: Option<&TpmBound>,
        locked: bool,
    ) -> Result<std::result::Result<SoftwareContainer, ()>> {
        let what = "software container";
        if bytes.len() < 6 + DIGEST || bytes[..4] != MAGIC {
            return Err(Error::Tampered(format!(
                "{} is not a software container, or is truncated",
                path.display()
            )));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        let (content, digest) = bytes.split_at(bytes.len() - DIGEST);
        if Sha256::digest(content).as_slice() != digest {
            return Err(Error::Tampered(format!(
                "{} fails its integrity check (edited or truncated)",
                path.display()
            )));
        }
        let bad = |e: postcard::Error| Error::Tampered(format!("{}: {e}", path.display()));
        let (binding, anchor, body_nonce, body) = match version {
            FILE_VERSION => {
                let f: SealedFile = postcard::from_bytes(&content[6..]).map_err(bad)?;
                (f.binding, None, f.body_nonce, f.body)
            }
            FILE_VERSION_TPM => {
                let f: SealedFileTpm = postcard::from_bytes(&content[6..]).map_err(bad)?;
                (f.binding, Some(f.tpm), f.body_nonce, f.body)
            }
            found => {
                return Err(Error::UnknownVersion {
                    what,
                    found,
                    supported: FILE_VERSION_TPM,
                });
            }
        };
        let key = binding.open(
            machine.trusted_fingerprint()?,
            &format!("software container {}", path.display()),
        )?;

        // The TPM binding: unseal the secret and read the counter.
        let mut tpm_now = None;
        let tpm = match anchor {
            None => None,
            Some(anchor) => {
                let config = machine.tpm.ok_or_else(|| {
                    Error::BindingMismatch(format!(
                        "software container {} is bound to a TPM, and this machine has none \
                         (or {} names none)",
                        path.display(),
                        crate::host::tpm::TCTI_ENV
                    ))
                })?;
                let mut t = Tpm::open(config)?;
                let secret = match known {
                    Some(k) if k.anchor.sealed == anchor.sealed && k.config == *config => {
                        k.secret.clone()
                    }
                    _ => t.unseal(&anchor.sealed)?,
                };
                let value = t.read_counter(anchor.nv_index)?;
                tpm_now = Some((t, value));
                Some(TpmBound {
                    config: config.clone(),
                    anchor,
                    secret,
                })
            }
        };
        let bk = body_key(&key, binding.salt(), tpm.as_ref());
        let body = Zeroizing::new(
            XChaCha20Poly1305::new(bk.as_ref().into())
                .decrypt(
                    XNonce::from_slice(&body_nonce),
                    Payload {
                        msg: &body,
                        aad: &body_aad(binding.salt(), tpm.as_ref().map(|t| &t.anchor)),
                    },
                )
                .map_err(|_| {
                    Error::Tampered(format!("{} body fails authentication", path.display()))
                })?,
        );
        if let (Some(bound), Some((t, value))) = (&tpm, tpm_now.as_mut()) {
            let file = bound.anchor.counter;
            let check = if file == *value {
                CounterCheck::Equal
            } else if file == value.saturating_add(1) {
                CounterCheck::Interrupted
            } else if file < *value {
                CounterCheck::Behind(*value)
            } else {
                CounterCheck::Ahead(*value)
            };
            match check {
                CounterCheck::Equal => {}
                _ if !locked => return Ok(Err(())),
                CounterCheck::Interrupted => {
                    // Finish the interrupted write: the file is the newest state.
                    let v = t.increment(bound.anchor.nv_index)?;
                    if v != file {
                        return Err(Error::Tampered(format!(
                            "{}: the TPM counter moved to {v} while completing write {file}",
                            path.display()
                        )));
                    }
                }
                CounterCheck::Behind(v) => {
                    return Err(Error::Tampered(format!(
                        "software container {} was rolled back: this file was written at TPM \
                         counter value {file}, and the TPM's counter {:#010x} stands at {v} \
                         (an older copy of the file was put back)",
                        path.display(),
                        bound.anchor.nv_index
                    )));
                }
                CounterCheck::Ahead(v) => {
                    return Err(Error::Tampered(format!(
                        "software container {} was written at TPM counter value {file}, ahead \
                         of the TPM's counter {:#010x} at {v}: it does not belong to this TPM's \
                         history",
                        path.display(),
                        bound.anchor.nv_index
                    )));
                }
            }
        }
        let state = EngineState::decode(&body)
            .map_err(|e| Error::Tampered(format!("{} state: {e}", path.display())))?;
        let engine = Engine::from_state(state)?;
        let mut c = SoftwareContainer {
            path: path.to_path_buf(),
            binding,
            key,
            tpm,
            engine,
        };
        c.set_anchor();
        Ok(Ok(c))
    }

    /// Tells the engine whether its usage-signature numbers are anchored (in the TPM).
    fn set_anchor(&mut self) {
        self.engine.set_usage_anchor(if self.tpm.is_some() {
            CounterAnchor::Tpm
        } else {
            CounterAnchor::Unanchored
        });
    }

    fn encode(&self) -> Result<Vec<u8>> {
        let body = Zeroizing::new(
            postcard::to_stdvec(self.engine.state())
                .map_err(|e| Error::Internal(format!("encoding container state: {e}")))?,
        );
        let body_nonce: [u8; 24] = crate::util::random();
        let salt = self.binding.salt();
        let bk = body_key(&self.key, salt, self.tpm.as_ref());
        let body = XChaCha20Poly1305::new(bk.as_ref().into())
            .encrypt(
                XNonce::from_slice(&body_nonce),
                Payload {
                    msg: &body,
                    aad: &body_aad(salt, self.tpm.as_ref().map(|t| &t.anchor)),
                },
            )
            .map_err(|_| Error::Internal("sealing container state failed".into()))?;
        let mut out = MAGIC.to_vec();
        let written = match &self.tpm {
            None => {
                out.extend_from_slice(&FILE_VERSION.to_le_bytes());
                postcard::to_io(
                    &SealedFile {
                        binding: self.binding.clone(),
                        body_nonce,
                        body,
                    },
                    &mut out,
                )
                .map(|_| ())
            }
            Some(t) => {
                out.extend_from_slice(&FILE_VERSION_TPM.to_le_bytes());
                postcard::to_io(
                    &SealedFileTpm {
                        binding: self.binding.clone(),
                        tpm: t.anchor.clone(),
                        body_nonce,
                        body,
                    },
                    &mut out,
                )
                .map(|_| ())
            }
        };
        written.map_err(|e| Error::Internal(format!("encoding container: {e}")))?;
        let d = Sha256::digest(&out);
        out.extend_from_slice(&d);
        Ok(out)
    }

    /// Writes the container under the write lock (held by the caller). With a TPM binding:
    /// the file first, at the counter's next value, then the counter's increment.
    fn commit(&mut self) -> Result<()> {
        self.remove_stale_temporaries();
        let Some(t) = self.tpm.as_mut() else {
            return write_atomic(&self.path, &self.encode()?, 0o600);
        };
        let next = t.anchor.counter + 1;
        let index = t.anchor.nv_index;
        let mut tpm = Tpm::open(&t.config)?;
        t.anchor.counter = next;
        let bytes = self.encode();
        let written = bytes.and_then(|b| write_atomic(&self.path, &b, 0o600));
        if let Err(e) = written {
            if let Some(t) = self.tpm.as_mut() {
                t.anchor.counter = next - 1;
            }
            return Err(e);
        }
        let v = tpm.increment(index)?;
        if v != next {
            return Err(Error::Tampered(format!(
                "{}: the TPM counter {index:#010x} went to {v}, not {next}: something else \
                 increments it",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Removes temporary files that a writer killed mid-write left behind. Called under the
    /// write lock, so no live writer owns one.
    fn remove_stale_temporaries(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let prefix = format!(".{}.tmp.", name.to_string_lossy());
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Re-reads the container from its file under the write lock, applies `change` to the
    /// fresh engine, and writes it back atomically (with a TPM binding, anchored in the TPM's
    /// counter before this returns). Other processes' changes made since this container was
    /// loaded are kept. On error nothing is written.
    pub fn update<'a, R>(
        &mut self,
        machine: impl Into<Machine<'a>>,
        change: impl FnOnce(&mut Engine) -> Result<R>,
    ) -> Result<R> {
        let machine = machine.into();
        let _lock = WriteLock::take(&self.path)?;
        let bytes = fs::read(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut fresh = Self::from_bytes(&self.path, &bytes, machine, self.tpm.as_ref(), true)?
            .map_err(|()| Error::Internal("counter check under the lock".into()))?;
        let r = change(&mut fresh.engine)?;
        // A borrowed seat that has ended goes with the next save.
        fresh.engine.prune_borrowed();
        fresh.commit()?;
        *self = fresh;
        Ok(r)
    }

    /// The file this container lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The binding's threshold and share count.
    pub fn binding_summary(&self) -> (usize, usize) {
        self.binding.summary()
    }

    /// What the container is bound to: `"fingerprint"`, or `"fingerprint + TPM"` when its
    /// key is also sealed to this machine's TPM and its state anchored in a TPM counter.
    pub fn binding_kind(&self) -> &'static str {
        if self.tpm.is_some() {
            "fingerprint + TPM"
        } else {
            "fingerprint"
        }
    }

    /// The TPM NV counter's index and the value this container was last written at, for a
    /// container bound to a TPM.
    pub fn tpm_counter(&self) -> Option<(u32, u64)> {
        self.tpm
            .as_ref()
            .map(|t| (t.anchor.nv_index, t.anchor.counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Trait;
    use crate::host::TraitKind;

    fn fp(values: &[(TraitKind, &str)]) -> Fingerprint {
        Fingerprint::from_traits(
            values
                .iter()
                .map(|(k, v)| Trait {
                    kind: *k,
                    value: v.to_string(),
                })
                .collect(),
        )
    }

    fn machine_a() -> Fingerprint {
        fp(&[
            (TraitKind::MachineId, "aaaa"),
            (TraitKind::Cpu, "Xeon"),
            (TraitKind::Mac, "52:54:00:00:00:01"),
            (TraitKind::RootDisk, "disk-1"),
        ])
    }

    #[test]
    fn opens_on_its_machine_with_one_changed_part_and_not_elsewhere() {
        let home = tempfile::tempdir().unwrap();
        let c = SoftwareContainer::create(home.path(), 9, &machine_a(), 1000).unwrap();
        assert_eq!(c.binding_summary(), (3, 4));
        let serial = c.engine.serial().to_string();
        let again = SoftwareContainer::load(c.path(), &machine_a()).unwrap();
        assert_eq!(again.engine.serial(), serial);

        let new_nic = fp(&[
            (TraitKind::MachineId, "aaaa"),
            (TraitKind::Cpu, "Xeon"),
            (TraitKind::Mac, "52:54:00:00:00:99"),
            (TraitKind::RootDisk, "disk-1"),
        ]);
        assert!(SoftwareContainer::load(c.path(), &new_nic).is_ok());
        let new_disk_and_nic = fp(&[
            (TraitKind::MachineId, "aaaa"),
            (TraitKind::Cpu, "Xeon"),
            (TraitKind::Mac, "52:54:00:00:00:99"),
            (TraitKind::RootDisk, "disk-2"),
        ]);
        assert!(matches!(
            SoftwareContainer::load(c.path(), &new_disk_and_nic),
            Err(Error::BindingMismatch(_))
        ));
        let other_machine = fp(&[
            (TraitKind::MachineId, "bbbb"),
            (TraitKind::Cpu, "Xeon"),
            (TraitKind::Mac, "52:54:00:00:00:02"),
            (TraitKind::RootDisk, "disk-9"),
        ]);
        assert!(matches!(
            SoftwareContainer::load(c.path(), &other_machine),
            Err(Error::BindingMismatch(_))
        ));
    }

    #[test]
    fn any_edit_or_truncation_is_tampered_and_version_is_checked() {
        let home = tempfile::tempdir().unwrap();
        let c = SoftwareContainer::create(home.path(), 9, &machine_a(), 1000).unwrap();
        let good = fs::read(c.path()).unwrap();
        let p = home.path().join("copy.tsc");
        for i in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            fs::write(&p, &bad).unwrap();
            let e = SoftwareContainer::load(&p, &machine_a()).unwrap_err();
            assert!(matches!(e, Error::Tampered(_)), "byte {i}: {e}");
        }
        for n in [0, 3, 10, good.len() / 2, good.len() - 1] {
            fs::write(&p, &good[..n]).unwrap();
            assert!(matches!(
                SoftwareContainer::load(&p, &machine_a()),
                Err(Error::Tampered(_))
            ));
        }
        // A future version with a consistent digest is named as such.
        let mut future = good[..good.len() - DIGEST].to_vec();
        future[4] = 3;
        let d = Sha256::digest(&future);
        future.extend_from_slice(&d);
        fs::write(&p, &future).unwrap();
        assert!(matches!(
            SoftwareContainer::load(&p, &machine_a()),
            Err(Error::UnknownVersion { found: 3, .. })
        ));
    }

    #[cfg(feature = "tpm")]
    #[test]
    fn with_a_tpm_an_older_copy_is_refused_as_rolled_back_and_an_interrupted_write_completes() {
        use crate::host::tpm::swtpm::Swtpm;
        let sw = Swtpm::start();
        let cfg = TpmConfig { tcti: sw.tcti() };
        let fpa = machine_a();
        let m = Machine {
            fingerprint: &fpa,
            tpm: Some(&cfg),
            overmounted: None,
        };
        let home = tempfile::tempdir().unwrap();
        let mut c = SoftwareContainer::create(home.path(), 9, m, 1000).unwrap();
        assert_eq!(c.binding_kind(), "fingerprint + TPM");
        assert_eq!(c.engine.usage_anchor(), CounterAnchor::Tpm);
        let (index, v0) = c.tpm_counter().unwrap();
        let old = fs::read(c.path()).unwrap();
        assert_eq!(u16::from_le_bytes([old[4], old[5]]), FILE_VERSION_TPM);
        // Loading reads the counter and does not move it.
        let again = SoftwareContainer::load(c.path(), m).unwrap();
        assert_eq!(again.tpm_counter(), Some((index, v0)));
        c.update(m, |e| {
            e.observe_clock(5000);
            Ok(())
        })
        .unwrap();
        assert_eq!(c.tpm_counter(), Some((index, v0 + 1)));
        let mut t = Tpm::open(&cfg).unwrap();
        assert_eq!(t.read_counter(index).unwrap(), v0 + 1);

        // The older copy put back: refused, with the word for it.
        let newer = fs::read(c.path()).unwrap();
        fs::write(c.path(), &old).unwrap();
        let e = SoftwareContainer::load(c.path(), m).unwrap_err();
        assert!(
            matches!(&e, Error::Tampered(m) if m.contains("rolled back")),
            "{e}"
        );
        fs::write(c.path(), &newer).unwrap();
        let back = SoftwareContainer::load(c.path(), m).unwrap();
        assert_eq!(back.engine.state().clock_high_water, 5000);

        // A writer stopped between the file and the counter: the file is one ahead, and the
        // next load finishes the increment.
        let mut ahead = SoftwareContainer::load(c.path(), m).unwrap();
        if let Some(t) = ahead.tpm.as_mut() {
            t.anchor.counter += 1;
        }
        ahead.engine.observe_clock(6000);
        write_atomic(ahead.path(), &ahead.encode().unwrap(), 0o600).unwrap();
        let done = SoftwareContainer::load(c.path(), m).unwrap();
        assert_eq!(done.engine.state().clock_high_water, 6000);
        assert_eq!(t.read_counter(index).unwrap(), v0 + 2);
        // ... and then the copy from before that write is behind.
        fs::write(c.path(), &newer).unwrap();
        assert!(matches!(
            SoftwareContainer::load(c.path(), m),
            Err(Error::Tampered(_))
        ));

        // Without the TPM, or on another TPM, it does not open.
        let other = Swtpm::start();
        let other_cfg = TpmConfig { tcti: other.tcti() };
        let c = SoftwareContainer::create(home.path(), 9, m, 1000).unwrap();
        assert!(matches!(
            SoftwareContainer::load(c.path(), &fpa),
            Err(Error::BindingMismatch(_))
        ));
        let e = SoftwareContainer::load(
            c.path(),
            Machine {
                fingerprint: &fpa,
                tpm: Some(&other_cfg),
                overmounted: None,
            },
        )
        .unwrap_err();
        assert!(matches!(e, Error::BindingMismatch(_)), "{e}");
    }

    #[test]
    fn without_a_tpm_the_file_is_format_1_and_unanchored() {
        let home = tempfile::tempdir().unwrap();
        let c = SoftwareContainer::create(home.path(), 9, &machine_a(), 1000).unwrap();
        let bytes = fs::read(c.path()).unwrap();
        assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), FILE_VERSION);
        assert_eq!(c.binding_kind(), "fingerprint");
        assert_eq!(c.tpm_counter(), None);
        assert_eq!(c.engine.usage_anchor(), CounterAnchor::Unanchored);
    }

    #[test]
    fn update_keeps_changes_of_others_and_writes_atomically() {
        let home = tempfile::tempdir().unwrap();
        let mut a = SoftwareContainer::create(home.path(), 9, &machine_a(), 1000).unwrap();
        let mut b = SoftwareContainer::load(a.path(), &machine_a()).unwrap();
        a.update(&machine_a(), |e| {
            e.observe_clock(5000);
            Ok(())
        })
        .unwrap();
        b.update(&machine_a(), |e| {
            assert_eq!(e.state().clock_high_water, 5000, "b sees a's write");
            Ok(())
        })
        .unwrap();
        let names: Vec<_> = fs::read_dir(containers_dir(home.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
    }
}
