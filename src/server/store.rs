//! The durable seat table: the [`SeatStore`] trait, its SQLite implementation and the group
//! committer that batches the writes of all connections.
//!
//! Every grant is written before it is answered (`docs/SERVER.md`, Durability). SQLite runs in
//! WAL mode with `synchronous=FULL`, so a commit returns only once its WAL frames are on disk.
//! [`GroupCommitter`] owns the store on a thread of its own and puts every change pending when
//! it wakes into one transaction: one fsync for many grants. Records ride along: the
//! committer hands each batch's records to a [`Journal`] before it commits the batch, so they
//! cost no thread of their own and a grant waits once for both. The server's records are its
//! usage events and its journal the usage logs (`server::usage`, which sits on this module);
//! the committer knows them only as records of some type `R`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::seats::{Borrowed, Change, SeatId, SeatRow};
use crate::{Error, Result};

/// Where the seat table lives.
pub trait SeatStore: Send {
    /// Every row of the table (live or not; the seat table drops expired ones).
    fn load(&mut self) -> Result<Vec<SeatRow>>;
    /// Applies a batch atomically (one transaction): all of it is durable when this returns
    /// `Ok`, none of it when it fails.
    fn commit(&mut self, changes: &[Change]) -> Result<()>;
}

/// The seat table. Schema version 2 added `borrow` (a borrowed seat's record,
/// `seats::Borrowed` encoded; NULL for a leased seat); a version 1 file gets the column when
/// it is opened ([`migrate`]).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS seats (
    seat_id    BLOB PRIMARY KEY,
    license_id BLOB NOT NULL,
    unit_key   TEXT NOT NULL,
    client     BLOB NOT NULL,
    exclusive  INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    borrow     BLOB
) WITHOUT ROWID";
/// The seat table's schema version (`PRAGMA user_version`; 0 or 1 before borrowing).
pub const SCHEMA_VERSION: i64 = 2;
const UPSERT: &str =
    "INSERT INTO seats (seat_id, license_id, unit_key, client, exclusive, expires_ms, borrow)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (seat_id) DO UPDATE SET license_id = excluded.license_id,
        unit_key = excluded.unit_key, client = excluded.client,
        exclusive = excluded.exclusive, expires_ms = excluded.expires_ms,
        borrow = excluded.borrow";
const DELETE: &str = "DELETE FROM seats WHERE seat_id = ?1";
const SELECT: &str =
    "SELECT seat_id, license_id, unit_key, client, exclusive, expires_ms, borrow FROM seats";

/// Brings a seat table written by an older server up to [`SCHEMA_VERSION`]: version 1 had
/// no `borrow` column (its rows are leased seats: NULL). A newer version is refused rather
/// than half understood.
fn migrate(conn: &Connection) -> rusqlite::Result<std::result::Result<(), i64>> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Err(version));
    }
    let has_borrow = conn
        .prepare("SELECT name FROM pragma_table_info('seats')")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .iter()
        .any(|c| c == "borrow");
    if !has_borrow {
        conn.execute_batch("ALTER TABLE seats ADD COLUMN borrow BLOB")?;
    }
    if version != SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(Ok(()))
}

/// What a committed grant must survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A power loss or OS crash: every commit is synced to the disk (`synchronous=FULL`).
    PowerLoss,
    /// A killed server process (SIGKILL): commits are in the WAL in the OS's cache before
    /// they are answered, but not synced (`synchronous=NORMAL`); a power loss may lose the
    /// last ones, and their clients re-attach (idempotent acquire, never over the quantity).
    ProcessCrash,
}

/// The seat table in a SQLite file (WAL).
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (or creates) the seat table at `path`, syncing every commit to the disk
    /// (survives a power loss as well as a killed process).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Durability::PowerLoss)
    }

    /// Opens the seat table with the durability asked for.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Self> {
        let err = db_error(path);
        let conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(&err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::io(
                path,
                io::Error::other(format!("journal_mode is {mode}, not WAL")),
            ));
        }
        let sync = match durability {
            Durability::PowerLoss => "FULL",
            Durability::ProcessCrash => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(&err)?;
        conn.execute_batch(SCHEMA).map_err(&err)?;
        if let Err(found) = migrate(&conn).map_err(&err)? {
            return Err(Error::UnknownVersion {
                what: "seat table",
                found: u16::try_from(found).unwrap_or(u16::MAX),
                supported: SCHEMA_VERSION as u16,
            });
        }
        conn.set_prepared_statement_cache_capacity(8);
        Ok(SqliteStore {
            conn,
            path: path.to_owned(),
        })
    }

    /// The file it lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::io(path, io::Error::other(e))
}

fn blob<const N: usize>(b: Vec<u8>, what: &str) -> Result<[u8; N]> {
    let n = b.len();
    b.try_into()
        .map_err(|_| Error::malformed("seat table", format!("{what} of {n} bytes, not {N}")))
}

impl SeatStore for SqliteStore {
    fn load(&mut self) -> Result<Vec<SeatRow>> {
        let err = db_error(&self.path);
        let mut stmt = self.conn.prepare_cached(SELECT).map_err(&err)?;
        let raw = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                ))
            })
            .map_err(&err)?;
        let mut rows = Vec::new();
        for r in raw {
            let (seat_id, license_id, unit_key, client, exclusive, expires_ms, borrow) =
                r.map_err(&err)?;
            let borrow = borrow
                .map(|b| Borrowed::decode(&b).map(Arc::new))
                .transpose()?;
            rows.push(SeatRow {
                seat_id: blob(seat_id, "seat id")?,
                license_id: blob(license_id, "license id")?,
                unit_key,
                client: blob(client, "client key")?,
                exclusive: exclusive != 0,
                expires_ms: u64::try_from(expires_ms).unwrap_or(0),
                borrow,
            });
        }
        Ok(rows)
    }

    fn commit(&mut self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let err = db_error(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        {
            let mut upsert = tx.prepare_cached(UPSERT).map_err(&err)?;
            let mut delete = tx.prepare_cached(DELETE).map_err(&err)?;
            for c in changes {
                match c {
                    Change::Upsert(r) => {
                        let expires = i64::try_from(r.expires_ms).unwrap_or(i64::MAX);
                        let borrow = r.borrow.as_ref().map(|b| b.encode()).transpose()?;
                        upsert
                            .execute(params![
                                &r.seat_id[..],
                                &r.license_id[..],
                                r.unit_key,
                                &r.client[..],
                                r.exclusive,
                                expires,
                                borrow
                            ])
                            .map_err(&err)?;
                    }
                    Change::Delete(id) => {
                        delete.execute(params![&id[..]]).map_err(&err)?;
                    }
                }
            }
        }
        tx.commit().map_err(&err)
    }
}

/// Seats in use per product per minute: the admin page's chart and proof of usage.
///
/// Kept in the seat table's SQLite file, table `seat_history`, on a connection of its own
/// (WAL lets it write beside the group committer; it writes once a minute). A row holds the
/// most seats in use that the server sampled during that minute.
pub struct HistoryStore {
    conn: Connection,
    path: PathBuf,
}

/// One minute of one product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPoint {
    /// Unix minute (Unix seconds / 60) at the start of the bucket.
    pub minute: u64,
    /// The publisher.
    pub vendor_id: u32,
    /// The product.
    pub product_code: u32,
    /// The most seats in use during the bucket.
    pub in_use: u32,
    /// The quantity the server offered then (all its licenses of the product).
    pub quantity: u32,
}

/// How long history is kept: 31 days of minutes.
pub const HISTORY_MINUTES: u64 = 31 * 24 * 60;

const HISTORY_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS seat_history (
    minute       INTEGER NOT NULL,
    vendor_id    INTEGER NOT NULL,
    product_code INTEGER NOT NULL,
    in_use       INTEGER NOT NULL,
    quantity     INTEGER NOT NULL,
    PRIMARY KEY (minute, vendor_id, product_code)
) WITHOUT ROWID";

/// A saved seat holder: the seat, the holder as the server encodes it, since when (ms).
pub type HolderRow = (SeatId, Vec<u8>, u64);

/// Who held which seat when the server last stopped gracefully (the admin page's "who"),
/// read back at the next start: `holder` is the server's encoding of it.
const HOLDERS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS seat_holders (
    seat_id  BLOB PRIMARY KEY,
    holder   BLOB NOT NULL,
    since_ms INTEGER NOT NULL
) WITHOUT ROWID";

impl HistoryStore {
    /// Replaces the saved seat holders with `rows` (seat id, encoded holder, since).
    pub fn save_holders(&mut self, rows: &[HolderRow]) -> Result<()> {
        let err = db_error(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        tx.execute("DELETE FROM seat_holders", []).map_err(&err)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO seat_holders (seat_id, holder, since_ms) VALUES (?1, ?2, ?3)",
                )
                .map_err(&err)?;
            for (id, holder, since) in rows {
                ins.execute(params![
                    &id[..],
                    holder,
                    i64::try_from(*since).unwrap_or(i64::MAX)
                ])
                .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)
    }

    /// Takes the saved seat holders out (they describe one start only): rows of another
    /// shape than a seat id are skipped.
    pub fn take_holders(&mut self) -> Result<Vec<HolderRow>> {
        let err = db_error(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        let rows = {
            let mut stmt = tx
                .prepare("SELECT seat_id, holder, since_ms FROM seat_holders")
                .map_err(&err)?;
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(&err)?
            .filter_map(std::result::Result::ok)
            .filter_map(|(id, holder, since)| {
                Some((id.try_into().ok()?, holder, u64::try_from(since).ok()?))
            })
            .collect::<Vec<HolderRow>>()
        };
        tx.execute("DELETE FROM seat_holders", []).map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(rows)
    }

    /// Opens the history in the seat table's file at `path` (made if missing).
    pub fn open(path: &Path) -> Result<Self> {
        let err = db_error(path);
        let conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
        let _: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(&err)?;
        // A power loss may cost the last minute of history, never a grant.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(&err)?;
        conn.execute_batch(HISTORY_SCHEMA).map_err(&err)?;
        conn.execute_batch(HOLDERS_SCHEMA).map_err(&err)?;
        Ok(HistoryStore {
            conn,
            path: path.to_owned(),
        })
    }

    /// Records one minute's samples (a minute written twice keeps the larger count) and
    /// drops what is older than [`HISTORY_MINUTES`] before `minute`.
    pub fn record(&mut self, points: &[HistoryPoint]) -> Result<()> {
        let err = db_error(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO seat_history (minute, vendor_id, product_code, in_use, quantity)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (minute, vendor_id, product_code) DO UPDATE SET
                        in_use = max(in_use, excluded.in_use), quantity = excluded.quantity",
                )
                .map_err(&err)?;
            for p in points {
                up.execute(params![
                    p.minute as i64,
                    p.vendor_id,
                    p.product_code,
                    p.in_use,
                    p.quantity
                ])
                .map_err(&err)?;
            }
            if let Some(latest) = points.iter().map(|p| p.minute).max() {
                tx.execute(
                    "DELETE FROM seat_history WHERE minute < ?1",
                    params![latest.saturating_sub(HISTORY_MINUTES) as i64],
                )
                .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)
    }

    /// The minutes from `since` on, of one product or of all, in buckets of `step` minutes
    /// (each the largest count in it), ordered by product then minute.
    pub fn query(
        &self,
        since: u64,
        product: Option<(u32, u32)>,
        step: u64,
    ) -> Result<Vec<HistoryPoint>> {
        let err = db_error(&self.path);
        let step = step.max(1) as i64;
        let (v, p) = match product {
            Some((v, p)) => (Some(v), Some(p)),
            None => (None, None),
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT (minute / ?1) * ?1 AS m, vendor_id, product_code, max(in_use), max(quantity)
                 FROM seat_history
                 WHERE minute >= ?2 AND (?3 IS NULL OR (vendor_id = ?3 AND product_code = ?4))
                 GROUP BY m, vendor_id, product_code
                 ORDER BY vendor_id, product_code, m",
            )
            .map_err(&err)?;
        let rows = stmt
            .query_map(params![step, since as i64, v, p], |r| {
                Ok(HistoryPoint {
                    minute: r.get::<_, i64>(0)?.max(0) as u64,
                    vendor_id: r.get(1)?,
                    product_code: r.get(2)?,
                    in_use: r.get(3)?,
                    quantity: r.get(4)?,
                })
            })
            .map_err(&err)?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(&err)
    }
}

/// What the committer writes with each batch before the seat table commits it (the server's:
/// the usage logs, `server::usage`), records of type `R`.
pub trait Journal<R>: Send {
    /// Writes the records of a batch's submissions in order (one `Vec` per submission), and
    /// returns one result per submission. `waited` says whether a submitter waits for this
    /// batch (a grant). The committer answers the batch only after this returns.
    fn write(&mut self, events: Vec<Vec<R>>, waited: bool) -> Vec<std::result::Result<(), String>>;
}

/// What the committer thread is asked to do.
struct Job<R> {
    changes: Vec<Change>,
    /// Journal records (usage events), written (in submission order) before the batch is
    /// committed.
    events: Vec<R>,
    /// `None` for a lazy submission (written within `LAZY_FLUSH`, nobody waits).
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// How long lazy changes (lease renewals, expiries) may wait before they are written.
pub const LAZY_FLUSH: Duration = Duration::from_secs(1);

/// A crowd: this many waiting submissions. The commit window applies only when a crowd came
/// while a crowd was being committed, the sign of a saturated server. PostgreSQL's
/// `commit_siblings` is the model.
pub const COMMIT_SIBLINGS: usize = 32;

/// The default commit window (`commit_window_us`).
pub const DEFAULT_COMMIT_WINDOW: Duration = Duration::from_millis(3);

/// Group commit: a thread owns the store; submitters get a [`CommitWaiter`]; all changes
/// pending when the thread wakes go into one transaction (one fsync for many grants).
///
/// Saturated (a crowd of [`COMMIT_SIBLINGS`] waiting submissions came while a crowd was being
/// committed), the next commit starts no sooner than one *commit window* after the last one
/// began, gathering what arrives meanwhile: a few large transactions cost the disk, the page
/// cache and the thread's wake-ups far less than many small ones (`docs/BENCHMARKS.md`), for
/// at most one window of added latency to requests that already queue. When the clients are
/// fewer, so that they come back only after their commit, waiting would hold every one of them
/// up and buy nothing: they are committed as they come, and so is a lone client.
///
/// If a batch fails, each submission in it is retried in a transaction of its own, so one bad
/// submission fails only its own waiter. Dropping the committer flushes what is pending and
/// joins the thread, as [`GroupCommitter::shutdown`] does.
///
/// `R` is the type of the records a [`Journal`] writes with each batch; a committer without
/// a journal has none (`()`).
pub struct GroupCommitter<R = ()> {
    jobs: Option<mpsc::Sender<Job<R>>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

/// What the committer has done since it started (`GET /metrics`).
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Transactions committed (or tried).
    pub transactions: AtomicU64,
    /// Seat-table changes in them (rows written or deleted).
    pub changes: AtomicU64,
    /// Commits that waited for the commit window (the server was saturated).
    pub gathered: AtomicU64,
}

impl GroupCommitter {
    /// Starts the committer thread, which owns `store` from now on (no journal, no commit
    /// window).
    pub fn start(store: Box<dyn SeatStore>) -> Self {
        Self::start_with(store, None, Duration::ZERO)
    }
}

impl<R: Send + 'static> GroupCommitter<R> {
    /// Starts the committer thread with a journal for the submissions' records (usage
    /// events), and a commit window (zero: commit whenever the thread wakes).
    pub fn start_with(
        store: Box<dyn SeatStore>,
        journal: Option<Box<dyn Journal<R>>>,
        window: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let counter = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("tessera-seat-store".into())
            .spawn(move || run(store, journal, rx, window, &counter))
            .expect("spawning the seat store thread");
        GroupCommitter {
            jobs: Some(tx),
            thread: Some(thread),
            stats,
        }
    }

    /// Queues changes; the returned waiter resolves when they are durable (or the commit
    /// failed). Changes are applied in submission order. Callable from any thread.
    pub fn submit(&self, changes: Vec<Change>) -> CommitWaiter {
        self.submit_with(changes, Vec::new())
    }

    /// [`GroupCommitter::submit`] with journal records (usage events): the waiter resolves
    /// when both are durable, and fails if either fails.
    pub fn submit_with(&self, changes: Vec<Change>, events: Vec<R>) -> CommitWaiter {
        let (done, rx) = oneshot::channel();
        if let Some(jobs) = &self.jobs {
            // If the thread is gone the job (and its sender) is dropped: the waiter reports it.
            let _ = jobs.send(Job {
                changes,
                events,
                done: Some(done),
            });
        }
        CommitWaiter { rx }
    }

    /// Queues changes nobody waits for (lease renewals, expiries): they are coalesced per
    /// seat and written with the next durable batch, or within [`LAZY_FLUSH`]. Losing them
    /// in a crash only shortens the stored leases, which the server's start-up makes up
    /// for (`SeatTable::load_extended`).
    pub fn submit_lazy(&self, changes: Vec<Change>) {
        self.submit_lazy_with(changes, Vec::new());
    }

    /// [`GroupCommitter::submit_lazy`] with journal records (written with the next batch,
    /// which comes at once: only the seat table's changes wait).
    pub fn submit_lazy_with(&self, changes: Vec<Change>, events: Vec<R>) {
        if changes.is_empty() && events.is_empty() {
            return;
        }
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job {
                changes,
                events,
                done: None,
            });
        }
    }

    /// How many transactions the store has been asked to commit so far.
    pub fn transactions(&self) -> u64 {
        self.stats.transactions.load(Ordering::Relaxed)
    }

    /// The committer's counters.
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// Flushes everything pending and joins the thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl<R> Drop for GroupCommitter<R> {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has drained the queue.
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<R> Job<R> {
    /// Whether somebody waits for this job (a lazy one, or one whose waiter was dropped, is
    /// written as surely, but nobody is held up by it).
    fn waited(&self) -> bool {
        self.done.as_ref().is_some_and(|d| !d.is_closed())
    }
}

fn change_key(c: &Change) -> SeatId {
    match c {
        Change::Upsert(r) => r.seat_id,
        Change::Delete(id) => *id,
    }
}

fn run<R>(
    mut store: Box<dyn SeatStore>,
    mut journal: Option<Box<dyn Journal<R>>>,
    jobs: mpsc::Receiver<Job<R>>,
    window: Duration,
    stats: &CommitStats,
) {
    use std::collections::HashMap;
    use std::time::Instant;
    // Lazy changes, the latest per seat, and when the oldest of them arrived.
    let mut lazy: HashMap<SeatId, Change> = HashMap::new();
    let mut lazy_since: Option<Instant> = None;
    // When the last commit started, if it held at least COMMIT_SIBLINGS waiting submissions.
    let mut crowded: Option<Instant> = None;
    loop {
        // What arrived while the last batch was committed.
        let mut arrived: Vec<Job<R>> = jobs.try_iter().collect();
        if arrived.is_empty() {
            let first = match lazy_since {
                None => match jobs.recv() {
                    Ok(j) => Some(j),
                    Err(_) => break,
                },
                Some(t) => match jobs.recv_timeout(LAZY_FLUSH.saturating_sub(t.elapsed())) {
                    Ok(j) => Some(j),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            arrived.extend(first);
        } else if let Some(t) = crowded
            && arrived.iter().filter(|j| j.waited()).count() >= COMMIT_SIBLINGS
        {
            // Saturated: a crowd was committed and another crowd came while it was. Gather
            // until one window after the last commit began.
            let left = window.saturating_sub(t.elapsed());
            if !left.is_zero() {
                stats.gathered.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(left);
            }
        }
        let mut batch: Vec<Job<R>> = Vec::new();
        // The changes of this wake from its first durable job on, in submission order: a
        // lazy change submitted after a durable one must be written after it (a seat's
        // grant, then its lazy Delete once its lease ran out, when the disk stalled for
        // longer than a lease), so it goes into this batch behind it, not before it with
        // the coalesced lazy ones.
        let mut ordered: Vec<Change> = Vec::new();
        // Journal records in submission order, and the durable job each belongs to.
        let mut events: Vec<Vec<R>> = Vec::new();
        let mut owners: Vec<Option<usize>> = Vec::new();
        for mut j in arrived.into_iter().chain(jobs.try_iter()) {
            if !j.events.is_empty() {
                owners.push(j.done.is_some().then_some(batch.len()));
                events.push(std::mem::take(&mut j.events));
            }
            if j.done.is_none() {
                if !batch.is_empty() {
                    ordered.extend(j.changes);
                } else if !j.changes.is_empty() {
                    for c in j.changes {
                        lazy.insert(change_key(&c), c);
                    }
                    lazy_since.get_or_insert_with(Instant::now);
                }
            } else {
                ordered.extend(j.changes.iter().cloned());
                batch.push(j);
            }
        }
        // The journal's records first: an answered grant is in its usage log.
        let mut logged: Vec<std::result::Result<(), String>> = vec![Ok(()); batch.len()];
        if !events.is_empty()
            && let Some(journal) = journal.as_mut()
        {
            let waited = batch.iter().any(Job::waited);
            for (r, owner) in journal.write(events, waited).into_iter().zip(&owners) {
                if let (Err(e), Some(i)) = (r, owner) {
                    logged[*i] = Err(e);
                }
            }
        }
        let due = lazy_since.is_some_and(|t| t.elapsed() >= LAZY_FLUSH);
        if batch.is_empty() && !due {
            continue;
        }
        // The coalesced lazy changes were submitted before the first durable one in this
        // batch: write them first, then the rest in submission order.
        let mut changes: Vec<Change> = lazy.drain().map(|(_, c)| c).collect();
        lazy_since = None;
        changes.extend(ordered);
        let waiting = batch.iter().filter(|j| j.waited()).count();
        crowded = (waiting >= COMMIT_SIBLINGS).then(Instant::now);
        let committed = commit_batch(store.as_mut(), changes, &batch, stats);
        for ((j, c), l) in batch.into_iter().zip(committed).zip(logged) {
            if let Some(d) = j.done {
                let _ = d.send(c.and(l));
            }
        }
    }
    if !lazy.is_empty() {
        let changes: Vec<Change> = lazy.drain().map(|(_, c)| c).collect();
        commit_batch::<R>(store.as_mut(), changes, &[], stats);
    }
}

/// Commits a batch in one transaction; if that fails, each job alone. The result per job.
fn commit_batch<R>(
    store: &mut dyn SeatStore,
    changes: Vec<Change>,
    batch: &[Job<R>],
    stats: &CommitStats,
) -> Vec<Result<(), String>> {
    if changes.is_empty() {
        return vec![Ok(()); batch.len()];
    }
    stats.transactions.fetch_add(1, Ordering::Relaxed);
    stats
        .changes
        .fetch_add(changes.len() as u64, Ordering::Relaxed);
    match store.commit(&changes) {
        Ok(()) => vec![Ok(()); batch.len()],
        Err(e) if batch.len() <= 1 => vec![Err(e.to_string()); batch.len()],
        Err(_) => batch
            .iter()
            .map(|j| {
                stats.transactions.fetch_add(1, Ordering::Relaxed);
                store.commit(&j.changes).map_err(|e| e.to_string())
            })
            .collect(),
    }
}

/// The completion of a [`GroupCommitter::submit`].
pub struct CommitWaiter {
    rx: oneshot::Receiver<Result<(), String>>,
}

impl CommitWaiter {
    /// Blocks until the changes are durable. Must not be called from inside an async runtime
    /// (use [`CommitWaiter::wait_async`] there).
    pub fn wait(self) -> Result<()> {
        outcome(self.rx.blocking_recv())
    }

    /// Waits until the changes are durable, without blocking the thread.
    pub async fn wait_async(self) -> Result<()> {
        outcome(self.rx.await)
    }
}

fn outcome(r: Result<Result<(), String>, oneshot::error::RecvError>) -> Result<()> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::io("seat table", io::Error::other(e))),
        Err(_) => Err(Error::Internal("the seat store thread has stopped".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::Mutex;

    use super::*;
    use crate::server::seats::SeatId;

    fn row(n: u32, expires_ms: u64) -> SeatRow {
        let mut seat_id = [0u8; 16];
        seat_id[..4].copy_from_slice(&n.to_be_bytes());
        SeatRow {
            seat_id,
            license_id: [7; 16],
            unit_key: format!("handle:{}", hex::encode(seat_id)),
            client: [0xA1; 32],
            exclusive: n.is_multiple_of(2),
            expires_ms,
            borrow: None,
        }
    }

    fn sorted(mut rows: Vec<SeatRow>) -> Vec<SeatRow> {
        rows.sort_by_key(|r| r.seat_id);
        rows
    }

    #[test]
    fn lazy_changes_are_coalesced_and_written_in_order_with_durable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        let c = GroupCommitter::start(Box::new(SqliteStore::open(&path).unwrap()));
        c.submit(vec![
            Change::Upsert(row(1, 100)),
            Change::Upsert(row(2, 100)),
        ])
        .wait()
        .unwrap();
        // Renewals, coalesced per seat: only the last one is written.
        for e in 101..=150 {
            c.submit_lazy(vec![Change::Upsert(row(1, e))]);
        }
        let before = c.transactions();
        // A durable change after the lazy ones carries them along, in order.
        c.submit(vec![Change::Delete(row(2, 0).seat_id)])
            .wait()
            .unwrap();
        assert_eq!(c.transactions(), before + 1, "one transaction for both");
        let mut s = SqliteStore::open(&path).unwrap();
        let rows = s.load().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].expires_ms, 150);
        // Lazy changes alone are written within LAZY_FLUSH.
        c.submit_lazy(vec![Change::Upsert(row(1, 999))]);
        std::thread::sleep(LAZY_FLUSH + Duration::from_millis(300));
        assert_eq!(s.load().unwrap()[0].expires_ms, 999);
        c.submit_lazy(vec![Change::Delete(row(1, 0).seat_id)]);
        drop(c); // shutdown flushes lazy changes too
        assert!(s.load().unwrap().is_empty());
    }

    /// A lazy change submitted after a durable one is written after it, also when both wait
    /// for the same wake of the committer (the disk stalled for longer than a lease): a seat
    /// granted, then dropped as expired by a refused acquire (its `Delete` is lazy), must
    /// not be left on disk, where a restart would honour it beside the grant that took its
    /// slot (found by the seat table's model check, tests/model).
    #[test]
    fn a_lazy_change_submitted_after_a_durable_one_is_written_after_it() {
        type Rows = Arc<Mutex<std::collections::BTreeMap<SeatId, SeatRow>>>;
        struct Stalled {
            entered: mpsc::Sender<()>,
            gate: Option<mpsc::Receiver<()>>,
            rows: Rows,
        }
        impl SeatStore for Stalled {
            fn load(&mut self) -> Result<Vec<SeatRow>> {
                Ok(self.rows.lock().unwrap().values().cloned().collect())
            }
            fn commit(&mut self, changes: &[Change]) -> Result<()> {
                let _ = self.entered.send(());
                if let Some(gate) = self.gate.take() {
                    let _ = gate.recv();
                }
                let mut rows = self.rows.lock().unwrap();
                for c in changes {
                    match c {
                        Change::Upsert(r) => rows.insert(r.seat_id, r.clone()),
                        Change::Delete(id) => rows.remove(id),
                    };
                }
                Ok(())
            }
        }
        let (entered, inside) = mpsc::channel();
        let (key, gate) = mpsc::channel();
        let rows = Rows::default();
        let c = GroupCommitter::start(Box::new(Stalled {
            entered,
            gate: Some(gate),
            rows: Arc::clone(&rows),
        }));
        let first = c.submit(vec![Change::Upsert(row(9, 1))]);
        inside.recv().unwrap(); // the committer is stuck in its first commit
        // Seat 1 is granted (its grant waits for the disk); its lease runs out meanwhile and
        // a refused acquire hands out its Delete, lazily.
        let grant = c.submit(vec![Change::Upsert(row(1, 100))]);
        c.submit_lazy(vec![Change::Delete(row(1, 0).seat_id)]);
        key.send(()).unwrap();
        first.wait().unwrap();
        grant.wait().unwrap();
        drop(c);
        let left: Vec<SeatId> = rows.lock().unwrap().keys().copied().collect();
        assert_eq!(left, vec![row(9, 0).seat_id], "seat 1's Delete came last");
    }

    #[test]
    fn rows_round_trip_through_a_reopened_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        let mut s = SqliteStore::open(&path).unwrap();
        assert!(s.load().unwrap().is_empty());
        let rows: Vec<SeatRow> = (0..50).map(|n| row(n, 1_000 + u64::from(n))).collect();
        s.commit(&rows.iter().cloned().map(Change::Upsert).collect::<Vec<_>>())
            .unwrap();
        let mut renewed = row(3, u64::MAX);
        renewed.unit_key = "station:ab".into();
        s.commit(&[
            Change::Delete(row(1, 0).seat_id),
            Change::Upsert(renewed.clone()),
        ])
        .unwrap();
        s.commit(&[Change::Delete([0xEE; 16])]).unwrap(); // absent: fine
        drop(s);

        let mut want: Vec<SeatRow> = rows
            .into_iter()
            .filter(|r| r.seat_id != row(1, 0).seat_id)
            .collect();
        want[2] = SeatRow {
            expires_ms: i64::MAX as u64,
            ..renewed
        };
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(sorted(s.load().unwrap()), sorted(want));
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = s
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn history_keeps_the_peak_per_minute_buckets_and_prunes_old_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        // Beside the seat table, in the same file.
        let gc = GroupCommitter::start(Box::new(SqliteStore::open(&path).unwrap()));
        gc.submit(vec![Change::Upsert(row(1, 5))]).wait().unwrap();
        let mut h = HistoryStore::open(&path).unwrap();
        let pt = |minute, product_code, in_use| HistoryPoint {
            minute,
            vendor_id: 7,
            product_code,
            in_use,
            quantity: 10,
        };
        let m0 = 29_000_000u64;
        h.record(&[pt(m0, 1, 3), pt(m0, 2, 1)]).unwrap();
        h.record(&[pt(m0, 1, 2)]).unwrap(); // a second sample in the same minute
        h.record(&[pt(m0 + 1, 1, 5), pt(m0 + 2, 1, 4)]).unwrap();
        let all = h.query(m0, None, 1).unwrap();
        assert_eq!(
            all,
            vec![
                pt(m0, 1, 3),
                pt(m0 + 1, 1, 5),
                pt(m0 + 2, 1, 4),
                pt(m0, 2, 1)
            ]
        );
        assert_eq!(h.query(m0 + 1, Some((7, 1)), 1).unwrap().len(), 2);
        assert!(h.query(m0, Some((8, 1)), 1).unwrap().is_empty());
        // Buckets of two minutes hold the larger count.
        let two = h.query(m0, Some((7, 1)), 2).unwrap();
        assert_eq!(two.iter().map(|p| p.in_use).collect::<Vec<_>>(), [5, 4]);
        // A minute beyond the retention prunes the oldest ones.
        h.record(&[pt(m0 + 1 + HISTORY_MINUTES, 1, 0)]).unwrap();
        let kept = h.query(0, Some((7, 1)), 1).unwrap();
        assert_eq!(kept.first().map(|p| p.minute), Some(m0 + 1));
        // The seat table is untouched.
        drop(gc);
        assert_eq!(SqliteStore::open(&path).unwrap().load().unwrap().len(), 1);
    }

    #[test]
    fn a_batch_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        let mut s = SqliteStore::open(&path).unwrap();
        s.commit(&[Change::Upsert(row(1, 10))]).unwrap();
        // A trigger that makes one row of the batch fail, after others were written.
        s.conn
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON seats WHEN NEW.unit_key = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poisoned row'); END",
            )
            .unwrap();
        let mut poison = row(3, 30);
        poison.unit_key = "poison".into();
        let e = s
            .commit(&[
                Change::Upsert(row(2, 20)),
                Change::Delete(row(1, 0).seat_id),
                Change::Upsert(poison),
            ])
            .unwrap_err();
        assert!(matches!(&e, Error::Io { path: p, .. } if *p == path), "{e}");
        assert!(e.to_string().contains("poisoned row"), "{e}");
        drop(s);
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.load().unwrap(),
            vec![row(1, 10)],
            "nothing of the failed batch"
        );
        // The store still works after a failed batch.
        s.commit(&[Change::Upsert(row(2, 20))]).unwrap();
        assert_eq!(s.load().unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_row_is_reported_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("seats.db")).unwrap();
        s.conn
            .execute(
                "INSERT INTO seats (seat_id, license_id, unit_key, client, exclusive, expires_ms)
                 VALUES (x'0102', x'00', 'k', x'00', 0, 5)",
                [],
            )
            .unwrap();
        assert!(matches!(s.load(), Err(Error::Malformed { .. })));
        assert!(SqliteStore::open(&dir.path().join("no/such/dir/seats.db")).is_err());
        // A borrowed seat's record that does not decode is reported too.
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("seats.db")).unwrap();
        let mut r = row(1, 5);
        r.borrow = Some(Arc::new(borrowed(5)));
        s.commit(&[Change::Upsert(r)]).unwrap();
        s.conn
            .execute("UPDATE seats SET borrow = x'0100ff'", [])
            .unwrap();
        assert!(matches!(s.load(), Err(Error::Malformed { .. })));
    }

    fn borrowed(until: u64) -> Borrowed {
        Borrowed {
            borrower_key: [3; 32],
            borrower_serial: "SW-LAPTOP".into(),
            hostname: "laptop".into(),
            user: "uid:1000/tty1".into(),
            issued_at: 1,
            until,
            grant: vec![1, 2, 3],
            certificate: vec![4, 5],
        }
    }

    /// A seat table written before borrowing (schema 1: no `borrow` column) opens: its rows
    /// load as leased seats, the column is added, and borrowed seats round-trip with their
    /// record. A table of a newer schema is refused, not half read.
    #[test]
    fn a_seat_table_from_before_borrowing_opens_and_borrowed_seats_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE seats (
                    seat_id    BLOB PRIMARY KEY,
                    license_id BLOB NOT NULL,
                    unit_key   TEXT NOT NULL,
                    client     BLOB NOT NULL,
                    exclusive  INTEGER NOT NULL,
                    expires_ms INTEGER NOT NULL
                ) WITHOUT ROWID;
                INSERT INTO seats VALUES (x'01010101010101010101010101010101',
                    x'07070707070707070707070707070707', 'handle:x',
                    x'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 0, 77);",
            )
            .unwrap();
        }
        let mut s = SqliteStore::open(&path).unwrap();
        let rows = s.load().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].expires_ms, rows[0].borrow.is_none()), (77, true));
        let mut lent = row(2, 9_000);
        lent.borrow = Some(Arc::new(borrowed(9)));
        s.commit(&[Change::Upsert(lent.clone())]).unwrap();
        drop(s);
        let mut s = SqliteStore::open(&path).unwrap();
        let rows = s.load().unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.contains(&lent), "{rows:?}");
        let v: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        s.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(s);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(Error::UnknownVersion { .. })
        ));
    }

    #[test]
    fn group_commit_batches_many_submissions_into_few_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        let gc = GroupCommitter::start(Box::new(SqliteStore::open(&path).unwrap()));
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let gc = &gc;
                s.spawn(move || {
                    // Half the submissions wait one by one, half are waited for together.
                    let mut waiters = Vec::new();
                    for i in 0..125u32 {
                        let w = gc.submit(vec![Change::Upsert(row(t * 1_000 + i, 99))]);
                        if i.is_multiple_of(2) {
                            w.wait().unwrap();
                        } else {
                            waiters.push(w);
                        }
                    }
                    for w in waiters {
                        w.wait().unwrap();
                    }
                });
            }
        });
        let transactions = gc.transactions();
        gc.shutdown();
        assert!(
            transactions < 1_000 / 4,
            "{transactions} transactions for 1000 submissions"
        );
        let rows = SqliteStore::open(&path).unwrap().load().unwrap();
        assert_eq!(rows.len(), 1_000);
    }

    #[test]
    fn shutdown_flushes_pending_submissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        let gc = GroupCommitter::start(Box::new(SqliteStore::open(&path).unwrap()));
        let waiters: Vec<CommitWaiter> = (0..100)
            .map(|n| gc.submit(vec![Change::Upsert(row(n, 5))]))
            .collect();
        gc.shutdown();
        for w in waiters {
            w.wait().unwrap();
        }
        assert_eq!(SqliteStore::open(&path).unwrap().load().unwrap().len(), 100);
    }

    /// Records the size of each committed batch; its first commits each wait for a gate.
    struct Gated {
        gates: std::collections::VecDeque<mpsc::Receiver<()>>,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl SeatStore for Gated {
        fn load(&mut self) -> Result<Vec<SeatRow>> {
            Ok(vec![])
        }
        fn commit(&mut self, changes: &[Change]) -> Result<()> {
            if let Some(gate) = self.gates.pop_front() {
                let _ = gate.recv();
            }
            self.batches.lock().unwrap().push(changes.len());
            Ok(())
        }
    }

    type Key = mpsc::Sender<()>;
    type Batches = Arc<Mutex<Vec<usize>>>;

    /// A committer whose first `held` commits each hold until their gate is opened, the
    /// gates' keys, and the batch sizes.
    fn gated(window: Duration, held: usize) -> (GroupCommitter, Vec<Key>, Batches) {
        let (keys, gates): (Vec<_>, _) = (0..held).map(|_| mpsc::channel()).unzip();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let store = Gated {
            gates,
            batches: Arc::clone(&batches),
        };
        (
            GroupCommitter::start_with(Box::new(store), None, window),
            keys,
            batches,
        )
    }

    fn crowd(gc: &GroupCommitter, from: u32, n: usize) -> Vec<CommitWaiter> {
        (from..from + n as u32)
            .map(|n| gc.submit(vec![Change::Upsert(row(n, 1))]))
            .collect()
    }

    fn wait_all(waiters: Vec<CommitWaiter>) {
        for w in waiters {
            w.wait().unwrap();
        }
    }

    #[test]
    fn a_crowd_arriving_during_a_crowded_commit_is_gathered_for_one_window() {
        let settle = || std::thread::sleep(Duration::from_millis(50));
        let (gc, keys, batches) = gated(Duration::from_secs(2), 2);
        // Commit 1 (one job) is held; a crowd queues behind it. A crowd after a small commit
        // is committed at once: nothing says the server is saturated yet.
        let first = crowd(&gc, 0, 1);
        settle();
        let crowd1 = crowd(&gc, 100, COMMIT_SIBLINGS);
        keys[0].send(()).unwrap();
        wait_all(first);
        settle();
        // Commit 2 (the crowd) is held; another crowd arrives meanwhile: saturated. The next
        // commit waits for the window, and takes ten more clients arriving within it.
        let crowd2 = crowd(&gc, 200, COMMIT_SIBLINGS);
        keys[1].send(()).unwrap();
        wait_all(crowd1);
        let mut late = Vec::new();
        for n in 300..310 {
            std::thread::sleep(Duration::from_millis(5));
            late.extend(crowd(&gc, n, 1));
        }
        wait_all(crowd2);
        wait_all(late);
        // Then a lone client: nothing came during the last commit, so no window.
        let started = std::time::Instant::now();
        for n in 400..405 {
            wait_all(crowd(&gc, n, 1));
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a lone client waited for the window"
        );
        assert_eq!(gc.stats().gathered.load(Ordering::Relaxed), 1);
        assert_eq!(gc.stats().changes.load(Ordering::Relaxed), 80);
        gc.shutdown();
        assert_eq!(
            *batches.lock().unwrap(),
            vec![1, COMMIT_SIBLINGS, COMMIT_SIBLINGS + 10, 1, 1, 1, 1, 1]
        );
    }

    #[test]
    fn a_lone_client_never_waits_for_the_commit_window() {
        // A window of a minute: applied to these small batches, it would show in the time.
        let started = std::time::Instant::now();
        let (gc, _, batches) = gated(Duration::from_secs(60), 0);
        for n in 0..5u32 {
            gc.submit(vec![Change::Upsert(row(n, 1))]).wait().unwrap();
        }
        let three: Vec<CommitWaiter> = (10..13u32)
            .map(|n| gc.submit(vec![Change::Upsert(row(n, 1))]))
            .collect();
        for w in three {
            w.wait().unwrap();
        }
        gc.submit(vec![Change::Upsert(row(20, 1))]).wait().unwrap();
        gc.shutdown();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a window was waited for"
        );
        let batches = batches.lock().unwrap();
        assert_eq!(batches.iter().sum::<usize>(), 9);
        assert!(batches.len() >= 6, "{batches:?}");
    }

    /// Fails any batch holding a row with unit key `bad`.
    struct Picky(Arc<Mutex<Vec<Change>>>);

    impl SeatStore for Picky {
        fn load(&mut self) -> Result<Vec<SeatRow>> {
            Ok(vec![])
        }
        fn commit(&mut self, changes: &[Change]) -> Result<()> {
            if changes
                .iter()
                .any(|c| matches!(c, Change::Upsert(r) if r.unit_key == "bad"))
            {
                return Err(Error::io("picky", io::Error::other("refused")));
            }
            self.0.lock().unwrap().extend_from_slice(changes);
            Ok(())
        }
    }

    #[test]
    fn a_failed_commit_fails_only_its_own_waiters() {
        let committed = Arc::new(Mutex::new(Vec::new()));
        let gc = GroupCommitter::start(Box::new(Picky(Arc::clone(&committed))));
        let mut bad = row(2, 1);
        bad.unit_key = "bad".into();
        let waiters = [
            gc.submit(vec![Change::Upsert(row(1, 1))]),
            gc.submit(vec![Change::Upsert(bad)]),
            gc.submit(vec![Change::Upsert(row(3, 1))]),
            gc.submit(vec![]),
        ];
        let results: Vec<Result<()>> = waiters.into_iter().map(CommitWaiter::wait).collect();
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        match &results[1] {
            Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("refused"), "{e}"),
            other => panic!("{other:?}"),
        }
        let committed = committed.lock().unwrap();
        assert_eq!(committed.len(), 2);
        assert!(
            committed
                .iter()
                .all(|c| matches!(c, Change::Upsert(r) if r.unit_key != "bad"))
        );
    }

    #[test]
    fn waiters_resolve_in_async_code() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        let gc = GroupCommitter::start(Box::new(SqliteStore::open(&path).unwrap()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = gc.submit(vec![Change::Upsert(row(1, 1))]);
            let b = gc.submit(vec![
                Change::Upsert(row(2, 1)),
                Change::Delete(row(1, 0).seat_id),
            ]);
            a.wait_async().await.unwrap();
            b.wait_async().await.unwrap();
        });
        gc.shutdown();
        let rows = SqliteStore::open(&path).unwrap().load().unwrap();
        assert_eq!(rows, vec![row(2, 1)]);
    }

    /// Records the records it is given (vendor ids, as a usage event's); fails vendor 666's.
    struct Recorder {
        seen: Arc<Mutex<Vec<u32>>>,
        waited: Arc<AtomicU64>,
    }

    impl Journal<u32> for Recorder {
        fn write(
            &mut self,
            events: Vec<Vec<u32>>,
            waited: bool,
        ) -> Vec<std::result::Result<(), String>> {
            if waited {
                self.waited.fetch_add(1, Ordering::SeqCst);
            }
            let mut results = Vec::new();
            for sub in events {
                let mut r = Ok(());
                for vendor_id in sub {
                    self.seen.lock().unwrap().push(vendor_id);
                    if vendor_id == 666 {
                        r = Err("vendor 666 refused".to_string());
                    }
                }
                results.push(r);
            }
            results
        }
    }

    #[test]
    fn journal_records_ride_with_their_batch_and_fail_only_their_own_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let waited = Arc::new(AtomicU64::new(0));
        let journal = Recorder {
            seen: Arc::clone(&seen),
            waited: Arc::clone(&waited),
        };
        let gc = GroupCommitter::start_with(
            Box::new(SqliteStore::open(&path).unwrap()),
            Some(Box::new(journal)),
            Duration::ZERO,
        );
        gc.submit_lazy_with(Vec::new(), vec![1]);
        let a = gc.submit_with(vec![Change::Upsert(row(1, 9))], vec![2, 3]);
        let b = gc.submit_with(vec![Change::Upsert(row(2, 9))], vec![666]);
        let c = gc.submit(vec![Change::Upsert(row(3, 9))]);
        gc.submit_lazy_with(Vec::new(), vec![4]);
        a.wait().unwrap();
        let e = b.wait().unwrap_err();
        assert!(e.to_string().contains("vendor 666 refused"), "{e}");
        c.wait().unwrap();
        gc.shutdown();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![1, 2, 3, 666, 4],
            "submission order"
        );
        assert!(
            waited.load(Ordering::SeqCst) >= 1,
            "told when a grant waits"
        );
        // The seat table took every change: undoing a grant its log refused is the caller's.
        let rows = SqliteStore::open(&path).unwrap().load().unwrap();
        assert_eq!(rows.len(), 3);
    }

    const KILL_CHILD_ENV: &str = "TESSERA_TEST_SEAT_STORE_CHILD";
    const KILL_TEST: &str = "server::store::tests::a_killed_server_loses_no_answered_grant";

    /// The child: commits grants through a group committer from four threads and prints each
    /// seat id only after its commit returned, until it is killed.
    fn writer_child(path: &Path) -> ! {
        let gc = GroupCommitter::start(Box::new(SqliteStore::open(path).unwrap()));
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let gc = &gc;
                s.spawn(move || {
                    for i in 0..1_000_000u32 {
                        let r = row(t << 24 | i, u64::MAX >> 1);
                        gc.submit(vec![Change::Upsert(r.clone())]).wait().unwrap();
                        println!("\nSEAT {}", hex::encode(r.seat_id));
                    }
                });
            }
        });
        std::process::exit(0)
    }

    /// kill -9 durability: a grant that was answered (printed) is in the table after the
    /// server is killed mid-write, and the table opens fine.
    #[test]
    fn a_killed_server_loses_no_answered_grant() {
        if let Some(path) = std::env::var_os(KILL_CHILD_ENV) {
            writer_child(Path::new(&path));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.db");
        let stderr = std::fs::File::create(dir.path().join("child.err")).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", KILL_TEST, "--nocapture", "--test-threads=1"])
            .env(KILL_CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut answered = Vec::new();
        let parse = |line: &str| {
            let hex = line.strip_prefix("SEAT ")?;
            let id: [u8; 16] = hex::decode(hex).ok()?.try_into().ok()?;
            Some(id)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while answered.len() < 2_000 && std::time::Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => answered.extend(parse(&line)),
                _ => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines already in the pipe were answered before the kill too.
        answered.extend(lines.map_while(|l| l.ok()).filter_map(|l| parse(&l)));
        let err = std::fs::read_to_string(dir.path().join("child.err")).unwrap_or_default();
        assert!(
            answered.len() >= 2_000,
            "the child answered only {} grants: {err}",
            answered.len()
        );

        let mut store = SqliteStore::open(&path).unwrap();
        let ok: String = store
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let durable: std::collections::HashSet<SeatId> = store
            .load()
            .unwrap()
            .into_iter()
            .map(|r| r.seat_id)
            .collect();
        let missing = answered.iter().filter(|id| !durable.contains(*id)).count();
        assert_eq!(
            missing,
            0,
            "{missing} of {} answered grants lost",
            answered.len()
        );
        assert!(durable.len() >= answered.len());
    }
}
