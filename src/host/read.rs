//! Small, panic-free readers for the text files under `/proc`, `/sys`, `/etc` and `/dev`.
//!
//! Every reader takes a path that the caller has already joined onto a root (the real `/` or
//! a fake root in tests), reads at most [`MAX_FILE`] bytes, decodes lossily and never fails:
//! what it cannot read becomes `None`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most bytes read from any single file. Identity files are tiny; the cap keeps a strange
/// file (or a fake root pointing at a device) from costing memory.
pub(crate) const MAX_FILE: u64 = 64 * 1024;

/// The most entries looked at in one directory listing.
pub(crate) const MAX_DIR_ENTRIES: usize = 4096;

/// Reads a file as bytes, up to `MAX_FILE`.
pub(crate) fn read_bytes(path: &Path) -> Option<Vec<u8>> {
    let file = File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Reads a file as text (lossy UTF-8), with NULs removed and surrounding whitespace trimmed.
/// An empty result is `None`.
pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    let bytes = read_bytes(path)?;
    let text = String::from_utf8_lossy(&bytes).replace('\0', "");
    let text = text.trim();
    if text.is_empty() {
        None
    } else {
        Some(text.to_owned())
    }
}

/// Joins an absolute-looking path (`"/etc/machine-id"`) onto `root` without letting the
/// leading `/` replace the root.
pub(crate) fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The final component of a link target or path, as text.
pub(crate) fn base_name(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The names in a directory, sorted, at most `MAX_DIR_ENTRIES`. Unreadable directory: empty.
pub(crate) fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .take(MAX_DIR_ENTRIES)
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Replaces control characters so a string read from the machine is safe to print, and caps
/// its length at `max` characters.
pub(crate) fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_trimmed_handles_missing_empty_and_binary_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_trimmed(&dir.path().join("missing")), None);
        std::fs::write(dir.path().join("empty"), b"  \n\0").unwrap();
        assert_eq!(read_trimmed(&dir.path().join("empty")), None);
        std::fs::write(dir.path().join("bin"), b"\xffab\0c\n").unwrap();
        assert_eq!(
            read_trimmed(&dir.path().join("bin")).as_deref(),
            Some("\u{fffd}abc")
        );
        // A directory is not a file: no panic, no value.
        assert_eq!(read_trimmed(dir.path()), None);
    }

    #[test]
    fn under_keeps_the_root() {
        assert_eq!(
            under(Path::new("/tmp/x"), "/etc/machine-id"),
            PathBuf::from("/tmp/x/etc/machine-id")
        );
        assert_eq!(under(Path::new("/"), "/etc"), PathBuf::from("/etc"));
    }

    #[test]
    fn printable_masks_control_characters() {
        assert_eq!(printable("a\x1b[2Jb\n", 100), "a?[2Jb?");
        assert_eq!(printable("abcdef", 3), "abc");
    }
}
