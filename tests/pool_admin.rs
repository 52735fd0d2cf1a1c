//! Operating a license-server pool (issue 17, point 4): the admin API, `tessera admin status`
//! and `/metrics` of any member show the pool (its members and which are up, the etcd
//! endpoints and their health) and its seats, whichever member serves them. Real processes:
//! a three-node etcd (tests/common/etcd.rs) and two `tessera-server` members, each with a
//! private `/dev/shm` so both may host a copy of one container (as tests/pool.rs does).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

mod common;
use common::etcd::Etcd;
use common::http::get;
use common::server::{LEASE_MS, RENEW_MS, ServerProc, copy_dir, pool_member};
use common::spec;

const VENDOR: u32 = 0x72;

/// A member named `name` of the pool `ops` on `etcd`, hosting the container in `home`.
fn member(dir: &Path, etcd: &Etcd, name: &str, home: &Path) -> ServerProc {
    pool_member(
        dir,
        &etcd.endpoints(),
        "ops",
        name,
        home,
        0,
        &format!("lease_ms = {LEASE_MS}\nrenew_ms = {RENEW_MS}"),
    )
}

/// Polls `f` every 100 ms until it gives `Some` (at most `within`).
fn until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(admin: &str) -> Value {
    let r = get(admin, "/api/v1/status", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// `(name, up)` of every member the pool lists.
fn members(s: &Value) -> Vec<(String, bool)> {
    s["pool"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["up"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn admin_status_text(admin: &str) -> String {
    let out = Command::new(common::bin("tessera"))
        .args(["admin", "--server", &format!("http://{admin}"), "status"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn any_member_shows_the_pool_its_members_endpoints_seats_and_numbers() {
    let mut etcd = Etcd::cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "pool admin tests");
    let home0 = dir.path().join("home-m0");
    common::activate(
        &common::env_in(&home0),
        &key,
        &[spec(1, 3, CountingUnit::Handle)],
    );
    let home1 = dir.path().join("home-m1");
    copy_dir(&home0, &home1);
    let mut m0 = member(dir.path(), &etcd, "m0", &home0);
    let m1 = member(dir.path(), &etcd, "m1", &home1);

    // Both members up, all three endpoints healthy with one leader, seen from m1.
    let s = until(Duration::from_secs(10), "both members up", || {
        let s = status(&m1.admin);
        (members(&s) == [("m0".to_string(), true), ("m1".to_string(), true)]).then_some(s)
    });
    let pool = &s["pool"];
    assert_eq!(pool["member"], "m1");
    assert_eq!(pool["prefix"], "/tessera/ops/");
    assert_eq!(pool["members_up"], 2);
    let this: Vec<bool> = pool["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["this"].as_bool().unwrap())
        .collect();
    assert_eq!(this, [false, true]);
    let s = until(Duration::from_secs(10), "three healthy endpoints", || {
        let s = status(&m1.admin);
        (s["pool"]["endpoints_healthy"] == 3).then_some(s)
    });
    let endpoints = s["pool"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 3);
    let leaders = endpoints
        .iter()
        .filter(|e| e["leader"].as_bool().unwrap())
        .count();
    assert_eq!(leaders, 1, "{endpoints:?}");
    assert!(
        endpoints.iter().all(|e| e["version"] == "3.4.23"),
        "{endpoints:?}"
    );

    // A client of m0 takes a seat: m1 lists it, naming m0, and counts it in the license.
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![m0.addr.clone()];
    o.timeout = Duration::from_secs(3);
    let client = Session::open_in(
        o,
        Environment {
            home: dir.path().join("client"),
            host: HostIdentity::simulated("host-a"),
            clock: Arc::new(SystemClock),
        },
    )
    .unwrap();
    let seat = client.acquire(1, 0, false).unwrap();
    let r = get(&m1.admin, "/api/v1/seats", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let seats = r.json()["seats"].as_array().unwrap().clone();
    assert_eq!(seats.len(), 1, "{seats:?}");
    assert_eq!(seats[0]["member"], "m0");
    assert_eq!(seats[0]["product_code"], 1);
    // m0, which serves it, knows who holds it; so does m1, from the seat's row.
    let r = get(&m0.admin, "/api/v1/seats", &[]);
    assert_eq!(r.json()["seats"][0]["host"], "host-a", "{r:?}");
    assert_eq!(seats[0]["host"], "host-a", "{seats:?}");
    assert!(seats[0]["pid"].as_u64().is_some(), "{seats:?}");
    let r = get(&m1.admin, "/api/v1/licenses", &[]);
    assert_eq!(r.json()["licenses"][0]["in_use"], 1, "{r:?}");

    // The numbers, per member: m0 made the seat's transaction.
    let m0_metrics = get(&m0.admin, "/metrics", &[]).body;
    assert!(
        m0_metrics.contains("tessera_pool_member_info{member=\"m0\",prefix=\"/tessera/ops/\"} 1"),
        "{m0_metrics}"
    );
    assert!(
        m0_metrics.contains(
            "tessera_pool_etcd_request_duration_seconds_bucket{member=\"m0\",op=\"txn\",le=\"+Inf\"}"
        ),
        "{m0_metrics}"
    );
    assert!(
        m0_metrics.contains("tessera_pool_seats_served{member=\"m0\"} 1"),
        "{m0_metrics}"
    );
    let m1_metrics = get(&m1.admin, "/metrics", &[]).body;
    assert!(
        m1_metrics.contains("tessera_pool_members_up{member=\"m1\"} 2"),
        "{m1_metrics}"
    );
    assert!(
        m1_metrics.contains("tessera_pool_etcd_endpoints_healthy{member=\"m1\"} 3"),
        "{m1_metrics}"
    );
    assert!(m1_metrics.contains("tessera_pool_txn_retries_total{member=\"m1\"} 0"));

    // `tessera admin status` of m1 prints the pool.
    let text = admin_status_text(&m1.admin);
    assert!(text.contains("members:      2 of 2 up"), "{text}");
    assert!(text.contains("m1 (this one)"), "{text}");
    assert!(
        text.contains("etcd:         3 of 3 endpoints healthy"),
        "{text}"
    );
    assert!(text.contains(", leader,"), "{text}");
    assert!(text.contains(" MiB, "), "each node's database size: {text}");

    // m0 killed: m1 shows it down once its heartbeat's lease ran out; the seat stays in the
    // pool (its client re-attaches or its lease runs out).
    drop(seat);
    m0.kill9();
    until(Duration::from_secs(10), "m0 down", || {
        let s = status(&m1.admin);
        (members(&s) == [("m0".to_string(), false), ("m1".to_string(), true)]).then_some(())
    });
    // An etcd node killed: its endpoint shows as down, the others carry on.
    let victim = etcd.endpoints()[2].clone();
    etcd.kill(2);
    let s = until(Duration::from_secs(10), "an endpoint down", || {
        let s = status(&m1.admin);
        (s["pool"]["endpoints_healthy"] == 2).then_some(s)
    });
    let down: Vec<&Value> = s["pool"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["healthy"] == false)
        .collect();
    assert_eq!(down.len(), 1);
    assert_eq!(down[0]["endpoint"].as_str(), Some(victim.as_str()));
    assert!(down[0]["error"].is_string(), "{down:?}");
    let text = admin_status_text(&m1.admin);
    assert!(text.contains("members:      1 of 2 up"), "{text}");
    assert!(text.contains("DOWN m0"), "{text}");
    assert!(
        text.contains("etcd:         2 of 3 endpoints healthy"),
        "{text}"
    );
    assert!(text.contains(&format!("DOWN {victim}")), "{text}");
}
