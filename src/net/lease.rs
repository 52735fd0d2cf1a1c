//! The lease keeper: a session's seats on license servers (`docs/SERVER.md`, "Leases").
//!
//! [`NetSeats`] holds one connection to the first server of its list that answers, the seats
//! acquired through it, and a background thread that renews their leases every `renew_ms`.
//! When the connection fails the keeper reconnects (the current server first, then the rest
//! of the list in order) and re-attaches every seat by acquiring it again with its seat id,
//! which the server treats as the same seat. A seat that could not be re-attached before its
//! lease ran out (its grace period), that the server no longer knows, or whose re-attach the
//! server answered with a verdict (`NO_SEAT`, ...: it no longer held it) is lost: the next
//! call for it returns [`Error::LeaseLost`], and its keys ([`SeatKeys`]) are zeroized.
//!
//! A seat's local operations (encrypting and decrypting with its kept keys, its cached
//! information) check it with [`NetSeats::keys`], which never takes the connection's lock:
//! the keeper holds that while it reconnects, up to the timeout.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use zeroize::Zeroizing;

use super::conn::ServerConn;
use super::proto::{self, ClientHello, LossReason, LostSeat, NetRequest, NetResponse, SeatGrant};
use super::seat_keys::SeatKeys;
use crate::{Error, Result};

/// How long the keeper waits when it holds no seat.
const IDLE: Duration = Duration::from_secs(1);
/// The shortest renewal interval the keeper honours (a server answering `renew_ms = 0` must
/// not make it spin).
const MIN_RENEW: Duration = Duration::from_millis(10);
/// The longest wait between reconnection attempts while a seat is not attached.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// A held seat.
#[derive(Clone, Debug)]
pub struct SeatState {
    /// The publisher.
    pub vendor_id: u32,
    /// The product.
    pub product_code: u32,
    /// Feature bits asked for.
    pub features: u32,
    /// Exclusive use.
    pub exclusive: bool,
    /// The grant (its `lease_ms` follows the last renewal).
    pub grant: SeatGrant,
    /// Why the seat was lost, once it is.
    pub lost: Option<String>,
    /// Whether the current connection holds the seat (false after a connection failure until
    /// it is re-attached).
    attached: bool,
    /// The last successful grant or renewal: the lease runs until this plus `lease_ms`.
    renewed_at: Instant,
    /// The last error re-attaching the seat, for the message when it is lost.
    last_error: Option<String>,
    /// Its keys for local use, zeroized once it is lost or released (shared by the copies).
    keys: Arc<Mutex<SeatKeys>>,
}

impl SeatState {
    fn deadline(&self) -> Instant {
        self.renewed_at + Duration::from_millis(self.grant.lease_ms)
    }

    fn acquire_request(&self) -> NetRequest {
        NetRequest::Acquire {
            seat_id: self.grant.seat_id,
            vendor_id: self.vendor_id,
            product_code: self.product_code,
            features: self.features,
            exclusive: self.exclusive,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether an error means the connection is gone (rather than a verdict of the server).
fn connection_failed(conn: &Option<ServerConn>) -> bool {
    conn.as_ref().is_none_or(ServerConn::is_broken)
}

/// Whether an error is a server's verdict that it will not hold a seat (no seat, no license,
/// lost, ...), not a failure to ask, a damaged answer or something that may pass.
fn is_verdict(e: &Error) -> bool {
    use crate::status::Status;
    matches!(
        e.status(),
        Status::NoLicense
            | Status::NoSeat
            | Status::Expired
            | Status::FeatureMissing
            | Status::VmNotAllowed
            | Status::ExclusiveDenied
            | Status::WrongVendor
            | Status::LeaseLost
    )
}

/// Whether a server's answer says it cannot serve now while another server may: a pool
/// member cut off from its etcd answers `Timeout` (issue 17). The client then moves on to
/// the next server of its list.
fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Timeout(_))
}

/// What the session and the keeper thread share. Lock order: `conn`, then `seats`.
struct Inner {
    servers: Vec<String>,
    host_secret: Zeroizing<[u8; 32]>,
    client: ClientHello,
    publisher: VerifyingKey,
    vendor_id: u32,
    timeout: Duration,
    conn: Mutex<Option<ServerConn>>,
    /// The index in `servers` of the last server connected to.
    current: Mutex<Option<usize>>,
    /// The name of the server connected to (kept apart from `conn`, which a reconnect holds
    /// for a while).
    server_name: Mutex<Option<String>>,
    seats: Mutex<HashMap<[u8; 16], SeatState>>,
    /// The server connected to answered `RenewWhy` with a decoding error (it is older than
    /// that request): renew with `Renew` until the next connection.
    plain_renew: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// Connects to the first server that answers: the current one first, then the list in
    /// order. Returns the most specific error when none does.
    fn connect(&self, conn: &mut Option<ServerConn>) -> Result<()> {
        if !connection_failed(conn) {
            return Ok(());
        }
        *conn = None;
        let current = *lock(&self.current);
        let order = current
            .into_iter()
            .chain((0..self.servers.len()).filter(|i| Some(*i) != current));
        let mut best: Option<Error> = None;
        for i in order {
            let addr = &self.servers[i];
            match ServerConn::connect(
                addr,
                &self.host_secret,
                &self.client,
                &self.publisher,
                self.vendor_id,
                self.timeout,
            ) {
                Ok(c) => {
                    self.plain_renew
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    *lock(&self.current) = Some(i);
                    *lock(&self.server_name) = Some(c.server_name().to_string());
                    *conn = Some(c);
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(server = %addr, error = %e, "license server unavailable");
                    if best
                        .as_ref()
                        .is_none_or(|b| e.specificity() > b.specificity())
                    {
                        best = Some(e);
                    }
                }
            }
        }
        Err(best.unwrap_or_else(|| Error::NoLicense("no license server is configured".into())))
    }

    /// Checks a grant from the server `conn` is connected to ([`proto::check_grant`]).
    fn check_grant(&self, conn: &Option<ServerConn>, grant: &SeatGrant) -> Result<()> {
        let Some(c) = conn.as_ref() else {
            return Err(Error::Internal("a grant without a connection".into()));
        };
        proto::check_grant(grant, c.delegations(), &self.publisher, self.vendor_id).map(|_| ())
    }

    /// Leaves the server connected to for the next one of the list, when there is another
    /// (a pool member that answered a transient error): the connection is dropped and the
    /// next connect starts with the next server. Returns whether it moved.
    fn move_on(&self, conn: &mut Option<ServerConn>) -> bool {
        if self.servers.len() < 2 {
            return false;
        }
        self.disconnected(conn);
        let mut current = lock(&self.current);
        *current = Some(current.map_or(0, |i| (i + 1) % self.servers.len()));
        true
    }

    /// Drops a failed connection; every seat then needs re-attaching.
    fn disconnected(&self, conn: &mut Option<ServerConn>) {
        *conn = None;
        for s in lock(&self.seats).values_mut() {
            s.attached = false;
        }
    }

    /// Marks the seats whose leases ran out as lost, and zeroizes the keys of every lost
    /// seat.
    fn expire(&self) {
        let now = Instant::now();
        for s in lock(&self.seats).values_mut() {
            if s.lost.is_some() {
                let mut keys = lock(&s.keys);
                if !keys.is_gone() {
                    keys.clear();
                }
                continue;
            }
            if s.lost.is_none() && now >= s.deadline() {
                let why = s
                    .last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                s.lost = Some(format!(
                    "seat {} was not renewed within its {} ms lease{why}",
                    hex::encode(s.grant.seat_id),
                    s.grant.lease_ms
                ));
                lock(&s.keys).clear();
            }
        }
    }

    /// Connects if needed and re-attaches every seat that is not attached. A connection
    /// failure is returned (the connection is dropped); a server refusing a seat is recorded
    /// on the seat, which stays unattached until it is re-attached or its lease runs out.
    fn reattach(&self, conn: &mut Option<ServerConn>) -> Result<()> {
        self.expire();
        let pending: Vec<([u8; 16], NetRequest)> = lock(&self.seats)
            .values()
            .filter(|s| s.lost.is_none() && !s.attached)
            .map(|s| (s.grant.seat_id, s.acquire_request()))
            .collect();
        if pending.is_empty() && !connection_failed(conn) {
            return Ok(());
        }
        if let Err(e) = self.connect(conn) {
            for (id, _) in &pending {
                if let Some(s) = lock(&self.seats).get_mut(id) {
                    s.last_error = Some(e.to_string());
                }
            }
            return Err(e);
        }
        let Some(c) = conn.as_mut() else {
            return Err(Error::Internal("connected without a connection".into()));
        };
        for (id, req) in pending {
            // The server counts the lease from when it handled the request, so the client
            // counts it from before it sent it, never longer than the server does.
            let sent = Instant::now();
            let result = c.call(&req);
            let broken = c.is_broken();
            let mut seats = lock(&self.seats);
            match result {
                Ok(NetResponse::Granted(grant)) if grant.seat_id == id => {
                    let bound = proto::check_grant(
                        &grant,
                        c.delegations(),
                        &self.publisher,
                        self.vendor_id,
                    );
                    if let Err(e) = bound {
                        // A server that re-attaches the seat with a license of a container it
                        // has no delegation from does not hold it.
                        if let Some(s) = seats.get_mut(&id) {
                            s.last_error = Some(e.to_string());
                        }
                        continue;
                    }
                    if let Some(s) = seats.get_mut(&id) {
                        tracing::debug!(seat = %hex::encode(id), server = %c.server_name(), "seat re-attached");
                        s.grant = grant;
                        s.attached = true;
                        s.renewed_at = sent;
                        s.last_error = None;
                    }
                }
                Ok(other) => {
                    if let Some(s) = seats.get_mut(&id) {
                        s.last_error = Some(format!("unexpected answer to acquire: {other:?}"));
                    }
                }
                Err(e) => {
                    if let Some(s) = seats.get_mut(&id) {
                        s.last_error = Some(e.to_string());
                        // A server that answers a re-attach with a licensing verdict no
                        // longer holds the seat (acquire is idempotent: a seat it held would
                        // have come back). Say so now, not when the lease runs out here.
                        if !broken && is_verdict(&e) {
                            s.lost = Some(format!(
                                "the license server {} no longer holds seat {} and refused it                                  again: {e}",
                                c.server_name(),
                                hex::encode(id)
                            ));
                        }
                    }
                    if broken {
                        drop(seats);
                        self.disconnected(conn);
                        return Err(e);
                    }
                    if is_transient(&e) && self.servers.len() > 1 {
                        // This server cannot serve now; the next round tries another.
                        drop(seats);
                        self.move_on(conn);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Renews every attached seat.
    fn renew(&self, conn: &mut Option<ServerConn>) -> Result<()> {
        let ids: Vec<[u8; 16]> = lock(&self.seats)
            .values()
            .filter(|s| s.lost.is_none() && s.attached)
            .map(|s| s.grant.seat_id)
            .collect();
        let Some(c) = conn.as_mut() else {
            return Ok(());
        };
        if ids.is_empty() {
            return Ok(());
        }
        let sent = Instant::now();
        use std::sync::atomic::Ordering::Relaxed;
        let mut result = if self.plain_renew.load(Relaxed) {
            Err(Error::Unsupported("renew without reasons".into()))
        } else {
            c.call(&NetRequest::RenewWhy {
                seat_ids: ids.clone(),
            })
        };
        // An older server does not know `RenewWhy` (it answers with a decoding error): the
        // lost seats' reasons are then unknown.
        if matches!(
            &result,
            Err(Error::Malformed { .. } | Error::Unsupported(_))
        ) && !c.is_broken()
        {
            self.plain_renew.store(true, Relaxed);
            result = c
                .call(&NetRequest::Renew {
                    seat_ids: ids.clone(),
                })
                .map(|r| match r {
                    NetResponse::Renewed { lost, lease_ms } => NetResponse::RenewedWhy {
                        lost: lost
                            .into_iter()
                            .map(|seat_id| LostSeat {
                                seat_id,
                                reason: LossReason::Unknown,
                            })
                            .collect(),
                        lease_ms,
                    },
                    other => other,
                });
        }
        let name = c.server_name().to_string();
        match result {
            Ok(NetResponse::RenewedWhy { lost, lease_ms }) => {
                let mut seats = lock(&self.seats);
                for id in ids {
                    let Some(s) = seats.get_mut(&id) else {
                        continue; // released meanwhile
                    };
                    if let Some(l) = lost.iter().find(|l| l.seat_id == id) {
                        s.lost = Some(l.reason.describe(&name, &id));
                    } else {
                        s.renewed_at = sent;
                        s.grant.lease_ms = lease_ms;
                    }
                }
                Ok(())
            }
            Ok(other) => Err(Error::malformed(
                "server response",
                format!("unexpected answer to renew: {other:?}"),
            )),
            Err(e) => {
                if c.is_broken() {
                    self.disconnected(conn);
                } else if is_transient(&e) {
                    self.move_on(conn);
                }
                Err(e)
            }
        }
    }

    /// One round of the keeper: re-attach what needs it, renew when due. Returns whether
    /// some seat is still waiting to be re-attached.
    fn keep(&self, renew_due: bool) -> bool {
        let mut conn = lock(&self.conn);
        if self.has_seats() {
            if let Err(e) = self.reattach(&mut conn) {
                tracing::debug!(error = %e, "license server reconnection failed");
            } else if renew_due && let Err(e) = self.renew(&mut conn) {
                tracing::debug!(error = %e, "lease renewal failed");
                // A broken connection: try once more right away.
                if connection_failed(&conn)
                    && self.reattach(&mut conn).is_ok()
                    && let Err(e) = self.renew(&mut conn)
                {
                    tracing::debug!(error = %e, "lease renewal failed again");
                }
            }
        }
        self.expire();
        lock(&self.seats)
            .values()
            .any(|s| s.lost.is_none() && !s.attached)
    }

    fn has_seats(&self) -> bool {
        lock(&self.seats).values().any(|s| s.lost.is_none())
    }

    /// The renewal interval: the shortest `renew_ms` of the held seats.
    fn interval(&self) -> Duration {
        lock(&self.seats)
            .values()
            .filter(|s| s.lost.is_none())
            .map(|s| Duration::from_millis(s.grant.renew_ms).max(MIN_RENEW))
            .min()
            .unwrap_or(IDLE)
    }
}

/// The keeper thread: renews every interval, retries re-attachment sooner, stops when the
/// sender is dropped.
fn run_keeper(inner: Arc<Inner>, wake: mpsc::Receiver<()>) {
    let mut last_renew = Instant::now();
    let mut waiting = false;
    loop {
        let interval = inner.interval();
        let next_renew = last_renew + interval;
        let next = if waiting {
            next_renew.min(Instant::now() + (interval / 2).clamp(MIN_RENEW, MAX_RETRY))
        } else {
            next_renew
        };
        let now = Instant::now();
        if next > now {
            match wake.recv_timeout(next - now) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let renew_due = Instant::now() >= next_renew;
        if renew_due {
            last_renew = Instant::now();
        }
        waiting = inner.keep(renew_due);
    }
}

struct Keeper {
    wake: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// A session's seats on license servers, and their lease keeper. `Sync`: calls from several
/// threads are serialised on the one connection.
pub struct NetSeats {
    inner: Arc<Inner>,
    keeper: Mutex<Option<Keeper>>,
    /// The process that made it: a forked child shares its connection's socket.
    owner: crate::util::process::Owner,
}

impl std::fmt::Debug for NetSeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetSeats")
            .field("servers", &self.inner.servers)
            .field("server", &self.server_name())
            .finish_non_exhaustive()
    }
}

impl NetSeats {
    /// Seats on `servers` (`host[:port]`, tried in order), as the host with `host_secret`
    /// and `client`, trusting servers with a delegation chained to `publisher` for
    /// `vendor_id`; `timeout` bounds each connect, read and write. Nothing connects yet.
    pub fn new(
        servers: Vec<String>,
        host_secret: &[u8; 32],
        client: ClientHello,
        publisher: VerifyingKey,
        vendor_id: u32,
        timeout: Duration,
    ) -> NetSeats {
        NetSeats {
            inner: Arc::new(Inner {
                servers,
                host_secret: Zeroizing::new(*host_secret),
                client,
                publisher,
                vendor_id,
                timeout,
                conn: Mutex::new(None),
                current: Mutex::new(None),
                server_name: Mutex::new(None),
                seats: Mutex::new(HashMap::new()),
                plain_renew: std::sync::atomic::AtomicBool::new(false),
            }),
            keeper: Mutex::new(None),
            owner: crate::util::process::Owner::current(),
        }
    }

    /// Starts the keeper thread if it is not running, and wakes it (a new seat may renew
    /// sooner).
    fn start_keeper(&self) -> Result<()> {
        let mut keeper = lock(&self.keeper);
        if let Some(k) = keeper.as_ref() {
            let _ = k.wake.send(());
            return Ok(());
        }
        let (wake, rx) = mpsc::channel();
        let inner = self.inner.clone();
        let thread = std::thread::Builder::new()
            .name("tessera-lease-keeper".into())
            .spawn(move || run_keeper(inner, rx))
            .map_err(|e| Error::io("lease keeper thread", e))?;
        *keeper = Some(Keeper { wake, thread });
        Ok(())
    }

    /// Acquires a seat under a new random seat id, connecting if needed (the servers in
    /// order). A connection failure during the acquire is retried once on a new connection
    /// (the same seat id, so the seat is never counted twice).
    pub fn acquire(
        &self,
        vendor_id: u32,
        product_code: u32,
        features: u32,
        exclusive: bool,
    ) -> Result<([u8; 16], SeatGrant)> {
        self.owner.check("license-server connection")?;
        if self.inner.servers.is_empty() {
            return Err(Error::NoLicense("no license server is configured".into()));
        }
        self.start_keeper()?;
        let seat_id: [u8; 16] = crate::util::random();
        let req = NetRequest::Acquire {
            seat_id,
            vendor_id,
            product_code,
            features,
            exclusive,
        };
        let grant = {
            let mut conn = lock(&self.inner.conn);
            // Counted from before the request (as renewals are): never longer than the
            // server's lease, which starts when the server handles it.
            let mut sent = Instant::now();
            let response = self.call_retrying_sent(&mut conn, &req, None, &mut sent)?;
            let grant = match response {
                NetResponse::Granted(g) if g.seat_id == seat_id => g,
                other => {
                    return Err(Error::malformed(
                        "server response",
                        format!("unexpected answer to acquire: {other:?}"),
                    ));
                }
            };
            // The license must be bound to a container whose delegation this connection
            // verified; otherwise the seat is given back and refused.
            if let Err(e) = self.inner.check_grant(&conn, &grant) {
                if let Some(c) = conn.as_mut() {
                    let _ = c.call(&NetRequest::Release { seat_id });
                }
                return Err(e);
            }
            lock(&self.inner.seats).insert(
                seat_id,
                SeatState {
                    vendor_id,
                    product_code,
                    features,
                    exclusive,
                    grant: grant.clone(),
                    lost: None,
                    attached: true,
                    renewed_at: sent,
                    last_error: None,
                    keys: Arc::new(Mutex::new(SeatKeys::new(grant.in_use))),
                },
            );
            grant
        };
        self.start_keeper()?;
        Ok((seat_id, grant))
    }

    /// Connects (and re-attaches held seats) if needed, sends `req`; on a connection failure
    /// does it all once more.
    /// With `seat`, a seat the new connection could not re-attach is not asked about.
    fn call_retrying(
        &self,
        conn: &mut Option<ServerConn>,
        req: &NetRequest,
        seat: Option<&[u8; 16]>,
    ) -> Result<NetResponse> {
        let mut sent = Instant::now();
        self.call_retrying_sent(conn, req, seat, &mut sent)
    }

    /// [`NetSeats::call_retrying`], telling when the request that was answered was sent (a
    /// lease counts from then, not from a first try on a server that could not serve).
    fn call_retrying_sent(
        &self,
        conn: &mut Option<ServerConn>,
        req: &NetRequest,
        seat: Option<&[u8; 16]>,
        sent: &mut Instant,
    ) -> Result<NetResponse> {
        let mut attempt = 0;
        let mut moved = 0;
        loop {
            attempt += 1;
            let result = self.inner.reattach(conn).and_then(|()| {
                if let Some(id) = seat {
                    self.check_attached(id)?;
                }
                match conn.as_mut() {
                    Some(c) => {
                        *sent = Instant::now();
                        c.call(req)
                    }
                    None => Err(Error::Internal("connected without a connection".into())),
                }
            });
            match result {
                Ok(r) => return Ok(r),
                Err(e) if connection_failed(conn) && attempt < 2 => {
                    tracing::debug!(error = %e, "license server call failed, reconnecting");
                    self.inner.disconnected(conn);
                }
                // A server that cannot serve now (a pool member cut off from its etcd): the
                // next server of the list, each at most once.
                Err(e)
                    if is_transient(&e)
                        && moved + 1 < self.inner.servers.len()
                        && self.inner.move_on(conn) =>
                {
                    tracing::debug!(error = %e, "license server cannot serve now, trying the next");
                    moved += 1;
                    attempt = 0;
                }
                Err(e) => {
                    if connection_failed(conn) {
                        self.inner.disconnected(conn);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// A transient `Timeout` (the seat is not lost) while the seat waits to be re-attached
    /// within its grace period: an app that re-acquires only on `LEASE_LOST` keeps it.
    fn check_attached(&self, seat_id: &[u8; 16]) -> Result<()> {
        match lock(&self.inner.seats).get(seat_id) {
            Some(s) if !s.attached => Err(Error::Timeout(format!(
                "seat {} is not re-attached to a license server yet; still within its grace period{}",
                hex::encode(seat_id),
                s.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }

    /// `InvalidHandle` for an unknown seat, `LeaseLost` for a lost one (a seat past its
    /// lease is marked lost first).
    fn check_seat(&self, seat_id: &[u8; 16]) -> Result<()> {
        self.inner.expire();
        match lock(&self.inner.seats).get(seat_id) {
            None => Err(Error::InvalidHandle(format!(
                "no network seat {}",
                hex::encode(seat_id)
            ))),
            Some(SeatState {
                lost: Some(why), ..
            }) => Err(Error::LeaseLost(why.clone())),
            Some(_) => Ok(()),
        }
    }

    /// Sends a request about a held seat. `LeaseLost` if the seat is lost. On a connection
    /// failure reconnects, re-attaches the seats and retries once; then the error.
    pub fn call_for_seat(&self, seat_id: [u8; 16], req: NetRequest) -> Result<NetResponse> {
        self.owner.check("license-server connection")?;
        self.check_seat(&seat_id)?;
        let mut conn = lock(&self.inner.conn);
        // Re-check under the connection lock: the keeper may have lost it meanwhile.
        self.check_seat(&seat_id)?;
        let result = self.call_retrying(&mut conn, &req, Some(&seat_id));
        // The server no longer knows the seat.
        if let Err(Error::LeaseLost(why)) = &result
            && let Some(s) = lock(&self.inner.seats).get_mut(&seat_id)
            && s.attached
        {
            s.lost.get_or_insert_with(|| why.clone());
        }
        drop(conn);
        // A seat the reconnection could not re-attach (and whose lease has now run out).
        self.check_seat(&seat_id)?;
        result
    }

    /// A held seat's keys, for an operation that needs no server: `InvalidHandle` for an
    /// unknown seat, `LeaseLost` for a lost one (a seat past its lease is marked lost, and
    /// its keys zeroized, first). Takes no connection lock and does no I/O, so it answers at
    /// once while the keeper reconnects; a seat waiting to be re-attached within its lease
    /// is live.
    pub fn keys(&self, seat_id: &[u8; 16]) -> Result<Arc<Mutex<SeatKeys>>> {
        self.owner.check("license-server connection")?;
        self.check_seat(seat_id)?;
        lock(&self.inner.seats)
            .get(seat_id)
            .map(|s| s.keys.clone())
            .ok_or_else(|| {
                Error::InvalidHandle(format!("no network seat {}", hex::encode(seat_id)))
            })
    }

    /// Sends a request about a held seat only when the connection is up, attached and free
    /// right now: `None` (nothing sent) while it is down, busy (the keeper renewing or
    /// reconnecting) or the seat waits to be re-attached, and when the call fails on the
    /// transport (the keeper reconnects). A server's verdict is `Some(Err)`; `LeaseLost`
    /// marks the seat lost.
    pub fn try_call_for_seat(
        &self,
        seat_id: [u8; 16],
        req: &NetRequest,
    ) -> Option<Result<NetResponse>> {
        if let Err(e) = self
            .owner
            .check("license-server connection")
            .and_then(|()| self.check_seat(&seat_id))
        {
            return Some(Err(e));
        }
        let mut conn = match self.inner.conn.try_lock() {
            Ok(c) => c,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        if connection_failed(&conn) || self.check_attached(&seat_id).is_err() {
            return None;
        }
        let c = conn.as_mut()?;
        let result = c.call(req);
        if c.is_broken() {
            self.inner.disconnected(&mut conn);
            return None;
        }
        drop(conn);
        if let Err(Error::LeaseLost(why)) = &result
            && let Some(s) = lock(&self.inner.seats).get_mut(&seat_id)
        {
            s.lost.get_or_insert_with(|| why.clone());
        }
        if let Err(e) = self.check_seat(&seat_id) {
            return Some(Err(e));
        }
        Some(result)
    }

    /// Releases a seat. It leaves the table whatever happens; when the server cannot be
    /// reached the error is returned and the server frees the seat when its lease runs out.
    /// Releasing a lost seat does nothing.
    pub fn release(&self, seat_id: [u8; 16]) -> Result<()> {
        self.owner.check("license-server connection")?;
        let Some(seat) = lock(&self.inner.seats).remove(&seat_id) else {
            return Err(Error::InvalidHandle(format!(
                "no network seat {}",
                hex::encode(seat_id)
            )));
        };
        lock(&seat.keys).clear();
        if seat.lost.is_some() {
            return Ok(());
        }
        let mut conn = lock(&self.inner.conn);
        match self.call_retrying(&mut conn, &NetRequest::Release { seat_id }, None) {
            Ok(NetResponse::Released) => Ok(()),
            // The server had already let it go.
            Err(Error::LeaseLost(_)) => Ok(()),
            Ok(other) => Err(Error::malformed(
                "server response",
                format!("unexpected answer to release: {other:?}"),
            )),
            Err(e) => Err(e),
        }
    }

    /// Sends a request that concerns no held seat (a listing) to the server connected to,
    /// connecting first if needed.
    pub fn call(&self, req: &NetRequest) -> Result<NetResponse> {
        self.owner.check("license-server connection")?;
        let mut conn = lock(&self.inner.conn);
        self.call_retrying(&mut conn, req, None)
    }

    /// The name of the server connected to (or last connected to).
    pub fn server_name(&self) -> Option<String> {
        lock(&self.inner.server_name).clone()
    }

    /// The address of the server connected to (or last connected to), as configured
    /// (`host[:port]`).
    pub fn server_address(&self) -> Option<String> {
        lock(&self.inner.current).and_then(|i| self.inner.servers.get(i).cloned())
    }

    /// A copy of a held seat's state.
    pub fn seat(&self, seat_id: &[u8; 16]) -> Option<SeatState> {
        lock(&self.inner.seats).get(seat_id).cloned()
    }
}

impl Drop for NetSeats {
    /// Stops and joins the keeper, then releases the seats still held over the current
    /// connection, if there is one (otherwise their leases run out on the server).
    fn drop(&mut self) {
        if !self.owner.is_current() {
            // A forked child's copy: the keeper thread is the parent's (joining it here
            // would wait for a thread this process does not have), the connection's socket
            // is shared with the parent (a release sent here would release the parent's
            // seats), and any lock may have been held by a parent thread at the fork. Touch
            // none of them; `get_mut` takes no lock. The child's copies of the descriptors
            // are closed when the last `Arc` of the connection goes, which, with the
            // parent's keeper counted in it, is never in the child: they close at exit or
            // exec (they are close-on-exec).
            let keeper = match self.keeper.get_mut() {
                Ok(k) => k.take(),
                Err(p) => p.into_inner().take(),
            };
            // Forgotten whole: even dropping the wake sender would take the channel's
            // internal lock.
            std::mem::forget(keeper);
            return;
        }
        if let Some(k) = lock(&self.keeper).take() {
            drop(k.wake);
            let _ = k.thread.join();
        }
        let mut conn = lock(&self.inner.conn);
        let held: Vec<[u8; 16]> = lock(&self.inner.seats)
            .drain()
            .filter(|(_, s)| s.lost.is_none() && s.attached)
            .map(|(id, _)| id)
            .collect();
        if let Some(c) = conn.as_mut() {
            for seat_id in held {
                if c.is_broken() {
                    break;
                }
                let _ = c.call(&NetRequest::Release { seat_id });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::conn::tests::{LEASE_MS, Mock, VENDOR, client_hello, public, server_hello};
    use ed25519_dalek::SigningKey;

    fn seats(servers: &[&Mock], publisher: &SigningKey) -> NetSeats {
        NetSeats::new(
            servers.iter().map(|m| m.address()).collect(),
            &[5; 32],
            client_hello(),
            publisher.verifying_key(),
            VENDOR,
            Duration::from_secs(1),
        )
    }

    /// Polls `cond` until it holds or `within` passes.
    fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    fn info(id: [u8; 16]) -> NetRequest {
        NetRequest::SeatInfo { seat_id: id }
    }

    #[test]
    fn acquire_renew_release() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mock = Mock::start("alpha", &publisher);
        let net = seats(&[&mock], &publisher);
        assert_eq!(net.server_name(), None);
        let (id, grant) = net.acquire(VENDOR, 7, 1, false).unwrap();
        assert_eq!(grant.seat_id, id);
        assert_eq!(net.server_name().as_deref(), Some("alpha"));
        assert!(matches!(
            net.call_for_seat(id, info(id)).unwrap(),
            NetResponse::Info { in_use: 1, .. }
        ));
        assert!(eventually(Duration::from_secs(2), || mock
            .state
            .lock()
            .unwrap()
            .renews
            >= 1));
        net.release(id).unwrap();
        assert!(mock.state.lock().unwrap().seats.is_empty());
        assert_eq!(mock.state.lock().unwrap().releases, 1);
        assert!(matches!(net.release(id), Err(Error::InvalidHandle(_))));
        assert!(matches!(
            net.call_for_seat(id, info(id)),
            Err(Error::InvalidHandle(_))
        ));
    }

    #[test]
    fn a_refusal_is_the_servers_verdict_and_holds_no_seat() {
        fn shared<T: Send + Sync>() {}
        shared::<NetSeats>();
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mock = Mock::start("alpha", &publisher);
        let net = seats(&[&mock], &publisher);
        // The mock has no product 0.
        assert!(matches!(
            net.acquire(VENDOR, 0, 0, false),
            Err(Error::NoLicense(_))
        ));
        assert!(lock(&net.inner.seats).is_empty());
        assert!(net.acquire(VENDOR, 7, 0, false).is_ok());
        assert_eq!(mock.state.lock().unwrap().connections, 1);
    }

    #[test]
    fn untrusted_servers_are_tampered() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let secret: [u8; 32] = crate::util::random();
        let other_key = Mock::start_with(secret, server_hello("k", &publisher, [9; 32]));
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let other_publisher =
            Mock::start_with(secret, server_hello("p", &stranger, public(&secret)));
        let net = seats(&[&other_key, &other_publisher], &publisher);
        assert!(matches!(
            net.acquire(VENDOR, 7, 0, false),
            Err(Error::Tampered(_))
        ));
        assert!(other_key.state.lock().unwrap().acquires.is_empty());
        assert!(other_publisher.state.lock().unwrap().acquires.is_empty());
    }

    #[test]
    fn the_keeper_renews_every_renew_interval() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mock = Mock::start("alpha", &publisher);
        let net = seats(&[&mock], &publisher);
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        // Several leases long: without renewals the mock would have dropped the seat.
        std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
        let renews = mock.state.lock().unwrap().renews;
        assert!(renews >= 5, "{renews} renewals in {} ms", 3 * LEASE_MS);
        assert!(mock.state.lock().unwrap().seats.contains_key(&id));
        assert!(net.seat(&id).unwrap().lost.is_none());
        assert!(net.call_for_seat(id, info(id)).is_ok());
        drop(net);
        // Dropping stops the keeper and releases the seat.
        let after = mock.state.lock().unwrap().renews;
        std::thread::sleep(Duration::from_millis(300));
        let st = mock.state.lock().unwrap();
        assert_eq!(st.renews, after, "the keeper stopped");
        assert!(st.seats.is_empty());
    }

    #[test]
    fn a_dropped_connection_is_reconnected_and_the_seat_reattached() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mock = Mock::start("alpha", &publisher);
        let net = seats(&[&mock], &publisher);
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        mock.kill_connections();
        assert!(eventually(Duration::from_secs(2), || {
            let st = mock.state.lock().unwrap();
            st.connections >= 2 && st.acquires.len() >= 2
        }));
        {
            let st = mock.state.lock().unwrap();
            assert!(st.acquires.iter().all(|a| *a == id), "the same seat id");
            assert_eq!(st.seen.len(), 1, "counted once");
        }
        // Renewals go on over the new connection.
        let renews = mock.state.lock().unwrap().renews;
        assert!(eventually(Duration::from_secs(2), || mock
            .state
            .lock()
            .unwrap()
            .renews
            > renews));
        assert!(net.seat(&id).unwrap().lost.is_none());
        // A call right after a disconnect reconnects by itself.
        mock.kill_connections();
        assert!(matches!(
            net.call_for_seat(id, info(id)).unwrap(),
            NetResponse::Info { in_use: 1, .. }
        ));
        assert_eq!(mock.state.lock().unwrap().seen.len(), 1);
    }

    #[test]
    fn a_server_down_past_the_grace_period_loses_the_seat() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mut mock = Mock::start("alpha", &publisher);
        let net = seats(&[&mock], &publisher);
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        mock.stop();
        // Within the grace period the seat is still held (the call fails on the transport).
        assert!(matches!(
            net.call_for_seat(id, info(id)),
            Err(Error::Io { .. } | Error::Timeout(_))
        ));
        std::thread::sleep(Duration::from_millis(LEASE_MS + 100));
        match net.call_for_seat(id, info(id)) {
            Err(Error::LeaseLost(why)) => assert!(why.contains(&hex::encode(id)), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(net.seat(&id).unwrap().lost.is_some());
        // Releasing a lost seat is not an error; it is gone afterwards.
        net.release(id).unwrap();
        assert!(net.seat(&id).is_none());
    }

    #[test]
    fn local_checks_never_wait_for_the_connection_and_a_lost_seats_keys_are_zeroized() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mut mock = Mock::start("alpha", &publisher);
        let net = seats(&[&mock], &publisher);
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        let keys = net.keys(&id).unwrap();
        lock(&keys).keep_message_key([1; 40], &[2; 32]);
        {
            // The keeper holds the connection while it reconnects: a local check answers
            // anyway, and a try call sends nothing.
            let _conn = lock(&net.inner.conn);
            assert!(net.keys(&id).is_ok());
            assert!(net.try_call_for_seat(id, &info(id)).is_none());
        }
        assert!(matches!(
            net.try_call_for_seat(id, &info(id)),
            Some(Ok(NetResponse::Info { in_use: 1, .. }))
        ));
        assert!(matches!(net.keys(&[9; 16]), Err(Error::InvalidHandle(_))));
        mock.stop();
        // Within the lease the seat is live, the server or not.
        assert!(net.keys(&id).is_ok());
        assert!(net.try_call_for_seat(id, &info(id)).is_none());
        assert!(eventually(
            Duration::from_millis(3 * LEASE_MS),
            || matches!(net.keys(&id), Err(Error::LeaseLost(_)))
        ));
        assert!(lock(&keys).is_gone());
        assert_eq!(lock(&keys).kept(), (0, 0));
        assert!(matches!(
            net.try_call_for_seat(id, &info(id)),
            Some(Err(Error::LeaseLost(_)))
        ));
    }

    #[test]
    fn a_released_seats_keys_are_zeroized() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mock = Mock::start("alpha", &publisher);
        let net = seats(&[&mock], &publisher);
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        let keys = net.keys(&id).unwrap();
        lock(&keys).keep_seat_key([3; 12], &[4; 32]);
        assert_eq!(lock(&keys).kept(), (1, 0));
        net.release(id).unwrap();
        assert!(lock(&keys).is_gone());
        assert_eq!(lock(&keys).kept(), (0, 0));
        assert!(matches!(net.keys(&id), Err(Error::InvalidHandle(_))));
    }

    #[test]
    fn a_seat_the_server_forgot_is_lost() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mock = Mock::start("alpha", &publisher);
        let net = seats(&[&mock], &publisher);
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        mock.state.lock().unwrap().seats.clear();
        assert!(eventually(Duration::from_secs(2), || net
            .seat(&id)
            .unwrap()
            .lost
            .is_some()));
        assert!(matches!(
            net.call_for_seat(id, info(id)),
            Err(Error::LeaseLost(_))
        ));
    }

    #[test]
    fn a_revoked_seat_is_lost_with_the_reason_and_an_older_server_still_renews() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mock = Mock::start("alpha", &publisher);
        let net = seats(&[&mock], &publisher);
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        {
            let mut st = mock.state.lock().unwrap();
            st.seats.clear();
            st.revoked.insert(id);
        }
        assert!(eventually(Duration::from_secs(2), || net
            .seat(&id)
            .unwrap()
            .lost
            .is_some()));
        match net.call_for_seat(id, info(id)) {
            Err(Error::LeaseLost(why)) => {
                assert!(why.contains("revoked by an administrator"), "{why}");
                assert!(
                    why.contains(&hex::encode(id)) && why.contains("alpha"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(mock.state.lock().unwrap().plain_renews, 0);

        // A server from before `RenewWhy`: renewals go on with `Renew`; a lost seat's reason
        // is unknown.
        let old = Mock::start("beta", &publisher);
        old.state.lock().unwrap().old = true;
        let net = seats(&[&old], &publisher);
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        assert!(eventually(Duration::from_secs(2), || old
            .state
            .lock()
            .unwrap()
            .plain_renews
            >= 2));
        assert!(net.seat(&id).unwrap().lost.is_none(), "renewed all along");
        old.state.lock().unwrap().seats.clear();
        assert!(eventually(Duration::from_secs(2), || net
            .seat(&id)
            .unwrap()
            .lost
            .is_some()));
        let why = net.seat(&id).unwrap().lost.unwrap();
        assert!(why.contains("lease ran out or it was released"), "{why}");
    }

    #[test]
    fn the_next_server_in_the_list_takes_over() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mut first = Mock::start("alpha", &publisher);
        let second = Mock::start("beta", &publisher);
        let net = seats(&[&first, &second], &publisher);
        let (id, _) = net.acquire(VENDOR, 7, 0, false).unwrap();
        assert_eq!(net.server_name().as_deref(), Some("alpha"));
        assert!(second.state.lock().unwrap().acquires.is_empty());
        first.stop();
        assert!(eventually(Duration::from_secs(2), || second
            .state
            .lock()
            .unwrap()
            .acquires
            .contains(&id)));
        assert_eq!(net.server_name().as_deref(), Some("beta"));
        assert_eq!(second.state.lock().unwrap().seen.len(), 1);
        assert!(matches!(
            net.call_for_seat(id, info(id)).unwrap(),
            NetResponse::Info { .. }
        ));
        // Past the first lease the seat lives on at the second server.
        std::thread::sleep(Duration::from_millis(LEASE_MS + 100));
        assert!(net.seat(&id).unwrap().lost.is_none());
        assert!(net.call_for_seat(id, info(id)).is_ok());
    }
}
