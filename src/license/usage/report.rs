//! The publisher's summary of a verified log: per product and month, grants, releases,
//! expiries, denials, revokes, the peak of seats in use and seat time ([`verify`]); and
//! whether one log goes on from another ([`first_difference`], [`continuity`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use ed25519_dalek::VerifyingKey;

use super::checkpoint::{CounterAnchor, verify_checkpoint};
use super::log::{Event, ScanError, SeatEvent, read_full, record_damage, scan};

/// What a product did in one month.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonthSummary {
    /// Seats granted.
    pub grants: u64,
    /// Seats released by their clients.
    pub releases: u64,
    /// Seats whose lease ran out.
    pub expiries: u64,
    /// Acquires refused.
    pub denials: u64,
    /// Seats revoked by an admin.
    pub revokes: u64,
    /// The most seats in use at once (distinct counting units, as the license counts them).
    pub peak: u64,
    /// Seat time in milliseconds: for each counting unit, the time it held at least one seat
    /// (a borrowed seat is a unit of its own, from its borrow to its return or end).
    pub seat_ms: u64,
    /// Seats lent to other machines (borrows).
    pub borrows: u64,
    /// Borrowed seats given back early.
    pub returns: u64,
    /// Of `seat_ms`, the time of borrowed seats (from the borrow to the return or the end).
    pub borrowed_ms: u64,
}

impl MonthSummary {
    /// Seat time in hours.
    pub fn seat_hours(&self) -> f64 {
        self.seat_ms as f64 / 3_600_000.0
    }

    /// Borrowed seat time in hours.
    pub fn borrowed_hours(&self) -> f64 {
        self.borrowed_ms as f64 / 3_600_000.0
    }
}

/// A month as `year * 12 + (month - 1)`.
pub type MonthIndex = u64;

/// The month (UTC) of a Unix time in milliseconds.
pub fn month_of(time_ms: u64) -> MonthIndex {
    let (y, m) = crate::util::year_month(time_ms / 1000);
    y as u64 * 12 + (m as u64 - 1)
}

/// `YYYY-MM`.
pub fn month_label(m: MonthIndex) -> String {
    format!("{:04}-{:02}", m / 12, m % 12 + 1)
}

/// When month `m` starts (Unix milliseconds).
pub fn month_start_ms(m: MonthIndex) -> u64 {
    let (y, mo) = (
        i16::try_from(m / 12).unwrap_or(i16::MAX),
        (m % 12 + 1) as i8,
    );
    crate::util::month_start(y, mo).unwrap_or(0) * 1000
}

/// The result of checking a log against a publisher key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The publisher.
    pub vendor_id: u32,
    /// The key of the server that began the log.
    pub server_key: [u8; 32],
    /// Records in all.
    pub records: u64,
    /// Where the first record ends (bytes from the file's start; 0 for a log without
    /// records): two copies of one log share at least that much.
    pub first_record_end: u64,
    /// The log's length in bytes.
    pub bytes: u64,
    /// Server starts.
    pub starts: u64,
    /// Bytes of torn records servers cut when they started.
    pub cut_bytes: u64,
    /// Checkpoints (all verified).
    pub checkpoints: u64,
    /// Records a checkpoint covers: `0..verified`.
    pub verified: u64,
    /// Records (not checkpoints) after the last checkpoint: present and chained, but nothing
    /// signed commits to them yet.
    pub unverified_tail: u64,
    /// The containers that signed checkpoints.
    pub signers: Vec<String>,
    /// Time of the first and the last record (Unix milliseconds).
    pub first_ms: u64,
    /// Time of the last record.
    pub last_ms: u64,
    /// Time of the last checkpoint.
    pub last_checkpoint_ms: Option<u64>,
    /// The longest time between the last record a checkpoint covers and the container's
    /// signature (seconds, by the container's clock; a checkpoint signed long after its
    /// records is worth a question: the server makes one within `usage_checkpoint_s`).
    pub max_sign_lag_s: u64,
    /// Seats still held when the log ends (their time counts up to its last record).
    pub open_at_end: u64,
    /// Ends (release, expiry, revoke) of seats the log never saw granted (granted before the
    /// log began).
    pub ends_without_grant: u64,
    /// Per product code and month.
    pub months: BTreeMap<(u32, MonthIndex), MonthSummary>,
    /// Per signing container (serial): the numbers of its first and last usage signatures in
    /// this log. The next log's first should follow this one's last.
    pub signature_numbers: BTreeMap<String, (u64, u64)>,
    /// Per signing container (serial): what keeps its numbers from going back, as its
    /// checkpoints say (signed; the weakest, when they differ). Only anchored numbers are
    /// evidence: a container whose count lives in its file alone can be put back to an
    /// earlier copy and sign the same numbers again.
    pub signature_anchors: BTreeMap<String, CounterAnchor>,
    /// Signatures a container made between two checkpoints of this log that are not in it
    /// (a gap in its numbers): checkpoints of another log, or of a copy of this one.
    pub signatures_missing: u64,
    /// Checkpoints whose number is not above the container's previous one in this log: the
    /// container's state was put back to an earlier copy (or a second container with its
    /// keys signed). Each is named in `findings`.
    pub signature_rewinds: u64,
    /// What a publisher should ask about, in words, with the record each concerns.
    pub findings: Vec<String>,
}

#[derive(Default)]
struct ProductState {
    /// (license, unit key) → (seats open, since when).
    units: HashMap<([u8; 16], String), (u32, u64)>,
    /// The last month this product's summary was brought up to.
    month: Option<MonthIndex>,
}

/// Seat-time and peak bookkeeping while reading a log in order.
#[derive(Default)]
pub(super) struct Tally {
    products: HashMap<u32, ProductState>,
    /// Open seats → (product, license, unit key).
    seats: HashMap<[u8; 16], (u32, [u8; 16], String)>,
    /// Open borrowed seats → (since, until) (Unix milliseconds).
    borrowed: HashMap<[u8; 16], (u64, u64)>,
}

impl Tally {
    /// Brings the product's months up to `m`: months without events carry the seats in use.
    fn advance(
        months: &mut BTreeMap<(u32, MonthIndex), MonthSummary>,
        p: u32,
        st: &mut ProductState,
        m: MonthIndex,
    ) {
        let in_use = st.units.len() as u64;
        let from = st.month.map_or(m, |x| x + 1);
        for k in from..=m {
            let e = months.entry((p, k)).or_default();
            e.peak = e.peak.max(in_use);
        }
        if st.month.is_none_or(|x| x < m) {
            st.month = Some(m);
        }
    }

    fn add_time(
        months: &mut BTreeMap<(u32, MonthIndex), MonthSummary>,
        p: u32,
        from: u64,
        to: u64,
    ) {
        let mut t = from;
        while t < to {
            let m = month_of(t);
            // Past the calendar's last month (year 9999, where `month_of` stops) the next
            // month has no start: the rest of the time goes to this month. (It stepped one
            // millisecond at a time there, which never ended for a record dated far ahead.)
            let next = month_start_ms(m + 1);
            let upto = if next > t { next.min(to) } else { to };
            months.entry((p, m)).or_default().seat_ms += upto - t;
            t = upto;
        }
    }

    pub(super) fn open(
        &mut self,
        months: &mut BTreeMap<(u32, MonthIndex), MonthSummary>,
        s: &SeatEvent,
        t: u64,
    ) {
        if self.seats.contains_key(&s.seat_id) {
            return;
        }
        let st = self.products.entry(s.product_code).or_default();
        Self::advance(months, s.product_code, st, month_of(t));
        let u = st
            .units
            .entry((s.license_id, s.unit_key.clone()))
            .or_insert((0, t));
        u.0 += 1;
        let in_use = st.units.len() as u64;
        let e = months.entry((s.product_code, month_of(t))).or_default();
        e.peak = e.peak.max(in_use);
        self.seats.insert(
            s.seat_id,
            (s.product_code, s.license_id, s.unit_key.clone()),
        );
    }

    /// Opens a borrowed seat at `t`, held until `until` at the latest.
    pub(super) fn borrow(
        &mut self,
        months: &mut BTreeMap<(u32, MonthIndex), MonthSummary>,
        s: &SeatEvent,
        t: u64,
        until: u64,
    ) {
        if self.seats.contains_key(&s.seat_id) {
            return;
        }
        self.open(months, s, t);
        self.borrowed.insert(s.seat_id, (t, until.max(t)));
    }

    /// Closes a seat at `t`; false when it was not open. A borrowed seat ends by its
    /// `until` at the latest.
    pub(super) fn close(
        &mut self,
        months: &mut BTreeMap<(u32, MonthIndex), MonthSummary>,
        seat_id: &[u8; 16],
        t: u64,
        now: u64,
    ) -> bool {
        let Some((p, lic, unit)) = self.seats.remove(seat_id) else {
            return false;
        };
        let t = match self.borrowed.remove(seat_id) {
            Some((since, until)) => {
                let end = t.min(until).max(since);
                Self::add_borrowed(months, p, since, end);
                end
            }
            None => t,
        };
        let st = self.products.entry(p).or_default();
        Self::advance(months, p, st, month_of(now));
        let key = (lic, unit);
        if let Some(u) = st.units.get_mut(&key) {
            u.0 -= 1;
            if u.0 == 0 {
                let since = u.1;
                st.units.remove(&key);
                Self::add_time(months, p, since, t.max(since));
            }
        }
        true
    }

    /// Adds borrowed time from `from` to `to`, month by month.
    fn add_borrowed(
        months: &mut BTreeMap<(u32, MonthIndex), MonthSummary>,
        p: u32,
        from: u64,
        to: u64,
    ) {
        let mut t = from;
        while t < to {
            let m = month_of(t);
            let next = month_start_ms(m + 1);
            let upto = if next > t { next.min(to) } else { to };
            months.entry((p, m)).or_default().borrowed_ms += upto - t;
            t = upto;
        }
    }

    fn finish(
        &mut self,
        months: &mut BTreeMap<(u32, MonthIndex), MonthSummary>,
        last_ms: u64,
    ) -> u64 {
        // Borrowed seats whose end came before the log's: their time stops at their end
        // (the server logs their expiry when it next runs).
        let ended: Vec<[u8; 16]> = self
            .borrowed
            .iter()
            .filter(|(_, (_, until))| *until <= last_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.close(months, &id, last_ms, last_ms);
        }
        for (id, (since, _)) in &self.borrowed {
            if let Some((p, _, _)) = self.seats.get(id) {
                Self::add_borrowed(months, *p, *since, last_ms.max(*since));
            }
        }
        for (p, st) in &mut self.products {
            if st.units.is_empty() {
                continue;
            }
            Self::advance(months, *p, st, month_of(last_ms));
            for &(_, since) in st.units.values() {
                Self::add_time(months, *p, since, last_ms.max(since));
            }
        }
        self.seats.len() as u64
    }
}

/// Whether the log `next` begins with every byte of `prev` (a later copy of the same log,
/// which only ever grows): `None` when it does, else the offset of the first byte that
/// differs (or where `next` ends short).
pub fn first_difference(mut prev: impl Read, mut next: impl Read) -> std::io::Result<Option<u64>> {
    let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut prev, &mut a)?;
        if n == 0 {
            return Ok(None);
        }
        let m = read_full(&mut next, &mut b[..n])?;
        if let Some(i) = (0..m).find(|&i| a[i] != b[i]) {
            return Ok(Some(offset + i as u64));
        }
        if m < n {
            return Ok(Some(offset + m as u64));
        }
        offset += n as u64;
    }
}

impl Report {
    /// What keeps `serial`'s signature numbers from going back (unanchored when unknown).
    pub fn anchor_of(&self, serial: &str) -> CounterAnchor {
        self.signature_anchors
            .get(serial)
            .copied()
            .unwrap_or_default()
    }

    /// The containers that signed here whose numbers are unanchored.
    pub fn unanchored_signers(&self) -> Vec<&str> {
        self.signature_anchors
            .iter()
            .filter(|(_, a)| !a.is_anchored())
            .map(|(s, _)| s.as_str())
            .collect()
    }
}

/// Whether `next` goes on from `prev` (two reports of the same publisher, in order): for
/// every container that signed in both, its first signature number in `next` should be one
/// more than its last in `prev`. What does not, in words (empty: it goes on). For a container
/// whose numbers are anchored (a TPM counter, a dongle) a gap or an overlap is evidence: its
/// numbers never go back, so the signatures in neither log exist, or a log was put together
/// from signatures of different runs. For an unanchored one a run that goes on proves
/// nothing: the customer can put the container back and sign a rewritten period with the same
/// numbers.
pub fn continuity(prev: &Report, next: &Report) -> Vec<String> {
    let mut findings = Vec::new();
    for (serial, &(first, _)) in &next.signature_numbers {
        let Some(&(_, last)) = prev.signature_numbers.get(serial) else {
            continue;
        };
        let anchor = next.anchor_of(serial);
        if first > last + 1 {
            findings.push(if anchor.is_anchored() {
                format!(
                    "EVIDENCE: container {serial} made {} usage signature(s) between the two \
                     logs (numbers {} to {}) that are in neither, and its numbers are {}: \
                     those signatures exist, so a period was signed that these logs do not \
                     show (a rewritten log re-signed, or a log held back)",
                    first - last - 1,
                    last + 1,
                    first - 1,
                    anchor.describe()
                )
            } else {
                format!(
                    "container {serial} made {} usage signature(s) between the two logs \
                     (numbers {} to {}) that are in neither",
                    first - last - 1,
                    last + 1,
                    first - 1
                )
            });
        } else if first <= last {
            findings.push(if anchor.is_anchored() {
                format!(
                    "EVIDENCE: container {serial}'s signatures in this log begin at {first}, \
                     not after the earlier log's last ({last}), and its numbers are {}: they \
                     cannot be reused, so the logs overlap",
                    anchor.describe()
                )
            } else {
                format!(
                    "container {serial}'s signatures in this log begin at {first}, not after \
                     the earlier log's last ({last}): the logs overlap, or the container was \
                     put back to an earlier copy"
                )
            });
        }
    }
    findings
}

/// Checks a whole log against the publisher's key: the chain from the genesis value, every
/// record's link, every checkpoint's signature and certificate chain, and that the file does
/// not end in the middle of a record. Returns what the log holds, per product and month. The
/// first problem found is the error, naming the record (sequence number and byte offset).
pub fn verify(r: impl Read, publisher: &VerifyingKey) -> std::result::Result<Report, ScanError> {
    let mut rep = Report::default();
    let mut tally = Tally::default();
    let mut signers = std::collections::BTreeSet::new();
    let mut last_record_ms = 0u64;
    let end = scan(r, |header, s| {
        let rec = &s.record;
        if rec.seq == 0 {
            rep.first_ms = rec.time_ms;
            rep.first_record_end = s.offset + s.len;
        }
        let t = rec.time_ms;
        let m = month_of(t);
        let months = &mut rep.months;
        match &rec.event {
            Event::Start { cut_bytes, .. } => {
                rep.starts += 1;
                rep.cut_bytes += cut_bytes;
            }
            Event::Grant(seat) => {
                months.entry((seat.product_code, m)).or_default().grants += 1;
                tally.open(months, seat, t);
            }
            Event::Release(seat) | Event::Revoke(seat) => {
                let e = months.entry((seat.product_code, m)).or_default();
                if matches!(rec.event, Event::Release(_)) {
                    e.releases += 1;
                } else {
                    e.revokes += 1;
                }
                if !tally.close(months, &seat.seat_id, t, t) {
                    rep.ends_without_grant += 1;
                }
            }
            Event::Expire { seat, lease_end_ms } => {
                months.entry((seat.product_code, m)).or_default().expiries += 1;
                if !tally.close(months, &seat.seat_id, (*lease_end_ms).min(t), t) {
                    rep.ends_without_grant += 1;
                }
            }
            Event::Deny { seat, .. } => {
                months.entry((seat.product_code, m)).or_default().denials += 1;
            }
            Event::Denials { seat, count, .. } => {
                months.entry((seat.product_code, m)).or_default().denials += count;
            }
            Event::Borrow { seat, until_ms, .. } => {
                months.entry((seat.product_code, m)).or_default().borrows += 1;
                tally.borrow(months, seat, t, *until_ms);
            }
            Event::Return(seat) => {
                months.entry((seat.product_code, m)).or_default().returns += 1;
                if !tally.close(months, &seat.seat_id, t, t) {
                    rep.ends_without_grant += 1;
                }
            }
            Event::Checkpoint(c) => {
                let (st, cert) = verify_checkpoint(header, c, publisher)
                    .map_err(|why| record_damage(rec.seq, s.offset, format!("checkpoint {why}")))?;
                let anchor = st.anchor;
                match rep.signature_anchors.get(&cert.serial).copied() {
                    None => {
                        rep.signature_anchors.insert(cert.serial.clone(), anchor);
                    }
                    Some(before) if before != anchor => {
                        rep.findings.push(format!(
                            "record {}: container {}'s usage signature {} says its numbers are \
                             {}, its earlier ones here {}",
                            rec.seq,
                            cert.serial,
                            st.sequence,
                            anchor.describe(),
                            before.describe()
                        ));
                        if !anchor.is_anchored() {
                            rep.signature_anchors.insert(cert.serial.clone(), anchor);
                        }
                    }
                    Some(_) => {}
                }
                match rep.signature_numbers.get_mut(&cert.serial) {
                    None => {
                        rep.signature_numbers
                            .insert(cert.serial.clone(), (st.sequence, st.sequence));
                    }
                    Some((_, last)) if st.sequence <= *last => {
                        rep.signature_rewinds += 1;
                        rep.findings.push(if anchor.is_anchored() {
                            format!(
                                "record {}: EVIDENCE: container {}'s usage signature {} \
                                 follows its signature {}, and its numbers are {}: they \
                                 cannot go back, so this log was put together from signatures \
                                 of different runs",
                                rec.seq,
                                cert.serial,
                                st.sequence,
                                last,
                                anchor.describe()
                            )
                        } else {
                            format!(
                                "record {}: container {}'s usage signature {} follows its \
                                 signature {}: the container's state was put back to an \
                                 earlier copy",
                                rec.seq, cert.serial, st.sequence, last
                            )
                        });
                        *last = st.sequence;
                    }
                    Some((_, last)) => {
                        if st.sequence > *last + 1 {
                            let missing = st.sequence - *last - 1;
                            rep.signatures_missing += missing;
                            rep.findings.push(format!(
                                "record {}: container {} made {missing} usage signature(s) \
                                 between its signatures {} and {} that are not in this log",
                                rec.seq, cert.serial, last, st.sequence
                            ));
                        }
                        *last = st.sequence;
                    }
                }
                signers.insert(cert.serial);
                rep.checkpoints += 1;
                rep.verified = c.count;
                rep.last_checkpoint_ms = Some(t);
                rep.max_sign_lag_s = rep
                    .max_sign_lag_s
                    .max(st.signed_at.saturating_sub(last_record_ms / 1000));
            }
        }
        if !matches!(rec.event, Event::Checkpoint(_)) {
            last_record_ms = t;
        }
        Ok(())
    });
    let end = end?;
    if let Some(t) = end.torn {
        return Err(t.into());
    }
    let chain = &end.chain;
    rep.vendor_id = chain.header.vendor_id;
    rep.server_key = chain.header.server_key;
    rep.records = chain.records;
    rep.bytes = end.end;
    rep.last_ms = chain.last_time_ms;
    rep.unverified_tail = chain.uncovered;
    rep.signers = signers.into_iter().collect();
    rep.open_at_end = tally.finish(&mut rep.months, chain.last_time_ms);
    Ok(rep)
}
