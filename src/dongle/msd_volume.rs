//! The virtual dongle's mass-storage volume (dongle side): a FUSE filesystem whose root holds
//! `TESSERA.ID` (read-only identity text) and `TESSERA.IO` (the marker file). Every open of
//! the marker file is answered with direct I/O, so the kernel bypasses the page cache; a write
//! at offset 0 is a batch of 64-byte reports fed to a [`ReportSink`], whose answers become the
//! response that the next read at offset 0 on the same file handle returns. The client side is
//! [`crate::dongle::msd`]; see `docs/DONGLES.md` ("MSD volume").

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, SessionACL, TimeOrNow,
    WriteFlags,
};

use crate::dongle::framing::{REPORT_LEN, Report, ReportSink};
use crate::dongle::msd::{BLOCK_LEN, ID_FILE, ID_MAGIC, IO_FILE};
use crate::{Error, Result};

const ID_INO: INodeNo = INodeNo(2);
const IO_INO: INodeNo = INodeNo(3);
/// The size the marker file reports.
const IO_SIZE: u64 = 4096;
/// How long the kernel may cache names and attributes (they never change).
const TTL: Duration = Duration::from_secs(1);
/// How often [`serve_until`] looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// How long dropping a [`MountGuard`] waits for the session thread to end.
const JOIN_WAIT: Duration = Duration::from_secs(5);

/// The filesystem: two files and the pending responses of the open marker-file handles.
struct Volume {
    id_text: Vec<u8>,
    sink: Arc<Mutex<dyn ReportSink>>,
    /// Pending response per file handle of the marker file.
    responses: Mutex<HashMap<u64, Vec<u8>>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
    created: SystemTime,
}

impl Volume {
    fn new(serial: &str, sink: Arc<Mutex<dyn ReportSink>>) -> Volume {
        // SAFETY: geteuid/getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Volume {
            id_text: format!("{ID_MAGIC}\nserial {serial}\n").into_bytes(),
            sink,
            responses: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uid,
            gid,
            created: SystemTime::now(),
        }
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o555, 0, 2),
            ID_INO => (FileType::RegularFile, 0o444, self.id_text.len() as u64, 1),
            IO_INO => (FileType::RegularFile, 0o666, IO_SIZE, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.created,
            mtime: self.created,
            ctime: self.created,
            crtime: self.created,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK_LEN as u32,
            flags: 0,
        })
    }

    fn responses(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<u8>>> {
        self.responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Feeds a batch of reports to the sink; returns the response block (answers padded with
    /// zero reports to a multiple of [`BLOCK_LEN`]), empty when there are no answers. `None`
    /// when the sink panicked.
    fn process(&self, batch: &[u8]) -> Option<Vec<u8>> {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        process_batch(&mut *sink, batch, Instant::now())
    }
}

/// [`Volume::process`] on a sink: the reports of a written batch (all-zero reports are
/// padding, a partial report at the end is ignored) fed to `sink` in order; the answers
/// padded to a multiple of [`BLOCK_LEN`]. `None` when the sink panicked.
pub(crate) fn process_batch(
    sink: &mut dyn ReportSink,
    batch: &[u8],
    now: Instant,
) -> Option<Vec<u8>> {
    let mut answers: Vec<u8> = Vec::new();
    for chunk in batch.chunks_exact(REPORT_LEN) {
        if chunk.iter().all(|&b| b == 0) {
            continue; // padding
        }
        let mut report: Report = [0; REPORT_LEN];
        report.copy_from_slice(chunk);
        let replies = catch_unwind(AssertUnwindSafe(|| sink.handle_report(&report, now))).ok()?;
        for reply in replies {
            answers.extend_from_slice(&reply);
        }
    }
    answers.resize(answers.len().div_ceil(BLOCK_LEN) * BLOCK_LEN, 0);
    Some(answers)
}

impl Filesystem for Volume {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match name.as_bytes() {
            _ if parent != INodeNo::ROOT => None,
            n if n == ID_FILE.as_bytes() => Some(ID_INO),
            n if n == IO_FILE.as_bytes() => Some(IO_INO),
            _ => None,
        };
        match ino.and_then(|ino| self.attr(ino)) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(attr) = self.attr(ino) else {
            return reply.error(Errno::ENOENT);
        };
        // Nothing is changeable. Truncating the marker file (an `O_TRUNC` open) is accepted
        // and means nothing; timestamps are ignored.
        if mode.is_some() || uid.is_some() || gid.is_some() || (size.is_some() && ino != IO_INO) {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &attr);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match ino {
            ID_INO if flags.acc_mode() != OpenAccMode::O_RDONLY => reply.error(Errno::EACCES),
            ID_INO => reply.opened(FileHandle(0), FopenFlags::empty()),
            IO_INO => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            INodeNo::ROOT => reply.error(Errno::EISDIR),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let size = size as usize;
        match ino {
            ID_INO => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(self.id_text.len());
                let end = start.saturating_add(size).min(self.id_text.len());
                reply.data(&self.id_text[start..end]);
            }
            IO_INO if offset != 0 => reply.data(&[]),
            IO_INO => {
                let mut responses = self.responses();
                match responses.remove(&fh.0) {
                    Some(mut response) => {
                        if response.len() > size {
                            // The rest stays pending for the next read.
                            let rest = response.split_off(size);
                            responses.insert(fh.0, rest);
                        }
                        reply.data(&response);
                    }
                    None => reply.data(&[0; BLOCK_LEN][..size.min(BLOCK_LEN)]),
                }
            }
            INodeNo::ROOT => reply.error(Errno::EISDIR),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match ino {
            IO_INO => {}
            ID_INO => return reply.error(Errno::EACCES),
            INodeNo::ROOT => return reply.error(Errno::EISDIR),
            _ => return reply.error(Errno::ENOENT),
        }
        let Ok(written) = u32::try_from(data.len()) else {
            return reply.error(Errno::EINVAL);
        };
        if offset != 0 || !data.len().is_multiple_of(REPORT_LEN) {
            return reply.error(Errno::EINVAL);
        }
        match self.process(data) {
            Some(response) => {
                let mut responses = self.responses();
                if response.is_empty() {
                    responses.remove(&fh.0);
                } else {
                    responses.insert(fh.0, response);
                }
                drop(responses);
                reply.written(written);
            }
            None => {
                self.responses().remove(&fh.0);
                reply.error(Errno::EIO);
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if ino == IO_INO {
            self.responses().remove(&fh.0);
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(if self.attr(ino).is_some() {
                Errno::ENOTDIR
            } else {
                Errno::ENOENT
            });
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (ID_INO, FileType::RegularFile, ID_FILE),
            (IO_INO, FileType::RegularFile, IO_FILE),
        ];
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, (ino, kind, name)) in entries.iter().enumerate().skip(skip) {
            if reply.add(*ino, index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A mounted dongle volume. Dropping it unmounts the volume (forcibly: clients that still
/// have the marker file open get `ENOTCONN`) and ends the FUSE session thread.
pub struct MountGuard {
    mount_point: PathBuf,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for MountGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountGuard")
            .field("mount_point", &self.mount_point)
            .field("mounted", &self.session.is_some())
            .finish()
    }
}

impl MountGuard {
    /// Where the volume is mounted (canonical path).
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// Whether the FUSE session still runs (it ends when someone else unmounts the volume).
    pub fn is_serving(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| !session.guard.is_finished())
    }

    /// Unmounts now; what `Drop` does.
    pub fn unmount(mut self) {
        self.unmount_now();
    }

    fn unmount_now(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let forced = force_unmount(&self.mount_point);
        if forced {
            // The connection is aborted: the session thread reads ENODEV and ends.
            let waited = Instant::now();
            while !session.guard.is_finished() && waited.elapsed() < JOIN_WAIT {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if session.guard.is_finished() {
            if let Err(e) = session.join() {
                tracing::debug!(error = %e, "dongle volume session ended with an error");
            }
        } else {
            // Not root, or the thread is stuck: fuser's own unmount (lazy, through
            // fusermount3) runs as the session is dropped; the thread ends when the last
            // client closes the marker file.
            drop(session);
        }
        tracing::debug!(mount_point = %self.mount_point.display(), "dongle volume unmounted");
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        self.unmount_now();
    }
}

/// Unmounts `dir` with `MNT_FORCE` (which aborts the FUSE connection even while files are
/// open), then detaches it if it is still busy. False when that is not permitted (not root).
fn force_unmount(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; umount2 touches no other memory.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_FORCE) } == 0 {
        return true;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EBUSY) => {
            // The connection is aborted already; take the mount out of the namespace.
            // SAFETY: as above.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            true
        }
        // Not a mount point any more: someone unmounted it, and the session ends by itself.
        Some(libc::EINVAL) => true,
        _ => false,
    }
}

/// Mounts a dongle volume for the dongle `serial` at `dir`, serving reports to `sink`. Returns
/// once the volume is mounted and initialized; the FUSE session runs on a background thread
/// until the returned guard is dropped.
///
/// Mount options: `fsname=tessera-dongle`, `default_permissions` and, where `fusermount3`
/// permits it (as root), `auto_unmount` with `allow_other`, so that a killed dongle process
/// leaves no dead mount behind and any user's runtime can reach the dongle; otherwise the
/// volume is mounted for its owner only.
pub fn mount(dir: &Path, serial: &str, sink: Arc<Mutex<dyn ReportSink>>) -> Result<MountGuard> {
    let mount_point = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let base = vec![
        MountOption::FSName("tessera-dongle".into()),
        MountOption::Subtype("tessera".into()),
        MountOption::DefaultPermissions,
    ];
    let mut shared = Config::default();
    shared.mount_options = base.clone();
    shared.mount_options.push(MountOption::AutoUnmount);
    shared.acl = SessionACL::All;
    let mut private = Config::default();
    private.mount_options = base;
    private.acl = SessionACL::Owner;

    let mut last_error = None;
    for config in [shared, private] {
        match fuser::spawn_mount(Volume::new(serial, sink.clone()), &mount_point, &config) {
            Ok(session) => {
                tracing::debug!(
                    mount_point = %mount_point.display(),
                    options = ?config.mount_options,
                    "dongle volume mounted"
                );
                return Ok(MountGuard {
                    mount_point,
                    session: Some(session),
                });
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(Error::io(
        mount_point,
        last_error.unwrap_or_else(|| std::io::Error::other("mount failed")),
    ))
}

/// Mounts a dongle volume (as [`mount`]) and serves it until `stop` is set or the volume is
/// unmounted by someone else (an error), then unmounts. For the `tessera-dongle` binary.
pub fn serve_until(
    dir: &Path,
    serial: &str,
    sink: Arc<Mutex<dyn ReportSink>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let guard = mount(dir, serial, sink)?;
    while !stop.load(Ordering::SeqCst) {
        if !guard.is_serving() {
            return Err(Error::io(
                guard.mount_point(),
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the dongle volume was unmounted",
                ),
            ));
        }
        std::thread::sleep(STOP_POLL);
    }
    guard.unmount();
    Ok(())
}

#[cfg(all(test, feature = "virtual-dongle"))]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;
    use std::sync::mpsc;

    use super::*;
    use crate::dongle::framing::ReportDevice;
    use crate::dongle::msd::{MsdDevice, MsdVolume, find_volumes};

    /// Answers each report with a copy whose byte 4 is incremented; a report whose byte 5 is
    /// `n` > 0 is answered with `n` copies; byte 5 = 0xFF makes the sink panic.
    struct EchoSink;

    impl ReportSink for EchoSink {
        fn handle_report(&mut self, report: &Report, _now: Instant) -> Vec<Report> {
            let mut answer = *report;
            answer[4] = answer[4].wrapping_add(1);
            match report[5] {
                0xFF => panic!("test sink told to panic"),
                0 => vec![answer],
                n => vec![answer; usize::from(n)],
            }
        }
    }

    fn report(cid: u32, tag: u8, copies: u8) -> Report {
        let mut r = [0u8; REPORT_LEN];
        r[..4].copy_from_slice(&cid.to_be_bytes());
        r[4] = tag;
        r[5] = copies;
        r[6..]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        r
    }

    fn echoed(mut r: Report) -> Report {
        r[4] = r[4].wrapping_add(1);
        r
    }

    /// Mounts a volume in a fresh temporary directory, or `None` without `/dev/fuse`.
    /// Declare the guard after the directory so it drops (unmounts) first.
    fn mounted(serial: &str) -> Option<(tempfile::TempDir, MountGuard)> {
        if !Path::new("/dev/fuse").exists() {
            eprintln!("skipped: /dev/fuse is absent");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let sink: Arc<Mutex<dyn ReportSink>> = Arc::new(Mutex::new(EchoSink));
        let guard = mount(dir.path(), serial, sink).expect("mount the dongle volume");
        Some((dir, guard))
    }

    fn volume_of(guard: &MountGuard) -> MsdVolume {
        find_volumes()
            .into_iter()
            .find(|v| v.mount_point == guard.mount_point())
            .expect("the mounted volume is found")
    }

    /// Sends `reports` as one exchange and collects every answer.
    fn exchange(device: &mut MsdDevice, reports: &[Report]) -> Vec<Report> {
        for r in reports {
            device.write_report(r).unwrap();
        }
        // The first read does the exchange (waiting for the lock if need be); the rest only
        // drain what it queued.
        let mut answers: Vec<Report> = device
            .read_report(Duration::from_secs(10))
            .unwrap()
            .into_iter()
            .collect();
        while let Some(r) = device.read_report(Duration::ZERO).unwrap() {
            answers.push(r);
        }
        answers
    }

    #[test]
    fn volume_is_found_with_its_files_and_serial() {
        let Some((_dir, guard)) = mounted("TD-FIND-1") else {
            return;
        };
        let volume = volume_of(&guard);
        assert_eq!(volume.serial, "TD-FIND-1");
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = table
            .lines()
            .find(|l| l.contains(&*guard.mount_point().to_string_lossy()))
            .unwrap();
        eprintln!("mount: {line}");
        assert!(line.contains("fuse.tessera tessera-dongle"), "{line}");
        let mut names: Vec<String> = std::fs::read_dir(guard.mount_point())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["TESSERA.ID", "TESSERA.IO"]);
        let id = std::fs::read_to_string(guard.mount_point().join(ID_FILE)).unwrap();
        assert_eq!(id, "tessera-dongle v1\nserial TD-FIND-1\n");
        let io = std::fs::metadata(volume.io_path()).unwrap();
        assert_eq!(io.len(), IO_SIZE);
        // The identity file is read-only.
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(guard.mount_point().join(ID_FILE))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    }

    #[test]
    fn exchange_returns_the_answers_in_order_and_skips_padding() {
        let Some((_dir, guard)) = mounted("TD-XCHG") else {
            return;
        };
        let mut device = MsdDevice::open(&volume_of(&guard)).unwrap();
        assert!(
            device.direct_io(),
            "O_DIRECT open is expected to work on FUSE"
        );
        let requests = [report(7, 1, 0), report(7, 2, 0), report(7, 3, 0)];
        let answers = exchange(&mut device, &requests);
        assert_eq!(answers, requests.map(echoed).to_vec());
        // 20 answers (1280 bytes) span three blocks.
        let many = exchange(&mut device, &[report(8, 40, 20)]);
        assert_eq!(many, vec![echoed(report(8, 40, 20)); 20]);
        // Nothing written: nothing to read, and the timeout is waited out.
        let start = Instant::now();
        assert_eq!(device.read_report(Duration::from_millis(50)).unwrap(), None);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_long_response_is_read_in_several_blocks() {
        let Some((_dir, guard)) = mounted("TD-LONG") else {
            return;
        };
        let mut device = MsdDevice::open(&volume_of(&guard)).unwrap();
        // 3 × 200 answers = 38400 bytes: more than one 16 KiB read.
        let requests = [report(9, 1, 200), report(9, 2, 200), report(9, 3, 200)];
        let answers = exchange(&mut device, &requests);
        assert_eq!(answers.len(), 600);
        assert_eq!(answers[0], echoed(requests[0]));
        assert_eq!(answers[599], echoed(requests[2]));
    }

    #[test]
    fn concurrent_clients_each_get_their_own_answers() {
        let Some((_dir, guard)) = mounted("TD-CONC") else {
            return;
        };
        let volume = volume_of(&guard);
        let workers: Vec<_> = (1..=4u32)
            .map(|cid| {
                let volume = volume.clone();
                std::thread::spawn(move || {
                    let mut device = MsdDevice::open(&volume).unwrap();
                    for round in 0..50u8 {
                        let requests = [report(cid, round, 0), report(cid, round, 2)];
                        let answers = exchange(&mut device, &requests);
                        let expected = vec![
                            echoed(requests[0]),
                            echoed(requests[1]),
                            echoed(requests[1]),
                        ];
                        assert_eq!(answers, expected, "client {cid} round {round}");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("client thread");
        }
    }

    #[test]
    fn the_lock_is_exclusive_and_waited_for_with_a_timeout() {
        let Some((_dir, guard)) = mounted("TD-LOCK") else {
            return;
        };
        let volume = volume_of(&guard);
        // Another open file description holds the OFD lock.
        let holder = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(volume.io_path())
            .unwrap();
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: valid descriptor and flock.
        let rc = unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        assert_eq!(rc, 0);
        let mut device = MsdDevice::open(&volume).unwrap();
        device.write_report(&report(3, 1, 0)).unwrap();
        let start = Instant::now();
        match device.read_report(Duration::from_millis(100)) {
            Err(Error::Timeout(_)) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(start.elapsed() >= Duration::from_millis(100));
        drop(holder);
        assert_eq!(
            exchange(&mut device, &[report(3, 2, 0)]),
            vec![echoed(report(3, 2, 0))]
        );
    }

    #[test]
    fn garbage_is_refused_and_the_volume_keeps_working() {
        let Some((_dir, guard)) = mounted("TD-GARB") else {
            return;
        };
        let volume = volume_of(&guard);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(volume.io_path())
            .unwrap();
        let err = file.write_all(&[0xAB; 100]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        let err = file.write_at(&[0xAB; 64], 64).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        let err = file.write_at(&[0xAB; 65], 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        // Reads past offset 0 are empty; a read with nothing pending is one zero block.
        let mut buf = [0xEEu8; 4096];
        assert_eq!(file.read_at(&mut buf, 100).unwrap(), 0);
        assert_eq!(file.read_at(&mut buf, 0).unwrap(), BLOCK_LEN);
        assert!(buf[..BLOCK_LEN].iter().all(|&b| b == 0));
        // A sink that panics is an EIO for that write, not a dead volume.
        let err = file.write_at(&report(5, 1, 0xFF), 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        // Truncating (an O_TRUNC open) and fsync are harmless.
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(volume.io_path())
                .unwrap(),
        );
        file.sync_all().unwrap();

        let mut device = MsdDevice::open(&volume).unwrap();
        assert_eq!(
            exchange(&mut device, &[report(5, 9, 0)]),
            vec![echoed(report(5, 9, 0))]
        );
    }

    #[test]
    fn the_page_cache_is_bypassed() {
        let Some((_dir, guard)) = mounted("TD-CACHE") else {
            return;
        };
        let volume = volume_of(&guard);
        let mut device = MsdDevice::open(&volume).unwrap();
        let a = exchange(&mut device, &[report(11, 1, 0)]);
        let b = exchange(&mut device, &[report(11, 2, 0)]);
        assert_eq!(a, vec![echoed(report(11, 1, 0))]);
        assert_eq!(b, vec![echoed(report(11, 2, 0))]);

        // Even without O_DIRECT, the volume's direct-I/O opens keep reads uncached.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(volume.io_path())
            .unwrap();
        for tag in [20u8, 21, 22] {
            let mut block = [0u8; BLOCK_LEN];
            block[..REPORT_LEN].copy_from_slice(&report(12, tag, 0));
            assert_eq!(file.write_at(&block, 0).unwrap(), BLOCK_LEN);
            let mut answer = [0u8; 4096];
            assert_eq!(file.read_at(&mut answer, 0).unwrap(), BLOCK_LEN);
            assert_eq!(answer[..REPORT_LEN], echoed(report(12, tag, 0)));
        }
        // Read through an ordinary buffered handle too: the response is gone, zeros remain.
        let mut rest = Vec::new();
        file.read_to_end(&mut rest).unwrap();
        assert!(rest.iter().all(|&b| b == 0));
    }

    #[test]
    fn dropping_the_guard_unmounts_and_clients_fail_without_hanging() {
        let Some((dir, guard)) = mounted("TD-DROP") else {
            return;
        };
        let volume = volume_of(&guard);
        let mut device = MsdDevice::open(&volume).unwrap();
        assert_eq!(
            exchange(&mut device, &[report(13, 1, 0)]),
            vec![echoed(report(13, 1, 0))]
        );
        // The device keeps the marker file open while the volume goes away.
        drop(guard);
        assert!(!dir.path().join(ID_FILE).exists());
        assert!(find_volumes().iter().all(|v| v.serial != "TD-DROP"));
        assert!(MsdDevice::open(&volume).is_err());

        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            device.write_report(&report(13, 2, 0)).unwrap();
            let outcome = device.read_report(Duration::from_millis(200));
            let _ = done.send(outcome);
        });
        match result.recv_timeout(Duration::from_secs(10)) {
            Ok(Err(Error::Io {
                path,
                error: source,
            })) => {
                assert_eq!(path, volume.io_path());
                eprintln!("after unmount: {source}");
            }
            Ok(other) => panic!("expected an i/o error, got {other:?}"),
            Err(_) => panic!("the client hung on an unmounted volume"),
        }
    }

    #[test]
    fn serve_until_mounts_until_stopped() {
        if !Path::new("/dev/fuse").exists() {
            eprintln!("skipped: /dev/fuse is absent");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let sink: Arc<Mutex<dyn ReportSink>> = Arc::new(Mutex::new(EchoSink));
                serve_until(&path, "TD-SERVE", sink, stop)
            })
        };
        // Stop the server even if an assertion below fails.
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let stopper = StopOnDrop(stop);
        let start = Instant::now();
        let volume = loop {
            if let Some(v) = find_volumes().into_iter().find(|v| v.mount_point == path) {
                break v;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never mounted");
            assert!(!server.is_finished(), "server ended early");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(volume.serial, "TD-SERVE");
        let mut device = MsdDevice::open(&volume).unwrap();
        assert_eq!(
            exchange(&mut device, &[report(14, 1, 0)]),
            vec![echoed(report(14, 1, 0))]
        );
        drop(stopper);
        server.join().unwrap().unwrap();
        assert!(!path.join(ID_FILE).exists());
    }
}
