//! Small helpers shared by the layers: the clock, randomness, atomic file writes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};

use crate::{Error, Result};

/// A source of the current time in seconds since the Unix epoch. Tests inject their own to
/// simulate a clock set back.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock fixed at (or offset from) a time of the caller's choice, for tests.
#[derive(Debug)]
pub struct OffsetClock {
    /// Seconds added to the system time (may be negative).
    pub offset: i64,
}

impl Clock for OffsetClock {
    fn now(&self) -> u64 {
        SystemClock.now().saturating_add_signed(self.offset)
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The current system time in seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemClock.now()
}

/// `N` random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

/// Encodes `value` with postcard behind a `u16` format version.
pub fn encode_versioned<T: serde::Serialize>(
    version: u16,
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>> {
    postcard::to_stdvec(&(version, value))
        .map_err(|e| Error::Internal(format!("encoding {what}: {e}")))
}

/// [`encode_versioned`], appending to `out` (a buffer the caller reuses).
pub fn encode_versioned_into<T: serde::Serialize>(
    version: u16,
    value: &T,
    what: &'static str,
    out: &mut Vec<u8>,
) -> Result<()> {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(&(version, value), buf)
        .map_err(|e| Error::Internal(format!("encoding {what}: {e}")))?;
    Ok(())
}

/// Decodes what [`encode_versioned`] wrote: another version is `UnknownVersion`, bad or
/// trailing bytes are `Malformed`.
pub fn decode_versioned<T: serde::de::DeserializeOwned>(
    version: u16,
    b: &[u8],
    what: &'static str,
) -> Result<T> {
    let (found, rest): (u16, &[u8]) =
        postcard::take_from_bytes(b).map_err(|e| Error::malformed(what, e.to_string()))?;
    if found != version {
        return Err(Error::UnknownVersion {
            what,
            found,
            supported: version,
        });
    }
    let (v, tail) =
        postcard::take_from_bytes::<T>(rest).map_err(|e| Error::malformed(what, e.to_string()))?;
    if !tail.is_empty() {
        return Err(Error::malformed(what, "trailing bytes"));
    }
    Ok(v)
}

/// Writes `data` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over the target, fsync of the directory. A crash at any point leaves the old file
/// or the new one, never a mix. `mode` is the new file's permission bits.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        hex::encode(random::<6>())
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Creates `dir` and its parents with mode 0700 where they do not exist.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Formats a Unix time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Parses `YYYY-MM-DD` (midnight UTC) into a Unix time.
pub fn parse_date(s: &str) -> Option<u64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let t = parse_date("2027-03-01").unwrap();
        assert_eq!(format_time(t), "2027-03-01 00:00:00 UTC");
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-30").map(|_| ()), Some(()));
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_date("garbage"), None);
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"old", 0o600).unwrap();
        write_atomic(&p, b"new contents", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new contents");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
