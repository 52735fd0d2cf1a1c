//! Where a fingerprint trait really comes from: the guard that refuses traits read through
//! a mount laid over their source (a bind mount of a fake `/etc/machine-id`, a tmpfs over
//! `/sys/class/dmi/id`, a fake `/proc`), also inside a user namespace (`unshare -Urm`).
//!
//! Every source file has an **anchor**, the mount it must live on: the root file system for
//! `/etc`, the sysfs at `/sys`, the proc file system at `/proc`, the device file system at
//! `/dev`. A file is read through an open descriptor whose mount the kernel names
//! (`statx(STATX_MNT_ID)`); when that mount is not the anchor's, something is mounted over
//! the file or over a directory on its path, and the read is refused with an [`OverMount`]
//! that names the mount point. The anchors themselves are checked against
//! `/proc/self/mountinfo` (mounted at their own path, of the right type, from the root of
//! their file system but for `/` where a btrfs subvolume shows as `/@`, and `statfs` agrees
//! for `/proc` and `/sys`); a process root that mountinfo does not list as a mount (a
//! `chroot`) is refused. Mountinfo is itself read only after its descriptor proved to be on
//! the real `/proc`. On kernels older than 5.8
//! (no mount id in `statx`) the mount points on the file's path are taken from mountinfo.
//!
//! What a mount cannot fake stays out of reach here: a root user who writes a file in place
//! (`/etc/machine-id`) changes the file itself; that is why the fingerprint also has traits
//! from the CPU and the kernel, and matches with a tolerance of one.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::read::{MAX_DIR_ENTRIES, MAX_FILE};

/// A fingerprint source that is covered by another mount: the machine's traits cannot be
/// trusted while it is there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverMount {
    /// The source that was to be read (a trait file, or an anchor such as `/sys`).
    pub path: PathBuf,
    /// Where the mount that covers it is mounted (`?` when mountinfo does not list it, as in
    /// a `chroot`).
    pub mount_point: String,
    /// That mount's file-system type.
    pub fs_type: String,
    /// What the source must be read from.
    pub expected: String,
}

impl std::fmt::Display for OverMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is over-mounted: it is read from a {} mount at {}, not from {}; \
             the machine's fingerprint cannot be trusted",
            self.path.display(),
            if self.fs_type.is_empty() {
                "unknown"
            } else {
                &self.fs_type
            },
            self.mount_point,
            self.expected
        )
    }
}

/// The mount a fingerprint source must live on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The root file system (`/etc/machine-id`).
    Root,
    /// The sysfs at `/sys`.
    Sys,
    /// The proc file system at `/proc`.
    Proc,
    /// The device file system at `/dev`.
    Dev,
}

impl Anchor {
    fn dir(self) -> &'static str {
        match self {
            Anchor::Root => "/",
            Anchor::Sys => "/sys",
            Anchor::Proc => "/proc",
            Anchor::Dev => "/dev",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Anchor::Root => "the root file system at /",
            Anchor::Sys => "the sysfs at /sys",
            Anchor::Proc => "the proc file system at /proc",
            Anchor::Dev => "the device file system at /dev",
        }
    }

    fn fs_type_ok(self, fs_type: &str) -> bool {
        match self {
            Anchor::Root => true,
            Anchor::Sys => fs_type == "sysfs",
            Anchor::Proc => fs_type == "proc",
            Anchor::Dev => matches!(fs_type, "devtmpfs" | "tmpfs"),
        }
    }

    /// Whether mountinfo's `entry` is a genuine mount of this anchor: at the anchor's path,
    /// of the right type, and (but for the root, where a btrfs subvolume shows as `/@`)
    /// from the root of its file system, not a bind mount of some directory.
    fn entry_ok(self, entry: &MountEntry) -> bool {
        entry.mount_point == self.dir()
            && (self == Anchor::Root || entry.root == "/")
            && self.fs_type_ok(&entry.fs_type)
    }

    /// The `statfs` magic the anchor's file system must have, where one is fixed.
    fn magic(self) -> Option<u64> {
        match self {
            Anchor::Sys => Some(0x6265_6572),
            Anchor::Proc => Some(0x9fa0),
            Anchor::Root | Anchor::Dev => None,
        }
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The mount id (`statx`'s `stx_mnt_id`).
    pub id: u64,
    /// The major:minor of its file system.
    pub majmin: String,
    /// The directory of the file system that is mounted (`/` unless a bind mount of a part).
    pub root: String,
    /// Where it is mounted, relative to the process's root.
    pub mount_point: String,
    /// The file-system type.
    pub fs_type: String,
    /// The mount source (`/dev/vda`, `tmpfs`, ...).
    pub source: String,
}

/// Parses mountinfo text; lines that do not parse are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(id), Some(majmin), Some(root), Some(point), Some(fs_type)) = (
            fields.first().and_then(|f| f.parse::<u64>().ok()),
            fields.get(2),
            fields.get(3),
            fields.get(4),
            fields.get(sep + 1),
        ) else {
            continue;
        };
        if sep < 6 {
            continue;
        }
        out.push(MountEntry {
            id,
            majmin: (*majmin).to_owned(),
            root: unescape(root),
            mount_point: unescape(point),
            fs_type: unescape(fs_type),
            source: fields.get(sep + 2).map_or(String::new(), |s| unescape(s)),
        });
    }
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape(field: &str) -> String {
    let mut rest = field.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'\\'
            && let [a, b, c, after @ ..] = tail
            && [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let n = u32::from(a - b'0') * 64 + u32::from(b - b'0') * 8 + u32::from(c - b'0');
            out.push(u8::try_from(n).unwrap_or(b'?'));
            rest = after;
        } else {
            out.push(first);
            rest = tail;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel's mount id of an open descriptor, or of `path` (not following a final
/// symlink when `nofollow`). `Ok(None)` when the kernel has no mount id in `statx`.
fn mount_id(fd: Option<&File>, path: &Path, nofollow: bool) -> std::io::Result<Option<u64>> {
    let (dirfd, cpath, flags) = match fd {
        Some(f) => (f.as_raw_fd(), CString::default(), libc::AT_EMPTY_PATH),
        None => (
            libc::AT_FDCWD,
            CString::new(path.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?,
            if nofollow {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            },
        ),
    };
    // SAFETY: an all-zero statx is a valid value of the plain C struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `cpath` is NUL-terminated and outlives the call; `st` is a writable statx.
    let rc = unsafe {
        libc::statx(
            dirfd,
            cpath.as_ptr(),
            flags | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_MNT_ID,
            &mut st,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.stx_mask & libc::STATX_MNT_ID != 0).then_some(st.stx_mnt_id))
}

/// The `statfs` magic of the file system holding `path`.
fn fs_magic(path: &str) -> Option<u64> {
    let cpath = CString::new(path).ok()?;
    // SAFETY: an all-zero statfs is a valid value of the plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `cpath` is NUL-terminated; `st` is writable.
    if unsafe { libc::statfs(cpath.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast, clippy::cast_sign_loss)]
    Some(st.f_type as u64)
}

/// The checked view of this process's mounts, made once per fingerprint collection.
pub(crate) struct Guard {
    mounts: Vec<MountEntry>,
    /// Whether `statx` reports mount ids (Linux 5.8 and later).
    has_mount_ids: bool,
}

impl Guard {
    /// Reads `/proc/self/mountinfo` after checking that `/proc` is the proc file system and
    /// that the file read is on it.
    pub(crate) fn new() -> Result<Guard, OverMount> {
        let proc_bad = |mount_point: &str, fs_type: &str| OverMount {
            path: PathBuf::from("/proc"),
            mount_point: mount_point.to_owned(),
            fs_type: fs_type.to_owned(),
            expected: Anchor::Proc.expected().to_owned(),
        };
        if fs_magic("/proc") != Anchor::Proc.magic() {
            return Err(proc_bad("/proc", "non-proc"));
        }
        let path = Path::new("/proc/self/mountinfo");
        let file = File::open(path).map_err(|_| proc_bad("/proc", "unreadable"))?;
        let file_id = mount_id(Some(&file), path, false).ok().flatten();
        let proc_id = mount_id(None, Path::new("/proc"), false).ok().flatten();
        let mut text = String::new();
        let _ = (&file).take(4 * MAX_FILE).read_to_string(&mut text);
        let guard = Guard {
            mounts: parse_mountinfo(&text),
            has_mount_ids: file_id.is_some() && proc_id.is_some(),
        };
        if file_id != proc_id {
            // Something is mounted over mountinfo itself (or over /proc/self).
            let e = guard.describe(file_id, path, Anchor::Proc);
            return Err(e);
        }
        guard.check_anchor(Anchor::Proc)?;
        Ok(guard)
    }

    /// The mounts, as mountinfo lists them.
    #[cfg(test)]
    pub(crate) fn mounts(&self) -> &[MountEntry] {
        &self.mounts
    }

    fn entry(&self, id: u64) -> Option<&MountEntry> {
        self.mounts.iter().rev().find(|m| m.id == id)
    }

    fn describe(&self, id: Option<u64>, path: &Path, anchor: Anchor) -> OverMount {
        let m = id.and_then(|id| self.entry(id));
        OverMount {
            path: path.to_path_buf(),
            mount_point: m.map_or_else(|| "?".to_owned(), |m| m.mount_point.clone()),
            fs_type: m.map_or_else(String::new, |m| m.fs_type.clone()),
            expected: anchor.expected().to_owned(),
        }
    }

    /// Checks that the anchor's directory is the root of a mount of the right type, mounted
    /// at its own path from the root of its file system. Returns its mount id when known.
    fn check_anchor(&self, anchor: Anchor) -> Result<Option<u64>, OverMount> {
        let dir = Path::new(anchor.dir());
        let bad = |m: Option<&MountEntry>| OverMount {
            path: dir.to_path_buf(),
            mount_point: m.map_or_else(|| "?".to_owned(), |m| m.mount_point.clone()),
            fs_type: m.map_or_else(String::new, |m| m.fs_type.clone()),
            expected: anchor.expected().to_owned(),
        };
        if let Some(magic) = anchor.magic()
            && fs_magic(anchor.dir()) != Some(magic)
        {
            let id = mount_id(None, dir, false).ok().flatten();
            return Err(bad(id.and_then(|id| self.entry(id))));
        }
        if self.has_mount_ids {
            let id = mount_id(None, dir, false).ok().flatten();
            let m = id.and_then(|id| self.entry(id));
            match m {
                Some(m) if anchor.entry_ok(m) => Ok(id),
                _ => Err(bad(m)),
            }
        } else {
            // The last mount listed at the anchor's path is the one on top.
            let m = self
                .mounts
                .iter()
                .rev()
                .find(|m| m.mount_point == anchor.dir());
            match m {
                Some(m) if anchor.entry_ok(m) => Ok(None),
                _ => Err(bad(m)),
            }
        }
    }

    /// The mount entry of the process's root directory, after checking it is a genuine
    /// root.
    pub(crate) fn root_entry(&self) -> Result<Option<&MountEntry>, OverMount> {
        let id = self.check_anchor(Anchor::Root)?;
        Ok(match id {
            Some(id) => self.entry(id),
            None => self.mounts.iter().rev().find(|m| m.mount_point == "/"),
        })
    }

    /// Without mount ids: the mounts whose mount point is `path` or a directory on its
    /// (resolved) path below the anchor.
    fn check_path_by_mountinfo(&self, path: &Path, anchor: Anchor) -> Result<(), OverMount> {
        let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let anchor_dir = Path::new(anchor.dir());
        for m in &self.mounts {
            let point = Path::new(&m.mount_point);
            if point != anchor_dir
                && point.starts_with(anchor_dir)
                && (resolved.starts_with(point) || path.starts_with(point))
            {
                return Err(OverMount {
                    path: path.to_path_buf(),
                    mount_point: m.mount_point.clone(),
                    fs_type: m.fs_type.clone(),
                    expected: anchor.expected().to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Checks that `file` (opened from `path`), or the link at `path` when `file` is
    /// `None`, lives on the anchor's mount.
    fn check(&self, file: Option<&File>, path: &Path, anchor: Anchor) -> Result<(), OverMount> {
        let anchor_id = self.check_anchor(anchor)?;
        if self.has_mount_ids {
            let id = mount_id(file, path, true).ok().flatten();
            if id.is_none() || id != anchor_id {
                return Err(self.describe(id, path, anchor));
            }
            Ok(())
        } else {
            self.check_path_by_mountinfo(path, anchor)
        }
    }

    /// Reads a small text file (lossy UTF-8, NULs removed, trimmed) from the anchor's mount.
    /// `Ok(None)` when it does not exist, cannot be read or is empty.
    pub(crate) fn read_trimmed(
        &self,
        path: &Path,
        anchor: Anchor,
    ) -> Result<Option<String>, OverMount> {
        let Ok(file) = File::open(path) else {
            return Ok(None);
        };
        self.check(Some(&file), path, anchor)?;
        let mut buf = Vec::new();
        if (&file).take(MAX_FILE).read_to_end(&mut buf).is_err() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&buf).replace('\0', "");
        let text = text.trim();
        Ok((!text.is_empty()).then(|| text.to_owned()))
    }

    /// Reads a symbolic link on the anchor's mount.
    pub(crate) fn read_link(
        &self,
        path: &Path,
        anchor: Anchor,
    ) -> Result<Option<PathBuf>, OverMount> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(None);
        }
        self.check(None, path, anchor)?;
        Ok(std::fs::read_link(path).ok())
    }

    /// Whether `path` exists, checking the anchor's mount when it does.
    pub(crate) fn exists(&self, path: &Path, anchor: Anchor) -> Result<bool, OverMount> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(false);
        }
        self.check(None, path, anchor)?;
        Ok(true)
    }

    /// The names in a directory on the anchor's mount, sorted.
    pub(crate) fn dir_names(&self, dir: &Path, anchor: Anchor) -> Result<Vec<String>, OverMount> {
        let Ok(file) = File::open(dir) else {
            return Ok(Vec::new());
        };
        self.check(Some(&file), dir, anchor)?;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = entries
            .take(MAX_DIR_ENTRIES)
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_and_garbage_is_skipped() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
            27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
            68 47 254:0 /etc/hostname /etc/machine-id rw shared:1 - ext4 /dev/vda rw\n\
            69 47 0:60 / /sys/devices/virtual/dmi/id rw - tmpfs my\\040fake rw\n\
            garbage\nx 1 2 3 4 - a b\n1 2 3 - a b\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].id, 22);
        assert_eq!(m[0].fs_type, "proc");
        assert_eq!(m[2].root, "/etc/hostname");
        assert_eq!(m[2].mount_point, "/etc/machine-id");
        assert_eq!(m[2].majmin, "254:0");
        assert_eq!(m[3].source, "my fake");
        assert_eq!(m[3].fs_type, "tmpfs");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/dev/my\040disk"), "/dev/my disk");
        assert_eq!(unescape(r"trailing\04"), r"trailing\04");
        assert_eq!(unescape(r"\777"), "?");
    }

    #[test]
    fn this_machine_has_no_over_mounted_sources() {
        // The test machine (and CI) runs with a plain /proc, /sys and root.
        let g = Guard::new().expect("mountinfo of this machine");
        assert!(g.mounts().iter().any(|m| m.mount_point == "/"));
        g.check_anchor(Anchor::Root).unwrap();
        g.check_anchor(Anchor::Sys).unwrap();
        assert!(
            g.read_trimmed(Path::new("/proc/self/mountinfo"), Anchor::Proc)
                .unwrap()
                .is_some()
        );
        // A file on another mount than its anchor is refused, naming that mount: /dev/shm
        // is a tmpfs of its own, not the root file system.
        if g.mounts().iter().any(|m| m.mount_point == "/dev/shm") {
            let dir = tempfile::tempdir_in("/dev/shm").unwrap();
            let f = dir.path().join("machine-id");
            std::fs::write(&f, b"0123456789abcdef0123456789abcdef\n").unwrap();
            let e = g.read_trimmed(&f, Anchor::Root).unwrap_err();
            assert_eq!(e.path, f);
            assert_eq!(e.mount_point, "/dev/shm");
            assert!(e.to_string().contains("is over-mounted"), "{e}");
            assert!(e.to_string().contains("/dev/shm"), "{e}");
        }
        // A file that does not exist is no trait, not an error.
        assert_eq!(
            g.read_trimmed(Path::new("/sys/class/no/such/file"), Anchor::Sys),
            Ok(None)
        );
    }

    #[test]
    fn anchors_accept_only_their_own_file_system_at_their_own_path() {
        let m = |line: &str| parse_mountinfo(line).remove(0);
        assert!(Anchor::Root.entry_ok(&m("27 1 254:0 / / rw - ext4 /dev/vda rw")));
        assert!(Anchor::Root.entry_ok(&m("27 1 0:31 /@ / rw - btrfs /dev/sda2 rw")));
        assert!(Anchor::Root.entry_ok(&m("500 400 0:52 / / rw - overlay overlay rw")));
        assert!(Anchor::Sys.entry_ok(&m("23 27 0:22 / /sys rw - sysfs sysfs rw")));
        assert!(Anchor::Proc.entry_ok(&m("22 27 0:21 / /proc rw - proc proc rw")));
        assert!(Anchor::Dev.entry_ok(&m("24 27 0:6 / /dev rw - devtmpfs udev rw")));
        assert!(Anchor::Dev.entry_ok(&m("24 27 0:6 / /dev rw - tmpfs tmpfs rw")));
        for (anchor, line) in [
            // A tmpfs, or a bind mount of a directory, where sysfs belongs.
            (Anchor::Sys, "70 27 0:60 / /sys rw - tmpfs fake rw"),
            (Anchor::Sys, "70 27 0:22 /devices /sys rw - sysfs sysfs rw"),
            // A fake /proc.
            (
                Anchor::Proc,
                "71 27 254:0 /tmp/proc /proc rw - ext4 /dev/vda rw",
            ),
            // Another path.
            (Anchor::Sys, "23 27 0:22 / /sys/class rw - sysfs sysfs rw"),
            (Anchor::Root, "27 1 254:0 / /mnt rw - ext4 /dev/vda rw"),
            (
                Anchor::Dev,
                "72 27 254:0 /tmp/dev /dev rw - ext4 /dev/vda rw",
            ),
        ] {
            assert!(!anchor.entry_ok(&m(line)), "{anchor:?} accepted {line}");
        }
    }

    #[test]
    fn over_mount_messages_name_the_path_and_the_mount() {
        let e = OverMount {
            path: PathBuf::from("/etc/machine-id"),
            mount_point: "/etc/machine-id".into(),
            fs_type: "ext4".into(),
            expected: Anchor::Root.expected().into(),
        };
        assert_eq!(
            e.to_string(),
            "/etc/machine-id is over-mounted: it is read from a ext4 mount at \
             /etc/machine-id, not from the root file system at /; the machine's fingerprint \
             cannot be trusted"
        );
    }
}
