//! The software container: the engine's state in a file under `TESSERA_HOME/containers`,
//! sealed with a key bound to this machine's fingerprint traits, with a tolerance.
//!
//! ```text
//! "TSSC" | version u16 LE | postcard(SealedFile) | SHA-256 of everything before it
//! ```
//! The file key is sealed to the machine's traits by a [`MachineBinding`] (Shamir's scheme,
//! threshold `k` of the `n` traits it was made on, `k = n - 1` when `n >= 3`, each share
//! encrypted under a key derived from one trait). On another machine too few shares open:
//! `BindingMismatch`. One changed NIC or disk still leaves `k` shares: the container opens.
//! The digest at the end catches any edit (`Tampered`), and the body is XChaCha20-Poly1305
//! under the file key. Writes are atomic (temporary file, fsync, rename) and serialized
//! across processes by an `flock` on a lock file beside it, and the binding shares are kept
//! as made, so the binding never drifts.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::engine::{Engine, EngineState};
use super::machine_binding::MachineBinding;
use crate::host::Fingerprint;
use crate::license::ContainerKind;
use crate::util::{ensure_dir, write_atomic};
use crate::{Error, Result};

pub use super::machine_binding::threshold;

const MAGIC: [u8; 4] = *b"TSSC";
/// The software container file format version.
pub const FILE_VERSION: u16 = 1;
const DIGEST: usize = 32;
/// File name extension of software containers.
pub const EXTENSION: &str = "tsc";

#[derive(Serialize, Deserialize)]
struct SealedFile {
    binding: MachineBinding,
    body_nonce: [u8; 24],
    body: Vec<u8>,
}

/// A software container loaded from (or made into) its file.
pub struct SoftwareContainer {
    path: PathBuf,
    binding: MachineBinding,
    key: Zeroizing<[u8; 32]>,
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

fn body_aad(salt: &[u8; 16]) -> Vec<u8> {
    let mut a = b"tessera software container v1".to_vec();
    a.extend_from_slice(salt);
    a
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
    let mut v: Vec<PathBuf> = fs::read_dir(containers_dir(home))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
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
    /// Makes a new, empty software container for `vendor_id` bound to `fingerprint`, and
    /// writes it under `home`.
    pub fn create(
        home: &Path,
        vendor_id: u32,
        fingerprint: &Fingerprint,
        now: u64,
    ) -> Result<SoftwareContainer> {
        if fingerprint.traits.is_empty() {
            return Err(Error::Unsupported(
                "no machine traits could be read to bind a software container to".into(),
            ));
        }
        let engine = Engine::create(ContainerKind::Software, vendor_id, now);
        let key = Zeroizing::new(crate::util::random::<32>());
        let binding = MachineBinding::seal(fingerprint, &key, "a software container")?;
        let dir = containers_dir(home);
        ensure_dir(&dir)?;
        let path = dir.join(format!("{vendor_id:08x}-{}.{EXTENSION}", engine.serial()));
        let c = SoftwareContainer {
            path,
            binding,
            key,
            engine,
        };
        c.write()?;
        Ok(c)
    }

    /// Loads the container at `path`, unsealing it with `fingerprint`.
    pub fn load(path: &Path, fingerprint: &Fingerprint) -> Result<SoftwareContainer> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes, fingerprint)
    }

    fn from_bytes(
        path: &Path,
        bytes: &[u8],
        fingerprint: &Fingerprint,
    ) -> Result<SoftwareContainer> {
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
        if version != FILE_VERSION {
            return Err(Error::UnknownVersion {
                what,
                found: version,
                supported: FILE_VERSION,
            });
        }
        let sealed: SealedFile = postcard::from_bytes(&content[6..])
            .map_err(|e| Error::Tampered(format!("{}: {e}", path.display())))?;
        let b = &sealed.binding;
        let key = b.open(
            fingerprint,
            &format!("software container {}", path.display()),
        )?;
        let body = Zeroizing::new(
            XChaCha20Poly1305::new(key.as_ref().into())
                .decrypt(
                    XNonce::from_slice(&sealed.body_nonce),
                    Payload {
                        msg: &sealed.body,
                        aad: &body_aad(b.salt()),
                    },
                )
                .map_err(|_| {
                    Error::Tampered(format!("{} body fails authentication", path.display()))
                })?,
        );
        let state = EngineState::decode(&body)
            .map_err(|e| Error::Tampered(format!("{} state: {e}", path.display())))?;
        let engine = Engine::from_state(state)?;
        Ok(SoftwareContainer {
            path: path.to_path_buf(),
            binding: sealed.binding,
            key,
            engine,
        })
    }

    fn encode(&self) -> Result<Vec<u8>> {
        let body = Zeroizing::new(
            postcard::to_stdvec(self.engine.state())
                .map_err(|e| Error::Internal(format!("encoding container state: {e}")))?,
        );
        let body_nonce: [u8; 24] = crate::util::random();
        let body = XChaCha20Poly1305::new(self.key.as_ref().into())
            .encrypt(
                XNonce::from_slice(&body_nonce),
                Payload {
                    msg: &body,
                    aad: &body_aad(self.binding.salt()),
                },
            )
            .map_err(|_| Error::Internal("sealing container state failed".into()))?;
        let sealed = SealedFile {
            binding: self.binding.clone(),
            body_nonce,
            body,
        };
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&FILE_VERSION.to_le_bytes());
        postcard::to_io(&sealed, &mut out)
            .map_err(|e| Error::Internal(format!("encoding container: {e}")))?;
        let d = Sha256::digest(&out);
        out.extend_from_slice(&d);
        Ok(out)
    }

    fn write(&self) -> Result<()> {
        let _lock = WriteLock::take(&self.path)?;
        self.remove_stale_temporaries();
        write_atomic(&self.path, &self.encode()?, 0o600)
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
    /// fresh engine, and writes it back atomically. Other processes' changes made since this
    /// container was loaded are kept. On error nothing is written.
    pub fn update<R>(
        &mut self,
        fingerprint: &Fingerprint,
        change: impl FnOnce(&mut Engine) -> Result<R>,
    ) -> Result<R> {
        let _lock = WriteLock::take(&self.path)?;
        let mut fresh = Self::load(&self.path, fingerprint)?;
        let r = change(&mut fresh.engine)?;
        fresh.remove_stale_temporaries();
        write_atomic(&self.path, &fresh.encode()?, 0o600)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Trait, TraitKind};

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
        future[4] = 2;
        let d = Sha256::digest(&future);
        future.extend_from_slice(&d);
        fs::write(&p, &future).unwrap();
        assert!(matches!(
            SoftwareContainer::load(&p, &machine_a()),
            Err(Error::UnknownVersion { found: 2, .. })
        ));
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
