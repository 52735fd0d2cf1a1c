//! The runtime's long-term host key: an X25519 secret in `TESSERA_HOME/host.key` (mode 0600),
//! made on first use and sealed to this machine's fingerprint traits the way a software
//! container is ([`MachineBinding`]: one changed trait still opens, two do not). A dongle
//! knows hosts by its public half (the shared-dongle lockout), and a license server counts
//! stations by it; a copy of the file on another machine does not open there
//! (`BindingMismatch`), and nothing makes a new key in its place.
//!
//! ```text
//! "TSHK" | version u16 LE (1) | postcard(MachineBinding of the key) | SHA-256 of everything before it
//! ```
//! A plain 32-byte key (what this file held before it was sealed) is sealed in place the first
//! time it is loaded, so an existing install keeps its identity. The license server keeps its
//! static key (`server.key`) the same way.

use std::path::Path;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::container::machine_binding::MachineBinding;
use crate::host::Fingerprint;
use crate::util::{ensure_dir, write_atomic};
use crate::{Error, Result};

const MAGIC: [u8; 4] = *b"TSHK";
/// The sealed host key file format version.
pub const FILE_VERSION: u16 = 1;
const DIGEST: usize = 32;
/// The length of a plain (unsealed) key file, sealed in place when it is loaded.
const PLAIN: usize = 32;

/// Loads the host key from `home`, making it the first time; sealed to `fingerprint`.
pub fn load_or_create(home: &Path, fingerprint: &Fingerprint) -> Result<Zeroizing<[u8; 32]>> {
    load_or_create_at(&home.join("host.key"), fingerprint)
}

/// Loads the X25519 secret in the file `path`, sealed to `fingerprint`, making it (mode 0600)
/// the first time. `BindingMismatch` when the file was sealed on another machine (or this one
/// changed in more than one trait); `Tampered` when it is not a host key file.
pub fn load_or_create_at(path: &Path, fingerprint: &Fingerprint) -> Result<Zeroizing<[u8; 32]>> {
    match std::fs::read(path) {
        Ok(b) => {
            let b = Zeroizing::new(b);
            if b.len() == PLAIN {
                return migrate(path, &b, fingerprint);
            }
            open(path, &b, fingerprint)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, fingerprint),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn what(path: &Path) -> String {
    format!("host key {}", path.display())
}

fn encode(path: &Path, key: &[u8; 32], fingerprint: &Fingerprint) -> Result<Vec<u8>> {
    let binding = MachineBinding::seal(fingerprint, key, &what(path))?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FILE_VERSION.to_le_bytes());
    postcard::to_io(&binding, &mut out)
        .map_err(|e| Error::Internal(format!("encoding the host key: {e}")))?;
    let d = Sha256::digest(&out);
    out.extend_from_slice(&d);
    Ok(out)
}

fn open(path: &Path, bytes: &[u8], fingerprint: &Fingerprint) -> Result<Zeroizing<[u8; 32]>> {
    if bytes.len() < 6 + DIGEST || bytes[..4] != MAGIC {
        return Err(Error::Tampered(format!(
            "{} is not a host key file, or is truncated",
            path.display()
        )));
    }
    let (content, digest) = bytes.split_at(bytes.len() - DIGEST);
    if Sha256::digest(content).as_slice() != digest {
        return Err(Error::Tampered(format!(
            "{} fails its integrity check (edited or truncated)",
            path.display()
        )));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FILE_VERSION {
        return Err(Error::UnknownVersion {
            what: "host key file",
            found: version,
            supported: FILE_VERSION,
        });
    }
    let binding: MachineBinding = postcard::from_bytes(&content[6..])
        .map_err(|e| Error::Tampered(format!("{}: {e}", path.display())))?;
    binding.open(fingerprint, &what(path)).map_err(|e| match e {
        Error::BindingMismatch(m) => Error::BindingMismatch(format!(
            "{m}: it was copied from another machine, or this machine changed in more than \
             one part; remove it to make a new host key (dongles and license servers then \
             see a new host)"
        )),
        e => e,
    })
}

/// Seals a plain key in place (an install from before host keys were sealed).
fn migrate(path: &Path, plain: &[u8], fingerprint: &Fingerprint) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(plain);
    write_atomic(path, &encode(path, &key, fingerprint)?, 0o600)?;
    Ok(key)
}

fn create(path: &Path, fingerprint: &Fingerprint) -> Result<Zeroizing<[u8; 32]>> {
    let home = path.parent().unwrap_or(Path::new("."));
    ensure_dir(home)?;
    // Write a whole key to a temporary file, then link it into place: link() fails when
    // another process got there first, and then everyone uses that one key.
    let tmp = home.join(format!(
        ".host.key.{}.{}",
        std::process::id(),
        hex::encode(crate::util::random::<6>())
    ));
    let key = Zeroizing::new(crate::util::random::<32>());
    write_atomic(&tmp, &encode(path, &key, fingerprint)?, 0o600)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let b = Zeroizing::new(std::fs::read(path).map_err(|e| Error::io(path, e))?);
            open(path, &b, fingerprint)
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostIdentity;

    fn machine(name: &str) -> Fingerprint {
        HostIdentity::simulated(name).fingerprint
    }

    #[test]
    fn made_once_then_stable_and_sealed() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create(d.path(), &machine("A")).unwrap();
        let b = load_or_create(d.path(), &machine("A")).unwrap();
        assert_eq!(*a, *b);
        let file = std::fs::read(d.path().join("host.key")).unwrap();
        assert_eq!(&file[..4], b"TSHK");
        assert!(
            !file.windows(32).any(|w| w == a.as_slice()),
            "the key is in the file in the clear"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("host.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_copy_does_not_open_on_another_machine_and_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create(d.path(), &machine("A")).unwrap();
        let before = std::fs::read(d.path().join("host.key")).unwrap();
        let e = load_or_create(d.path(), &machine("B")).unwrap_err();
        assert!(matches!(e, Error::BindingMismatch(_)), "{e}");
        assert!(e.to_string().contains("host key"), "{e}");
        assert_eq!(std::fs::read(d.path().join("host.key")).unwrap(), before);
        assert_eq!(*load_or_create(d.path(), &machine("A")).unwrap(), *a);
    }

    #[test]
    fn one_changed_trait_still_opens() {
        let d = tempfile::tempdir().unwrap();
        let fp = machine("A");
        let a = load_or_create(d.path(), &fp).unwrap();
        let mut changed = fp.clone();
        let last = changed.traits.len() - 1;
        changed.traits[last].value.push_str("-new-nic");
        assert_eq!(*load_or_create(d.path(), &changed).unwrap(), *a);
    }

    #[test]
    fn a_plain_key_is_sealed_in_place_and_keeps_its_identity() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("host.key");
        std::fs::write(&path, [0x42; 32]).unwrap();
        assert_eq!(
            *load_or_create(d.path(), &machine("A")).unwrap(),
            [0x42; 32]
        );
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"TSHK");
        assert_eq!(
            *load_or_create(d.path(), &machine("A")).unwrap(),
            [0x42; 32]
        );
        assert!(matches!(
            load_or_create(d.path(), &machine("B")),
            Err(Error::BindingMismatch(_))
        ));
    }

    #[test]
    fn bad_files_are_refused_clearly() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("host.key");
        let fp = machine("A");
        for bad in [&b"short"[..], &[0u8; 33][..], &[]] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(load_or_create(d.path(), &fp), Err(Error::Tampered(_))),
                "{bad:?}"
            );
        }
        std::fs::remove_file(&path).unwrap();
        load_or_create(d.path(), &fp).unwrap();
        let mut file = std::fs::read(&path).unwrap();
        let n = file.len();
        file[n / 2] ^= 1;
        std::fs::write(&path, &file).unwrap();
        assert!(matches!(
            load_or_create(d.path(), &fp),
            Err(Error::Tampered(_))
        ));
        // No traits to bind to: refused, nothing written.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            load_or_create(d.path(), &Fingerprint::from_traits(Vec::new())),
            Err(Error::Unsupported(_))
        ));
        assert!(!path.exists());
    }
}
