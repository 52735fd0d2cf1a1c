//! Who may form a pool (issue 17, point 2), against real etcd processes: a member grants
//! seats only while a strict majority of the pool activation's members have valid, signed
//! registrations in its etcd cluster. The split-pool attack (three members split into two
//! etcd clusters, 2 + 1), forged and copied registrations, and a one-member pool on a
//! one-node etcd.
//!
//! The members' containers are container engines the test activates with a pool activation
//! (`PublisherKey::activate_pool`); each signs its registration through the same
//! `SignPoolMember` request a hosted container answers. Time is pinned (`NOW`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera::container::Engine;
use tessera::container::engine::RequestContext;
use tessera::container::protocol::{Request, Response};
use tessera::host::{Fingerprint, MachineKind};
use tessera::license::{License, PoolRegistration};
use tessera::publisher::{LicenseSpec, PublisherKey};
use tessera::server::pool::members::{Members, Quorum, Signer, member_key};
use tessera::{Error, license};

const NOW: u64 = 1_800_000_000;
const VENDOR: u32 = 77;
/// The registrations' lease: short, so a member that stops is gone soon.
const TTL: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-node etcd cluster of its own (its own ports, data folder and cluster id), killed
/// on drop, also when a test fails.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    async fn start(name: &str) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer_url}"))
            .arg("--initial-cluster-token")
            .arg(format!("{name}-{}", std::process::id()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).unwrap());
        if std::env::consts::ARCH != "x86_64" {
            cmd.env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        }
        let etcd = Etcd {
            child: cmd.spawn().expect("etcd (scripts/install-deps.sh)"),
            endpoint: format!("127.0.0.1:{client}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([&etcd.endpoint], None).await
                && c.status().await.is_ok()
            {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd {name} did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([&self.endpoint], None)
            .await
            .unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
        Arc::new(move |license_id: &[u8; 16], cluster_id: u64| {
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
        })
    }

    /// Starts registering in `etcd` for `license` under `prefix`.
    async fn join(&self, etcd: &Etcd, prefix: &str, license: &License) -> Members {
        Members::start(
            etcd.client().await,
            prefix,
            &self.serial,
            vec![license.clone()],
            self.signer(),
            TTL,
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
    let etcd = Etcd::start("solo").await;
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
    // Its registration is in etcd, under its key, and verifies for this cluster.
    let mut c = etcd.client().await;
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
    let (a, b) = (Etcd::start("a").await, Etcd::start("b").await);
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
    let mut ca = a.client().await;
    let mut cb = b.client().await;
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

    let etcd = Etcd::start("forge").await;
    let prefix = "/tessera/site/";
    let m0 = members[0].join(&etcd, prefix, &lic).await;
    settle(&m0, &lic, 1).await;
    let cluster = m0.cluster_id().unwrap();
    let mut c = etcd.client().await;

    // Member 1's registration as a stranger signs it.
    let stranger = Member::new();
    let genuine = |m: &Member, l: &License| (m.signer())(&l.license_id, cluster).unwrap();
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
