//! The Prometheus text exposition (`GET /metrics`) of the server's counters
//! (`server::stats`), the seat table's and the committer's.

use std::fmt::Write as _;

use crate::server::stats::{LATENCY_BUCKETS, LatencyCounts, RequestKind, RequestLatency};

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
            let h = l.counts(kind);
            if h.count == 0 {
                continue;
            }
            let mut cumulative = 0u64;
            let bucket = format!("{name}_bucket");
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| number(*b));
                self.sample(
                    &bucket,
                    &[("kind", kind.label()), ("le", &le)],
                    cumulative as f64,
                );
            }
            let sum = h.sum_ns as f64 / 1e9;
            self.sample(&format!("{name}_sum"), &[("kind", kind.label())], sum);
            self.sample(
                &format!("{name}_count"),
                &[("kind", kind.label())],
                cumulative as f64,
            );
        }
    }

    /// One histogram's samples (cumulative buckets of [`LATENCY_BUCKETS`], `_sum` in
    /// seconds, `_count`) with `labels`; the family's lines come from [`Exposition::family`].
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &LatencyCounts) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| number(*b));
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum_ns as f64 / 1e9);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
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
    use std::time::Duration;

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
    fn a_labelled_histogram_is_cumulative_with_its_labels() {
        let h = crate::server::stats::Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(700));
        let mut e = Exposition::new();
        e.histogram("p_seconds", &[("member", "m1"), ("op", "txn")], &h.counts());
        let text = e.finish();
        assert!(text.contains("p_seconds_bucket{member=\"m1\",op=\"txn\",le=\"0.0001\"} 1\n"));
        assert!(text.contains("p_seconds_bucket{member=\"m1\",op=\"txn\",le=\"0.001\"} 2\n"));
        assert!(text.contains("p_seconds_bucket{member=\"m1\",op=\"txn\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("p_seconds_count{member=\"m1\",op=\"txn\"} 2\n"));
    }

    #[test]
    fn labels_are_escaped() {
        let mut e = Exposition::new();
        e.sample("m", &[("product", "a \"b\"\\\n")], 1.5);
        assert_eq!(e.finish(), "m{product=\"a \\\"b\\\"\\\\\\n\"} 1.5\n");
    }
}
