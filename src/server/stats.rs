//! The server's counters ([`Stats`]): connections, requests, grants, renewals, denials by
//! status, request latency by kind. The daemon counts; the admin API reads them
//! (`/api/v1/status`, and `GET /metrics`, whose Prometheus text `admin::metrics` writes).
//!
//! Everything the license protocol's hot path touches is a relaxed atomic: a request costs
//! two clock reads and a few atomic adds. Seats in use and quantities are read from the seat
//! table when `/metrics` is scraped, not kept on the side. A refused seat request also goes
//! into [`RecentDenials`], a bounded ring under a mutex (refusals are not the hot path).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::net::proto::{NetRequest, NetResponse};
use crate::status::Status;

/// Counters the admin API, `/metrics` and the load tool read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections accepted since the start.
    pub accepted: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Connections refused (limit) or dropped (bad frames, timeouts).
    pub refused: AtomicU64,
    /// Seats granted (acquires answered with a grant, re-attachments included).
    pub grants: AtomicU64,
    /// Renewal requests answered.
    pub renewals: AtomicU64,
    /// Seats a renewal reported lost to its client.
    pub renewals_lost: AtomicU64,
    /// Releases answered.
    pub releases: AtomicU64,
    /// Seats whose lease ran out.
    pub lease_expiries: AtomicU64,
    /// Seats an admin revoked.
    pub revocations: AtomicU64,
    /// Seats lent (borrows answered with a grant, retries included).
    pub borrows: AtomicU64,
    /// Borrowed seats given back early.
    pub returns: AtomicU64,
    /// Configuration reloads done.
    pub reloads: AtomicU64,
    /// Error answers, by status.
    pub denials: Denials,
    /// The latest refused seat requests (who was refused what, when, why).
    pub recent_denials: RecentDenials,
    /// Seats revoked lately, and why.
    pub revoked: Revoked,
    /// License-protocol request latency, by kind.
    pub latency: RequestLatency,
}

impl Stats {
    /// Counts what an answer says: grants, renewals (and seats they report lost), releases,
    /// denials by status.
    pub fn count_answer(&self, resp: &NetResponse) {
        match resp {
            NetResponse::Granted(_) => {
                self.grants.fetch_add(1, Ordering::Relaxed);
            }
            NetResponse::Renewed { lost, .. } => self.count_renewal(lost.len()),
            NetResponse::RenewedWhy { lost, .. } => self.count_renewal(lost.len()),
            NetResponse::Released => {
                self.releases.fetch_add(1, Ordering::Relaxed);
            }
            NetResponse::Borrowed { .. } => {
                self.borrows.fetch_add(1, Ordering::Relaxed);
            }
            NetResponse::Returned => {
                self.returns.fetch_add(1, Ordering::Relaxed);
            }
            NetResponse::Error { status, .. } => self.denials.add(*status),
            _ => {}
        }
    }
}

impl Stats {
    fn count_renewal(&self, lost: usize) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
        if lost > 0 {
            self.renewals_lost.fetch_add(lost as u64, Ordering::Relaxed);
        }
    }
}

/// Seats an admin revoked lately, with the reason given, so that the renewal which reports
/// one lost (and a call on it) can say it was revoked: at most [`Revoked::CAPACITY`], the
/// oldest forgotten first (a client learns of a revoke within one renewal interval).
#[derive(Debug, Default)]
pub struct Revoked {
    inner: Mutex<RevokedSeats>,
}

#[derive(Debug, Default)]
struct RevokedSeats {
    reasons: std::collections::HashMap<[u8; 16], String>,
    /// Oldest first.
    order: VecDeque<[u8; 16]>,
}

impl Revoked {
    /// How many revoked seats are remembered.
    pub const CAPACITY: usize = 4096;

    /// Remembers that `seat_id` was revoked, and why.
    pub fn add(&self, seat_id: [u8; 16], reason: &str) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let RevokedSeats { reasons, order } = &mut *g;
        if reasons.insert(seat_id, reason.to_string()).is_none() {
            if order.len() == Self::CAPACITY
                && let Some(old) = order.pop_front()
            {
                reasons.remove(&old);
            }
            order.push_back(seat_id);
        }
    }

    /// The reason `seat_id` was revoked, if it was (lately).
    pub fn reason(&self, seat_id: &[u8; 16]) -> Option<String> {
        self.inner.lock().ok()?.reasons.get(seat_id).cloned()
    }
}

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
    /// `Licenses`.
    Licenses,
    /// Borrow a seat.
    Borrow,
    /// Return a borrowed seat.
    Return,
    /// `SeatKey`.
    SeatKey,
    /// A frame that did not decode as a request.
    Malformed,
}

impl RequestKind {
    /// Every kind, in label order.
    pub const ALL: [RequestKind; 13] = [
        RequestKind::Acquire,
        RequestKind::Renew,
        RequestKind::Release,
        RequestKind::DeriveKey,
        RequestKind::Encrypt,
        RequestKind::Decrypt,
        RequestKind::SeatInfo,
        RequestKind::Ping,
        RequestKind::Licenses,
        RequestKind::Borrow,
        RequestKind::Return,
        RequestKind::SeatKey,
        RequestKind::Malformed,
    ];

    /// The kind of a request.
    pub fn of(req: &NetRequest) -> RequestKind {
        match req {
            NetRequest::Acquire { .. } => RequestKind::Acquire,
            NetRequest::Renew { .. } | NetRequest::RenewWhy { .. } => RequestKind::Renew,
            NetRequest::Release { .. } => RequestKind::Release,
            NetRequest::DeriveKey { .. } => RequestKind::DeriveKey,
            NetRequest::Encrypt { .. } => RequestKind::Encrypt,
            NetRequest::Decrypt { .. } => RequestKind::Decrypt,
            NetRequest::SeatInfo { .. } => RequestKind::SeatInfo,
            NetRequest::Ping => RequestKind::Ping,
            NetRequest::Licenses { .. } => RequestKind::Licenses,
            NetRequest::Borrow { .. } => RequestKind::Borrow,
            NetRequest::Return { .. } => RequestKind::Return,
            NetRequest::SeatKey { .. } => RequestKind::SeatKey,
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
            RequestKind::Licenses => "licenses",
            RequestKind::Borrow => "borrow",
            RequestKind::Return => "return",
            RequestKind::SeatKey => "seat_key",
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

/// A latency histogram (one request kind's, one kind of etcd call's): counts per bucket (not
/// cumulative; the exposition sums them), the sum in nanoseconds and the count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// What was recorded so far.
    pub fn counts(&self) -> LatencyCounts {
        LatencyCounts {
            count: self.count.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// Request latency by kind, from the frame read to the answer encoded.
#[derive(Debug, Default)]
pub struct RequestLatency {
    kinds: [Histogram; RequestKind::ALL.len()],
}

impl RequestLatency {
    /// Records one request.
    pub fn observe(&self, kind: RequestKind, took: Duration) {
        self.kinds[kind.index()].observe(took);
    }

    /// How many requests of `kind` were recorded.
    pub fn count(&self, kind: RequestKind) -> u64 {
        self.kinds[kind.index()].count.load(Ordering::Relaxed)
    }

    /// What was recorded for `kind` so far.
    pub fn counts(&self, kind: RequestKind) -> LatencyCounts {
        self.kinds[kind.index()].counts()
    }
}

/// One request kind's latency histogram as read: requests per bucket of [`LATENCY_BUCKETS`]
/// and `+Inf` (not cumulative), their sum in nanoseconds and their count.
#[derive(Clone, Debug)]
pub struct LatencyCounts {
    /// Requests recorded.
    pub count: u64,
    /// Requests per bucket, the last one `+Inf`.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// The sum of their latencies, in nanoseconds.
    pub sum_ns: u64,
}

/// Error answers by status (the `reason` label).
#[derive(Debug, Default)]
pub struct Denials {
    counts: [AtomicU64; Status::ALL.len()],
    other: AtomicU64,
}

impl Denials {
    /// Counts one error answer with this status number.
    pub fn add(&self, status: u32) {
        match Status::ALL.iter().position(|s| s.code() == status) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.other.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// `(reason, count)` for every reason seen at least once.
    pub fn by_reason(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Status::ALL
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

/// One refused seat request (an acquire or a borrow answered with an error), as the admin
/// API's denials view shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Denial {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// The publisher asked for.
    pub vendor_id: u32,
    /// The product asked for.
    pub product_code: u32,
    /// The feature bits asked for.
    pub features: u32,
    /// The client's host name (from its hello).
    pub host: String,
    /// Its login session (`uid:<uid>/…`, from its hello).
    pub session: String,
    /// The client process.
    pub pid: u32,
    /// The status number of the answer.
    pub status: u32,
    /// The answer's message.
    pub message: String,
}

/// The most recent refused seat requests, at most [`RecentDenials::CAPACITY`] (the oldest
/// go first), and refusals per product since the start (for `tessera_product_denials_total`).
#[derive(Debug, Default)]
pub struct RecentDenials {
    inner: Mutex<DenialLog>,
}

#[derive(Debug, Default)]
struct DenialLog {
    ring: VecDeque<Denial>,
    per_product: BTreeMap<(u32, u32), u64>,
    total: u64,
}

impl RecentDenials {
    /// How many refusals the ring keeps.
    pub const CAPACITY: usize = 500;

    /// Records a refusal.
    pub fn record(&self, d: Denial) {
        let Ok(mut log) = self.inner.lock() else {
            return;
        };
        *log.per_product
            .entry((d.vendor_id, d.product_code))
            .or_default() += 1;
        log.total += 1;
        if log.ring.len() == Self::CAPACITY {
            log.ring.pop_front();
        }
        log.ring.push_back(d);
    }

    /// The refusals kept, newest first, and how many there were since the start.
    pub fn latest(&self) -> (Vec<Denial>, u64) {
        match self.inner.lock() {
            Ok(log) => (log.ring.iter().rev().cloned().collect(), log.total),
            Err(_) => (Vec::new(), 0),
        }
    }

    /// Refusals per product `(vendor, product)` since the start.
    pub fn per_product(&self) -> BTreeMap<(u32, u32), u64> {
        self.inner
            .lock()
            .map(|l| l.per_product.clone())
            .unwrap_or_default()
    }
}

/// `TESSERA_E_NO_SEAT` → `no_seat`.
pub fn reason(s: Status) -> String {
    let name = s.name();
    name.strip_prefix("TESSERA_E_")
        .or_else(|| name.strip_prefix("TESSERA_"))
        .unwrap_or(name)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(at_ms: u64, product_code: u32) -> Denial {
        Denial {
            at_ms,
            vendor_id: 7,
            product_code,
            features: 0,
            host: "h".into(),
            session: "uid:1000/x".into(),
            pid: 1,
            status: Status::NoSeat.code(),
            message: "no seat".into(),
        }
    }

    #[test]
    fn the_denial_ring_keeps_the_latest_and_counts_them_all() {
        let r = RecentDenials::default();
        let n = RecentDenials::CAPACITY as u64 + 3;
        for i in 0..n {
            r.record(denial(i, if i % 2 == 0 { 1 } else { 2 }));
        }
        let (list, total) = r.latest();
        assert_eq!(total, n);
        assert_eq!(list.len(), RecentDenials::CAPACITY);
        assert_eq!(list[0].at_ms, n - 1, "newest first");
        assert_eq!(list.last().unwrap().at_ms, 3, "the oldest went first");
        let per = r.per_product();
        assert_eq!(per[&(7, 1)] + per[&(7, 2)], n);
        assert_eq!(per[&(7, 1)], n.div_ceil(2));
    }

    #[test]
    fn revoked_seats_are_remembered_with_their_reason_and_the_oldest_forgotten() {
        let r = Revoked::default();
        r.add([1; 16], "left the company");
        assert_eq!(r.reason(&[1; 16]).as_deref(), Some("left the company"));
        assert_eq!(r.reason(&[2; 16]), None);
        for i in 0..Revoked::CAPACITY as u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&(i + 10).to_le_bytes());
            r.add(id, "");
        }
        assert_eq!(r.reason(&[1; 16]), None, "the oldest went first");
    }

    #[test]
    fn denials_are_labelled_by_status() {
        let d = Denials::default();
        d.add(Status::NoSeat.code());
        d.add(Status::NoSeat.code());
        d.add(4242);
        assert_eq!(
            d.by_reason(),
            vec![("no_seat".to_string(), 2), ("other".to_string(), 1)]
        );
    }
}
