//! The license-server pool on etcd (issue 17), with real processes: etcd nodes started here
//! (tests/common/etcd.rs), three `tessera-server` members in pool mode, clients as sessions.
//!
//! Until pool activations exist, every member hosts a copy of one software container (the
//! same license): each member runs with a private `/dev/shm`, where the machine-wide hosting
//! lock lives (`common::server::PRIVATE_SHM`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tessera::Error;
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::{LicenseSpec, PublisherKey};
use tessera::util::SystemClock;

mod common;
use common::etcd::{Certs, Etcd};
use common::server::{LEASE_MS, RENEW_MS, ServerProc, copy_dir, pool_member, pool_member_with};
use common::spec;

const VENDOR: u32 = 0x71;

struct Pool {
    dir: tempfile::TempDir,
    key: PublisherKey,
    members: Vec<ServerProc>,
    etcd: Etcd,
}

/// `n` members named `m0`, `m1`, ... on `etcd`, each hosting a copy of one container with
/// `specs`; configured by TOML files (`[pool]`).
fn pool(etcd: Etcd, specs: &[LicenseSpec], n: usize) -> Pool {
    pool_leased(etcd, specs, n, (LEASE_MS, RENEW_MS))
}

/// [`pool`] with leases of `lease.0` ms renewed every `lease.1` ms.
fn pool_leased(etcd: Etcd, specs: &[LicenseSpec], n: usize, lease: (u64, u64)) -> Pool {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "pool tests");
    let home0 = dir.path().join("home-0");
    common::activate(&common::env_in(&home0), &key, specs);
    let mut members = Vec::new();
    for i in 0..n {
        let home = dir.path().join(format!("home-{i}"));
        if i > 0 {
            copy_dir(&home0, &home);
        }
        members.push(member(dir.path(), &etcd, i, &home, lease));
    }
    Pool {
        dir,
        key,
        members,
        etcd,
    }
}

fn member(dir: &Path, etcd: &Etcd, i: usize, home: &Path, lease: (u64, u64)) -> ServerProc {
    member_on(dir, &etcd.endpoints(), i, home, lease)
}

/// Member `m<i>` on the etcd endpoints `endpoints`, on a port of its own (kept across a
/// restart).
fn member_on(
    dir: &Path,
    endpoints: &[String],
    i: usize,
    home: &Path,
    lease: (u64, u64),
) -> ServerProc {
    let (lease_ms, renew_ms) = lease;
    pool_member(
        dir,
        endpoints,
        "test",
        &format!("m{i}"),
        home,
        common::etcd::free_port(),
        &format!("lease_ms = {lease_ms}\nrenew_ms = {renew_ms}"),
    )
}

fn client_env(p: &Pool, name: &str) -> Environment {
    Environment {
        home: p.dir.path().join(format!("client-{name}")),
        host: HostIdentity::simulated(name),
        clock: Arc::new(SystemClock),
    }
}

/// A session of the client host `name` on the members `servers` (in that order).
fn session(p: &Pool, name: &str, servers: &[usize]) -> Session {
    let mut o = SessionOptions::new(VENDOR, p.key.public_key());
    o.sources = sources::NETWORK;
    o.servers = servers.iter().map(|&i| p.members[i].addr.clone()).collect();
    o.timeout = Duration::from_secs(3);
    Session::open_in(o, client_env(p, name)).unwrap()
}

/// The seat ids the pool holds in etcd now (hex).
fn seats_in_etcd(p: &Pool) -> HashSet<String> {
    let out = p
        .etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "/tessera/test/seats/"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .collect()
}

/// Polls `cond` every 50 ms for at most `within`.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn clients_racing_through_three_members_never_get_more_than_the_quantity() {
    let p = pool(Etcd::single(), &[spec(1, 5, CountingUnit::Station)], 3);
    let granted = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(Barrier::new(18));
    let p = Arc::new(p);
    let threads: Vec<_> = (0..18)
        .map(|i| {
            let p = Arc::clone(&p);
            let granted = Arc::clone(&granted);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let s = session(&p, &format!("racer-{i}"), &[i % 3]);
                barrier.wait();
                match s.acquire(1, 0, false) {
                    Ok(seat) => {
                        granted.fetch_add(1, Ordering::SeqCst);
                        Some((s, seat))
                    }
                    Err(Error::NoSeat { quantity: 5 }) => None,
                    Err(e) => panic!("racer {i}: {e}"),
                }
            })
        })
        .collect();
    let held: Vec<_> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    // On a failure: each granted seat as its holder sees it now (a seat whose etcd lease
    // lapsed under load says LEASE_LOST) and the seats etcd holds, to tell an over-grant
    // from a lapse.
    let report = || {
        let seats: Vec<String> = held
            .iter()
            .map(|(_, seat)| format!("{:?}", seat.info().map(|i| (i.server, i.in_use))))
            .collect();
        format!("held: {seats:?}; in etcd: {:?}", seats_in_etcd(&p))
    };
    assert_eq!(
        granted.load(Ordering::SeqCst),
        5,
        "exactly the quantity: {}",
        report()
    );
    assert_eq!(held.len(), 5);
    assert_eq!(seats_in_etcd(&p).len(), 5);
    // Every member counts the pool's seats, and names itself.
    let names: HashSet<String> = held
        .iter()
        .map(|(_, seat)| {
            // A seat answers from its last values while its connection is busy (its
            // lease keeper renewing): the grant's count, then the pool's.
            assert!(
                eventually(Duration::from_secs(10), || seat.info().unwrap().in_use == 5),
                "the pool's count, whatever the member: {:?}",
                seat.info()
            );
            seat.info().unwrap().server.unwrap()
        })
        .collect();
    assert!(
        names
            .iter()
            .all(|n| ["m0", "m1", "m2"].contains(&n.as_str()))
    );
    // A release on one member frees a seat for a client of another.
    let mut held = held;
    let (s0, seat0) = held.remove(0);
    let member_of_first = seat0.info().unwrap().server.unwrap();
    drop(seat0);
    drop(s0);
    let other = ["m0", "m1", "m2"]
        .iter()
        .position(|m| *m != member_of_first)
        .unwrap();
    let late = session(&p, "late", &[other]);
    let seat = late.acquire(1, 0, false).expect("the released seat");
    assert_eq!(seat.info().unwrap().in_use, 5);
    let later = session(&p, "later", &[(other + 1) % 3]);
    assert!(matches!(
        later.acquire(1, 0, false),
        Err(Error::NoSeat { .. })
    ));
    assert_eq!(seats_in_etcd(&p).len(), 5);
    drop(held);
}

/// Encrypts with `seat` until it fails (at most 10 s); the error.
fn failure_of(seat: &tessera::client::Seat) -> Error {
    let mut buf = vec![0u8; 200];
    let mut err = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            match seat.encrypt(tessera::cipher::Mode::Derived, b"still licensed?", &mut buf) {
                Ok(_) => false,
                Err(e) => {
                    err = Some(e);
                    true
                }
            }
        }),
        "the seat kept working"
    );
    err.unwrap()
}

#[test]
fn a_revoke_from_any_member_frees_the_seat_and_its_holder_learns_it() {
    use common::http::{local_bearer, request};
    let p = pool(Etcd::single(), &[spec(1, 1, CountingUnit::Handle)], 3);
    let a = session(&p, "host-a", &[0]);
    let seat = a.acquire(1, 0, false).unwrap();
    let ids = seats_in_etcd(&p);
    assert_eq!(ids.len(), 1);
    let id = ids.into_iter().next().unwrap();
    let b = session(&p, "host-b", &[1]);
    assert!(matches!(b.acquire(1, 0, false), Err(Error::NoSeat { .. })));

    // Revoked through a member that never served it.
    let admin = p.members[2].admin.clone();
    let bearer = local_bearer(&admin);
    let path = format!("/api/v1/seats/{id}/revoke");
    let body = br#"{"reason": "moved to the night shift"}"#;
    let r = request(&admin, "POST", &path, &[("Authorization", &bearer)], body);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["revoked"], id.as_str());
    assert!(seats_in_etcd(&p).is_empty());
    // The holder learns it at its next renewal, from the member that serves it, with the
    // reason the administrator gave on another member.
    let e = failure_of(&seat);
    assert!(matches!(e, Error::LeaseLost(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("revoked by an administrator")
            && text.ends_with(": moved to the night shift"),
        "{text}"
    );
    // Its slot is free for a client of another member.
    let seat_b = b.acquire(1, 0, false).expect("the revoked seat's slot");
    assert_eq!(seat_b.info().unwrap().server.as_deref(), Some("m1"));
    // Revoked once: a second revoke finds nothing.
    let again = request(&admin, "POST", &path, &[("Authorization", &bearer)], b"");
    assert_eq!(again.status, 404, "{again:?}");
}

/// Whether `seat` encrypts now.
fn works(seat: &tessera::client::Seat) -> bool {
    let mut buf = vec![0u8; 200];
    seat.encrypt(tessera::cipher::Mode::Derived, b"licensed", &mut buf)
        .is_ok()
}

#[test]
fn a_killed_members_clients_reattach_to_another_member_and_keep_their_seats() {
    let mut p = pool(Etcd::single(), &[spec(1, 3, CountingUnit::Station)], 3);
    // Three clients listing every member, all served by m0 (the first).
    let clients: Vec<Session> = (0..3)
        .map(|i| session(&p, &format!("holder-{i}"), &[0, 1, 2]))
        .collect();
    let seats: Vec<_> = clients
        .iter()
        .map(|s| s.acquire(1, 0, false).unwrap())
        .collect();
    for seat in &seats {
        assert_eq!(seat.info().unwrap().server.as_deref(), Some("m0"));
    }
    let outsider = session(&p, "outsider", &[2]);
    assert!(matches!(
        outsider.acquire(1, 0, false),
        Err(Error::NoSeat { .. })
    ));

    p.members[0].kill9();
    // While they re-attach, and after, the pool never grants a fourth station.
    let mut refused = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3 * LEASE_MS) {
        match outsider.acquire(1, 0, false) {
            Err(Error::NoSeat { .. }) => refused += 1,
            Ok(_) => panic!("a fourth seat was granted while the pool held three"),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused > 0);
    // Each kept its seat, now served by another member, well past the dead member's leases.
    for seat in &seats {
        assert!(works(seat), "a re-attached seat works");
        let info = seat.info().unwrap();
        assert_ne!(
            info.server.as_deref(),
            Some("m0"),
            "served by a live member"
        );
        assert_eq!(info.in_use, 3);
    }
    assert_eq!(seats_in_etcd(&p).len(), 3);
    // A release through the new member frees a slot for the outsider.
    drop(seats);
    drop(clients);
    assert!(eventually(Duration::from_secs(5), || outsider
        .acquire(1, 0, false)
        .is_ok()));
}

#[test]
fn an_exclusive_seat_holds_the_license_across_members() {
    let mut ex = spec(1, 4, CountingUnit::Station);
    ex.exclusive_allowed = true;
    let p = pool(Etcd::single(), &[ex], 2);
    let a = session(&p, "host-a", &[0]);
    let b = session(&p, "host-b", &[1]);
    let seat = a.acquire(1, 0, true).expect("exclusive");
    assert!(matches!(
        b.acquire(1, 0, false),
        Err(Error::ExclusiveDenied(_))
    ));
    drop(seat);
    let shared = b.acquire(1, 0, false).expect("free again");
    assert!(matches!(
        a.acquire(1, 0, true),
        Err(Error::ExclusiveDenied(_))
    ));
    drop(shared);
}

#[test]
fn the_pool_keeps_serving_when_the_etcd_leader_is_killed() {
    let mut p = pool_leased(
        Etcd::cluster(3),
        &[spec(1, 2, CountingUnit::Station)],
        2,
        (6000, 500),
    );
    let a = session(&p, "host-a", &[0, 1]);
    let seat = a.acquire(1, 0, false).unwrap();
    assert_eq!(seat.info().unwrap().server.as_deref(), Some("m0"));
    let leader = p.etcd.leader().expect("a leader");
    p.etcd.kill(leader);
    // Served again once the other two nodes elected a leader: a second station gets a seat
    // (a transient error meanwhile, never a refusal).
    let b = session(&p, "host-b", &[1, 0]);
    let mut granted = None;
    assert!(
        eventually(Duration::from_secs(20), || match b.acquire(1, 0, false) {
            Ok(s) => {
                granted = Some(s);
                true
            }
            Err(Error::Timeout(_)) => false,
            Err(e) => panic!("{e}"),
        }),
        "no member served after the leader died"
    );
    let c = session(&p, "host-c", &[0]);
    assert!(matches!(c.acquire(1, 0, false), Err(Error::NoSeat { .. })));
    // The first seat lived through it: renewed past its lease and still counted.
    std::thread::sleep(Duration::from_millis(6000));
    assert!(works(&seat), "the seat held through the leader's death");
    assert_eq!(seat.info().unwrap().in_use, 2);
    assert_eq!(seats_in_etcd(&p).len(), 2);
}

#[test]
fn a_borrowed_seat_is_counted_by_every_member_outlives_its_lender_and_returns_anywhere() {
    use common::borrow::{borrow, connect, give_back, laptop};
    let mut s = spec(1, 1, CountingUnit::Station);
    s.borrow_days = 7;
    let mut p = pool(Etcd::single(), &[s], 3);
    let publisher = p.key.public_key();
    let l = laptop(VENDOR, "laptop");
    let seat_id = [0xB7; 16];
    let mut c0 = connect(&p.members[0].addr, &publisher, VENDOR, "laptop");
    let (grant, _) = borrow(&mut c0, VENDOR, seat_id, 1, 3, &l).expect("lent by m0");
    // A retry through another member gets the same grant.
    let mut c1 = connect(&p.members[1].addr, &publisher, VENDOR, "laptop");
    let (again, _) = borrow(&mut c1, VENDOR, seat_id, 1, 3, &l).unwrap();
    assert_eq!(again, grant);
    // The lender dies; the borrowed seat stays counted, past any lease.
    p.members[0].kill9();
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    assert_eq!(seats_in_etcd(&p).len(), 1);
    let other = session(&p, "desk", &[1, 2]);
    assert!(matches!(
        other.acquire(1, 0, false),
        Err(Error::NoSeat { .. })
    ));
    // Returned through a third member: freed at once for everyone.
    let mut c2 = connect(&p.members[2].addr, &publisher, VENDOR, "laptop");
    let wrong = laptop(VENDOR, "thief");
    assert!(give_back(&mut c2, seat_id, wrong.return_signature(&seat_id)).is_err());
    give_back(&mut c2, seat_id, l.return_signature(&seat_id)).expect("returned");
    assert!(seats_in_etcd(&p).is_empty());
    assert!(other.acquire(1, 0, false).is_ok());
}

#[test]
fn a_member_without_etcd_answers_a_transient_error_and_never_grants() {
    let mut p = pool(Etcd::single(), &[spec(1, 2, CountingUnit::Station)], 2);
    let a = session(&p, "host-a", &[0]);
    let held = a.acquire(1, 0, false).unwrap();
    p.etcd.kill(0);
    let b = session(&p, "host-b", &[1]);
    let e = b.acquire(1, 0, false).map(drop).unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(e.to_string().contains("etcd"), "{e}");
    // etcd back: served again, and the pool still counts the seat held before.
    p.etcd.restart(0);
    p.etcd.wait_healthy(Duration::from_secs(20));
    let mut seat_b = None;
    assert!(eventually(Duration::from_secs(15), || {
        seat_b = b.acquire(1, 0, false).ok();
        seat_b.is_some()
    }));
    let c = session(&p, "host-c", &[1]);
    assert!(matches!(c.acquire(1, 0, false), Err(Error::NoSeat { .. })));
    drop(held);
}

#[test]
fn a_bad_pool_url_is_refused_with_a_clear_message_and_help_names_the_option() {
    let out = std::process::Command::new(common::bin("tessera-server"))
        .args(["--pool", "http://h1:2379", "--no-admin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd://host:port"), "{err}");
    let help = std::process::Command::new(common::bin("tessera-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--pool") && help.contains("etcd://"),
        "{help}"
    );
}

#[test]
fn clients_move_on_from_a_member_cut_off_from_etcd() {
    // Leases longer than the time a member takes to give up on its etcd (2 s).
    let lease = (6000, 500);
    let mut p = pool_leased(
        Etcd::single(),
        &[spec(1, 2, CountingUnit::Station)],
        2,
        lease,
    );
    // m2 hosts the license too, but its etcd is nowhere.
    let home = p.dir.path().join("home-2");
    copy_dir(&p.dir.path().join("home-0"), &home);
    let nowhere = vec![format!("127.0.0.1:{}", common::etcd::free_port())];
    let cut = member_on(p.dir.path(), &nowhere, 2, &home, lease);
    p.members.push(cut);
    // Asked first, m2 answers that it cannot serve now; the client asks the next member.
    let a = session(&p, "host-a", &[2, 0]);
    let seat_a = a.acquire(1, 0, false).expect("served by m0");
    assert_eq!(seat_a.info().unwrap().server.as_deref(), Some("m0"));
    // A client served by m1 re-attaches past m2 when m1 dies.
    let b = session(&p, "host-b", &[1, 2, 0]);
    let seat_b = b.acquire(1, 0, false).unwrap();
    assert_eq!(seat_b.info().unwrap().server.as_deref(), Some("m1"));
    p.members[1].kill9();
    assert!(
        eventually(Duration::from_secs(10), || works(&seat_b)
            && seat_b
                .info()
                .is_ok_and(|i| i.server.as_deref() == Some("m0"))),
        "re-attached to m0"
    );
    std::thread::sleep(Duration::from_millis(lease.0 + 1000));
    assert!(works(&seat_b) && works(&seat_a), "both kept their seats");
    assert_eq!(seats_in_etcd(&p).len(), 2);
}

#[test]
fn a_seat_gone_from_etcd_is_lost_for_its_holder_and_free_for_others() {
    let p = pool(Etcd::single(), &[spec(1, 1, CountingUnit::Station)], 2);
    let a = session(&p, "host-a", &[0]);
    let seat = a.acquire(1, 0, false).unwrap();
    let b = session(&p, "host-b", &[1]);
    assert!(matches!(b.acquire(1, 0, false), Err(Error::NoSeat { .. })));
    // The row goes behind the members' backs (its lease lives on): the members follow etcd.
    let out = p.etcd.etcdctl(&["del", "--prefix", "/tessera/test/seats/"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let e = failure_of(&seat);
    assert!(matches!(e, Error::LeaseLost(_)), "{e}");
    assert!(b.acquire(1, 0, false).is_ok());
}

/// A pool seat table on `etcd` under `prefix` and a license of `quantity` seats counted by
/// `unit`, for the tests that drive [`EtcdSeats`](tessera::server::pool::EtcdSeats) directly.
fn etcd_table(
    etcd: &Etcd,
    prefix: &str,
    license_id: [u8; 16],
    quantity: u32,
    unit: CountingUnit,
) -> (
    tessera::server::config::PoolConfig,
    tessera::license::License,
) {
    use tessera::license::{Binding, License, VmPolicy};
    let config = tessera::server::config::PoolConfig {
        endpoints: etcd.endpoints(),
        prefix: Some(prefix.into()),
        ..Default::default()
    };
    let lic = License {
        license_id,
        vendor_id: VENDOR,
        product_code: 1,
        product_name: "Pool".into(),
        features: 0xFF,
        quantity,
        counting_unit: unit,
        exclusive_allowed: false,
        borrow_days: 0,
        issued_at: 0,
        expiry: None,
        vm_policy: VmPolicy::Allow,
        binding: Binding::Container {
            serial: "SW-POOL".into(),
            key: [1; 32],
        },
    };
    (config, lic)
}

/// The etcd seat table itself, without processes: three members' `EtcdSeats` in one
/// runtime, many tasks acquiring (some re-attaching their seat through another member),
/// holding and releasing, with station keys shared by some. A checker counts the stations
/// that hold a granted, unreleased seat: never more than the quantity; at the end etcd holds
/// exactly the rows of the seats still held.
#[test]
fn racing_members_of_the_etcd_seat_table_never_exceed_the_quantity() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tessera::host::MachineKind;
    use tessera::net::proto::HostInfo;
    use tessera::server::pool::EtcdSeats;
    use tessera::server::seats::AcquireSpec;

    const QUANTITY: u32 = 3;
    let etcd = Etcd::single();
    let (config, lic) = etcd_table(&etcd, "/race/", [0x5A; 16], QUANTITY, CountingUnit::Station);
    let members: Vec<Arc<EtcdSeats>> = (0..3)
        .map(|i| Arc::new(EtcdSeats::new(&config, &format!("r{i}")).unwrap()))
        .collect();
    // Station -> seats held (granted, not released).
    let held: Arc<Mutex<HashMap<u8, u32>>> = Arc::default();
    let grants = Arc::new(AtomicU32::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..24u8 {
            let members = members.clone();
            let lic = lic.clone();
            let held = Arc::clone(&held);
            let grants = Arc::clone(&grants);
            tasks.push(tokio::spawn(async move {
                // Six stations, four tasks each.
                let station = t % 6;
                let client = [station + 1; 32];
                let host = HostInfo {
                    machine: MachineKind::Physical,
                    hostname: format!("h{station}"),
                    station: [0; 32],
                    session: "s".into(),
                    pid: 1,
                    pid_namespace: 1,
                };
                for round in 0..8u8 {
                    let seat_id = [t, round, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
                    let spec = AcquireSpec {
                        seat_id,
                        license: &lic,
                        host: &host,
                        client,
                        exclusive: false,
                        features: 0,
                        now_ms: tessera::util::now_ms(),
                        lease_ms: 30_000,
                    };
                    let first = (t as usize + round as usize) % 3;
                    match members[first].acquire(&spec, b"").await {
                        Ok(c) => {
                            assert!(!c.held);
                            grants.fetch_add(1, Ordering::SeqCst);
                            {
                                let mut h = held.lock().unwrap();
                                *h.entry(station).or_default() += 1;
                                assert!(
                                    h.len() <= QUANTITY as usize,
                                    "{} stations hold seats: {h:?}",
                                    h.len()
                                );
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            // Re-attached through the next member: the same seat, not a new one.
                            let next = (first + 1) % 3;
                            let again = members[next].acquire(&spec, b"").await.unwrap();
                            assert!(again.held, "a re-attach is not a new seat");
                            {
                                let mut h = held.lock().unwrap();
                                let n = h.get_mut(&station).unwrap();
                                *n -= 1;
                                if *n == 0 {
                                    h.remove(&station);
                                }
                            }
                            let row = members[next].release(&seat_id, &client).await.unwrap();
                            assert!(row.is_some(), "released where it was re-attached");
                        }
                        Err(tessera::Error::NoSeat { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(grants.load(Ordering::SeqCst) > 0);
        assert!(
            members[0].rows().await.unwrap().is_empty(),
            "every seat released"
        );
    });
}

#[test]
fn after_everything_restarts_clients_keep_their_seats_and_nothing_is_granted_twice() {
    let lease = (6000, 500);
    let mut p = pool_leased(
        Etcd::single(),
        &[spec(1, 1, CountingUnit::Station)],
        2,
        lease,
    );
    let a = session(&p, "host-a", &[0, 1]);
    let seat = a.acquire(1, 0, false).unwrap();
    // Every member and the etcd node die, and come back on their state.
    p.members[0].kill9();
    p.members[1].kill9();
    p.etcd.restart(0);
    p.etcd.wait_healthy(Duration::from_secs(20));
    p.members[0].restart();
    p.members[1].restart();
    // The seat held through it (re-attached within its lease); no second station got one.
    let b = session(&p, "host-b", &[1, 0]);
    assert!(eventually(Duration::from_secs(5), || works(&seat)
        && seat.info().is_ok_and(|i| i.in_use == 1)));
    assert!(matches!(b.acquire(1, 0, false), Err(Error::NoSeat { .. })));
    std::thread::sleep(Duration::from_millis(lease.0 + 1000));
    assert!(works(&seat), "still held a lease later");
    assert_eq!(seats_in_etcd(&p).len(), 1);
}

/// A released seat's lease is kept alive and stocked for the next grant: a member taking and
/// releasing seats one after the other grants leases only to fill its stock, not one per
/// seat (each grant is a write through etcd's log beside the seat's own transaction).
#[test]
fn a_member_reuses_released_leases_instead_of_granting_one_per_seat() {
    use tessera::host::MachineKind;
    use tessera::net::proto::HostInfo;
    use tessera::server::pool::EtcdSeats;
    use tessera::server::pool_status::EtcdOp;
    use tessera::server::seats::AcquireSpec;

    let etcd = Etcd::single();
    let (config, lic) = etcd_table(&etcd, "/reuse/", [0x3C; 16], 2, CountingUnit::Handle);
    let member = Arc::new(EtcdSeats::new(&config, "r0").unwrap());
    let host = HostInfo {
        machine: MachineKind::Physical,
        hostname: "h".into(),
        station: [0; 32],
        session: "s".into(),
        pid: 1,
        pid_namespace: 1,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const CYCLES: u8 = 40;
    rt.block_on(async {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let follow = tokio::spawn(Arc::clone(&member).follow(async {
            let _ = stopped.await;
        }));
        for i in 0..CYCLES {
            let spec = AcquireSpec {
                seat_id: [i; 16],
                license: &lic,
                host: &host,
                client: [7; 32],
                exclusive: false,
                features: 0,
                now_ms: tessera::util::now_ms(),
                lease_ms: 30_000,
            };
            let c = member.acquire(&spec, b"").await.unwrap();
            assert!(!c.held);
            let row = member.release(&[i; 16], &[7; 32]).await.unwrap();
            assert!(row.is_some(), "released");
            // The freed lease's keep-alive runs in the background: let it land.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            member.rows().await.unwrap().is_empty(),
            "every seat released"
        );
        let _ = stop.send(());
        follow.await.unwrap();
    });
    let grants = member.stats().counts(EtcdOp::Lease).count;
    assert!(
        grants <= 8,
        "{grants} lease grants for {CYCLES} seats taken and released one after the other"
    );
}

/// Whether etcd still holds its history at revision `rev` (a read at it answers).
fn history_at(etcd: &Etcd, rev: i64) -> Result<(), String> {
    let out = etcd.etcdctl(&[
        "get",
        "/",
        "--prefix",
        "--keys-only",
        &format!("--rev={rev}"),
    ]);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// etcd 3.4 keeps every revision until told otherwise: without compaction each grant and
/// release stays in its history until its database reaches its quota and it refuses every
/// write (the whole pool then refuses). A member compacts it every `compact_s`, keeping
/// that much; the pool grants on after its history was cut.
#[test]
fn a_member_compacts_the_etcd_history_and_the_pool_grants_on() {
    let etcd = Etcd::single();
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "pool tests");
    let home = dir.path().join("home-0");
    common::activate(
        &common::env_in(&home),
        &key,
        &[spec(1, 5, CountingUnit::Handle)],
    );
    let m = pool_member_with(
        dir.path(),
        &etcd.endpoints(),
        ("test", "compact_s = 1"),
        "m0",
        &home,
        0,
        &format!("lease_ms = {LEASE_MS}\nrenew_ms = {RENEW_MS}"),
    );
    let p = Pool {
        dir,
        key,
        members: vec![m],
        etcd,
    };
    let s = session(&p, "churn", &[0]);
    for _ in 0..5 {
        drop(s.acquire(1, 0, false).unwrap());
    }
    history_at(&p.etcd, 2).expect("the history before the member's first compaction");
    let cut = eventually(Duration::from_secs(20), || history_at(&p.etcd, 2).is_err());
    assert!(cut, "the history at revision 2 is still there after 20 s");
    let why = history_at(&p.etcd, 2).unwrap_err();
    assert!(why.contains("compacted"), "{why}");
    // The member's watch and caches follow the present: seats are granted and freed as before.
    let seats: Vec<_> = (0..5).map(|_| s.acquire(1, 0, false).unwrap()).collect();
    assert!(matches!(
        s.acquire(1, 0, false),
        Err(Error::NoSeat { quantity: 5 })
    ));
    drop(seats);
    s.acquire(1, 0, false).unwrap();
}

/// etcd as production runs it: https, with a client certificate of its CA asked of every
/// client. A member given the CA, its certificate and key grants; a member with a
/// certificate of another CA gets nothing from etcd and grants nothing; a member whose
/// `ca_file` is missing does not start, and says why.
#[test]
fn a_member_reaches_an_etcd_that_asks_for_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(&dir.path().join("certs"));
    let etcd = Etcd::single_tls(&certs);
    let key = PublisherKey::generate(VENDOR, "pool tests");
    let homes = [dir.path().join("home-0"), dir.path().join("home-1")];
    common::activate(
        &common::env_in(&homes[0]),
        &key,
        &[spec(1, 5, CountingUnit::Handle)],
    );
    copy_dir(&homes[0], &homes[1]);
    let tls = |cert: &Path, key: &Path| {
        format!(
            "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
            certs.ca, cert, key
        )
    };
    let leases = format!("lease_ms = {LEASE_MS}\nrenew_ms = {RENEW_MS}");
    let member = |i: usize, pool_more: &str| {
        pool_member_with(
            dir.path(),
            &etcd.endpoints(),
            ("test", pool_more),
            &format!("m{i}"),
            &homes[i],
            0,
            &leases,
        )
    };
    let good = member(0, &tls(&certs.client_cert, &certs.client_key));
    let rogue = member(1, &tls(&certs.rogue_cert, &certs.rogue_key));

    // The missing CA file: refused at start, naming it.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "name = \"m2\"\nlisten = [\"127.0.0.1:0\"]\ndiscovery = false\ndongles = false\n\
             state_dir = {:?}\nhome = {:?}\n[pool]\nendpoints = [{:?}]\n\
             ca_file = \"/nonexistent/ca.pem\"\n",
            dir.path().join("state-m2"),
            homes[0],
            etcd.endpoints()[0]
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::bin("tessera-server"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("ca_file /nonexistent/ca.pem"), "{said}");

    let p = Pool {
        dir,
        key,
        members: vec![good, rogue],
        etcd,
    };
    let s = session(&p, "tls", &[0]);
    let seat = s.acquire(1, 0, false).unwrap();
    assert_eq!(seats_in_etcd(&p).len(), 1, "the seat's row, read over TLS");
    let r = session(&p, "rogue", &[1]);
    let refused = r.acquire(1, 0, false);
    assert!(refused.is_err(), "the member etcd does not let in granted");
    assert_eq!(seats_in_etcd(&p).len(), 1);
    drop(seat);
}
