//! The pool as its admin sees it: which members are up, each etcd endpoint's health, and the
//! pool's own numbers for `/metrics` (etcd round trips, transaction retries).
//!
//! Every member announces itself under the pool's prefix with two keys:
//!
//! - `<prefix>member-info/<name>`: what it is (name, version, addresses, when it started), with
//!   no lease, so a member that died is still listed (as down) until an operator deletes the
//!   key (`etcdctl del <prefix>member-info/<name>`) when the machine is retired;
//! - `<prefix>heartbeat/<name>`: the same, attached to an etcd lease of [`HEARTBEAT_TTL_S`]
//!   that the member keeps alive every [`HEARTBEAT_EVERY`]: the key is there while the member
//!   runs and reaches etcd, and vanishes a few seconds after it dies or is cut off.
//!
//! A member is **up** while its heartbeat key is there. The registrations of the pool
//! activation (`<prefix>members/<serial>`) are listed beside them where present.
//!
//! [`PoolMonitor::run`] does that and, at the same pace, asks each configured etcd endpoint
//! for its status on a connection of its own (so an endpoint that is down shows as down, not
//! hidden behind the client's fail-over), and keeps the last [`PoolView`] for the admin API
//! and `/metrics`: a scrape or a page load never waits for etcd.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};

use super::config::EtcdAccess;
use super::stats::{Histogram, LatencyCounts};

/// How often a member renews its heartbeat and re-reads the pool's state.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// The heartbeat lease: a member missing this long is down.
pub const HEARTBEAT_TTL_S: i64 = 3;
/// The longest an endpoint's status call may take before it counts as down.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(900);

/// What a member says about itself (the value of its info and heartbeat keys, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAnnounce {
    /// The server's name (`name`).
    pub name: String,
    /// The server's version.
    pub version: String,
    /// Its license-protocol addresses.
    pub listen: Vec<String>,
    /// Its admin address, if it serves one.
    pub admin: Option<String>,
    /// When it started (Unix seconds).
    pub started_at: u64,
}

/// A member as the pool's state shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// What it said about itself (the heartbeat's word when there is one).
    #[serde(flatten)]
    pub announce: MemberAnnounce,
    /// Whether its heartbeat is there.
    pub up: bool,
    /// Whether this is the member answering.
    pub this: bool,
}

/// One etcd endpoint's health, from its own status call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointView {
    /// The endpoint as configured.
    pub endpoint: String,
    /// Whether it answered its status call in time, without errors.
    pub healthy: bool,
    /// Whether it is the Raft leader.
    pub leader: bool,
    /// Its etcd member id (hex), when it answered.
    pub member_id: Option<String>,
    /// Its etcd version.
    pub version: Option<String>,
    /// Its database size (bytes).
    pub db_size: Option<i64>,
    /// Its Raft term and index.
    pub raft_term: Option<u64>,
    /// Its Raft index.
    pub raft_index: Option<u64>,
    /// The status call's round trip (milliseconds).
    pub round_trip_ms: Option<f64>,
    /// Why it is not healthy.
    pub error: Option<String>,
}

/// The pool's state, as the last look found it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PoolView {
    /// The key prefix of the pool.
    pub prefix: String,
    /// Every member that announced itself, up or not, by name.
    pub members: Vec<MemberView>,
    /// The registrations of the pool activation (`<prefix>members/`: their key names).
    pub registrations: Vec<String>,
    /// Every configured endpoint.
    pub endpoints: Vec<EndpointView>,
    /// When this view was taken (Unix milliseconds); 0 before the first look.
    pub checked_ms: u64,
    /// Why the pool's keys could not be read at the last look (the members are then as the
    /// look before found them).
    pub error: Option<String>,
}

impl PoolView {
    /// Members whose heartbeat is there.
    pub fn members_up(&self) -> usize {
        self.members.iter().filter(|m| m.up).count()
    }

    /// Endpoints that answered.
    pub fn endpoints_healthy(&self) -> usize {
        self.endpoints.iter().filter(|e| e.healthy).count()
    }
}

/// The kinds of etcd call the pool times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdOp {
    /// A seat transaction (acquire, take-over, revoke).
    Txn,
    /// A range read (a refresh after a failed compare, the table's load).
    Range,
    /// A lease keep-alive (renewals, the heartbeat).
    KeepAlive,
    /// A lease grant or revoke.
    Lease,
    /// An endpoint's status call.
    Status,
    /// A plain put (the heartbeat's keys).
    Put,
}

impl EtcdOp {
    /// Every kind, in the exposition's order.
    pub const ALL: [EtcdOp; 6] = [
        EtcdOp::Txn,
        EtcdOp::Range,
        EtcdOp::KeepAlive,
        EtcdOp::Lease,
        EtcdOp::Status,
        EtcdOp::Put,
    ];

    /// The kind of a pool seat-table call, by the words it is made with
    /// (`server::pool::EtcdSeats::call`).
    pub fn of_call(what: &str) -> EtcdOp {
        if what.starts_with("write") || what.starts_with("delete") || what.starts_with("release") {
            EtcdOp::Txn
        } else if what.starts_with("read") {
            EtcdOp::Range
        } else if what.starts_with("keep") {
            EtcdOp::KeepAlive
        } else {
            EtcdOp::Lease
        }
    }

    /// The `op` label.
    pub fn label(self) -> &'static str {
        match self {
            EtcdOp::Txn => "txn",
            EtcdOp::Range => "range",
            EtcdOp::KeepAlive => "keep_alive",
            EtcdOp::Lease => "lease",
            EtcdOp::Status => "status",
            EtcdOp::Put => "put",
        }
    }
}

/// The pool's counters: etcd round trips by kind, and the seat transactions retried after a
/// failed compare (another member granted in the same license meanwhile).
#[derive(Debug, Default)]
pub struct PoolStats {
    rtt: [Histogram; EtcdOp::ALL.len()],
    /// Seat transactions whose compare failed and were decided again.
    pub txn_retries: std::sync::atomic::AtomicU64,
    /// Acquires that gave up after the bounded retries (answered as a transport error).
    pub txn_gave_up: std::sync::atomic::AtomicU64,
    /// etcd calls that failed (the endpoint or the cluster did not answer).
    pub etcd_errors: std::sync::atomic::AtomicU64,
}

impl PoolStats {
    /// Records one etcd round trip.
    pub fn observe(&self, op: EtcdOp, took: Duration) {
        self.rtt[op as usize].observe(took);
    }

    /// What was recorded for `op`.
    pub fn counts(&self, op: EtcdOp) -> LatencyCounts {
        self.rtt[op as usize].counts()
    }

    /// Times `f`, an etcd call, as `op`.
    pub async fn timed<T>(&self, op: EtcdOp, f: impl std::future::Future<Output = T>) -> T {
        let t = Instant::now();
        let r = f.await;
        self.observe(op, t.elapsed());
        r
    }
}

/// Keeps this member's heartbeat and the last [`PoolView`].
pub struct PoolMonitor {
    endpoints: Vec<String>,
    /// TLS and user towards etcd.
    access: EtcdAccess,
    prefix: String,
    me: MemberAnnounce,
    view: Mutex<PoolView>,
    stats: Arc<PoolStats>,
}

/// The key of a member's info (no lease).
pub fn info_key(prefix: &str, name: &str) -> String {
    format!("{prefix}member-info/{name}")
}

/// The key of a member's heartbeat (leased).
pub fn heartbeat_key(prefix: &str, name: &str) -> String {
    format!("{prefix}heartbeat/{name}")
}

fn connect_options(access: &EtcdAccess) -> ConnectOptions {
    access.options(
        ConnectOptions::new()
            .with_connect_timeout(STATUS_TIMEOUT)
            .with_timeout(STATUS_TIMEOUT),
    )
}

impl PoolMonitor {
    /// A monitor of the pool at `endpoints` under `prefix`, for the member `me`.
    pub fn new(
        endpoints: Vec<String>,
        access: EtcdAccess,
        prefix: String,
        me: MemberAnnounce,
        stats: Arc<PoolStats>,
    ) -> Arc<PoolMonitor> {
        let view = PoolView {
            prefix: prefix.clone(),
            endpoints: endpoints
                .iter()
                .map(|e| EndpointView {
                    endpoint: e.clone(),
                    healthy: false,
                    leader: false,
                    member_id: None,
                    version: None,
                    db_size: None,
                    raft_term: None,
                    raft_index: None,
                    round_trip_ms: None,
                    error: Some("not checked yet".into()),
                })
                .collect(),
            ..PoolView::default()
        };
        Arc::new(PoolMonitor {
            endpoints,
            access,
            prefix,
            me,
            view: Mutex::new(view),
            stats,
        })
    }

    /// The last view.
    pub fn view(&self) -> PoolView {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The pool's counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.me.name
    }

    /// Heartbeats and looks until the process ends (or `stop` resolves): connects (again,
    /// after any failure), announces the member, keeps its heartbeat alive and refreshes the
    /// view every [`HEARTBEAT_EVERY`].
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut status_clients: Vec<Option<Client>> = vec![None; self.endpoints.len()];
        let mut client: Option<Client> = None;
        let mut lease: Option<i64> = None;
        loop {
            let pass = async {
                let error = match self.heartbeat(&mut client, &mut lease).await {
                    Ok(()) => self.read_members(client.as_mut()).await.err(),
                    Err(e) => {
                        client = None;
                        lease = None;
                        Some(e)
                    }
                };
                let endpoints = self.check_endpoints(&mut status_clients).await;
                let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
                v.endpoints = endpoints;
                v.error = error;
                v.checked_ms = crate::util::now_ms();
            };
            tokio::select! {
                _ = &mut stop => break,
                _ = pass => {}
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            }
        }
        // Leaving: the heartbeat goes at once, not a lease later.
        if let (Some(mut c), Some(id)) = (client, lease) {
            let _ = tokio::time::timeout(STATUS_TIMEOUT, c.lease_revoke(id)).await;
        }
    }

    /// Connects when needed, puts the info key, and the heartbeat key on a live lease.
    async fn heartbeat(
        &self,
        client: &mut Option<Client>,
        lease: &mut Option<i64>,
    ) -> Result<(), String> {
        let c = match client {
            Some(c) => c,
            None => {
                let urls: Vec<String> = self.endpoints.iter().map(|e| self.access.url(e)).collect();
                let c = Client::connect(urls, Some(connect_options(&self.access)))
                    .await
                    .map_err(|e| format!("connecting to etcd: {e}"))?;
                client.insert(c)
            }
        };
        let value = serde_json::to_vec(&self.me).map_err(|e| e.to_string())?;
        let st = &self.stats;
        if let Some(id) = *lease {
            // A keep-alive that finds the lease gone (expired while cut off) starts over.
            let alive = st
                .timed(EtcdOp::KeepAlive, async {
                    let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                    keeper.keep_alive().await?;
                    Ok::<_, etcd_client::Error>(stream.message().await?.map_or(0, |m| m.ttl()))
                })
                .await
                .map_err(|e| format!("keeping the heartbeat alive: {e}"))?;
            if alive > 0 {
                return Ok(());
            }
            *lease = None;
        }
        st.timed(
            EtcdOp::Put,
            c.put(info_key(&self.prefix, &self.me.name), value.clone(), None),
        )
        .await
        .map_err(|e| format!("announcing the member: {e}"))?;
        let id = st
            .timed(EtcdOp::Lease, c.lease_grant(HEARTBEAT_TTL_S, None))
            .await
            .map_err(|e| format!("granting the heartbeat's lease: {e}"))?
            .id();
        st.timed(
            EtcdOp::Put,
            c.put(
                heartbeat_key(&self.prefix, &self.me.name),
                value,
                Some(PutOptions::new().with_lease(id)),
            ),
        )
        .await
        .map_err(|e| format!("putting the heartbeat: {e}"))?;
        *lease = Some(id);
        Ok(())
    }

    /// Reads the members' info and heartbeat keys and the registrations.
    async fn read_members(&self, client: Option<&mut Client>) -> Result<(), String> {
        let Some(c) = client else {
            return Err("not connected to etcd".into());
        };
        let st = &self.stats;
        let range = |what: &'static str| {
            let key = format!("{}{what}/", self.prefix);
            let mut c = c.clone();
            async move {
                st.timed(
                    EtcdOp::Range,
                    c.get(key.clone(), Some(GetOptions::new().with_prefix())),
                )
                .await
                .map(|r| {
                    r.kvs()
                        .iter()
                        .map(|kv| {
                            (
                                String::from_utf8_lossy(&kv.key()[key.len()..]).into_owned(),
                                kv.value().to_vec(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .map_err(|e| format!("reading {key}: {e}"))
            }
        };
        let infos = range("member-info").await?;
        let beats = range("heartbeat").await?;
        let regs = range("members").await?;
        let mut members: Vec<MemberView> = Vec::new();
        let mut add = |value: &[u8], up: bool| {
            let Ok(a) = serde_json::from_slice::<MemberAnnounce>(value) else {
                return;
            };
            if let Some(m) = members.iter_mut().find(|m| m.announce.name == a.name) {
                m.up |= up;
                if up {
                    // The heartbeat is the newer word (a member restarted since).
                    m.announce = a;
                }
                return;
            }
            members.push(MemberView {
                this: a.name == self.me.name,
                announce: a,
                up,
            });
        };
        for (_, v) in &infos {
            add(v, false);
        }
        for (_, v) in &beats {
            add(v, true);
        }
        members.sort_by(|a, b| a.announce.name.cmp(&b.announce.name));
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        v.members = members;
        v.registrations = regs.into_iter().map(|(k, _)| k).collect();
        Ok(())
    }

    /// Asks every endpoint for its status, each on a connection of its own, all at once.
    async fn check_endpoints(&self, clients: &mut [Option<Client>]) -> Vec<EndpointView> {
        let checks = self
            .endpoints
            .iter()
            .zip(clients.iter_mut())
            .map(|(e, c)| self.check_endpoint(e, c));
        futures_util::future::join_all(checks).await
    }

    async fn check_endpoint(&self, endpoint: &str, client: &mut Option<Client>) -> EndpointView {
        let mut view = EndpointView {
            endpoint: endpoint.to_string(),
            healthy: false,
            leader: false,
            member_id: None,
            version: None,
            db_size: None,
            raft_term: None,
            raft_index: None,
            round_trip_ms: None,
            error: None,
        };
        let t = Instant::now();
        let answer = tokio::time::timeout(STATUS_TIMEOUT, async {
            if client.is_none() {
                *client = Some(
                    Client::connect(
                        [self.access.url(endpoint)],
                        Some(connect_options(&self.access)),
                    )
                    .await?,
                );
            }
            match client.as_mut() {
                Some(c) => self.stats.timed(EtcdOp::Status, c.status()).await,
                None => unreachable!("connected just above"),
            }
        })
        .await;
        match answer {
            Ok(Ok(s)) => {
                view.round_trip_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
                let id = s.header().map(|h| h.member_id());
                view.member_id = id.map(|i| format!("{i:x}"));
                view.leader = id.is_some_and(|i| i == s.leader());
                view.version = Some(s.version().to_string());
                view.db_size = Some(s.db_size());
                view.raft_term = Some(s.raft_term());
                view.raft_index = Some(s.raft_index());
                view.healthy = s.errors().is_empty() && s.leader() != 0;
                if !view.healthy {
                    view.error = Some(if s.leader() == 0 {
                        "no leader".to_string()
                    } else {
                        s.errors().join("; ")
                    });
                }
            }
            Ok(Err(e)) => {
                *client = None;
                view.error = Some(e.to_string());
            }
            Err(_) => {
                *client = None;
                view.error = Some(format!(
                    "no answer within {} ms",
                    STATUS_TIMEOUT.as_millis()
                ));
            }
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seat_tables_calls_are_timed_by_kind() {
        assert_eq!(EtcdOp::of_call("write a seat"), EtcdOp::Txn);
        assert_eq!(EtcdOp::of_call("release a seat"), EtcdOp::Txn);
        assert_eq!(EtcdOp::of_call("delete a seat"), EtcdOp::Txn);
        assert_eq!(EtcdOp::of_call("read the license's seats"), EtcdOp::Range);
        assert_eq!(
            EtcdOp::of_call("keep a seat lease alive"),
            EtcdOp::KeepAlive
        );
        assert_eq!(EtcdOp::of_call("grant seat leases ahead"), EtcdOp::Lease);
        let st = PoolStats::default();
        st.observe(EtcdOp::Txn, Duration::from_micros(800));
        st.observe(EtcdOp::Txn, Duration::from_secs(5));
        let h = st.counts(EtcdOp::Txn);
        assert_eq!(h.count, 2);
        assert_eq!(h.buckets[3], 1, "0.8 ms in the 1 ms bucket");
        assert_eq!(*h.buckets.last().unwrap(), 1, "5 s past the last bound");
        assert_eq!(st.counts(EtcdOp::Range).count, 0);
    }

    #[test]
    fn a_view_counts_members_up_and_healthy_endpoints() {
        let m = |name: &str, up| MemberView {
            announce: MemberAnnounce {
                name: name.into(),
                version: "0".into(),
                listen: vec![],
                admin: None,
                started_at: 0,
            },
            up,
            this: false,
        };
        let mut v = PoolView {
            members: vec![m("a", true), m("b", false), m("c", true)],
            ..PoolView::default()
        };
        assert_eq!(v.members_up(), 2);
        v.endpoints = ["x:1", "y:2"]
            .iter()
            .enumerate()
            .map(|(i, e)| EndpointView {
                endpoint: e.to_string(),
                healthy: i == 0,
                leader: false,
                member_id: None,
                version: None,
                db_size: None,
                raft_term: None,
                raft_index: None,
                round_trip_ms: None,
                error: None,
            })
            .collect();
        assert_eq!(v.endpoints_healthy(), 1);
        let plain = EtcdAccess::default();
        assert_eq!(plain.url("h:2379"), "http://h:2379");
        assert_eq!(plain.url("https://h:2379"), "https://h:2379");
        assert_eq!(heartbeat_key("/t/p/", "m1"), "/t/p/heartbeat/m1");
        assert_eq!(info_key("/t/p/", "m1"), "/t/p/member-info/m1");
    }
}
