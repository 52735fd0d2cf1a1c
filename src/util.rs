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

/// The current system time in milliseconds since the Unix epoch (the license server's seat
/// table and usage log keep time in milliseconds).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// A 32-bit number as people write it (vendor ids, product codes, feature bits): decimal
/// (`4242`) or hex (`0x1092`), with `_` allowed between digits.
pub fn parse_u32(s: &str) -> Option<u32> {
    let t = s.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(&h.replace('_', ""), 16).ok(),
        None => t.replace('_', "").parse::<u32>().ok(),
    }
}

/// [`parse_u32`] for a command-line parser (clap's `value_parser`).
pub fn u32_arg(s: &str) -> std::result::Result<u32, String> {
    parse_u32(s).ok_or_else(|| format!("`{}` is not a 32-bit number (decimal or 0x hex)", s.trim()))
}

/// For a one-shot command-line tool: die of `SIGPIPE`, as `ls` and `cat` do, when what reads
/// standard output goes away (`tessera list | head -3`): no message, and a shell sees exit
/// status 141. Rust starts programs with `SIGPIPE` ignored, which turns a write to a closed
/// pipe into an error that `println!` makes a panic (exit 101). Every socket write in the
/// crate passes `MSG_NOSIGNAL`, so this changes nothing else. The daemons
/// (`tessera-server`, `tessera-dongle serve`) keep the signal ignored and write their
/// standard output with [`say`].
pub fn die_on_sigpipe() {
    // SAFETY: resets one signal's disposition to the default; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// One line on standard output for a daemon: a closed or full pipe is no reason to stop
/// serving, so a failed write is dropped, never a panic.
pub fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// A Unix time (seconds) as a UTC civil date and time; `None` past jiff's range
/// (year 9999).
fn utc(t: u64) -> Option<jiff::civil::DateTime> {
    let ts = jiff::Timestamp::from_second(i64::try_from(t).ok()?).ok()?;
    Some(jiff::tz::TimeZone::UTC.to_datetime(ts))
}

/// Formats a Unix time as `YYYY-MM-DD HH:MM:SS UTC` (or `@SECONDS` past year 9999).
pub fn format_time(t: u64) -> String {
    match utc(t) {
        Some(d) => format!("{} UTC", d.strftime("%Y-%m-%d %H:%M:%S")),
        None => format!("@{t}"),
    }
}

/// Why a text is not a date [`parse_date`] takes; the message names the text and the reason
/// (`2027-02-31 is not a date: February 2027 has 28 days`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotADate(String);

/// Parses `YYYY-MM-DD` (midnight UTC) into a Unix time. A day the month does not have
/// (`2027-02-31`), a month past 12, another form than `YYYY-MM-DD` or a date before 1970 is
/// refused with a message that says which.
pub fn parse_date(s: &str) -> std::result::Result<u64, NotADate> {
    let s = s.trim();
    let bad = |why: &str| NotADate(format!("{s} is not a date: {why}"));
    // Exactly the extended form, digits only: jiff also reads ISO 8601's basic form and times.
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return Err(bad("give it as YYYY-MM-DD"));
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i16>().unwrap_or(0);
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    if !(1..=12).contains(&month) {
        return Err(bad(&format!("there is no month {month}")));
    }
    let first = jiff::civil::Date::new(year, month as i8, 1).map_err(|e| bad(&e.to_string()))?;
    let days = first.days_in_month();
    if day < 1 || day > i16::from(days) {
        return Err(bad(&format!(
            "{} {year} has {days} days",
            first.strftime("%B")
        )));
    }
    let date = first
        .with()
        .day(day as i8)
        .build()
        .map_err(|e| bad(&e.to_string()))?;
    midnight_utc(date).ok_or_else(|| bad("dates before 1970 are not accepted"))
}

/// Midnight UTC of a civil date, as a Unix time; `None` before 1970.
fn midnight_utc(d: jiff::civil::Date) -> Option<u64> {
    let ts = jiff::tz::TimeZone::UTC
        .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
        .ok()?;
    u64::try_from(ts.as_second()).ok()
}

/// The UTC year and month (1..=12) of a Unix time in seconds.
pub fn year_month(t: u64) -> (i16, i8) {
    utc(t).map_or((9999, 12), |d| (d.year(), d.month()))
}

/// The first second (UTC) of a month, as a Unix time; `None` for a month before 1970 or
/// past year 9999.
pub fn month_start(year: i16, month: i8) -> Option<u64> {
    midnight_utc(jiff::civil::Date::new(year, month, 1).ok()?)
}

/// Which process an object belongs to, across `fork` (issue 13, item 4).
///
/// A forked child is a copy of its parent's memory and shares its parent's open file
/// descriptions (and so their OFD locks: the local seats) and sockets (its license-server
/// connections). An object the runtime made in one process must therefore never act in
/// another: the handles of the C API, sessions and seats record their [`Owner`] and refuse
/// to work (`Error::Forked`) in any other process, and their destructors, run in a child,
/// only close the child's copies of their descriptors (no unlock, no release sent).
///
/// A child is recognised by its pid and by a fork generation that a `pthread_atfork` child
/// handler bumps: the pid alone can repeat (a child made after `unshare(CLONE_NEWPID)` by a
/// parent that is pid 1 of its own namespace is pid 1 too; a grandchild may get a reused
/// pid), and the generation alone misses a raw `clone` that skips the atfork handlers.
///
/// The same handlers keep the library's few process-wide locks from being copied into a
/// child while another thread holds them (a child cannot wait for a thread that does not
/// exist in it): a module registers a prepare handler that takes its locks and parks the
/// guards with [`hold_across_fork`]; the parent and child handlers release them with
/// [`release_held`]. Registration never waits for our own locks (a fork racing the first
/// registration is recognised by its pid), but `pthread_atfork` waits for glibc's atfork
/// lock, which a forking thread holds while the prepare handlers run: so [`Owner::current`]
/// and [`at_fork`] are never called with a lock held that a prepare handler takes.
pub mod process {
    use std::any::Any;
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use crate::{Error, Result};

    static GENERATION: AtomicU64 = AtomicU64::new(0);
    static REGISTERED: AtomicBool = AtomicBool::new(false);

    thread_local! {
        /// Guards the prepare handlers took in the forking thread, released after the fork.
        static HELD: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
    }

    unsafe extern "C" fn bump_generation() {
        GENERATION.fetch_add(1, Ordering::SeqCst);
    }

    unsafe extern "C" fn release_after_fork() {
        release_held();
    }

    /// Registers `prepare` (before every fork, in the forking thread) and `after` (in the
    /// parent and in the child after it), once per `flag`. Never waits: a fork while the
    /// registration is under way simply runs without these handlers.
    pub fn at_fork(flag: &'static AtomicBool, prepare: unsafe extern "C" fn()) {
        if flag.load(Ordering::Acquire) || flag.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: the handlers are `extern "C"`, never unwind (they only take and drop lock
        // guards and touch atomics), and live for the whole process.
        unsafe {
            libc::pthread_atfork(
                Some(prepare),
                Some(release_after_fork),
                Some(release_after_fork),
            )
        };
    }

    /// Keeps `guard` (a lock guard taken by a prepare handler) until the fork is over.
    pub fn hold_across_fork(guard: Box<dyn Any>) {
        let _ = HELD.try_with(|h| {
            if let Ok(mut h) = h.try_borrow_mut() {
                h.push(guard);
            }
        });
    }

    /// Drops the guards parked by [`hold_across_fork`] (in the parent and in the child).
    pub fn release_held() {
        let _ = HELD.try_with(|h| {
            if let Ok(mut h) = h.try_borrow_mut() {
                // Released in the reverse order of taking.
                while h.pop().is_some() {}
            }
        });
    }

    fn register() {
        if REGISTERED.load(Ordering::Acquire) || REGISTERED.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: `bump_generation` is an atomic add: async-signal-safe, never unwinds.
        unsafe { libc::pthread_atfork(None, None, Some(bump_generation)) };
    }

    fn pid() -> u32 {
        // SAFETY: getpid has no preconditions (and is not cached by glibc since 2.25, so
        // it is right in a child made by a raw clone too).
        unsafe { libc::getpid() as u32 }
    }

    #[cfg(test)]
    /// Forks (tests only); in the child runs `f` and exits with its code (no destructors, no test
    /// harness); returns the child's exit code (or 128 + the signal that killed it).
    pub(crate) fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child runs `f`, which only reads atomics, calls getpid and takes an
        // uncontended lock, then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = f();
            // SAFETY: leaves the child at once.
            unsafe { libc::_exit(code) };
        }
        let mut st = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        if libc::WIFEXITED(st) {
            libc::WEXITSTATUS(st)
        } else {
            128 + libc::WTERMSIG(st)
        }
    }

    /// The process an object was made in.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Owner {
        pid: u32,
        generation: u64,
    }

    impl Owner {
        /// This process.
        pub fn current() -> Owner {
            register();
            Owner {
                pid: pid(),
                generation: GENERATION.load(Ordering::SeqCst),
            }
        }

        /// Whether this is the process the object was made in (false in a forked child).
        pub fn is_current(&self) -> bool {
            self.generation == GENERATION.load(Ordering::SeqCst) && self.pid == pid()
        }

        /// `Error::Forked` naming `what` unless this is the owner process.
        pub fn check(&self, what: &str) -> Result<()> {
            if self.is_current() {
                return Ok(());
            }
            Err(Error::Forked(format!(
                "this {what} was opened by process {}, and this process ({}) is a fork of it; \
                 handles are per process: open a new session in this process",
                self.pid,
                pid()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use process::in_child;

    #[test]
    fn an_owner_is_current_only_in_its_own_process() {
        let o = process::Owner::current();
        assert!(o.is_current());
        assert!(o.check("session").is_ok());
        let code = in_child(|| match o.check("session") {
            Err(Error::Forked(m)) if m.contains("open a new session") => 0,
            _ => 1,
        });
        assert_eq!(code, 0, "the owner passed its check in a forked child");
        assert!(o.is_current(), "the parent still owns it");
        // A grandchild (forked from a child) is not the owner either.
        let code = in_child(|| in_child(|| if o.is_current() { 1 } else { 0 }));
        assert_eq!(code, 0);
    }

    #[test]
    fn a_lock_held_by_another_thread_at_fork_is_free_in_the_child() {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Mutex, mpsc};
        static LOCK: Mutex<()> = Mutex::new(());
        static HOOK: AtomicBool = AtomicBool::new(false);
        unsafe extern "C" fn prepare() {
            process::hold_across_fork(Box::new(
                LOCK.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ));
        }
        process::at_fork(&HOOK, prepare);
        let (taken, rx) = mpsc::channel();
        let holder = std::thread::spawn(move || {
            let _g = LOCK.lock().unwrap();
            taken.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        rx.recv().unwrap();
        // The fork waits for the holder to let go; without the hook the child would be
        // born with the lock held by a thread it does not have.
        let code = in_child(|| if LOCK.try_lock().is_ok() { 0 } else { 1 });
        assert_eq!(code, 0, "the child was born with the lock held");
        holder.join().unwrap();
        // Another test forking at this moment holds it for an instant in its own prepare.
        let free = (0..200).any(|_| {
            let ok = LOCK.try_lock().is_ok();
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            ok
        });
        assert!(free, "the parent did not release it after the fork");
    }

    #[test]
    fn dates_round_trip() {
        let t = parse_date("2027-03-01").unwrap();
        assert_eq!(format_time(t), "2027-03-01 00:00:00 UTC");
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date(" 2027-03-01 "), Ok(t));
        for bad in [
            "garbage",
            "20270301",
            "2027-03-01T12:00",
            "2027-3-01",
            "+027-03-01",
            "2027-03-0a",
            "",
        ] {
            let e = parse_date(bad).unwrap_err().to_string();
            assert!(
                e.ends_with("is not a date: give it as YYYY-MM-DD"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            parse_date("2024-13-01").unwrap_err().to_string(),
            "2024-13-01 is not a date: there is no month 13"
        );
        assert_eq!(
            parse_date("1969-12-31").unwrap_err().to_string(),
            "1969-12-31 is not a date: dates before 1970 are not accepted"
        );
    }

    #[test]
    fn a_day_the_month_does_not_have_is_no_date() {
        assert_eq!(
            parse_date("2027-02-31").unwrap_err().to_string(),
            "2027-02-31 is not a date: February 2027 has 28 days"
        );
        assert_eq!(
            parse_date("2024-02-30").unwrap_err().to_string(),
            "2024-02-30 is not a date: February 2024 has 29 days"
        );
        assert!(parse_date("2027-02-29").is_err());
        assert_eq!(
            parse_date("2027-04-31").unwrap_err().to_string(),
            "2027-04-31 is not a date: April 2027 has 30 days"
        );
        assert!(parse_date("2027-04-00").is_err());
        // Leap days are days.
        let leap = parse_date("2028-02-29").unwrap();
        assert_eq!(format_time(leap + 86_399), "2028-02-29 23:59:59 UTC");
        assert_eq!(format_time(leap + 86_400), "2028-03-01 00:00:00 UTC");
    }

    #[test]
    fn months_begin_and_end_where_the_calendar_says() {
        let t = parse_date("2027-01-31").unwrap() + 86_399;
        assert_eq!(year_month(t), (2027, 1));
        assert_eq!(year_month(t + 1), (2027, 2));
        assert_eq!(month_start(2027, 2), Some(t + 1));
        assert_eq!(month_start(2027, 13), None);
        assert_eq!(month_start(1969, 12), None);
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(format_time(u64::MAX), format!("@{}", u64::MAX));
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
