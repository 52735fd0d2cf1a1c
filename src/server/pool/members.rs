//! Who may form a pool: a member's registration in the pool's etcd cluster, and the quorum
//! rule every grant checks (issue 17, point 2).
//!
//! A pool license (`Binding::Pool`) names its member containers. Each member registers, for
//! each pool license it serves, a [`PoolRegistration`] its container signed (pool, license,
//! serial, the server's Noise key, the etcd cluster id) under
//! `<prefix>members/<serial>/<license id hex>`, attached to an etcd lease it keeps alive. Every
//! member watches `<prefix>members/` and counts, per license, the distinct members whose
//! registration verifies ([`PoolRegistration::verify`]: signed by the key the license's
//! binding gives that serial, for this pool, license and etcd cluster); anything else under
//! the prefix is ignored. [`Members::check`] lets a grant through only while a strict
//! majority of the license's members are registered and this member's watch is in step
//! with etcd. So a customer who splits the members into two etcd clusters gets at most one
//! side with a majority: never twice the quantity. A registration copied from one cluster
//! into another names the first cluster's id and does not count in the second.
//!
//! The check reads the watched state, never etcd: an acquire costs no extra round trip.
//! When the keep-alive or the watch fails, the member registers again at once, through
//! the next endpoint that answers, on the same lease while etcd still keeps it; meanwhile
//! it trusts what it saw as long as that lease surely lives (a lease at most), then refuses
//! grants until it has registered again and re-read the registrations.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::license::{License, PoolRegistration};
use crate::server::config::EtcdAccess;
use crate::{Error, Result};

/// Signs the registration of the hosted container `serial` for a pool license (by id) in an
/// etcd cluster (by id): the hosted container's `SignPoolMember` request.
pub type Signer = Arc<dyn Fn(&str, &[u8; 16], u64) -> Result<Vec<u8>> + Send + Sync>;

/// A pool license this member serves, and the serial of the hosted container holding it.
#[derive(Clone, Debug)]
pub struct Served {
    /// The container that signs the registration.
    pub serial: String,
    /// The pool license.
    pub license: License,
}

/// How many of a pool license's members are registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// Members with a valid registration in this etcd cluster.
    pub registered: usize,
    /// Members the license names.
    pub members: usize,
}

impl Quorum {
    /// The fewest registered members that are a strict majority.
    pub fn needed(&self) -> usize {
        self.members / 2 + 1
    }

    /// Whether a strict majority is registered.
    pub fn holds(&self) -> bool {
        self.registered >= self.needed()
    }
}

/// The watched registrations.
#[derive(Debug, Default)]
struct View {
    /// The etcd cluster the member is registered in, once known.
    cluster_id: Option<u64>,
    /// Whether the view may be trusted: in step with etcd, or just out of it.
    step: Step,
    /// Valid registrations by etcd key: the license and the member's index in its binding.
    valid: HashMap<Vec<u8>, ([u8; 16], usize)>,
    /// Why the member last fell out of step (for the refusal message).
    last_error: Option<String>,
    /// The etcd revision the view reflects.
    revision: i64,
}

/// How far the watched registrations may be trusted.
#[derive(Clone, Copy, Debug, Default)]
enum Step {
    /// Not registered, or out of step for too long: grants wait.
    #[default]
    Out,
    /// The lease is kept alive and the watch follows etcd.
    In,
    /// The connection to etcd broke and is being made again; the view stays good until
    /// then. Registrations change only through the etcd leader, so while there is none
    /// (an election) nothing was missed; otherwise the next round re-reads them. A member
    /// that left still counts here at most as long as its own lease would have kept it.
    Until(Instant),
}

impl Step {
    fn trusted(self) -> bool {
        match self {
            Step::Out => false,
            Step::In => true,
            Step::Until(t) => Instant::now() < t,
        }
    }
}

/// The member's registrations and its watch of everyone's; the background task stops when
/// this is dropped.
pub struct Members {
    prefix: String,
    served: Arc<Vec<Served>>,
    view: Arc<RwLock<View>>,
    task: JoinHandle<()>,
}

impl Drop for Members {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("prefix", &self.prefix)
            .field("served", &self.served.len())
            .finish_non_exhaustive()
    }
}

/// The key of `serial`'s registration for `license_id` under `prefix` (which ends in `/`).
pub fn member_key(prefix: &str, serial: &str, license_id: &[u8; 16]) -> String {
    format!("{prefix}members/{serial}/{}", hex::encode(license_id))
}

impl Members {
    /// Starts registering this member for each pool license of `served` (others are
    /// ignored) under `prefix` in the etcd cluster at `endpoints` (`http://host:port`), with
    /// registrations `signer` signs, on an etcd lease of `ttl`; and watching the
    /// registrations. Needs a tokio runtime.
    pub fn start(
        endpoints: Vec<String>,
        access: EtcdAccess,
        prefix: &str,
        served: Vec<Served>,
        signer: Signer,
        ttl: Duration,
    ) -> Members {
        let served: Arc<Vec<Served>> = Arc::new(
            served
                .into_iter()
                .filter(|s| s.license.binding.admits(&s.serial, None))
                .collect(),
        );
        let view = Arc::new(RwLock::new(View::default()));
        let task = tokio::spawn(register_loop(
            endpoints,
            access,
            prefix.to_string(),
            served.clone(),
            signer,
            ttl.max(Duration::from_secs(1)),
            view.clone(),
        ));
        Members {
            prefix: prefix.to_string(),
            served,
            view,
            task,
        }
    }

    /// Whether this registers exactly the pool licenses of `served` (by serial and id).
    pub fn serves(&self, served: &[Served]) -> bool {
        let ids = |v: &[Served]| {
            let mut ids: Vec<(String, [u8; 16])> = v
                .iter()
                .filter(|s| s.license.binding.admits(&s.serial, None))
                .map(|s| (s.serial.clone(), s.license.license_id))
                .collect();
            ids.sort();
            ids
        };
        ids(&self.served) == ids(served)
    }

    /// The pool licenses this member registers for, with the containers holding them.
    pub fn served(&self) -> &[Served] {
        &self.served
    }

    fn license(&self, license_id: &[u8; 16]) -> Option<&License> {
        self.served
            .iter()
            .map(|s| &s.license)
            .find(|l| l.license_id == *license_id)
    }

    /// How many members of pool license `license_id` are registered, or `None` for a license
    /// that is not one of this member's pool licenses.
    pub fn quorum(&self, license_id: &[u8; 16]) -> Option<Quorum> {
        let lic = self.license(license_id)?;
        let members = lic.binding.pool().map_or(0, |(_, m)| m.len());
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        let mut seen = vec![false; members];
        for (id, index) in view.valid.values() {
            if id == license_id && *index < members {
                seen[*index] = true;
            }
        }
        Some(Quorum {
            registered: seen.iter().filter(|s| **s).count(),
            members,
        })
    }

    /// The valid registrations this member sees now: each member's serial and the pool
    /// license it is registered for, sorted (for the admin API; forged or foreign keys under
    /// the prefix are not among them).
    pub fn registered(&self) -> Vec<(String, [u8; 16])> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, [u8; 16])> = view
            .valid
            .values()
            .filter_map(|(id, index)| {
                let (_, members) = self.license(id)?.binding.pool()?;
                Some((members.get(*index)?.0.clone(), *id))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether the member is registered and its watch in step with etcd.
    pub fn is_current(&self) -> bool {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .step
            .trusted()
    }

    /// The etcd revision the watched registrations reflect (0 before the first read).
    pub fn revision(&self) -> i64 {
        self.view.read().unwrap_or_else(|e| e.into_inner()).revision
    }

    /// The etcd cluster id the member registered in, once it has.
    pub fn cluster_id(&self) -> Option<u64> {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cluster_id
    }

    /// May this member grant a seat of `license`? Yes for a license that is not a pool
    /// license; for a pool license only while this member is in step with the pool's etcd
    /// cluster (else `Timeout`, which sends a client on to the next member of its list) and
    /// a strict majority of the license's members are registered there (else `NoLicense`,
    /// naming how many of how many are).
    pub fn check(&self, license: &License) -> Result<()> {
        let Some((pool, _)) = license.binding.pool() else {
            return Ok(());
        };
        let Some(q) = self.quorum(&license.license_id) else {
            return Err(Error::NoLicense(format!(
                "pool {pool}: this member does not register for license {}",
                license.id_hex()
            )));
        };
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        if !view.step.trusted() {
            // Transient, as a member cut off from etcd answers: a client moves on to the
            // next member of its list.
            return Err(Error::Timeout(format!(
                "pool {pool}: this member is not registered in the pool's etcd cluster ({}); it grants seats again once it is and sees a majority ({} of {}) of the members registered",
                view.last_error.as_deref().unwrap_or("registering"),
                q.needed(),
                q.members
            )));
        }
        if !q.holds() {
            return Err(Error::NoLicense(format!(
                "pool {pool}: {} of {} members are registered in this etcd cluster; a member grants seats only while a majority ({}) is",
                q.registered,
                q.members,
                q.needed()
            )));
        }
        Ok(())
    }
}

/// Reads a registration found under `key` and, when it is a valid registration of one of
/// `licenses`' members in `cluster_id`, stored under its own key, returns its license and
/// member index.
fn admit(
    prefix: &str,
    key: &[u8],
    value: &[u8],
    served: &[Served],
    cluster_id: u64,
) -> Option<([u8; 16], usize)> {
    let unverified = PoolRegistration::parse_unverified(value).ok()?;
    let lic = served
        .iter()
        .map(|s| &s.license)
        .find(|l| l.license_id == unverified.license_id)?;
    match PoolRegistration::verify(value, lic, cluster_id) {
        Ok((index, r)) if member_key(prefix, &r.serial, &r.license_id).as_bytes() == key => {
            Some((r.license_id, index))
        }
        Ok(_) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), "a pool registration under another member's key: ignored");
            None
        }
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), "an invalid pool registration: ignored ({e})");
            None
        }
    }
}

/// What one registration round leaves to the next: the lease to keep alive again instead of
/// granting another, and the registrations already signed for that cluster.
#[derive(Default)]
struct Carry {
    /// The etcd cluster the lease and the signatures are for.
    cluster_id: Option<u64>,
    /// The registration's lease, and until when it is surely alive (when the last
    /// keep-alive that etcd answered was sent, plus the TTL it answered).
    lease: Option<(i64, Instant)>,
    /// Each served license's key and signed registration.
    signed: Vec<(String, Vec<u8>)>,
    /// The endpoint the next round tries first: the first at the start, then the one after
    /// the endpoint the last round went through.
    endpoint: usize,
}

async fn register_loop(
    endpoints: Vec<String>,
    access: EtcdAccess,
    prefix: String,
    served: Arc<Vec<Served>>,
    signer: Signer,
    ttl: Duration,
    view: Arc<RwLock<View>>,
) {
    if served.is_empty() {
        return;
    }
    let mut carry = Carry::default();
    let mut retry = Duration::ZERO;
    loop {
        let Err(e) = register_and_watch(
            &endpoints, &access, &prefix, &served, &signer, ttl, &view, &mut carry,
        )
        .await;
        let was_in = {
            let mut v = view.write().unwrap_or_else(|e| e.into_inner());
            let was_in = matches!(v.step, Step::In);
            v.step = match (v.step, &e) {
                // A round that was in step falls out of it; the view stays good while the
                // lease is surely alive, a lease at most, and only then.
                (Step::In, Error::Timeout(_)) => match carry.lease {
                    Some((_, alive)) => Step::Until(alive.min(Instant::now() + ttl)),
                    None => Step::Out,
                },
                (Step::Until(t), Error::Timeout(_)) => Step::Until(t),
                // Another cluster, or the lease gone: nothing seen before holds.
                _ => Step::Out,
            };
            v.last_error = Some(e.to_string());
            was_in
        };
        tracing::warn!("pool registration: {e}; registering again");
        // The first retry at once (another endpoint may answer), then backing off: to an
        // eighth of the lease while the lease is alive, else to a quarter.
        retry = if was_in {
            Duration::ZERO
        } else if carry.lease.is_some_and(|(_, alive)| alive > Instant::now()) {
            (retry * 2).clamp(Duration::from_millis(50), ttl / 8)
        } else {
            (retry * 2).clamp(Duration::from_millis(200), ttl / 4)
        };
        tokio::time::sleep(retry).await;
    }
}

fn etcd(what: &str, e: etcd_client::Error) -> Error {
    Error::Timeout(format!("etcd {what}: {e}"))
}

/// The cluster id every endpoint of `endpoints` that answers (within `ttl / 4` in all)
/// reports,
/// through a client of its own kept in `each`; an error when none answers or two answer for
/// different clusters.
async fn one_cluster(
    endpoints: &[String],
    each: &mut [Option<Client>],
    options: &ConnectOptions,
    ttl: Duration,
) -> Result<u64> {
    let mut ids: Vec<(u64, &str)> = Vec::new();
    for (endpoint, slot) in endpoints.iter().zip(each.iter_mut()) {
        let answer = async {
            if slot.is_none() {
                *slot = Some(Client::connect([endpoint], Some(options.clone())).await?);
            }
            match slot.as_mut() {
                Some(c) => c.status().await.map(|s| s.header().map(|h| h.cluster_id())),
                None => Ok(None),
            }
        };
        let within = ttl / 4 / endpoints.len().max(1) as u32;
        match tokio::time::timeout(within.max(Duration::from_millis(100)), answer).await {
            Ok(Ok(Some(id))) => ids.push((id, endpoint)),
            _ => *slot = None,
        }
    }
    match ids.split_first() {
        None => Err(Error::Timeout(format!(
            "no etcd endpoint answered ({})",
            endpoints.join(",")
        ))),
        Some(((first, at), rest)) => match rest.iter().find(|(id, _)| id != first) {
            Some((other, there)) => Err(Error::BindingMismatch(format!(
                "the pool's etcd endpoints belong to different etcd clusters ({at}: {first:x}, {there}: {other:x}); a pool's members must share one"
            ))),
            None => Ok(*first),
        },
    }
}

/// `call` within `limit`: an etcd call that hangs (a node cut off answers nothing) ends
/// the round instead of holding it past the lease.
async fn within<T>(
    what: &str,
    limit: Duration,
    call: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| etcd(what, e)),
        Err(_) => Err(Error::Timeout(format!(
            "etcd {what}: no answer within {} ms",
            limit.as_millis()
        ))),
    }
}

/// Registers (keeping the lease `carry` holds alive, when it still is), reads every
/// registration, then keeps the lease alive and follows the watch until something fails,
/// and says why.
#[allow(clippy::too_many_arguments)]
async fn register_and_watch(
    endpoints: &[String],
    access: &EtcdAccess,
    prefix: &str,
    served: &[Served],
    signer: &Signer,
    ttl: Duration,
    view: &RwLock<View>,
    carry: &mut Carry,
) -> Result<Infallible> {
    {
        // With a leader required, a node cut off from its cluster's majority answers
        // nothing (and ends the watch) rather than stale registrations.
        let options = access.options(
            ConnectOptions::new()
                .with_connect_timeout(ttl)
                .with_keep_alive(ttl / 2, ttl)
                .with_require_leader(true),
        );
        let call = ttl / 3;
        let mut each: Vec<Option<Client>> = vec![None; endpoints.len()];
        let cluster_id = one_cluster(endpoints, &mut each, &options, ttl).await?;
        if carry.cluster_id != Some(cluster_id) {
            *carry = Carry {
                cluster_id: Some(cluster_id),
                ..Carry::default()
            };
        }
        // Registers through one endpoint that just answered for the cluster, the first at
        // the start, then the next after the last round's. A client over every endpoint sent some calls to a dead
        // node, and each such call failed the whole registration: with one etcd node down,
        // every member kept falling out of step (tests/pool_chaos.rs, the etcd leader
        // killed). When this endpoint dies, the stream ends and the next round registers
        // through another.
        let n = endpoints.len().max(1);
        let (at, mut client) = (0..n)
            .map(|k| (carry.endpoint + k) % n)
            .find_map(|i| each.get(i)?.clone().map(|c| (i, c)))
            .ok_or_else(|| Error::Timeout("no etcd endpoint answered".into()))?;
        carry.endpoint = (at + 1) % n;
        if carry.signed.is_empty() {
            for s in served {
                let signer = signer.clone();
                let (serial, id) = (s.serial.clone(), s.license.license_id);
                let bytes = tokio::task::spawn_blocking(move || signer(&serial, &id, cluster_id))
                    .await
                    .map_err(|e| Error::Internal(format!("signing the registration: {e}")))??;
                carry
                    .signed
                    .push((member_key(prefix, &s.serial, &id), bytes));
            }
        }
        // The last round's lease, when etcd still has it: the registrations on it stay
        // where they are, and no member sees this one leave and come back.
        let (mut keeper, mut alive) = match carry.lease {
            Some((id, until)) if until > Instant::now() => {
                let sent = Instant::now();
                let (mut keeper, mut alive) =
                    within("keep-alive", call, client.lease_keep_alive(id)).await?;
                within("keep-alive", call, keeper.keep_alive()).await?;
                match within("keep-alive", call, alive.message()).await? {
                    Some(r) if r.ttl() > 0 => {
                        carry.lease = Some((id, sent + Duration::from_secs(r.ttl() as u64)));
                        (keeper, alive)
                    }
                    _ => {
                        carry.lease = None;
                        return Err(Error::LeaseLost(
                            "the registration's etcd lease expired".into(),
                        ));
                    }
                }
            }
            _ => {
                // Whole seconds, rounded up (etcd raises a TTL below its minimum itself).
                let secs = ttl.as_millis().div_ceil(1000).max(1) as i64;
                let sent = Instant::now();
                let lease = within("lease grant", call, client.lease_grant(secs, None)).await?;
                carry.lease = Some((
                    lease.id(),
                    sent + Duration::from_secs(lease.ttl().max(0) as u64),
                ));
                within("keep-alive", call, client.lease_keep_alive(lease.id())).await?
            }
        };
        let Some((lease, _)) = carry.lease else {
            return Err(Error::LeaseLost("no registration lease".into()));
        };
        for (key, bytes) in &carry.signed {
            let put = client.put(
                key.as_str(),
                bytes.clone(),
                Some(PutOptions::new().with_lease(lease)),
            );
            within("put", call, put).await?;
        }
        let members = format!("{prefix}members/");
        let all = within(
            "range",
            call,
            client.get(members.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = all.header().map_or(0, |h| h.revision());
        let from = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut watch = within("watch", call, client.watch(members.as_str(), Some(from))).await?;
        {
            let mut v = view.write().unwrap_or_else(|e| e.into_inner());
            v.cluster_id = Some(cluster_id);
            v.valid = all
                .kvs()
                .iter()
                .filter_map(|kv| {
                    admit(prefix, kv.key(), kv.value(), served, cluster_id)
                        .map(|a| (kv.key().to_vec(), a))
                })
                .collect();
            v.step = Step::In;
            v.last_error = None;
            v.revision = revision;
        }
        tracing::info!(
            "pool member registered {} license(s) in etcd cluster {cluster_id:x} through {} (lease {lease:x})",
            served.len(),
            endpoints[at],
        );
        let mut tick = tokio::time::interval(ttl / 3);
        let mut ticks = 0u64;
        tick.tick().await;
        // When the keep-alive in flight was sent; it must be answered before the next.
        let mut sent: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // A stream that stalls (a node cut off, its connection not yet timed
                    // out) is left one tick after it stopped answering: the lease has
                    // two thirds left for the next round to keep it alive elsewhere.
                    if sent.is_some() {
                        return Err(Error::Timeout(format!(
                            "no keep-alive answer from etcd through {} within {} ms",
                            endpoints[at],
                            (ttl / 3).as_millis()
                        )));
                    }
                    sent = Some(Instant::now());
                    keeper.keep_alive().await.map_err(|e| etcd("keep-alive", e))?;
                    // Every endpoint must stay in this cluster: a member whose endpoints
                    // reach two clusters could count a majority in one and write seats in
                    // the other.
                    ticks += 1;
                    if endpoints.len() > 1
                        && ticks.is_multiple_of(3)
                        && one_cluster(endpoints, &mut each, &options, ttl).await? != cluster_id
                    {
                        return Err(Error::BindingMismatch(
                            "the pool's etcd endpoints now answer for another etcd cluster".into(),
                        ));
                    }
                }
                m = alive.message() => match m.map_err(|e| etcd("keep-alive", e))? {
                    Some(r) if r.ttl() > 0 => {
                        if let Some(at) = sent.take() {
                            carry.lease = Some((lease, at + Duration::from_secs(r.ttl() as u64)));
                        }
                    }
                    _ => {
                        carry.lease = None;
                        return Err(Error::LeaseLost("the registration's etcd lease expired".into()));
                    }
                },
                w = watch.message() => {
                    let Some(w) = w.map_err(|e| etcd("watch", e))? else {
                        return Err(Error::Timeout("the etcd watch ended".into()));
                    };
                    if w.canceled() {
                        return Err(Error::Timeout(format!(
                            "the etcd watch was cancelled ({})",
                            w.cancel_reason()
                        )));
                    }
                    let mut v = view.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(h) = w.header() {
                        v.revision = v.revision.max(h.revision());
                    }
                    for ev in w.events() {
                        let Some(kv) = ev.kv() else { continue };
                        match ev.event_type() {
                            EventType::Put => {
                                match admit(prefix, kv.key(), kv.value(), served, cluster_id) {
                                    Some(a) => v.valid.insert(kv.key().to_vec(), a),
                                    None => v.valid.remove(kv.key()),
                                };
                            }
                            EventType::Delete => {
                                v.valid.remove(kv.key());
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_is_more_than_half() {
        let q = |registered, members| Quorum {
            registered,
            members,
        };
        assert!(q(1, 1).holds());
        assert!(!q(0, 1).holds());
        assert!(!q(1, 2).holds());
        assert!(q(2, 2).holds());
        assert!(q(2, 3).holds());
        assert!(!q(1, 3).holds());
        assert!(!q(2, 4).holds());
        assert!(q(3, 4).holds());
        assert_eq!(q(0, 5).needed(), 3);
    }
}
