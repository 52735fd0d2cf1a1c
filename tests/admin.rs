//! The admin API of a real `tessera-server` process (`docs/SERVER.md`, Administration):
//! what it lists, revoking a seat (and the client seeing it), reload, history, metrics, the
//! `tessera admin` commands, and every refusal of its security model: Host and Origin
//! checks, no CORS, POST with a token only (on a token-less server the local admin token,
//! never anything the page hands out), the token when one is set, body
//! limits, malformed input, and no secret material in any answer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera::Error;
use tessera::cipher::Mode;
use tessera::client::{Environment, Seat, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::{LicenseSpec, PublisherKey};
use tessera::util::SystemClock;

mod common;
use common::http::{self, get, local_bearer, request};
use common::server::{ServerProc, read_line_with};
use common::spec;

const VENDOR: u32 = 0xAD;
const TOKEN: &str = "admin-token-0123456789-abcdef";

struct Fixture {
    dir: tempfile::TempDir,
    key: PublisherKey,
    home: PathBuf,
    server: ServerProc,
}

fn fixture_opts(specs: &[LicenseSpec], extra: &[&str], token: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "admin tests");
    let home = dir.path().join("server-home");
    common::activate(&common::env_in(&home), &key, specs);
    let file = dir.path().join("admin-token");
    let mut args = extra.to_vec();
    if token {
        std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
        args.extend(["--admin-token-file", file.to_str().unwrap()]);
    }
    let server = ServerProc::start_with(&dir.path().join("server-state"), &home, 0, &args);
    Fixture {
        dir,
        key,
        home,
        server,
    }
}

fn fixture_with(specs: &[LicenseSpec], extra: &[&str]) -> Fixture {
    fixture_opts(specs, extra, false)
}

fn fixture(specs: &[LicenseSpec]) -> Fixture {
    fixture_with(specs, &[])
}

/// A fixture whose server needs the admin token.
fn token_fixture(specs: &[LicenseSpec]) -> Fixture {
    fixture_opts(specs, &[], true)
}

fn session(f: &Fixture, name: &str) -> Session {
    let mut o = SessionOptions::new(VENDOR, f.key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![f.server.addr.clone()];
    o.timeout = Duration::from_secs(2);
    let env = Environment {
        home: f.dir.path().join(format!("client-{name}")),
        host: HostIdentity::simulated(name),
        clock: Arc::new(SystemClock),
    };
    Session::open_in(o, env).unwrap()
}

fn seats(addr: &str, auth: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let a = get(addr, "/api/v1/seats", auth);
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["seats"].as_array().unwrap().clone()
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Polls a seat until a call on it fails, and returns the error.
fn wait_for_failure(seat: &Seat) -> Error {
    let start = Instant::now();
    let mut buf = vec![0u8; 200];
    loop {
        if let Err(e) = seat.encrypt(Mode::Derived, b"still licensed?", &mut buf) {
            return e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the seat kept working after it was revoked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_api_lists_the_server_its_containers_licenses_and_seats() {
    let f = fixture(&[
        spec(1, 3, CountingUnit::Station),
        spec(2, 1, CountingUnit::Handle),
    ]);
    let a = session(&f, "host-a");
    let _s1 = a.acquire(1, 0x3, false).unwrap();
    let b = session(&f, "host-b");
    let _s2 = b.acquire(2, 0, false).unwrap();
    let admin = &f.server.admin;

    let st = get(admin, "/api/v1/status", &[]);
    assert_eq!(st.status, 200, "{st:?}");
    assert!(
        st.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let st = st.json();
    assert_eq!(st["name"], "test-server");
    assert_eq!(st["version"], tessera::VERSION);
    assert_eq!(st["listen"][0], f.server.addr.as_str());
    assert_eq!(st["admin_listen"], admin.as_str());
    assert_eq!(st["seats_in_use"], 2);
    assert_eq!(st["quantity"], 4);
    assert_eq!(st["connections"], 2);
    assert_eq!(st["auth"], "loopback");
    assert!(st["requests"].as_u64().unwrap() >= 2);

    let c = get(admin, "/api/v1/containers", &[]).json();
    let c = &c["containers"][0];
    assert_eq!(c["kind"], "software");
    assert_eq!(c["mode"], "file");
    assert_eq!(c["access"], "exclusive");
    assert_eq!(c["vendor_id"], VENDOR);
    assert_eq!(c["licenses"], 2);
    assert!(c["serial"].as_str().unwrap().starts_with("SW-"));

    let l = get(admin, "/api/v1/licenses", &[]).json();
    let l = l["licenses"].as_array().unwrap();
    assert_eq!(l.len(), 2);
    let p1 = l.iter().find(|x| x["product_code"] == 1).unwrap();
    assert_eq!(p1["product_name"], "Product 1");
    assert_eq!(p1["quantity"], 3);
    assert_eq!(p1["in_use"], 1);
    assert_eq!(p1["counting_unit"], "station");
    assert_eq!(p1["vm_policy"], "allowed");
    assert_eq!(p1["features"], "0x000000ff");
    assert!(p1["expiry"].is_null());

    let s = seats(admin, &[]);
    assert_eq!(s.len(), 2);
    let sa = s
        .iter()
        .find(|x| x["host"] == "host-a")
        .expect("host-a's seat");
    assert_eq!(sa["product_code"], 1);
    assert_eq!(sa["pid"], std::process::id());
    assert_eq!(sa["vm"], false);
    assert_eq!(sa["machine"], "physical machine");
    assert!(sa["session"].as_str().unwrap().starts_with("uid:"), "{sa}");
    assert!(sa["user"].as_str().unwrap().starts_with("uid "), "{sa}");
    assert_eq!(sa["seat_id"].as_str().unwrap().len(), 32);
    let now = tessera::util::now();
    assert!(sa["since"].as_u64().unwrap().abs_diff(now) < 60);
    assert!(sa["lease_expires"].as_u64().unwrap() >= now);

    // The history has this minute's seats in use per product.
    let h = get(admin, "/api/v1/history?minutes=5", &[]).json();
    assert_eq!(h["step"], 1);
    let p1 = h["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product_code"] == 1)
        .unwrap();
    assert_eq!(p1["quantity"], 3);
    let last = p1["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last[1], 1, "{h}");
}

#[test]
fn a_revoked_seat_is_gone_for_good_and_its_client_gets_lease_lost() {
    let mut f = fixture(&[spec(1, 1, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let seat = a.acquire(1, 0, false).unwrap();
    let admin = f.server.admin.clone();
    let id = seats(&admin, &[])[0]["seat_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = local_bearer(&admin);
    let b = session(&f, "host-b");
    assert!(matches!(b.acquire(1, 0, false), Err(Error::NoSeat { .. })));

    let r = request(
        &admin,
        "POST",
        &format!("/api/v1/seats/{id}/revoke"),
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        br#"{"reason": "test"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["revoked"], id.as_str());
    assert!(seats(&admin, &[]).is_empty());
    // Its client's next call says so, clearly: revoked by an administrator, and why.
    let e = wait_for_failure(&seat);
    assert!(matches!(e, Error::LeaseLost(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("revoked by an administrator") && text.ends_with(": test"),
        "{text}"
    );
    assert_eq!(
        tessera::ffi::status::from_error(&e),
        tessera::ffi::tessera_status::TESSERA_E_LEASE_LOST
    );
    // Revoked once: a second revoke finds nothing.
    let again = request(
        &admin,
        "POST",
        &format!("/api/v1/seats/{id}/revoke"),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(again.status, 404, "{again:?}");
    assert!(again.error().contains("no live seat"), "{again:?}");
    // Durable: a server killed now and restarted does not hold it either.
    f.server.restart();
    assert!(seats(&f.server.admin, &[]).is_empty());
    let b = session(&f, "host-b");
    assert!(b.acquire(1, 0, false).is_ok(), "the slot is free");
    // The counters saw it.
    let m = get(&f.server.admin, "/metrics", &[]).body;
    assert!(m.contains("tessera_grants_total 1\n"), "{m}");
    drop(seat);
}

#[test]
fn unknown_and_malformed_seat_ids_are_refused_and_nothing_changes() {
    let f = fixture(&[spec(1, 5, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let _seat = a.acquire(1, 0, false).unwrap();
    let admin = &f.server.admin;
    let bearer = local_bearer(admin);
    let post =
        |path: &str, body: &[u8]| request(admin, "POST", path, &[("Authorization", &bearer)], body);
    let r = post(&format!("/api/v1/seats/{}/revoke", "ab".repeat(16)), b"");
    assert_eq!(
        (r.status, r.error().contains("no live seat")),
        (404, true),
        "{r:?}"
    );
    for bad in ["xyz", "abcd", &"g".repeat(32), &"a".repeat(33)] {
        let r = post(&format!("/api/v1/seats/{bad}/revoke"), b"");
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.error().contains("32 hex digits"), "{r:?}");
    }
    let id = seats(admin, &[])[0]["seat_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/seats/{id}/revoke");
    // Malformed JSON, a JSON body that is not an object, a field that does not exist, a
    // reason that is not a string.
    for (body, what) in [
        (&b"{\"reason\": "[..], "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{\"seat\": 1}", "unknown field"),
        (b"{\"reason\": 7}", "reason must be a string"),
    ] {
        let r = post(&path, body);
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
        assert!(r.error().contains(what), "{what}: {r:?}");
    }
    // A huge body, declared or chunked.
    let r = request(
        admin,
        "POST",
        &path,
        &[("Authorization", &bearer), ("Content-Length", "10485760")],
        b"{",
    );
    assert_eq!(r.status, 413, "{r:?}");
    let mut chunked = format!("{:x}\r\n", 40_000).into_bytes();
    chunked.extend(std::iter::repeat_n(b' ', 40_000));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = request(
        admin,
        "POST",
        &path,
        &[("Authorization", &bearer), ("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_eq!(r.status, 413, "{r:?}");
    // History parameters.
    for q in [
        "minutes=0",
        "minutes=99999999",
        "minutes=abc",
        "step=0",
        "product=1",
        "product=a:b",
        "bogus=1",
    ] {
        let r = get(admin, &format!("/api/v1/history?{q}"), &[]);
        assert_eq!(r.status, 400, "{q}: {r:?}");
        assert!(!r.error().is_empty());
    }
    // Unknown resources.
    let r = get(admin, "/api/v1/nothing", &[]);
    assert_eq!((r.status, r.error().is_empty()), (404, false), "{r:?}");
    // Nothing changed.
    assert_eq!(seats(admin, &[]).len(), 1);
    let m = get(admin, "/metrics", &[]).body;
    assert!(m.contains("tessera_revocations_total 0\n"), "{m}");
}

/// Issue 18, point 7: on a server without an admin token, anyone on its machine may load
/// the page and read, but what the page hands out (the page itself, its headers, anything in
/// it) changes nothing: a change needs the local admin token, which only root and the
/// server's user can read. Only POST changes state, and there is no CORS.
#[test]
fn a_change_needs_the_local_admin_token_not_what_the_page_hands_out_and_there_is_no_cors() {
    let f = fixture(&[spec(1, 5, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let _seat = a.acquire(1, 0, false).unwrap();
    let admin = &f.server.admin;
    let id = seats(admin, &[])[0]["seat_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/seats/{id}/revoke");
    let bearer = local_bearer(admin);
    let local = bearer.trim_start_matches("Bearer ").to_string();
    assert_eq!(local.len(), 64, "a 256-bit token: {local}");

    // What any local user gets from the page: its body, its headers, its script.
    let page = get(admin, "/", &[]);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body
            .contains("name=\"tessera-auth\" content=\"local\""),
        "{}",
        page.body
    );
    let script = get(admin, "/admin.js", &[]);
    for answer in [&page, &script] {
        assert!(
            !answer.body.contains(&local),
            "the page hands out the token"
        );
        assert!(!answer.body.contains("tessera-csrf"), "{}", answer.body);
        assert!(answer.header("set-cookie").is_none(), "{answer:?}");
    }
    // Every value the page's meta tags carry, in every header a page could send it in.
    let metas: Vec<String> = page
        .body
        .split("<meta ")
        .skip(1)
        .filter_map(|m| m.split("content=\"").nth(1))
        .filter_map(|c| c.split('"').next())
        .map(str::to_string)
        .collect();
    assert!(!metas.is_empty(), "{}", page.body);
    let mut attempts: Vec<Vec<(String, String)>> = vec![vec![]];
    for v in &metas {
        attempts.push(vec![("X-Tessera-CSRF".into(), v.clone())]);
        attempts.push(vec![("Cookie".into(), format!("csrf={v}"))]);
    }
    attempts.push(vec![("X-Tessera-CSRF".into(), local.clone())]);
    for headers in &attempts {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for target in [path.as_str(), "/api/v1/reload"] {
            let r = request(admin, "POST", target, &h, b"");
            assert_eq!(r.status, 403, "{target} {headers:?}: {r:?}");
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("application/json")),
                "{r:?}"
            );
            let e = r.error();
            assert!(
                e.contains("local admin token") && e.contains("sudo tessera admin page"),
                "{e}"
            );
        }
    }
    // Reading needs nothing on this machine.
    for read in [
        "/api/v1/status",
        "/api/v1/seats",
        "/api/v1/licenses",
        "/metrics",
    ] {
        assert_eq!(get(admin, read, &[]).status, 200, "{read}");
    }
    // A bearer token that is not the local one is wrong, whatever it is (also for reading).
    for wrong in [
        "Bearer anything-at-all-here".to_string(),
        format!("Bearer {}", "0".repeat(64)),
        format!("Bearer {}", &local[..32]),
    ] {
        let r = request(admin, "POST", &path, &[("Authorization", &wrong)], b"");
        assert_eq!(r.status, 401, "{r:?}");
        let r = get(admin, "/api/v1/seats", &[("Authorization", &wrong)]);
        assert_eq!(r.status, 401, "{r:?}");
    }
    // Only POST changes state: GET, PUT, DELETE on the revoke path are 405.
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let r = request(admin, method, &path, &[("Authorization", &bearer)], b"");
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert!(r.error().contains("not allowed"), "{r:?}");
    }
    // A CORS preflight gets no permission, and no answer carries Access-Control headers.
    let r = request(
        admin,
        "OPTIONS",
        &path,
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        b"",
    );
    assert!(r.status == 405 || r.status == 403, "{r:?}");
    let r2 = request(admin, "OPTIONS", &path, &[], b"");
    assert_eq!(r2.status, 405, "{r2:?}");
    for ans in [&r, &r2, &get(admin, "/api/v1/seats", &[])] {
        assert!(
            ans.headers
                .iter()
                .all(|(k, _)| !k.starts_with("access-control-")),
            "{ans:?}"
        );
    }
    assert_eq!(
        seats(admin, &[]).len(),
        1,
        "every refusal left the seat alone"
    );
    let m = get(admin, "/metrics", &[]).body;
    assert!(m.contains("tessera_reloads_total 0\n"), "{m}");
    // The same requests with the local admin token go through.
    let r = request(
        admin,
        "POST",
        "/api/v1/reload",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(admin, "POST", &path, &[("Authorization", &bearer)], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(seats(admin, &[]).is_empty());
}

#[test]
fn foreign_hosts_and_origins_are_refused() {
    let f = fixture(&[spec(1, 5, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let _seat = a.acquire(1, 0, false).unwrap();
    let admin = &f.server.admin;
    let port = admin.rsplit(':').next().unwrap();
    let bearer = local_bearer(admin);
    // DNS rebinding: a name that resolves to 127.0.0.1 but is not this server's.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1:{}", port.parse::<u16>().unwrap() + 1),
        "localhost".to_string(),
        format!("localhost.evil.example:{port}"),
    ] {
        for path in ["/", "/api/v1/seats", "/metrics"] {
            let r = get(admin, path, &[("Host", &host)]);
            assert_eq!(r.status, 421, "{host} {path}: {r:?}");
        }
    }
    // HTTP/1.0 without a Host.
    let r = http::raw(admin, b"GET /api/v1/seats HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 421, "{r:?}");
    // The names it does answer to.
    for host in [
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        // An address literal cannot be a rebound name (only a header: nothing is sent there).
        format!("192.0.2.7:{port}"),
    ] {
        assert_eq!(
            get(admin, "/api/v1/status", &[("Host", &host)]).status,
            200,
            "{host}"
        );
    }
    // A page elsewhere posting here (the browser adds its Origin), or reading.
    let reload = |headers: &[(&str, &str)]| request(admin, "POST", "/api/v1/reload", headers, b"");
    for origin in [
        "http://evil.example".to_string(),
        "null".to_string(),
        format!("https://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}.evil.example"),
    ] {
        let r = reload(&[("Origin", &origin), ("Authorization", &bearer)]);
        assert_eq!(r.status, 403, "{origin}: {r:?}");
        let r = get(admin, "/api/v1/seats", &[("Origin", &origin)]);
        assert_eq!(r.status, 403, "{origin}: {r:?}");
    }
    let r = reload(&[("Sec-Fetch-Site", "cross-site"), ("Authorization", &bearer)]);
    assert_eq!(r.status, 403, "{r:?}");
    let m = get(admin, "/metrics", &[]).body;
    assert!(
        m.contains("tessera_reloads_total 0\n"),
        "nothing was reloaded: {m}"
    );
    // Its own origin is fine.
    let own = format!("http://{admin}");
    let r = reload(&[
        ("Origin", &own),
        ("Authorization", &bearer),
        ("Sec-Fetch-Site", "same-origin"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn a_configured_host_name_is_answered() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let name = format!("licsrv.example.com:{port}");
    let f = fixture_with(
        &[spec(1, 5, CountingUnit::Handle)],
        &["--admin-listen", &listen, "--admin-host", &name],
    );
    let admin = &f.server.admin;
    assert_eq!(admin, &listen);
    let r = get(admin, "/api/v1/status", &[("Host", &name)]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(
        admin,
        "/api/v1/status",
        &[("Host", &name.replace("licsrv", "other"))],
    );
    assert_eq!(r.status, 421, "{r:?}");
}

#[test]
fn with_a_token_every_api_request_needs_it() {
    let f = token_fixture(&[spec(1, 5, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let _seat = a.acquire(1, 0, false).unwrap();
    let admin = &f.server.admin;
    let auth = bearer();
    for path in [
        "/api/v1/status",
        "/api/v1/containers",
        "/api/v1/licenses",
        "/api/v1/seats",
        "/api/v1/history",
        "/api/v1/usage",
        "/api/v1/report",
        "/api/v1/denials",
        "/metrics",
    ] {
        let r = get(admin, path, &[]);
        assert_eq!(r.status, 401, "{path}: {r:?}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        for wrong in [
            "Bearer wrong".to_string(),
            format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
            format!("Bearer {TOKEN}x"),
            format!("Basic {TOKEN}"),
            TOKEN.to_string(),
        ] {
            let r = get(admin, path, &[("Authorization", &wrong)]);
            assert_eq!(r.status, 401, "{path} {wrong}: {r:?}");
        }
        let ok = get(admin, path, &[("Authorization", &auth)]);
        assert_eq!(ok.status, 200, "{path}: {ok:?}");
    }
    // The page holds no data and no token: it asks for the token.
    let page = get(admin, "/", &[]);
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("tessera-csrf"), "{}", page.body);
    assert!(
        page.body
            .contains("name=\"tessera-auth\" content=\"token\"")
    );
    assert_eq!(get(admin, "/admin.js", &[]).status, 200);
    // State changes: the retired page-token header is no substitute for the token.
    let id = seats(admin, &[("Authorization", &auth)])[0]["seat_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/seats/{id}/revoke");
    let r = request(admin, "POST", &path, &[("X-Tessera-CSRF", "")], b"");
    assert_eq!(r.status, 401, "{r:?}");
    let r = request(admin, "POST", "/", &[], b"");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(seats(admin, &[("Authorization", &auth)]).len(), 1);
    let r = request(admin, "POST", &path, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(seats(admin, &[("Authorization", &auth)]).is_empty());
}

#[test]
fn an_admin_port_beyond_loopback_without_a_token_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin("tessera-server"))
        .args(["--no-discovery", "--no-dongles", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "0.0.0.0:0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--home")
        .arg(dir.path().join("home"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("admin_token"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it never listened");
    // A token that is too short is refused too.
    let short = dir.path().join("short");
    std::fs::write(&short, "abc").unwrap();
    let out = Command::new(common::bin("tessera-server"))
        .args(["--no-discovery", "--no-dongles", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0", "--admin-token-file"])
        .arg(&short)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short"));
}

/// Every answer the API gives, with seats held, on a server with a token.
fn every_answer(f: &Fixture) -> Vec<(String, String)> {
    let admin = &f.server.admin;
    let auth = bearer();
    let h = [("Authorization", auth.as_str())];
    let mut out = Vec::new();
    let id = seats(admin, &h)[0]["seat_id"].as_str().unwrap().to_string();
    for path in [
        "/",
        "/admin.js",
        "/admin.css",
        "/favicon.svg",
        "/api/v1/status",
        "/api/v1/containers",
        "/api/v1/licenses",
        "/api/v1/seats",
        "/api/v1/history?minutes=60",
        "/api/v1/usage",
        "/api/v1/report?format=csv",
        "/api/v1/report?format=json",
        "/api/v1/denials",
        "/metrics",
        "/api/v1/nothing",
    ] {
        let a = get(admin, path, &h);
        out.push((path.to_string(), format!("{:?}\n{}", a.headers, a.body)));
        let a = get(admin, path, &[]);
        out.push((
            format!("{path} (no token)"),
            format!("{:?}\n{}", a.headers, a.body),
        ));
    }
    let a = request(admin, "POST", "/api/v1/reload", &h, b"");
    assert_eq!(a.status, 200, "{a:?}");
    out.push(("reload".into(), a.body));
    let a = request(
        admin,
        "POST",
        &format!("/api/v1/seats/{id}/revoke"),
        &h,
        b"{\"x\"",
    );
    out.push(("bad revoke".into(), a.body));
    let a = request(
        admin,
        "POST",
        &format!("/api/v1/seats/{id}/revoke"),
        &h,
        b"",
    );
    assert_eq!(a.status, 200, "{a:?}");
    out.push(("revoke".into(), a.body));
    out
}

fn forms(secret: &[u8]) -> Vec<String> {
    use std::fmt::Write;
    let mut decimal = String::new();
    for (i, b) in secret.iter().enumerate() {
        if i > 0 {
            decimal.push(',');
        }
        let _ = write!(decimal, "{b}");
    }
    vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        decimal,
        String::from_utf8_lossy(secret).to_string(),
    ]
}

#[test]
fn no_answer_holds_secret_material() {
    let f = token_fixture(&[
        spec(1, 5, CountingUnit::Handle),
        spec(2, 5, CountingUnit::Station),
    ]);
    let a = session(&f, "host-a");
    let _s1 = a.acquire(1, 0, false).unwrap();
    let _s2 = a.acquire(2, 0, false).unwrap();
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("admin token".into(), TOKEN.as_bytes().to_vec()),
        (
            "server key".into(),
            // Sealed to this machine: opened the way the server opens it.
            tessera::client::hostkey::load_or_create_at(
                &f.server.state.join("server.key"),
                &tessera::host::HostIdentity::detect().fingerprint,
            )
            .unwrap()
            .to_vec(),
        ),
        ("product secret 1".into(), f.key.product_secret(1).to_vec()),
        ("product secret 2".into(), f.key.product_secret(2).to_vec()),
    ];
    if f.home.join("host.key").exists() {
        let k = tessera::client::hostkey::load_or_create(
            &f.home,
            &tessera::host::HostIdentity::detect().fingerprint,
        )
        .unwrap();
        secrets.push(("server home host key".into(), k.to_vec()));
    }
    assert_eq!(secrets[1].1.len(), 32);
    let answers = every_answer(&f);
    assert!(answers.len() > 20);
    for (what, secret) in &secrets {
        for form in forms(secret) {
            if form.len() < 16 {
                continue;
            }
            for (path, body) in &answers {
                assert!(!body.contains(&form), "{path} shows the {what}");
            }
        }
    }
    // Nor the signed licenses or the delegations (not secret, but not the admin's business).
    for (path, body) in &answers {
        assert!(!body.contains("delegation\""), "{path}");
    }
}

#[test]
fn metrics_count_grants_denials_renewals_and_latency() {
    let f = fixture(&[spec(1, 1, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let seat = a.acquire(1, 0, false).unwrap();
    let b = session(&f, "host-b");
    assert!(b.acquire(1, 0, false).is_err());
    assert!(b.acquire(1, 0x100, false).is_err());
    std::thread::sleep(Duration::from_millis(common::server::RENEW_MS * 3));
    let m = get(&f.server.admin, "/metrics", &[]);
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let m = m.body;
    let value = |line_start: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let labels = format!("vendor=\"{VENDOR}\",product=\"1\",product_name=\"Product 1\"");
    assert_eq!(value(&format!("tessera_seats_in_use{{{labels}}}")), 1.0);
    assert_eq!(value(&format!("tessera_seats_quantity{{{labels}}}")), 1.0);
    assert_eq!(value("tessera_grants_total "), 1.0);
    assert_eq!(value("tessera_denials_total{reason=\"no_seat\"} "), 1.0);
    assert_eq!(
        value("tessera_denials_total{reason=\"feature_missing\"} "),
        1.0
    );
    assert!(value("tessera_renewals_total ") >= 1.0);
    assert_eq!(value("tessera_connections "), 2.0);
    assert!(value("tessera_connections_total ") >= 2.0);
    assert_eq!(
        value("tessera_request_duration_seconds_count{kind=\"acquire\"} "),
        3.0
    );
    assert_eq!(
        value("tessera_request_duration_seconds_bucket{kind=\"acquire\",le=\"+Inf\"} "),
        3.0
    );
    assert!(value("tessera_request_duration_seconds_sum{kind=\"acquire\"} ") > 0.0);
    // One grant (a row written) at least; one client is no crowd, so no commit waited.
    assert!(value("tessera_seat_store_commits_total ") >= 1.0);
    assert!(value("tessera_seat_store_changes_total ") >= 1.0);
    assert_eq!(value("tessera_seat_store_gathered_total "), 0.0);
    for family in [
        "tessera_lease_expiries_total",
        "tessera_revocations_total",
        "tessera_requests_total",
    ] {
        assert!(m.contains(&format!("# TYPE {family} ")), "{family}");
    }
    drop(seat);
    drop(a);
}

#[test]
fn metrics_show_the_process_the_build_and_zero_series_from_the_start() {
    let f = fixture(&[
        spec(1, 1, CountingUnit::Station),
        spec(2, 1, CountingUnit::Handle),
    ]);
    let m = get(&f.server.admin, "/metrics", &[]).body;
    let value = |line_start: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Process metrics, as the Prometheus clients name them, of the server process.
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            m.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}: {m}"
        );
    }
    assert!(value("process_resident_memory_bytes ") > 1e6);
    assert!(value("process_virtual_memory_bytes ") >= value("process_resident_memory_bytes "));
    assert!(value("process_open_fds ") >= 3.0);
    assert!(value("process_max_fds ") >= value("process_open_fds "));
    // The kernel's clock, not the server's (a test may shift that): after this boot, and
    // before now as the kernel counts since it.
    let proc_stat = std::fs::read_to_string("/proc/stat").unwrap();
    let boot: f64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let up: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let started = value("process_start_time_seconds ");
    assert!(
        started >= boot && started <= boot + up + 1.0,
        "{started} not in [{boot}, {}]",
        boot + up
    );
    // The build.
    let build = m
        .lines()
        .find(|l| l.starts_with("tessera_build_info{"))
        .unwrap_or_else(|| panic!("{m}"));
    assert!(
        build.starts_with(&format!(
            "tessera_build_info{{version=\"{}\",git=\"",
            tessera::VERSION
        )) && build.ends_with("\"} 1"),
        "{build}"
    );
    // Nothing refused yet, and every series is there at 0: per licensing verdict and per
    // hosted product; the handles too.
    assert_eq!(value("tessera_denials_total{reason=\"no_seat\"} "), 0.0);
    assert_eq!(
        value("tessera_denials_total{reason=\"feature_missing\"} "),
        0.0
    );
    for p in [1, 2] {
        let labels = format!("vendor=\"{VENDOR}\",product=\"{p}\",product_name=\"Product {p}\"");
        assert_eq!(
            value(&format!("tessera_seat_denials_total{{{labels}}} ")),
            0.0
        );
        assert_eq!(value(&format!("tessera_handles{{{labels}}} ")), 0.0);
    }
    // One refusal: counted for its product, the other stays 0.
    let a = session(&f, "host-a");
    assert!(a.acquire(1, 0x100, false).is_err());
    let m = get(&f.server.admin, "/metrics", &[]).body;
    let l1 = format!("vendor=\"{VENDOR}\",product=\"1\",product_name=\"Product 1\"");
    let l2 = format!("vendor=\"{VENDOR}\",product=\"2\",product_name=\"Product 2\"");
    assert!(
        m.contains(&format!("tessera_seat_denials_total{{{l1}}} 1\n")),
        "{m}"
    );
    assert!(
        m.contains(&format!("tessera_seat_denials_total{{{l2}}} 0\n")),
        "{m}"
    );
    assert!(
        m.contains("tessera_denials_total{reason=\"feature_missing\"} 1\n"),
        "{m}"
    );
}

#[test]
fn every_count_says_seats_or_handles_and_they_agree() {
    // Two handles of one station of a per-station license: one seat, two handles.
    let f = fixture(&[spec(1, 2, CountingUnit::Station)]);
    let a = session(&f, "host-a");
    let _h1 = a.acquire(1, 0, false).unwrap();
    let _h2 = a.acquire(1, 0, false).unwrap();
    let admin = &f.server.admin;
    let st = get(admin, "/api/v1/status", &[]).json();
    assert_eq!(st["seats_in_use"], 1, "{st}");
    assert_eq!(st["quantity"], 2, "{st}");
    assert_eq!(st["handles"], 2, "{st}");
    let lic = &get(admin, "/api/v1/licenses", &[]).json()["licenses"][0];
    assert_eq!(
        (&lic["in_use"], &lic["handles"]),
        (&json!(1), &json!(2)),
        "{lic}"
    );
    let list = seats(admin, &[]);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["seat"], list[1]["seat"], "one seat: {list:?}");
    assert_eq!(list[0]["handles_in_seat"], 2);
    // Users keep their uid; a client on another machine gets no name from this one.
    assert_eq!(list[0]["uid"], 1000);
    assert_eq!(list[0]["user"], "uid 1000");
    let since = list[0]["since_iso"].as_str().unwrap();
    assert!(since.ends_with('Z') && since.contains('T'), "{since}");
    let m = get(admin, "/metrics", &[]).body;
    let labels = format!("vendor=\"{VENDOR}\",product=\"1\",product_name=\"Product 1\"");
    assert!(
        m.contains(&format!("tessera_seats_in_use{{{labels}}} 1\n")),
        "{m}"
    );
    assert!(
        m.contains(&format!("tessera_handles{{{labels}}} 2\n")),
        "{m}"
    );
}

#[test]
fn refused_requests_are_listed_with_who_what_when_and_why() {
    let f = fixture(&[spec(1, 1, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let _s = a.acquire(1, 0, false).unwrap();
    let b = session(&f, "host-b");
    assert!(b.acquire(1, 0, false).is_err());
    assert!(b.acquire(1, 0x100, false).is_err());
    let admin = &f.server.admin;
    let d = get(admin, "/api/v1/denials", &[]);
    assert_eq!(d.status, 200, "{d:?}");
    let d = d.json();
    assert_eq!(d["total"], 2, "{d}");
    let list = d["denials"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    // Newest first.
    assert_eq!(list[0]["reason"], "feature_missing", "{d}");
    assert_eq!(list[0]["features"], "0x00000100");
    assert_eq!(list[1]["reason"], "no_seat", "{d}");
    assert_eq!(list[1]["status"], "TESSERA_E_NO_SEAT");
    for x in list {
        assert_eq!(x["host"], "host-b");
        assert_eq!(x["user"], "uid 1000");
        assert_eq!(x["product_code"], 1);
        assert_eq!(x["product_name"], "Product 1");
        assert!(x["at_iso"].as_str().unwrap().ends_with('Z'), "{x}");
        assert!(!x["message"].as_str().unwrap().is_empty());
    }
    let one = get(admin, "/api/v1/denials?limit=1", &[]).json();
    assert_eq!(one["denials"].as_array().unwrap().len(), 1);
    for bad in [
        "/api/v1/denials?limit=0",
        "/api/v1/denials?limit=x",
        "/api/v1/denials?who=1",
    ] {
        let r = get(admin, bad, &[]);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(!r.error().is_empty());
    }
    let st = get(admin, "/api/v1/status", &[]).json();
    assert_eq!(st["denials"], 2, "{st}");
    // The usage log records them too, and outlives the server's memory.
    let logged = |admin: &str| {
        let r = get(admin, "/api/v1/denials?source=log", &[]);
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["denials"].as_array().unwrap().clone()
    };
    let mut f = f;
    let start = Instant::now();
    while logged(&f.server.admin).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "never logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    f.server.restart();
    let admin = &f.server.admin;
    let d = get(admin, "/api/v1/denials", &[]).json();
    assert_eq!(d["total"], 0, "a new start: {d}");
    let list = logged(admin);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(
        list[0]["reason"], "feature_missing",
        "newest first: {list:?}"
    );
    assert_eq!(list[1]["reason"], "no_seat");
    for x in &list {
        assert_eq!(x["host"], "host-b");
        assert_eq!(x["user"], "uid 1000");
        assert_eq!(x["product_name"], "Product 1");
        assert_eq!(x["count"], 1);
    }
    let r = get(admin, "/api/v1/denials?source=disk", &[]);
    assert_eq!(r.status, 400, "{r:?}");
}

#[test]
fn the_usage_report_downloads_as_csv_or_json() {
    let mut one = spec(1, 3, CountingUnit::Handle);
    one.product_name = "Draw, \"Pro\"".into();
    let f = fixture(&[one, spec(2, 1, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let _s = a.acquire(1, 0, false).unwrap();
    let admin = &f.server.admin;
    let csv = get(admin, "/api/v1/report?format=csv", &[]);
    assert_eq!(csv.status, 200, "{csv:?}");
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let cd = csv.header("content-disposition").unwrap();
    assert!(
        cd.starts_with("attachment; filename=\"tessera-report-") && cd.ends_with(".csv\""),
        "{cd}"
    );
    let mut lines = csv.body.split("\r\n");
    assert_eq!(
        lines.next(),
        Some("time,time_iso,vendor_id,product_code,product_name,seats_in_use,quantity")
    );
    let row = lines
        .find(|l| l.contains(&format!(",{VENDOR},1,")))
        .unwrap_or_else(|| panic!("{}", csv.body));
    assert!(row.ends_with(",\"Draw, \"\"Pro\"\"\",1,3"), "{row}");
    let iso = row.split(',').nth(1).unwrap();
    assert!(iso.ends_with('Z'), "{row}");

    let json = get(admin, "/api/v1/report?format=json&minutes=120", &[]);
    assert_eq!(json.status, 200, "{json:?}");
    assert!(
        json.header("content-disposition")
            .unwrap()
            .ends_with(".json\"")
    );
    let doc = json.json();
    let p1 = doc["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product_code"] == 1)
        .unwrap()
        .clone();
    assert_eq!(p1["product_name"], "Draw, \"Pro\"");
    assert_eq!(p1["quantity"], 3);
    assert_eq!(
        p1["points"].as_array().unwrap().last().unwrap()["seats_in_use"],
        1
    );
    assert!(doc["to"].as_u64().unwrap() - doc["from"].as_u64().unwrap() >= 119 * 60);
    for bad in [
        "/api/v1/report?format=xml",
        "/api/v1/report?minutes=0",
        "/api/v1/report?x=1",
    ] {
        let r = get(admin, bad, &[]);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
}

/// Child mode: an app on the C ABI holding a network seat (`TESSERA_HOME` and the server
/// from its parent), calling on it every 50 ms until a call fails, then printing the status
/// and `tessera_last_error`.
#[test]
fn child_c_abi_seat_user() {
    use tessera::ffi::status::tessera_status::TESSERA_OK;
    use tessera::ffi::*;
    let Ok(server) = std::env::var("TESSERA_TEST_SERVER") else {
        return;
    };
    let key_file = std::env::var("TESSERA_TEST_KEY").unwrap();
    let key = PublisherKey::from_bytes(&std::fs::read(key_file).unwrap()).unwrap();
    let pk = key.public_key().to_bytes();
    let servers = std::ffi::CString::new(server).unwrap();
    let mut o = std::mem::MaybeUninit::<tessera_open_options>::uninit();
    let size = size_of::<tessera_open_options>();
    assert_eq!(tessera_open_options_init(o.as_mut_ptr(), size), TESSERA_OK);
    // SAFETY: initialized by tessera_open_options_init.
    let mut o = unsafe { o.assume_init() };
    o.vendor_id = VENDOR;
    o.publisher_key = pk.as_ptr();
    o.publisher_key_len = pk.len();
    o.sources = TESSERA_SOURCE_NETWORK;
    o.servers = servers.as_ptr();
    let last_error = || {
        // SAFETY: tessera_last_error never returns NULL.
        unsafe { std::ffi::CStr::from_ptr(tessera_last_error()) }
            .to_string_lossy()
            .into_owned()
    };
    let (mut s, mut seat) = (0, 0);
    assert_eq!(tessera_open(&o, &mut s), TESSERA_OK, "{}", last_error());
    assert_eq!(
        tessera_acquire(s, 1, 0, 0, &mut seat),
        TESSERA_OK,
        "{}",
        last_error()
    );
    println!("\nSEAT ok");
    let data = b"work";
    let mut out = vec![0u8; data.len() + TESSERA_CIPHERTEXT_OVERHEAD];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let mut n = 0;
        let st = tessera_encrypt(
            seat,
            TESSERA_CRYPT_DERIVED,
            data.as_ptr(),
            data.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut n,
        );
        if st != TESSERA_OK {
            println!("\nSTATUS {st:?} {}", last_error());
            tessera_release(seat);
            tessera_close(s);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("\nSTATUS none");
}

#[test]
fn a_c_app_whose_seat_is_revoked_is_told_an_administrator_revoked_it() {
    let f = fixture(&[spec(1, 1, CountingUnit::Handle)]);
    let keyfile = f.dir.path().join("publisher.key");
    f.key.save(&keyfile).unwrap();
    let home = f.dir.path().join("c-app-home");
    let mut cmd =
        common::server::child_command("child_c_abi_seat_user", &f.server.addr, &keyfile, &home);
    let mut child = common::server::KillOnDrop(cmd.env("TESSERA_HOME", &home).spawn().unwrap());
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    read_line_with(&mut out, "SEAT ok");
    let admin = &f.server.admin;
    let list = seats(admin, &[]);
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["seat_id"].as_str().unwrap().to_string();
    let bearer = local_bearer(admin);
    let r = request(
        admin,
        "POST",
        &format!("/api/v1/seats/{id}/revoke"),
        &[("Authorization", &bearer)],
        br#"{"reason": "licence moved to the night shift"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let status = read_line_with(&mut out, "STATUS");
    assert!(
        status.starts_with("STATUS TESSERA_E_LEASE_LOST "),
        "the app got {status}"
    );
    assert!(
        status.contains("revoked by an administrator")
            && status.contains("licence moved to the night shift")
            && status.contains(&id),
        "the app got {status}"
    );
}

/// Child mode: acquire a network seat, say so, and hold it until killed.
#[test]
fn child_seat_holder() {
    let Some(s) = common::server::child_session(VENDOR, "child") else {
        return;
    };
    let seat = s.acquire(1, 0, false);
    println!("SEAT {}", if seat.is_ok() { "ok" } else { "refused" });
    std::thread::sleep(Duration::from_secs(60));
}

/// A client process (`child_seat_holder`) that holds a seat of `f`'s server, once it has it.
fn seat_holder_process(f: &Fixture) -> std::process::Child {
    let keyfile = f.dir.path().join("key");
    f.key.save(&keyfile).unwrap();
    common::server::spawn_seat_holder(
        "child_seat_holder",
        &f.server.addr,
        &keyfile,
        &f.dir.path().join("child-home"),
    )
}

#[test]
fn a_lease_that_runs_out_is_counted() {
    let f = fixture(&[spec(1, 1, CountingUnit::Handle)]);
    let mut child = seat_holder_process(&f);
    assert_eq!(seats(&f.server.admin, &[]).len(), 1);
    // A client that dies: its lease runs out.
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    loop {
        let m = get(&f.server.admin, "/metrics", &[]).body;
        if m.contains("tessera_lease_expiries_total 1\n") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seats(&f.server.admin, &[]).is_empty());
}

fn write_config(dir: &Path, home: &Path, name: &str, lease_ms: u64) -> PathBuf {
    let path = dir.join("server.toml");
    let state = dir.join("state");
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nlisten = [\"127.0.0.1:0\"]\ndiscovery = false\ndongles = false\n\
             state_dir = \"{}\"\nhome = \"{}\"\nlease_ms = {lease_ms}\nrenew_ms = 300\n\
             admin_listen = \"127.0.0.1:0\"\n",
            state.display(),
            home.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn reload_rescans_containers_and_applies_what_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "reload");
    let home = dir.path().join("home");
    common::activate(
        &common::env_in(&home),
        &key,
        &[spec(1, 2, CountingUnit::Handle)],
    );
    let config = write_config(dir.path(), &home, "before", 1500);
    let cfg = config.to_str().unwrap();
    let mut server =
        ServerProc::start_with(&dir.path().join("state"), &home, 0, &["--config", cfg]);
    let admin = server.admin.clone();
    let bearer = local_bearer(&admin);
    let licenses = |admin: &str| {
        get(admin, "/api/v1/licenses", &[]).json()["licenses"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(licenses(&admin), 1);
    // The customer installs a new license; the admin edits the file.
    common::activate(
        &common::env_in(&home),
        &key,
        &[spec(7, 4, CountingUnit::Handle)],
    );
    write_config(dir.path(), &home, "after", 4500);
    let r = request(
        &admin,
        "POST",
        "/api/v1/reload",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = r.json();
    assert_eq!(r["licenses"], 2);
    assert_eq!(r["restart_needed"], serde_json::json!(["name"]));
    assert!(r["applied"].to_string().contains("lease_ms = 4500"), "{r}");
    assert_eq!(licenses(&admin), 2);
    let st = get(&admin, "/api/v1/status", &[]).json();
    assert_eq!(st["lease_ms"], 4500);
    assert_eq!(st["name"], "before", "the name needs a restart");
    // A client gets the new product, with the new lease.
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![server.addr.clone()];
    let env = Environment {
        home: dir.path().join("client"),
        host: HostIdentity::simulated("client"),
        clock: Arc::new(SystemClock),
    };
    let s = Session::open_in(o, env).unwrap();
    let seat = s.acquire(7, 0, false).expect("the reloaded license serves");
    assert_eq!(seat.info().unwrap().in_use, 1);
    drop(seat);
    // A configuration that does not check out is refused, and nothing changes.
    std::fs::write(&config, "lease_ms = 10\nrenew_ms = 300\n").unwrap();
    let r = request(
        &admin,
        "POST",
        "/api/v1/reload",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 422, "{r:?}");
    assert!(r.error().contains("lease_ms"), "{r:?}");
    assert_eq!(get(&admin, "/api/v1/status", &[]).json()["lease_ms"], 4500);
    server.kill9();
}

#[test]
fn the_seat_history_survives_a_restart() {
    let mut f = fixture(&[spec(1, 5, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let s1 = a.acquire(1, 0, false).unwrap();
    let s2 = a.acquire(1, 0, false).unwrap();
    let q = format!("/api/v1/history?product={VENDOR}:1&minutes=3");
    let peak = |admin: &str| -> u64 {
        let h = get(admin, &q, &[]).json();
        assert_eq!(h["products"].as_array().unwrap().len(), 1, "{h}");
        h["products"][0]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_u64().unwrap())
            .max()
            .unwrap_or(0)
    };
    assert_eq!(peak(&f.server.admin), 2);
    drop((s1, s2));
    // SIGTERM: the server writes the minute in progress before it stops.
    assert!(f.server.stop().success());
    f.server = ServerProc::start(&f.server.state.clone(), &f.server.home.clone(), 0);
    let h = get(&f.server.admin, &q, &[]).json();
    assert_eq!(h["products"][0]["in_use"], 0, "none held now: {h}");
    assert_eq!(peak(&f.server.admin), 2, "the peak was kept: {h}");
}

fn tessera_admin(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(common::bin("tessera"));
    cmd.arg("admin")
        .args(args)
        .env_remove("TESSERA_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("TESSERA_ADMIN_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn tessera_admin_commands_talk_to_the_api() {
    let f = token_fixture(&[spec(1, 2, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let seat = a.acquire(1, 0, false).unwrap();
    let url = format!("http://{}", f.server.admin);
    let srv = ["--server", url.as_str()];
    let tok = Some(TOKEN);

    let (code, out, err) = tessera_admin(&[&srv[..], &["status"]].concat(), tok);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("server:       test-server"), "{out}");
    assert!(out.contains("seats in use: 1 of 2"), "{out}");
    assert!(out.contains("1 handle(s) hold them"), "{out}");

    let (code, out, _) = tessera_admin(&[&srv[..], &["licenses"]].concat(), tok);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("PRODUCT"), "{out}");
    assert!(out.contains("Product 1") && out.contains("1 of 2"), "{out}");

    let (code, out, _) = tessera_admin(&[&srv[..], &["seats", "--json"]].concat(), tok);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["seats"][0]["seat_id"].as_str().unwrap().to_string();
    assert_eq!(v["seats"][0]["host"], "host-a");
    let (code, out, _) = tessera_admin(&[&srv[..], &["seats"]].concat(), tok);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("host-a"), "{out}");

    // Without the token, or with a wrong one: a clear refusal, exit 1.
    let (code, _, err) = tessera_admin(&[&srv[..], &["seats"]].concat(), None);
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("token"), "{err}");
    let (code, _, err) = tessera_admin(
        &[&srv[..], &["--token", "not-the-token", "revoke", &id]].concat(),
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");

    let (code, out, err) = tessera_admin(
        &[&srv[..], &["revoke", &id, "--reason", "cli test"]].concat(),
        tok,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("revoked seat {id}")), "{out}");
    assert!(matches!(wait_for_failure(&seat), Error::LeaseLost(_)));
    let (code, _, err) = tessera_admin(&[&srv[..], &["revoke", &id]].concat(), tok);
    assert_eq!(code, 1);
    assert!(err.contains("404") && err.contains("no live seat"), "{err}");

    let (code, out, err) = tessera_admin(&[&srv[..], &["reload", "--json"]].concat(), tok);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["licenses"],
        1
    );

    // The publisher's usage log, exported (checkpointed up to now) and checked with the
    // publisher's public key alone: the grant and the revoke above are in it, all signed.
    let file = f.dir.path().join("usage.out");
    let (code, _, err) = tessera_admin(
        &[&srv[..], &["export-usage", "--out", file.to_str().unwrap()]].concat(),
        tok,
    );
    assert_eq!(code, 0, "{err}");
    let public = f.dir.path().join("publisher.pub");
    std::fs::write(&public, f.key.public_key_text()).unwrap();
    let out = Command::new(common::bin("tessera-vendor"))
        .args(["verify-usage", "--json", "--key"])
        .arg(&public)
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let text = v.to_string();
    assert!(text.contains("\"grants\":1"), "{text}");
    assert!(text.contains("\"revokes\":1"), "{text}");
    // A vendor this server keeps no log of: 404, and no file.
    let other = f.dir.path().join("other.out");
    let (code, _, err) = tessera_admin(
        &[
            &srv[..],
            &[
                "export-usage",
                "--vendor",
                "0x1234",
                "--out",
                other.to_str().unwrap(),
            ],
        ]
        .concat(),
        tok,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("404") && err.contains("no usage log of vendor 0x1234"),
        "{err}"
    );
    assert!(!other.exists());

    // Nobody there.
    let (code, _, err) = tessera_admin(&["--server", "http://127.0.0.1:1", "status"], None);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the admin API"), "{err}");
    let (code, _, err) = tessera_admin(&["--server", "https://127.0.0.1:1", "status"], None);
    assert_eq!(code, 1);
    assert!(err.contains("plain HTTP"), "{err}");
}

#[test]
fn a_usage_log_of_many_chunks_is_exported_whole_and_verifies() {
    // 600 grants and releases: about 190 KB of log, streamed in 64 KiB chunks.
    let f = fixture(&[spec(1, 2, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    for _ in 0..600 {
        drop(a.acquire(1, 0, false).unwrap());
    }
    let url = format!("http://{}", f.server.admin);
    let file = f.dir.path().join("usage.out");
    let (code, _, err) = tessera_admin(
        &[
            "--server",
            &url,
            "export-usage",
            "--out",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let exported = std::fs::read(&file).unwrap();
    assert!(exported.len() > 2 * 64 * 1024, "{} bytes", exported.len());
    // Byte for byte the server's log as it stood after the export's checkpoint.
    let log = std::fs::read(f.server.state.join("usage").join(format!("{VENDOR}.log"))).unwrap();
    assert_eq!(&log[..exported.len()], &exported[..]);
    let public = f.dir.path().join("publisher.pub");
    std::fs::write(&public, f.key.public_key_text()).unwrap();
    let out = Command::new(common::bin("tessera-vendor"))
        .args(["verify-usage", "--json", "--key"])
        .arg(&public)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"grants\":600") && text.contains("\"releases\":600"),
        "{text}"
    );
    assert!(text.contains("\"unverified_tail\":0"), "{text}");
}

#[test]
fn who_holds_a_seat_and_since_when_survive_a_graceful_restart() {
    let mut f = fixture(&[spec(1, 1, CountingUnit::Handle)]);
    let _child = common::server::KillOnDrop(seat_holder_process(&f));
    let before = seats(&f.server.admin, &[]);
    assert_eq!(before.len(), 1);
    let (host, since) = (before[0]["host"].clone(), before[0]["since"].clone());
    assert!(host.is_string() && since.is_u64(), "{before:?}");
    // Restarted (SIGTERM, then the same state and port) seconds later: the seat shows who
    // holds it and since when, as before. A holder learnt anew from the client's
    // re-attachment would say "since" the restart.
    std::thread::sleep(Duration::from_millis(2_100));
    let restarted_at = tessera::util::now();
    assert!(f.server.stop().success());
    f.server = ServerProc::start_with(
        &f.server.state.clone(),
        &f.server.home.clone(),
        f.server.port,
        &[],
    );
    let after = seats(&f.server.admin, &[]);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["seat_id"], before[0]["seat_id"]);
    assert_eq!(after[0]["host"], host);
    assert_eq!(after[0]["since"], since);
    assert!(since.as_u64().unwrap() < restarted_at);
}
