//! The runtime's long-term host key: an X25519 secret in `TESSERA_HOME/host.key` (mode 0600),
//! made on first use. A dongle knows hosts by its public half (exclusive mode), and later a
//! license server will too.

use std::path::Path;

use zeroize::Zeroizing;

use crate::util::{ensure_dir, write_atomic};
use crate::{Error, Result};

/// Loads the host key from `home`, making it the first time.
pub fn load_or_create(home: &Path) -> Result<Zeroizing<[u8; 32]>> {
    load_or_create_at(&home.join("host.key"))
}

/// Loads the X25519 secret in the file `path`, making it (mode 0600) the first time.
pub fn load_or_create_at(path: &Path) -> Result<Zeroizing<[u8; 32]>> {
    let path = path.to_path_buf();
    let home = path.parent().unwrap_or(Path::new("."));
    match std::fs::read(&path) {
        Ok(b) => {
            let b = Zeroizing::new(b);
            let k: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                Error::Tampered(format!("{} is not a 32-byte host key", path.display()))
            })?;
            Ok(Zeroizing::new(k))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ensure_dir(home)?;
            // Write a whole key to a temporary file, then link it into place: link() fails
            // when another process got there first, and then everyone uses that one key.
            let tmp = home.join(format!(
                ".host.key.{}.{}",
                std::process::id(),
                hex::encode(crate::util::random::<6>())
            ));
            let k = Zeroizing::new(crate::util::random::<32>());
            write_atomic(&tmp, k.as_ref(), 0o600)?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
            let b = Zeroizing::new(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
            let k: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                Error::Tampered(format!("{} is not a 32-byte host key", path.display()))
            })?;
            Ok(Zeroizing::new(k))
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn made_once_then_stable() {
        let d = tempfile::tempdir().unwrap();
        let a = super::load_or_create(d.path()).unwrap();
        let b = super::load_or_create(d.path()).unwrap();
        assert_eq!(*a, *b);
        std::fs::write(d.path().join("host.key"), b"short").unwrap();
        assert!(super::load_or_create(d.path()).is_err());
    }
}
