//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), read from `/proc/self` when `/metrics`
//! is scraped, as the Prometheus client libraries' process collectors read them.

use std::path::Path;

/// What `/proc` says about a process. A field that could not be read is `None` and its
/// metric is left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started (Unix seconds).
    pub start_time_seconds: Option<f64>,
}

/// The fields of `/proc/<pid>/stat` the metrics use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    start_ticks: u64,
    /// vsize, in bytes.
    vsize: u64,
    /// rss, in pages.
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat` (proc(5)): the command name in parentheses may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Fields from 3 (state) on; field N is rest[N - 3].
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: num(14)?.checked_add(num(15)?)?,
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// The boot time (Unix seconds) from `/proc/stat`'s `btime` line.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of `Max open files` from `/proc/<pid>/limits` (`None` when unlimited).
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads the metrics of the process whose `/proc` directory is `proc_pid` (`/proc/self`),
/// with `/proc/stat` at `proc_stat`.
pub fn read(proc_pid: &Path, proc_stat: &Path) -> ProcessStats {
    // SAFETY: sysconf only reads a configuration value.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let tick = u64::try_from(tick).ok().filter(|t| *t > 0);
    let page = u64::try_from(page).ok().filter(|p| *p > 0);
    let stat = std::fs::read_to_string(proc_pid.join("stat"))
        .ok()
        .and_then(|t| parse_stat(&t));
    let btime = std::fs::read_to_string(proc_stat)
        .ok()
        .and_then(|t| parse_btime(&t));
    let open_fds = std::fs::read_dir(proc_pid.join("fd"))
        .ok()
        // As the Prometheus clients count: the directory handle being read is among them.
        .map(|d| d.count() as u64);
    let max_fds = std::fs::read_to_string(proc_pid.join("limits"))
        .ok()
        .and_then(|t| parse_max_fds(&t));
    ProcessStats {
        cpu_seconds: stat.zip(tick).map(|(s, t)| s.cpu_ticks as f64 / t as f64),
        resident_bytes: stat.zip(page).and_then(|(s, p)| s.rss_pages.checked_mul(p)),
        virtual_bytes: stat.map(|s| s.vsize),
        open_fds,
        max_fds,
        start_time_seconds: match (stat, tick, btime) {
            (Some(s), Some(t), Some(b)) => Some(b as f64 + s.start_ticks as f64 / t as f64),
            _ => None,
        },
    }
}

/// This process's metrics.
pub fn this_process() -> ProcessStats {
    read(Path::new("/proc/self"), Path::new("/proc/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (tessera (srv) x) S 1 4242 4242 0 -1 4194560 1529 0 0 0 \
                        150 50 0 0 20 0 9 0 12345 987654321 2048 18446744073709551615 \
                        1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                cpu_ticks: 200,
                start_ticks: 12345,
                vsize: 987_654_321,
                rss_pages: 2048,
            })
        );
        assert_eq!(parse_stat("4242 (cut"), None);
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn boot_time_and_the_fd_limit_are_read_from_their_lines() {
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63408                63408                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[test]
    fn a_fake_proc_directory_gives_the_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("pid");
        std::fs::create_dir_all(pid.join("fd")).unwrap();
        for i in 0..3 {
            std::fs::write(pid.join("fd").join(i.to_string()), b"").unwrap();
        }
        std::fs::write(pid.join("stat"), STAT).unwrap();
        std::fs::write(
            pid.join("limits"),
            "Max open files            4096                 4096                 files\n",
        )
        .unwrap();
        let stat = dir.path().join("stat");
        std::fs::write(&stat, "btime 1000\n").unwrap();
        let s = read(&pid, &stat);
        // SAFETY: sysconf only reads a configuration value.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        assert_eq!(s.cpu_seconds, Some(200.0 / tick));
        assert_eq!(s.resident_bytes, Some(2048 * page));
        assert_eq!(s.virtual_bytes, Some(987_654_321));
        assert_eq!(s.open_fds, Some(3));
        assert_eq!(s.max_fds, Some(4096));
        assert_eq!(s.start_time_seconds, Some(1000.0 + 12345.0 / tick));
    }

    #[test]
    fn this_process_has_every_metric() {
        let s = this_process();
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0), "{s:?}");
        assert!(s.resident_bytes.is_some_and(|r| r > 0), "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "stdio at least: {s:?}");
        assert!(s.max_fds >= s.open_fds, "{s:?}");
        assert!(s.start_time_seconds.is_some_and(|t| t > 1e9), "{s:?}");
    }
}
