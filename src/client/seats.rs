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
//!
//! Fork: an OFD lock belongs to the open file description, which a forked child shares
//! with its parent. So a seat is released by an explicit unlock (in the process that took
//! it), not by closing the descriptor: a child's copy would otherwise keep the parent's
//! released seat held for as long as the child lives. And a seat dropped in a forked child
//! only closes the child's descriptors: an unlock there would release the parent's seat.
//! Every descriptor here is close-on-exec (std opens files with `O_CLOEXEC`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::util::ensure_dir;
use crate::util::process::Owner;
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

/// Bytes of the identity record at the start of a slot file. Written in place, never
/// truncated: truncating makes ext4 flush the file on close, a disk write per seat.
const IDENTITY_LEN: usize = 128;

struct Files {
    claim: File,
    exclusive: File,
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

/// A held seat; dropping it releases the seat (in the process that took it; see the
/// module's comment on fork).
#[derive(Debug)]
pub struct SeatGuard {
    slot: u32,
    slot_file: File,
    identity: Option<File>,
    exclusive: Option<File>,
    owner: Owner,
}

impl Drop for SeatGuard {
    fn drop(&mut self) {
        if !self.owner.is_current() {
            // A forked child's copy: closing the descriptors leaves the parent's locks.
            return;
        }
        // Exclusive last: no claim may see the license free of exclusivity while this
        // seat's slot is still locked.
        unlock(&self.slot_file);
        if let Some(f) = &self.identity {
            unlock(f);
        }
        if let Some(f) = &self.exclusive {
            unlock(f);
        }
    }
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

/// How many of the first `quantity` slot files in `dir` are locked by anyone.
fn count_held_in(dir: &Path, quantity: u32) -> Result<u32> {
    let mut n = 0;
    for i in 0..quantity {
        let path = dir.join(format!("slot-{i:04}"));
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        if is_locked(&f, libc::F_WRLCK).map_err(|e| Error::io(&path, e))? {
            n += 1;
        }
    }
    Ok(n)
}

/// Whether holders of `identity` share a slot (every identity but a handle's).
fn shareable(identity: &str) -> bool {
    !identity.starts_with("handle:")
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

    fn identity_path(&self, identity: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(identity.as_bytes());
        self.dir.join(format!("ident-{}", hex::encode(&d[..12])))
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

    fn write_record(f: &mut File, text: &str) -> std::io::Result<()> {
        let mut rec = [0u8; IDENTITY_LEN];
        let n = text.len().min(IDENTITY_LEN);
        rec[..n].copy_from_slice(&text.as_bytes()[..n]);
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&rec)
    }

    fn read_record(f: &mut File) -> String {
        let mut rec = [0u8; IDENTITY_LEN];
        let _ = f.seek(SeekFrom::Start(0)).and_then(|_| f.read(&mut rec));
        let end = rec.iter().position(|b| *b == 0).unwrap_or(IDENTITY_LEN);
        String::from_utf8_lossy(&rec[..end]).into_owned()
    }

    /// Takes a seat for `identity`. Holders of the same identity (`station`, `session:..`,
    /// `process:..`) share a slot; a `handle:..` identity always takes a slot of its own.
    /// `exclusive` demands that no other seat be held and blocks all others while held.
    pub fn acquire(&self, identity: &str, exclusive: bool) -> Result<SeatGuard> {
        let files = self
            .files
            .lock()
            .map_err(|_| Error::Internal("seat pool lock poisoned".into()))?;
        let _claim = self.claim(&files.claim)?;
        let io = |e| Error::io(&self.dir, e);
        if is_locked(&files.exclusive, libc::F_RDLCK).map_err(io)? {
            return Err(Error::ExclusiveDenied(
                "another process holds this license exclusively".into(),
            ));
        }
        if exclusive {
            let held = self.count_held()?;
            if held > 0 {
                return Err(Error::ExclusiveDenied(format!(
                    "{held} other seat(s) of this license are in use"
                )));
            }
        }
        // A shareable identity that already holds a slot joins it: its identity file is
        // read-locked by the holders and names the slot.
        let mut ident = None;
        if shareable(identity) && !exclusive {
            let mut f = open_rw(&self.identity_path(identity))?;
            if is_locked(&f, libc::F_WRLCK).map_err(io)? {
                let slot: u32 = Self::read_record(&mut f).parse().unwrap_or(u32::MAX);
                if slot < self.quantity {
                    let path = self.slot_path(slot);
                    let mut sf = open_rw(&path)?;
                    if is_locked(&sf, libc::F_WRLCK).map_err(io)?
                        && Self::read_record(&mut sf) == identity
                        && try_lock(&sf, libc::F_RDLCK).map_err(io)?
                        && try_lock(&f, libc::F_RDLCK).map_err(io)?
                    {
                        return Ok(SeatGuard {
                            slot,
                            slot_file: sf,
                            identity: Some(f),
                            exclusive: None,
                            owner: Owner::current(),
                        });
                    }
                }
            }
            ident = Some(f);
        }
        // Otherwise: the first free slot.
        for i in 0..self.quantity {
            let path = self.slot_path(i);
            let mut sf = open_rw(&path)?;
            if is_locked(&sf, libc::F_WRLCK).map_err(io)? {
                continue;
            }
            Self::write_record(&mut sf, identity).map_err(io)?;
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
            let ltype = if exclusive {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            };
            if !try_lock(&sf, ltype).map_err(io)? {
                return Err(Error::Internal(format!(
                    "slot {i} was taken under the claim lock"
                )));
            }
            if let Some(f) = ident.as_mut() {
                Self::write_record(f, &i.to_string()).map_err(io)?;
                if !try_lock(f, libc::F_RDLCK).map_err(io)? {
                    return Err(Error::Internal(
                        "identity file was taken under the claim lock".into(),
                    ));
                }
            }
            return Ok(SeatGuard {
                slot: i,
                slot_file: sf,
                identity: ident,
                exclusive: excl,
                owner: Owner::current(),
            });
        }
        Err(Error::NoSeat {
            quantity: self.quantity,
        })
    }

    fn count_held(&self) -> Result<u32> {
        count_held_in(&self.dir, self.quantity)
    }

    /// How many slots are held right now, by any process.
    pub fn in_use(&self) -> Result<u32> {
        self.count_held()
    }

    /// How many seats of license `license_id_hex` are held under `home`, without creating
    /// anything (for listings): 0 when no seat was ever taken.
    pub fn count_in_use(home: &Path, license_id_hex: &str, quantity: u32) -> Result<u32> {
        if license_id_hex.is_empty() || !license_id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument("license id must be hex".into()));
        }
        let dir = home.join("seats").join(license_id_hex);
        if !dir.is_dir() {
            return Ok(0);
        }
        count_held_in(&dir, quantity.min(MAX_LOCAL_SLOTS))
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

    /// Forks; the child runs `f` and leaves with its code through `_exit`.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only makes fcntl/close calls through `f` and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = f();
            // SAFETY: leaves the child at once.
            unsafe { libc::_exit(code) };
        }
        let mut st = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        if libc::WIFEXITED(st) {
            libc::WEXITSTATUS(st)
        } else {
            128
        }
    }

    #[test]
    fn a_forked_child_cannot_release_the_parents_seat_nor_keep_it_after_release() {
        let home = tempfile::tempdir().unwrap();
        let p = pool(home.path(), 1);
        let seat = p.acquire("handle:parent", false).unwrap();
        // The child drops its copy of the guard: that closes its descriptors, which must
        // not unlock the parent's open file description.
        let code = in_child(|| {
            // SAFETY: a bitwise copy of the parent's guard in the child's memory; the
            // original is never dropped in the child (it leaves through _exit).
            drop(unsafe { std::ptr::read(&seat) });
            0
        });
        assert_eq!(code, 0);
        assert_eq!(
            p.in_use().unwrap(),
            1,
            "the child's drop released the parent's seat"
        );
        // A child that keeps its copies open (it lives on) does not keep the seat held
        // once the parent releases it.
        let (parent_end, child_end) = std::os::unix::net::UnixDatagram::pair().unwrap();
        // SAFETY: the child waits for one datagram and leaves through _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let _ = child_end.recv(&mut [0u8; 1]);
            // SAFETY: leaves the child at once.
            unsafe { libc::_exit(0) };
        }
        drop(seat);
        let in_use = p.in_use();
        let next = p.acquire("handle:next", false).map(drop);
        let _ = parent_end.send(b"x");
        let mut st = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert_eq!(
            in_use.unwrap(),
            0,
            "the released seat stayed held by the child's copies"
        );
        assert!(next.is_ok(), "{next:?}");
    }

    #[test]
    fn rejects_a_path_like_license_id() {
        let home = tempfile::tempdir().unwrap();
        assert!(SeatPool::open(home.path(), "../x", 1, Duration::from_secs(1)).is_err());
    }
}
