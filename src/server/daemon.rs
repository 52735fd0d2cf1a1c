//! The daemon: tokio listeners set up with socket2 (dual-stack, reuse-address, keepalive,
//! no-delay), the license protocol inside Noise on TCP, discovery on UDP, the seat table with
//! its durable store, lease expiry, the usage log, limits on connections, frames and time,
//! the admin HTTP API (`admin/`), the seat history, a configuration reload and a graceful
//! shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::config::{AdminToken, ServerConfig};
use super::history::{self, Recorder, Usage};
use super::hosted::Hosted;
use super::seats::{AcquireSpec, Change, SeatId, SeatTable};
use super::stats::{RequestKind, Stats};
use super::store::{GroupCommitter, SqliteStore};
use super::usage::{self, CheckpointSigner, UsageLog, UsageOptions};
use crate::container::protocol::{Request, Response};
use crate::net::conn::{NetChannel, ServerHandshake};
use crate::net::proto::{
    self, ClientHello, DiscoveryAnswer, MAX_FRAME, NetRequest, NetResponse, SeatGrant, ServerHello,
};
use crate::util::now_ms;
use crate::{Error, Result};

/// Who holds a seat, as its client's hello said (for the admin API; not persisted: after a
/// restart it fills in again as clients re-attach).
#[derive(Clone, Debug)]
pub struct SeatMeta {
    /// Who: the connection's client, as its hello said.
    pub holder: Arc<SeatHolder>,
    /// When the seat was first granted (Unix milliseconds).
    pub since_ms: u64,
}

/// A client as the admin page shows it: made once per connection (printable strings).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SeatHolder {
    /// The client's host name.
    pub hostname: String,
    /// Its login / terminal-server session id (`uid:<uid>/…`).
    pub session: String,
    /// Physical or virtual, and which hypervisor.
    pub machine: crate::host::MachineKind,
    /// The client process.
    pub pid: u32,
}

/// One connection's client: its hello, and what the admin page and the usage log keep of
/// it, made once at the handshake rather than for every seat.
struct Peer {
    hello: ClientHello,
    holder: Arc<SeatHolder>,
    client_info: Arc<crate::license::usage::ClientInfo>,
}

impl Peer {
    fn new(hello: ClientHello) -> Peer {
        let h = &hello.host;
        let holder = Arc::new(SeatHolder {
            hostname: printable(&h.hostname),
            session: printable(&h.session),
            machine: h.machine.clone(),
            pid: h.pid,
        });
        let client_info = Arc::new(usage::client_info(h));
        Peer {
            hello,
            holder,
            client_info,
        }
    }
}

/// What the server hosts and announces; replaced as a whole by a reload.
pub struct Hosting {
    /// The hosted containers.
    pub hosted: Hosted,
    /// The hello every new connection gets (with the delegations clients check).
    pub hello: ServerHello,
}

/// The admin settings a reload may change.
#[derive(Clone, Debug, Default)]
pub struct AdminAuth {
    /// The API token, if any.
    pub token: Option<AdminToken>,
    /// Extra `Host` values answered.
    pub hosts: Vec<String>,
}

/// Reads the configuration anew for a reload (the file, with the command line's overrides).
pub type ConfigSource = Box<dyn Fn() -> Result<ServerConfig> + Send + Sync>;

/// What a reload did.
#[derive(Clone, Debug, Default)]
pub struct ReloadReport {
    /// Settings now in force with their new values.
    pub applied: Vec<String>,
    /// Settings that changed in the file but need a restart.
    pub restart_needed: Vec<String>,
    /// Containers hosted after the reload.
    pub containers: usize,
    /// Licenses hosted after the reload.
    pub licenses: usize,
    /// Containers that could not be hosted.
    pub problems: Vec<String>,
}

/// Where the server listens, once it does.
#[derive(Clone, Debug, Default)]
pub struct Bound {
    /// The license protocol's addresses.
    pub listen: Vec<SocketAddr>,
    /// The admin HTTP API's address, if it is on.
    pub admin: Option<SocketAddr>,
}

/// A running server's shared state.
pub struct Server {
    config: ServerConfig,
    hosting: RwLock<Arc<Hosting>>,
    lease_ms: AtomicU64,
    /// `delegation_days` as last loaded (a reload may change it).
    delegation_days: AtomicU64,
    renew_ms: AtomicU64,
    admin_auth: RwLock<AdminAuth>,
    table: Mutex<SeatTable>,
    seat_meta: Mutex<HashMap<SeatId, SeatMeta>>,
    committer: GroupCommitter<usage::UsageEvent>,
    history: Recorder,
    usage: UsageLog,
    static_secret: zeroize::Zeroizing<[u8; 32]>,
    public_key: [u8; 32],
    host: crate::host::HostIdentity,
    config_source: Mutex<Option<ConfigSource>>,
    bound: Mutex<Bound>,
    started: Instant,
    started_unix: u64,
    /// Counters.
    pub stats: Stats,
}

/// What an acquire asks for.
struct Want {
    seat_id: [u8; 16],
    vendor_id: u32,
    product_code: u32,
    features: u32,
    exclusive: bool,
}

/// Loads (or makes) the server's static key in `state_dir/server.key`.
fn server_key(state_dir: &std::path::Path) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    crate::client::hostkey::load_or_create_at(&state_dir.join("server.key"))
}

impl Server {
    /// Opens the state, loads the seat table and the hosted containers.
    pub fn open(config: ServerConfig) -> Result<Arc<Server>> {
        config.check()?;
        crate::util::ensure_dir(&config.state_dir)?;
        let static_secret = server_key(&config.state_dir)?;
        let public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*static_secret))
                .to_bytes();
        let host = crate::host::HostIdentity::detect();
        let expiry = crate::util::now() + config.delegation_days * 86_400;
        let hosted = Hosted::load(
            &config.home,
            &host,
            &static_secret,
            public,
            expiry,
            config.dongles,
        );
        for p in &hosted.problems {
            warn!(problem = %p, "container not hosted");
        }
        for c in &hosted.containers {
            info!(serial = %c.serial, vendor = c.vendor_id, licenses = c.licenses.len(), "hosting container");
        }
        let durability = if config.fsync {
            super::store::Durability::PowerLoss
        } else {
            super::store::Durability::ProcessCrash
        };
        let db = config.state_dir.join("seats.db");
        let mut store = SqliteStore::open_with(&db, durability)?;
        let history = Recorder::open(&db)?;
        let rows = super::store::SeatStore::load(&mut store)?;
        let mut table = SeatTable::new();
        let n = rows.len();
        table.load(rows, now_ms());
        info!(seats = table.len(), loaded = n, "seat table loaded");
        let (usage, _refused) = UsageLog::open(
            UsageOptions {
                dir: config.state_dir.join("usage"),
                server_key: public,
                server_name: config.name.clone(),
                fsync: config.fsync,
                checkpoint_every: Duration::from_secs(config.usage_checkpoint_s),
            },
            &hosted.vendors(),
        )?;
        // Leases that ran out while the server was down.
        if let Err(e) = usage.write(usage::expired(&hosted, &mut table)) {
            warn!(error = %e, "expiries while the server was down not logged");
        }
        let hello = ServerHello {
            version: proto::PROTOCOL_VERSION,
            name: config.name.clone(),
            delegations: hosted.bundles(),
        };
        // Who held the live seats when the server last stopped gracefully.
        let mut seat_meta = HashMap::new();
        match history.take_holders() {
            Ok(rows) => {
                for (id, holder, since_ms) in rows {
                    if table.seat(&id).is_none() {
                        continue;
                    }
                    if let Ok(holder) = postcard::from_bytes::<SeatHolder>(&holder) {
                        seat_meta.insert(
                            id,
                            SeatMeta {
                                holder: Arc::new(holder),
                                since_ms,
                            },
                        );
                    }
                }
            }
            Err(e) => warn!(error = %e, "the seat holders saved at the last stop not read"),
        }
        let server = Arc::new(Server {
            committer: GroupCommitter::start_with(
                Box::new(store),
                Some(Box::new(usage.journal()?)),
                config.commit_window(),
            ),
            usage,
            table: Mutex::new(table),
            seat_meta: Mutex::new(seat_meta),
            hosting: RwLock::new(Arc::new(Hosting { hosted, hello })),
            lease_ms: AtomicU64::new(config.lease_ms),
            delegation_days: AtomicU64::new(config.delegation_days),
            renew_ms: AtomicU64::new(config.renew_ms),
            admin_auth: RwLock::new(AdminAuth {
                token: config.admin_token.clone(),
                hosts: config.admin_hosts.clone(),
            }),
            history,
            static_secret,
            public_key: public,
            host,
            config_source: Mutex::new(None),
            bound: Mutex::new(Bound::default()),
            started: Instant::now(),
            started_unix: crate::util::now(),
            config,
            stats: Stats::default(),
        });
        server
            .usage
            .set_signer(Arc::new(UsageSigner(Arc::downgrade(&server))));
        Ok(server)
    }

    /// Where a reload reads the configuration (default: the configuration the server
    /// started with, so that a reload only rescans the containers).
    pub fn set_config_source(&self, source: ConfigSource) {
        if let Ok(mut s) = self.config_source.lock() {
            *s = Some(source);
        }
    }

    /// The seat table committer's counters.
    pub fn commit_stats(&self) -> &crate::server::store::CommitStats {
        self.committer.stats()
    }

    /// The server's Noise static public key (what the delegations name).
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// What the server hosts and announces now.
    pub fn hosting(&self) -> Arc<Hosting> {
        match self.hosting.read() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The lease length now in force, in milliseconds.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms.load(Ordering::Relaxed)
    }

    /// The renewal interval now in force, in milliseconds.
    pub fn renew_ms(&self) -> u64 {
        self.renew_ms.load(Ordering::Relaxed)
    }

    /// The admin token and hosts now in force.
    pub fn admin_auth(&self) -> AdminAuth {
        match self.admin_auth.read() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Where the server listens.
    pub fn bound(&self) -> Bound {
        self.bound.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the server started (Unix seconds).
    pub fn started_unix(&self) -> u64 {
        self.started_unix
    }

    /// Runs `f` on the seat table, under its lock (keep it short: grants wait for it).
    pub fn with_table<R>(&self, f: impl FnOnce(&SeatTable) -> R) -> Result<R> {
        Ok(f(&*self.table()?))
    }

    /// Who holds which seat, as far as the server has been told since it started.
    pub fn seat_meta(&self) -> HashMap<SeatId, SeatMeta> {
        self.seat_meta.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Takes a live seat away from its client, durably. `Ok(false)` when there is no such
    /// live seat. The client's next renewal or call for the seat gets
    /// `TESSERA_E_LEASE_LOST`.
    pub async fn revoke(&self, seat_id: &SeatId) -> Result<bool> {
        // Submitted under the table's lock, with its usage-log record: the log keeps the
        // table's order.
        let waiter = {
            let mut t = self.table()?;
            let Some(row) = t.seat(seat_id).cloned() else {
                return Ok(false);
            };
            let Some(change) = t.revoke(seat_id, now_ms()) else {
                return Ok(false);
            };
            let events = usage::revoked(&self.hosting().hosted, &row)
                .into_iter()
                .collect();
            self.committer.submit_with(vec![change], events)
        };
        waiter.wait_async().await?;
        if let Ok(mut m) = self.seat_meta.lock() {
            m.remove(seat_id);
        }
        self.stats.revocations.fetch_add(1, Ordering::Relaxed);
        info!(seat = %hex::encode(seat_id), "seat revoked by an admin");
        Ok(true)
    }

    /// A publisher's usage log for export, checkpointed up to now (see
    /// [`UsageLog::export`]).
    pub fn export_usage(&self, vendor: Option<u32>) -> Result<super::usage::Export> {
        self.usage.export(vendor)
    }

    /// Seats in use and quantity per product `(vendor_id, product_code)` now.
    pub fn usage(&self) -> Usage {
        let hosting = self.hosting();
        let now = now_ms();
        let mut usage = Usage::new();
        let Ok(table) = self.table() else {
            return usage;
        };
        for c in &hosting.hosted.containers {
            for l in &c.licenses {
                let e = usage.entry((l.vendor_id, l.product_code)).or_default();
                e.0 += table.in_use(&l.license_id, now);
                e.1 += l.quantity;
            }
        }
        usage
    }

    fn sample_history(&self) -> Vec<crate::server::store::HistoryPoint> {
        self.history.sample(now_ms() / 60_000, &self.usage())
    }

    /// The seat history from Unix minute `since` on, in buckets of `step` minutes.
    pub fn history(
        &self,
        since: u64,
        product: Option<(u32, u32)>,
        step: u64,
    ) -> Result<Vec<crate::server::store::HistoryPoint>> {
        let finished = self.sample_history();
        self.history.write(&finished)?;
        self.history.query(since, product, step)
    }

    /// Re-reads the configuration: lease and renewal times, the admin token and hosts, and
    /// the containers (software containers rescanned, with fresh delegations; dongles kept).
    /// Blocking: call off the async runtime.
    /// The software containers under `home` read anew with fresh delegations valid for
    /// `days`, and the dongles hosted now, kept as they are.
    /// The software containers under `home` read anew, delegating until `expiry`, and the
    /// dongles hosted now.
    fn rehost(&self, expiry: u64) -> Hosted {
        let hosted = self.hosting().hosted.reload_software(
            &self.config.home,
            &self.host,
            self.public_key,
            expiry,
        );
        for p in &hosted.problems {
            warn!(problem = %p, "container not hosted");
        }
        hosted
    }

    fn set_hosting(&self, hosted: Hosted, hello: ServerHello) {
        let hosting = Arc::new(Hosting { hosted, hello });
        match self.hosting.write() {
            Ok(mut h) => *h = hosting,
            Err(p) => *p.into_inner() = hosting,
        }
    }

    /// Renews the delegations past half their validity: they are signed for
    /// `delegation_days`, and a server that runs longer than that would otherwise be refused
    /// by every new client. Software containers are read anew (as a reload does); a dongle
    /// signs a new delegation through its channel. Returns whether it renewed any.
    pub fn renew_delegations(&self) -> bool {
        self.renew_delegations_at(crate::util::now())
    }

    /// [`Server::renew_delegations`] as if it were `now` (Unix seconds): the new delegations
    /// last `delegation_days` from `now`.
    pub fn renew_delegations_at(&self, now: u64) -> bool {
        let hosting = self.hosting();
        let days = self.delegation_days.load(Ordering::Relaxed);
        let expiry = now.saturating_add(days * 86_400);
        let half = days * 86_400 / 2;
        let due = |c: &crate::server::hosted::HostedContainer| {
            c.delegation_expiry().saturating_sub(now) < half
        };
        let mut renewed = false;
        for c in
            hosting.hosted.containers.iter().filter(|c| {
                matches!(c.kind, crate::server::hosted::HostedKind::Dongle(_)) && due(c)
            })
        {
            match c.renew_delegation(self.public_key, expiry) {
                Ok(()) => {
                    info!(serial = %c.serial, expiry, "dongle delegation renewed");
                    renewed = true;
                }
                Err(e) => warn!(
                    serial = %c.serial,
                    expires = c.delegation_expiry(),
                    error = %e,
                    "a dongle's delegation to this server could not be renewed; retrying within the hour"
                ),
            }
        }
        let software_due = hosting
            .hosted
            .containers
            .iter()
            .any(|c| matches!(c.kind, crate::server::hosted::HostedKind::Software) && due(c));
        if !software_due && !renewed {
            return false;
        }
        let hosted = if software_due {
            self.rehost(expiry)
        } else {
            hosting.hosted.share()
        };
        let hello = ServerHello {
            version: proto::PROTOCOL_VERSION,
            name: self.config.name.clone(),
            delegations: hosted.bundles(),
        };
        info!(
            containers = hosted.containers.len(),
            days, "delegations renewed"
        );
        self.set_hosting(hosted, hello);
        true
    }

    pub fn reload(&self) -> Result<ReloadReport> {
        let new = match self.config_source.lock().ok().as_deref() {
            Some(Some(source)) => source()?,
            _ => self.config.clone(),
        };
        new.check()?;
        let mut report = ReloadReport::default();
        let old = &self.config;
        let mut restart = |name: &str, changed: bool| {
            if changed {
                report.restart_needed.push(name.to_string());
            }
        };
        restart("name", new.name != old.name);
        restart("listen", new.listen != old.listen);
        restart("discovery", new.discovery != old.discovery);
        restart("state_dir", new.state_dir != old.state_dir);
        restart("home", new.home != old.home);
        restart("dongles", new.dongles != old.dongles);
        restart(
            "max_connections",
            new.max_connections != old.max_connections,
        );
        restart(
            "handshake_timeout_ms",
            new.handshake_timeout_ms != old.handshake_timeout_ms,
        );
        restart("log_format", new.log_format != old.log_format);
        restart("fsync", new.fsync != old.fsync);
        restart("admin", new.admin != old.admin);
        restart("admin_listen", new.admin_listen != old.admin_listen);
        restart(
            "commit_window_us",
            new.commit_window_us != old.commit_window_us,
        );
        restart("worker_threads", new.worker_threads != old.worker_threads);

        self.lease_ms.store(new.lease_ms, Ordering::Relaxed);
        self.delegation_days
            .store(new.delegation_days, Ordering::Relaxed);
        self.renew_ms.store(new.renew_ms, Ordering::Relaxed);
        report.applied.push(format!("lease_ms = {}", new.lease_ms));
        report.applied.push(format!("renew_ms = {}", new.renew_ms));
        if let Ok(mut a) = self.admin_auth.write() {
            *a = AdminAuth {
                token: new.admin_token.clone(),
                hosts: new.admin_hosts.clone(),
            };
        }
        report.applied.push(format!(
            "admin_token ({})",
            if new.admin_token.is_some() {
                "set"
            } else {
                "none"
            }
        ));
        report
            .applied
            .push(format!("admin_hosts = {:?}", new.admin_hosts));

        let hosted = self.rehost(crate::util::now() + new.delegation_days * 86_400);
        report.applied.push(format!(
            "containers rescanned, delegation_days = {}",
            new.delegation_days
        ));
        report.containers = hosted.containers.len();
        report.licenses = hosted.containers.iter().map(|c| c.licenses.len()).sum();
        report.problems = hosted.problems.clone();
        let hello = ServerHello {
            version: proto::PROTOCOL_VERSION,
            name: old.name.clone(),
            delegations: hosted.bundles(),
        };
        self.set_hosting(hosted, hello);
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        info!(
            containers = report.containers,
            licenses = report.licenses,
            "configuration reloaded"
        );
        Ok(report)
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Seats held now.
    pub fn seats(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }

    fn table(&self) -> Result<std::sync::MutexGuard<'_, SeatTable>> {
        self.table
            .lock()
            .map_err(|_| Error::Internal("seat table lock poisoned".into()))
    }

    async fn acquire(&self, client: &[u8; 32], peer: &Peer, want: Want) -> Result<NetResponse> {
        let hello = &peer.hello;
        let Want {
            seat_id,
            vendor_id,
            product_code,
            features,
            exclusive,
        } = want;
        let hosting = self.hosting();
        let candidates = hosting.hosted.find(vendor_id, product_code);
        if candidates.is_empty() {
            return Err(Error::NoLicense(format!(
                "server {} hosts no license for vendor {vendor_id} product {product_code}",
                self.config.name
            )));
        }
        let mut best: Option<(Error, &crate::license::License)> = None;
        let now = now_ms();
        for (ci, li) in candidates {
            let c = &hosting.hosted.containers[ci];
            let lic = &c.licenses[li];
            let spec = AcquireSpec {
                seat_id,
                license: lic,
                host: &hello.host,
                client: *client,
                exclusive,
                features,
                now_ms: now,
                lease_ms: self.lease_ms(),
            };
            // Submitted under the table's lock, so that the store and the usage log keep the
            // table's order.
            let outcome = {
                let mut t = self.table()?;
                // Only a new seat is a grant in the usage log; re-attaching a live one is not.
                let held = t.seat(&seat_id).is_some_and(|r| {
                    r.expires_ms > now && r.client == *client && r.license_id == lic.license_id
                });
                let granted = t.acquire(&spec);
                let mut events = usage::expired(&hosting.hosted, &mut t);
                match granted {
                    Ok((row, change, in_use)) => {
                        if !held {
                            events.push(usage::granted(lic, &row, &peer.client_info));
                        }
                        Ok((
                            row,
                            in_use,
                            held,
                            self.committer.submit_with(vec![change], events),
                        ))
                    }
                    Err(e) => {
                        self.committer.submit_lazy_with(Vec::new(), events);
                        Err(e)
                    }
                }
            };
            match outcome {
                Ok((row, in_use, held, waiter)) => {
                    // Durable, and in the usage log, before it is answered: a server killed now
                    // never over-grants, and never grants a seat its log does not show.
                    if let Err(e) = waiter.wait_async().await {
                        // Undo a new grant; a seat that was already held (a client
                        // re-attaching) is already on disk and stays.
                        let mut t = self.table()?;
                        if !held && let Some(undo) = t.release_row(&row.seat_id, client) {
                            let events = usage::released(
                                &hosting.hosted,
                                &undo,
                                &peer.client_info,
                                now_ms(),
                            );
                            drop(self.committer.submit_with(
                                vec![Change::Delete(undo.seat_id)],
                                events.into_iter().collect(),
                            ));
                        }
                        return Err(e);
                    }
                    self.remember(&seat_id, &peer.holder, spec.now_ms);
                    return Ok(NetResponse::Granted(SeatGrant {
                        seat_id,
                        license: c.license_bytes[li].clone(),
                        container_serial: c.serial.clone(),
                        lease_ms: spec.lease_ms,
                        renew_ms: self.renew_ms(),
                        in_use,
                    }));
                }
                Err(e) => {
                    if best
                        .as_ref()
                        .is_none_or(|(b, _)| e.specificity() > b.specificity())
                    {
                        best = Some((e, lic));
                    }
                }
            }
        }
        match best {
            Some((e, lic)) => {
                let denied = usage::denied(lic, &seat_id, &hello.host, &peer.client_info, &e);
                self.committer.submit_lazy_with(Vec::new(), vec![denied]);
                Err(e)
            }
            None => Err(Error::NoLicense("no license fits".into())),
        }
    }

    /// Saves who holds the live seats (see `HistoryStore::save_holders`). Blocking.
    fn save_holders(&self) {
        let meta = self.seat_meta();
        let rows: Vec<super::store::HolderRow> = match self.table() {
            Ok(t) => meta
                .iter()
                .filter(|(id, _)| t.seat(id).is_some())
                .filter_map(|(id, m)| {
                    Some((*id, postcard::to_allocvec(&*m.holder).ok()?, m.since_ms))
                })
                .collect(),
            Err(_) => return,
        };
        match self.history.save_holders(&rows) {
            Ok(()) => debug!(seats = rows.len(), "seat holders saved"),
            Err(e) => warn!(error = %e, "seat holders not saved"),
        }
    }

    /// Notes who holds a seat (kept from its first grant on).
    fn remember(&self, seat_id: &SeatId, holder: &Arc<SeatHolder>, now_ms: u64) {
        if let Ok(mut m) = self.seat_meta.lock() {
            m.entry(*seat_id).or_insert_with(|| SeatMeta {
                holder: Arc::clone(holder),
                since_ms: now_ms,
            });
        }
    }

    fn forget(&self, changes: &[Change]) {
        if let Ok(mut m) = self.seat_meta.lock() {
            for c in changes {
                if let Change::Delete(id) = c {
                    m.remove(id);
                }
            }
        }
    }

    fn seat_container(
        &self,
        hosting: &Hosting,
        client: &[u8; 32],
        seat_id: &[u8; 16],
    ) -> Result<(usize, [u8; 16])> {
        let t = self.table()?;
        let row = t
            .seat(seat_id)
            .filter(|r| r.client == *client && r.expires_ms > now_ms())
            .ok_or_else(|| {
                Error::LeaseLost(format!(
                    "server {} holds no seat {}",
                    self.config.name,
                    hex::encode(seat_id)
                ))
            })?;
        let (ci, _) = hosting
            .hosted
            .by_license_id(&row.license_id)
            .ok_or_else(|| Error::NoLicense("the seat's license is no longer hosted".into()))?;
        Ok((ci, row.license_id))
    }

    async fn container_call(
        self: &Arc<Self>,
        client: &[u8; 32],
        seat_id: &[u8; 16],
        make: impl FnOnce([u8; 16]) -> Request,
    ) -> Result<Response> {
        let hosting = self.hosting();
        let (ci, license_id) = self.seat_container(&hosting, client, seat_id)?;
        let req = make(license_id);
        let container = hosting.hosted.containers[ci].clone();
        tokio::task::spawn_blocking(move || container.call(req))
            .await
            .map_err(|e| Error::Internal(format!("container task: {e}")))?
    }

    async fn dispatch(
        self: &Arc<Self>,
        client: &[u8; 32],
        peer: &Peer,
        req: NetRequest,
    ) -> Result<NetResponse> {
        match req {
            NetRequest::Acquire {
                seat_id,
                vendor_id,
                product_code,
                features,
                exclusive,
            } => {
                let want = Want {
                    seat_id,
                    vendor_id,
                    product_code,
                    features,
                    exclusive,
                };
                self.acquire(client, peer, want).await
            }
            NetRequest::Renew { seat_ids } => {
                let lease_ms = self.lease_ms();
                let (changes, lost) = self.table()?.renew(&seat_ids, client, now_ms(), lease_ms);
                if !changes.is_empty() {
                    // Renewals need not wait for the disk: a lost renewal only shortens a lease.
                    self.committer.submit_lazy(changes);
                }
                Ok(NetResponse::Renewed { lost, lease_ms })
            }
            NetRequest::Release { seat_id } => {
                let mut t = self.table()?;
                if let Some(row) = t.release_row(&seat_id, client) {
                    let hosting = self.hosting();
                    let events =
                        usage::released(&hosting.hosted, &row, &peer.client_info, now_ms());
                    let change = Change::Delete(row.seat_id);
                    self.forget(std::slice::from_ref(&change));
                    // Under the table's lock: the usage log keeps the table's order.
                    drop(
                        self.committer
                            .submit_with(vec![change], events.into_iter().collect()),
                    );
                }
                Ok(NetResponse::Released)
            }
            NetRequest::DeriveKey { seat_id, header } => {
                match self
                    .container_call(client, &seat_id, |license_id| Request::DeriveKey {
                        license_id,
                        header,
                    })
                    .await?
                {
                    Response::Key(k) => Ok(NetResponse::Key(k)),
                    other => Err(Error::malformed("container answer", format!("{other:?}"))),
                }
            }
            NetRequest::Encrypt { seat_id, plaintext } => {
                match self
                    .container_call(client, &seat_id, |license_id| Request::Encrypt {
                        license_id,
                        plaintext,
                    })
                    .await?
                {
                    Response::Data(d) => Ok(NetResponse::Data(d)),
                    other => Err(Error::malformed("container answer", format!("{other:?}"))),
                }
            }
            NetRequest::Decrypt {
                seat_id,
                ciphertext,
            } => {
                match self
                    .container_call(client, &seat_id, |license_id| Request::Decrypt {
                        license_id,
                        ciphertext,
                    })
                    .await?
                {
                    Response::Data(d) => Ok(NetResponse::Data(d)),
                    other => Err(Error::malformed("container answer", format!("{other:?}"))),
                }
            }
            NetRequest::SeatInfo { seat_id } => {
                let hosting = self.hosting();
                let (ci, license_id) = self.seat_container(&hosting, client, &seat_id)?;
                let quantity = hosting.hosted.containers[ci]
                    .licenses
                    .iter()
                    .find(|l| l.license_id == license_id)
                    .map(|l| l.quantity)
                    .unwrap_or(0);
                let in_use = self.table()?.in_use(&license_id, now_ms());
                Ok(NetResponse::Info { in_use, quantity })
            }
            NetRequest::Ping => Ok(NetResponse::Pong),
        }
    }

    fn expire(&self) {
        let Ok(mut t) = self.table() else { return };
        let changes = t.expire(now_ms());
        let events = usage::expired(&self.hosting().hosted, &mut t);
        if !changes.is_empty() {
            debug!(expired = changes.len(), "leases ran out");
            self.stats
                .lease_expiries
                .fetch_add(changes.len() as u64, Ordering::Relaxed);
            self.forget(&changes);
        }
        // Under the table's lock: the usage log keeps the table's order.
        self.committer.submit_lazy_with(changes, events);
    }
}

/// A TCP listener made with socket2: dual-stack for `[::]`, reuse-address, no-delay and
/// keepalive on accepted sockets are set per connection.
fn tcp_listener(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| Error::io(addr.to_string(), e))?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.set_reuse_address(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.set_nonblocking(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.bind(&addr.into())
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.listen(1024).map_err(|e| Error::io(addr.to_string(), e))?;
    Ok(s.into())
}

fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| Error::io(addr.to_string(), e))?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.set_reuse_address(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.set_broadcast(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.set_nonblocking(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.bind(&addr.into())
        .map_err(|e| Error::io(addr.to_string(), e))?;
    Ok(s.into())
}

async fn read_frame(s: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_frame_into(s, &mut buf).await?;
    Ok(buf)
}

/// Reads one frame into `buf` (a buffer the connection reuses).
async fn read_frame_into(
    s: &mut (impl AsyncReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame length {n}"),
        ));
    }
    buf.clear();
    buf.resize(n, 0);
    s.read_exact(buf).await?;
    Ok(())
}

async fn write_frame(s: &mut (impl AsyncWriteExt + Unpin), payload: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    s.write_all(&buf).await
}

async fn handshake(
    server: &Server,
    rd: &mut (impl AsyncReadExt + Unpin),
    wr: &mut (impl AsyncWriteExt + Unpin),
) -> Result<(NetChannel, [u8; 32], ClientHello)> {
    let io = |e: std::io::Error| Error::io("client connection", e);
    let hosting = server.hosting();
    let mut hs = ServerHandshake::new(&server.static_secret, &hosting.hello)?;
    let m1 = read_frame(rd).await.map_err(io)?;
    let m2 = hs.read_message1(&m1)?;
    write_frame(wr, &m2).await.map_err(io)?;
    let m3 = read_frame(rd).await.map_err(io)?;
    hs.read_message3(&m3)
}

async fn serve_connection(server: Arc<Server>, s: TcpStream, peer: SocketAddr) {
    let hs_timeout = Duration::from_millis(server.config.handshake_timeout_ms);
    // Buffered reads: one receive call per request, not one per length and body. Seat
    // requests are under 256 bytes; a larger frame (network encryption) is read past the
    // buffer. 1 KiB rather than 8: with 10,000 clients the buffers alone were 80 MB.
    let (rd, mut wr) = s.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(1024, rd);
    let (mut channel, client, hello) =
        match tokio::time::timeout(hs_timeout, handshake(&server, &mut rd, &mut wr)).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                server.stats.refused.fetch_add(1, Ordering::Relaxed);
                info!(%peer, error = %e, "handshake refused");
                return;
            }
            Err(_) => {
                server.stats.refused.fetch_add(1, Ordering::Relaxed);
                info!(%peer, "handshake timed out");
                return;
            }
        };
    debug!(%peer, host = %hello.host.hostname, "client connected");
    let who = Peer::new(hello);
    let idle = Duration::from_millis(server.lease_ms().saturating_mul(3));
    // Buffers reused for every request: the frame read, the encoded answer, and the answer
    // as it goes on the wire (length prefix and sealed frame).
    let (mut frame, mut answer, mut wire) = (Vec::new(), Vec::new(), Vec::new());
    // One idle timer per connection, pushed on only when it fires: arming a timer per request
    // costs the timer wheel two updates per request.
    let mut last_request = Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        let got = {
            let read = read_frame_into(&mut rd, &mut frame);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    biased;
                    r = &mut read => break Some(r),
                    () = &mut idle_timer => {
                        // The read in progress stays (a frame may be half read); the timer
                        // moves on to a full idle period after the last request.
                        let due = last_request + idle;
                        if due <= Instant::now() {
                            break None;
                        }
                        idle_timer.as_mut().reset(due.into());
                    }
                }
            }
        };
        match got {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    server.stats.refused.fetch_add(1, Ordering::Relaxed);
                    info!(%peer, error = %e, "connection dropped");
                }
                return;
            }
            None => {
                info!(%peer, "idle connection closed");
                return;
            }
        }
        let plain = match channel.open(&frame) {
            Ok(p) => p,
            Err(e) => {
                server.stats.refused.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, error = %e, "refused a frame; closing");
                return;
            }
        };
        let started = Instant::now();
        last_request = started;
        let (kind, resp) = match proto::decode::<NetRequest>(&plain, "request") {
            Ok(req) => (
                RequestKind::of(&req),
                server
                    .dispatch(&client, &who, req)
                    .await
                    .unwrap_or_else(|e| proto::error_response(&e)),
            ),
            Err(e) => (RequestKind::Malformed, proto::error_response(&e)),
        };
        server.stats.requests.fetch_add(1, Ordering::Relaxed);
        server.stats.count_answer(&resp);
        server.stats.latency.observe(kind, started.elapsed());
        answer.clear();
        wire.clear();
        wire.extend_from_slice(&[0; 4]);
        if let Err(e) = proto::encode_into(&resp, &mut answer)
            .and_then(|()| channel.seal_into(&answer, &mut wire))
        {
            warn!(%peer, error = %e, "could not answer");
            return;
        }
        let len = (wire.len() - 4) as u32;
        wire[..4].copy_from_slice(&len.to_be_bytes());
        if wr.write_all(&wire).await.is_err() {
            return;
        }
    }
}

async fn accept_loop(server: Arc<Server>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    // Counted before it is checked: two listeners accepting at once cannot
                    // both slip under the limit.
                    if server.stats.connections.fetch_add(1, Ordering::Relaxed) >= server.config.max_connections {
                        server.stats.connections.fetch_sub(1, Ordering::Relaxed);
                        server.stats.refused.fetch_add(1, Ordering::Relaxed);
                        warn!(%peer, "connection limit reached; refused");
                        drop(s);
                        continue;
                    }
                    let _ = s.set_nodelay(true);
                    let _ = SockRef::from(&s).set_tcp_keepalive(&TcpKeepalive::new().with_time(Duration::from_secs(60)));
                    let server = server.clone();
                    server.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let st = server.clone();
                        serve_connection(server, s, peer).await;
                        st.stats.connections.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn discovery_loop(
    server: Arc<Server>,
    sock: UdpSocket,
    port: u16,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = sock.recv_from(&mut buf) => if let Ok((n, from)) = r {
                // The vendors of what is hosted now (a reload may change them).
                let answer = DiscoveryAnswer {
                    name: server.config.name.clone(),
                    port,
                    vendors: server.hosting().hosted.vendors(),
                };
                if let Some(reply) = crate::net::discovery::answer_probe(&buf[..n], &answer) {
                    let _ = sock.send_to(&reply, from).await;
                }
            }
        }
    }
}

/// Runs the server until `shutdown` resolves. Returns the bound addresses through `bound`
/// as soon as the listeners are up (tests use port 0).
pub async fn run(
    server: Arc<Server>,
    shutdown: impl std::future::Future<Output = ()>,
    bound: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut addrs = Vec::new();
    for addr in server.config.listen.clone() {
        let l = TcpListener::from_std(tcp_listener(addr)?)
            .map_err(|e| Error::io(addr.to_string(), e))?;
        let local = l.local_addr().map_err(|e| Error::io(addr.to_string(), e))?;
        info!(address = %local, "listening");
        addrs.push(local);
        tasks.push(tokio::spawn(accept_loop(
            server.clone(),
            l,
            stop_rx.clone(),
        )));
    }
    if server.config.discovery
        && let Some(first) = addrs.first().copied()
    {
        let mut udp_addr = server.config.listen[0];
        udp_addr.set_port(first.port());
        match udp_socket(udp_addr)
            .and_then(|s| UdpSocket::from_std(s).map_err(|e| Error::io(udp_addr.to_string(), e)))
        {
            Ok(sock) => {
                info!(address = %udp_addr, "answering discovery");
                tasks.push(tokio::spawn(discovery_loop(
                    server.clone(),
                    sock,
                    first.port(),
                    stop_rx.clone(),
                )));
            }
            Err(e) => warn!(error = %e, "no discovery"),
        }
    }
    let admin = if server.config.admin {
        let l = TcpListener::from_std(tcp_listener(server.config.admin_listen)?)
            .map_err(|e| Error::io(server.config.admin_listen.to_string(), e))?;
        let local = l
            .local_addr()
            .map_err(|e| Error::io(server.config.admin_listen.to_string(), e))?;
        info!(address = %local, "admin API listening");
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(super::admin::serve(
            server.clone(),
            l,
            local,
            async move {
                let _ = stop.changed().await;
            },
        )));
        Some(local)
    } else {
        None
    };
    {
        let server = server.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(history::SAMPLE_EVERY) => {
                        let finished = server.sample_history();
                        if !finished.is_empty() {
                            let s = server.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                if let Err(e) = s.history.write(&finished) {
                                    warn!(error = %e, "seat history not written");
                                }
                            })
                            .await;
                        }
                    }
                }
            }
            // The minute in progress, as it stands (and one that just ended).
            let finished = server.sample_history();
            let s = server.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = s.history.write(&finished).and_then(|()| s.history.flush()) {
                    warn!(error = %e, "seat history not written");
                }
            })
            .await;
        }));
    }
    {
        let server = server.clone();
        let mut stop = stop_rx.clone();
        let every = Duration::from_millis((server.config.renew_ms / 4).clamp(50, 1000));
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(every) => server.expire(),
                }
            }
        }));
    }
    {
        // Delegations are signed for delegation_days: renew them well before they run out.
        let server = server.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {
                        let s = server.clone();
                        let _ = tokio::task::spawn_blocking(move || s.renew_delegations()).await;
                    }
                }
            }
        }));
    }
    let b = Bound {
        listen: addrs,
        admin,
    };
    if let Ok(mut mine) = server.bound.lock() {
        *mine = b.clone();
    }
    // The first history sample, so the chart starts at the start.
    server.sample_history();
    if let Some(tx) = bound {
        let _ = tx.send(b);
    }
    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    server.committer.submit(Vec::new()).wait_async().await?;
    // Who holds which seat, for the admin page after the restart (clients re-attach their
    // seats, but the page would not know who held them until then, nor since when).
    let s = server.clone();
    let _ = tokio::task::spawn_blocking(move || s.save_holders()).await;
    // The last checkpoint, signed by the hosted containers, before the server goes.
    server.usage.close_async().await;
    Ok(())
}

/// Signs usage checkpoints with the server's hosted containers (weak: the usage log's
/// thread must not keep the server alive).
struct UsageSigner(std::sync::Weak<Server>);

impl CheckpointSigner for UsageSigner {
    fn sign_usage(&self, vendor_id: u32, digest: [u8; 32]) -> Result<(Vec<u8>, Vec<u8>)> {
        let server = self
            .0
            .upgrade()
            .ok_or_else(|| Error::Internal("the server is gone".into()))?;
        server.hosting().hosted.sign_usage(vendor_id, digest)
    }
}

/// What the store keeps for the changes the table makes (re-exported for tests).
pub type SeatChange = Change;

/// A client-supplied string made fit to show: control characters replaced, at most 256
/// characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(256)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}
