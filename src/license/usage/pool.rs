//! A license-server pool's usage: the logs of all its members summed per product and month
//! without counting a seat twice.
//!
//! Each member of a pool keeps its own usage log (its own chain, its own checkpoints). A
//! client whose member dies or is cut off re-attaches its seats to another member with the
//! seat ids it has, so one seat can appear in two logs: granted in the first, held until
//! that log ends (or expired there late), granted again in the second by the re-attach and
//! released there. A seat id names one seat from its acquire to its release (the client
//! draws it at random for each acquire and keeps it across reconnects), so the logs are
//! merged per seat id:
//!
//! - each log gives every seat it saw a [`SeatSpan`]: from its grant (or borrow) to its
//!   release, expiry, revoke, return, or the log's end;
//! - the spans of one seat id from all logs are joined where they overlap, and where the
//!   earlier one ran to the end of its log (its member stopped or died holding it: the next
//!   span of the same seat is its re-attach); a span that begins with an end (a release in
//!   a log that never saw the grant) joins the span before it;
//! - the joined seats are replayed in time order through the same bookkeeping a single log
//!   uses ([`Tally`]): one grant per joined seat, one end, the peak of distinct counting
//!   units across the pool, and seat time per unit without overlaps;
//! - denials are summed from the logs as they are (each refusal happened on one member).
//!
//! One log given alone sums up exactly as [`verify`](super::verify) does.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use super::log::{Event, ScanError, SeatEvent, scan};
use super::report::{MonthIndex, MonthSummary, Report, Tally, month_of};

/// How a seat's span in one log began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanStart {
    /// A grant.
    Grant,
    /// A borrow, held until `until_ms` at the latest.
    Borrow {
        /// The borrowed seat's end (Unix milliseconds).
        until_ms: u64,
    },
    /// Before the log began: the log saw only its end.
    BeforeLog,
}

/// How a seat's span in one log ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanEnd {
    /// Its client released it.
    Release,
    /// Its lease ran out.
    Expire,
    /// An admin revoked it.
    Revoke,
    /// A borrowed seat given back.
    Return,
    /// A borrowed seat whose end came before the log's (its expiry not logged yet).
    BorrowEnded,
    /// Still held when the log ends.
    LogEnd,
}

/// One seat in one log: when the log saw it begin and end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatSpan {
    /// The seat id.
    pub seat_id: [u8; 16],
    /// The product.
    pub product_code: u32,
    /// The license.
    pub license_id: [u8; 16],
    /// What the license's counting unit counts.
    pub unit_key: String,
    /// How it began here.
    pub start: SpanStart,
    /// When (Unix milliseconds; for [`SpanStart::BeforeLog`], its end).
    pub start_ms: u64,
    /// How it ended here.
    pub end: SpanEnd,
    /// When the seat stopped counting (a lease's end for an expiry, a borrowed seat's end at
    /// the latest, the log's last record for a seat still held).
    pub end_ms: u64,
    /// When the end was recorded (the month its end counts in).
    pub end_record_ms: u64,
}

/// The seats of one verified log, read again: every span, in the order they began. Reads
/// no further than `records` records (the count [`verify`](super::verify) checked), so a
/// log the server goes on writing gives the spans of what was verified.
pub fn seat_spans(r: impl Read, records: u64) -> Result<Vec<SeatSpan>, ScanError> {
    let mut open: HashMap<[u8; 16], SeatSpan> = HashMap::new();
    let mut done: Vec<SeatSpan> = Vec::new();
    let mut last_ms = 0u64;
    let span = |s: &SeatEvent, start: SpanStart, t: u64| SeatSpan {
        seat_id: s.seat_id,
        product_code: s.product_code,
        license_id: s.license_id,
        unit_key: s.unit_key.clone(),
        start,
        start_ms: t,
        end: SpanEnd::LogEnd,
        end_ms: t,
        end_record_ms: t,
    };
    scan(r, |_, sc| {
        let rec = &sc.record;
        if rec.seq >= records {
            return Ok(());
        }
        let t = rec.time_ms;
        if !matches!(rec.event, Event::Checkpoint(_)) {
            last_ms = t;
        }
        let (seat, end, end_ms) = match &rec.event {
            Event::Grant(s) => {
                open.entry(s.seat_id)
                    .or_insert_with(|| span(s, SpanStart::Grant, t));
                return Ok(());
            }
            Event::Borrow { seat, until_ms, .. } => {
                let until_ms = (*until_ms).max(t);
                open.entry(seat.seat_id)
                    .or_insert_with(|| span(seat, SpanStart::Borrow { until_ms }, t));
                return Ok(());
            }
            Event::Release(s) => (s, SpanEnd::Release, t),
            Event::Revoke(s) => (s, SpanEnd::Revoke, t),
            Event::Return(s) => (s, SpanEnd::Return, t),
            Event::Expire { seat, lease_end_ms } => (seat, SpanEnd::Expire, (*lease_end_ms).min(t)),
            _ => return Ok(()),
        };
        let mut sp = open
            .remove(&seat.seat_id)
            .unwrap_or_else(|| span(seat, SpanStart::BeforeLog, end_ms));
        if let SpanStart::Borrow { until_ms } = sp.start {
            sp.end_ms = end_ms.min(until_ms);
        } else {
            sp.end_ms = end_ms;
        }
        sp.end_ms = sp.end_ms.max(sp.start_ms);
        sp.end = end;
        sp.end_record_ms = t;
        done.push(sp);
        Ok(())
    })?;
    for mut sp in open.into_values() {
        sp.end_record_ms = last_ms;
        sp.end_ms = last_ms.max(sp.start_ms);
        if let SpanStart::Borrow { until_ms } = sp.start
            && until_ms <= last_ms
        {
            sp.end_ms = until_ms;
            sp.end = SpanEnd::BorrowEnded;
        }
        done.push(sp);
    }
    done.sort_by_key(|s| (s.start_ms, s.end_ms, s.seat_id));
    Ok(done)
}

/// What a pool's logs hold together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolReport {
    /// How many logs were summed.
    pub logs: usize,
    /// Distinct seats granted or borrowed (a seat re-attached to another member once).
    pub seats: u64,
    /// Of those, seats that appear in more than one log (moved between members).
    pub seats_in_several_logs: u64,
    /// Seats still held when the last of their logs ends.
    pub open_at_end: u64,
    /// Ends of seats none of the logs saw granted.
    pub ends_without_grant: u64,
    /// Per product code and month, across the pool.
    pub months: BTreeMap<(u32, MonthIndex), MonthSummary>,
}

/// A seat across the logs: its spans joined.
struct Joined {
    span: SeatSpan,
    logs: usize,
}

/// Joins the spans of one seat id (from all logs) into seats: overlapping spans, a span
/// that ran to its log's end and the seat's next span, and an end without a start with the
/// span before it.
fn join(mut spans: Vec<SeatSpan>) -> Vec<Joined> {
    spans.sort_by_key(|s| (s.start_ms, s.end_ms));
    let mut out: Vec<Joined> = Vec::new();
    for s in spans {
        if let Some(cur) = out.last_mut() {
            let c = &mut cur.span;
            let joins = s.start == SpanStart::BeforeLog
                || s.start_ms <= c.end_ms
                || c.end == SpanEnd::LogEnd;
            if joins {
                if c.start == SpanStart::BeforeLog && s.start != SpanStart::BeforeLog {
                    // The earlier span had no start of its own: this one's is the first.
                    c.start = s.start;
                    c.start_ms = c.start_ms.min(s.start_ms);
                }
                if (s.end_ms, s.end_record_ms) >= (c.end_ms, c.end_record_ms) {
                    c.end = s.end;
                    c.end_ms = s.end_ms;
                    c.end_record_ms = s.end_record_ms;
                }
                cur.logs += 1;
                continue;
            }
        }
        out.push(Joined { span: s, logs: 1 });
    }
    out
}

/// Sums a pool's logs: each verified ([`verify`](super::verify)) with its spans
/// ([`seat_spans`]). See the module's doc for how a seat in two logs counts once.
pub fn pool_summary(logs: &[(Report, Vec<SeatSpan>)]) -> PoolReport {
    let mut rep = PoolReport {
        logs: logs.len(),
        ..PoolReport::default()
    };
    let mut per_seat: HashMap<[u8; 16], Vec<SeatSpan>> = HashMap::new();
    for (_, spans) in logs {
        for s in spans {
            per_seat.entry(s.seat_id).or_default().push(s.clone());
        }
    }
    let mut seats: Vec<Joined> = per_seat.into_values().flat_map(join).collect();
    // Replay: every seat's start and end in time order, ends first at the same instant (a
    // seat released as another is granted was not in use beside it).
    enum Step {
        Open,
        Close,
    }
    let mut steps: Vec<(u64, u8, usize, Step)> = Vec::new();
    seats.sort_by_key(|j| (j.span.start_ms, j.span.seat_id));
    for (i, j) in seats.iter().enumerate() {
        if j.span.start == SpanStart::BeforeLog {
            rep.ends_without_grant += 1;
        } else {
            rep.seats += 1;
            if j.logs > 1 {
                rep.seats_in_several_logs += 1;
            }
            steps.push((j.span.start_ms, 1, i, Step::Open));
        }
        // A seat still held when its log ends was in use beside one granted at that instant.
        let order = if j.span.end == SpanEnd::LogEnd { 2 } else { 0 };
        steps.push((j.span.end_ms, order, i, Step::Close));
    }
    steps.sort_by_key(|(t, order, i, _)| (*t, *order, *i));
    let mut tally = Tally::default();
    let months = &mut rep.months;
    for (t, _, i, step) in steps {
        let s = &seats[i].span;
        let ev = SeatEvent {
            vendor_id: 0,
            product_code: s.product_code,
            license_id: s.license_id,
            seat_id: s.seat_id,
            unit_key: s.unit_key.clone(),
            client: None,
        };
        match step {
            Step::Open => {
                let e = months.entry((s.product_code, month_of(t))).or_default();
                match s.start {
                    SpanStart::Borrow { until_ms } => {
                        e.borrows += 1;
                        tally.borrow(months, &ev, t, until_ms);
                    }
                    _ => {
                        e.grants += 1;
                        tally.open(months, &ev, t);
                    }
                }
            }
            Step::Close => {
                let e = months
                    .entry((s.product_code, month_of(s.end_record_ms)))
                    .or_default();
                match s.end {
                    SpanEnd::Release => e.releases += 1,
                    SpanEnd::Expire => e.expiries += 1,
                    SpanEnd::Revoke => e.revokes += 1,
                    SpanEnd::Return => e.returns += 1,
                    SpanEnd::LogEnd => rep.open_at_end += 1,
                    SpanEnd::BorrowEnded => {}
                }
                tally.close(months, &s.seat_id, t, t);
            }
        }
    }
    for (r, _) in logs {
        for (k, m) in &r.months {
            if m.denials > 0 {
                rep.months.entry(*k).or_default().denials += m.denials;
            }
        }
    }
    rep
}
