//! Local seat counting across all processes of this machine, without a daemon.
//!
//! Each license has a directory under `TESSERA_HOME/seats/<license id>/` with one file per
//! seat slot, a `claim` file and an `exclusive` file. A seat is an open file description
//! holding an open-file-description lock (`F_OFD_SETLK`) on byte 0 of its slot file; the
//! kernel drops it when the process exits, however it exits, so a process killed with
//! SIGKILL frees its seat at once. The slot file's content names the seat's identity
//! (`station`, `session:<id>`, `process:<pid>`, or a random handle id); holders of the same
//! identity share one slot with shared locks. Claims are serialized by a write lock on the
//! `claim` file, so checking for a free slot and taking it is atomic across processes. An
//! exclusive holder takes a write lock on the `exclusive` file, which every claim checks.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::util::ensure_dir;
use crate::{Error, Result};

/// Upper bound of slots counted locally (a larger quantity counts as this many).
pub const MAX_LOCAL_SLOTS: u32 = 4096;

fn flock_struct(ltype: i32) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value (l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ltype as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 1;
    fl
}

/// Tries to take an OFD lock of `ltype` on byte 0. `Ok(false)` when another holds it.
fn try_lock(f: &File, ltype: i32) -> std::io::Result<bool> {
    let mut fl = flock_struct(ltype);
    // SAFETY: valid fd and a valid, initialized flock struct.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Whether another open file description holds a lock on byte 0 that conflicts with `ltype`.
fn is_locked(f: &File, ltype: i32) -> std::io::Result<bool> {
    let mut fl = flock_struct(ltype);
    // SAFETY: valid fd and a valid, initialized flock struct.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

fn unlock(f: &File) {
    let mut fl = flock_struct(libc::F_UNLCK);
    // SAFETY: valid fd and a valid, initialized flock struct.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

struct Files {
    claim: File,
    exclusive: File,
    slots: Vec<File>,
}

/// The seat slots of one license on this machine.
pub struct SeatPool {
    dir: PathBuf,
    quantity: u32,
    timeout: Duration,
    files: Mutex<Files>,
}

impl std::fmt::Debug for SeatPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeatPool")
            .field("dir", &self.dir)
            .field("quantity", &self.quantity)
            .finish()
    }
}

/// A held seat; dropping it releases the seat.
#[derive(Debug)]
pub struct SeatGuard {
    slot: u32,
    _slot_file: File,
    _exclusive: Option<File>,
}

impl SeatGuard {
    /// The slot number held.
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

/// Releases the claim lock when dropped.
struct ClaimHeld<'a>(&'a File);

impl Drop for ClaimHeld<'_> {
    fn drop(&mut self) {
        unlock(self.0);
    }
}

impl SeatPool {
    /// The pool for license `license_id_hex` with `quantity` seats under `home`. Waits at most
    /// `timeout` for another process's claim to finish.
    pub fn open(
        home: &Path,
        license_id_hex: &str,
        quantity: u32,
        timeout: Duration,
    ) -> Result<SeatPool> {
        if license_id_hex.is_empty() || !license_id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument("license id must be hex".into()));
        }
        let dir = home.join("seats").join(license_id_hex);
        ensure_dir(&dir)?;
        let files = Files {
            claim: open_rw(&dir.join("claim"))?,
            exclusive: open_rw(&dir.join("exclusive"))?,
            slots: Vec::new(),
        };
        Ok(SeatPool {
            dir,
            quantity: quantity.min(MAX_LOCAL_SLOTS),
            timeout,
            files: Mutex::new(files),
        })
    }

    fn slot_path(&self, i: u32) -> PathBuf {
        self.dir.join(format!("slot-{i:04}"))
    }

    fn ensure_slots(&self, files: &mut Files) -> Result<()> {
        while (files.slots.len() as u32) < self.quantity {
            let i = files.slots.len() as u32;
            files.slots.push(open_rw(&self.slot_path(i))?);
        }
        Ok(())
    }

    fn claim<'a>(&self, claim: &'a File) -> Result<ClaimHeld<'a>> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            if try_lock(claim, libc::F_WRLCK).map_err(|e| Error::io(self.dir.join("claim"), e))? {
                return Ok(ClaimHeld(claim));
            }
            if start.elapsed() >= self.timeout {
                return Err(Error::Timeout(format!(
                    "another process held the seat claim lock in {} for over {:?}",
                    self.dir.display(),
                    self.timeout
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    fn read_identity(f: &mut File) -> String {
        let mut s = String::new();
        let _ = f
            .seek(SeekFrom::Start(0))
            .and_then(|_| f.take(512).read_to_string(&mut s));
        s
    }

    /// Takes a seat for `identity`. Holders of the same identity share a slot; `exclusive`
    /// demands that no other seat be held and blocks all others while held.
    pub fn acquire(&self, identity: &str, exclusive: bool) -> Result<SeatGuard> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| Error::Internal("seat pool lock poisoned".into()))?;
        self.ensure_slots(&mut files)?;
        let files = &mut *files;
        let _claim = self.claim(&files.claim)?;
        let io = |e| Error::io(&self.dir, e);
        if is_locked(&files.exclusive, libc::F_RDLCK).map_err(io)? {
            return Err(Error::ExclusiveDenied(
                "another process holds this license exclusively".into(),
            ));
        }
        let mut free = None;
        let mut held = 0u32;
        for (i, f) in files.slots.iter_mut().enumerate() {
            if is_locked(f, libc::F_WRLCK).map_err(io)? {
                held += 1;
                if !exclusive && Self::read_identity(f) == identity {
                    return self.take(i as u32, false, None);
                }
            } else if free.is_none() {
                free = Some(i);
            }
        }
        if exclusive && held > 0 {
            return Err(Error::ExclusiveDenied(format!(
                "{held} other seat(s) of this license are in use"
            )));
        }
        let Some(i) = free else {
            return Err(Error::NoSeat {
                quantity: self.quantity,
            });
        };
        let f = &mut files.slots[i];
        f.set_len(0).map_err(io)?;
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        f.write_all(identity.as_bytes()).map_err(io)?;
        let excl = if exclusive {
            let x = open_rw(&self.dir.join("exclusive"))?;
            if !try_lock(&x, libc::F_WRLCK).map_err(io)? {
                return Err(Error::ExclusiveDenied(
                    "another exclusive holder appeared".into(),
                ));
            }
            Some(x)
        } else {
            None
        };
        self.take(i as u32, exclusive, excl)
    }

    fn take(&self, slot: u32, exclusive: bool, excl: Option<File>) -> Result<SeatGuard> {
        let path = self.slot_path(slot);
        let f = open_rw(&path)?;
        let ltype = if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        };
        if !try_lock(&f, ltype).map_err(|e| Error::io(&path, e))? {
            return Err(Error::Internal(format!(
                "slot {slot} was taken under the claim lock"
            )));
        }
        Ok(SeatGuard {
            slot,
            _slot_file: f,
            _exclusive: excl,
        })
    }

    /// How many slots are held right now, by any process.
    pub fn in_use(&self) -> Result<u32> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| Error::Internal("seat pool lock poisoned".into()))?;
        self.ensure_slots(&mut files)?;
        let mut n = 0;
        for f in &files.slots {
            if is_locked(f, libc::F_WRLCK).map_err(|e| Error::io(&self.dir, e))? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The number of seats.
    pub fn quantity(&self) -> u32 {
        self.quantity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(home: &Path, q: u32) -> SeatPool {
        SeatPool::open(home, "00ff", q, Duration::from_secs(2)).unwrap()
    }

    #[test]
    fn counts_identities_and_frees_on_drop() {
        let home = tempfile::tempdir().unwrap();
        let p = pool(home.path(), 2);
        let a = p.acquire("handle:a", false).unwrap();
        let a2 = p.acquire("process:1", false).unwrap();
        let shared = p.acquire("process:1", false).unwrap();
        assert_eq!(shared.slot(), a2.slot());
        assert_eq!(p.in_use().unwrap(), 2);
        assert!(matches!(
            p.acquire("handle:b", false),
            Err(Error::NoSeat { quantity: 2 })
        ));
        drop(a);
        assert_eq!(p.in_use().unwrap(), 1);
        drop(a2);
        assert_eq!(p.in_use().unwrap(), 1, "the shared holder still holds it");
        drop(shared);
        assert_eq!(p.in_use().unwrap(), 0);
    }

    #[test]
    fn exclusive_blocks_everyone_and_needs_an_idle_license() {
        let home = tempfile::tempdir().unwrap();
        let p = pool(home.path(), 3);
        let other = SeatPool::open(home.path(), "00ff", 3, Duration::from_secs(2)).unwrap();
        let a = p.acquire("handle:a", false).unwrap();
        assert!(matches!(
            other.acquire("handle:x", true),
            Err(Error::ExclusiveDenied(_))
        ));
        drop(a);
        let x = other.acquire("handle:x", true).unwrap();
        assert!(matches!(
            p.acquire("handle:b", false),
            Err(Error::ExclusiveDenied(_))
        ));
        assert!(matches!(
            p.acquire("station", false),
            Err(Error::ExclusiveDenied(_))
        ));
        drop(x);
        assert!(p.acquire("handle:b", false).is_ok());
    }

    #[test]
    fn rejects_a_path_like_license_id() {
        let home = tempfile::tempdir().unwrap();
        assert!(SeatPool::open(home.path(), "../x", 1, Duration::from_secs(1)).is_err());
    }
}
