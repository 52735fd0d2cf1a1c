//! Local seat counting across all processes and users of this machine, without a daemon,
//! and the machine-wide lock by which a license server hosts a container.
//!
//! Seats live in ONE machine-wide place, [`MACHINE_DIR`] (`/dev/shm/tessera`), keyed by the
//! container's serial: `seats/<container serial>/<license id>/`, whichever `TESSERA_HOME` the
//! container file was opened from, so that a copy of a home (same serial, same licenses)
//! counts against the same seats. The place is fixed; no environment variable moves it (a
//! [`Registry::at`] another root exists for unit tests). It is a tmpfs: seats are locks held
//! by running processes and vanish at reboot. Its folders are made mode 1777 and its files
//! 0666 so that every user of the machine counts in the same place; files are opened with
//! `O_NOFOLLOW`.
//!
//! A license's folder holds one seat file per identity holding a seat, a `claim` file and an
//! `exclusive` file. A seat's identity is `station`, `session:<id>`, `process:<pid
//! namespace>:<pid>`, or a random handle id; its seat file is named by a hash of it,
//! `seat-<32 hex digits>`, and holds the identity as text (for people: the name, not the
//! content, which anyone can write, says whose seat it is). A seat is an open file
//! description holding an open-file-description lock (`F_OFD_SETLK`) on byte 0 of its seat
//! file; the kernel drops it when the process exits, however it exits, so a process killed
//! with SIGKILL frees its seat at once. Holders of one identity share its seat file with
//! shared locks. The seats in use are the locked seat files, one per name. Claims are
//! serialized by a write lock on the `claim` file, so counting and taking a seat is atomic
//! across processes; a claim removes the seat files no one holds. Joining a held seat file is
//! refused when more names are held than there are seats, so that a file locked by hand
//! never adds a seat: it takes one. An exclusive holder takes a write lock on the `exclusive`
//! file, which every claim checks.
//!
//! Deleting or replacing the files cannot add seats: a claim re-checks, before it succeeds,
//! that the claim file it locked and the seat file it took are still the files at their
//! paths (a claim made in a deleted folder is made again in the new one), and every use of a
//! held seat ([`SeatPool::check`]) re-checks its seat file the same way. A holder whose file
//! was deleted or replaced claims again in the registry as it is now, and when no seat is
//! free its seat is lost ([`Error::LeaseLost`]). Deleting the registry can at most move a
//! seat from one process to another, never double the seats in use.
//!
//! A license server hosting a container holds a write lock on `hosted/<container serial>`
//! ([`Registry::host`]) while it runs; a second server on this machine is refused that
//! container, and told which process holds it. A container is counted either by its server
//! or by local seats, never both: a local claim is refused while a server hosts the
//! container, and a server does not host a container while local seats of it are held
//! (counted under each license's claim lock, after the hosting lock is taken, so that a
//! claim in progress is either counted or sees the lock).
//!
//! Fork: an OFD lock belongs to the open file description, which a forked child shares
//! with its parent. So a seat is released by an explicit unlock (in the process that took
//! it), not by closing the descriptor: a child's copy would otherwise keep the parent's
//! released seat held for as long as the child lives. And a seat dropped in a forked child
//! only closes the child's descriptors: an unlock there would release the parent's seat.
//! Every descriptor here is close-on-exec (std opens files with `O_CLOEXEC`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::util::process::Owner;
use crate::{Error, Result};

/// Upper bound of slots counted locally (a larger quantity counts as this many).
pub const MAX_LOCAL_SLOTS: u32 = 4096;

/// The machine-wide place of local seats and hosting locks. Fixed: a folder the user picks
/// (a copy of a home) must not give seats of its own.
pub const MACHINE_DIR: &str = "/dev/shm/tessera";

/// How often a claim starts again because the registry's files changed under it, before it
/// gives up (someone deletes them in a loop).
const MAX_CLAIM_RESTARTS: u32 = 16;

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

/// Which file an open file or a path is: (device, inode).
type FileId = (u64, u64);

fn file_id(f: &File, path: &Path) -> Result<FileId> {
    let m = f.metadata().map_err(|e| Error::io(path, e))?;
    Ok((m.dev(), m.ino()))
}

/// Whether the open file known as `id` is still the file at `path`: not deleted, not
/// replaced. One `lstat` (a use of a seat pays it): a file the path leads to has links, so
/// the file's own `fstat` would add nothing.
fn still_at(id: FileId, path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|there| (there.dev(), there.ino()) == id)
}

/// Opens (or makes) a registry file for reading and writing, never through a symlink, and
/// makes a file of this user readable and writable by all (umask aside), so that every user
/// of the machine counts in it.
fn open_rw(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let m = f.metadata().map_err(|e| Error::io(path, e))?;
    if !m.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::other("not a regular file in the seat registry"),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if m.mode() & 0o777 != 0o666 && m.uid() == unsafe { libc::geteuid() } {
        // Best effort: a file someone else made keeps the mode they gave it.
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666));
    }
    Ok(f)
}

/// Makes `dir` and the folders between `root`'s parent and it, each a real folder (not a
/// symlink) of mode 1777 when this process made it.
fn ensure_shared_dir(root: &Path, dir: &Path) -> Result<()> {
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| Error::Internal(format!("{} is outside {}", dir.display(), root.display())))?;
    let mut at = root.to_path_buf();
    let make = |at: &Path| -> Result<()> {
        match std::fs::create_dir(at) {
            Ok(()) => {
                std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o1777))
                    .map_err(|e| Error::io(at, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && at == root => {
                // The root's parent (/dev/shm) is missing: make it as an ordinary folder.
                std::fs::create_dir_all(at).map_err(|e| Error::io(at, e))?;
            }
            Err(e) => return Err(Error::io(at, e)),
        }
        let m = std::fs::symlink_metadata(at).map_err(|e| Error::io(at, e))?;
        if !m.is_dir() {
            return Err(Error::io(
                at,
                std::io::Error::other("the seat registry's folder is not a folder"),
            ));
        }
        Ok(())
    };
    make(&at)?;
    for c in rel.components() {
        at.push(c);
        make(&at)?;
    }
    Ok(())
}

/// `text` cut to `max` characters, control characters shown as `?` (for messages).
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A container serial as a folder name: letters, digits, `-` and `_`, at most 64 of them
/// (serials come from files and dongles: never a path).
fn check_serial(serial: &str) -> Result<()> {
    if serial.is_empty()
        || serial.len() > 64
        || !serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::InvalidArgument(format!(
            "container serial {:?} is not a valid serial",
            printable(serial, 80)
        )));
    }
    Ok(())
}

fn check_license_id(license_id_hex: &str) -> Result<()> {
    if license_id_hex.is_empty()
        || license_id_hex.len() > 64
        || !license_id_hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(Error::InvalidArgument("license id must be hex".into()));
    }
    Ok(())
}

/// The machine-wide place where seats are counted and hosted containers are locked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// This machine's registry, [`MACHINE_DIR`]: the only one the runtime uses.
    pub fn machine() -> Registry {
        Registry {
            root: PathBuf::from(MACHINE_DIR),
        }
    }

    /// A registry under another root (for unit tests of the registry itself).
    pub fn at(root: &Path) -> Registry {
        Registry {
            root: root.to_path_buf(),
        }
    }

    /// Its root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn license_dir(&self, serial: &str, license_id_hex: &str) -> Result<PathBuf> {
        check_serial(serial)?;
        check_license_id(license_id_hex)?;
        Ok(self.root.join("seats").join(serial).join(license_id_hex))
    }

    /// The seat pool of license `license_id_hex` with `quantity` seats in the container
    /// `serial`. Waits at most `timeout` for another process's claim to finish.
    pub fn pool(
        &self,
        serial: &str,
        license_id_hex: &str,
        quantity: u32,
        timeout: Duration,
    ) -> Result<SeatPool> {
        let dir = self.license_dir(serial, license_id_hex)?;
        ensure_shared_dir(&self.root, &dir)?;
        let files = Files::open(&dir)?;
        Ok(SeatPool {
            root: self.root.clone(),
            serial: serial.to_string(),
            dir,
            quantity: quantity.min(MAX_LOCAL_SLOTS),
            timeout,
            files: Mutex::new(files),
        })
    }

    /// How many seats of license `license_id_hex` of container `serial` are held, without
    /// creating anything (for listings): 0 when no seat was ever taken.
    pub fn count_in_use(&self, serial: &str, license_id_hex: &str) -> Result<u32> {
        let dir = self.license_dir(serial, license_id_hex)?;
        if !dir.is_dir() {
            return Ok(0);
        }
        count_held_in(&dir, false)
    }

    /// Locks container `serial` for hosting by this process, machine-wide, until the
    /// [`HostLock`] is dropped. `holder` says who holds it (shown to whoever is refused).
    /// Refused with [`Error::ExclusiveDenied`] when another process hosts it.
    pub fn host(&self, serial: &str, holder: &str) -> Result<HostLock> {
        let file = self.lock_host(serial, holder)?;
        Ok(HostLock {
            registry: self.clone(),
            serial: serial.to_string(),
            holder: holder.to_string(),
            held: Mutex::new(file),
        })
    }

    fn lock_host(&self, serial: &str, holder: &str) -> Result<HostFile> {
        check_serial(serial)?;
        let dir = self.root.join("hosted");
        ensure_shared_dir(&self.root, &dir)?;
        let path = dir.join(serial);
        for _ in 0..MAX_CLAIM_RESTARTS {
            let mut f = open_rw(&path)?;
            if !try_lock(&f, libc::F_WRLCK).map_err(|e| Error::io(&path, e))? {
                let other = read_record(&mut f);
                return Err(Error::ExclusiveDenied(format!(
                    "container {serial} is hosted by another license server on this machine ({})",
                    if other.is_empty() {
                        "holder unknown".to_string()
                    } else {
                        printable(&other, IDENTITY_LEN)
                    }
                )));
            }
            let id = file_id(&f, &path)?;
            // Locked a file that was deleted or replaced meanwhile: lock the one there now.
            if !still_at(id, &path) {
                continue;
            }
            write_record(&mut f, holder).map_err(|e| Error::io(&path, e))?;
            let hosted = HostFile { path, _file: f, id };
            // Local seats of the container held before it was locked stay held: a server
            // that hosted it now would count the same quantity again. Each license is
            // counted under its claim lock, so a local claim either finished before (and is
            // counted) or comes after and sees the hosting lock.
            let local = self.local_seats_held(serial)?;
            if local > 0 {
                return Err(Error::ExclusiveDenied(format!(
                    "{local} seat(s) of container {serial} are held by processes on this machine \
                     that use it directly; a license server hosts it once they are released"
                )));
            }
            return Ok(hosted);
        }
        Err(Error::Timeout(format!(
            "the hosting lock {} kept changing",
            path.display()
        )))
    }
}

impl Registry {
    /// The local seats of container `serial` held on this machine, each license counted
    /// under its claim lock.
    fn local_seats_held(&self, serial: &str) -> Result<u32> {
        let dir = self.root.join("seats").join(serial);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut n = 0u32;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_license_id(&name).is_err() {
                continue;
            }
            let pool = self.pool(serial, &name, MAX_LOCAL_SLOTS, HOST_CLAIM_TIMEOUT)?;
            let files = pool
                .files
                .lock()
                .map_err(|_| Error::Internal("seat pool lock poisoned".into()))?;
            let _claim = pool.claim(&files.claim)?;
            n = n.saturating_add(count_held_in(&pool.dir, false)?);
        }
        Ok(n)
    }

    /// Who hosts container `serial` on this machine (the holder's record), if a license
    /// server does. Creates nothing.
    fn hosted_by(&self, serial: &str) -> Result<Option<String>> {
        let path = self.root.join("hosted").join(serial);
        let mut f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        if !is_locked(&f, libc::F_WRLCK).map_err(|e| Error::io(&path, e))? {
            return Ok(None);
        }
        let who = read_record(&mut f);
        Ok(Some(if who.is_empty() {
            "holder unknown".into()
        } else {
            printable(&who, IDENTITY_LEN)
        }))
    }
}

/// How long a server that starts hosting a container waits for a local claim in progress.
const HOST_CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// A container hosted by this process: a write lock on its file in the registry, released
/// when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct HostLock {
    registry: Registry,
    serial: String,
    holder: String,
    held: Mutex<HostFile>,
}

#[derive(Debug)]
struct HostFile {
    path: PathBuf,
    /// Holds the lock while open.
    _file: File,
    id: FileId,
}

impl HostLock {
    /// The container's serial.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Whether the lock file is still the file at its path (it was not deleted or replaced,
    /// which would let another server lock the container too).
    pub fn intact(&self) -> bool {
        self.held.lock().is_ok_and(|h| still_at(h.id, &h.path))
    }

    /// Makes sure the lock still holds: when its file was deleted or replaced, locks the
    /// file there now, and fails (as [`Registry::host`] does) when another process got it.
    pub fn keep(&self) -> Result<()> {
        let mut held = self
            .held
            .lock()
            .map_err(|_| Error::Internal("hosting lock poisoned".into()))?;
        if still_at(held.id, &held.path) {
            return Ok(());
        }
        *held = self.registry.lock_host(&self.serial, &self.holder)?;
        Ok(())
    }
}

/// Bytes of the identity record at the start of a slot file. Written in place, never
/// truncated: truncating makes ext4 flush the file on close, a disk write per seat.
const IDENTITY_LEN: usize = 128;

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

/// The claim and exclusive files of a license, as this pool has them open.
struct Files {
    claim: File,
    claim_id: FileId,
    exclusive: File,
    exclusive_id: FileId,
}

impl Files {
    fn open(dir: &Path) -> Result<Files> {
        let (cp, xp) = (dir.join("claim"), dir.join("exclusive"));
        let claim = open_rw(&cp)?;
        let exclusive = open_rw(&xp)?;
        Ok(Files {
            claim_id: file_id(&claim, &cp)?,
            exclusive_id: file_id(&exclusive, &xp)?,
            claim,
            exclusive,
        })
    }
}

/// The seat slots of one license on this machine.
pub struct SeatPool {
    root: PathBuf,
    /// The container's serial.
    serial: String,
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

/// What a held seat holds open.
#[derive(Debug)]
struct Held {
    /// The seat file of the seat's identity, locked.
    file: File,
    id: FileId,
    path: PathBuf,
    /// The exclusive file, its identity and path, for an exclusive seat.
    exclusive: Option<(File, FileId, PathBuf)>,
}

impl Held {
    /// Lets go of its locks (the files stay open until it drops).
    fn release(&self) {
        unlock(&self.file);
        if let Some((f, _, _)) = &self.exclusive {
            unlock(f);
        }
    }

    /// Whether the files this seat locked are still the registry's files.
    fn intact(&self) -> bool {
        still_at(self.id, &self.path)
            && self
                .exclusive
                .as_ref()
                .is_none_or(|(_, id, p)| still_at(*id, p))
    }
}

/// A held seat; dropping it releases the seat.
#[derive(Debug)]
pub struct SeatGuard {
    identity: String,
    exclusive: bool,
    held: Mutex<Held>,
    /// The process that took it (see the module's comment on fork).
    owner: Owner,
}

impl Drop for SeatGuard {
    fn drop(&mut self) {
        if !self.owner.is_current() {
            // A forked child's copy: closing the descriptors leaves the parent's locks.
            return;
        }
        if let Ok(held) = self.held.get_mut() {
            held.release();
        }
    }
}

impl SeatGuard {
    /// The seat's identity, as its seat file names it.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// Releases the claim lock when dropped.
struct ClaimHeld<'a>(&'a File);

impl Drop for ClaimHeld<'_> {
    fn drop(&mut self) {
        unlock(self.0);
    }
}

/// The prefix of seat files.
const SEAT_PREFIX: &str = "seat-";

/// How many seat files in `dir` are locked by anyone: the seats in use, one per name. With
/// `sweep` (only under the claim lock, when no claim can be half done), seat files no one
/// holds are removed.
fn count_held_in(dir: &Path, sweep: bool) -> Result<u32> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut n = 0u32;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with(SEAT_PREFIX) {
            continue;
        }
        let path = entry.path();
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // Not a file we can lock (a symlink, a folder, a FIFO): it counts, failing closed.
            Err(_) => {
                n = n.saturating_add(1);
                continue;
            }
        };
        if is_locked(&f, libc::F_WRLCK).unwrap_or(true) {
            n = n.saturating_add(1);
        } else if sweep {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(n)
}

/// Whether holders of `identity` share a seat (every identity but a handle's).
fn shareable(identity: &str) -> bool {
    !identity.starts_with("handle:")
}

impl SeatPool {
    /// The seat file of `identity`: named by a hash of it, so that the name, not the content
    /// (which anyone can write), says whose seat it is.
    fn seat_path(&self, identity: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(identity.as_bytes());
        self.dir
            .join(format!("{SEAT_PREFIX}{}", hex::encode(&d[..16])))
    }

    /// The claim and exclusive files as they are now: the folder made again and the files
    /// opened again when they were deleted or replaced.
    fn refresh(&self, files: &mut Files) -> Result<()> {
        let (cp, xp) = (self.dir.join("claim"), self.dir.join("exclusive"));
        if !still_at(files.claim_id, &cp) || !still_at(files.exclusive_id, &xp) {
            ensure_shared_dir(&self.root, &self.dir)?;
            *files = Files::open(&self.dir)?;
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

    /// Takes a seat for `identity`. Holders of the same identity (`station`, `session:..`,
    /// `process:..`) share a seat; a `handle:..` identity always takes a seat of its own.
    /// `exclusive` demands that no other seat be held and blocks all others while held.
    pub fn acquire(&self, identity: &str, exclusive: bool) -> Result<SeatGuard> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| Error::Internal("seat pool lock poisoned".into()))?;
        for _ in 0..MAX_CLAIM_RESTARTS {
            self.refresh(&mut files)?;
            if let Some(held) = self.claim_once(&files, identity, exclusive, &mut || {})? {
                return Ok(SeatGuard {
                    identity: identity.to_string(),
                    exclusive,
                    held: Mutex::new(held),
                    owner: Owner::current(),
                });
            }
        }
        Err(Error::Timeout(format!(
            "the seat registry {} kept changing during the claim",
            self.dir.display()
        )))
    }

    /// One claim under the claim lock; `before` runs first under it (a re-claim lets go of
    /// its old locks there). `Ok(None)` when the registry's files were deleted or replaced
    /// meanwhile: the claim may have been made in a folder no one else sees, so it is dropped
    /// and made again.
    fn claim_once(
        &self,
        files: &Files,
        identity: &str,
        exclusive: bool,
        before: &mut dyn FnMut(),
    ) -> Result<Option<Held>> {
        let _claim = self.claim(&files.claim)?;
        let claim_path = self.dir.join("claim");
        let current = || still_at(files.claim_id, &claim_path);
        if !current() {
            return Ok(None);
        }
        before();
        // A container a license server on this machine hosts is counted by that server
        // alone: a local seat beside it would count the same quantity twice.
        if let Some(server) = Registry::at(&self.root).hosted_by(&self.serial)? {
            return Err(Error::ExclusiveDenied(format!(
                "container {} is hosted by a license server on this machine ({server}): \
                 its seats are taken through the server",
                self.serial
            )));
        }
        let io = |e| Error::io(&self.dir, e);
        if is_locked(&files.exclusive, libc::F_RDLCK).map_err(io)? {
            return Err(Error::ExclusiveDenied(
                "another process holds this license exclusively".into(),
            ));
        }
        let held = count_held_in(&self.dir, true)?;
        let path = self.seat_path(identity);
        let mut f = open_rw(&path)?;
        // A holder of the same identity holds its seat file: join it. Its name is counted
        // already; a join is refused only when more names are held than seats (someone
        // locked files by hand), so that forged locks never add a seat.
        let joined =
            shareable(identity) && !exclusive && is_locked(&f, libc::F_WRLCK).map_err(io)?;
        if exclusive && held > 0 {
            return Err(Error::ExclusiveDenied(format!(
                "{held} other seat(s) of this license are in use"
            )));
        }
        if (joined && held > self.quantity) || (!joined && held >= self.quantity) {
            return Err(Error::NoSeat {
                quantity: self.quantity,
            });
        }
        if !joined {
            write_record(&mut f, identity).map_err(io)?;
        }
        let excl = if exclusive {
            let xp = self.dir.join("exclusive");
            let x = open_rw(&xp)?;
            if !try_lock(&x, libc::F_WRLCK).map_err(io)? {
                return Err(Error::ExclusiveDenied(
                    "another exclusive holder appeared".into(),
                ));
            }
            let id = file_id(&x, &xp)?;
            Some((x, id, xp))
        } else {
            None
        };
        let ltype = if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        };
        if !try_lock(&f, ltype).map_err(io)? {
            // Someone holds a handle's (random) name, or a write lock on a shared one: only
            // by hand, under no claim lock.
            return Err(Error::NoSeat {
                quantity: self.quantity,
            });
        }
        let held = Held {
            id: file_id(&f, &path)?,
            file: f,
            path,
            exclusive: excl,
        };
        Ok((held.intact() && current()).then_some(held))
    }

    /// Checks, on a use of a held seat, that its seat file is still in the registry: when it
    /// was deleted or replaced, the seat is claimed again in the registry as it is now, and
    /// when no seat is free there it is lost ([`Error::LeaseLost`]).
    pub fn check(&self, guard: &SeatGuard) -> Result<()> {
        let poisoned = || Error::Internal("seat lock poisoned".into());
        let mut held = guard.held.lock().map_err(|_| poisoned())?;
        if held.intact() {
            return Ok(());
        }
        let mut files = self.files.lock().map_err(|_| poisoned())?;
        for _ in 0..MAX_CLAIM_RESTARTS {
            self.refresh(&mut files)?;
            // The old locks go under the claim lock, so that no other claim sees the seat
            // free in between; an exclusive seat would otherwise block its own re-claim.
            let old = &*held;
            match self.claim_once(&files, &guard.identity, guard.exclusive, &mut || {
                old.release()
            }) {
                Ok(Some(new)) => {
                    // The old files (gone from the registry) are closed as they drop.
                    *held = new;
                    return Ok(());
                }
                Ok(None) => continue,
                Err(e @ (Error::NoSeat { .. } | Error::ExclusiveDenied(_))) => {
                    return Err(Error::LeaseLost(format!(
                        "this seat's file in the seat registry {} was deleted or replaced, \
                         and it could not be claimed again: {e}",
                        self.dir.display()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Timeout(format!(
            "the seat registry {} kept changing during the claim",
            self.dir.display()
        )))
    }

    fn count_held(&self) -> Result<u32> {
        count_held_in(&self.dir, false)
    }

    /// How many slots are held right now, by any process.
    pub fn in_use(&self) -> Result<u32> {
        self.count_held()
    }

    /// The number of seats.
    pub fn quantity(&self) -> u32 {
        self.quantity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(root: &Path, q: u32) -> SeatPool {
        Registry::at(root)
            .pool("SW-TEST-0001", "00ff", q, Duration::from_secs(2))
            .unwrap()
    }

    #[test]
    fn counts_identities_and_frees_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let p = pool(root.path(), 2);
        let a = p.acquire("handle:a", false).unwrap();
        let a2 = p.acquire("process:1:1", false).unwrap();
        let shared = p.acquire("process:1:1", false).unwrap();
        assert_eq!(p.in_use().unwrap(), 2, "one process, one seat");
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
        let root = tempfile::tempdir().unwrap();
        let p = pool(root.path(), 3);
        let other = pool(root.path(), 3);
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
    fn a_forked_child_cannot_release_the_parents_seat_nor_keep_it_after_release() {
        let home = tempfile::tempdir().unwrap();
        let p = pool(home.path(), 1);
        let seat = p.acquire("handle:parent", false).unwrap();
        // The child drops its copy of the guard: that closes its descriptors, which must
        // not unlock the parent's open file description.
        let code = crate::util::process::in_child(|| {
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
    fn rejects_a_path_like_license_id_or_serial() {
        let root = tempfile::tempdir().unwrap();
        let r = Registry::at(root.path());
        let t = Duration::from_secs(1);
        assert!(r.pool("SW-1", "../x", 1, t).is_err());
        for bad in ["", "..", "../SW-1", "a/b", "SW 1", &"S".repeat(65)] {
            assert!(
                matches!(r.pool(bad, "00ff", 1, t), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
            assert!(r.host(bad, "me").is_err(), "{bad:?}");
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_machine_registry_is_fixed() {
        assert_eq!(Registry::machine().root(), Path::new("/dev/shm/tessera"));
    }

    #[test]
    fn folders_and_files_are_shared_by_all_users() {
        let root = tempfile::tempdir().unwrap();
        let reg = root.path().join("reg");
        let p = Registry::at(&reg)
            .pool("SW-TEST-0002", "00ff", 1, Duration::from_secs(2))
            .unwrap();
        let _s = p.acquire("station", false).unwrap();
        for d in [
            reg.clone(),
            reg.join("seats"),
            reg.join("seats/SW-TEST-0002"),
            reg.join("seats/SW-TEST-0002/00ff"),
        ] {
            let m = std::fs::metadata(&d).unwrap().mode();
            assert_eq!(m & 0o7777, 0o1777, "{}", d.display());
        }
        let m = std::fs::metadata(p.seat_path("station")).unwrap().mode();
        assert_eq!(m & 0o777, 0o666);
    }

    #[test]
    fn a_symlink_in_the_registry_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let p = pool(root.path(), 1);
        let target = root.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, p.seat_path("station")).unwrap();
        assert!(matches!(p.acquire("station", false), Err(Error::Io { .. })));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn a_deleted_registry_moves_a_seat_and_never_doubles_it() {
        let root = tempfile::tempdir().unwrap();
        let a_pool = pool(root.path(), 1);
        let a = a_pool.acquire("process:1:10", false).unwrap();
        std::fs::remove_dir_all(root.path().join("seats")).unwrap();
        // Another process (its own pool) claims in the registry made anew.
        let b_pool = pool(root.path(), 1);
        let b = b_pool.acquire("process:1:20", false).unwrap();
        assert_eq!(b_pool.in_use().unwrap(), 1);
        // A's next use finds its slot gone and no slot free: its seat is lost.
        assert!(matches!(a_pool.check(&a), Err(Error::LeaseLost(_))));
        assert!(matches!(a_pool.check(&a), Err(Error::LeaseLost(_))));
        // B's seat is intact; once B lets go, A's next use claims it again.
        b_pool.check(&b).unwrap();
        drop(b);
        a_pool.check(&a).unwrap();
        assert_eq!(a_pool.in_use().unwrap(), 1);
        assert!(matches!(
            b_pool.acquire("process:1:20", false),
            Err(Error::NoSeat { .. })
        ));
    }

    #[test]
    fn a_replaced_slot_file_is_claimed_again_on_use() {
        let root = tempfile::tempdir().unwrap();
        let p = pool(root.path(), 1);
        let other = pool(root.path(), 1);
        let a = p.acquire("handle:a", true).unwrap();
        let slot = p.seat_path("handle:a");
        let fresh = root.path().join("fresh");
        std::fs::write(&fresh, b"").unwrap();
        std::fs::rename(&fresh, &slot).unwrap();
        // The use re-claims the seat in the replaced file.
        p.check(&a).unwrap();
        assert_eq!(p.in_use().unwrap(), 1);
        assert!(matches!(
            other.acquire("handle:b", false),
            Err(Error::ExclusiveDenied(_))
        ));
        // A replaced exclusive file is noticed too.
        let xp = p.dir.join("exclusive");
        std::fs::write(&fresh, b"").unwrap();
        std::fs::rename(&fresh, &xp).unwrap();
        p.check(&a).unwrap();
        assert!(matches!(
            other.acquire("handle:b", false),
            Err(Error::ExclusiveDenied(_))
        ));
    }

    #[test]
    fn a_claim_in_a_folder_deleted_meanwhile_is_made_again() {
        let root = tempfile::tempdir().unwrap();
        let p = pool(root.path(), 1);
        let other = pool(root.path(), 1);
        // `other` opened its claim file before the folder went; its next claim must land in
        // the folder as it is now, where `b` holds the only slot.
        std::fs::remove_dir_all(root.path().join("seats")).unwrap();
        let b = p.acquire("handle:b", false).unwrap();
        assert!(matches!(
            other.acquire("handle:c", false),
            Err(Error::NoSeat { .. })
        ));
        drop(b);
        assert!(other.acquire("handle:c", false).is_ok());
    }

    /// A seat file of `identity` in `p`, made and read-locked by hand (as any process can).
    fn locked_by_hand(p: &SeatPool, identity: &str) -> File {
        let f = open_rw(&p.seat_path(identity)).unwrap();
        assert!(try_lock(&f, libc::F_RDLCK).unwrap());
        f
    }

    #[test]
    fn a_seat_file_locked_by_hand_takes_a_seat_and_gives_none() {
        let root = tempfile::tempdir().unwrap();
        let p = pool(root.path(), 2);
        let a = p.acquire("session:a", false).unwrap();
        // Someone locks the file B's identity would use, hoping B joins it for free.
        let forged = locked_by_hand(&p, "session:b");
        assert_eq!(p.in_use().unwrap(), 2, "the forged lock counts");
        assert!(matches!(
            p.acquire("session:c", false),
            Err(Error::NoSeat { .. })
        ));
        // B joins it: B's seat is the one the forger's lock took, no more.
        let b = p.acquire("session:b", false).unwrap();
        assert_eq!(p.in_use().unwrap(), 2);
        drop((a, b, forged));
        // With the quantity shrunk below the names held, a join is refused.
        let p1 = pool(root.path(), 1);
        let _x = p1.acquire("session:x", false).unwrap();
        let _y = locked_by_hand(&p1, "session:y");
        assert!(matches!(
            p1.acquire("session:y", false),
            Err(Error::NoSeat { .. })
        ));
        // Over-subscribed, no one joins (failing closed), until the names held fit again.
        assert!(matches!(
            p1.acquire("session:x", false),
            Err(Error::NoSeat { .. })
        ));
        drop(_y);
        assert!(
            p1.acquire("session:x", false).is_ok(),
            "x shares its own seat"
        );
    }

    #[test]
    fn a_claim_sweeps_seat_files_no_one_holds() {
        let root = tempfile::tempdir().unwrap();
        let p = pool(root.path(), 4);
        for i in 0..3 {
            drop(p.acquire(&format!("handle:{i}"), false).unwrap());
        }
        let _held = p.acquire("handle:kept", false).unwrap();
        let seat_files: Vec<_> = std::fs::read_dir(&p.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(SEAT_PREFIX)
            })
            .collect();
        assert_eq!(seat_files.len(), 1, "only the held seat's file is left");
        assert_eq!(p.in_use().unwrap(), 1);
    }

    #[test]
    fn local_seats_and_a_hosting_server_exclude_each_other() {
        let root = tempfile::tempdir().unwrap();
        let r = Registry::at(root.path());
        let p = pool(root.path(), 3);
        let seat = p.acquire("handle:local", false).unwrap();
        match r.host("SW-TEST-0001", "server pid 9") {
            Err(Error::ExclusiveDenied(m)) => assert!(m.contains("1 seat(s)"), "{m}"),
            other => panic!("hosted beside a local seat: {other:?}"),
        }
        drop(seat);
        let hosted = r.host("SW-TEST-0001", "server pid 9").unwrap();
        match p.acquire("handle:local", false) {
            Err(Error::ExclusiveDenied(m)) => assert!(m.contains("server pid 9"), "{m}"),
            other => panic!("a local seat beside the server: {other:?}"),
        }
        drop(hosted);
        assert!(p.acquire("handle:local", false).is_ok());
    }

    #[test]
    fn a_hosted_container_is_locked_for_one_holder() {
        let root = tempfile::tempdir().unwrap();
        let r = Registry::at(root.path());
        let first = r.host("SW-TEST-0003", "server one pid 7").unwrap();
        assert!(first.intact());
        assert_eq!(first.serial(), "SW-TEST-0003");
        match r.host("SW-TEST-0003", "server two") {
            Err(Error::ExclusiveDenied(m)) => {
                assert!(
                    m.contains("SW-TEST-0003") && m.contains("server one pid 7"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Another container is free.
        let _other = r.host("SW-TEST-0004", "server two").unwrap();
        drop(first);
        let again = r.host("SW-TEST-0003", "server two").unwrap();
        // A deleted lock file is noticed, and locked anew while no one else took it ...
        std::fs::remove_file(root.path().join("hosted/SW-TEST-0003")).unwrap();
        assert!(!again.intact());
        again.keep().unwrap();
        assert!(again.intact());
        assert!(r.host("SW-TEST-0003", "server three").is_err());
        // ... and lost when another did.
        std::fs::remove_file(root.path().join("hosted/SW-TEST-0003")).unwrap();
        let third = r.host("SW-TEST-0003", "server three").unwrap();
        assert!(matches!(again.keep(), Err(Error::ExclusiveDenied(_))));
        assert!(third.intact());
    }
}
