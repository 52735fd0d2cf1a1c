//! The pool's seat table in etcd (issue 17): several `tessera-server` members share one
//! seat table, so that a license's quantity is enforced exactly across all of them.
//!
//! Keys under the pool's prefix (`config::PoolConfig::key_prefix`):
//! `<prefix>seats/<license id hex>/<seat id hex>` → a [`PoolRow`] (postcard, versioned),
//! attached to an etcd lease: a leased seat's lease is its lease length, kept alive while its
//! client renews (through whichever member it talks to); a borrowed seat's lease runs to its
//! end. An expired seat vanishes with its lease; a revoke deletes the row and revokes the
//! lease.
//!
//! `<prefix>gates/<license id hex>` → the member that wrote the license's last row (no
//! lease): every write of a row writes it in the same transaction.
//!
//! Counting stays [`SeatTable`]'s: each member keeps a cache per license, a `SeatTable` fed
//! with the license's rows as etcd held them at a revision. An acquire decides on the cache
//! and commits with ONE transaction whose compare is "the license's gate was not written
//! after the cached revision", which, as every row is written with the gate, is "no row of
//! the license was written since". (Comparing every key under the license's prefix says the
//! same, but etcd evaluates such a compare key by key inside its one apply loop: 17 ms a
//! grant at 10,000 seats, `tessera-load pool`.) When another member raced, the transaction
//! fails, the member waits briefly for its watch to bring the winner's row (else reads the
//! license's rows), and decides again (bounded). A refusal decided on a cache not read during
//! this acquire is decided again on a fresh read (rows deleted since, by an expiry or a
//! release elsewhere, do not touch the gate, which only makes the cache conservative). So a
//! grant is exact across members without a lock. All members of a pool must write the gate:
//! they run the same release.
//!
//! A watch on the pool's seats keeps the caches current ([`EtcdSeats::follow`]): another
//! member's grant, a release, a revoke, an expiry. A cache entry is kept only when it was
//! read after the watch started (so no event it needs was missed), and every event moves its
//! revision on; without the watch (etcd down, a restart of the watch) the compare still keeps
//! every grant exact, at the cost of a failed transaction.
//!
//! In the cache every row counts as live for as long as it is there (its expiry is etcd's
//! lease, not the row's `expires_ms`): the table never drops a row etcd still holds.
//!
//! A member that cannot reach etcd (no quorum, no leader: the client asks with
//! `require_leader`) answers `Timeout`, never a grant on stale data.
//!
//! Who may form a pool: [`members`] (a pool license's members register in etcd, and a member
//! grants only while a strict majority of them is registered).

pub mod members;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::server::config::{EtcdAccess, PoolConfig};
use crate::server::pool_status::{EtcdOp, PoolMonitor, PoolStats};
use crate::server::seats::{AcquireSpec, BorrowSpec, Borrowed, SeatId, SeatRow, SeatTable};
use crate::server::store::SeatStore;
use crate::util::now_ms;
use crate::{Error, Result};

/// The format version of a stored [`PoolRow`] (version 1, without the holder, is still read:
/// a pool whose members are upgraded one by one).
pub const POOL_ROW_VERSION: u16 = 2;

/// How many times an acquire decides again after another member raced it (each time,
/// another member's grant of the license went in).
const MAX_RACES: usize = 32;

/// How long one etcd call may take on one endpoint.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a member keeps trying etcd (other endpoints, a leader election) before it
/// answers a transient error: well within a client's timeout (5 s by default), so the
/// client hears why rather than timing out.
const PATIENCE: Duration = Duration::from_millis(2000);

/// How long etcd counts as down after a call gave up on it.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// How long a member that lost a race waits for its watch to bring the winner's row before
/// it reads the license's rows itself.
const CATCH_UP: Duration = Duration::from_millis(250);

/// How long the pool keeps why an administrator revoked a seat (`revoked/<seat>`, on a
/// lease of its own), for the member that serves the seat's holder: its holder learns at
/// its next renewal, within a renewal interval, or on re-attaching after a member's death.
const REVOKED_NOTE_TTL_S: i64 = 3600;

/// The expiry of every row in a member's cache: live for as long as etcd holds it.
const IN_ETCD: u64 = u64::MAX;

/// One seat as the pool stores it in etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRow {
    /// The seat.
    pub seat_id: SeatId,
    /// The license it is a seat of.
    pub license_id: [u8; 16],
    /// What its counting unit counts.
    pub unit_key: String,
    /// The client's Noise static key.
    pub client: [u8; 32],
    /// Exclusive use.
    pub exclusive: bool,
    /// When its lease ran out as granted (Unix ms; etcd's lease keeps it alive beyond), or a
    /// borrowed seat's end.
    pub expires_ms: u64,
    /// A borrowed seat's record (`Borrowed::encode`), empty for a leased seat.
    #[serde(with = "serde_bytes")]
    pub borrow: Vec<u8>,
    /// The member that wrote it (the server name its client connected to).
    pub member: String,
    /// The etcd lease it is attached to.
    pub lease: i64,
    /// Who holds it, as the member that wrote it encoded its client for the admin view
    /// (opaque here; empty: not known), so that every member shows who holds every seat.
    #[serde(with = "serde_bytes")]
    pub holder: Vec<u8>,
    /// When it was written (Unix ms).
    pub since_ms: u64,
}

/// A [`PoolRow`] as version 1 stored it.
#[derive(Deserialize)]
struct PoolRowV1 {
    seat_id: SeatId,
    license_id: [u8; 16],
    unit_key: String,
    client: [u8; 32],
    exclusive: bool,
    expires_ms: u64,
    #[serde(with = "serde_bytes")]
    borrow: Vec<u8>,
    member: String,
    lease: i64,
}

impl From<PoolRowV1> for PoolRow {
    fn from(v: PoolRowV1) -> PoolRow {
        PoolRow {
            seat_id: v.seat_id,
            license_id: v.license_id,
            unit_key: v.unit_key,
            client: v.client,
            exclusive: v.exclusive,
            expires_ms: v.expires_ms,
            borrow: v.borrow,
            member: v.member,
            lease: v.lease,
            holder: Vec::new(),
            since_ms: 0,
        }
    }
}

impl PoolRow {
    fn of(row: &SeatRow, member: &str, lease: i64, holder: &[u8]) -> Result<PoolRow> {
        Ok(PoolRow {
            seat_id: row.seat_id,
            license_id: row.license_id,
            unit_key: row.unit_key.clone(),
            client: row.client,
            exclusive: row.exclusive,
            expires_ms: row.expires_ms,
            borrow: match &row.borrow {
                Some(b) => b.encode()?,
                None => Vec::new(),
            },
            member: member.to_string(),
            lease,
            holder: holder.to_vec(),
            since_ms: now_ms(),
        })
    }

    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        crate::util::encode_versioned(POOL_ROW_VERSION, self, "pool seat")
    }

    /// Reads the stored form (this version or version 1).
    pub fn decode(bytes: &[u8]) -> Result<PoolRow> {
        match crate::util::decode_versioned(POOL_ROW_VERSION, bytes, "pool seat") {
            Err(Error::UnknownVersion { found: 1, .. }) => {
                crate::util::decode_versioned::<PoolRowV1>(1, bytes, "pool seat").map(Into::into)
            }
            other => other,
        }
    }

    /// The seat table's row (with its stored expiry).
    pub fn seat_row(&self) -> Result<SeatRow> {
        Ok(SeatRow {
            seat_id: self.seat_id,
            license_id: self.license_id,
            unit_key: self.unit_key.clone(),
            client: self.client,
            exclusive: self.exclusive,
            expires_ms: self.expires_ms,
            borrow: if self.borrow.is_empty() {
                None
            } else {
                Some(Arc::new(Borrowed::decode(&self.borrow)?))
            },
        })
    }
}

/// A seat store that keeps nothing: in pool mode the seats are in etcd, and the group
/// committer only carries the usage log's records.
pub struct NoSeatStore;

impl SeatStore for NoSeatStore {
    fn load(&mut self) -> Result<Vec<SeatRow>> {
        Ok(Vec::new())
    }

    fn commit(&mut self, _changes: &[crate::server::seats::Change]) -> Result<()> {
        Ok(())
    }
}

/// A member's cache of one license's rows.
struct Cached {
    table: SeatTable,
    /// The etcd revision the table reflects (every row written up to it is in the table).
    rev: i64,
}

/// A seat this member serves: its client renews it here.
#[derive(Clone, Debug)]
struct Served {
    license_id: [u8; 16],
    client: [u8; 32],
    lease: i64,
    /// The TTL the lease was granted with (seconds): a keep-alive gives it that long again.
    lease_ttl: i64,
    /// The revision this member wrote the row at (older events say nothing of it).
    rev: i64,
}

/// What a successful claim wrote.
pub struct Claimed {
    /// The row as written (its real expiry).
    pub row: SeatRow,
    /// The license's seats in use with it.
    pub in_use: u32,
    /// Whether the seat id was already this client's (a re-attach, not a new seat).
    pub held: bool,
}

/// See [`EtcdSeats::fresh_from`].
#[derive(Default)]
struct FreshFrom {
    watch: i64,
    missed: HashMap<[u8; 16], i64>,
}

impl FreshFrom {
    /// Whether a read of `license_id` at `rev` misses nothing the watch will not bring.
    fn admits(&self, license_id: &[u8; 16], rev: i64) -> bool {
        rev >= self.watch && self.missed.get(license_id).is_none_or(|m| rev >= *m)
    }
}

/// One member's view of the pool's seat table in etcd.
pub struct EtcdSeats {
    /// TLS and user towards etcd.
    access: EtcdAccess,
    urls: Vec<String>,
    prefix: String,
    member: String,
    /// The connection to the endpoint now in use.
    conn: tokio::sync::Mutex<Option<Client>>,
    /// The endpoint to connect to next.
    next: AtomicUsize,
    cache: Mutex<HashMap<[u8; 16], Cached>>,
    /// How often this member compacts etcd's history (zero: never).
    compact_every: Duration,
    /// What a read of a license's rows must be at least as new as to become its cache
    /// (locked after `cache`): the running watch's start (the watch reports what came after
    /// it), and per license not cached, the newest change the watch reported and nobody
    /// applied. An older read would miss rows no event will bring again, and a cache that
    /// misses a row undercounts.
    fresh_from: Mutex<FreshFrom>,
    served: Mutex<HashMap<SeatId, Served>>,
    /// Seats this member wrote whose rows etcd dropped without this member ending them
    /// (their lease ran out, or another member took them away), with when that was seen:
    /// for this member's usage log ([`EtcdSeats::take_ended`]).
    ended: Mutex<Vec<(SeatRow, u64)>>,
    /// Seats this member is ending itself (a release, a revoke, a return): their deletion is
    /// logged by the caller, not as an expiry.
    ending: Mutex<HashSet<SeatId>>,
    /// etcd round trips and transaction retries, for `/metrics`.
    stats: Arc<PoolStats>,
    /// The members' heartbeats and the endpoints' health, once the server runs.
    monitor: std::sync::OnceLock<Arc<PoolMonitor>>,
    /// Until when etcd counts as down (a call just gave up): calls meanwhile try once and
    /// give up at once, so that clients move on to another member quickly.
    down_until: Mutex<Option<Instant>>,
    /// One gate per license: a member decides and writes one grant of a license at a time,
    /// so that only members, not every request, race each other's transactions.
    gates: Mutex<HashMap<[u8; 16], Arc<tokio::sync::Mutex<()>>>>,
    /// Seat leases granted ahead, so that a grant costs one transaction.
    stock: Arc<Mutex<Vec<Stocked>>>,
    /// The TTL of the leases to stock (the last an acquire wanted; 0: none yet).
    stock_ttl: AtomicI64,
    /// Wakes the stock's refill.
    refill: tokio::sync::Notify,
}

/// A lease held ready for a seat of `ttl` seconds: granted ahead (`full` = `ttl` +
/// [`STOCK_SLACK`] seconds) or freed by a release and kept alive again (`full`: the TTL it
/// was granted with). It has `full` seconds from `granted` (when the grant or keep-alive was
/// sent, so etcd holds it at least that long), and is fit while `ttl` seconds and a margin
/// are left.
struct Stocked {
    ttl: i64,
    lease: i64,
    granted: Instant,
    full: i64,
}

impl Stocked {
    /// Whether a seat of `ttl` seconds may be written on it now: etcd holds it for at least
    /// `ttl` seconds and [`STOCK_MARGIN`] more, and at most [`STOCK_SLACK`] more.
    fn fit(&self, ttl: i64) -> bool {
        let left =
            Duration::from_secs(self.full.max(0) as u64).saturating_sub(self.granted.elapsed());
        let want = Duration::from_secs(ttl.max(0) as u64);
        self.ttl == ttl && left >= want + STOCK_MARGIN && left <= want + STOCK_SLACK
    }
}

/// What a stocked lease must have left beyond its seat's TTL when it is taken: the time from
/// taking it to the seat's transaction committing, with room to spare. A client counts its
/// lease from before it sent its acquire, so etcd holds the row at least as long.
const STOCK_MARGIN: Duration = Duration::from_millis(500);

/// How many leases a member keeps ready (granted ahead, or freed by releases).
const STOCK: usize = 4;

/// Below how many the stock is refilled with new grants. Not at every take: a release
/// gives its lease back, and a member that takes and releases seats in turn then grants
/// none.
const STOCK_LOW: usize = 2;

/// How much longer than the lease a stocked lease is granted for, and so how long it may
/// wait in the stock (less a margin). A seat on a stocked lease whose client dies lives up to
/// this much longer: never shorter than its lease.
const STOCK_SLACK: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether an error is a licensing refusal the cache may have decided on stale rows.
fn refusal(e: &Error) -> bool {
    matches!(e, Error::NoSeat { .. } | Error::ExclusiveDenied(_)) || {
        // A seat id that is in the cache for another client or license may have gone.
        matches!(e, Error::InvalidArgument(m) if m.starts_with("seat id"))
    }
}

impl EtcdSeats {
    /// The pool's seat table as the member `member` sees it (connects on first use).
    pub fn new(config: &PoolConfig, member: &str) -> Result<EtcdSeats> {
        config.check()?;
        Ok(EtcdSeats {
            access: config.access()?,
            urls: config.urls(),
            prefix: config.key_prefix(),
            member: member.to_string(),
            conn: tokio::sync::Mutex::new(None),
            next: AtomicUsize::new(0),
            cache: Mutex::new(HashMap::new()),
            fresh_from: Mutex::new(FreshFrom::default()),
            served: Mutex::new(HashMap::new()),
            ended: Mutex::new(Vec::new()),
            ending: Mutex::new(HashSet::new()),
            stats: Arc::default(),
            monitor: std::sync::OnceLock::new(),
            down_until: Mutex::new(None),
            gates: Mutex::new(HashMap::new()),
            stock: Arc::default(),
            stock_ttl: AtomicI64::new(0),
            refill: tokio::sync::Notify::new(),
            compact_every: config.compact_every(),
        })
    }

    /// The pool's key prefix (ends in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The etcd endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.urls
    }

    /// TLS and user towards etcd (for the member's other etcd clients).
    pub fn access(&self) -> &EtcdAccess {
        &self.access
    }

    /// This member's name (written into the rows it writes).
    pub fn member(&self) -> &str {
        &self.member
    }

    /// etcd round trips and transaction retries.
    pub fn stats(&self) -> &Arc<PoolStats> {
        &self.stats
    }

    /// The pool's members and endpoints as the admin sees them (`None` until the server
    /// started its monitor).
    pub fn monitor(&self) -> Option<&Arc<PoolMonitor>> {
        self.monitor.get()
    }

    /// Sets the monitor (once).
    pub fn set_monitor(&self, m: Arc<PoolMonitor>) {
        let _ = self.monitor.set(m);
    }

    /// A connected client (the endpoint in use, or the next one that answers a connect).
    pub async fn client(&self) -> Result<Client> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let i = self.next.load(Ordering::Relaxed) % self.urls.len();
        let url = &self.urls[i];
        let options = self.access.options(
            ConnectOptions::new()
                .with_connect_timeout(CALL_TIMEOUT)
                .with_timeout(CALL_TIMEOUT)
                .with_keep_alive(Duration::from_secs(2), CALL_TIMEOUT)
                .with_require_leader(true),
        );
        match tokio::time::timeout(CALL_TIMEOUT, Client::connect([url.as_str()], Some(options)))
            .await
        {
            Ok(Ok(c)) => {
                debug!(etcd = %url, "connected to the pool's etcd");
                *conn = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                self.next.store(i + 1, Ordering::Relaxed);
                Err(unreachable(url, &e.to_string()))
            }
            Err(_) => {
                self.next.store(i + 1, Ordering::Relaxed);
                Err(unreachable(url, "connect timed out"))
            }
        }
    }

    /// Drops the connection `failed` (another call may have replaced it already) and moves
    /// to the next endpoint.
    async fn failed(&self) {
        let mut conn = self.conn.lock().await;
        if conn.take().is_some() {
            self.next.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `call` on a connected client, trying the endpoints in turn (a dead node, a node
    /// without a leader during an election) for at most [`PATIENCE`]; then a `Timeout`.
    pub async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let start = Instant::now();
        let patience = match *lock(&self.down_until) {
            Some(t) if Instant::now() < t => Duration::ZERO,
            _ => PATIENCE,
        };
        let mut last;
        loop {
            match self.client().await {
                Ok(c) => match self
                    .stats
                    .timed(
                        EtcdOp::of_call(what),
                        tokio::time::timeout(CALL_TIMEOUT, call(c)),
                    )
                    .await
                {
                    Ok(Ok(v)) => {
                        *lock(&self.down_until) = None;
                        return Ok(v);
                    }
                    Ok(Err(e)) => {
                        last = e.to_string();
                        self.stats.etcd_errors.fetch_add(1, Ordering::Relaxed);
                        self.failed().await;
                    }
                    Err(_) => {
                        last = "timed out".into();
                        self.failed().await;
                    }
                },
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() >= patience {
                *lock(&self.down_until) = Some(Instant::now() + DOWN_FOR);
                return Err(Error::Timeout(format!(
                    "the pool's etcd ({}) did not answer ({what}): {last}; try another member",
                    self.urls.join(",")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn license_prefix(&self, license_id: &[u8; 16]) -> String {
        format!("{}seats/{}/", self.prefix, hex::encode(license_id))
    }

    /// The key every grant of a license writes beside its row (outside the rows' prefix:
    /// no reader of rows sees it). Its mod revision is the license's last grant.
    fn gate_key(&self, license_id: &[u8; 16]) -> String {
        format!("{}gates/{}", self.prefix, hex::encode(license_id))
    }

    /// The key that keeps why a seat was revoked (outside the rows' prefix).
    fn revoked_key(&self, seat_id: &SeatId) -> String {
        format!("{}revoked/{}", self.prefix, hex::encode(seat_id))
    }

    /// Waits (a little) until the watch has brought the license's cache to revision `rev`;
    /// false when it has not (the watch is down or behind: the caller reads).
    async fn caught_up(&self, license_id: &[u8; 16], rev: i64) -> bool {
        let start = Instant::now();
        loop {
            match lock(&self.cache).get(license_id) {
                Some(c) if c.rev >= rev => return true,
                None => return false,
                Some(_) => {}
            }
            if start.elapsed() >= CATCH_UP {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn seat_key(&self, license_id: &[u8; 16], seat_id: &SeatId) -> String {
        format!(
            "{}{}",
            self.license_prefix(license_id),
            hex::encode(seat_id)
        )
    }

    /// Replaces the cache of a license with `kvs` as etcd held them at `rev`; false when that
    /// read is too old to be followed by the watch (read again).
    fn load(&self, license_id: &[u8; 16], kvs: &[etcd_client::KeyValue], rev: i64) -> bool {
        let mut table = SeatTable::new();
        let now = now_ms();
        let rows = kvs
            .iter()
            .filter_map(|kv| match PoolRow::decode(kv.value()) {
                Ok(r) => r.seat_row().ok(),
                Err(e) => {
                    warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "pool seat not read");
                    None
                }
            })
            .filter(|r| r.license_id == *license_id)
            .map(|mut r| {
                r.expires_ms = IN_ETCD;
                r
            })
            .collect();
        table.load(rows, now);
        let mut cache = lock(&self.cache);
        match cache.get_mut(license_id) {
            Some(c) if c.rev > rev => true,
            _ if !lock(&self.fresh_from).admits(license_id, rev) => false,
            _ => {
                cache.insert(*license_id, Cached { table, rev });
                true
            }
        }
    }

    /// Reads a license's rows from etcd into the cache.
    pub async fn refresh(&self, license_id: &[u8; 16]) -> Result<()> {
        let prefix = self.license_prefix(license_id);
        for _ in 0..MAX_RACES {
            let mut resp = self
                .call("read the license's seats", |mut c| {
                    let prefix = prefix.clone();
                    async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
                })
                .await?;
            let rev = resp.take_header().map_or(0, |h| h.revision());
            if self.load(license_id, resp.kvs(), rev) {
                return Ok(());
            }
            // The watch reported a change newer than the read, or restarted after it.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(Error::Timeout(format!(
            "the pool's seats of license {} changed under {MAX_RACES} reads in a row; try again",
            hex::encode(license_id)
        )))
    }

    /// Takes a seat with [`SeatTable::acquire`]'s rules on the license's rows in the pool,
    /// under an etcd lease of the spec's lease length. Idempotent per seat id: the same
    /// client's seat is taken over (a new lease, this member), whichever member granted it.
    /// `holder`: who holds it, for every member's admin view (opaque bytes).
    pub async fn acquire(&self, spec: &AcquireSpec<'_>, holder: &[u8]) -> Result<Claimed> {
        let ttl = spec.lease_ms.div_ceil(1000).max(1) as i64;
        self.claim(
            &spec.license.license_id,
            &spec.seat_id,
            &spec.client,
            (ttl, true),
            holder,
            |t| t.acquire(spec).map(|(row, _, n)| (row, n)),
        )
        .await
    }

    /// Checks that a seat could be lent now ([`SeatTable::check_borrow`] on the pool's rows,
    /// read afresh when the cache refuses).
    pub async fn check_borrow(&self, spec: &BorrowSpec<'_>) -> Result<()> {
        let lic = spec.license.license_id;
        let check = |s: &Self| -> Option<Result<()>> {
            lock(&s.cache)
                .get_mut(&lic)
                .map(|c| c.table.check_borrow(spec))
        };
        match check(self) {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) if !refusal(&e) => return Err(e),
            _ => {}
        }
        self.refresh(&lic).await?;
        check(self).unwrap_or_else(|| Err(Error::Internal("pool cache lost".into())))
    }

    /// Lends a seat ([`SeatTable::borrow`] on the pool's rows) under an etcd lease that runs
    /// to its end.
    pub async fn borrow(&self, spec: &BorrowSpec<'_>, record: Arc<Borrowed>) -> Result<Claimed> {
        let end_ms = record.until.saturating_mul(1000);
        let ttl = (end_ms.saturating_sub(now_ms()) / 1000).max(1) as i64;
        self.claim(
            &spec.license.license_id,
            &spec.seat_id,
            &spec.client,
            (ttl, false),
            &[],
            |t| {
                t.borrow(spec, Arc::clone(&record))
                    .map(|(row, _, n)| (row, n))
            },
        )
        .await
    }

    /// Decides with `decide` on the cache of the license and writes the row it made, under
    /// a new lease of `ttl.0` seconds (from the stock when `ttl.1`), if no row of the
    /// license was written since the cache's revision; else decides again on the rows the
    /// failed transaction read.
    async fn claim(
        &self,
        license_id: &[u8; 16],
        seat_id: &SeatId,
        client: &[u8; 32],
        (ttl, stocked): (i64, bool),
        holder: &[u8],
        mut decide: impl FnMut(&mut SeatTable) -> Result<(SeatRow, u32)>,
    ) -> Result<Claimed> {
        let gate = Arc::clone(lock(&self.gates).entry(*license_id).or_default());
        let _one_at_a_time = gate.lock().await;
        let gate = self.gate_key(license_id);
        let key = self.seat_key(license_id, seat_id);
        let mut fresh = false;
        if !lock(&self.cache).contains_key(license_id) {
            self.refresh(license_id).await?;
            fresh = true;
        }
        for _ in 0..MAX_RACES {
            let decided = {
                let mut cache = lock(&self.cache);
                let Some(c) = cache.get_mut(license_id) else {
                    return Err(Error::Internal("pool cache lost".into()));
                };
                let prev = c.table.seat(seat_id).cloned();
                let held = prev
                    .as_ref()
                    .is_some_and(|r| r.client == *client && r.license_id == *license_id);
                decide(&mut c.table).map(|(row, in_use)| (row, in_use, held, c.rev, prev))
            };
            let (row, in_use, held, rev, prev) = match decided {
                Ok(d) => d,
                Err(e) if !fresh && refusal(&e) => {
                    self.refresh(license_id).await?;
                    fresh = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let ahead = if stocked {
                self.take_stocked(ttl)
            } else {
                None
            };
            let lease = match ahead {
                Some(l) => Ok(l),
                None => {
                    let granted = Instant::now();
                    self.call("grant a seat lease", |mut c| async move {
                        c.lease_grant(ttl, None).await
                    })
                    .await
                    .map(|l| Stocked {
                        ttl,
                        lease: l.id(),
                        granted,
                        full: ttl,
                    })
                }
            };
            let taken = match lease {
                Ok(l) => l,
                Err(e) => {
                    lock(&self.cache).remove(license_id);
                    return Err(e);
                }
            };
            let (lease, lease_ttl) = (taken.lease, taken.full);
            let value = PoolRow::of(&row, &self.member, lease, holder)?.encode()?;
            // Exact across members on one key: every write of a row also writes the
            // license's gate, so "the gate unchanged since the cache's revision" means "no
            // row written since": the same promise as comparing every row of the license,
            // which etcd evaluates key by key (17 ms a grant at 10,000 seats, 13 times an
            // empty license's, in etcd's one apply loop). Rows deleted meanwhile (released,
            // expired) are still counted by the cache: a refusal on it reads afresh.
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    gate.clone(),
                    CompareOp::Less,
                    rev + 1,
                )])
                .and_then([
                    TxnOp::put(
                        key.clone(),
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                    TxnOp::put(gate.clone(), self.member.as_bytes(), None),
                ])
                .or_else([
                    TxnOp::get(gate.clone(), None),
                    TxnOp::get(key.clone(), None),
                ]);
            let resp = self
                .call("write a seat", |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await;
            if stocked && lock(&self.stock).len() < STOCK_LOW {
                // Refilled once the seat's transaction is done, not beside it: a lease grant
                // is a write of its own through etcd's log, and would delay this one.
                self.refill.notify_one();
            }
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    // Written or not: the next acquire reads the license afresh. The lease is
                    // left to run out, never revoked: if the transaction did commit (its
                    // answer lost with a cut etcd node), the row is on this lease, and for a
                    // client re-attaching a live seat that row is its seat; revoking would
                    // free a seat its client still holds, and another client could take the
                    // slot (an over-grant the netns fault test saw). An unused lease costs
                    // nothing; a seat written but never answered is counted for one lease
                    // at most, unless its client re-attaches it.
                    lock(&self.cache).remove(license_id);
                    return Err(e);
                }
            };
            let at = resp.header().map_or(0, |h| h.revision());
            let kvs: Vec<etcd_client::KeyValue> = resp
                .op_responses()
                .into_iter()
                .filter_map(|r| match r {
                    TxnOpResponse::Get(g) => Some(g.kvs().to_vec()),
                    _ => None,
                })
                .flatten()
                .collect();
            // The compare failed, but on our own write: an earlier try of this transaction
            // committed and its answer was lost (the call tried the next etcd node). The
            // row is ours (the lease names it): done, at the revision it was written.
            let ours = (!resp.succeeded())
                .then(|| {
                    kvs.iter()
                        .find(|kv| kv.key() == key.as_bytes() && kv.lease() == lease)
                        .map(|kv| kv.mod_revision())
                })
                .flatten();
            if resp.succeeded() || ours.is_some() {
                let at = ours.unwrap_or(at);
                debug!(
                    seat = %hex::encode(seat_id), lease, rev = at, decided_at = rev, in_use, held,
                    "pool: seat written"
                );
                {
                    let mut cache = lock(&self.cache);
                    if let Some(c) = cache.get_mut(license_id) {
                        let mut live = row.clone();
                        live.expires_ms = IN_ETCD;
                        c.table.load(vec![live], now_ms());
                        c.rev = c.rev.max(at);
                    }
                }
                let old = lock(&self.served).insert(
                    *seat_id,
                    Served {
                        license_id: *license_id,
                        client: *client,
                        lease,
                        lease_ttl,
                        rev: at,
                    },
                );
                if let Some(old) = old
                    && old.lease != lease
                {
                    // Re-attached here on a new lease: the old one holds nothing now.
                    self.drop_lease(old.lease);
                }
                return Ok(Claimed { row, in_use, held });
            }
            // Nothing was written on it: back to the stock while it is fit.
            self.put_back(taken);
            // The decision is undone: the cache may be newer than the failed transaction's
            // read (the watch), and then stays, without a seat that was never written.
            if let Some(c) = lock(&self.cache).get_mut(license_id) {
                remove_row(&mut c.table, seat_id);
                if let Some(p) = prev {
                    c.table.load(vec![p], now_ms());
                }
            }
            debug!(license = %hex::encode(license_id), decided_at = rev, "another member raced: deciding again");
            self.stats.txn_retries.fetch_add(1, Ordering::Relaxed);
            // Decided again once the cache holds the rows written up to the gate's write:
            // the watch brings them (it is usually right behind); else they are read.
            let written = kvs
                .iter()
                .find(|kv| kv.key() == gate.as_bytes())
                .map_or(at, |kv| kv.mod_revision());
            if !self.caught_up(license_id, written).await {
                self.refresh(license_id).await?;
            }
            fresh = true;
        }
        self.stats.txn_gave_up.fetch_add(1, Ordering::Relaxed);
        Err(Error::Timeout(format!(
            "the pool's seat table for license {} changed under {MAX_RACES} tries in a row; \
             try again",
            hex::encode(license_id)
        )))
    }

    /// A stocked lease fit for a seat of `ttl` seconds, if any (the unfit are revoked). The
    /// caller asks for the refill once its transaction is done.
    fn take_stocked(&self, ttl: i64) -> Option<Stocked> {
        let mut stale = Vec::new();
        let got = {
            let mut stock = lock(&self.stock);
            stock.retain(|s| {
                let fit = s.fit(ttl);
                if !fit {
                    stale.push(s.lease);
                }
                fit
            });
            stock.pop()
        };
        for l in stale {
            self.drop_lease(l);
        }
        self.stock_ttl.store(ttl, Ordering::Relaxed);
        got
    }

    /// Returns a lease that holds nothing to the stock if it is fit for the seats granted
    /// now and the stock has room; else revokes it.
    fn put_back(&self, s: Stocked) {
        let ttl = self.stock_ttl.load(Ordering::Relaxed);
        if let Some(lease) = restock(&self.stock, s, ttl) {
            self.drop_lease(lease);
        }
    }

    /// A released seat's lease (it holds nothing now) kept alive once more and put in the
    /// stock for the next grant, in the background: the next acquire then needs no lease
    /// grant and the release no revoke, two writes through etcd's log saved per seat. A
    /// keep-alive is answered by etcd's leader without a write. Revoked when unfit.
    fn reuse_lease(&self, lease: i64, full: i64) {
        let ttl = self.stock_ttl.load(Ordering::Relaxed);
        if full < ttl || lock(&self.stock).len() >= STOCK {
            self.drop_lease(lease);
            return;
        }
        let Ok(Some(mut c)) = self.conn.try_lock().map(|c| c.clone()) else {
            return;
        };
        let stock = Arc::clone(&self.stock);
        tokio::spawn(async move {
            let granted = Instant::now();
            let alive = tokio::time::timeout(CALL_TIMEOUT, c.lease_keep_alive(lease))
                .await
                .is_ok_and(|r| r.is_ok());
            let s = Stocked {
                ttl,
                lease,
                granted,
                full,
            };
            if !alive || restock(&stock, s, ttl).is_some() {
                let _ = c.lease_revoke(lease).await;
            }
        });
    }

    /// Fills the stock of leases whenever an acquire took from it (or found it empty).
    async fn refill_stock(weak: std::sync::Weak<EtcdSeats>) {
        loop {
            // Held while it waits: the server's stop ends this task (`follow`).
            let Some(me) = weak.upgrade() else { return };
            me.refill.notified().await;
            let ttl = me.stock_ttl.load(Ordering::Relaxed);
            while ttl > 0 && lock(&me.stock).len() < STOCK {
                let granted = Instant::now();
                let full = ttl + STOCK_SLACK.as_secs() as i64;
                match me
                    .call("grant seat leases ahead", |mut c| async move {
                        c.lease_grant(full, None).await
                    })
                    .await
                {
                    Ok(l) => lock(&me.stock).push(Stocked {
                        ttl,
                        lease: l.id(),
                        granted,
                        full,
                    }),
                    Err(_) => break,
                }
            }
        }
    }

    /// Compacts etcd's history every `compact_every`, up to the revision the previous round
    /// saw: at least that much history is kept, and etcd's database does not grow with every
    /// grant and release until its quota stops all writes (etcd 3.4 compacts nothing by
    /// default). Every member does it; a compaction another member already made is refused
    /// by etcd and ignored. Watches follow the present, so none of this member's is cut.
    async fn compact_history(weak: std::sync::Weak<EtcdSeats>) {
        let every = weak.upgrade().map_or(Duration::ZERO, |me| me.compact_every);
        if every.is_zero() {
            return;
        }
        let mut seen: Option<i64> = None;
        loop {
            tokio::time::sleep(every).await;
            let Some(me) = weak.upgrade() else { return };
            let Ok(mut c) = me.client().await else {
                continue;
            };
            if let Some(rev) = seen.filter(|r| *r > 1) {
                match tokio::time::timeout(CALL_TIMEOUT, c.compact(rev, None)).await {
                    Ok(Ok(_)) => debug!(revision = rev, "pool: etcd history compacted"),
                    Ok(Err(e)) => {
                        debug!(revision = rev, error = %e, "pool: etcd history not compacted")
                    }
                    Err(_) => debug!(revision = rev, "pool: etcd compaction unanswered"),
                }
            }
            let now = tokio::time::timeout(
                CALL_TIMEOUT,
                c.get(
                    me.prefix.as_str(),
                    Some(GetOptions::new().with_keys_only().with_limit(1)),
                ),
            )
            .await;
            seen = match now {
                Ok(Ok(r)) => r.header().map(|h| h.revision()),
                _ => None,
            };
        }
    }

    /// Revokes a lease nobody uses (in the background).
    fn drop_lease(&self, lease: i64) {
        debug!(lease, "pool: revoking a lease");
        if let Ok(Some(c)) = self.conn.try_lock().map(|c| c.clone()) {
            let mut c = c;
            tokio::spawn(async move {
                let _ = c.lease_revoke(lease).await;
            });
        }
    }

    /// Renews the client's seats this member serves (their etcd leases kept alive). Returns
    /// the seats that are lost: not served here for this client, or gone from the pool
    /// (revoked, released elsewhere, expired). A borrowed seat is never renewed nor lost.
    pub async fn renew(&self, ids: &[SeatId], client: &[u8; 32]) -> Result<Vec<SeatId>> {
        let mut lost = Vec::new();
        let mut mine = Vec::new();
        for id in ids {
            match lock(&self.served).get(id).filter(|s| s.client == *client) {
                Some(s) => mine.push((*id, s.clone())),
                None => {
                    debug!(seat = %hex::encode(id), "pool: renewal of a seat not served here");
                    lost.push(*id)
                }
            }
        }
        // The leases kept alive side by side: one round trip for all of a client's seats.
        let alive =
            futures_util::future::join_all(mine.iter().map(|(_, s)| self.keep_alive(s.lease)))
                .await;
        for ((id, s), alive) in mine.into_iter().zip(alive) {
            if alive? {
                continue;
            }
            {
                let mut served = lock(&self.served);
                match served.get(&id) {
                    // Re-attached here on a new lease while this renewal ran (its client
                    // gave up waiting and acquired it again): the claim revoked the lease
                    // this renewal kept alive, and the seat lives on its new one.
                    Some(now) if now.lease != s.lease => continue,
                    Some(_) => {
                        served.remove(&id);
                    }
                    None => {}
                }
            }
            // The cache is left alone: its rows change only with what etcd says in order
            // (the watch, a read). The row went with its lease, and the watch reports it;
            // a row taken out here on a stale guess could be a live seat on a lease this
            // renewal never saw, and the next grant would count one seat too few.
            debug!(seat = %hex::encode(id), lease = s.lease, "pool: seat lease gone at renewal");
            lost.push(id);
        }
        Ok(lost)
    }

    /// Keeps a lease alive once; `false` when etcd no longer has it. One keep-alive stream
    /// per renewal, closed after its answer: a member keeps no stream per seat.
    async fn keep_alive(&self, lease: i64) -> Result<bool> {
        self.call("keep a seat lease alive", |mut c| async move {
            // Opening the stream sends one keep-alive and reads its answer.
            match c.lease_keep_alive(lease).await {
                Ok(_) => Ok(true),
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Reads the row of a seat: from the key of a license when it is known, else among
    /// every seat of the pool. Returns the row, its key and the key's mod revision.
    async fn find(
        &self,
        seat_id: &SeatId,
        license_id: Option<[u8; 16]>,
    ) -> Result<Option<(PoolRow, String, i64)>> {
        let (key, opts) = match license_id {
            Some(l) => (self.seat_key(&l, seat_id), None),
            None => (
                format!("{}seats/", self.prefix),
                Some(GetOptions::new().with_prefix()),
            ),
        };
        let resp = self
            .call("read a seat", |mut c| {
                let key = key.clone();
                let opts = opts.clone();
                async move { c.get(key, opts).await }
            })
            .await?;
        let suffix = format!("/{}", hex::encode(seat_id));
        for kv in resp.kvs() {
            if kv.key().ends_with(suffix.as_bytes()) {
                let row = PoolRow::decode(kv.value())?;
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                return Ok(Some((row, key, kv.mod_revision())));
            }
        }
        Ok(None)
    }

    /// The seat's row as the pool holds it now, if any.
    pub async fn seat(&self, seat_id: &SeatId) -> Result<Option<PoolRow>> {
        let known = lock(&self.served).get(seat_id).map(|s| s.license_id);
        Ok(self.find(seat_id, known).await?.map(|(r, _, _)| r))
    }

    /// Deletes the row if it is still the one read (at `rev`), and revokes its lease.
    /// Deletes a seat's row if unchanged since `rev` (with `also` in the same transaction),
    /// and revokes its lease.
    async fn delete(
        &self,
        key: &str,
        rev: i64,
        row: &PoolRow,
        also: Option<TxnOp>,
    ) -> Result<bool> {
        let ops: Vec<TxnOp> = std::iter::once(TxnOp::delete(key, None))
            .chain(also)
            .collect();
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then(ops);
        let resp = self
            .ending(&row.seat_id, async {
                let resp = self
                    .call("delete a seat", |mut c| {
                        let txn = txn.clone();
                        async move { c.txn(txn).await }
                    })
                    .await?;
                let done = resp.succeeded();
                Ok((resp, done))
            })
            .await?;
        if resp.succeeded() {
            if let Some(c) = lock(&self.cache).get_mut(&row.license_id) {
                remove_row(&mut c.table, &row.seat_id);
            }
            lock(&self.served).remove(&row.seat_id);
            let lease = row.lease;
            let _ = self
                .call("revoke a seat lease", |mut c| async move {
                    c.lease_revoke(lease).await
                })
                .await;
        }
        Ok(resp.succeeded())
    }

    /// Releases the client's (leased) seat. `None` when the pool has no such seat of this
    /// client.
    pub async fn release(&self, seat_id: &SeatId, client: &[u8; 32]) -> Result<Option<SeatRow>> {
        // A seat served here: one transaction, deleting it if it is still on the lease this
        // member wrote it with (the lease names the row: only this member's write has it).
        let served = lock(&self.served).get(seat_id).cloned();
        if let Some(s) = served.filter(|s| s.client == *client) {
            let key = self.seat_key(&s.license_id, seat_id);
            let txn = Txn::new()
                .when([Compare::lease(key.clone(), CompareOp::Equal, s.lease)])
                .and_then([TxnOp::delete(
                    key,
                    Some(DeleteOptions::new().with_prev_key()),
                )]);
            let resp = self
                .ending(seat_id, async {
                    let resp = self
                        .call("release a seat", |mut c| {
                            let txn = txn.clone();
                            async move { c.txn(txn).await }
                        })
                        .await?;
                    let done = resp.succeeded();
                    Ok((resp, done))
                })
                .await?;
            if resp.succeeded() {
                let row = resp
                    .op_responses()
                    .into_iter()
                    .find_map(|r| match r {
                        TxnOpResponse::Delete(d) => d.prev_kvs().first().cloned(),
                        _ => None,
                    })
                    .map(|kv| PoolRow::decode(kv.value()))
                    .transpose()?;
                lock(&self.served).remove(seat_id);
                if let Some(c) = lock(&self.cache).get_mut(&s.license_id) {
                    c.table.revoke(seat_id, 0);
                }
                self.reuse_lease(s.lease, s.lease_ttl);
                return row.map(|r| r.seat_row()).transpose();
            }
        }
        let known = lock(&self.served).get(seat_id).map(|s| s.license_id);
        let Some((row, key, rev)) = self.find(seat_id, known).await? else {
            lock(&self.served).remove(seat_id);
            return Ok(None);
        };
        if row.client != *client || !row.borrow.is_empty() {
            return Ok(None);
        }
        if self.delete(&key, rev, &row, None).await? {
            Ok(Some(row.seat_row()?))
        } else {
            Ok(None)
        }
    }

    /// Takes a live seat away from whichever client holds it, from any member (an admin's
    /// revoke). A borrowed seat is refused by the caller before (`seat` says what it is).
    /// `reason` is kept in etcd with the deletion (for an hour), so that whichever member
    /// serves the holder tells it why ([`EtcdSeats::revoked_reasons`]).
    pub async fn revoke(&self, seat_id: &SeatId, reason: &str) -> Result<Option<SeatRow>> {
        let Some((row, key, rev)) = self.find(seat_id, None).await? else {
            return Ok(None);
        };
        let note = self
            .call("grant a revoke note lease", |mut c| async move {
                c.lease_grant(REVOKED_NOTE_TTL_S, None).await
            })
            .await?
            .id();
        let why = TxnOp::put(
            self.revoked_key(seat_id),
            reason,
            Some(PutOptions::new().with_lease(note)),
        );
        if self.delete(&key, rev, &row, Some(why)).await? {
            Ok(Some(row.seat_row()?))
        } else {
            Ok(None)
        }
    }

    /// Takes back a borrowed seat (its return). `None` when the pool has no borrowed seat
    /// with this id.
    pub async fn give_back(&self, seat_id: &SeatId) -> Result<Option<SeatRow>> {
        let Some((row, key, rev)) = self.find(seat_id, None).await? else {
            return Ok(None);
        };
        if row.borrow.is_empty() {
            return Ok(None);
        }
        if self.delete(&key, rev, &row, None).await? {
            Ok(Some(row.seat_row()?))
        } else {
            Ok(None)
        }
    }

    /// Why an administrator revoked each of `seat_ids`, for those the pool still keeps a
    /// reason of (any member's revoke; see [`EtcdSeats::revoke`]). One read, on the path
    /// of a renewal that lost seats.
    pub async fn revoked_reasons(&self, seat_ids: &[SeatId]) -> Result<Vec<(SeatId, String)>> {
        let keys: Vec<String> = seat_ids.iter().map(|id| self.revoked_key(id)).collect();
        let txn = Txn::new().and_then(
            keys.iter()
                .map(|k| TxnOp::get(k.as_str(), None))
                .collect::<Vec<_>>(),
        );
        let resp = self
            .call("read why seats were revoked", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let mut found = Vec::new();
        for (id, op) in seat_ids.iter().zip(resp.op_responses()) {
            if let etcd_client::TxnOpResponse::Get(g) = op
                && let Some(kv) = g.kvs().first()
            {
                found.push((*id, String::from_utf8_lossy(kv.value()).into_owned()));
            }
        }
        Ok(found)
    }

    /// The license a seat this member serves for `client` is of (for the calls that run in
    /// the seat's container). A seat revoked elsewhere is found gone at the next renewal.
    pub fn served(&self, seat_id: &SeatId, client: &[u8; 32]) -> Option<[u8; 16]> {
        lock(&self.served)
            .get(seat_id)
            .filter(|s| s.client == *client)
            .map(|s| s.license_id)
    }

    /// Follows the pool's seats with an etcd watch until `stop` resolves, restarting the
    /// watch after a failure: the caches see other members' changes as they happen, and a
    /// seat revoked or taken over elsewhere is no longer served here. Keeps the stock of
    /// leases granted ahead meanwhile.
    pub async fn follow(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let weak = Arc::downgrade(&self);
        drop(self);
        let stock = Self::refill_stock(weak.clone());
        let compact = Self::compact_history(weak.clone());
        let run = async move {
            loop {
                let Some(me) = weak.upgrade() else { return };
                if let Err(e) = me.watch_once().await {
                    debug!(error = %e, "the pool's watch stopped; restarting it");
                }
                drop(me);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        tokio::select! {
            _ = async { tokio::join!(run, stock, compact) } => {},
            () = stop => {},
        }
    }

    async fn watch_once(&self) -> Result<()> {
        let key = format!("{}seats/", self.prefix);
        let failed = |e: &dyn std::fmt::Display| {
            Error::Timeout(format!("the pool's watch on etcd failed: {e}"))
        };
        let mut c = self.client().await?;
        let mut stream = tokio::time::timeout(
            CALL_TIMEOUT,
            c.watch(key, Some(WatchOptions::new().with_prefix().with_prev_key())),
        )
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?;
        let created = tokio::time::timeout(CALL_TIMEOUT, stream.message())
            .await
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&e))?
            .ok_or_else(|| failed(&"no answer"))?;
        let from = created.header().map_or(i64::MAX, |h| h.revision());
        // Entries read before the watch's start may miss changes it will not report; so
        // would reads answered before it and loaded after.
        {
            let mut cache = lock(&self.cache);
            cache.retain(|_, c| c.rev >= from);
            lock(&self.fresh_from).watch = from;
        }
        // Deletions before the watch's start are not reported: nothing to wait for.
        lock(&self.ending).clear();
        debug!(revision = from, "following the pool's seats");
        loop {
            let Some(resp) = stream.message().await.map_err(|e| failed(&e))? else {
                return Ok(());
            };
            if resp.canceled() {
                return Err(failed(&resp.cancel_reason()));
            }
            for ev in resp.events() {
                self.apply(ev);
            }
        }
    }

    /// Applies one change of the pool's seats to the cache of its license (when cached and
    /// not already in it).
    fn apply(&self, ev: &etcd_client::Event) {
        let Some(kv) = ev.kv() else { return };
        let rest = &kv.key()[self.prefix.len().min(kv.key().len())..];
        let Some(rest) = rest.strip_prefix(b"seats/") else {
            return;
        };
        let mut parts = rest.split(|b| *b == b'/');
        let (Some(lic), Some(seat)) = (parts.next(), parts.next()) else {
            return;
        };
        let (Ok(license_id), Ok(seat_id)) = (
            <[u8; 16]>::try_from(hex::decode(lic).unwrap_or_default().as_slice()),
            <[u8; 16]>::try_from(hex::decode(seat).unwrap_or_default().as_slice()),
        ) else {
            return;
        };
        let rev = kv.mod_revision();
        let row = match ev.event_type() {
            EventType::Put => match PoolRow::decode(kv.value()) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(error = %e, "pool seat not read");
                    None
                }
            },
            EventType::Delete => {
                self.note_end(&seat_id, ev.prev_kv());
                None
            }
        };
        {
            let mut served = lock(&self.served);
            if let Some(s) = served.get(&seat_id)
                && rev > s.rev
                && row.as_ref().is_none_or(|r| r.lease != s.lease)
            {
                // Gone, or taken over by another member.
                debug!(seat = %hex::encode(seat_id), rev, "pool: seat no longer served here");
                served.remove(&seat_id);
            }
        }
        let mut cache = lock(&self.cache);
        let Some(c) = cache.get_mut(&license_id) else {
            // A read of the license answered before this change must not become its cache.
            let mut fresh = lock(&self.fresh_from);
            let missed = fresh.missed.entry(license_id).or_insert(rev);
            *missed = (*missed).max(rev);
            return;
        };
        if rev <= c.rev {
            return;
        }
        match row.map(|r| r.seat_row()) {
            Some(Ok(mut r)) => {
                r.expires_ms = IN_ETCD;
                c.table.load(vec![r], now_ms());
            }
            Some(Err(_)) => {}
            None => remove_row(&mut c.table, &seat_id),
        }
        c.rev = rev;
    }

    /// A seat's row deleted (a watch event, with the row as it was): one this member wrote
    /// and did not end itself ended by its lease (or elsewhere), for the usage log.
    fn note_end(&self, seat_id: &SeatId, prev: Option<&etcd_client::KeyValue>) {
        if lock(&self.ending).remove(seat_id) {
            return;
        }
        let Some(row) = prev.and_then(|kv| PoolRow::decode(kv.value()).ok()) else {
            return;
        };
        if row.member != self.member {
            return;
        }
        if let Ok(r) = row.seat_row() {
            debug!(seat = %hex::encode(seat_id), "pool: a seat written here ended in etcd");
            lock(&self.ended).push((r, now_ms()));
        }
    }

    /// The seats this member wrote that ended in etcd without its doing since the last call
    /// (their lease ran out: the client stopped renewing), each with when that was seen.
    pub fn take_ended(&self) -> Vec<(SeatRow, u64)> {
        std::mem::take(&mut *lock(&self.ended))
    }

    /// Runs `end`, a deletion of a seat's row by this member, with the seat marked as ended
    /// here: the watch's report of it is not an expiry. The mark stays until the watch
    /// reports the deletion (or restarts) when `end` deleted the row.
    async fn ending<T>(
        &self,
        seat_id: &SeatId,
        end: impl Future<Output = Result<(T, bool)>>,
    ) -> Result<T> {
        lock(&self.ending).insert(*seat_id);
        let out = end.await;
        if !matches!(out, Ok((_, true))) {
            lock(&self.ending).remove(seat_id);
        }
        out.map(|(v, _)| v)
    }

    /// How many seats this member serves.
    pub fn served_count(&self) -> usize {
        lock(&self.served).len()
    }

    /// The license's seats in use in the pool now (read from etcd).
    pub async fn in_use(&self, license_id: &[u8; 16]) -> Result<u32> {
        self.refresh(license_id).await?;
        Ok(self.cached_in_use(license_id))
    }

    /// The license's seats in use as this member last read them (no etcd call).
    pub fn cached_in_use(&self, license_id: &[u8; 16]) -> u32 {
        lock(&self.cache)
            .get(license_id)
            .map_or(0, |c| c.table.in_use(license_id, now_ms()))
    }

    /// Every seat in the pool now, as stored.
    pub async fn rows(&self) -> Result<Vec<PoolRow>> {
        let key = format!("{}seats/", self.prefix);
        let resp = self
            .call("read the seats", |mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| PoolRow::decode(kv.value()).ok())
            .collect())
    }
}

/// Puts `s` in the stock if it is fit for seats of `ttl` seconds and the stock has room;
/// else gives its lease back (to revoke).
fn restock(stock: &Mutex<Vec<Stocked>>, s: Stocked, ttl: i64) -> Option<i64> {
    let mut stock = lock(stock);
    if s.fit(ttl) && stock.len() < STOCK {
        stock.push(s);
        None
    } else {
        Some(s.lease)
    }
}

/// Takes a row out of a cache's table, leased or borrowed.
fn remove_row(table: &mut SeatTable, seat_id: &SeatId) {
    if table.revoke(seat_id, 0).is_none() {
        table.give_back(seat_id, 0);
    }
}

fn unreachable(url: &str, why: &str) -> Error {
    Error::Timeout(format!("the pool's etcd at {url} is unreachable: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_row_round_trips_and_a_damaged_one_is_refused() {
        let b = Borrowed {
            borrower_key: [3; 32],
            borrower_serial: "SW-B".into(),
            hostname: "h".into(),
            user: "uid:1".into(),
            issued_at: 10,
            until: 20,
            grant: vec![1, 2],
            certificate: vec![3],
        };
        let row = SeatRow {
            seat_id: [1; 16],
            license_id: [2; 16],
            unit_key: "handle:01".into(),
            client: [9; 32],
            exclusive: false,
            expires_ms: 20_000,
            borrow: Some(Arc::new(b)),
        };
        let p = PoolRow::of(&row, "m1", 77, b"who").unwrap();
        let bytes = p.encode().unwrap();
        let back = PoolRow::decode(&bytes).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.seat_row().unwrap(), row);
        assert!(PoolRow::decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(PoolRow::decode(b"").is_err());
        assert_eq!(back.holder, b"who");

        // A row a member of the version before wrote (no holder) is read, holder unknown.
        let v1 = crate::util::encode_versioned(
            1,
            &(
                p.seat_id,
                p.license_id,
                &p.unit_key,
                p.client,
                p.exclusive,
                p.expires_ms,
                &p.borrow,
                &p.member,
                p.lease,
            ),
            "test",
        )
        .unwrap();
        let old = PoolRow::decode(&v1).unwrap();
        assert_eq!(old.seat_row().unwrap(), row);
        assert!(old.holder.is_empty());
        assert_eq!((old.member.as_str(), old.lease), ("m1", 77));
        // A version from the future is refused, not misread.
        let v3 = crate::util::encode_versioned(3, &p, "test").unwrap();
        assert!(matches!(
            PoolRow::decode(&v3),
            Err(Error::UnknownVersion { found: 3, .. })
        ));
    }

    #[test]
    fn a_read_older_than_what_the_watch_reported_or_began_at_is_not_a_cache() {
        let lic = [7u8; 16];
        let mut f = FreshFrom {
            watch: 10,
            ..FreshFrom::default()
        };
        assert!(f.admits(&lic, 10));
        assert!(!f.admits(&lic, 9), "older than the watch's start");
        // The watch reported a change of the license while it was not cached.
        f.missed.insert(lic, 14);
        assert!(!f.admits(&lic, 13));
        assert!(f.admits(&lic, 14));
        assert!(f.admits(&[8u8; 16], 10), "another license");
    }
}
