//! What a run measures (latencies by request, errors by kind, frame sizes, the server's use)
//! and how it is printed.

use std::collections::BTreeMap;

use tessera::net::proto::NetResponse;

use crate::client::Op;
use crate::server_proc::Sample;
use crate::{Mode, RunArgs};

/// A short name for an error's kind: its variant.
pub(crate) fn kind(e: &tessera::Error) -> String {
    let d = format!("{e:?}");
    d.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_string()
}

pub(crate) fn kind_of_response(r: &NetResponse) -> String {
    let d = format!("{r:?}");
    d.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_string()
}

#[derive(Default)]
pub(crate) struct Tally {
    /// Latencies in nanoseconds by operation.
    pub(crate) lat: BTreeMap<Op, Vec<u64>>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) connected: usize,
    pub(crate) connect_ns: Vec<u64>,
    /// Seats the server said were lost in a Renew.
    pub(crate) lost: u64,
    /// Frame sizes of the first Acquire and its answer.
    pub(crate) acquire_frame: Option<(usize, usize)>,
    pub(crate) release_frame: Option<(usize, usize)>,
    pub(crate) renew_frame: Option<(usize, usize)>,
}

impl Tally {
    pub(crate) fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, o: Tally) {
        for (op, v) in o.lat {
            self.lat.entry(op).or_default().extend(v);
        }
        for (k, n) in o.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.connected += o.connected;
        self.connect_ns.extend(o.connect_ns);
        self.lost += o.lost;
        self.acquire_frame = self.acquire_frame.or(o.acquire_frame);
        self.release_frame = self.release_frame.or(o.release_frame);
        self.renew_frame = self.renew_frame.or(o.renew_frame);
    }
}

pub(crate) struct ServerUse {
    pub(crate) cpu_pct: f64,
    pub(crate) rss_start_kib: u64,
    pub(crate) rss_end_kib: u64,
    pub(crate) rss_peak_kib: u64,
    pub(crate) rss_hwm_kib: u64,
    pub(crate) threads: u64,
    pub(crate) samples: usize,
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) connect_s: f64,
    pub(crate) fill_s: Option<f64>,
    pub(crate) measured_s: f64,
    pub(crate) after_connect: Option<Sample>,
    pub(crate) load: (String, String),
    pub(crate) server: Option<ServerUse>,
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

pub(crate) fn print_latency(what: &str, sorted: &[u64]) {
    println!(
        "{what}: n={} p50 {} p90 {} p99 {} p99.9 {} max {}",
        sorted.len(),
        us(percentile(sorted, 50.0)),
        us(percentile(sorted, 90.0)),
        us(percentile(sorted, 99.0)),
        us(percentile(sorted, 99.9)),
        us(sorted.last().copied().unwrap_or(0)),
    );
}

pub(crate) fn print_report(a: &RunArgs, t: &Tally, r: &Report) {
    let mut hs = t.connect_ns.clone();
    hs.sort_unstable();
    println!(
        "connected {}/{} clients in {:.2} s ({:.0} handshakes/s)",
        t.connected,
        a.clients,
        r.connect_s,
        t.connected as f64 / r.connect_s.max(1e-9)
    );
    print_latency("connect+handshake", &hs);
    if let Some(s) = &r.after_connect {
        println!(
            "server after connecting: RSS {:.1} MiB, {} threads",
            s.rss_kib as f64 / 1024.0,
            s.threads
        );
    }
    if let Some(f) = r.fill_s {
        let n = t.lat.get(&Op::Acquire).map_or(0, |v| v.len());
        println!(
            "acquired {n} seats in {f:.2} s ({:.0} acquires/s)",
            n as f64 / f.max(1e-9)
        );
    }
    let mut all = Vec::new();
    for (op, v) in &t.lat {
        let mut v = v.clone();
        v.sort_unstable();
        print_latency(&format!("{op:?}"), &v);
        if a.mode == Mode::Cycle || *op == Op::Renew {
            all.extend(v);
        }
    }
    all.sort_unstable();
    let secs = r.measured_s.max(1e-9);
    match a.mode {
        Mode::Cycle => {
            println!(
                "seat ops (acquire + release) in {secs:.2} s: {} = {:.0} ops/s",
                all.len(),
                all.len() as f64 / secs
            );
            print_latency("all seat ops", &all);
        }
        Mode::Hold => {
            let seats: usize = t.lat.get(&Op::Acquire).map_or(0, |v| v.len());
            println!(
                "renewals in {secs:.2} s: {} = {:.1}/s, seats held {seats}, seats reported lost {}",
                all.len(),
                all.len() as f64 / secs,
                t.lost
            );
        }
    }
    for (name, f) in [
        ("Acquire", t.acquire_frame),
        ("Release", t.release_frame),
        ("Renew", t.renew_frame),
    ] {
        if let Some((q, p)) = f {
            println!("frame sizes {name}: request {q} B, response {p} B (with the 4-byte length)");
        }
    }
    if t.errors.is_empty() {
        println!("errors: none");
    } else {
        for (k, n) in &t.errors {
            println!("errors: {k}: {n}");
        }
    }
    if let Some(s) = &r.server {
        println!(
            "server over {secs:.1} s: CPU {:.1}% of one core; RSS start {:.1} MiB, end {:.1} MiB, peak {:.1} MiB ({} samples), VmHWM {:.1} MiB; {} threads",
            s.cpu_pct,
            s.rss_start_kib as f64 / 1024.0,
            s.rss_end_kib as f64 / 1024.0,
            s.rss_peak_kib as f64 / 1024.0,
            s.samples,
            s.rss_hwm_kib as f64 / 1024.0,
            s.threads
        );
    }
    println!("load average: before {}, after {}", r.load.0, r.load.1);
}
