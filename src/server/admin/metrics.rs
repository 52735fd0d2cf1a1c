//! The server's counters and the Prometheus text exposition of them (`GET /metrics`).
//!
//! Everything the license protocol's hot path touches is a relaxed atomic: a request costs
//! two clock reads and a few atomic adds. Seats in use and quantities are read from the seat
//! table when `/metrics` is scraped, not kept on the side.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ffi::status::{ALL, tessera_status};
use crate::net::proto::{NetRequest, NetResponse};

/// What a license-protocol request asked for (the `kind` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `Acquire`.
    Acquire,
    /// `Renew`.
    Renew,
    /// `Release`.
    Release,
    /// `DeriveKey`.
    DeriveKey,
    /// `Encrypt`.
    Encrypt,
    /// `Decrypt`.
    Decrypt,
    /// `SeatInfo`.
    SeatInfo,
    /// `Ping`.
    Ping,
    /// A frame that did not decode as a request.
    Malformed,
}

impl RequestKind {
    /// Every kind, in label order.
    pub const ALL: [RequestKind; 9] = [
        RequestKind::Acquire,
        RequestKind::Renew,
        RequestKind::Release,
        RequestKind::DeriveKey,
        RequestKind::Encrypt,
        RequestKind::Decrypt,
        RequestKind::SeatInfo,
        RequestKind::Ping,
        RequestKind::Malformed,
    ];

    /// The kind of a request.
    pub fn of(req: &NetRequest) -> RequestKind {
        match req {
            NetRequest::Acquire { .. } => RequestKind::Acquire,
            NetRequest::Renew { .. } => RequestKind::Renew,
            NetRequest::Release { .. } => RequestKind::Release,
            NetRequest::DeriveKey { .. } => RequestKind::DeriveKey,
            NetRequest::Encrypt { .. } => RequestKind::Encrypt,
            NetRequest::Decrypt { .. } => RequestKind::Decrypt,
            NetRequest::SeatInfo { .. } => RequestKind::SeatInfo,
            NetRequest::Ping => RequestKind::Ping,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RequestKind::Acquire => "acquire",
            RequestKind::Renew => "renew",
            RequestKind::Release => "release",
            RequestKind::DeriveKey => "derive_key",
            RequestKind::Encrypt => "encrypt",
            RequestKind::Decrypt => "decrypt",
            RequestKind::SeatInfo => "seat_info",
            RequestKind::Ping => "ping",
            RequestKind::Malformed => "malformed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the latency buckets, in seconds (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One request kind's histogram: counts per bucket (not cumulative; the exposition sums
/// them), the sum in nanoseconds and the count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// Request latency by kind, from the frame read to the answer encoded.
#[derive(Debug, Default)]
pub struct RequestLatency {
    kinds: [Histogram; RequestKind::ALL.len()],
}

impl RequestLatency {
    /// Records one request.
    pub fn observe(&self, kind: RequestKind, took: Duration) {
        let h = &self.kinds[kind.index()];
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        h.buckets[i].fetch_add(1, Ordering::Relaxed);
        h.sum_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        h.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests of `kind` were recorded.
    pub fn count(&self, kind: RequestKind) -> u64 {
        self.kinds[kind.index()].count.load(Ordering::Relaxed)
    }
}

/// Error answers by status (the `reason` label).
#[derive(Debug, Default)]
pub struct Denials {
    counts: [AtomicU64; ALL.len()],
    other: AtomicU64,
}

impl Denials {
    /// Counts one error answer with this status number.
    pub fn add(&self, status: u32) {
        match ALL.iter().position(|s| *s as u32 == status) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.other.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// `(reason, count)` for every reason seen at least once.
    pub fn by_reason(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = ALL
            .iter()
            .zip(&self.counts)
            .map(|(s, n)| (reason(*s), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let other = self.other.load(Ordering::Relaxed);
        if other > 0 {
            out.push(("other".into(), other));
        }
        out
    }
}

/// `TESSERA_E_NO_SEAT` → `no_seat`.
pub fn reason(s: tessera_status) -> String {
    let name = format!("{s:?}");
    name.strip_prefix("TESSERA_E_")
        .or_else(|| name.strip_prefix("TESSERA_"))
        .unwrap_or(&name)
        .to_ascii_lowercase()
}

/// Counts what an answer says: grants, renewals (and seats they report lost), releases,
/// denials by status.
pub fn count_answer(stats: &super::super::daemon::Stats, resp: &NetResponse) {
    match resp {
        NetResponse::Granted(_) => {
            stats.grants.fetch_add(1, Ordering::Relaxed);
        }
        NetResponse::Renewed { lost, .. } => {
            stats.renewals.fetch_add(1, Ordering::Relaxed);
            if !lost.is_empty() {
                stats
                    .renewals_lost
                    .fetch_add(lost.len() as u64, Ordering::Relaxed);
            }
        }
        NetResponse::Released => {
            stats.releases.fetch_add(1, Ordering::Relaxed);
        }
        NetResponse::Error { status, .. } => stats.denials.add(*status),
        _ => {}
    }
}

/// A Prometheus text-format document being written.
pub struct Exposition {
    out: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

impl Exposition {
    /// An empty document.
    pub fn new() -> Exposition {
        Exposition { out: String::new() }
    }

    /// `# HELP` and `# TYPE` lines of a metric family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample, with labels (`(name, value)`; values are escaped).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A metric with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The request latency histogram family.
    pub fn latency(&mut self, name: &str, help: &str, l: &RequestLatency) {
        self.family(name, "histogram", help);
        for kind in RequestKind::ALL {
            let h = &l.kinds[kind.index()];
            let count = h.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0u64;
            let bucket = format!("{name}_bucket");
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n.load(Ordering::Relaxed);
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| number(*b));
                self.sample(
                    &bucket,
                    &[("kind", kind.label()), ("le", &le)],
                    cumulative as f64,
                );
            }
            let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            self.sample(&format!("{name}_sum"), &[("kind", kind.label())], sum);
            self.sample(
                &format!("{name}_count"),
                &[("kind", kind.label())],
                cumulative as f64,
            );
        }
    }

    /// The document.
    pub fn finish(self) -> String {
        self.out
    }
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_request() {
        let l = RequestLatency::default();
        l.observe(RequestKind::Acquire, Duration::from_micros(50));
        l.observe(RequestKind::Acquire, Duration::from_micros(700));
        l.observe(RequestKind::Acquire, Duration::from_secs(10));
        l.observe(RequestKind::Renew, Duration::from_micros(300));
        let mut e = Exposition::new();
        e.latency("t_seconds", "test", &l);
        let text = e.finish();
        assert!(text.contains("# TYPE t_seconds histogram"), "{text}");
        assert!(text.contains("t_seconds_bucket{kind=\"acquire\",le=\"0.0001\"} 1\n"));
        assert!(text.contains("t_seconds_bucket{kind=\"acquire\",le=\"0.001\"} 2\n"));
        assert!(text.contains("t_seconds_bucket{kind=\"acquire\",le=\"2.5\"} 2\n"));
        assert!(text.contains("t_seconds_bucket{kind=\"acquire\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("t_seconds_count{kind=\"acquire\"} 3\n"));
        assert!(text.contains("t_seconds_bucket{kind=\"renew\",le=\"0.0005\"} 1\n"));
        assert!(
            !text.contains("kind=\"ping\""),
            "kinds never seen are left out"
        );
        assert_eq!(l.count(RequestKind::Acquire), 3);
    }

    #[test]
    fn denials_are_labelled_by_status_and_labels_are_escaped() {
        let d = Denials::default();
        d.add(tessera_status::TESSERA_E_NO_SEAT as u32);
        d.add(tessera_status::TESSERA_E_NO_SEAT as u32);
        d.add(4242);
        assert_eq!(
            d.by_reason(),
            vec![("no_seat".to_string(), 2), ("other".to_string(), 1)]
        );
        let mut e = Exposition::new();
        e.sample("m", &[("product", "a \"b\"\\\n")], 1.5);
        assert_eq!(e.finish(), "m{product=\"a \\\"b\\\"\\\\\\n\"} 1.5\n");
    }
}
