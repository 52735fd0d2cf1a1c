//! The usage log's tests: sample logs signed by a real container engine, read back, summed
//! up, and damaged every way the module says it detects.

use super::*;
use crate::Error;
use crate::container::Engine;
use crate::container::protocol::{Request, Response};
use crate::host::{Fingerprint, MachineKind};
use crate::license::envelope::{Envelope, Kind};
use crate::license::{ContainerKind, CountingUnit, VmPolicy};
use crate::publisher::{LicenseSpec, PublisherKey};
use crate::status::Status;

const VENDOR: u32 = 0x77;
const H: u64 = 3_600_000;

/// 2026-11-30 00:00 UTC: a day before a month ends.
fn t0() -> u64 {
    crate::util::parse_date("2026-11-30").unwrap() * 1000
}

/// An activated software container engine of `key`'s publisher, its clock at [`t0`]
/// like the sample logs' records.
fn container(key: &PublisherKey) -> Engine {
    container_at(key, t0() / 1000)
}

/// An activated software container engine of `key`'s publisher, activated at `now`
/// (Unix seconds): its clock high-water mark starts there.
pub(crate) fn container_at(key: &PublisherKey, now: u64) -> Engine {
    let mut e = Engine::create(ContainerKind::Software, key.vendor_id, now);
    let req = e
        .activation_request(&Fingerprint::default(), MachineKind::Physical, "t", now)
        .unwrap();
    let spec = LicenseSpec {
        product_code: 1,
        product_name: "P".into(),
        features: 1,
        quantity: 5,
        counting_unit: CountingUnit::Handle,
        exclusive_allowed: false,
        borrow_days: 0,
        expiry: None,
        vm_policy: VmPolicy::Allow,
    };
    let act = key.activate(&req, &[spec], now).unwrap();
    e.install_activation(&act, Some(&key.public_key()), now)
        .unwrap();
    e
}

/// A log being built in memory, with each record's offset.
struct Log {
    chain: Chain,
    bytes: Vec<u8>,
    offsets: Vec<u64>,
    scratch: Vec<u8>,
}

impl Log {
    fn new() -> Log {
        Log::of_server([5; 32])
    }

    /// A log another server (another member of a pool) began.
    fn of_server(server_key: [u8; 32]) -> Log {
        let header = LogHeader {
            vendor_id: VENDOR,
            server_key,
        };
        Log {
            chain: Chain::new(header),
            bytes: header.to_bytes().to_vec(),
            offsets: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn push(&mut self, t: u64, e: Event) {
        self.offsets.push(self.bytes.len() as u64);
        self.chain
            .append(t, e, &mut self.bytes, &mut self.scratch)
            .unwrap();
    }

    fn checkpoint(&mut self, t: u64, engine: &mut Engine) {
        let (st, cert) = engine
            .sign_usage(self.chain.checkpoint_digest(), t / 1000)
            .unwrap();
        let e = self.chain.checkpoint(st, cert);
        self.push(t, e);
    }

    /// Record `i`'s bytes.
    fn record(&self, i: usize) -> std::ops::Range<usize> {
        let end = self
            .offsets
            .get(i + 1)
            .map_or(self.bytes.len(), |o| *o as usize);
        self.offsets[i] as usize..end
    }
}

fn seat(n: u8, unit: &str) -> SeatEvent {
    SeatEvent {
        vendor_id: VENDOR,
        product_code: 1,
        license_id: [1; 16],
        seat_id: [n; 16],
        unit_key: unit.into(),
        client: Some(std::sync::Arc::new(ClientInfo {
            hostname: format!("host-{n}"),
            session: "uid:1000/login:3".into(),
            machine: "physical machine".into(),
        })),
    }
}

fn start() -> Event {
    Event::Start {
        server: "s".into(),
        server_key: [5; 32],
        version: "0".into(),
        cut_bytes: 0,
    }
}

/// Start; three grants (two sharing a unit), a denial, a release; checkpoint; an
/// expiry; a release in the next month; a revoke of a seat granted before the log; a
/// grant; checkpoint; a release after it.
fn sample(signer: &mut Engine) -> Log {
    let t = t0();
    let mut l = Log::new();
    l.push(t, start());
    l.push(t + H, Event::Grant(seat(1, "a")));
    l.push(t + 2 * H, Event::Grant(seat(2, "a")));
    l.push(t + 3 * H, Event::Grant(seat(3, "b")));
    l.push(
        t + 3 * H,
        Event::Deny {
            seat: seat(4, "d"),
            status: 101,
        },
    );
    l.push(t + 4 * H, Event::Release(seat(1, "a")));
    l.checkpoint(t + 4 * H, signer); // 6
    l.push(
        t + 5 * H + 1000,
        Event::Expire {
            seat: seat(3, "b"),
            lease_end_ms: t + 5 * H,
        },
    );
    l.push(t + 26 * H, Event::Release(seat(2, "a")));
    l.push(t + 27 * H, Event::Revoke(seat(9, "z")));
    l.push(t + 28 * H, Event::Grant(seat(5, "c")));
    l.checkpoint(t + 28 * H, signer); // 11
    l.push(t + 30 * H, Event::Release(seat(5, "c")));
    l
}

fn damage(bytes: &[u8], key: &PublisherKey) -> Damage {
    match verify(bytes, &key.public_key()) {
        Err(ScanError::Damaged(d)) => d,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn signature_numbers_show_missing_signatures_and_a_container_put_back() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let serial = engine.serial().to_string();
    let mut l = Log::new();
    l.push(t0(), Event::Grant(seat(1, "u")));
    l.checkpoint(t0() + 1, &mut engine); // signature 1
    // Kept aside: the container's state as it is now.
    let earlier = Engine::from_state(engine.state().clone()).unwrap();
    // Two signatures for something else (another log): missing from this one.
    engine.sign_usage([1; 32], 1).unwrap();
    engine.sign_usage([2; 32], 1).unwrap();
    l.push(t0() + 2, Event::Grant(seat(2, "u")));
    l.checkpoint(t0() + 3, &mut engine); // signature 4
    let r = verify(&l.bytes[..], &key.public_key()).unwrap();
    assert_eq!(r.signature_numbers[&serial], (1, 4));
    assert_eq!((r.signatures_missing, r.signature_rewinds), (2, 0));
    assert!(
        r.findings[0].contains("made 2 usage signature(s)"),
        "{:?}",
        r.findings
    );
    // The container put back to its earlier copy signs again: number 2 after 4.
    let mut earlier = earlier;
    l.push(t0() + 4, Event::Grant(seat(3, "u")));
    l.checkpoint(t0() + 5, &mut earlier);
    let r = verify(&l.bytes[..], &key.public_key()).unwrap();
    assert_eq!(r.signature_rewinds, 1);
    assert_eq!(r.signature_numbers[&serial], (1, 2));
    assert!(
        r.findings[1].contains("signature 2 follows its signature 4")
            && r.findings[1].contains("put back"),
        "{:?}",
        r.findings
    );
    // Numbered in order, nothing to ask about.
    let mut fresh = container(&key);
    let mut l = Log::new();
    for i in 0..3 {
        l.push(t0() + 10 * i, Event::Grant(seat(i as u8, "u")));
        l.checkpoint(t0() + 10 * i + 1, &mut fresh);
    }
    let r = verify(&l.bytes[..], &key.public_key()).unwrap();
    assert_eq!(r.signature_numbers[fresh.serial()], (1, 3));
    assert!(r.findings.is_empty() && r.signatures_missing == 0 && r.signature_rewinds == 0);
}

#[test]
fn a_later_copy_of_a_log_begins_with_the_earlier_one() {
    let key = PublisherKey::generate(VENDOR, "p");
    let l = sample(&mut container(&key));
    let early = &l.bytes[..l.bytes.len() / 2];
    assert_eq!(first_difference(early, &l.bytes[..]).unwrap(), None);
    assert_eq!(first_difference(&l.bytes[..], &l.bytes[..]).unwrap(), None);
    let mut rewritten = l.bytes.clone();
    rewritten[100] ^= 1;
    assert_eq!(first_difference(early, &rewritten[..]).unwrap(), Some(100));
    assert_eq!(
        first_difference(&l.bytes[..], early).unwrap(),
        Some(early.len() as u64),
        "a later copy that is shorter"
    );
}

#[test]
fn a_log_goes_on_from_the_one_before_or_says_why_not() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let log = |engine: &mut Engine, n: u64| {
        let mut l = Log::new();
        for i in 0..n {
            l.push(t0() + 10 * i, Event::Grant(seat(i as u8, "u")));
            l.checkpoint(t0() + 10 * i + 1, engine);
        }
        verify(&l.bytes[..], &key.public_key()).unwrap()
    };
    let january = log(&mut engine, 3); // signatures 1..3
    let saved = Engine::from_state(engine.state().clone()).unwrap();
    let february = log(&mut engine, 2); // 4..5
    assert!(continuity(&january, &february).is_empty());
    // A signature kept out of both logs.
    engine.sign_usage([0; 32], 1).unwrap(); // 6
    let march = log(&mut engine, 1); // 7
    let gap = continuity(&february, &march);
    assert_eq!(gap.len(), 1);
    assert!(gap[0].contains("made 1 usage signature(s)") && gap[0].contains("6 to 6"));
    // A container put back after January signs "February" again: 4..5 once more.
    let mut saved = saved;
    let again = log(&mut saved, 2);
    let back = continuity(&march, &again);
    assert!(
        back[0].contains("begin at 4") && back[0].contains("put back"),
        "{back:?}"
    );
    // A log signed by another container says nothing about this one.
    let other = log(&mut container(&key), 1);
    assert!(continuity(&january, &other).is_empty());
}

/// A seat's time past the calendar's last month (year 9999) goes to that month at once.
/// Found by the `usage_log` fuzz target (`fuzz/regressions/usage_log/`): the time was added one
/// millisecond at a time there, which never ended for a record dated far ahead.
#[test]
fn a_record_dated_past_the_calendar_is_summed_without_stepping_through_it() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut l = Log::new();
    l.push(t0(), start());
    l.push(t0() + H, Event::Grant(seat(1, "a")));
    let far = 400_000_000_000_000; // Unix ms in the year 14645
    l.push(far, Event::Release(seat(1, "a")));
    l.push(far + H, Event::Grant(seat(2, "b"))); // open at the end
    let r = verify(&l.bytes[..], &key.public_key()).unwrap();
    assert_eq!(r.last_ms, far + H);
    assert_eq!(month_label(month_of(far)), "9999-12");
    let total: u64 = r.months.values().map(|m| m.seat_ms).sum();
    assert_eq!(total, far - (t0() + H));
}

#[test]
fn a_log_verifies_and_sums_up_per_product_and_month() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let l = sample(&mut engine);
    let r = verify(&l.bytes[..], &key.public_key()).unwrap();
    assert_eq!(r.vendor_id, VENDOR);
    assert_eq!(r.records, 13);
    assert_eq!(r.bytes, l.bytes.len() as u64);
    assert_eq!((r.checkpoints, r.verified, r.unverified_tail), (2, 11, 1));
    assert_eq!(r.signers, vec![engine.serial().to_string()]);
    assert_eq!((r.starts, r.open_at_end, r.ends_without_grant), (1, 0, 1));
    assert_eq!(r.first_ms, t0());
    assert_eq!(r.last_ms, t0() + 30 * H);
    let nov = month_of(t0());
    assert_eq!(month_label(nov), "2026-11");
    assert_eq!(
        r.months[&(1, nov)],
        MonthSummary {
            grants: 3,
            releases: 1,
            expiries: 1,
            denials: 1,
            revokes: 0,
            peak: 2,
            // unit a from 01:00 to the month's end, unit b from 03:00 to its lease end.
            seat_ms: 23 * H + 2 * H,
            ..MonthSummary::default()
        }
    );
    assert_eq!(
        r.months[&(1, nov + 1)],
        MonthSummary {
            grants: 1,
            releases: 2,
            expiries: 0,
            denials: 0,
            revokes: 1,
            peak: 1,
            seat_ms: 2 * H + 2 * H,
            ..MonthSummary::default()
        }
    );
    assert_eq!(r.months.len(), 2);
    assert!(r.max_sign_lag_s <= 1, "{}", r.max_sign_lag_s);
}

#[test]
fn an_edited_deleted_or_reordered_record_is_named() {
    let key = PublisherKey::generate(VENDOR, "p");
    let l = sample(&mut container(&key));
    // An edited byte (the last byte of record 3's host machine text): it still decodes,
    // but record 4 no longer links to it.
    let mut b = l.bytes.clone();
    b[l.record(3).end - 1] ^= 0x20;
    let d = damage(&b, &key);
    assert_eq!(d.location(), Some((3, l.offsets[3])), "{d}");
    assert!(
        d.to_string().contains("changed after it was written"),
        "{d}"
    );
    // A deleted record.
    let mut b = l.bytes.clone();
    b.drain(l.record(5));
    let d = damage(&b, &key);
    assert_eq!(d.location(), Some((5, l.offsets[5])), "{d}");
    assert!(d.to_string().contains("record 5 is missing"), "{d}");
    // Two records swapped.
    let mut b = l.bytes[..l.offsets[4] as usize].to_vec();
    b.extend_from_slice(&l.bytes[l.record(5)]);
    b.extend_from_slice(&l.bytes[l.record(4)]);
    b.extend_from_slice(&l.bytes[l.offsets[6] as usize..]);
    let d = damage(&b, &key);
    assert_eq!(d.location(), Some((4, l.offsets[4])), "{d}");
    // A record that does not decode.
    let mut b = l.bytes.clone();
    b[l.offsets[2] as usize + 4] = 9; // its record version
    let d = damage(&b, &key);
    assert_eq!(d.location(), Some((2, l.offsets[2])), "{d}");
    assert!(d.to_string().contains("does not decode"), "{d}");
    // The header's server key changed: record 0 no longer links to it.
    let mut b = l.bytes.clone();
    b[20] ^= 1;
    let d = damage(&b, &key);
    assert_eq!(d.location(), Some((0, HEADER_LEN as u64)), "{d}");
    assert!(damage(b"not a log", &key).to_string().contains("bad magic"));
}

#[test]
fn a_log_relinked_after_a_deletion_fails_at_its_checkpoint() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let l = sample(&mut engine);
    // Rebuild the log without record 4 (the denial), every link recomputed, keeping the
    // container's signed checkpoints: the first checkpoint now signs another head.
    let mut forged = Log::new();
    let mut body = Vec::new();
    for i in (0..l.offsets.len()).filter(|i| *i != 4) {
        let r = l.record(i);
        body.clear();
        body.extend_from_slice(&l.bytes[r.start + 4..r.end]);
        let rec: Record =
            crate::util::decode_versioned(RECORD_VERSION, &body, "usage record").unwrap();
        let event = match rec.event {
            Event::Checkpoint(c) => forged.chain.checkpoint(c.statement, c.certificate),
            e => e,
        };
        forged.push(rec.time_ms, event);
    }
    let d = damage(&forged.bytes, &key);
    assert_eq!(d.location(), Some((5, forged.offsets[5])), "{d}");
    assert!(d.to_string().contains("signed another head"), "{d}");
}

#[test]
fn a_forged_checkpoint_or_one_of_another_publisher_is_named() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    // A container of another publisher with the same vendor id signs the checkpoints.
    let impostor = PublisherKey::generate(VENDOR, "impostor");
    let l = sample(&mut container(&impostor));
    let d = damage(&l.bytes, &key);
    assert_eq!(d.location(), Some((6, l.offsets[6])), "{d}");
    assert!(d.to_string().contains("another publisher"), "{d}");
    assert!(verify(&l.bytes[..], &impostor.public_key()).is_ok());
    // A forged signature: the right certificate, a statement signed by someone else.
    let mut l = Log::new();
    l.push(t0(), start());
    let (st, cert) = engine.sign_usage(l.chain.checkpoint_digest(), 1).unwrap();
    let body: UsageStatement = Envelope::parse(Kind::UsageCheckpoint, &st)
        .unwrap()
        .decode()
        .unwrap();
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let fake = crate::license::envelope::sign(Kind::UsageCheckpoint, &body, &other).unwrap();
    let e = l.chain.checkpoint(fake, cert.clone());
    l.push(t0(), e);
    let d = damage(&l.bytes, &key);
    assert_eq!(d.location(), Some((1, l.offsets[1])), "{d}");
    assert!(d.to_string().contains("forged"), "{d}");
    // A signature over another log's head.
    let mut l = Log::new();
    l.push(t0(), start());
    let e = l.chain.checkpoint(st, cert);
    l.push(t0() + 1, Event::Grant(seat(1, "a")));
    l.push(t0() + 2, e);
    let d = damage(&l.bytes, &key);
    assert_eq!(d.location(), Some((2, l.offsets[2])), "{d}");
}

#[test]
fn a_truncated_log_is_torn_at_the_record_it_cuts() {
    let key = PublisherKey::generate(VENDOR, "p");
    let l = sample(&mut container(&key));
    let last = l.offsets.len() - 1;
    for n in l.offsets[last] as usize + 1..l.bytes.len() {
        let end = scan(&l.bytes[..n], |_, _| Ok(())).unwrap();
        assert_eq!(end.end, l.offsets[last], "truncated to {n}");
        let torn = end.torn.unwrap();
        assert_eq!(
            torn.location(),
            Some((last as u64, l.offsets[last])),
            "{torn}"
        );
    }
    // verify() refuses a torn log, naming the record.
    let d = damage(&l.bytes[..l.bytes.len() - 1], &key);
    assert!(matches!(d, Damage::Torn { seq: 12, .. }), "{d}");
    assert!(
        d.to_string()
            .contains("truncated in the middle of record 12"),
        "{d}"
    );
    // Cut in the middle of a record further up: torn there too.
    let d = damage(&l.bytes[..l.offsets[3] as usize + 10], &key);
    assert!(matches!(d, Damage::Torn { seq: 3, .. }), "{d}");
    // Cut at a record boundary: a shorter, valid log (only the checkpoints say more).
    let r = verify(&l.bytes[..l.offsets[last] as usize], &key.public_key()).unwrap();
    assert_eq!((r.records, r.unverified_tail), (12, 0));
    // Zero bytes after the last record (a power loss can leave them) read as torn.
    let mut b = l.bytes.clone();
    b.extend_from_slice(&[0; 100]);
    let end = scan(&b[..], |_, _| Ok(())).unwrap();
    assert_eq!(end.end, l.bytes.len() as u64);
    assert!(matches!(
        end.torn,
        Some(Damage::Torn {
            seq: 13,
            have: 100,
            ..
        })
    ));
    // ... but a zero length followed by anything else is damage.
    b.push(1);
    assert!(matches!(
        scan(&b[..], |_, _| Ok(())),
        Err(ScanError::Damaged(Damage::Record { seq: 13, .. }))
    ));
}

#[test]
fn every_changed_byte_before_the_last_checkpoint_is_detected() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let mut l = Log::new();
    l.push(t0(), start());
    l.push(t0() + 1, Event::Grant(seat(1, "a")));
    l.push(t0() + 2, Event::Release(seat(1, "a")));
    l.checkpoint(t0() + 3, &mut engine);
    l.push(t0() + 4, Event::Grant(seat(2, "b")));
    assert!(verify(&l.bytes[..], &key.public_key()).is_ok());
    let covered = l.offsets[4] as usize; // the end of the checkpoint
    for i in 0..covered {
        let mut b = l.bytes.clone();
        b[i] ^= 0x01;
        assert!(
            verify(&b[..], &key.public_key()).is_err(),
            "byte {i} changed went unnoticed"
        );
    }
}

#[test]
fn a_usage_signature_is_no_other_document_and_needs_an_activated_container() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let ctx = crate::container::engine::RequestContext {
        now: t0() / 1000,
        now_ms: 0,
        host: None,
        machine: MachineKind::Physical,
    };
    let Response::UsageSignature {
        statement,
        certificate,
    } = engine
        .handle(Request::SignUsage { digest: [7; 32] }, &ctx)
        .0
    else {
        panic!("no usage signature")
    };
    assert_eq!(Some(&certificate[..]), engine.certificate());
    let st: UsageStatement =
        Envelope::open(Kind::UsageCheckpoint, &statement, &engine.sign_key()).unwrap();
    assert_eq!(st.digest, [7; 32]);
    assert!(st.signed_at >= engine.state().clock_high_water);
    // The same bytes presented as a delegation (or any other kind) do not verify.
    for kind in [Kind::Delegation, Kind::License, Kind::Certificate] {
        let mut b = statement.clone();
        b[..4].copy_from_slice(&kind.magic());
        assert!(
            Envelope::parse(kind, &b)
                .and_then(|e| e.verify(&engine.sign_key()))
                .is_err(),
            "{kind:?}"
        );
    }
    let mut blank = Engine::create(ContainerKind::Software, VENDOR, 0);
    assert!(matches!(
        blank.sign_usage([7; 32], 0),
        Err(Error::NoLicense(_))
    ));
    // A dongle shared by two hosts signs nothing, as it serves nothing.
    engine.observe_host([1; 32], 0);
    engine.observe_host([2; 32], 1);
    let shared = crate::container::engine::RequestContext {
        host: Some([1; 32]),
        now_ms: 2,
        ..ctx
    };
    match engine
        .handle(Request::SignUsage { digest: [7; 32] }, &shared)
        .0
    {
        Response::Error { status, .. } => assert_eq!(status, Status::DongleShared.code()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn anchored_numbers_make_a_replayed_period_evidence_and_unanchored_ones_are_named() {
    let key = PublisherKey::generate(VENDOR, "p");
    let log = |engine: &mut Engine, n: u64| {
        let mut l = Log::new();
        for i in 0..n {
            l.push(t0() + 10 * i, Event::Grant(seat(i as u8, "u")));
            l.checkpoint(t0() + 10 * i + 1, engine);
        }
        verify(&l.bytes[..], &key.public_key()).unwrap()
    };
    // Unanchored: a container put back signs a rewritten period with the same numbers, and
    // the numbers run on; the report says they are unanchored.
    let mut soft = container(&key);
    let january = log(&mut soft, 2); // 1..2
    let saved = Engine::from_state(soft.state().clone()).unwrap();
    let _february = log(&mut soft, 2); // 3..4, the honest period
    let mut saved = saved;
    let rewritten = log(&mut saved, 2); // 3..4 again
    assert!(continuity(&january, &rewritten).is_empty());
    assert_eq!(rewritten.unanchored_signers(), vec![soft.serial()]);
    assert_eq!(
        rewritten.anchor_of(soft.serial()),
        CounterAnchor::Unanchored
    );

    // Anchored (a TPM counter): the rewritten period can only be signed with the next
    // numbers, and the gap is evidence.
    let mut tpm = container(&key);
    tpm.set_usage_anchor(CounterAnchor::Tpm);
    let january = log(&mut tpm, 2); // 1..2
    let _february = log(&mut tpm, 2); // 3..4
    let rewritten = log(&mut tpm, 2); // 5..6
    assert!(rewritten.unanchored_signers().is_empty());
    assert_eq!(rewritten.anchor_of(tpm.serial()), CounterAnchor::Tpm);
    let gap = continuity(&january, &rewritten);
    assert_eq!(gap.len(), 1, "{gap:?}");
    assert!(
        gap[0].starts_with("EVIDENCE") && gap[0].contains("3 to 4"),
        "{gap:?}"
    );
    let overlap = continuity(&rewritten, &january);
    assert!(overlap[0].starts_with("EVIDENCE"), "{overlap:?}");

    // A dongle's numbers are anchored in its firmware.
    let dongle = Engine::create(ContainerKind::Dongle, VENDOR, 1);
    assert_eq!(dongle.usage_anchor(), CounterAnchor::Dongle);
}

#[test]
fn a_statement_signed_before_anchors_existed_reads_as_unanchored() {
    #[derive(serde::Serialize)]
    struct Old {
        vendor_id: u32,
        serial: String,
        container_key: [u8; 32],
        digest: [u8; 32],
        signed_at: u64,
        sequence: u64,
    }
    let k = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let old = Old {
        vendor_id: VENDOR,
        serial: "SW-1".into(),
        container_key: k.verifying_key().to_bytes(),
        digest: [1; 32],
        signed_at: 5,
        sequence: 7,
    };
    let bytes = crate::license::envelope::sign(Kind::UsageCheckpoint, &old, &k).unwrap();
    let env = Envelope::parse(Kind::UsageCheckpoint, &bytes).unwrap();
    let st = UsageStatement::decode(&env).unwrap();
    assert_eq!((st.sequence, st.anchor), (7, CounterAnchor::Unanchored));
    // Garbage is still an error, not a default.
    let junk = crate::license::envelope::sign(Kind::UsageCheckpoint, &1u8, &k).unwrap();
    let env = Envelope::parse(Kind::UsageCheckpoint, &junk).unwrap();
    assert!(UsageStatement::decode(&env).is_err());
}

/// Borrowed seats in a log: a seat lent at 20:00 on the last day of a month for a day and
/// returned after 6 h, one lent for a day that runs out (its expiry logged at its end), and
/// one lent across the month's end that the log ends inside. Each is a unit of its own;
/// their time counts from the borrow to the return or the end, month by month, in both
/// the seat time and the borrowed time.
#[test]
fn borrowed_seats_count_from_borrow_to_return_or_end() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let t = t0() + 20 * H; // 2026-11-30 20:00
    let lent = |n: u8, until_ms: u64| Event::Borrow {
        seat: seat(n, &format!("borrow:{n}")),
        borrower: format!("SW-LAPTOP-{n}"),
        until_ms,
    };
    let mut l = Log::new();
    l.push(t, start());
    l.push(t, lent(1, t + 24 * H));
    l.push(t + H, lent(2, t + 24 * H));
    l.push(t + 2 * H, lent(3, t + 72 * H));
    l.push(t + 6 * H, Event::Return(seat(1, "borrow:1")));
    l.push(
        t + 25 * H,
        Event::Expire {
            seat: seat(2, "borrow:2"),
            lease_end_ms: t + 24 * H,
        },
    );
    l.checkpoint(t + 30 * H, &mut engine);
    let r = verify(&l.bytes[..], &key.public_key()).unwrap();
    let nov = month_of(t0());
    let (a, b) = (&r.months[&(1, nov)], &r.months[&(1, nov + 1)]);
    assert_eq!((a.borrows, a.returns, a.grants), (3, 0, 0));
    assert_eq!((b.borrows, b.returns, b.expiries), (0, 1, 1));
    assert_eq!(a.peak, 3);
    // To midnight: seat 1 for 4 h, seat 2 for 3 h, seat 3 for 2 h.
    assert_eq!(a.borrowed_ms, 9 * H);
    // After midnight: seat 1 for 2 h (returned at 02:00), seat 2 up to its end at 20:00
    // (20 h), seat 3 up to the log's end at 02:00 the day after (26 h).
    assert_eq!(b.borrowed_ms, 2 * H + 20 * H + 26 * H);
    assert_eq!((a.seat_ms, b.seat_ms), (a.borrowed_ms, b.borrowed_ms));
    assert_eq!(r.open_at_end, 1);

    // A log that ends after a borrowed seat's end, its expiry not logged yet (the server
    // was down): the seat's time stops at its end.
    let mut l = Log::new();
    l.push(t, start());
    l.push(t, lent(1, t + 2 * H));
    l.push(t + 10 * H, Event::Grant(seat(2, "a")));
    let r = verify(&l.bytes[..], &key.public_key()).unwrap();
    let total: u64 = r.months.values().map(|m| m.borrowed_ms).sum();
    assert_eq!(total, 2 * H);
    assert_eq!(r.open_at_end, 1, "the leased seat only");
}

/// The events a log held before borrowing keep their numbers (postcard numbers enum
/// variants), so the logs written before it verify as they did; the new ones come after.
#[test]
fn the_events_from_before_borrowing_keep_their_encoding() {
    let index = |e: &Event| postcard::to_allocvec(e).unwrap()[0];
    let s = seat(1, "a");
    let before = [
        start(),
        Event::Grant(s.clone()),
        Event::Release(s.clone()),
        Event::Expire {
            seat: s.clone(),
            lease_end_ms: 1,
        },
        Event::Deny {
            seat: s.clone(),
            status: 1,
        },
        Event::Revoke(s.clone()),
    ];
    for (i, e) in before.iter().enumerate() {
        assert_eq!(usize::from(index(e)), i, "{}", e.name());
    }
    let borrow = Event::Borrow {
        seat: s.clone(),
        borrower: "SW".into(),
        until_ms: 1,
    };
    assert_eq!((index(&borrow), index(&Event::Return(s))), (8, 9));
    // And the sample log from before borrowing verifies with its figures.
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let r = verify(&sample(&mut engine).bytes[..], &key.public_key()).unwrap();
    assert!(
        r.months
            .values()
            .all(|m| m.borrows == 0 && m.borrowed_ms == 0)
    );
}

/// A log verified and read again for its seat spans, as `verify-usage` sums a pool.
fn with_spans(l: &Log, key: &PublisherKey) -> (Report, Vec<SeatSpan>) {
    let r = verify(&l.bytes[..], &key.public_key()).unwrap();
    let spans = seat_spans(&l.bytes[..], r.records).unwrap();
    (r, spans)
}

#[test]
fn one_log_summed_as_a_pool_sums_up_as_it_does_alone() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let t = t0() + 20 * H;
    let mut borrowed = Log::new();
    borrowed.push(t, start());
    borrowed.push(
        t,
        Event::Borrow {
            seat: seat(1, "borrow:1"),
            borrower: "SW-1".into(),
            until_ms: t + 30 * H,
        },
    );
    borrowed.push(
        t + H,
        Event::Borrow {
            seat: seat(2, "borrow:2"),
            borrower: "SW-2".into(),
            until_ms: t + 72 * H,
        },
    );
    borrowed.push(t + 10 * H, Event::Grant(seat(3, "a")));
    borrowed.checkpoint(t + 10 * H, &mut engine);
    for l in [sample(&mut engine), borrowed] {
        let (r, spans) = with_spans(&l, &key);
        let p = pool_summary(&[(r.clone(), spans)]);
        assert_eq!(p.months, r.months);
        assert_eq!(p.open_at_end, r.open_at_end);
        assert_eq!(p.ends_without_grant, r.ends_without_grant);
        assert_eq!((p.logs, p.seats_in_several_logs), (1, 0));
    }
}

#[test]
fn a_seat_re_attached_to_another_member_counts_once() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let t = t0();
    // Member A grants seats 1 (unit a) and 2 (unit b); it loses seat 1's client, which
    // re-attaches to B at 03:00, and logs the seat's expiry late (its lease ran to 03:30);
    // A is killed at 03:30 holding seat 2.
    let mut a = Log::of_server([5; 32]);
    a.push(t, start());
    a.push(t + H, Event::Grant(seat(1, "a")));
    a.push(t + H, Event::Grant(seat(2, "b")));
    a.push(
        t + 7 * H / 2,
        Event::Expire {
            seat: seat(1, "a"),
            lease_end_ms: t + 7 * H / 2,
        },
    );
    a.checkpoint(t + 7 * H / 2, &mut engine);
    // Member B: seat 1 re-attached (logged as a grant) and released; seat 2's client
    // re-attached and released it (B logged only the release); seat 3 its own.
    let mut b = Log::of_server([6; 32]);
    b.push(t, start());
    b.push(t + 3 * H, Event::Grant(seat(1, "a")));
    b.push(t + 4 * H, Event::Release(seat(2, "b")));
    b.push(t + 4 * H, Event::Grant(seat(3, "c")));
    b.push(t + 5 * H, Event::Release(seat(1, "a")));
    b.push(t + 6 * H, Event::Release(seat(3, "c")));
    b.push(
        t + 6 * H,
        Event::Deny {
            seat: seat(4, "d"),
            status: 101,
        },
    );
    b.checkpoint(t + 6 * H, &mut engine);

    let logs = [with_spans(&a, &key), with_spans(&b, &key)];
    // Each log alone: A counts seat 2 still held, B a release it never saw granted.
    assert_eq!(logs[0].0.open_at_end, 1);
    assert_eq!(logs[1].0.ends_without_grant, 1);
    let naive: u64 = logs
        .iter()
        .map(|(r, _)| r.months.values().map(|m| m.grants).sum::<u64>())
        .sum();
    assert_eq!(naive, 4, "summed log by log, seat 1 counts twice");

    let p = pool_summary(&logs);
    let nov = month_of(t0());
    assert_eq!(p.months.len(), 1);
    assert_eq!(
        p.months[&(1, nov)],
        MonthSummary {
            grants: 3,
            releases: 3,
            expiries: 0,
            denials: 1,
            revokes: 0,
            // Seats 1 and 2 at once; at 04:00 seat 2 ends as seat 3 begins.
            peak: 2,
            // Seat 1 from 01:00 to 05:00, seat 2 from 01:00 to 04:00 (through A's death:
            // its client held it), seat 3 from 04:00 to 06:00.
            seat_ms: 4 * H + 3 * H + 2 * H,
            ..MonthSummary::default()
        }
    );
    assert_eq!((p.seats, p.seats_in_several_logs), (3, 2));
    assert_eq!((p.open_at_end, p.ends_without_grant), (0, 0));
    // The order the logs are given in changes nothing.
    let swapped = [logs[1].clone(), logs[0].clone()];
    assert_eq!(pool_summary(&swapped), p);
}

#[test]
fn a_seat_id_seen_again_after_its_end_is_another_seat() {
    let key = PublisherKey::generate(VENDOR, "p");
    let mut engine = container(&key);
    let t = t0();
    let mut a = Log::of_server([5; 32]);
    a.push(t, start());
    a.push(t + H, Event::Grant(seat(1, "a")));
    a.push(t + 2 * H, Event::Release(seat(1, "a")));
    a.checkpoint(t + 2 * H, &mut engine);
    let mut b = Log::of_server([6; 32]);
    b.push(t, start());
    b.push(t + 3 * H, Event::Grant(seat(1, "a")));
    b.push(t + 4 * H, Event::Release(seat(1, "a")));
    b.checkpoint(t + 4 * H, &mut engine);
    let p = pool_summary(&[with_spans(&a, &key), with_spans(&b, &key)]);
    let m = &p.months[&(1, month_of(t))];
    // Released on A before B saw it: two seats, no time between them.
    assert_eq!((m.grants, m.releases, m.peak, m.seat_ms), (2, 2, 1, 2 * H));
    assert_eq!(p.seats_in_several_logs, 0);
}
