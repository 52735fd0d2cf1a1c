//! Tests of the framing: round trips at the boundaries, reassembly's resync, timeouts and
//! cap, and exchanges with an in-memory dongle.

use std::collections::VecDeque;

use super::*;
use crate::Error;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

fn reassemble(reports: &[Report], now: Instant) -> Vec<Result<Message, FrameError>> {
    let mut r = Reassembler::new();
    reports.iter().filter_map(|rep| r.push(rep, now)).collect()
}

#[test]
fn round_trips_at_the_boundaries() {
    let now = Instant::now();
    for (len, count) in [
        (0, 1),
        (1, 1),
        (57, 1),
        (58, 2),
        (116, 2),
        (117, 3),
        (MAX_MESSAGE, 129),
    ] {
        let data = payload(len);
        let reports = fragment(0x0102_0304, cmd::MSG, &data).unwrap();
        assert_eq!(reports.len(), count, "{len} bytes");
        for (i, r) in reports.iter().enumerate().skip(1) {
            assert_eq!(r[4], (i - 1) as u8);
        }
        let got = reassemble(&reports, now);
        assert_eq!(
            got,
            vec![Ok(Message::new(0x0102_0304, cmd::MSG, data))],
            "{len} bytes"
        );
    }
}

#[test]
fn unused_bytes_are_zero() {
    let reports = fragment(7, cmd::PING, &[0xAA; 60]).unwrap();
    assert_eq!(&reports[0][..7], &[0, 0, 0, 7, cmd::PING, 0, 60]);
    assert_eq!(&reports[1][5..8], &[0xAA, 0xAA, 0xAA]);
    assert!(reports[1][8..].iter().all(|&b| b == 0));
}

#[test]
fn fragment_rejects_bad_arguments() {
    assert!(matches!(
        fragment(1, cmd::MSG, &payload(MAX_MESSAGE + 1)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(fragment(0, cmd::MSG, b"x").is_err());
    assert!(fragment(1, 0x11, b"x").is_err());
}

#[test]
fn two_cids_interleaved_reassemble_independently() {
    let now = Instant::now();
    let a = fragment(0xA, cmd::MSG, &payload(300)).unwrap();
    let b = fragment(0xB, cmd::HANDSHAKE, &[5u8; 200]).unwrap();
    let mut mixed = Vec::new();
    for i in 0..a.len().max(b.len()) {
        mixed.extend(a.get(i));
        mixed.extend(b.get(i));
    }
    let got = reassemble(&mixed, now);
    assert_eq!(
        got,
        vec![
            Ok(Message::new(0xB, cmd::HANDSHAKE, vec![5u8; 200])),
            Ok(Message::new(0xA, cmd::MSG, payload(300))),
        ]
    );
}

#[test]
fn padding_is_ignored() {
    let mut r = Reassembler::new();
    let mut pad = [0u8; REPORT_LEN];
    assert_eq!(r.push(&pad, Instant::now()), None);
    pad[4] = cmd::MSG;
    pad[6] = 200;
    assert_eq!(r.push(&pad, Instant::now()), None);
    assert_eq!(r.pending(), 0);
}

#[test]
fn resyncs_after_garbage() {
    let now = Instant::now();
    let mut r = Reassembler::new();
    let cid: u32 = 0x1234_5678;
    // Random reports: whatever they cause, nothing panics.
    for _ in 0..200 {
        let mut garbage: Report = crate::util::random::<REPORT_LEN>();
        garbage[..4].copy_from_slice(&cid.to_be_bytes());
        let _ = r.push(&garbage, now);
    }
    // A stray continuation.
    let mut stray = [0u8; REPORT_LEN];
    stray[..4].copy_from_slice(&cid.to_be_bytes());
    stray[4] = 3;
    let _ = r.push(&stray, now);
    assert_eq!(
        r.push(&stray, now),
        Some(Err(FrameError {
            cid,
            code: err::INVALID_SEQ
        }))
    );
    // A message broken off by a wrong sequence number.
    let broken = fragment(cid, cmd::MSG, &payload(200)).unwrap();
    assert_eq!(r.push(&broken[0], now), None);
    assert_eq!(
        r.push(&broken[2], now),
        Some(Err(FrameError {
            cid,
            code: err::INVALID_SEQ
        }))
    );
    assert!(!r.has_partial(cid));
    // A message abandoned halfway, replaced by a new initialization packet.
    let abandoned = fragment(cid, cmd::MSG, &payload(500)).unwrap();
    assert_eq!(r.push(&abandoned[0], now), None);
    assert_eq!(r.push(&abandoned[1], now), None);
    let valid = fragment(cid, cmd::MSG, &payload(150)).unwrap();
    let got: Vec<_> = valid.iter().filter_map(|rep| r.push(rep, now)).collect();
    assert_eq!(got, vec![Ok(Message::new(cid, cmd::MSG, payload(150)))]);
    assert_eq!(r.pending(), 0);
}

#[test]
fn oversized_bcnt_is_invalid_length() {
    let mut rep = [0u8; REPORT_LEN];
    rep[3] = 9;
    rep[4] = cmd::MSG;
    rep[5..7].copy_from_slice(&((MAX_MESSAGE + 1) as u16).to_be_bytes());
    assert_eq!(
        Reassembler::new().push(&rep, Instant::now()),
        Some(Err(FrameError {
            cid: 9,
            code: err::INVALID_LEN
        }))
    );
}

#[test]
fn timeout_drops_partial() {
    let t0 = Instant::now();
    let late = t0 + MESSAGE_TIMEOUT + Duration::from_millis(1);
    let reports = fragment(5, cmd::MSG, &payload(200)).unwrap();

    // The late continuation is answered with a timeout, and nothing completes.
    let mut r = Reassembler::new();
    assert_eq!(r.push(&reports[0], t0), None);
    assert_eq!(r.push(&reports[1], t0), None);
    assert_eq!(
        r.push(&reports[2], late),
        Some(Err(FrameError {
            cid: 5,
            code: err::MSG_TIMEOUT
        }))
    );
    assert_eq!(
        r.push(&reports[3], late),
        Some(Err(FrameError {
            cid: 5,
            code: err::INVALID_SEQ
        }))
    );
    assert_eq!(r.pending(), 0);

    // expire() reports partials that went quiet, once.
    let mut r = Reassembler::new();
    assert_eq!(r.push(&reports[0], t0), None);
    assert!(r.expire(t0 + Duration::from_millis(100)).is_empty());
    assert_eq!(
        r.expire(late),
        vec![FrameError {
            cid: 5,
            code: err::MSG_TIMEOUT
        }]
    );
    assert!(r.expire(late).is_empty());

    // A push on another CID drops the stale partial; expire() reports it afterwards.
    let mut r = Reassembler::new();
    assert_eq!(r.push(&reports[0], t0), None);
    let other = fragment(6, cmd::PING, b"hi").unwrap();
    assert!(matches!(r.push(&other[0], late), Some(Ok(_))));
    assert!(!r.has_partial(5));
    assert_eq!(
        r.expire(late),
        vec![FrameError {
            cid: 5,
            code: err::MSG_TIMEOUT
        }]
    );
}

#[test]
fn partials_are_capped() {
    let now = Instant::now();
    let mut r = Reassembler::new();
    for cid in 1..=MAX_PARTIALS as u32 {
        let reports = fragment(cid, cmd::MSG, &payload(100)).unwrap();
        assert_eq!(r.push(&reports[0], now), None);
    }
    let reports = fragment(1000, cmd::MSG, &payload(100)).unwrap();
    assert_eq!(
        r.push(&reports[0], now),
        Some(Err(FrameError {
            cid: 1000,
            code: err::CHANNEL_BUSY
        }))
    );
    // A single-report message needs no partial and still goes through.
    let small = fragment(1000, cmd::MSG, b"ok").unwrap();
    assert!(matches!(r.push(&small[0], now), Some(Ok(_))));
    assert_eq!(r.pending(), MAX_PARTIALS);
}

/// A dongle in memory: what is written is handled at once; answers queue up for reading,
/// after `noise` reports of another CID each.
struct Loopback {
    device: DeviceFraming,
    queue: VecDeque<Report>,
    noise: Vec<Report>,
}

impl Loopback {
    fn new(noise: Vec<Report>) -> Self {
        Loopback {
            device: DeviceFraming::new(),
            queue: VecDeque::new(),
            noise,
        }
    }
}

fn echo(msg: Message) -> Option<Message> {
    (msg.cmd == cmd::MSG).then(|| Message::new(msg.cid, cmd::MSG, msg.payload.clone()))
}

impl ReportDevice for Loopback {
    fn write_report(&mut self, report: &Report) -> Result<()> {
        for answer in self.device.handle(report, Instant::now(), &mut echo) {
            self.queue.extend(self.noise.iter().copied());
            self.queue.push_back(answer);
        }
        Ok(())
    }

    fn read_report(&mut self, _timeout: Duration) -> Result<Option<Report>> {
        Ok(self.queue.pop_front())
    }
}

const T: Duration = Duration::from_millis(200);

#[test]
fn transact_over_an_echoing_device() {
    let mut dev = Loopback::new(Vec::new());
    let cid = allocate_channel(&mut dev, T).unwrap();
    assert_ne!(cid, 0);
    assert_ne!(cid, BROADCAST_CID);
    let other = allocate_channel(&mut dev, T).unwrap();
    assert_ne!(cid, other);

    for len in [0, 1, 58, 1000, MAX_MESSAGE] {
        let answer = transact(&mut dev, cid, cmd::MSG, &payload(len), T).unwrap();
        assert_eq!(answer, Message::new(cid, cmd::MSG, payload(len)));
    }
    let pong = transact(&mut dev, cid, cmd::PING, b"ping", T).unwrap();
    assert_eq!(pong, Message::new(cid, cmd::PING, b"ping".to_vec()));

    // The echo answers nothing but MSG: the exchange times out.
    assert!(matches!(
        transact(
            &mut dev,
            cid,
            cmd::HANDSHAKE,
            b"x",
            Duration::from_millis(20)
        ),
        Err(Error::Timeout(_))
    ));
    // A non-INIT command on the broadcast CID is an error.
    let e = transact(&mut dev, BROADCAST_CID, cmd::PING, b"", T).unwrap_err();
    assert!(e.to_string().contains("invalid channel"), "{e}");
}

#[test]
fn transact_reports_error_answers() {
    let mut dev = Loopback::new(Vec::new());
    let mut bad = [0u8; REPORT_LEN];
    bad[..4].copy_from_slice(&42u32.to_be_bytes());
    bad[4] = 0x05; // a continuation with no message
    dev.write_report(&bad).unwrap();
    let answer = dev.read_report(T).unwrap().unwrap();
    assert_eq!(
        &answer[..8],
        &[0, 0, 0, 42, cmd::ERROR, 0, 1, err::INVALID_SEQ]
    );

    // An ERROR answer to a transaction names the code.
    struct Refuser(Loopback);
    impl ReportDevice for Refuser {
        fn write_report(&mut self, report: &Report) -> Result<()> {
            let cid = report_cid(report);
            self.0
                .queue
                .extend(fragment(cid, cmd::ERROR, &[err::CHANNEL_BUSY]).unwrap());
            Ok(())
        }
        fn read_report(&mut self, t: Duration) -> Result<Option<Report>> {
            self.0.read_report(t)
        }
    }
    let e = transact(
        &mut Refuser(Loopback::new(Vec::new())),
        9,
        cmd::MSG,
        b"x",
        T,
    )
    .unwrap_err();
    assert!(e.to_string().contains("channel busy"), "{e}");
}

#[test]
fn transact_ignores_other_cids_and_padding() {
    // Before every answer report: a report of another client's message, a stray
    // continuation of another CID, padding, and an INIT answer to someone else.
    let mut noise = fragment(0x0BAD_0BAD, cmd::MSG, &payload(10)).unwrap();
    let mut stray = [0u8; REPORT_LEN];
    stray[..4].copy_from_slice(&0x0BAD_0BADu32.to_be_bytes());
    stray[4] = 9;
    noise.push(stray);
    noise.push([0u8; REPORT_LEN]);
    let mut foreign_init = vec![0xEE; 8];
    foreign_init.extend_from_slice(&[0, 0, 0, 77, 1, 0]);
    noise.extend(fragment(BROADCAST_CID, cmd::INIT, &foreign_init).unwrap());

    let mut dev = Loopback::new(noise);
    let cid = allocate_channel(&mut dev, T).unwrap();
    assert_ne!(cid, 77);
    let answer = transact(&mut dev, cid, cmd::MSG, &payload(700), T).unwrap();
    assert_eq!(answer.payload, payload(700));
}

#[test]
fn device_answers_bad_init_and_broadcast_misuse() {
    let mut dev = DeviceFraming::new();
    let now = Instant::now();
    let short_init = fragment(BROADCAST_CID, cmd::INIT, &[1, 2, 3]).unwrap();
    let out = dev.handle(&short_init[0], now, &mut echo);
    assert_eq!(
        out,
        fragment(BROADCAST_CID, cmd::ERROR, &[err::INVALID_LEN]).unwrap()
    );

    let msg = fragment(BROADCAST_CID, cmd::MSG, b"x").unwrap();
    let out = dev.handle(&msg[0], now, &mut echo);
    assert_eq!(
        out,
        fragment(BROADCAST_CID, cmd::ERROR, &[err::INVALID_CHANNEL]).unwrap()
    );

    // An ERROR from a client is not answered.
    let e = fragment(3, cmd::ERROR, &[1]).unwrap();
    assert!(dev.handle(&e[0], now, &mut echo).is_empty());

    // A partial that went quiet is answered with MSG_TIMEOUT at the next report.
    let long = fragment(3, cmd::MSG, &payload(100)).unwrap();
    assert!(dev.handle(&long[0], now, &mut echo).is_empty());
    let out = dev.handle(&[0u8; REPORT_LEN], now + Duration::from_secs(1), &mut echo);
    assert_eq!(out, fragment(3, cmd::ERROR, &[err::MSG_TIMEOUT]).unwrap());
}
