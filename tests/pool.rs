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
use common::etcd::Etcd;
use common::server::{LEASE_MS, PRIVATE_SHM, RENEW_MS, ServerProc};
use common::spec;

const VENDOR: u32 = 0x71;

struct Pool {
    dir: tempfile::TempDir,
    key: PublisherKey,
    members: Vec<ServerProc>,
    etcd: Etcd,
}

/// A copy of the folder `from` at `to`.
fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// `n` members named `m0`, `m1`, ... on `etcd`, each hosting a copy of one container with
/// `specs`; configured by TOML files (`[pool]`).
fn pool(etcd: Etcd, specs: &[LicenseSpec], n: usize) -> Pool {
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
        members.push(member(dir.path(), &etcd, i, &home));
    }
    Pool {
        dir,
        key,
        members,
        etcd,
    }
}

fn member(dir: &Path, etcd: &Etcd, i: usize, home: &Path) -> ServerProc {
    let state = dir.join(format!("state-{i}"));
    let endpoints: Vec<String> = etcd.endpoints().iter().map(|e| format!("{e:?}")).collect();
    let config = format!(
        "name = \"m{i}\"\nlisten = [\"127.0.0.1:0\"]\ndiscovery = false\ndongles = false\n\
         state_dir = {state:?}\nhome = {home:?}\nlease_ms = {LEASE_MS}\nrenew_ms = {RENEW_MS}\n\
         fsync = false\nadmin_listen = \"127.0.0.1:0\"\n\
         [pool]\nendpoints = [{}]\nname = \"test\"\n",
        endpoints.join(", ")
    );
    let file = dir.join(format!("member-{i}.toml"));
    std::fs::write(&file, config).unwrap();
    ServerProc::start_wrapped(
        &state,
        home,
        0,
        &["--config", file.to_str().unwrap()],
        PRIVATE_SHM,
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
    assert_eq!(granted.load(Ordering::SeqCst), 5, "exactly the quantity");
    assert_eq!(held.len(), 5);
    assert_eq!(seats_in_etcd(&p).len(), 5);
    // Every member counts the pool's seats, and names itself.
    let names: HashSet<String> = held
        .iter()
        .map(|(_, seat)| {
            let info = seat.info().unwrap();
            assert_eq!(info.in_use, 5, "the pool's count, whatever the member");
            info.server.unwrap()
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
    use common::http::{csrf_token, request};
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
    let csrf = csrf_token(&admin);
    let path = format!("/api/v1/seats/{id}/revoke");
    let r = request(&admin, "POST", &path, &[("X-Tessera-CSRF", &csrf)], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["revoked"], id.as_str());
    assert!(seats_in_etcd(&p).is_empty());
    // The holder learns it at its next renewal, clearly.
    let e = failure_of(&seat);
    assert!(matches!(e, Error::LeaseLost(_)), "{e}");
    // Its slot is free for a client of another member.
    let seat_b = b.acquire(1, 0, false).expect("the revoked seat's slot");
    assert_eq!(seat_b.info().unwrap().server.as_deref(), Some("m1"));
    // Revoked once: a second revoke finds nothing.
    let again = request(&admin, "POST", &path, &[("X-Tessera-CSRF", &csrf)], b"");
    assert_eq!(again.status, 404, "{again:?}");
}
