//! The server's usage logs: one append-only, hash-chained file per publisher
//! (`<state_dir>/usage/<vendor_id>.log`, format in `license::usage`), written by a thread of
//! its own, checkpointed by a hosted container of that publisher at least every
//! `usage_checkpoint_s` and at shutdown.
//!
//! The daemon hands events to [`UsageLog`] under the seat table's lock, so the log's order is
//! the table's order; the writer thread assigns sequence numbers and links, and writes every
//! batch it finds pending with one `write` per file. A grant waits for its record to be
//! written (and synced, when the server syncs its seat table) in parallel with the seat
//! table's commit; other events do not wait.
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
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::hosted::Hosted;
use super::seats::{SeatRow, SeatTable};
use crate::license::License;
use crate::license::usage::{
    self, Chain, ClientInfo, Event, HEADER_LEN, LogHeader, MAX_NAME, MAX_UNIT_KEY, SeatEvent,
};
use crate::net::proto::HostInfo;
use crate::{Error, Result};

/// Signs checkpoint digests with a container of a publisher.
pub trait CheckpointSigner: Send + Sync {
    /// A `UsageStatement` over `digest` signed by a container of `vendor_id`, and that
    /// container's certificate.
    fn sign_usage(&self, vendor_id: u32, digest: [u8; 32]) -> Result<(Vec<u8>, Vec<u8>)>;
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
            Error::NoLicense(format!("no container of vendor {vendor_id} is hosted"))
        }))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
pub fn seat_event(license: &License, row: &SeatRow, client: Option<&HostInfo>) -> SeatEvent {
    SeatEvent {
        vendor_id: license.vendor_id,
        product_code: license.product_code,
        license_id: row.license_id,
        seat_id: row.seat_id,
        unit_key: cut(&row.unit_key, MAX_UNIT_KEY),
        client: client.map(client_info),
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

/// One publisher's log file, open for appending. Not thread-safe: the writer thread owns it
/// (tests and tools may drive one directly).
pub struct LogFile {
    path: PathBuf,
    file: File,
    /// The chain with the pending records.
    chain: Chain,
    /// The chain as of the last successful write (restored when a write fails).
    written: Chain,
    /// The file's length as written.
    len: u64,
    pending: Vec<u8>,
    scratch: Vec<u8>,
}

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
                    "usage log {}: header: it is the log of vendor {}, not {vendor_id}",
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
            file,
            written: chain.clone(),
            chain,
            len,
            pending: Vec::new(),
            scratch: Vec::new(),
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
    /// `time_ms`, or the previous record's if that is later.
    pub fn push(&mut self, time_ms: u64, event: Event) -> Result<()> {
        self.chain
            .append(time_ms, event, &mut self.pending, &mut self.scratch)
    }

    /// Writes the pending records (one `write`), and syncs the file when `sync`. On failure
    /// the file is cut back to its last whole record and the pending records are dropped.
    pub fn flush(&mut self, sync: bool) -> Result<()> {
        let r = (&self.file)
            .write_all(&self.pending)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match r {
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

type Done = oneshot::Sender<Result<(), String>>;

enum Msg {
    Event {
        vendor_id: u32,
        time_ms: u64,
        event: Event,
        done: Option<Done>,
    },
    Close(oneshot::Sender<()>),
}

/// A publisher's log as the writer thread holds it.
enum Slot {
    Open(Box<LogFile>),
    /// Damaged or unwritable: nothing is appended, grants of this publisher are refused.
    Refused(String),
}

/// The completion of a logged grant.
pub struct UsageWaiter {
    rx: oneshot::Receiver<Result<(), String>>,
}

impl UsageWaiter {
    /// Waits until the record is written (and synced, if the server syncs).
    pub async fn wait_async(self) -> Result<()> {
        outcome(self.rx.await)
    }

    /// Blocks until the record is written. Not from inside an async runtime.
    pub fn wait(self) -> Result<()> {
        outcome(self.rx.blocking_recv())
    }
}

fn outcome(r: std::result::Result<Result<(), String>, oneshot::error::RecvError>) -> Result<()> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::io("usage log", std::io::Error::other(e))),
        Err(_) => Err(Error::io(
            "usage log",
            std::io::Error::other("the usage log is closed (the server is shutting down)"),
        )),
    }
}

/// The server's usage logs: the handle the daemon appends through.
pub struct UsageLog {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    signer: Arc<OnceLock<Arc<dyn CheckpointSigner>>>,
}

impl UsageLog {
    /// Opens the logs of `vendors` (appending a `Start` record to each) and starts the writer
    /// thread. A damaged log is reported in the returned problems and refused, not fatal.
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
        let (tx, rx) = mpsc::channel();
        let signer: Arc<OnceLock<Arc<dyn CheckpointSigner>>> = Arc::new(OnceLock::new());
        let s = Arc::clone(&signer);
        let thread = std::thread::Builder::new()
            .name("tessera-usage-log".into())
            .spawn(move || {
                Writer {
                    options,
                    slots,
                    signer: s,
                }
                .run(rx)
            })
            .map_err(|e| Error::Internal(format!("spawning the usage log thread: {e}")))?;
        Ok((
            UsageLog {
                tx,
                thread: Some(thread),
                signer,
            },
            problems,
        ))
    }

    /// Sets who signs checkpoints (until then, none are made).
    pub fn set_signer(&self, signer: Arc<dyn CheckpointSigner>) {
        let _ = self.signer.set(signer);
    }

    /// Appends an event; nobody waits for it.
    pub fn append(&self, vendor_id: u32, event: Event) {
        let _ = self.tx.send(Msg::Event {
            vendor_id,
            time_ms: now_ms(),
            event,
            done: None,
        });
    }

    /// Appends an event; the waiter resolves once it is written (and synced, if the server
    /// syncs), or fails when it cannot be (a refused log, a full disk, shutdown).
    pub fn append_wait(&self, vendor_id: u32, event: Event) -> UsageWaiter {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Event {
            vendor_id,
            time_ms: now_ms(),
            event,
            done: Some(done),
        });
        UsageWaiter { rx }
    }

    /// Logs a new seat (call under the seat table's lock, after
    /// [`UsageLog::expired`], so the log keeps the table's order).
    pub fn granted(&self, license: &License, row: &SeatRow, client: &HostInfo) -> UsageWaiter {
        self.append_wait(
            license.vendor_id,
            Event::Grant(seat_event(license, row, Some(client))),
        )
    }

    /// Logs a released seat (under the table's lock). A seat whose lease had already run
    /// out is logged as expired at the end of its lease.
    pub fn released(&self, hosted: &Hosted, row: &SeatRow, client: &HostInfo, now_ms: u64) {
        let Some(lic) = license_of(hosted, row) else {
            return;
        };
        let seat = seat_event(lic, row, Some(client));
        let event = if row.expires_ms <= now_ms {
            Event::Expire {
                seat,
                lease_end_ms: row.expires_ms,
            }
        } else {
            Event::Release(seat)
        };
        self.append(lic.vendor_id, event);
    }

    /// Logs the seats the table dropped as expired since the last call (under its lock).
    pub fn expired(&self, hosted: &Hosted, table: &mut SeatTable) {
        for row in table.take_expired() {
            if let Some(lic) = license_of(hosted, &row) {
                self.append(
                    lic.vendor_id,
                    Event::Expire {
                        seat: seat_event(lic, &row, None),
                        lease_end_ms: row.expires_ms,
                    },
                );
            }
        }
    }

    /// Logs a refused acquire: the seat asked for, of the license that came closest, and the
    /// status the client got.
    pub fn denied(&self, license: &License, seat_id: &[u8; 16], client: &HostInfo, e: &Error) {
        let seat = SeatEvent {
            vendor_id: license.vendor_id,
            product_code: license.product_code,
            license_id: license.license_id,
            seat_id: *seat_id,
            unit_key: cut(
                &super::seats::unit_key(license.counting_unit, client, seat_id),
                MAX_UNIT_KEY,
            ),
            client: Some(client_info(client)),
        };
        let status = crate::ffi::status::from_error(e) as u32;
        self.append(license.vendor_id, Event::Deny { seat, status });
    }

    /// Logs a seat an admin revoked: call it with the row the seat table removed, under the
    /// table's lock.
    pub fn revoked(&self, hosted: &Hosted, row: &SeatRow) {
        if let Some(lic) = license_of(hosted, row) {
            self.append(lic.vendor_id, Event::Revoke(seat_event(lic, row, None)));
        }
    }

    /// Checkpoints every log with records since its last checkpoint, syncs and closes them.
    /// Events appended after this are not logged (grants waiting on them fail).
    pub async fn close_async(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// [`UsageLog::close_async`], blocking. Not from inside an async runtime.
    pub fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }
}

impl Drop for UsageLog {
    fn drop(&mut self) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Close(tx));
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

fn license_of<'a>(hosted: &'a Hosted, row: &SeatRow) -> Option<&'a License> {
    let (ci, li) = hosted.by_license_id(&row.license_id)?;
    hosted.containers.get(ci)?.licenses.get(li)
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
                "{e}; nothing is appended to it and no seats of vendor {vendor_id} are granted \
                 until it is moved aside (keep it: the publisher may ask for it)"
            );
            error!(log = %path.display(), "usage log refused: {why}");
            Slot::Refused(why)
        }
    }
}

struct Writer {
    options: UsageOptions,
    slots: HashMap<u32, Slot>,
    signer: Arc<OnceLock<Arc<dyn CheckpointSigner>>>,
}

/// The most events one batch takes before it is written.
const MAX_BATCH: usize = 8192;

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let every = self.options.checkpoint_every;
        let mut next = Instant::now() + every;
        loop {
            let first = match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.close();
                    return;
                }
            };
            let mut waiters: Vec<(u32, Done)> = Vec::new();
            let mut close = None;
            for m in first.into_iter().chain(rx.try_iter().take(MAX_BATCH)) {
                match m {
                    Msg::Event {
                        vendor_id,
                        time_ms,
                        event,
                        done,
                    } => {
                        let r = self.push(vendor_id, time_ms, event);
                        match (r, done) {
                            (Ok(()), Some(d)) => waiters.push((vendor_id, d)),
                            (Err(e), Some(d)) => {
                                let _ = d.send(Err(e));
                            }
                            (Err(e), None) => {
                                debug!(vendor = vendor_id, error = %e, "usage event not logged")
                            }
                            (Ok(()), None) => {}
                        }
                    }
                    Msg::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
            }
            self.flush(waiters);
            if let Some(done) = close {
                self.close();
                let _ = done.send(());
                // Later events find the channel closed: their grants fail.
                return;
            }
            if Instant::now() >= next {
                self.checkpoint_all(false);
                next = Instant::now() + every;
            }
        }
    }

    fn push(
        &mut self,
        vendor_id: u32,
        time_ms: u64,
        event: Event,
    ) -> std::result::Result<(), String> {
        let options = &self.options;
        let slot = self
            .slots
            .entry(vendor_id)
            .or_insert_with(|| open_slot(options, vendor_id));
        // A refused log that an admin moved aside: begin a new one.
        if matches!(slot, Slot::Refused(_)) && !log_path(options, vendor_id).exists() {
            *slot = open_slot(options, vendor_id);
        }
        match slot {
            Slot::Open(log) => log.push(time_ms, event).map_err(|e| e.to_string()),
            Slot::Refused(why) => Err(why.clone()),
        }
    }

    /// Writes every log with pending records, syncing those a waiter waits on when the server
    /// syncs, then answers the waiters.
    fn flush(&mut self, waiters: Vec<(u32, Done)>) {
        let mut failed: HashMap<u32, String> = HashMap::new();
        for (v, slot) in &mut self.slots {
            if let Slot::Open(log) = slot {
                let sync = self.options.fsync && waiters.iter().any(|(w, _)| w == v);
                if let Err(e) = log.flush(sync) {
                    error!(log = %log.path().display(), error = %e, "usage log write failed");
                    failed.insert(*v, e.to_string());
                }
            }
        }
        for (v, d) in waiters {
            let _ = d.send(match failed.get(&v) {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            });
        }
    }

    /// Checkpoints every log with records since its last checkpoint.
    fn checkpoint_all(&mut self, sync: bool) {
        let Some(signer) = self.signer.get().cloned() else {
            return;
        };
        for slot in self.slots.values_mut() {
            let Slot::Open(log) = slot else { continue };
            if log.uncovered() == 0 {
                continue;
            }
            // A container backend that panics must not take the log's thread with it.
            let signed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                log.checkpoint(signer.as_ref(), now_ms())
            }))
            .unwrap_or_else(|_| Err(Error::Internal("the container panicked".into())));
            let r = signed.and_then(|()| log.flush(sync || self.options.fsync));
            match r {
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

    fn close(&mut self) {
        self.flush(Vec::new());
        self.checkpoint_all(true);
        for slot in self.slots.values_mut() {
            if let Slot::Open(log) = slot
                && let Err(e) = log.flush(true)
            {
                error!(log = %log.path().display(), error = %e, "usage log not synced at shutdown");
            }
        }
        self.slots.clear();
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
    use crate::license::usage::tests::container;
    use crate::publisher::PublisherKey;

    /// Signs through the container protocol, as a hosted container does.
    struct EngineSigner(Mutex<Engine>);

    impl CheckpointSigner for EngineSigner {
        fn sign_usage(&self, vendor_id: u32, digest: [u8; 32]) -> Result<(Vec<u8>, Vec<u8>)> {
            let mut e = self.0.lock().unwrap();
            if vendor_id != e.state().vendor_id {
                return Err(Error::NoLicense(format!(
                    "no container of vendor {vendor_id}"
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
        EngineSigner(Mutex::new(container(key)))
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
        assert!(e.to_string().contains("the log of vendor 77"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Not a log at all.
        std::fs::write(&path, b"something else entirely, longer than a header").unwrap();
        let e = LogFile::open(&path, 77, [5; 32], "s").err().unwrap();
        assert!(e.to_string().contains("bad magic"), "{e}");
    }

    #[test]
    fn the_writer_checkpoints_on_time_and_at_close_and_refuses_a_damaged_log() {
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
        log.append_wait(77, grant(77, 1)).wait().unwrap();
        let e = log.append_wait(78, grant(78, 1)).wait().unwrap_err();
        assert!(e.to_string().contains("moved aside"), "{e}");
        assert!(
            log.append_wait(78, grant(78, 1)).wait().is_err(),
            "still refused"
        );
        // Moved aside while the server runs: the next event begins a new log.
        let aside = dir.path().join("78.log.damaged");
        std::fs::rename(&damaged, &aside).unwrap();
        log.append_wait(78, grant(78, 2)).wait().unwrap();
        assert!(damaged.exists());
        let damaged = aside;
        // A publisher not hosted at the start gets its log when its first event comes.
        let e = log.append_wait(79, grant(79, 1)).wait();
        assert!(e.is_ok(), "{e:?}");
        let path = dir.path().join("77.log");
        let start = Instant::now();
        while verified(&path, &key).checkpoints == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "no checkpoint");
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = verified(&path, &key);
        assert_eq!((r.records, r.unverified_tail), (3, 0), "{r:?}");
        log.append(77, release(77, 1));
        log.close();
        let r = verified(&path, &key);
        assert_eq!(
            r.unverified_tail, 0,
            "the shutdown checkpoint covers the rest"
        );
        assert_eq!(r.records, 5);
        assert!(log.append_wait(77, grant(77, 2)).wait().is_err(), "closed");
        assert_eq!(std::fs::read(&damaged).unwrap(), junk, "left as it was");
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
