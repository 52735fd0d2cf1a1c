//! The daemon: the license server's shared state ([`Server`]) and what runs on it.
//!
//! - this file: the state, opened from the configuration: the seat table with its durable
//!   store, the hosted containers, the usage log, the seat history, the counters;
//! - `listen`: the sockets (socket2: dual-stack, reuse-address, keepalive, no-delay), the
//!   license protocol inside Noise on TCP with its limits on connections, frames and time,
//!   and discovery on UDP;
//! - `requests`: what the license protocol's requests do to the seat table, the hosted
//!   containers and the usage log, and lease expiry;
//! - `pooled`: the same seat requests in pool mode (issue 17), on the pool's seat table in
//!   etcd (`server::pool::EtcdSeats`) instead of this server's table and SQLite file;
//! - `reload`: a configuration reload and the renewal of the delegations;
//! - `running`: the lifecycle: [`start`], the background work (seat history, lease expiry,
//!   delegation renewal) and a graceful stop ([`Running`]);
//! - `control`: [`Control`], what the server shows of its state and what an operator may do
//!   to it: the interface the admin API (`server::admin`) sits on.
//!
//! The daemon does not know the admin API: `server::run` starts the daemon and serves the
//! admin API beside it on a [`Control`].

mod control;
mod listen;
mod pooled;
mod reload;
mod requests;
mod running;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

pub use control::Control;
pub(crate) use listen::tcp_listener;
pub use reload::{ConfigSource, ReloadReport};
pub use running::{Running, start};

use crate::net::proto::{self, ServerHello};
use crate::server::config::{AdminToken, ServerConfig};
use crate::server::history::{Recorder, Usage};
use crate::server::hosted::Hosted;
use crate::server::pool::members::Members;
use crate::server::pool::{EtcdSeats, NoSeatStore};
use crate::server::seats::{Change, SeatId, SeatTable};
use crate::server::stats::Stats;
use crate::server::store::{Durability, GroupCommitter, SeatStore, SqliteStore};
use crate::server::usage::{self, CheckpointSigner, UsageEvent, UsageLog, UsageOptions};
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

impl SeatHolder {
    /// The form a pool's seat row carries (`PoolRow::holder`), so that every member shows
    /// who holds every seat; empty if it cannot be encoded.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Reads [`SeatHolder::encode`]'s form (`None`: empty, or another member's version).
    pub fn decode(b: &[u8]) -> Option<SeatHolder> {
        postcard::from_bytes(b).ok()
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
    /// Pool mode: the pool's seat table in etcd (then `table` stays empty and the committer
    /// writes only the usage log).
    pool: Option<Arc<EtcdSeats>>,
    /// Pool mode: this member's registrations in etcd and its watch of every member's
    /// (`server::pool::members`), started by `Running::ready`, restarted when the pool
    /// licenses it hosts change.
    members: RwLock<Option<Arc<Members>>>,
    seat_meta: Mutex<HashMap<SeatId, SeatMeta>>,
    committer: GroupCommitter<UsageEvent>,
    history: Recorder,
    usage: UsageLog,
    static_secret: zeroize::Zeroizing<[u8; 32]>,
    public_key: [u8; 32],
    host: crate::host::HostIdentity,
    config_source: Mutex<Option<ConfigSource>>,
    bound: Mutex<Bound>,
    started: Instant,
    started_unix: u64,
    stats: Stats,
}

/// Loads (or makes) the server's static key in `state_dir/server.key`, sealed to this
/// machine like a runtime's host key: a copy of the state directory on another machine does
/// not open there, so it cannot pose as this server to clients with the delegations this
/// one announced. Moving a server to new hardware means removing `server.key`: the hosted
/// containers sign delegations for the new key at startup, and clients pin no server key.
fn server_key(
    state_dir: &std::path::Path,
    fingerprint: &crate::host::Fingerprint,
) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    crate::client::hostkey::load_or_create_at(&state_dir.join("server.key"), fingerprint)
}

impl Server {
    /// Opens the state, loads the seat table and the hosted containers.
    pub fn open(config: ServerConfig) -> Result<Arc<Server>> {
        config.check()?;
        crate::util::ensure_dir(&config.state_dir)?;
        let host = crate::host::HostIdentity::detect();
        let static_secret = server_key(&config.state_dir, host.trusted_fingerprint()?)?;
        let public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*static_secret))
                .to_bytes();
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
            info!(serial = %c.serial, vendor = %crate::publisher::vendor_hex(c.vendor_id), licenses = c.licenses.len(), "hosting container");
        }
        let durability = if config.fsync {
            Durability::PowerLoss
        } else {
            Durability::ProcessCrash
        };
        // Pool mode: the seats are in etcd; the history keeps its own file.
        let pool = match &config.pool {
            Some(p) => {
                let seats = EtcdSeats::new(p, &config.name)?;
                info!(etcd = %seats.endpoints().join(","), prefix = %seats.prefix(), "pool member: the seat table is in etcd");
                Some(Arc::new(seats))
            }
            None => None,
        };
        let db = config.state_dir.join(if pool.is_some() {
            "history.db"
        } else {
            "seats.db"
        });
        let mut store: Box<dyn SeatStore> = if pool.is_some() {
            Box::new(NoSeatStore)
        } else {
            Box::new(SqliteStore::open_with(&db, durability)?)
        };
        let history = Recorder::open(&db)?;
        let rows = store.load()?;
        let mut table = SeatTable::new();
        let n = rows.len();
        // Every row is kept for one more lease: a renewal answered before a SIGKILL may not
        // be on disk yet (`SeatTable::load_extended`).
        table.load_extended(rows, now_ms(), config.lease_ms);
        if pool.is_none() {
            info!(seats = table.len(), loaded = n, "seat table loaded");
        }
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
                store,
                Some(Box::new(usage.journal()?)),
                config.commit_window(),
            ),
            usage,
            table: Mutex::new(table),
            pool,
            members: RwLock::new(None),
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

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Pool mode: the pool's seat table in etcd (`None` for a single server).
    pub fn pool(&self) -> Option<&Arc<EtcdSeats>> {
        self.pool.as_ref()
    }

    /// Seats held now (in pool mode: the seats this member serves).
    pub fn seats(&self) -> usize {
        if let Some(p) = &self.pool {
            return p.served_count();
        }
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// The face the admin API sits on (see [`Control`]).
    pub fn control(self: &Arc<Self>) -> Control {
        Control::new(Arc::clone(self))
    }

    /// Who holds which seat, as far as the server has been told since it started.
    fn seat_meta(&self) -> HashMap<SeatId, SeatMeta> {
        self.seat_meta.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn table(&self) -> Result<std::sync::MutexGuard<'_, SeatTable>> {
        self.table
            .lock()
            .map_err(|_| Error::Internal("seat table lock poisoned".into()))
    }

    /// Seats in use and quantity per product `(vendor_id, product_code)` now.
    fn usage(&self) -> Usage {
        let hosting = self.hosting();
        let now = now_ms();
        let mut usage = Usage::new();
        let Ok(table) = self.table() else {
            return usage;
        };
        for c in &hosting.hosted.containers {
            for l in &c.licenses {
                let e = usage.entry((l.vendor_id, l.product_code)).or_default();
                e.0 += match &self.pool {
                    // As this member last read the pool.
                    Some(p) => p.cached_in_use(&l.license_id),
                    None => table.in_use(&l.license_id, now),
                };
                e.1 += l.quantity;
            }
        }
        usage
    }
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

    fn gone(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// What the store keeps for the changes the table makes (re-exported for tests).
pub type SeatChange = Change;
