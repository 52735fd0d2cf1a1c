//! The log's format and its reading: the header, the hash-chained records and what they
//! record, appending to the chain, the digest a checkpoint's container signs, and [`scan`],
//! which reads a log from its first byte and names the first record that is torn, changed,
//! missing or out of order. A checkpoint's signature is checked in [`super::checkpoint`].

use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The first four bytes of a usage log.
pub const MAGIC: [u8; 4] = *b"TSUL";
/// The file format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// The record encoding version (in front of every record body).
pub const RECORD_VERSION: u16 = 1;
/// The header's length.
pub const HEADER_LEN: usize = 4 + 2 + 4 + 32;
/// The longest record body accepted; the server bounds every string it logs far below this.
pub const MAX_RECORD: usize = 64 * 1024;
/// The longest host name or session id a record carries (longer ones are cut).
pub const MAX_NAME: usize = 256;
/// The longest unit key a record carries (longer ones are cut).
pub const MAX_UNIT_KEY: usize = 512;

const GENESIS_DOMAIN: &[u8] = b"tessera usage log v1 genesis";
const CHECKPOINT_DOMAIN: &[u8] = b"tessera usage checkpoint v1";

/// The log's header: whose log it is and which server began it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogHeader {
    /// The publisher whose licenses the log is about.
    pub vendor_id: u32,
    /// The Noise static key of the server that began the log.
    pub server_key: [u8; 32],
}

impl LogHeader {
    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[6..10].copy_from_slice(&self.vendor_id.to_le_bytes());
        b[10..].copy_from_slice(&self.server_key);
        b
    }

    /// Parses a header (the first [`HEADER_LEN`] bytes of a log).
    pub fn parse(b: &[u8]) -> Result<LogHeader> {
        let what = "usage log";
        if b.len() < 4 || b[..4] != MAGIC {
            return Err(Error::malformed(
                what,
                "not a Tessera usage log (bad magic)",
            ));
        }
        if b.len() < HEADER_LEN {
            return Err(Error::malformed(
                what,
                format!("truncated in its header: {} of {HEADER_LEN} bytes", b.len()),
            ));
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if version != FORMAT_VERSION {
            return Err(Error::UnknownVersion {
                what,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let mut server_key = [0u8; 32];
        server_key.copy_from_slice(&b[10..HEADER_LEN]);
        Ok(LogHeader {
            vendor_id: u32::from_le_bytes([b[6], b[7], b[8], b[9]]),
            server_key,
        })
    }

    /// What record 0 links to: `SHA-256("tessera usage log v1 genesis" | header)`.
    pub fn genesis(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(GENESIS_DOMAIN);
        h.update(self.to_bytes());
        h.finalize().into()
    }
}

/// The hash a record is linked by: SHA-256 of its body (the bytes after its length).
pub fn record_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// What a container signs for a checkpoint: `SHA-256("tessera usage checkpoint v1" |
/// vendor_id | server key | count | head)`, binding the head to this log and its length.
pub fn checkpoint_digest(header: &LogHeader, count: u64, head: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHECKPOINT_DOMAIN);
    h.update(header.vendor_id.to_le_bytes());
    h.update(header.server_key);
    h.update(count.to_le_bytes());
    h.update(head);
    h.finalize().into()
}

/// Who took part in a seat event, as the client's hello said (absent where the server only
/// has the seat row: expiries and revokes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The client's host name.
    pub hostname: String,
    /// Its login / terminal-server session id (`uid:<uid>/…`: the user is in it).
    pub session: String,
    /// Physical machine or VM (and which hypervisor), as text.
    pub machine: String,
}

/// A seat event: which seat of which license, for whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatEvent {
    /// The publisher.
    pub vendor_id: u32,
    /// The product.
    pub product_code: u32,
    /// The license.
    pub license_id: [u8; 16],
    /// The seat id (client-chosen, kept across reconnects).
    pub seat_id: [u8; 16],
    /// What the license's counting unit counts (`docs/SERVER.md`, Counting).
    pub unit_key: String,
    /// The client, where known.
    pub client: Option<std::sync::Arc<ClientInfo>>,
}

/// A checkpoint: the records before it, committed to by a container of the publisher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// How many records it covers: all records before it (so it equals its own sequence
    /// number).
    pub count: u64,
    /// The hash of the last record covered (equal to its own `prev`).
    pub head: [u8; 32],
    /// The container-signed [`UsageStatement`](super::UsageStatement) (envelope kind `UsageCheckpoint`).
    pub statement: Vec<u8>,
    /// The container's publisher-signed certificate.
    pub certificate: Vec<u8>,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The server started (or began this log).
    Start {
        /// The server's name.
        server: String,
        /// The server's Noise static key now (the header keeps the key that began the log).
        server_key: [u8; 32],
        /// The server's version.
        version: String,
        /// Bytes of a torn last record the server cut before this start (a server killed
        /// in the middle of a write leaves one).
        cut_bytes: u64,
    },
    /// A new seat was granted (an idempotent re-acquire of a live seat is not logged).
    Grant(SeatEvent),
    /// The client released its seat.
    Release(SeatEvent),
    /// The seat's lease ran out.
    Expire {
        /// The seat.
        seat: SeatEvent,
        /// When the lease ended (Unix milliseconds; before the record's time).
        lease_end_ms: u64,
    },
    /// An acquire was refused.
    Deny {
        /// The seat asked for, of the license that came closest.
        seat: SeatEvent,
        /// The `tessera_status` number the client got.
        status: u32,
    },
    /// An admin took the seat away.
    Revoke(SeatEvent),
    /// A checkpoint.
    Checkpoint(Checkpoint),
    /// Refusals folded into one record: after a `Deny` is written, further refusals of the
    /// same license to the same host and session with the same status are only counted until
    /// the next checkpoint, which this record comes just before. A client that retries
    /// without end costs the log two records per checkpoint interval, not one per attempt.
    Denials {
        /// The first refusal folded (its client is left out when the refusals of several
        /// clients were folded together: the server folds that way past a few thousand
        /// distinct ones at once).
        seat: SeatEvent,
        /// The `tessera_status` number the clients got.
        status: u32,
        /// How many refusals were folded (none of them has a record of its own).
        count: u64,
        /// When the first of them happened (Unix milliseconds).
        since_ms: u64,
    },
    /// A seat was lent to another machine's container (`license::borrow`): held until
    /// `until_ms` or its return, whatever the borrower does meanwhile. Its end is a
    /// [`Event::Return`], or an [`Event::Expire`] at `until_ms`.
    Borrow {
        /// The seat (its client: who borrowed it).
        seat: SeatEvent,
        /// The borrowing container's serial.
        borrower: String,
        /// When the borrowed seat ends (Unix milliseconds).
        until_ms: u64,
    },
    /// A borrowed seat was given back before its end (signed by the borrowing container).
    Return(SeatEvent),
}

impl Event {
    /// The seat event it carries, if any.
    pub fn seat(&self) -> Option<&SeatEvent> {
        match self {
            Event::Grant(s) | Event::Release(s) | Event::Revoke(s) | Event::Return(s) => Some(s),
            Event::Expire { seat, .. }
            | Event::Deny { seat, .. }
            | Event::Denials { seat, .. }
            | Event::Borrow { seat, .. } => Some(seat),
            Event::Start { .. } | Event::Checkpoint(_) => None,
        }
    }

    /// The event's name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start { .. } => "start",
            Event::Grant(_) => "grant",
            Event::Release(_) => "release",
            Event::Expire { .. } => "expiry",
            Event::Deny { .. } => "denial",
            Event::Revoke(_) => "revoke",
            Event::Checkpoint(_) => "checkpoint",
            Event::Denials { .. } => "folded denials",
            Event::Borrow { .. } => "borrow",
            Event::Return(_) => "return",
        }
    }
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its sequence number: 0 for the first record, one more for each after.
    pub seq: u64,
    /// When it was written (Unix milliseconds; never earlier than the record before).
    pub time_ms: u64,
    /// The hash of the previous record's body, or the header's genesis value.
    pub prev: [u8; 32],
    /// What happened.
    pub event: Event,
}

impl Record {
    /// The record body (what is hashed and written after the length).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        crate::util::encode_versioned_into(RECORD_VERSION, self, "usage record", out)
    }
}

/// What is wrong with a log: where, and why. Sequence numbers and byte offsets name the first
/// bad record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The file ends in the middle of a record: a torn write (a server killed while writing
    /// leaves one; the server cuts it when it starts again). Everything before `offset` is
    /// intact.
    Torn {
        /// The record cut short.
        seq: u64,
        /// Where it starts (the length of the intact log).
        offset: u64,
        /// Bytes present of it.
        have: u64,
        /// Bytes it should have (0 when even its length is cut short, or for a run of zeros).
        need: u64,
    },
    /// The header is wrong.
    Header(String),
    /// A record is wrong: changed, missing, out of order, forged.
    Record {
        /// Its sequence number (where it should be).
        seq: u64,
        /// Where it starts.
        offset: u64,
        /// Why.
        why: String,
    },
}

impl Damage {
    /// The first bad record's sequence number and byte offset (`None` for the header).
    pub fn location(&self) -> Option<(u64, u64)> {
        match self {
            Damage::Torn { seq, offset, .. } | Damage::Record { seq, offset, .. } => {
                Some((*seq, *offset))
            }
            Damage::Header(_) => None,
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Torn {
                seq,
                offset,
                have,
                need,
            } => {
                write!(
                    f,
                    "truncated in the middle of record {seq} at byte {offset}"
                )?;
                if *need > 0 {
                    write!(f, " ({have} of {need} bytes)")?;
                } else {
                    write!(f, " ({have} bytes left, not a whole record)")?;
                }
                Ok(())
            }
            Damage::Header(why) => write!(f, "header: {why}"),
            Damage::Record { seq, offset, why } => {
                write!(f, "record {seq} at byte {offset}: {why}")
            }
        }
    }
}

impl std::error::Error for Damage {}

/// Why a log could not be read through: it is damaged, or reading it failed.
#[derive(Debug)]
pub enum ScanError {
    /// The log is damaged (the first bad record).
    Damaged(Damage),
    /// Reading failed.
    Io(Error),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Damaged(d) => d.fmt(f),
            ScanError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ScanError {}

impl From<Damage> for ScanError {
    fn from(d: Damage) -> Self {
        ScanError::Damaged(d)
    }
}

/// One record as read, with where it is and its hash.
#[derive(Clone, Debug)]
pub struct Scanned {
    /// Where its length starts.
    pub offset: u64,
    /// Its total length on disk (length field and body).
    pub len: u64,
    /// Its hash ([`record_hash`] of the body).
    pub hash: [u8; 32],
    /// The record.
    pub record: Record,
}

/// The end of a log: what the next record links to. Appending through it keeps the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The header.
    pub header: LogHeader,
    /// The hash of the last record (the genesis value when there is none).
    pub head: [u8; 32],
    /// The number of records (the next one's sequence number).
    pub records: u64,
    /// The time of the last record (0 when there is none).
    pub last_time_ms: u64,
    /// Records (not checkpoints) after the last checkpoint.
    pub uncovered: u64,
}

impl Chain {
    /// The chain of an empty log.
    pub fn new(header: LogHeader) -> Chain {
        Chain {
            head: header.genesis(),
            header,
            records: 0,
            last_time_ms: 0,
            uncovered: 0,
        }
    }

    /// Appends a record (length and body) to `out`: the next sequence number, linked to the
    /// head, at `time_ms` or the previous record's time if that is later. `scratch` is a
    /// buffer the caller reuses.
    pub fn append(
        &mut self,
        time_ms: u64,
        event: Event,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        let is_checkpoint = matches!(event, Event::Checkpoint(_));
        let rec = Record {
            seq: self.records,
            time_ms: time_ms.max(self.last_time_ms),
            prev: self.head,
            event,
        };
        rec.encode(scratch)?;
        if scratch.len() > MAX_RECORD {
            return Err(Error::InvalidArgument(format!(
                "a usage record of {} bytes (at most {MAX_RECORD})",
                scratch.len()
            )));
        }
        out.extend_from_slice(&(scratch.len() as u32).to_le_bytes());
        out.extend_from_slice(scratch);
        self.head = record_hash(scratch);
        self.records += 1;
        self.last_time_ms = rec.time_ms;
        if is_checkpoint {
            self.uncovered = 0;
        } else {
            self.uncovered += 1;
        }
        Ok(())
    }

    /// What a container signs to checkpoint every record so far.
    pub fn checkpoint_digest(&self) -> [u8; 32] {
        checkpoint_digest(&self.header, self.records, &self.head)
    }

    /// The checkpoint record's event for every record so far, with the container's signed
    /// statement over [`Chain::checkpoint_digest`] and its certificate.
    pub fn checkpoint(&self, statement: Vec<u8>, certificate: Vec<u8>) -> Event {
        Event::Checkpoint(Checkpoint {
            count: self.records,
            head: self.head,
            statement,
            certificate,
        })
    }
}

/// Where a log that reads cleanly ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEnd {
    /// The chain at the last whole record.
    pub chain: Chain,
    /// The length of the intact log (header and whole records).
    pub end: u64,
    /// A torn last record after `end`, if any.
    pub torn: Option<Damage>,
}

pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads the rest of `r` and says whether it is all zero bytes, and how many there were.
fn rest_is_zeros(r: &mut impl Read, seen: &[u8]) -> std::io::Result<(bool, u64)> {
    let mut zeros = seen.iter().all(|b| *b == 0);
    let mut n = seen.len() as u64;
    let mut buf = [0u8; 8192];
    loop {
        let k = read_full(r, &mut buf)?;
        if k == 0 {
            return Ok((zeros, n));
        }
        zeros &= buf[..k].iter().all(|b| *b == 0);
        n += k as u64;
    }
}

pub(super) fn record_damage(seq: u64, offset: u64, why: impl Into<String>) -> Damage {
    Damage::Record {
        seq,
        offset,
        why: why.into(),
    }
}

/// Reads a log from its first byte: checks the header, each record's framing, encoding,
/// sequence number, hash link, time order and vendor, and each checkpoint's count and head
/// (not its signature: that needs the publisher key, see [`verify`]). Calls `visit` with each
/// good record in order; an error from `visit` stops the scan.
///
/// A file that ends in the middle of a record (or in a run of zero bytes after the last
/// whole one, which a power loss can leave) reads cleanly up to there and reports the torn
/// part in [`ScanEnd::torn`]. Anything else wrong is a [`Damage`] naming the first bad
/// record.
pub fn scan(
    mut r: impl Read,
    mut visit: impl FnMut(&LogHeader, &Scanned) -> std::result::Result<(), Damage>,
) -> std::result::Result<ScanEnd, ScanError> {
    let io = |e: std::io::Error| ScanError::Io(Error::io("usage log", e));
    let mut hb = [0u8; HEADER_LEN];
    let n = read_full(&mut r, &mut hb).map_err(io)?;
    let header = LogHeader::parse(&hb[..n]).map_err(|e| Damage::Header(e.to_string()))?;
    let mut end = ScanEnd {
        chain: Chain::new(header),
        end: HEADER_LEN as u64,
        torn: None,
    };
    let mut prev_offset = None;
    let mut body = Vec::new();
    loop {
        let (seq, offset) = (end.chain.records, end.end);
        let mut len = [0u8; 4];
        let got = read_full(&mut r, &mut len).map_err(io)?;
        if got == 0 {
            return Ok(end);
        }
        let torn = |have: u64, need: u64| Damage::Torn {
            seq,
            offset,
            have,
            need,
        };
        if got < 4 {
            end.torn = Some(torn(got as u64, 0));
            return Ok(end);
        }
        let n = u32::from_le_bytes(len) as usize;
        if n == 0 {
            let (zeros, have) = rest_is_zeros(&mut r, &len).map_err(io)?;
            if zeros {
                end.torn = Some(torn(have, 0));
                return Ok(end);
            }
            return Err(record_damage(seq, offset, "has length 0").into());
        }
        if n > MAX_RECORD {
            return Err(record_damage(
                seq,
                offset,
                format!("has length {n}, more than the {MAX_RECORD} a record may have"),
            )
            .into());
        }
        body.resize(n, 0);
        let got = read_full(&mut r, &mut body).map_err(io)?;
        if got < n {
            end.torn = Some(torn(4 + got as u64, 4 + n as u64));
            return Ok(end);
        }
        let record: Record =
            crate::util::decode_versioned(RECORD_VERSION, &body, "usage record")
                .map_err(|e| record_damage(seq, offset, format!("does not decode: {e}")))?;
        if record.seq != seq {
            let why = if record.seq > seq {
                format!(
                    "record {seq} is missing: the record here is number {} (records were \
                     deleted or reordered)",
                    record.seq
                )
            } else {
                format!(
                    "out of order: the record here is number {}, which belongs before \
                     (records were reordered or repeated)",
                    record.seq
                )
            };
            return Err(record_damage(seq, offset, why).into());
        }
        if record.prev != end.chain.head {
            return Err(match prev_offset {
                None => record_damage(
                    seq,
                    offset,
                    "does not link to the log's header (the header or this record was changed)",
                ),
                Some(p) => record_damage(
                    seq - 1,
                    p,
                    format!(
                        "changed after it was written: its hash does not match the link in \
                         record {seq} at byte {offset}"
                    ),
                ),
            }
            .into());
        }
        if record.time_ms < end.chain.last_time_ms {
            return Err(record_damage(
                seq,
                offset,
                "its time is earlier than the record before it",
            )
            .into());
        }
        if let Some(s) = record.event.seat()
            && s.vendor_id != header.vendor_id
        {
            return Err(record_damage(
                seq,
                offset,
                format!(
                    "is about vendor {:#x}, in the log of vendor {:#x}",
                    s.vendor_id, header.vendor_id
                ),
            )
            .into());
        }
        match &record.event {
            Event::Checkpoint(c) => {
                if c.count != seq || c.head != record.prev {
                    return Err(record_damage(
                        seq,
                        offset,
                        "checkpoint does not cover exactly the records before it",
                    )
                    .into());
                }
                end.chain.uncovered = 0;
            }
            _ => end.chain.uncovered += 1,
        }
        let scanned = Scanned {
            offset,
            len: 4 + n as u64,
            hash: record_hash(&body),
            record,
        };
        visit(&header, &scanned)?;
        end.chain.head = scanned.hash;
        end.chain.records += 1;
        end.end += scanned.len;
        end.chain.last_time_ms = scanned.record.time_ms;
        prev_offset = Some(offset);
    }
}
