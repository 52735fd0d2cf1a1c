//! The server's process as `/proc` shows it (CPU time, RSS, threads), and the machine's
//! load average.

pub(crate) struct Proc {
    pub(crate) pid: u32,
}

impl Proc {
    /// utime + stime in seconds.
    fn cpu_s(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let rest = &s[s.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the command: field 3 (state) is f[0]; utime is field 14, stime 15.
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Some(ticks as f64 / hz)
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
    pub(crate) fn kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    fn threads(&self) -> Option<u64> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .ok()
            .map(|d| d.count() as u64)
    }
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub(crate) struct Sample {
    pub(crate) cpu_s: f64,
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
    pub(crate) threads: u64,
}

pub(crate) fn sample(p: &Proc) -> Sample {
    Sample {
        cpu_s: p.cpu_s().unwrap_or(0.0),
        rss_kib: p.kib("VmRSS").unwrap_or(0),
        hwm_kib: p.kib("VmHWM").unwrap_or(0),
        threads: p.threads().unwrap_or(0),
    }
}
