//! The mass-storage (MSD) transport, client side: a dongle that shows up as a volume holding
//! `TESSERA.ID` and the marker file `TESSERA.IO`. One exchange locks the marker file (OFD
//! write lock), writes the request reports at offset 0 as one block padded with zero reports
//! to a multiple of 512 bytes, reads the response block at offset 0 and unlocks. The file is
//! opened with `O_DIRECT`, so every block goes through the kernel to the dongle and nothing is
//! served from the page cache. See `docs/DONGLES.md` ("MSD volume").

use std::alloc::Layout;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::dongle::framing::{REPORT_LEN, Report, ReportDevice};
use crate::{Error, Result};

/// The identity file at the root of a dongle volume.
pub const ID_FILE: &str = "TESSERA.ID";
/// The marker file through which reports are exchanged.
pub const IO_FILE: &str = "TESSERA.IO";
/// The first line of [`ID_FILE`].
pub const ID_MAGIC: &str = "tessera-dongle v1";
/// Requests and responses are padded with zero reports to a multiple of this many bytes.
pub const BLOCK_LEN: usize = 512;
/// Alignment of the I/O buffers (`O_DIRECT` wants page-aligned memory on most filesystems).
const ALIGN: usize = 4096;
/// Bytes read per `pread` of a response.
const READ_LEN: usize = 16 * 1024;
/// Upper bound on the `pread`s of one response (a response longer than one read stays
/// pending on the volume and is fetched by the next read).
const MAX_READS: usize = 64;
/// The longest pause between two attempts to take the lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(20);
/// The most bytes of [`ID_FILE`] that are read.
const ID_MAX_LEN: u64 = 4096;

/// Filesystem types never scanned for a dongle volume: kernel pseudo-filesystems, automount
/// triggers (touching them mounts things) and network filesystems (a dead server would hang
/// the scan).
const SKIPPED_FS_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "devtmpfs",
    "cgroup",
    "cgroup2",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "efivarfs",
    "rpc_pipefs",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "ceph",
];

/// A mounted dongle volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsdVolume {
    /// Where the volume is mounted.
    pub mount_point: PathBuf,
    /// The dongle's serial, from [`ID_FILE`].
    pub serial: String,
}

impl MsdVolume {
    /// The marker file of this volume.
    pub fn io_path(&self) -> PathBuf {
        self.mount_point.join(IO_FILE)
    }
}

/// One line of `/proc/self/mountinfo`: the parts this module uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    mount_point: PathBuf,
    fs_type: String,
}

/// Finds the mounted dongle volumes: mount points holding a [`ID_FILE`] whose first line is
/// [`ID_MAGIC`]. Unreadable mounts are skipped; an unreadable mount table gives no volumes.
pub fn find_volumes() -> Vec<MsdVolume> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut volumes: Vec<MsdVolume> = Vec::new();
    for entry in parse_mountinfo(&table) {
        if SKIPPED_FS_TYPES.contains(&entry.fs_type.as_str()) {
            continue;
        }
        if volumes.iter().any(|v| v.mount_point == entry.mount_point) {
            continue;
        }
        if let Some(serial) = read_id(&entry.mount_point.join(ID_FILE)) {
            volumes.push(MsdVolume {
                mount_point: entry.mount_point,
                serial,
            });
        }
    }
    volumes
}

/// Reads an identity file; `None` unless it is a dongle's.
fn read_id(path: &Path) -> Option<String> {
    use std::io::Read;
    let file = File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(ID_MAX_LEN).read_to_string(&mut text).ok()?;
    parse_id(&text)
}

/// Parses the text of [`ID_FILE`]: `tessera-dongle v1\nserial <serial>\n`. Returns the serial.
pub(crate) fn parse_id(text: &str) -> Option<String> {
    let mut lines = text.lines();
    if lines.next()?.trim_end() != ID_MAGIC {
        return None;
    }
    lines.find_map(|line| {
        let serial = line.strip_prefix("serial ")?.trim();
        (!serial.is_empty()).then(|| serial.to_string())
    })
}

/// Parses `/proc/self/mountinfo`:
/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`.
/// Malformed lines are skipped.
pub(crate) fn parse_mountinfo(table: &str) -> Vec<MountEntry> {
    table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let mount_point = fields.nth(4)?;
            // The optional fields end with a lone "-"; the filesystem type follows it.
            let fs_type = fields.skip_while(|f| *f != "-").nth(1)?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape_mount_path(mount_point)),
                fs_type: unescape_mount_path(fs_type).to_string_lossy().into_owned(),
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes in mount table fields (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash). A backslash not followed by three octal digits stays.
fn unescape_mount_path(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::ffi::OsString::from_vec(out)
}

/// A zeroed heap buffer aligned for `O_DIRECT`.
struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer owns its memory exclusively, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zero bytes (`len` > 0) aligned to [`ALIGN`].
    fn zeroed(len: usize) -> Result<AlignedBuf> {
        let layout = Layout::from_size_align(len.max(1), ALIGN)
            .map_err(|e| Error::Internal(format!("i/o buffer layout: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::Internal(format!("cannot allocate {len} bytes")))?;
        Ok(AlignedBuf { ptr, layout })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` initialized (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Holds the OFD write lock on the marker file; unlocks on drop.
struct FileLock<'a> {
    file: &'a File,
}

impl<'a> FileLock<'a> {
    /// Takes the lock, polling until `deadline` (`None`: wait as long as it takes).
    fn acquire(file: &'a File, path: &Path, deadline: Option<Instant>) -> Result<FileLock<'a>> {
        let mut pause = Duration::from_millis(1);
        loop {
            match ofd_lock(file, libc::F_WRLCK as libc::c_short) {
                Ok(()) => return Ok(FileLock { file }),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN) | Some(libc::EACCES) | Some(libc::EINTR)
                    ) => {}
                Err(e) => return Err(Error::io(path, e)),
            }
            let now = Instant::now();
            let wait = match deadline {
                Some(deadline) if now >= deadline => {
                    return Err(Error::Timeout(format!(
                        "the lock on {} is held by another client",
                        path.display()
                    )));
                }
                Some(deadline) => pause.min(deadline - now),
                None => pause,
            };
            std::thread::sleep(wait);
            pause = (pause * 2).min(LOCK_POLL_MAX);
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the file would drop the lock too; an unlock error changes nothing.
        let _ = ofd_lock(self.file, libc::F_UNLCK as libc::c_short);
    }
}

/// `fcntl(F_OFD_SETLK)` over the whole file with lock type `kind`.
fn ofd_lock(file: &File, kind: libc::c_short) -> io::Result<()> {
    // SAFETY: `flock` is plain old data; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0;
    lock.l_pid = 0;
    // SAFETY: a valid open descriptor and a pointer to an initialized `flock`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A dongle volume's marker file as a pipe of reports ([`ReportDevice`]). Written reports are
/// buffered; the next [`read_report`](ReportDevice::read_report) sends them in one exchange
/// and queues the answer.
pub struct MsdDevice {
    path: PathBuf,
    file: File,
    direct_io: bool,
    outgoing: Vec<Report>,
    incoming: VecDeque<Report>,
}

impl std::fmt::Debug for MsdDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsdDevice")
            .field("path", &self.path)
            .field("direct_io", &self.direct_io)
            .field("outgoing", &self.outgoing.len())
            .field("incoming", &self.incoming.len())
            .finish()
    }
}

impl MsdDevice {
    /// Opens the marker file of `volume` read-write with `O_DIRECT`; where the filesystem
    /// refuses `O_DIRECT` (`EINVAL`), opens it without (see [`direct_io`](Self::direct_io)).
    pub fn open(volume: &MsdVolume) -> Result<MsdDevice> {
        let path = volume.io_path();
        let open = |flags: libc::c_int| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(flags)
                .open(&path)
        };
        let (file, direct_io) = match open(libc::O_DIRECT) {
            Ok(file) => (file, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (open(0).map_err(|e| Error::io(&path, e))?, false)
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        Ok(MsdDevice {
            path,
            file,
            direct_io,
            outgoing: Vec::new(),
            incoming: VecDeque::new(),
        })
    }

    /// Whether the marker file is open with `O_DIRECT`.
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    /// The marker file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One exchange: lock, write the buffered reports, read the response, unlock.
    fn exchange(&mut self, deadline: Option<Instant>) -> Result<()> {
        let requests = std::mem::take(&mut self.outgoing);
        let len = (requests.len() * REPORT_LEN).div_ceil(BLOCK_LEN) * BLOCK_LEN;
        let mut request = AlignedBuf::zeroed(len)?;
        for (chunk, report) in request
            .as_mut_slice()
            .chunks_exact_mut(REPORT_LEN)
            .zip(&requests)
        {
            chunk.copy_from_slice(report);
        }
        let mut response = AlignedBuf::zeroed(READ_LEN)?;

        let _lock = FileLock::acquire(&self.file, &self.path, deadline)?;
        let written = retry_eintr(|| self.file.write_at(request.as_slice(), 0))
            .map_err(|e| Error::io(&self.path, e))?;
        if written != len {
            return Err(Error::io(
                &self.path,
                io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write to the marker file: {written} of {len} bytes"),
                ),
            ));
        }
        for _ in 0..MAX_READS {
            let read = retry_eintr(|| self.file.read_at(response.as_mut_slice(), 0))
                .map_err(|e| Error::io(&self.path, e))?;
            let block = &response.as_slice()[..read];
            // A block that ends in padding is the whole response; one that does not may
            // have been cut at the read size, and the volume keeps the rest for the next read.
            if response_reports(block, &mut self.incoming) {
                break;
            }
        }
        Ok(())
    }
}

/// Splits a block read from the volume into its reports, skipping the all-zero padding ones;
/// true when the block ends in padding (or is empty), which marks the end of a response.
/// A partial report at the end of the block is ignored.
pub(crate) fn response_reports(block: &[u8], incoming: &mut VecDeque<Report>) -> bool {
    let mut last_is_padding = true;
    for chunk in block.chunks_exact(REPORT_LEN) {
        last_is_padding = chunk.iter().all(|&b| b == 0);
        if !last_is_padding {
            let mut report = [0u8; REPORT_LEN];
            report.copy_from_slice(chunk);
            incoming.push_back(report);
        }
    }
    last_is_padding
}

/// Repeats an I/O call interrupted by a signal.
fn retry_eintr<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl ReportDevice for MsdDevice {
    fn write_report(&mut self, report: &Report) -> Result<()> {
        self.outgoing.push(*report);
        Ok(())
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Option<Report>> {
        if let Some(report) = self.incoming.pop_front() {
            return Ok(Some(report));
        }
        let deadline = Instant::now().checked_add(timeout);
        if !self.outgoing.is_empty() {
            self.exchange(deadline)?;
            if let Some(report) = self.incoming.pop_front() {
                return Ok(Some(report));
            }
        }
        // The volume answers only what is written to it: nothing more can arrive, so wait
        // out the timeout (as a HID read would) rather than let a caller spin.
        if let Some(rest) = deadline.and_then(|d| d.checked_duration_since(Instant::now())) {
            std::thread::sleep(rest);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_buffer_is_zeroed_aligned_owned_and_freed_on_any_thread() {
        // Run under Miri too (`make miri`): allocation, the slices and the free.
        for len in [1, ALIGN - 1, ALIGN + 1] {
            let mut b = AlignedBuf::zeroed(len).unwrap();
            assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
            assert!(b.as_slice().len() >= len);
            assert!(b.as_slice().iter().all(|x| *x == 0));
            b.as_mut_slice()[len - 1] = 0x5A;
            let b = std::thread::spawn(move || {
                assert_eq!(b.as_slice()[len - 1], 0x5A);
                b
            })
            .join()
            .unwrap();
            drop(b);
        }
    }

    #[test]
    fn mountinfo_lines_give_mount_point_and_type() {
        let table = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:45 / /media/usb\\040stick rw,nosuid,nodev shared:7 master:2 - fuse tessera-dongle rw,user_id=0
37 22 0:46 / /mnt/tab\\011and\\134back rw - vfat /dev/sdb1 rw
38 22 0:47 / /no/optional/fields rw - tmpfs tmpfs rw
malformed line
";
        let entries = parse_mountinfo(table);
        assert_eq!(
            entries,
            vec![
                MountEntry {
                    mount_point: PathBuf::from("/"),
                    fs_type: "ext4".into()
                },
                MountEntry {
                    mount_point: PathBuf::from("/media/usb stick"),
                    fs_type: "fuse".into()
                },
                MountEntry {
                    mount_point: PathBuf::from("/mnt/tab\tand\\back"),
                    fs_type: "vfat".into()
                },
                MountEntry {
                    mount_point: PathBuf::from("/no/optional/fields"),
                    fs_type: "tmpfs".into()
                },
            ]
        );
    }

    #[test]
    fn unescape_keeps_stray_backslashes_and_decodes_newlines() {
        assert_eq!(unescape_mount_path("/a\\012b"), "/a\nb");
        assert_eq!(unescape_mount_path("/a\\9zz"), "/a\\9zz");
        assert_eq!(unescape_mount_path("/end\\04"), "/end\\04");
        // \777 is out of byte range: left as it is.
        assert_eq!(unescape_mount_path("/x\\777"), "/x\\777");
        assert_eq!(unescape_mount_path("\\134\\134"), "\\\\");
    }

    #[test]
    fn id_file_parsing() {
        assert_eq!(
            parse_id("tessera-dongle v1\nserial TD-0042\n"),
            Some("TD-0042".to_string())
        );
        assert_eq!(parse_id("tessera-dongle v2\nserial TD-0042\n"), None);
        assert_eq!(parse_id("tessera-dongle v1\n"), None);
        assert_eq!(parse_id("tessera-dongle v1\nserial \n"), None);
        assert_eq!(parse_id(""), None);
    }

    #[test]
    fn aligned_buffer_is_aligned_and_zeroed() {
        let buf = AlignedBuf::zeroed(1024).unwrap();
        assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0);
        assert_eq!(buf.as_slice().len(), 1024);
        assert!(buf.as_slice().iter().all(|&b| b == 0));
    }

    #[test]
    fn a_volume_that_vanished_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let volume = MsdVolume {
            mount_point: dir.path().join("gone"),
            serial: "X".into(),
        };
        match MsdDevice::open(&volume) {
            Err(Error::Io { path, .. }) => assert_eq!(path, volume.io_path()),
            other => panic!("expected an i/o error, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_directory_with_an_id_file_is_found_only_when_mounted() {
        // A dongle's files in an ordinary directory are not a volume: only mount points
        // are scanned.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ID_FILE), "tessera-dongle v1\nserial FAKE\n").unwrap();
        assert!(
            find_volumes()
                .iter()
                .all(|v| v.mount_point != dir.path() && v.serial != "FAKE")
        );
    }
}
