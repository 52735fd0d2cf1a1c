//! The usage log: every grant, release, expiry, denial and revoke a license server made with
//! one publisher's licenses, hash-chained and checkpointed by a container of that publisher, so
//! that the publisher can check a customer's report offline (`tessera-vendor verify-usage`).
//!
//! The server writes it (`server::usage`); this module is the format, the checks and the
//! per-product, per-month summary, with no I/O of its own beyond a [`Read`], so the
//! publisher's tool needs no server feature.
//!
//! ```text
//! header:  "TSUL" | format version u16 LE | vendor_id u32 LE | server key [32]     (42 bytes)
//! record:  length u32 LE | postcard((RECORD_VERSION u16, Record))                  (repeated)
//! ```
//!
//! Each [`Record`] carries its sequence number (0, 1, 2, ...) and `prev`: the SHA-256 of the
//! previous record's body (the bytes after its length), or for record 0 the genesis value
//! `SHA-256("tessera usage log v1 genesis" | header)`. A [`Event::Checkpoint`] record covers
//! every record before it: it carries their count and the hash of the last one (its own
//! `prev`), and a [`UsageStatement`] a container signed over
//! [`checkpoint_digest`]`(header, count, head)` (envelope kind `UsageCheckpoint`), with the
//! container's publisher certificate. See `docs/SERVER.md`, "Usage log".

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::certificate::ContainerCertificate;
use super::envelope::{Envelope, Kind};
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

/// What a container signs when asked to sign a usage digest (envelope kind
/// `UsageCheckpoint`, with the container's own key). The envelope's domain separation keeps
/// it apart from everything else the container signs (seat tickets, delegations, requests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageStatement {
    /// The container's publisher.
    pub vendor_id: u32,
    /// The container's serial.
    pub serial: String,
    /// The container's Ed25519 key (the signer).
    pub container_key: [u8; 32],
    /// The digest signed ([`checkpoint_digest`]).
    pub digest: [u8; 32],
    /// The container's time when it signed (Unix seconds; never below its clock high-water
    /// mark).
    pub signed_at: u64,
    /// The container's number for this signature: 1 for its first usage signature, one more
    /// for each after (kept in the container's state). A gap between two checkpoints of a
    /// log means signatures that are not in it; a number that goes back, a container state
    /// put back to an earlier copy.
    pub sequence: u64,
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
    /// The container-signed [`UsageStatement`] (envelope kind `UsageCheckpoint`).
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
}

impl Event {
    /// The seat event it carries, if any.
    pub fn seat(&self) -> Option<&SeatEvent> {
        match self {
            Event::Grant(s) | Event::Release(s) | Event::Revoke(s) => Some(s),
            Event::Expire { seat, .. } | Event::Deny { seat, .. } | Event::Denials { seat, .. } => {
                Some(seat)
            }
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

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
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

fn record_damage(seq: u64, offset: u64, why: impl Into<String>) -> Damage {
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
                    "is about vendor {}, in the log of vendor {}",
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

/// Checks a checkpoint's signature chain: publisher key → container certificate → the
/// container-signed statement → the digest of this log's head. Returns the statement.
pub fn verify_checkpoint(
    header: &LogHeader,
    checkpoint: &Checkpoint,
    publisher: &VerifyingKey,
) -> std::result::Result<(UsageStatement, ContainerCertificate), String> {
    let cert_env = Envelope::parse(Kind::Certificate, &checkpoint.certificate)
        .map_err(|e| format!("its container certificate is unreadable: {e}"))?;
    if cert_env.verify(publisher).is_err() {
        return Err(
            "signed by a container of another publisher: its container certificate \
                    does not verify against the publisher key"
                .into(),
        );
    }
    let cert: ContainerCertificate = cert_env
        .decode()
        .map_err(|e| format!("its container certificate is unreadable: {e}"))?;
    if cert.vendor_id != header.vendor_id {
        return Err(format!(
            "signed by a container of vendor {}, not {}",
            cert.vendor_id, header.vendor_id
        ));
    }
    let env = Envelope::parse(Kind::UsageCheckpoint, &checkpoint.statement)
        .map_err(|e| format!("forged checkpoint: its statement is unreadable: {e}"))?;
    let container = VerifyingKey::from_bytes(&cert.sign_key)
        .map_err(|_| "its container certificate names an invalid key".to_string())?;
    if env.verify(&container).is_err() {
        return Err(format!(
            "forged checkpoint: its signature does not verify against the key of container {}",
            cert.serial
        ));
    }
    let st: UsageStatement = env
        .decode()
        .map_err(|e| format!("forged checkpoint: its statement is unreadable: {e}"))?;
    if st.container_key != cert.sign_key || st.serial != cert.serial {
        return Err(
            "forged checkpoint: statement and certificate name different containers".into(),
        );
    }
    if st.vendor_id != header.vendor_id {
        return Err(format!(
            "forged checkpoint: signed for vendor {}, not {}",
            st.vendor_id, header.vendor_id
        ));
    }
    if st.digest != checkpoint_digest(header, checkpoint.count, &checkpoint.head) {
        return Err(format!(
            "the container signed another head: records before this one were changed, deleted \
             or reordered after container {} signed it, or the checkpoint comes from another log",
            cert.serial
        ));
    }
    if let Some(expiry) = cert.expiry
        && st.signed_at >= expiry
    {
        return Err(format!(
            "signed by container {} after its certificate expired",
            cert.serial
        ));
    }
    Ok((st, cert))
}

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
    /// Seat time in milliseconds: for each counting unit, the time it held at least one seat.
    pub seat_ms: u64,
}

impl MonthSummary {
    /// Seat time in hours.
    pub fn seat_hours(&self) -> f64 {
        self.seat_ms as f64 / 3_600_000.0
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
struct Tally {
    products: HashMap<u32, ProductState>,
    /// Open seats → (product, license, unit key).
    seats: HashMap<[u8; 16], (u32, [u8; 16], String)>,
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
            let next = month_start_ms(m + 1).max(t + 1);
            let upto = next.min(to);
            months.entry((p, m)).or_default().seat_ms += upto - t;
            t = upto;
        }
    }

    fn open(
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

    /// Closes a seat at `t`; false when it was not open.
    fn close(
        &mut self,
        months: &mut BTreeMap<(u32, MonthIndex), MonthSummary>,
        seat_id: &[u8; 16],
        t: u64,
        now: u64,
    ) -> bool {
        let Some((p, lic, unit)) = self.seats.remove(seat_id) else {
            return false;
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

    fn finish(
        &mut self,
        months: &mut BTreeMap<(u32, MonthIndex), MonthSummary>,
        last_ms: u64,
    ) -> u64 {
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

/// Whether `next` goes on from `prev` (two reports of the same publisher, in order): for
/// every container that signed in both, its first signature number in `next` should be one
/// more than its last in `prev`. What does not, in words (empty: it goes on).
pub fn continuity(prev: &Report, next: &Report) -> Vec<String> {
    let mut findings = Vec::new();
    for (serial, &(first, _)) in &next.signature_numbers {
        let Some(&(_, last)) = prev.signature_numbers.get(serial) else {
            continue;
        };
        if first > last + 1 {
            findings.push(format!(
                "container {serial} made {} usage signature(s) between the two logs (numbers \
                 {} to {}) that are in neither",
                first - last - 1,
                last + 1,
                first - 1
            ));
        } else if first <= last {
            findings.push(format!(
                "container {serial}'s signatures in this log begin at {first}, not after the \
                 earlier log's last ({last}): the logs overlap, or the container was put back \
                 to an earlier copy"
            ));
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
            Event::Checkpoint(c) => {
                let (st, cert) = verify_checkpoint(header, c, publisher)
                    .map_err(|why| record_damage(rec.seq, s.offset, format!("checkpoint {why}")))?;
                match rep.signature_numbers.get_mut(&cert.serial) {
                    None => {
                        rep.signature_numbers
                            .insert(cert.serial.clone(), (st.sequence, st.sequence));
                    }
                    Some((_, last)) if st.sequence <= *last => {
                        rep.signature_rewinds += 1;
                        rep.findings.push(format!(
                            "record {}: container {}'s usage signature {} follows its \
                             signature {}: the container's state was put back to an earlier \
                             copy",
                            rec.seq, cert.serial, st.sequence, last
                        ));
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::container::Engine;
    use crate::container::protocol::{Request, Response};
    use crate::host::{Fingerprint, MachineKind};
    use crate::license::{ContainerKind, CountingUnit, VmPolicy};
    use crate::publisher::{LicenseSpec, PublisherKey};

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
            let header = LogHeader {
                vendor_id: VENDOR,
                server_key: [5; 32],
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
        let fake = super::super::envelope::sign(Kind::UsageCheckpoint, &body, &other).unwrap();
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
            Response::Error { status, .. } => {
                assert_eq!(status, crate::status::Status::DongleShared.code())
            }
            other => panic!("{other:?}"),
        }
    }
}
