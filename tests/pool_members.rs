//! Who may form a pool (issue 17, point 2), against real etcd processes: a member grants
//! seats only while a strict majority of the pool activation's members have valid, signed
//! registrations in its etcd cluster. The split-pool attack (three members split into two
//! etcd clusters, 2 + 1), forged and copied registrations, and a one-member pool on a
//! one-node etcd.
//!
//! The members' containers are container engines the test activates with a pool activation
//! (`PublisherKey::activate_pool`); each signs its registration through the same
//! `SignPoolMember` request a hosted container answers. Time is pinned (`NOW`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera::container::Engine;
use tessera::container::engine::RequestContext;
use tessera::container::protocol::{Request, Response};
use tessera::host::{Fingerprint, MachineKind};
use tessera::license::{License, PoolRegistration};
use tessera::publisher::{LicenseSpec, PublisherKey};
use tessera::server::config::EtcdAccess;
use tessera::server::pool::members::{Members, Quorum, Served, Signer, member_key};
use tessera::{Error, license};

mod common;
use common::etcd::Etcd;
use common::server::{LEASE_MS, RENEW_MS, ServerProc};

const NOW: u64 = 1_800_000_000;
const VENDOR: u32 = 77;
/// The registrations' lease: short, so a member that stops is gone soon.
const TTL: Duration = Duration::from_secs(2);

/// A one-node etcd cluster of its own (its own ports, data folder and so cluster id),
/// started off the async runtime (`common::etcd` waits for it blocking).
async fn etcd() -> Etcd {
    tokio::task::spawn_blocking(Etcd::single).await.unwrap()
}

async fn client(etcd: &Etcd) -> etcd_client::Client {
    etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap()
}

/// A member machine's container.
struct Member {
    engine: Arc<Mutex<Engine>>,
    serial: String,
}

impl Member {
    fn new() -> Member {
        let engine = Engine::create(tessera::license::ContainerKind::Software, VENDOR, NOW);
        Member {
            serial: engine.serial().to_string(),
            engine: Arc::new(Mutex::new(engine)),
        }
    }

    fn request(&self) -> Vec<u8> {
        self.engine
            .lock()
            .unwrap()
            .activation_request(&Fingerprint::default(), MachineKind::Physical, "m", NOW)
            .unwrap()
    }

    fn install(&self, key: &PublisherKey, activation: &[u8]) {
        self.engine
            .lock()
            .unwrap()
            .install_activation(activation, Some(&key.public_key()), NOW)
            .unwrap();
    }

    /// The container's `SignPoolMember`, as a hosted container answers it.
    fn signer(&self) -> Signer {
        let engine = self.engine.clone();
        Arc::new(
            move |_serial: &str, license_id: &[u8; 16], cluster_id: u64| {
                let ctx = RequestContext {
                    now: NOW,
                    now_ms: 0,
                    host: None,
                    machine: MachineKind::Physical,
                };
                match engine.lock().unwrap().handle(
                    Request::SignPoolMember {
                        license_id: *license_id,
                        server_key: [9; 32],
                        cluster_id,
                    },
                    &ctx,
                ) {
                    (Response::PoolRegistration(r), _) => Ok(r),
                    (other, _) => Err(Error::Internal(format!("{other:?}"))),
                }
            },
        )
    }

    /// Starts registering in `etcd` for `license` under `prefix`.
    async fn join(&self, etcd: &Etcd, prefix: &str, license: &License) -> Members {
        self.join_at(etcd.endpoints(), prefix, license)
    }

    /// Starts registering through the etcd endpoints `endpoints` (`host:port`).
    fn join_at(&self, endpoints: Vec<String>, prefix: &str, license: &License) -> Members {
        self.join_for(endpoints, prefix, license, TTL)
    }

    /// As `join_at`, on a registration lease of `ttl`.
    fn join_for(
        &self,
        endpoints: Vec<String>,
        prefix: &str,
        license: &License,
        ttl: Duration,
    ) -> Members {
        Members::start(
            endpoints.iter().map(|e| format!("http://{e}")).collect(),
            EtcdAccess::default(),
            prefix,
            vec![Served {
                serial: self.serial.clone(),
                license: license.clone(),
            }],
            self.signer(),
            ttl,
        )
    }
}

fn spec(quantity: u32) -> LicenseSpec {
    LicenseSpec {
        product_code: 5,
        product_name: "Pooled".into(),
        features: 1,
        quantity,
        counting_unit: license::CountingUnit::Station,
        exclusive_allowed: false,
        borrow_days: 0,
        expiry: None,
        vm_policy: license::VmPolicy::Allow,
    }
}

/// A pool `name` of `n` new members, activated and installed; returns them and the license.
fn pool(key: &PublisherKey, name: &str, n: usize) -> (Vec<Member>, License) {
    let members: Vec<Member> = (0..n).map(|_| Member::new()).collect();
    let reqs: Vec<Vec<u8>> = members.iter().map(Member::request).collect();
    let acts = key.activate_pool(name, &reqs, &[spec(3)], NOW).unwrap();
    for (m, (serial, act)) in members.iter().zip(&acts) {
        assert_eq!(*serial, m.serial);
        m.install(key, act);
    }
    let lic = members[0].engine.lock().unwrap().licenses()[0].clone();
    (members, lic)
}

/// Waits (up to 30 s) until `m` is in step with etcd and sees `registered` members of
/// `lic` registered; panics with what it saw otherwise.
async fn settle(m: &Members, lic: &License, registered: usize) -> Quorum {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = m.quorum(&lic.license_id).unwrap();
        if m.is_current() && q.registered == registered {
            return q;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {registered} registered, have {q:?} (current: {})",
            m.is_current()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_member_pool_on_a_one_node_etcd_grants() {
    let key = PublisherKey::generate(VENDOR, "Acme");
    let (members, lic) = pool(&key, "solo", 1);
    let etcd = etcd().await;
    let m = members[0].join(&etcd, "/tessera/solo/", &lic).await;
    let q = settle(&m, &lic, 1).await;
    assert_eq!(
        q,
        Quorum {
            registered: 1,
            members: 1
        }
    );
    m.check(&lic).unwrap();
    assert_eq!(
        m.registered(),
        vec![(members[0].serial.clone(), lic.license_id)]
    );
    // Its registration is in etcd, under its key, and verifies for this cluster.
    let mut c = client(&etcd).await;
    let got = c
        .get(
            member_key("/tessera/solo/", &members[0].serial, &lic.license_id),
            None,
        )
        .await
        .unwrap();
    let (index, reg) =
        PoolRegistration::verify(got.kvs()[0].value(), &lic, m.cluster_id().unwrap()).unwrap();
    assert_eq!((index, reg.pool.as_str()), (0, "solo"));
    assert_ne!(got.kvs()[0].lease(), 0, "the registration lives on a lease");
}

/// The split-pool attack: three members split into two etcd clusters (2 + 1). Only the side
/// with two members grants; the lone member refuses, naming 1 of 3, even when the customer
/// copies a registration of the other side into its cluster. When a member of the majority
/// side stops, its registration goes with its lease and that side refuses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_pool_grants_on_the_majority_side_only() {
    let key = PublisherKey::generate(VENDOR, "Acme");
    let (members, lic) = pool(&key, "site", 3);
    let (a, b) = (etcd().await, etcd().await);
    let prefix = "/tessera/site/";
    let m0 = members[0].join(&a, prefix, &lic).await;
    let m1 = members[1].join(&a, prefix, &lic).await;
    let m2 = members[2].join(&b, prefix, &lic).await;
    settle(&m0, &lic, 2).await;
    settle(&m1, &lic, 2).await;
    settle(&m2, &lic, 1).await;
    assert_ne!(m0.cluster_id(), m2.cluster_id());
    m0.check(&lic).unwrap();
    m1.check(&lic).unwrap();
    let e = m2.check(&lic).unwrap_err();
    assert!(matches!(e, Error::NoLicense(_)), "{e:?}");
    assert!(e.to_string().contains("1 of 3 members"), "{e}");
    assert!(e.to_string().contains("majority (2)"), "{e}");

    // The customer copies both registrations of cluster a into cluster b, under their keys.
    let mut ca = client(&a).await;
    let mut cb = client(&b).await;
    for m in &members[..2] {
        let k = member_key(prefix, &m.serial, &lic.license_id);
        let v = ca.get(k.as_str(), None).await.unwrap().kvs()[0]
            .value()
            .to_vec();
        cb.put(k.as_str(), v, None).await.unwrap();
    }
    // m2 has seen the copies and still counts only itself.
    let revision = cb
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    seen(&m2, revision).await;
    assert_eq!(settle(&m2, &lic, 1).await.registered, 1);
    assert!(m2.check(&lic).is_err());

    // A member of the majority side stops: its lease runs out, and the side refuses.
    drop(m1);
    let q = settle(&m0, &lic, 1).await;
    assert!(!q.holds());
    let e = m0.check(&lic).unwrap_err();
    assert!(e.to_string().contains("1 of 3 members"), "{e}");
}

/// A member whose etcd endpoints reach two clusters (it could count a majority in one and
/// write seats in the other) does not register and refuses, naming both clusters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_endpoints_reach_two_etcd_clusters_refuses() {
    let key = PublisherKey::generate(VENDOR, "Acme");
    let (members, lic) = pool(&key, "site", 1);
    let (a, b) = (etcd().await, etcd().await);
    let endpoints = [a.endpoints(), b.endpoints()].concat();
    let m = members[0].join_at(endpoints, "/tessera/site/", &lic);
    let deadline = Instant::now() + Duration::from_secs(30);
    let e = loop {
        let e = m.check(&lic).expect_err("a member on two clusters granted");
        if e.to_string().contains("different etcd clusters") {
            break e;
        }
        assert!(Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert!(!m.is_current());
    // It wrote no registration in either cluster.
    for etcd in [&a, &b] {
        let got = client(etcd)
            .await
            .get(
                "/tessera/site/members/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        assert!(got.kvs().is_empty());
    }
}

/// Waits (up to 30 s) until `m`'s watch has reached etcd revision `revision`.
async fn seen(m: &Members, revision: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.revision() < revision {
        assert!(
            Instant::now() < deadline,
            "the watch stays at {}",
            m.revision()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(c: &etcd_client::Client, k: String, v: Vec<u8>) -> i64 {
    let r = c.clone().put(k, v, None).await.unwrap();
    r.header().unwrap().revision()
}

/// Registrations that do not count: signed by a key that is not a member's (under a member's
/// serial or its own), a member's registration for another pool, one stored under another
/// member's key, and garbage. A genuine second member makes a majority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_registrations_do_not_count() {
    let key = PublisherKey::generate(VENDOR, "Acme");
    let (members, lic) = pool(&key, "site", 3);
    // Members 1 and 2 are also the members of another pool.
    let reqs: Vec<Vec<u8>> = members[1..].iter().map(Member::request).collect();
    let acts = key.activate_pool("other", &reqs, &[spec(3)], NOW).unwrap();
    for (m, (_, act)) in members[1..].iter().zip(&acts) {
        m.install(&key, act);
    }
    let other_lic = members[1].engine.lock().unwrap().licenses()[1].clone();
    assert_ne!(other_lic.license_id, lic.license_id);

    let etcd = etcd().await;
    let prefix = "/tessera/site/";
    let m0 = members[0].join(&etcd, prefix, &lic).await;
    settle(&m0, &lic, 1).await;
    let cluster = m0.cluster_id().unwrap();
    let mut c = client(&etcd).await;

    // Member 1's registration as a stranger signs it.
    let stranger = Member::new();
    let genuine = |m: &Member, l: &License| (m.signer())("", &l.license_id, cluster).unwrap();
    let mine = PoolRegistration::parse_unverified(&genuine(&members[1], &lic)).unwrap();
    let forged = mine
        .sign(&ed25519_dalek::SigningKey::from_bytes(&[3; 32]))
        .unwrap();
    put(
        &c,
        member_key(prefix, &members[1].serial, &lic.license_id),
        forged,
    )
    .await;
    // A stranger's own registration: its container holds no pool license, so it is made
    // by hand and signed with a key the pool does not name.
    let mut theirs = mine.clone();
    theirs.serial = stranger.serial.clone();
    let theirs = theirs
        .sign(&ed25519_dalek::SigningKey::from_bytes(&[4; 32]))
        .unwrap();
    put(
        &c,
        member_key(prefix, &stranger.serial, &lic.license_id),
        theirs,
    )
    .await;
    // Member 2's genuine registration for the other pool, under this pool's key for it.
    put(
        &c,
        member_key(prefix, &members[2].serial, &lic.license_id),
        genuine(&members[2], &other_lic),
    )
    .await;
    // Member 1's genuine registration, under another key (it would count twice).
    let m1_reg = genuine(&members[1], &lic);
    put(
        &c,
        format!("{prefix}members/{}/{}", members[2].serial, "00".repeat(16)),
        m1_reg.clone(),
    )
    .await;
    // Garbage.
    put(&c, format!("{prefix}seats/whatever"), m1_reg.clone()).await;
    let last = put(
        &c,
        format!("{prefix}members/garbage"),
        b"not a registration".to_vec(),
    )
    .await;

    // None of it counts: m0 has seen it all and still counts itself only, and refuses.
    seen(&m0, last).await;
    assert_eq!(settle(&m0, &lic, 1).await.registered, 1);
    assert_eq!(
        m0.registered(),
        vec![(members[0].serial.clone(), lic.license_id)]
    );
    let e = m0.check(&lic).unwrap_err();
    assert!(e.to_string().contains("1 of 3 members"), "{e}");

    // Member 1's genuine registration, put by hand under its key, counts: 2 of 3.
    put(
        &c,
        member_key(prefix, &members[1].serial, &lic.license_id),
        m1_reg,
    )
    .await;
    settle(&m0, &lic, 2).await;
    m0.check(&lic).unwrap();
    c.delete(
        member_key(prefix, &members[1].serial, &lic.license_id),
        None,
    )
    .await
    .unwrap();
    settle(&m0, &lic, 1).await;
    // Member 1 registers itself: 2 of 3 again.
    let m1 = members[1].join(&etcd, prefix, &lic).await;
    settle(&m1, &lic, 2).await;
    settle(&m0, &lic, 2).await;
    m0.check(&lic).unwrap();
    m1.check(&lic).unwrap();
    // A license that is not a pool license is not the quorum's business.
    let req = stranger.request();
    stranger.install(&key, &key.activate(&req, &[spec(1)], NOW).unwrap());
    let single = stranger.engine.lock().unwrap().licenses()[0].clone();
    m0.check(&single).unwrap();
}

/// A `tessera-server` pool member in its own state folder, hosting the container in `home`,
/// on the etcd cluster `etcd` (pool `split`).
fn server_member(
    dir: &std::path::Path,
    etcd: &Etcd,
    i: usize,
    home: &std::path::Path,
) -> ServerProc {
    let state = dir.join(format!("state-{i}"));
    let endpoints: Vec<String> = etcd.endpoints().iter().map(|e| format!("{e:?}")).collect();
    let config = format!(
        "name = \"m{i}\"\nlisten = [\"127.0.0.1:0\"]\ndiscovery = false\ndongles = false\n\
         state_dir = {state:?}\nhome = {home:?}\nlease_ms = {LEASE_MS}\nrenew_ms = {RENEW_MS}\n\
         fsync = false\nadmin_listen = \"127.0.0.1:0\"\n[pool]\nendpoints = [{}]\nname = \"split\"\n",
        endpoints.join(", ")
    );
    let file = dir.join(format!("member-{i}.toml"));
    std::fs::write(&file, config).unwrap();
    ServerProc::start_wrapped(&state, home, 0, &["--config", file.to_str().unwrap()], &[])
}

/// The split-pool attack with real servers: a pool activation of three member machines
/// (three containers, one license of 2 seats), its members started on two separate etcd
/// clusters, two on one and one on the other. Clients of the two-member side get the
/// license's two seats and no more; clients of the lone member are refused, told 1 of 3
/// members are registered; so the total granted never exceeds the quantity.
#[test]
fn a_split_pool_of_servers_grants_the_quantity_once() {
    use tessera::client::{Session, SessionOptions, sources};
    use tessera::client::{install_activation, request_activation};

    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "Acme");
    let homes: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("home-{i}")))
        .collect();
    let reqs: Vec<Vec<u8>> = homes
        .iter()
        .map(|h| request_activation(&common::env_in(h), VENDOR).unwrap().1)
        .collect();
    let now = tessera::util::now();
    let acts = key.activate_pool("split", &reqs, &[spec(2)], now).unwrap();
    for (h, (_, act)) in homes.iter().zip(&acts) {
        install_activation(&common::env_in(h), act, Some(&key.public_key())).unwrap();
    }
    let (a, b) = (Etcd::single(), Etcd::single());
    let servers = [
        server_member(dir.path(), &a, 0, &homes[0]),
        server_member(dir.path(), &a, 1, &homes[1]),
        server_member(dir.path(), &b, 2, &homes[2]),
    ];
    let session = |name: &str, member: usize| {
        let mut o = SessionOptions::new(VENDOR, key.public_key());
        o.sources = sources::NETWORK;
        o.servers = vec![servers[member].addr.clone()];
        o.timeout = Duration::from_secs(3);
        Session::open_in(
            o,
            tessera::client::Environment {
                home: dir.path().join(format!("client-{name}")),
                host: tessera::host::HostIdentity::simulated(name),
                clock: Arc::new(tessera::util::SystemClock),
            },
        )
        .unwrap()
    };
    // Once both members of cluster a have registered, each grants a seat.
    let mut held = Vec::new();
    for (name, member) in [("left-0", 0), ("left-1", 1)] {
        let s = session(name, member);
        let deadline = Instant::now() + Duration::from_secs(30);
        let seat = loop {
            match s.acquire(5, 0, false) {
                Ok(seat) => break seat,
                Err(e) => {
                    assert!(
                        e.to_string().contains("registered"),
                        "only a missing registration may refuse: {e}"
                    );
                    assert!(Instant::now() < deadline, "m{member} never granted: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        assert_eq!(
            seat.info().unwrap().server.as_deref(),
            Some(format!("m{member}").as_str())
        );
        held.push((s, seat));
    }
    // The quantity is reached on the majority side.
    let more = session("left-2", 0);
    assert!(matches!(
        more.acquire(5, 0, false),
        Err(Error::NoSeat { quantity: 2 })
    ));
    // The lone member refuses, naming how many members are registered, once it has
    // registered itself; it never grants.
    let lone = session("right", 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    let e = loop {
        let e = lone
            .acquire(5, 0, false)
            .expect_err("the lone member granted a seat");
        if e.to_string().contains("1 of 3 members") || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(matches!(e, Error::NoLicense(_)), "{e:?}");
    assert!(
        e.to_string().contains("1 of 3 members are registered"),
        "{e}"
    );
    assert!(e.to_string().contains("majority (2)"), "{e}");
    // No seat in cluster b; two in cluster a.
    let seats = |etcd: &Etcd| {
        let out = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/tessera/split/seats/"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    assert_eq!(seats(&a), 2);
    assert_eq!(seats(&b), 0);
    drop(held);
}

/// Each registration under `prefix` in `etcd` (through the live endpoint `at`): its key and
/// lease.
async fn registration_leases(endpoint: &str, prefix: &str) -> Vec<(Vec<u8>, i64)> {
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let opts = etcd_client::GetOptions::new().with_prefix();
    let all = c
        .get(format!("{prefix}members/"), Some(opts))
        .await
        .unwrap();
    all.kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.lease()))
        .collect()
}

/// Three members on a three-node etcd, each through all three endpoints: all see 3 of 3.
/// With the etcd leader killed, the cluster keeps a majority of nodes, and every member
/// grants throughout: its registration lives on its lease through the election, and a
/// member whose connection broke keeps its view while that lease surely lives, and keeps
/// the lease alive again through another node (so no member is seen leaving and coming
/// back). Every member goes through the leader, the node killed. CI once saw every member refuse for longer than a lease here (tests/pool_chaos.rs,
/// fault (b)): each dropped its view the moment its stream broke. A member stopped drops
/// out with its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_a_three_node_etcd_keep_granting_when_the_leader_dies() {
    let key = PublisherKey::generate(VENDOR, "Acme");
    let (members, lic) = pool(&key, "trio", 3);
    let mut etcd = tokio::task::spawn_blocking(|| Etcd::cluster(3))
        .await
        .unwrap();
    let prefix = "/tessera/trio/";
    // The chaos test's lease: 4.5 s (registered as 5 s).
    let ttl = Duration::from_millis(4500);
    // Every member registers through the leader: its first endpoint.
    let leader = etcd.leader().expect("a leader");
    let mut endpoints = etcd.endpoints();
    endpoints.rotate_left(leader);
    let m: Vec<Members> = members
        .iter()
        .map(|x| x.join_for(endpoints.clone(), prefix, &lic, ttl))
        .collect();
    for x in &m {
        settle(x, &lic, 3).await;
        x.check(&lic).unwrap();
    }
    let survivor = endpoints[1].clone();
    let before = registration_leases(&survivor, prefix).await;
    assert_eq!(before.len(), 3, "{before:?}");
    let killed = Instant::now();
    etcd.kill(leader);
    // Two leases long, every member is asked every 20 ms.
    let mut refusals = Vec::new();
    while killed.elapsed() < 2 * ttl {
        for (i, x) in m.iter().enumerate() {
            if let Err(e) = x.check(&lic) {
                refusals.push(format!("member {i} at {:?}: {e}", killed.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refusals.is_empty(),
        "{} refusals after the leader died, the first: {:?}",
        refusals.len(),
        refusals.first()
    );
    for x in &m {
        settle(x, &lic, 3).await;
    }
    let after = registration_leases(&survivor, prefix).await;
    assert_eq!(before, after, "the registrations moved to new leases");
    let mut m = m;
    drop(m.pop());
    drop(m.pop());
    let q = settle(&m[0], &lic, 1).await;
    assert_eq!(q.needed(), 2);
    assert!(m[0].check(&lic).is_err());
}

/// A pool license is served only by pool members: a member machine's server run as a single
/// server (no `--pool`) refuses it, and so does the member's container to a local app (each
/// would count seats of its own, `quantity` per member machine). The same machine as the
/// one member of a one-member pool, on a one-node etcd, grants.
#[test]
fn a_pool_license_is_served_only_by_pool_members() {
    use tessera::client::{
        Session, SessionOptions, install_activation, request_activation, sources,
    };

    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "Acme");
    let home = dir.path().join("home");
    let env = common::env_in(&home);
    let req = request_activation(&env, VENDOR).unwrap().1;
    let acts = key
        .activate_pool("solo", &[req], &[spec(2)], tessera::util::now())
        .unwrap();
    install_activation(&env, &acts[0].1, Some(&key.public_key())).unwrap();

    // A local app on the member machine.
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::SOFTWARE;
    let local = Session::open_in(o, common::env_in(&home)).unwrap();
    let e = local
        .acquire(5, 0, false)
        .expect_err("a local seat of a pool license");
    assert!(e.to_string().contains("belongs to pool solo"), "{e}");

    // The member's server without --pool.
    let server = ServerProc::start(&dir.path().join("state"), &home, 0);
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![server.addr.clone()];
    o.timeout = Duration::from_secs(3);
    let client = Session::open_in(
        o,
        tessera::client::Environment {
            home: dir.path().join("client"),
            host: tessera::host::HostIdentity::simulated("client"),
            clock: Arc::new(tessera::util::SystemClock),
        },
    )
    .unwrap();
    let e = client
        .acquire(5, 0, false)
        .expect_err("a single server granted a pool license");
    assert!(matches!(e, Error::NoLicense(_)), "{e:?}");
    assert!(e.to_string().contains("only a pool member"), "{e}");
    drop(client);
    drop(server);

    // The same machine as the one member of its pool, on a one-node etcd, grants.
    let etcd = Etcd::single();
    let member = server_member(dir.path(), &etcd, 0, &home);
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![member.addr.clone()];
    o.timeout = Duration::from_secs(3);
    let client = Session::open_in(
        o,
        tessera::client::Environment {
            home: dir.path().join("client-2"),
            host: tessera::host::HostIdentity::simulated("client-2"),
            clock: Arc::new(tessera::util::SystemClock),
        },
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seat = loop {
        match client.acquire(5, 0, false) {
            Ok(seat) => break seat,
            Err(e) => {
                assert!(e.to_string().contains("regist"), "{e}");
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(seat.info().unwrap().server.as_deref(), Some("m0"));
}
