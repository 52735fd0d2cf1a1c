//! The server's usage logs: one append-only, hash-chained file per publisher
//! (`<state_dir>/usage/<vendor_id>.log`, format in `license::usage`), written with the seat
//! table's group commit, checkpointed by a hosted container of that publisher at least every
//! `usage_checkpoint_s` and at shutdown.
//!
//! The daemon submits events with the seat table's changes, under the table's lock, so the
//! log's order is the table's order; the seat store's committer writes each batch's events
//! (one `write` per file: [`UsageJournal`]) before it commits the batch, and a grant is
//! answered once both are done. The log is synced in the background (when the server syncs
//! its seat table) at most once a second, and at every checkpoint, which a thread of its own
//! makes.
//!
//! At start each log is read from its first byte: a torn last record (a server killed in the
//! middle of a write) is cut, and the cut is recorded in the `Start` record that follows;
//! anything else wrong leaves the file untouched and the server grants no seats of that
//! publisher until an admin moves the log aside (no restart needed: the next event begins a
//! new log; `docs/SERVER.md`, "Usage log").

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::hosted::Hosted;
use super::seats::{SeatRow, SeatTable};
use crate::license::License;
use crate::license::usage::{
    self, Chain, ClientInfo, Event, HEADER_LEN, LogHeader, MAX_NAME, MAX_UNIT_KEY, SeatEvent,
};
use crate::net::proto::HostInfo;
use crate::util::now_ms;
use crate::{Error, Result};

/// Signs checkpoint digests with a container of a publisher.
pub trait CheckpointSigner: Send + Sync {
    /// A `UsageStatement` over `digest` signed by a container of `vendor_id`, and that
    /// container's certificate.
    fn sign_usage(&self, vendor_id: u32, digest: [u8; 32]) -> Result<(Vec<u8>, Vec<u8>)>;

    /// Whether the signer is gone for good (the server it signs for was dropped, e.g. after
    /// a start that failed to bind its port): the logs are then written without a
    /// checkpoint, quietly, as with no signer; the next start checkpoints them.
    fn gone(&self) -> bool {
        false
    }
}

impl CheckpointSigner for Hosted {
    fn sign_usage(&self, vendor_id: u32, digest: [u8; 32]) -> Result<(Vec<u8>, Vec<u8>)> {
        use crate::container::protocol::{Request, Response};
        let mut why = None;
        for c in self.containers.iter().filter(|c| c.vendor_id == vendor_id) {
            match c.call(Request::SignUsage { digest }) {
                Ok(Response::UsageSignature {
                    statement,
                    certificate,
                }) => return Ok((statement, certificate)),
                Ok(other) => {
                    why = Some(Error::malformed("container answer", format!("{other:?}")));
                }
                Err(e) => why = Some(e),
            }
        }
        Err(why.unwrap_or_else(|| {
            Error::NoLicense(format!("no container of vendor {vendor_id:#x} is hosted"))
        }))
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut n = max;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    s[..n].to_string()
}

/// The seat event for `row` of `license`, with the client where known.
pub fn seat_event(license: &License, row: &SeatRow, client: Option<&Arc<ClientInfo>>) -> SeatEvent {
    SeatEvent {
        vendor_id: license.vendor_id,
        product_code: license.product_code,
        license_id: row.license_id,
        seat_id: row.seat_id,
        unit_key: cut(&row.unit_key, MAX_UNIT_KEY),
        client: client.cloned(),
    }
}

/// What a record keeps of a client's hello.
pub fn client_info(h: &HostInfo) -> ClientInfo {
    ClientInfo {
        hostname: cut(&h.hostname, MAX_NAME),
        session: cut(&h.session, MAX_NAME),
        machine: h.machine.to_string(),
    }
}

/// One publisher's log file, open for appending. Not thread-safe: the server's logs hold it
/// (tests and tools may drive one directly).
pub struct LogFile {
    path: PathBuf,
    file: Arc<File>,
    /// The chain with the pending records.
    chain: Chain,
    /// The chain as of the last successful write (restored when a write fails).
    written: Chain,
    /// The file's length as written.
    len: u64,
    pending: Vec<u8>,
    scratch: Vec<u8>,
    /// Refusals folded since the last checkpoint ([`Event::Denials`]).
    folds: HashMap<FoldKey, Fold>,
}

/// The refusals that fold together: one license, one status, one host and session (or, past
/// [`MAX_FOLDS`] of those, every host: `None`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FoldKey {
    license_id: [u8; 16],
    status: u32,
    client: Option<(String, String)>,
}

/// Refusals counted under one key since the last checkpoint.
#[derive(Debug)]
struct Fold {
    /// The first refusal (written as a `Deny` when the key was new).
    first: SeatEvent,
    status: u32,
    since_ms: u64,
    /// Refusals after the first (not written).
    count: u64,
}

/// The most hosts-and-sessions whose refusals a log folds apart in one checkpoint interval;
/// past it, each license and status folds the refusals of all further clients together
/// (memory stays bounded whatever the clients send).
pub const MAX_FOLDS: usize = 4096;

/// What opening a log found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Whether the file was new (or held only a torn header).
    pub created: bool,
    /// Whole records it held.
    pub records: u64,
    /// Bytes of a torn last record that were cut.
    pub cut_bytes: u64,
}

impl LogFile {
    /// Opens the log at `path` (creating it with a header for `vendor_id` and `server_key`),
    /// reads it through, cuts a torn last record, and appends and syncs a `Start` record. A
    /// log that is damaged anywhere else is left as it is: `Tampered`, naming the first bad
    /// record.
    pub fn open(
        path: &Path,
        vendor_id: u32,
        server_key: [u8; 32],
        server_name: &str,
    ) -> Result<(LogFile, Opened)> {
        let io = |e| Error::io(path, e);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut opened = Opened::default();
        let header = LogHeader {
            vendor_id,
            server_key,
        };
        let torn_header = size > 0 && size < HEADER_LEN as u64 && {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut b).map_err(io)?;
            usage::MAGIC.starts_with(&b[..b.len().min(4)])
        };
        let (chain, len) = if size == 0 || torn_header {
            // New, or a header cut short by a crash while creating it: nothing to lose.
            file.set_len(0).map_err(io)?;
            (&file).write_all(&header.to_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            if let Some(dir) = path.parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
            opened.created = true;
            opened.cut_bytes = if torn_header { size } else { 0 };
            (Chain::new(header), HEADER_LEN as u64)
        } else {
            (&file).seek(SeekFrom::Start(0)).map_err(io)?;
            let end = usage::scan(BufReader::new(&file), |_, _| Ok(())).map_err(|e| match e {
                usage::ScanError::Damaged(d) => {
                    Error::Tampered(format!("usage log {}: {d}", path.display()))
                }
                usage::ScanError::Io(e) => e,
            })?;
            if end.chain.header.vendor_id != vendor_id {
                return Err(Error::Tampered(format!(
                    "usage log {}: header: it is the log of vendor {:#x}, not {vendor_id:#x}",
                    path.display(),
                    end.chain.header.vendor_id
                )));
            }
            if let Some(t) = &end.torn {
                warn!(log = %path.display(), torn = %t, "cutting a torn last record");
                file.set_len(end.end).map_err(io)?;
                opened.cut_bytes = size - end.end;
            }
            opened.records = end.chain.records;
            (end.chain, end.end)
        };
        let mut log = LogFile {
            path: path.to_owned(),
            file: Arc::new(file),
            written: chain.clone(),
            chain,
            len,
            pending: Vec::new(),
            scratch: Vec::new(),
            folds: HashMap::new(),
        };
        log.push(
            now_ms(),
            Event::Start {
                server: cut(server_name, MAX_NAME),
                server_key,
                version: crate::VERSION.to_string(),
                cut_bytes: opened.cut_bytes,
            },
        )?;
        log.flush(true)?;
        Ok((log, opened))
    }

    /// The publisher whose log this is.
    pub fn vendor_id(&self) -> u32 {
        self.chain.header.vendor_id
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records written or pending.
    pub fn records(&self) -> u64 {
        self.chain.records
    }

    /// Records (not checkpoints) since the last checkpoint, written or pending.
    pub fn uncovered(&self) -> u64 {
        self.chain.uncovered
    }

    /// Adds a record to the pending batch (written by [`LogFile::flush`]). Its time is
    /// `time_ms`, or the previous record's if that is later. A `Deny` like one already
    /// written since the last checkpoint is only counted ([`Event::Denials`]).
    pub fn push(&mut self, time_ms: u64, event: Event) -> Result<()> {
        if let Event::Deny { seat, status } = &event
            && self.fold(time_ms, seat, *status)
        {
            return Ok(());
        }
        self.chain
            .append(time_ms, event, &mut self.pending, &mut self.scratch)
    }

    /// Counts a refusal under its key; whether it was folded (`false`: the first of its key
    /// since the last checkpoint, to be written).
    fn fold(&mut self, time_ms: u64, seat: &SeatEvent, status: u32) -> bool {
        let mut key = FoldKey {
            license_id: seat.license_id,
            status,
            client: seat
                .client
                .as_ref()
                .map(|c| (c.hostname.clone(), c.session.clone())),
        };
        if !self.folds.contains_key(&key) && self.folds.len() >= MAX_FOLDS {
            key.client = None;
        }
        match self.folds.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut f) => {
                f.get_mut().count += 1;
                true
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                let mut first = seat.clone();
                if v.key().client.is_none() {
                    first.client = None;
                }
                v.insert(Fold {
                    first,
                    status,
                    since_ms: time_ms,
                    count: 0,
                });
                false
            }
        }
    }

    /// Adds a [`Event::Denials`] record for each key with folded refusals, oldest first, and
    /// begins folding anew (a checkpoint does this first, so that it covers them).
    pub fn flush_folds(&mut self, time_ms: u64) -> Result<()> {
        let mut folds: Vec<Fold> = std::mem::take(&mut self.folds)
            .into_values()
            .filter(|f| f.count > 0)
            .collect();
        folds.sort_by_key(|f| f.since_ms);
        for f in folds {
            let event = Event::Denials {
                seat: f.first,
                status: f.status,
                count: f.count,
                since_ms: f.since_ms,
            };
            self.chain
                .append(time_ms, event, &mut self.pending, &mut self.scratch)?;
        }
        Ok(())
    }

    /// Writes the pending records (one `write`), and syncs the file when `sync`. On failure
    /// the file is cut back to its last whole record and the pending records are dropped.
    pub fn flush(&mut self, sync: bool) -> Result<()> {
        self.write_pending()?;
        if sync {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    /// Writes the pending records with one `write` (not synced). On failure the file is cut
    /// back to its last whole record and the pending records are dropped.
    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match (&*self.file).write_all(&self.pending) {
            Ok(()) => {
                self.len += self.pending.len() as u64;
                self.pending.clear();
                self.written = self.chain.clone();
                Ok(())
            }
            Err(e) => {
                self.pending.clear();
                self.chain = self.written.clone();
                if let Err(cut) = self.file.set_len(self.len) {
                    error!(log = %self.path.display(), error = %cut, "could not cut a failed write back");
                }
                Err(Error::io(&self.path, e))
            }
        }
    }

    /// Adds a checkpoint over every record so far, signed by `signer`, to the pending batch.
    pub fn checkpoint(&mut self, signer: &dyn CheckpointSigner, time_ms: u64) -> Result<()> {
        self.flush_folds(time_ms)?;
        let digest = self.chain.checkpoint_digest();
        let (statement, certificate) = signer.sign_usage(self.vendor_id(), digest)?;
        let event = self.chain.checkpoint(statement, certificate);
        self.push(time_ms, event)
    }
}

/// How the server's usage logs are written.
#[derive(Clone, Debug)]
pub struct UsageOptions {
    /// The directory of the logs (`<state_dir>/usage`).
    pub dir: PathBuf,
    /// The server's Noise static public key (in the header of a new log).
    pub server_key: [u8; 32],
    /// The server's name (in `Start` records).
    pub server_name: String,
    /// Sync a batch that holds a grant before the grant is answered.
    pub fsync: bool,
    /// Checkpoint at least this often.
    pub checkpoint_every: Duration,
}

/// An event for a publisher's log, stamped when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEvent {
    /// The publisher whose log it goes to.
    pub vendor_id: u32,
    /// When (Unix milliseconds).
    pub time_ms: u64,
    /// What.
    pub event: Event,
}

impl UsageEvent {
    /// `event` for `vendor_id`, now.
    pub fn now(vendor_id: u32, event: Event) -> UsageEvent {
        UsageEvent {
            vendor_id,
            time_ms: now_ms(),
            event,
        }
    }
}

/// A new seat: log it under the seat table's lock, after [`expired`] (an acquire prunes
/// first), so the log keeps the table's order.
pub fn granted(license: &License, row: &SeatRow, client: &Arc<ClientInfo>) -> UsageEvent {
    UsageEvent::now(
        license.vendor_id,
        Event::Grant(seat_event(license, row, Some(client))),
    )
}

/// A released seat (under the table's lock). One whose lease had already run out is logged
/// as expired at the end of its lease.
pub fn released(
    hosted: &Hosted,
    row: &SeatRow,
    client: &Arc<ClientInfo>,
    now_ms: u64,
) -> Option<UsageEvent> {
    let lic = license_of(hosted, row)?;
    let seat = seat_event(lic, row, Some(client));
    let event = if row.expires_ms <= now_ms {
        Event::Expire {
            seat,
            lease_end_ms: row.expires_ms,
        }
    } else {
        Event::Release(seat)
    };
    Some(UsageEvent::now(lic.vendor_id, event))
}

/// The seats the table dropped as expired since the last call (under its lock).
pub fn expired(hosted: &Hosted, table: &mut SeatTable) -> Vec<UsageEvent> {
    ended(
        hosted,
        table.take_expired().into_iter().map(|r| {
            let end = r.expires_ms;
            (r, end)
        }),
    )
}

/// Seats whose lease ran out, each with the end of its lease (Unix ms).
pub fn ended(hosted: &Hosted, rows: impl IntoIterator<Item = (SeatRow, u64)>) -> Vec<UsageEvent> {
    rows.into_iter()
        .filter_map(|(row, lease_end_ms)| {
            let lic = license_of(hosted, &row)?;
            Some(UsageEvent::now(
                lic.vendor_id,
                Event::Expire {
                    seat: seat_event(lic, &row, None),
                    lease_end_ms,
                },
            ))
        })
        .collect()
}

/// A refused acquire: the seat asked for by the client with the host key `client_key`, of the
/// license that came closest, and the status the client got.
pub fn denied(
    license: &License,
    seat_id: &[u8; 16],
    client_key: &[u8; 32],
    host: &HostInfo,
    client: &Arc<ClientInfo>,
    e: &Error,
) -> UsageEvent {
    let seat = SeatEvent {
        vendor_id: license.vendor_id,
        product_code: license.product_code,
        license_id: license.license_id,
        seat_id: *seat_id,
        unit_key: cut(
            &super::seats::unit_key(license.counting_unit, client_key, host, seat_id),
            MAX_UNIT_KEY,
        ),
        client: Some(Arc::clone(client)),
    };
    let status = e.status().code();
    UsageEvent::now(license.vendor_id, Event::Deny { seat, status })
}

/// A seat an admin revoked: call it with the row the seat table removed, under the table's
/// lock, and submit it with the seat's `Delete`.
pub fn revoked(hosted: &Hosted, row: &SeatRow) -> Option<UsageEvent> {
    let lic = license_of(hosted, row)?;
    Some(UsageEvent::now(
        lic.vendor_id,
        Event::Revoke(seat_event(lic, row, None)),
    ))
}

/// A lent seat (under the table's lock, submitted with its row): who borrowed it, into
/// which container, until when.
pub fn borrowed(license: &License, row: &SeatRow, client: &Arc<ClientInfo>) -> UsageEvent {
    let (borrower, until_ms) = row
        .borrow
        .as_ref()
        .map_or((String::new(), row.expires_ms), |b| {
            (
                cut(&b.borrower_serial, MAX_NAME),
                b.until.saturating_mul(1000),
            )
        });
    UsageEvent::now(
        license.vendor_id,
        Event::Borrow {
            seat: seat_event(license, row, Some(client)),
            borrower,
            until_ms,
        },
    )
}

/// A borrowed seat given back (under the table's lock, submitted with its `Delete`); the
/// client is who borrowed it.
pub fn returned(
    license: &License,
    seat_id: &[u8; 16],
    borrowed: &crate::server::seats::Borrowed,
) -> UsageEvent {
    UsageEvent::now(
        license.vendor_id,
        Event::Return(SeatEvent {
            vendor_id: license.vendor_id,
            product_code: license.product_code,
            license_id: license.license_id,
            seat_id: *seat_id,
            unit_key: crate::server::seats::borrow_unit_key(seat_id),
            client: Some(Arc::new(ClientInfo {
                hostname: cut(&borrowed.hostname, MAX_NAME),
                session: cut(&borrowed.user, MAX_NAME),
                machine: String::new(),
            })),
        }),
    )
}

fn license_of<'a>(hosted: &'a Hosted, row: &SeatRow) -> Option<&'a License> {
    let (ci, li) = hosted.by_license_id(&row.license_id)?;
    hosted.containers.get(ci)?.licenses.get(li)
}

/// A publisher's log as the server holds it.
enum Slot {
    Open(Box<LogFile>),
    /// Damaged or unwritable: nothing is appended, grants of this publisher are refused.
    Refused(String),
}

/// The logs, shared by the seat store's committer (which writes the events of each batch)
/// and the checkpoint thread.
struct Logs {
    options: UsageOptions,
    slots: HashMap<u32, Slot>,
    closed: bool,
}

fn log_path(options: &UsageOptions, vendor_id: u32) -> PathBuf {
    options.dir.join(format!("{vendor_id}.log"))
}

fn open_slot(options: &UsageOptions, vendor_id: u32) -> Slot {
    let path = log_path(options, vendor_id);
    match LogFile::open(&path, vendor_id, options.server_key, &options.server_name) {
        Ok((log, opened)) => {
            info!(
                log = %path.display(),
                records = opened.records,
                created = opened.created,
                cut_bytes = opened.cut_bytes,
                "usage log open"
            );
            Slot::Open(Box::new(log))
        }
        Err(e) => {
            let why = format!(
                "{e}; nothing is appended to it and no seats of vendor {vendor_id:#x} are granted \
                 until it is moved aside (keep it: the publisher may ask for it)"
            );
            error!(log = %path.display(), "usage log refused: {why}");
            Slot::Refused(why)
        }
    }
}

impl Logs {
    /// Adds an event to its publisher's pending records.
    fn push(&mut self, e: UsageEvent) -> std::result::Result<(), String> {
        if self.closed {
            return Err("the usage log is closed (the server is shutting down)".into());
        }
        let options = &self.options;
        let slot = self
            .slots
            .entry(e.vendor_id)
            .or_insert_with(|| open_slot(options, e.vendor_id));
        // A refused log that an admin moved aside: begin a new one.
        if matches!(slot, Slot::Refused(_)) && !log_path(options, e.vendor_id).exists() {
            *slot = open_slot(options, e.vendor_id);
        }
        match slot {
            Slot::Open(log) => log.push(e.time_ms, e.event).map_err(|e| e.to_string()),
            Slot::Refused(why) => Err(why.clone()),
        }
    }

    /// Writes every log's pending records; the publishers whose write failed, and the files
    /// written.
    fn write_pending(&mut self) -> (HashMap<u32, String>, Vec<Arc<File>>) {
        let mut failed = HashMap::new();
        let mut written = Vec::new();
        for (v, slot) in &mut self.slots {
            let Slot::Open(log) = slot else { continue };
            if log.pending.is_empty() {
                continue;
            }
            match log.write_pending() {
                Ok(()) => written.push(Arc::clone(&log.file)),
                Err(e) => {
                    error!(log = %log.path().display(), error = %e, "usage log write failed");
                    failed.insert(*v, e.to_string());
                }
            }
        }
        (failed, written)
    }

    /// Checkpoints every log with records since its last checkpoint, and syncs it.
    fn checkpoint_all(&mut self, signer: Option<&dyn CheckpointSigner>) {
        for slot in self.slots.values_mut() {
            let Slot::Open(log) = slot else { continue };
            let Some(signer) = signer.filter(|s| !s.gone()) else {
                // Nothing to sign with: the folded refusals are written all the same.
                if let Err(e) = log.flush_folds(now_ms()).and_then(|()| log.flush(false)) {
                    warn!(log = %log.path().display(), error = %e, "folded denials not written");
                }
                continue;
            };
            if log.uncovered() == 0 && log.folds.values().all(|f| f.count == 0) {
                log.folds.clear();
                continue;
            }
            // A container backend that panics must not take the server's logs with it.
            let signed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                log.checkpoint(signer, now_ms())
            }))
            .unwrap_or_else(|_| Err(Error::Internal("the container panicked".into())));
            match signed.and_then(|()| log.flush(true)) {
                Ok(()) => {
                    debug!(log = %log.path().display(), records = log.records(), "usage checkpoint")
                }
                Err(e) => warn!(
                    log = %log.path().display(),
                    error = %e,
                    "no usage checkpoint this time; the records since the last one stay unverified until the next"
                ),
            }
        }
    }
}

/// Syncs log files in the background, on a thread of its own, at most once per
/// [`super::store::LAZY_FLUSH`]. A grant waits for its record to be written (so a killed server
/// loses none), not synced: appending changes the file's size, so each sync of the log costs
/// an ext4 journal commit, and syncing after every batch, even beside the seat table's commit,
/// delays the seat table's own syncs on the same disk (measured: Acquire p50 from 0.38 to
/// 0.49-0.59 ms with one client). A power loss may cost the log its last second of records;
/// the seats themselves are in the seat table.
struct Syncer {
    tx: mpsc::Sender<Vec<Arc<File>>>,
}

impl Syncer {
    fn start() -> Result<Syncer> {
        let (tx, rx) = mpsc::channel::<Vec<Arc<File>>>();
        std::thread::Builder::new()
            .name("tessera-usage-sync".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                while let Ok(first) = rx.recv() {
                    if let Some(t) = last {
                        std::thread::sleep(super::store::LAZY_FLUSH.saturating_sub(t.elapsed()));
                    }
                    let mut files = first;
                    for more in rx.try_iter() {
                        files.extend(more);
                    }
                    files.sort_by_key(|f| Arc::as_ptr(f) as usize);
                    files.dedup_by_key(|f| Arc::as_ptr(f) as usize);
                    last = Some(Instant::now());
                    for f in files {
                        if let Err(e) = f.sync_data() {
                            error!(error = %e, "usage log not synced");
                        }
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("spawning the usage sync thread: {e}")))?;
        Ok(Syncer { tx })
    }

    fn sync(&self, files: Vec<Arc<File>>) {
        let _ = self.tx.send(files);
    }
}

/// The usage logs as the seat store's committer writes them
/// ([`super::store::Journal`]).
pub struct UsageJournal {
    logs: Arc<Mutex<Logs>>,
    syncer: Syncer,
}

impl super::store::Journal<UsageEvent> for UsageJournal {
    fn write(
        &mut self,
        events: Vec<Vec<UsageEvent>>,
        waited: bool,
    ) -> Vec<std::result::Result<(), String>> {
        let n = events.len();
        let mut results: Vec<std::result::Result<(), String>> = Vec::with_capacity(n);
        let mut vendors: Vec<Vec<u32>> = Vec::with_capacity(n);
        let Ok(mut logs) = self.logs.lock() else {
            return vec![Err("usage log lock poisoned".into()); n];
        };
        for submission in events {
            let mut r = Ok(());
            let mut vs = Vec::new();
            for e in submission {
                vs.push(e.vendor_id);
                if let Err(why) = logs.push(e)
                    && r.is_ok()
                {
                    r = Err(why);
                }
            }
            results.push(r);
            vendors.push(vs);
        }
        let (failed, written) = logs.write_pending();
        let fsync = logs.options.fsync;
        drop(logs);
        if !failed.is_empty() {
            for (r, vs) in results.iter_mut().zip(&vendors) {
                if let Some(e) = vs.iter().find_map(|v| failed.get(v))
                    && r.is_ok()
                {
                    *r = Err(e.clone());
                }
            }
        }
        if waited && fsync && !written.is_empty() {
            self.syncer.sync(written);
        }
        results
    }
}

enum Ctl {
    Close(oneshot::Sender<()>),
}

/// A publisher's log to send: the file and how much of it ([`UsageLog::export`]).
#[derive(Debug)]
pub struct Export {
    /// The publisher.
    pub vendor: u32,
    /// The log, open for reading at its start.
    pub file: File,
    /// Its length when it was checkpointed: send this much.
    pub len: u64,
}

/// A refusal a usage log records ([`UsageLog::logged_denials`]).
#[derive(Clone, Debug)]
pub struct LoggedDenial {
    /// When (Unix milliseconds; of the first, for folded refusals).
    pub time_ms: u64,
    /// What was asked for, and by whom when known.
    pub seat: SeatEvent,
    /// The `tessera_status` number the client got.
    pub status: u32,
    /// How many refusals the record stands for (folded ones: more than one).
    pub count: u64,
}

/// The server's usage logs: opened at start, written by the seat store's committer through
/// [`UsageLog::journal`], checkpointed by a thread of its own.
pub struct UsageLog {
    logs: Arc<Mutex<Logs>>,
    signer: Arc<OnceLock<Arc<dyn CheckpointSigner>>>,
    ctl: mpsc::Sender<Ctl>,
    thread: Option<JoinHandle<()>>,
}

impl UsageLog {
    /// Opens the logs of `vendors` (appending a `Start` record to each) and starts the
    /// checkpoint thread. A damaged log is reported in the returned problems and refused,
    /// not fatal.
    pub fn open(options: UsageOptions, vendors: &[u32]) -> Result<(UsageLog, Vec<String>)> {
        crate::util::ensure_dir(&options.dir)?;
        let mut slots = HashMap::new();
        let mut problems = Vec::new();
        for &v in vendors {
            let slot = open_slot(&options, v);
            if let Slot::Refused(why) = &slot {
                problems.push(why.clone());
            }
            slots.insert(v, slot);
        }
        let every = options.checkpoint_every;
        let logs = Arc::new(Mutex::new(Logs {
            options,
            slots,
            closed: false,
        }));
        let signer: Arc<OnceLock<Arc<dyn CheckpointSigner>>> = Arc::new(OnceLock::new());
        let (ctl, rx) = mpsc::channel();
        let (l, s) = (Arc::clone(&logs), Arc::clone(&signer));
        let thread = std::thread::Builder::new()
            .name("tessera-usage-checkpoint".into())
            .spawn(move || checkpoints(&l, &s, &rx, every))
            .map_err(|e| Error::Internal(format!("spawning the usage log thread: {e}")))?;
        Ok((
            UsageLog {
                logs,
                signer,
                ctl,
                thread: Some(thread),
            },
            problems,
        ))
    }

    /// Sets who signs checkpoints (until then, none are made).
    pub fn set_signer(&self, signer: Arc<dyn CheckpointSigner>) {
        let _ = self.signer.set(signer);
    }

    /// What the seat store's committer writes the events of each batch through.
    pub fn journal(&self) -> Result<UsageJournal> {
        Ok(UsageJournal {
            logs: Arc::clone(&self.logs),
            syncer: Syncer::start()?,
        })
    }

    /// Writes events now (synced if the server syncs), outside the committer: for tests and
    /// tools.
    pub fn write(&self, events: Vec<UsageEvent>) -> Result<()> {
        let mut logs = self
            .logs
            .lock()
            .map_err(|_| Error::Internal("usage log lock poisoned".into()))?;
        let fsync = logs.options.fsync;
        let mut r = Ok(());
        for e in events {
            if let Err(why) = logs.push(e)
                && r.is_ok()
            {
                r = Err(why);
            }
        }
        let (failed, written) = logs.write_pending();
        if let Some(e) = failed.into_values().next()
            && r.is_ok()
        {
            r = Err(e);
        }
        if fsync {
            for f in written {
                if let Err(e) = f.sync_data()
                    && r.is_ok()
                {
                    r = Err(e.to_string());
                }
            }
        }
        r.map_err(|e| Error::io("usage log", std::io::Error::other(e)))
    }

    /// One publisher's log as the publisher gets it (`GET /api/v1/usage`, `tessera admin
    /// export-usage`): checkpointed first, so that every record up to now is covered by a
    /// container's signature. `vendor` may be left out when the server keeps one log. The
    /// copy is the file up to its length after the checkpoint (records appended while it is
    /// read are left for the next export): an open handle and that length, to be streamed
    /// (a log of a year is not read into memory); the lock is not held while reading.
    pub fn export(&self, vendor: Option<u32>) -> Result<Export> {
        let (vendor, path, len) = {
            let mut logs = self
                .logs
                .lock()
                .map_err(|_| Error::Internal("usage log lock poisoned".into()))?;
            let vendor = match vendor {
                Some(v) => v,
                None => {
                    let mut vs: Vec<u32> = logs.slots.keys().copied().collect();
                    vs.sort_unstable();
                    match vs.as_slice() {
                        [v] => *v,
                        [] => return Err(Error::NoLicense("no usage log on this server".into())),
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "this server keeps the usage logs of vendors {}: name one \
                                 (vendor=ID)",
                                vs.iter()
                                    .map(|v| crate::publisher::vendor_hex(*v))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )));
                        }
                    }
                }
            };
            match logs.slots.get(&vendor) {
                None => {
                    return Err(Error::NoLicense(format!(
                        "no usage log of vendor {vendor:#x} on this server"
                    )));
                }
                Some(Slot::Refused(why)) => {
                    return Err(Error::Tampered(format!(
                        "the usage log of vendor {vendor:#x} is refused: {why}"
                    )));
                }
                Some(Slot::Open(_)) => {}
            }
            let (failed, _) = logs.write_pending();
            if let Some(e) = failed.get(&vendor) {
                return Err(Error::io("usage log", std::io::Error::other(e.clone())));
            }
            logs.checkpoint_all(self.signer.get().map(|s| s.as_ref()));
            let path = log_path(&logs.options, vendor);
            let len = std::fs::metadata(&path)
                .map_err(|e| Error::io(path.display().to_string(), e))?
                .len();
            (vendor, path, len)
        };
        let file = File::open(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(Export { vendor, file, len })
    }

    /// The latest `limit` refusals the logs record (`Deny` and folded `Denials`), newest
    /// last, read from the files as they are now (a record being appended is left out).
    /// Blocking: call off the async runtime.
    pub fn logged_denials(&self, limit: usize) -> Result<Vec<LoggedDenial>> {
        let paths: Vec<PathBuf> = {
            let logs = self
                .logs
                .lock()
                .map_err(|_| Error::Internal("usage log lock poisoned".into()))?;
            let mut vendors: Vec<u32> = logs.slots.keys().copied().collect();
            vendors.sort_unstable();
            vendors
                .into_iter()
                .map(|v| log_path(&logs.options, v))
                .collect()
        };
        let mut out: std::collections::VecDeque<LoggedDenial> = Default::default();
        for path in paths {
            let Ok(file) = File::open(&path) else {
                continue; // a refused log moved aside
            };
            let scanned = usage::scan(BufReader::new(file), |_, s| {
                let r = &s.record;
                let d = match &r.event {
                    Event::Deny { seat, status } => LoggedDenial {
                        time_ms: r.time_ms,
                        seat: seat.clone(),
                        status: *status,
                        count: 1,
                    },
                    Event::Denials {
                        seat,
                        status,
                        count,
                        since_ms,
                    } => LoggedDenial {
                        time_ms: *since_ms,
                        seat: seat.clone(),
                        status: *status,
                        count: *count,
                    },
                    _ => return Ok(()),
                };
                if out.len() == limit {
                    out.pop_front();
                }
                if limit > 0 {
                    out.push_back(d);
                }
                Ok(())
            });
            if let Err(e) = scanned {
                warn!(log = %path.display(), error = %e, "usage log not read for its refusals");
            }
        }
        let mut out: Vec<LoggedDenial> = out.into();
        out.sort_by_key(|d| d.time_ms);
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }

    /// Checkpoints every log with records since its last checkpoint, syncs and closes them:
    /// events written after this fail (grants waiting on them too).
    pub async fn close_async(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(Ctl::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// [`UsageLog::close_async`], blocking. Not from inside an async runtime.
    pub fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(Ctl::Close(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }
}

impl Drop for UsageLog {
    fn drop(&mut self) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.ctl.send(Ctl::Close(tx));
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

/// The checkpoint thread: every `every`, and once more when closed.
fn checkpoints(
    logs: &Mutex<Logs>,
    signer: &OnceLock<Arc<dyn CheckpointSigner>>,
    ctl: &mpsc::Receiver<Ctl>,
    every: Duration,
) {
    let mut next = Instant::now() + every;
    loop {
        let close = match ctl.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Ctl::Close(done)) => Some(Some(done)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(None),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
        };
        // Signing holds the logs' lock: the committer waits for it (a software container
        // signs in microseconds, a dongle in milliseconds), and the checkpoint covers exactly
        // the records before it.
        let Ok(mut l) = logs.lock() else { return };
        l.checkpoint_all(signer.get().map(|s| s.as_ref()));
        if let Some(done) = close {
            for slot in l.slots.values_mut() {
                if let Slot::Open(log) = slot
                    && let Err(e) = log.flush(true)
                {
                    error!(log = %log.path().display(), error = %e, "usage log not synced at shutdown");
                }
            }
            l.closed = true;
            l.slots.clear();
            drop(l);
            if let Some(done) = done {
                let _ = done.send(());
            }
            return;
        }
        drop(l);
        next = Instant::now() + every;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::container::Engine;
    use crate::container::engine::RequestContext;
    use crate::container::protocol::{Request, Response, response_error};
    use crate::license::usage::Report;
    use crate::license::usage::tests::container_at;
    use crate::publisher::PublisherKey;

    /// Signs through the container protocol, as a hosted container does.
    struct EngineSigner(Mutex<Engine>);

    impl CheckpointSigner for EngineSigner {
        fn sign_usage(&self, vendor_id: u32, digest: [u8; 32]) -> Result<(Vec<u8>, Vec<u8>)> {
            let mut e = self.0.lock().unwrap();
            if vendor_id != e.state().vendor_id {
                return Err(Error::NoLicense(format!(
                    "no container of vendor {vendor_id:#x}"
                )));
            }
            let ctx = RequestContext {
                now: crate::util::now(),
                now_ms: 0,
                host: None,
                machine: crate::host::MachineKind::Physical,
            };
            match e.handle(Request::SignUsage { digest }, &ctx).0 {
                Response::UsageSignature {
                    statement,
                    certificate,
                } => Ok((statement, certificate)),
                Response::Error { status, message } => Err(response_error(status, message)),
                other => panic!("{other:?}"),
            }
        }
    }

    fn signer(key: &PublisherKey) -> EngineSigner {
        EngineSigner(Mutex::new(container_at(key, crate::util::now())))
    }

    fn grant(vendor_id: u32, n: u8) -> Event {
        Event::Grant(SeatEvent {
            vendor_id,
            product_code: 1,
            license_id: [1; 16],
            seat_id: [n; 16],
            unit_key: format!("handle:{n}"),
            client: None,
        })
    }

    fn release(vendor_id: u32, n: u8) -> Event {
        match grant(vendor_id, n) {
            Event::Grant(s) => Event::Release(s),
            _ => unreachable!(),
        }
    }

    fn verified(path: &Path, key: &PublisherKey) -> Report {
        usage::verify(File::open(path).unwrap(), &key.public_key()).unwrap()
    }

    fn deny(vendor_id: u32, n: u8, host: &str, session: &str, status: u32) -> Event {
        let Event::Grant(mut seat) = grant(vendor_id, n) else {
            unreachable!()
        };
        seat.client = Some(Arc::new(ClientInfo {
            hostname: host.into(),
            session: session.into(),
            machine: "physical".into(),
        }));
        Event::Deny { seat, status }
    }

    /// The events of a log, in order.
    fn events(path: &Path) -> Vec<Event> {
        let bytes = std::fs::read(path).unwrap();
        let mut out = Vec::new();
        usage::scan(&bytes[..], |_, s| {
            out.push(s.record.event.clone());
            Ok(())
        })
        .unwrap();
        out
    }

    /// A new log of vendor 77 in a fresh directory, with the publisher key and a signer.
    fn new_log() -> (
        PublisherKey,
        EngineSigner,
        tempfile::TempDir,
        PathBuf,
        LogFile,
    ) {
        let key = PublisherKey::generate(77, "p");
        let s = signer(&key);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("77.log");
        let (log, _) = LogFile::open(&path, 77, [5; 32], "s").unwrap();
        (key, s, dir, path, log)
    }

    #[test]
    fn a_client_refused_again_and_again_costs_two_records_per_checkpoint() {
        let (key, s, _dir, path, mut log) = new_log();
        let t = now_ms();
        // One client retries 500 times; another is refused twice; a third once, otherwise.
        for i in 0..500u64 {
            log.push(t + i, deny(77, (i % 200) as u8, "loop", "1", 7))
                .unwrap();
        }
        log.push(t + 600, deny(77, 1, "other", "2", 7)).unwrap();
        log.push(t + 601, deny(77, 2, "other", "2", 7)).unwrap();
        log.push(t + 602, deny(77, 3, "loop", "1", 9)).unwrap();
        log.checkpoint(&s, t + 700).unwrap();
        // After the checkpoint, folding starts anew: the next refusal is written in full.
        log.push(t + 800, deny(77, 4, "loop", "1", 7)).unwrap();
        log.checkpoint(&s, t + 900).unwrap();
        log.flush(true).unwrap();
        let names: Vec<&str> = events(&path).iter().map(Event::name).collect();
        assert_eq!(
            names,
            [
                "start",
                "denial",
                "denial",
                "denial",
                "folded denials",
                "folded denials",
                "checkpoint",
                "denial",
                "checkpoint"
            ]
        );
        let folded: Vec<(String, u64, u64)> = events(&path)
            .into_iter()
            .filter_map(|e| match e {
                Event::Denials {
                    seat,
                    count,
                    since_ms,
                    ..
                } => Some((seat.client.unwrap().hostname.clone(), count, since_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(
            folded,
            [
                ("loop".to_string(), 499, t),
                ("other".to_string(), 1, t + 600)
            ]
        );
        let r = verified(&path, &key);
        assert_eq!(r.months.values().map(|m| m.denials).sum::<u64>(), 504);
        assert_eq!(r.unverified_tail, 0);
    }

    #[test]
    fn past_max_folds_clients_fold_together_and_every_refusal_is_counted() {
        let (key, s, _dir, path, mut log) = new_log();
        let t = now_ms();
        // Every attempt from a new session, three times over.
        let sessions = MAX_FOLDS + 1_000;
        for round in 0..3u64 {
            for n in 0..sessions {
                log.push(t + round, deny(77, 1, "h", &n.to_string(), 7))
                    .unwrap();
            }
        }
        assert!(log.folds.len() <= MAX_FOLDS + 1, "memory stays bounded");
        log.checkpoint(&s, t + 10).unwrap();
        log.flush(true).unwrap();
        let all = events(&path);
        // The first MAX_FOLDS sessions and the shared key each got one Deny and one Denials.
        assert_eq!(
            all.iter()
                .filter(|e| matches!(e, Event::Deny { .. }))
                .count(),
            MAX_FOLDS + 1
        );
        let shared = all
            .iter()
            .find_map(|e| match e {
                Event::Denials { seat, count, .. } if seat.client.is_none() => Some(*count),
                _ => None,
            })
            .expect("the shared fold, with no client named");
        assert_eq!(shared, 3 * 1_000 - 1);
        let r = verified(&path, &key);
        assert_eq!(
            r.months.values().map(|m| m.denials).sum::<u64>(),
            3 * sessions as u64
        );
    }

    #[test]
    fn a_log_reopens_where_it_ended_and_cuts_only_a_torn_tail() {
        let key = PublisherKey::generate(77, "p");
        let s = signer(&key);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("77.log");
        let (mut log, o) = LogFile::open(&path, 77, [5; 32], "s").unwrap();
        assert_eq!((o.created, o.records, o.cut_bytes), (true, 0, 0));
        log.push(now_ms(), grant(77, 1)).unwrap();
        log.checkpoint(&s, now_ms()).unwrap();
        log.flush(false).unwrap();
        assert_eq!(log.uncovered(), 0);
        drop(log);
        // A server killed in the middle of a write: a length of 20 and 3 bytes of the body.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[20, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (mut log, o) = LogFile::open(&path, 77, [6; 32], "s").unwrap();
        assert_eq!((o.created, o.records, o.cut_bytes), (false, 3, 7));
        assert_eq!(log.records(), 4, "and a Start after them");
        log.push(now_ms(), release(77, 1)).unwrap();
        log.checkpoint(&s, now_ms()).unwrap();
        log.flush(true).unwrap();
        drop(log);
        let r = verified(&path, &key);
        assert_eq!(r.server_key, [5; 32], "the key that began the log");
        assert_eq!((r.starts, r.cut_bytes, r.checkpoints), (2, 7, 2));
        assert_eq!((r.records, r.verified, r.unverified_tail), (6, 5, 0));
        let m = r.months.values().next().unwrap();
        assert_eq!((m.grants, m.releases), (1, 1));
    }

    #[test]
    fn a_log_damaged_before_its_end_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("77.log");
        let (mut log, _) = LogFile::open(&path, 77, [5; 32], "s").unwrap();
        for n in 0..3 {
            log.push(now_ms(), grant(77, n)).unwrap();
        }
        log.flush(false).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = HEADER_LEN + 20; // inside record 0 (the Start)
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let e = LogFile::open(&path, 77, [5; 32], "s").err().unwrap();
        assert!(matches!(e, Error::Tampered(_)), "{e}");
        assert!(e.to_string().contains("at byte 42"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing changed");
        // Another publisher's log under this name is refused too.
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let e = LogFile::open(&path, 78, [5; 32], "s").err().unwrap();
        assert!(
            e.to_string().contains("the log of vendor 0x4d, not 0x4e"),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Not a log at all.
        std::fs::write(&path, b"something else entirely, longer than a header").unwrap();
        let e = LogFile::open(&path, 77, [5; 32], "s").err().unwrap();
        assert!(e.to_string().contains("bad magic"), "{e}");
    }

    #[test]
    fn the_logs_checkpoint_on_time_and_at_close_and_refuse_a_damaged_log() {
        use super::super::store::Journal;
        let key = PublisherKey::generate(77, "p");
        let dir = tempfile::tempdir().unwrap();
        let damaged = dir.path().join("78.log");
        let mut junk = LogHeader {
            vendor_id: 78,
            server_key: [5; 32],
        }
        .to_bytes()
        .to_vec();
        junk.extend_from_slice(&[3, 0, 0, 0, 1, 2, 3, 4, 5]);
        std::fs::write(&damaged, &junk).unwrap();
        let options = UsageOptions {
            dir: dir.path().to_path_buf(),
            server_key: [5; 32],
            server_name: "s".into(),
            fsync: true,
            checkpoint_every: Duration::from_millis(200),
        };
        let (log, problems) = UsageLog::open(options, &[77, 78]).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("78.log"), "{problems:?}");
        log.set_signer(Arc::new(signer(&key)));
        let ev = UsageEvent::now;
        log.write(vec![ev(77, grant(77, 1))]).unwrap();
        let e = log.write(vec![ev(78, grant(78, 1))]).unwrap_err();
        assert!(e.to_string().contains("moved aside"), "{e}");
        assert!(
            log.write(vec![ev(78, grant(78, 1))]).is_err(),
            "still refused"
        );
        // Moved aside while the server runs: the next event begins a new log.
        let aside = dir.path().join("78.log.damaged");
        std::fs::rename(&damaged, &aside).unwrap();
        log.write(vec![ev(78, grant(78, 2))]).unwrap();
        assert!(damaged.exists());
        // A publisher not hosted at the start gets its log when its first event comes.
        log.write(vec![ev(79, grant(79, 1))]).unwrap();
        let path = dir.path().join("77.log");
        let start = Instant::now();
        while verified(&path, &key).checkpoints == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "no checkpoint");
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = verified(&path, &key);
        assert_eq!((r.records, r.unverified_tail), (3, 0), "{r:?}");
        // Through the committer's journal: a result per submission.
        let mut j = log.journal().unwrap();
        let results = j.write(
            vec![
                vec![ev(77, release(77, 1))],
                vec![ev(77, grant(77, 2)), ev(80, grant(80, 1))],
            ],
            true,
        );
        assert_eq!(results, vec![Ok(()), Ok(())]);
        assert_eq!(
            j.write(vec![vec![ev(77, release(77, 2))]], false),
            vec![Ok(())]
        );
        log.close();
        let r = verified(&path, &key);
        assert_eq!(
            r.unverified_tail, 0,
            "the shutdown checkpoint covers the rest"
        );
        assert_eq!(r.records, 7);
        assert!(log.write(vec![ev(77, grant(77, 3))]).is_err(), "closed");
        assert!(
            j.write(vec![vec![ev(77, grant(77, 3))]], true)[0].is_err(),
            "closed"
        );
        assert_eq!(std::fs::read(&aside).unwrap(), junk, "left as it was");
        // Vendor 79 has no container here: its log is chained but never checkpointed.
        assert!(matches!(
            usage::verify(
                File::open(dir.path().join("79.log")).unwrap(),
                &key.public_key()
            ),
            Ok(Report {
                checkpoints: 0,
                unverified_tail: 2,
                ..
            })
        ));
    }
}
