//! Messages over 64-byte reports with channel ids (CTAPHID-like); see `docs/DONGLES.md`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Bytes in one report.
pub const REPORT_LEN: usize = 64;
/// One report.
pub type Report = [u8; REPORT_LEN];

/// A pipe of reports to a dongle (client side): hidapi, the report socket, the MSD file.
pub trait ReportDevice: Send {
    /// Sends one report.
    fn write_report(&mut self, report: &Report) -> Result<()>;
    /// Receives one report, or `None` when none arrives within `timeout`.
    fn read_report(&mut self, timeout: Duration) -> Result<Option<Report>>;
}

/// The dongle side: what a transport server feeds the reports it receives into.
pub trait ReportSink: Send {
    /// Processes one report from a client at time `now`; returns the reports to send back
    /// (to every client, as a HID device does).
    fn handle_report(&mut self, report: &Report, now: Instant) -> Vec<Report>;
}

/// The broadcast CID: INIT requests and their answers travel on it.
pub const BROADCAST_CID: u32 = 0xFFFF_FFFF;
/// Payload bytes in an initialization packet.
pub const INIT_DATA: usize = REPORT_LEN - 7;
/// Payload bytes in a continuation packet.
pub const CONT_DATA: usize = REPORT_LEN - 5;
/// Continuation packets per message (sequence numbers `0x00..=0x7F`).
pub const MAX_CONTINUATIONS: usize = 128;
/// The largest message: one initialization packet and 128 continuation packets.
pub const MAX_MESSAGE: usize = INIT_DATA + MAX_CONTINUATIONS * CONT_DATA;
/// The longest gap between two reports of one message before its partial is dropped.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_millis(500);
/// The framing version an INIT answer carries.
pub const FRAMING_VERSION: u8 = 1;
/// Partial messages (CIDs) a [`Reassembler`] holds at once; beyond it a new multi-report
/// message is answered with [`err::CHANNEL_BUSY`].
pub const MAX_PARTIALS: usize = 64;

/// Commands (the CMD byte of an initialization packet; bit 7 is always set).
pub mod cmd {
    /// Echoed back.
    pub const PING: u8 = 0x81;
    /// Allocates a CID (on the broadcast CID, with an 8-byte nonce).
    pub const INIT: u8 = 0x86;
    /// A Noise handshake message.
    pub const HANDSHAKE: u8 = 0x90;
    /// One channel frame.
    pub const MSG: u8 = 0x91;
    /// A framing error; the payload is one of the [`super::err`] codes.
    pub const ERROR: u8 = 0xBF;
}

/// Error codes carried by an [`cmd::ERROR`] message.
pub mod err {
    /// The command is not known.
    pub const INVALID_CMD: u8 = 0x01;
    /// A parameter is invalid.
    pub const INVALID_PAR: u8 = 0x02;
    /// The length (BCNT) is invalid.
    pub const INVALID_LEN: u8 = 0x03;
    /// A continuation without an initialization packet, or a wrong sequence number.
    pub const INVALID_SEQ: u8 = 0x04;
    /// The gap between two reports of a message exceeded [`super::MESSAGE_TIMEOUT`].
    pub const MSG_TIMEOUT: u8 = 0x05;
    /// The receiver cannot take another message now.
    pub const CHANNEL_BUSY: u8 = 0x06;
    /// The CID is not valid for this command.
    pub const INVALID_CHANNEL: u8 = 0x0B;
    /// Anything else.
    pub const OTHER: u8 = 0x7F;

    /// A short name of an error code, for messages.
    pub fn name(code: u8) -> &'static str {
        match code {
            INVALID_CMD => "invalid command",
            INVALID_PAR => "invalid parameter",
            INVALID_LEN => "invalid length",
            INVALID_SEQ => "invalid sequence",
            MSG_TIMEOUT => "message timeout",
            CHANNEL_BUSY => "channel busy",
            INVALID_CHANNEL => "invalid channel",
            OTHER => "other error",
            _ => "unknown error code",
        }
    }
}

/// A complete message: what one or more reports of one CID carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The channel id.
    pub cid: u32,
    /// The command (bit 7 set).
    pub cmd: u8,
    /// The payload, at most [`MAX_MESSAGE`] bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// A message.
    pub fn new(cid: u32, cmd: u8, payload: impl Into<Vec<u8>>) -> Self {
        Message {
            cid,
            cmd,
            payload: payload.into(),
        }
    }

    /// An [`cmd::ERROR`] message with one of the [`err`] codes.
    pub fn error(cid: u32, code: u8) -> Self {
        Message::new(cid, cmd::ERROR, vec![code])
    }
}

/// A framing error to answer with an [`cmd::ERROR`] message on `cid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameError {
    /// The CID the offending report came on.
    pub cid: u32,
    /// One of the [`err`] codes.
    pub code: u8,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "framing error {:#04x} ({}) on CID {:#010x}",
            self.code,
            err::name(self.code),
            self.cid
        )
    }
}

/// The CID of a report.
pub fn report_cid(report: &Report) -> u32 {
    u32::from_be_bytes([report[0], report[1], report[2], report[3]])
}

/// Splits a message into reports: one initialization packet, then continuation packets
/// with sequence numbers from 0. Unused bytes are zero.
pub fn fragment(cid: u32, cmd: u8, payload: &[u8]) -> Result<Vec<Report>> {
    if cid == 0 {
        return Err(Error::InvalidArgument(
            "CID 0 is reserved for padding".into(),
        ));
    }
    if cmd & 0x80 == 0 {
        return Err(Error::InvalidArgument(format!(
            "command {cmd:#04x} lacks bit 7"
        )));
    }
    if payload.len() > MAX_MESSAGE {
        return Err(Error::InvalidArgument(format!(
            "message of {} bytes exceeds the framing limit of {MAX_MESSAGE}",
            payload.len()
        )));
    }
    let first = payload.len().min(INIT_DATA);
    let mut reports = Vec::with_capacity(1 + (payload.len() - first).div_ceil(CONT_DATA));
    let mut init = [0u8; REPORT_LEN];
    init[..4].copy_from_slice(&cid.to_be_bytes());
    init[4] = cmd;
    // Fits: MAX_MESSAGE < 65536.
    init[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    init[7..7 + first].copy_from_slice(&payload[..first]);
    reports.push(init);
    for (seq, chunk) in payload[first..].chunks(CONT_DATA).enumerate() {
        let mut cont = [0u8; REPORT_LEN];
        cont[..4].copy_from_slice(&cid.to_be_bytes());
        // At most 128 chunks: seq fits in 0x00..=0x7F.
        cont[4] = seq as u8;
        cont[5..5 + chunk.len()].copy_from_slice(chunk);
        reports.push(cont);
    }
    Ok(reports)
}

/// A message being reassembled.
#[derive(Debug)]
struct Partial {
    cmd: u8,
    total: usize,
    data: Vec<u8>,
    next_seq: u8,
    last: Instant,
}

/// Reassembles messages from reports, per CID; see `docs/DONGLES.md` for the rules
/// (padding, resync, timeouts). Holds at most [`MAX_PARTIALS`] partial messages.
#[derive(Debug, Default)]
pub struct Reassembler {
    partials: HashMap<u32, Partial>,
    /// Partials dropped for a timeout by `push`, not yet reported by `expire`.
    timed_out: Vec<FrameError>,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a partial message is pending on `cid`.
    pub fn has_partial(&self, cid: u32) -> bool {
        self.partials.contains_key(&cid)
    }

    /// Partial messages pending.
    pub fn pending(&self) -> usize {
        self.partials.len()
    }

    /// Feeds one report received at `now`. Returns `None` when the report completes
    /// nothing (padding, or a message still incomplete), a complete message, or a framing
    /// error to answer on the report's CID.
    pub fn push(&mut self, report: &Report, now: Instant) -> Option<Result<Message, FrameError>> {
        let cid = report_cid(report);
        if cid == 0 {
            return None;
        }
        // A partial of this CID whose gap is too long: a continuation of it is an error; an
        // initialization packet replaces it anyway.
        let own_stale = self
            .partials
            .get(&cid)
            .is_some_and(|p| now.saturating_duration_since(p.last) > MESSAGE_TIMEOUT);
        if own_stale {
            self.partials.remove(&cid);
        }
        self.sweep(now);

        if report[4] & 0x80 != 0 {
            return self.push_init(cid, report, now);
        }
        let seq = report[4];
        if own_stale {
            return Some(Err(FrameError {
                cid,
                code: err::MSG_TIMEOUT,
            }));
        }
        let Some(partial) = self.partials.get_mut(&cid) else {
            return Some(Err(FrameError {
                cid,
                code: err::INVALID_SEQ,
            }));
        };
        if seq != partial.next_seq {
            self.partials.remove(&cid);
            return Some(Err(FrameError {
                cid,
                code: err::INVALID_SEQ,
            }));
        }
        let take = (partial.total - partial.data.len()).min(CONT_DATA);
        partial.data.extend_from_slice(&report[5..5 + take]);
        partial.next_seq += 1;
        partial.last = now;
        if partial.data.len() < partial.total {
            return None;
        }
        let partial = self.partials.remove(&cid)?;
        Some(Ok(Message {
            cid,
            cmd: partial.cmd,
            payload: partial.data,
        }))
    }

    fn push_init(
        &mut self,
        cid: u32,
        report: &Report,
        now: Instant,
    ) -> Option<Result<Message, FrameError>> {
        // A new initialization packet starts afresh (resync).
        self.partials.remove(&cid);
        let cmd = report[4];
        let total = usize::from(u16::from_be_bytes([report[5], report[6]]));
        if total > MAX_MESSAGE {
            return Some(Err(FrameError {
                cid,
                code: err::INVALID_LEN,
            }));
        }
        if total <= INIT_DATA {
            return Some(Ok(Message {
                cid,
                cmd,
                payload: report[7..7 + total].to_vec(),
            }));
        }
        if self.partials.len() >= MAX_PARTIALS {
            return Some(Err(FrameError {
                cid,
                code: err::CHANNEL_BUSY,
            }));
        }
        let mut data = Vec::with_capacity(total);
        data.extend_from_slice(&report[7..]);
        self.partials.insert(
            cid,
            Partial {
                cmd,
                total,
                data,
                next_seq: 0,
                last: now,
            },
        );
        None
    }

    /// Moves partials older than the timeout to `timed_out`.
    fn sweep(&mut self, now: Instant) {
        let stale: Vec<u32> = self
            .partials
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last) > MESSAGE_TIMEOUT)
            .map(|(cid, _)| *cid)
            .collect();
        for cid in stale {
            self.partials.remove(&cid);
            if self.timed_out.len() >= MAX_PARTIALS {
                self.timed_out.remove(0);
            }
            self.timed_out.push(FrameError {
                cid,
                code: err::MSG_TIMEOUT,
            });
        }
    }

    /// Drops the partials whose last report is older than [`MESSAGE_TIMEOUT`] at `now` and
    /// returns a [`err::MSG_TIMEOUT`] error for each (including those `push` already
    /// dropped since the last call).
    pub fn expire(&mut self, now: Instant) -> Vec<FrameError> {
        self.sweep(now);
        std::mem::take(&mut self.timed_out)
    }
}

/// The error a received [`cmd::ERROR`] message turns into on the client side.
fn dongle_error(msg: &Message) -> Error {
    match msg.payload.first() {
        Some(&code) => Error::malformed(
            "dongle answer",
            format!(
                "the dongle answered ERROR {code:#04x} ({}) on CID {:#010x}",
                err::name(code),
                msg.cid
            ),
        ),
        None => Error::malformed(
            "dongle answer",
            format!(
                "the dongle answered an empty ERROR on CID {:#010x}",
                msg.cid
            ),
        ),
    }
}

/// Sends a message and waits for the first complete message on `cid` that `accept` takes.
/// Reports of other CIDs and padding are dropped; an ERROR message ends the exchange with an
/// error unless `ignore_errors` (on the broadcast CID, an ERROR may answer someone else).
fn exchange(
    dev: &mut dyn ReportDevice,
    cid: u32,
    command: u8,
    payload: &[u8],
    timeout: Duration,
    accept: &dyn Fn(&Message) -> bool,
    ignore_errors: bool,
) -> Result<Message> {
    let deadline = Instant::now() + timeout;
    for report in fragment(cid, command, payload)? {
        dev.write_report(&report)?;
    }
    let mut reassembler = Reassembler::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let Some(report) = dev.read_report(deadline - now)? else {
            continue;
        };
        if report_cid(&report) != cid {
            continue;
        }
        let had_partial = reassembler.has_partial(cid);
        match reassembler.push(&report, Instant::now()) {
            None => {}
            Some(Ok(msg)) if msg.cmd == cmd::ERROR => {
                if !ignore_errors {
                    return Err(dongle_error(&msg));
                }
                tracing::debug!("dongle framing: ignoring {}", dongle_error(&msg));
            }
            Some(Ok(msg)) if accept(&msg) => return Ok(msg),
            // An answer to someone else on the broadcast CID.
            Some(Ok(_)) => {}
            // A fragment of our answer was lost: it cannot complete any more.
            Some(Err(e)) if had_partial => {
                return Err(Error::malformed(
                    "dongle answer",
                    format!("answer broken off: {e}"),
                ));
            }
            // A stray continuation (say, the tail of an answer an earlier exchange gave up
            // on): wait for the next initialization packet.
            Some(Err(e)) => tracing::debug!("dongle framing: ignoring {e}"),
        }
    }
    Err(Error::Timeout(format!(
        "no answer from the dongle on CID {cid:#010x} within {} ms",
        timeout.as_millis()
    )))
}

/// Sends a message on `cid` and returns the dongle's answer on it. Reports of other CIDs
/// and padding are dropped. An ERROR answer becomes [`Error::Malformed`] naming the code;
/// no complete answer within `timeout` is [`Error::Timeout`].
pub fn transact(
    dev: &mut dyn ReportDevice,
    cid: u32,
    cmd: u8,
    payload: &[u8],
    timeout: Duration,
) -> Result<Message> {
    exchange(dev, cid, cmd, payload, timeout, &|_| true, false)
}

/// Allocates a channel: INIT on the broadcast CID with a random nonce; returns the CID of
/// the answer that carries the same nonce (answers to other processes' INITs are skipped).
pub fn allocate_channel(dev: &mut dyn ReportDevice, timeout: Duration) -> Result<u32> {
    let nonce = crate::util::random::<8>();
    let accept =
        |m: &Message| m.cmd == cmd::INIT && m.payload.len() >= 12 && m.payload[..8] == nonce;
    let answer = exchange(
        dev,
        BROADCAST_CID,
        cmd::INIT,
        &nonce,
        timeout,
        &accept,
        true,
    )?;
    let cid = u32::from_be_bytes([
        answer.payload[8],
        answer.payload[9],
        answer.payload[10],
        answer.payload[11],
    ]);
    if cid == 0 || cid == BROADCAST_CID {
        return Err(Error::malformed(
            "dongle answer",
            format!("INIT allocated the reserved CID {cid:#010x}"),
        ));
    }
    if let Some(&version) = answer.payload.get(12)
        && version != FRAMING_VERSION
    {
        return Err(Error::Unsupported(format!(
            "dongle framing version {version} (this build speaks {FRAMING_VERSION})"
        )));
    }
    Ok(cid)
}

/// The dongle side of the framing, shared by every dongle implementation: reassembles
/// requests, allocates CIDs (INIT on the broadcast CID), echoes PING, answers framing errors
/// with ERROR, and hands every other complete message to the caller.
#[derive(Debug)]
pub struct DeviceFraming {
    reassembler: Reassembler,
    next_cid: u32,
    capabilities: u8,
}

impl Default for DeviceFraming {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceFraming {
    /// A device whose CIDs start at a random point (so that a restarted dongle does not hand
    /// out the CIDs of before).
    pub fn new() -> Self {
        DeviceFraming {
            reassembler: Reassembler::new(),
            next_cid: u32::from_be_bytes(crate::util::random::<4>()),
            capabilities: 0,
        }
    }

    /// Sets the capabilities byte INIT answers carry.
    pub fn with_capabilities(mut self, capabilities: u8) -> Self {
        self.capabilities = capabilities;
        self
    }

    fn allocate(&mut self) -> u32 {
        loop {
            let cid = self.next_cid;
            self.next_cid = self.next_cid.wrapping_add(1);
            if cid != 0 && cid != BROADCAST_CID {
                return cid;
            }
        }
    }

    /// Processes one report received at `now` and returns the reports to send back.
    /// `on_message` gets every complete message other than INIT, PING and ERROR and returns
    /// the answer to send, if any (on the CID it names).
    pub fn handle(
        &mut self,
        report: &Report,
        now: Instant,
        on_message: &mut dyn FnMut(Message) -> Option<Message>,
    ) -> Vec<Report> {
        let mut out = Vec::new();
        for e in self.reassembler.expire(now) {
            push_message(&mut out, &Message::error(e.cid, e.code));
        }
        let msg = match self.reassembler.push(report, now) {
            None => return out,
            Some(Err(e)) => {
                push_message(&mut out, &Message::error(e.cid, e.code));
                return out;
            }
            Some(Ok(msg)) => msg,
        };
        let answer = match msg.cmd {
            cmd::INIT => {
                if msg.payload.len() != 8 {
                    Some(Message::error(msg.cid, err::INVALID_LEN))
                } else {
                    // On the broadcast CID a new channel; on an allocated one, the same
                    // CID again (the client resyncs it).
                    let cid = if msg.cid == BROADCAST_CID {
                        self.allocate()
                    } else {
                        msg.cid
                    };
                    let mut payload = msg.payload.clone();
                    payload.extend_from_slice(&cid.to_be_bytes());
                    payload.push(FRAMING_VERSION);
                    payload.push(self.capabilities);
                    Some(Message::new(msg.cid, cmd::INIT, payload))
                }
            }
            _ if msg.cid == BROADCAST_CID => Some(Message::error(msg.cid, err::INVALID_CHANNEL)),
            cmd::PING => Some(msg),
            // Never answer an error with an error.
            cmd::ERROR => None,
            _ => {
                let cid = msg.cid;
                on_message(msg).map(|answer| {
                    if answer.cid == 0 {
                        Message::error(cid, err::OTHER)
                    } else {
                        answer
                    }
                })
            }
        };
        if let Some(answer) = answer {
            push_message(&mut out, &answer);
        }
        out
    }
}

/// Appends the reports of `msg`; one that cannot be framed becomes ERROR OTHER on its CID.
fn push_message(out: &mut Vec<Report>, msg: &Message) {
    match fragment(msg.cid, msg.cmd, &msg.payload) {
        Ok(reports) => out.extend(reports),
        Err(e) => {
            tracing::debug!("dongle framing: cannot send answer: {e}");
            if let Ok(reports) = fragment(msg.cid, cmd::ERROR, &[err::OTHER]) {
                out.extend(reports);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

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
}
