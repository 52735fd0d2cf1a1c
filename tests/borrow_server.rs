//! Borrowing, the server's side (issue 16), on a real `tessera-server` process: a borrowed
//! seat is counted against the quantity until it is returned or its time ends, across
//! restarts; only its borrowing container gives it back; the admin API lists it and refuses
//! to revoke it; the usage log records borrow and return, and `tessera-vendor verify-usage`
//! counts the borrowed time. The client here speaks the license protocol by hand
//! (`ServerConn`), with a container engine of its own as the borrowing container.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use tessera::Error;
use tessera::container::{ContainerKind, Engine};
use tessera::host::{Fingerprint, MachineKind};
use tessera::license::CountingUnit;
use tessera::license::borrow::{self, BorrowGrant, DAY};
use tessera::license::usage::{self, Event};
use tessera::net::conn::ServerConn;
use tessera::net::proto::{NetRequest, NetResponse};
use tessera::publisher::{LicenseSpec, PublisherKey};

mod common;
use common::borrow::{Laptop, give_back};
use common::http::{get, request};
use common::server::{ServerProc, faketime_at};
use common::spec;

const VENDOR: u32 = 0xB0;

struct Fixture {
    dir: tempfile::TempDir,
    key: PublisherKey,
    server: ServerProc,
    /// The admin API's token.
    token: String,
}

const TOKEN: &str = "borrow-tests-admin-token-0123456789";

/// A server hosting `specs`, checkpointing its usage log every second, its admin API
/// behind [`TOKEN`].
fn fixture(specs: &[LicenseSpec]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "borrow tests");
    let home = dir.path().join("server-home");
    common::activate(&common::env_in(&home), &key, specs);
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let server = ServerProc::start_with(
        &dir.path().join("server-state"),
        &home,
        0,
        &[
            "--usage-checkpoint-s",
            "1",
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    Fixture {
        dir,
        key,
        server,
        token: TOKEN.into(),
    }
}

/// A license spec of `quantity` stations that may be borrowed for `days`.
fn borrowable(product: u32, quantity: u32, days: u16) -> LicenseSpec {
    let mut s = spec(product, quantity, CountingUnit::Station);
    s.borrow_days = days;
    s
}

impl Fixture {
    fn publisher(&self) -> VerifyingKey {
        self.key.public_key()
    }

    /// A connection as the machine `name` (its own host key: a station of its own).
    fn connect(&self, name: &str) -> ServerConn {
        common::borrow::connect(&self.server.addr, &self.publisher(), VENDOR, name)
    }

    /// The live seats the admin API lists.
    fn seats(&self) -> Vec<serde_json::Value> {
        let auth = format!("Bearer {}", self.token);
        let a = get(
            &self.server.admin,
            "/api/v1/seats",
            &[("Authorization", &auth)],
        );
        assert_eq!(a.status, 200, "{a:?}");
        a.json()["seats"].as_array().unwrap().clone()
    }

    /// Starts the server again (killed first if it runs) with `env` (a moved clock).
    fn restart_at(&mut self, env: &[(String, String)]) {
        let (state, home) = (self.server.state.clone(), self.server.home.clone());
        let extra = self.server.extra.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.server.kill9();
        self.server = ServerProc::start_with_env(&state, &home, 0, &extra, env);
    }

    fn log(&self) -> PathBuf {
        self.server
            .state
            .join("usage")
            .join(format!("{VENDOR}.log"))
    }
}

fn laptop(name: &str) -> Laptop {
    common::borrow::laptop(VENDOR, name)
}

fn borrow(
    conn: &mut ServerConn,
    seat_id: [u8; 16],
    product: u32,
    days: u32,
    l: &Laptop,
) -> tessera::Result<(Vec<u8>, Vec<u8>)> {
    common::borrow::borrow(conn, VENDOR, seat_id, product, days, l)
}

fn seat(n: u8) -> [u8; 16] {
    [n; 16]
}

fn acquire(conn: &mut ServerConn, seat_id: [u8; 16], product: u32) -> tessera::Result<u32> {
    match conn.call(&NetRequest::Acquire {
        seat_id,
        vendor_id: VENDOR,
        product_code: product,
        features: 0,
        exclusive: false,
    })? {
        NetResponse::Granted(g) => Ok(g.in_use),
        other => panic!("{other:?}"),
    }
}

/// The admin API's entry for a seat.
fn listed(seats: &[serde_json::Value], id: &[u8; 16]) -> Option<serde_json::Value> {
    seats
        .iter()
        .find(|s| s["seat_id"] == hex::encode(id).as_str())
        .cloned()
}

#[test]
fn a_borrowed_seat_is_counted_until_its_borrower_returns_it() {
    let f = fixture(&[borrowable(1, 2, 3)]);
    let (alice, bob) = (laptop("alice-laptop"), laptop("bob-laptop"));
    let mut a = f.connect("alice-laptop");
    let mut b = f.connect("bob-laptop");
    let mut c = f.connect("carol-desk");

    let before = tessera::util::now();
    let (grant, certificate) = borrow(&mut a, seat(1), 1, 3, &alice).unwrap();
    let after = tessera::util::now();
    // The grant chains to the publisher, is for Alice's container, for the days asked.
    let (g, lic) = BorrowGrant::verify(
        &grant,
        &certificate,
        &f.publisher(),
        VENDOR,
        alice.engine.serial(),
        &alice.key(),
    )
    .unwrap();
    assert_eq!(
        (g.seat_id, lic.product_code, lic.borrow_days),
        (seat(1), 1, 3)
    );
    assert!(g.issued_at >= before && g.issued_at <= after);
    assert_eq!(g.until, g.issued_at + 3 * DAY);
    assert_eq!(g.borrower_host, "alice-laptop");
    // The product secret is sealed to Alice's container, for this seat only.
    let seal = x25519_dalek::StaticSecret::from(alice.engine.state().seal_secret);
    let ctx = borrow::secret_context(alice.engine.serial(), &seat(1));
    assert!(tessera::cipher::open_secret(&seal, &ctx, &g.secret).is_ok());
    let other = borrow::secret_context(alice.engine.serial(), &seat(2));
    assert!(tessera::cipher::open_secret(&seal, &other, &g.secret).is_err());

    // A retry after a lost answer gets the same grant; another container cannot take the id.
    assert_eq!(borrow(&mut a, seat(1), 1, 3, &alice).unwrap().0, grant);
    let e = borrow(&mut b, seat(1), 1, 3, &bob).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");

    // Bob borrows the second seat; nothing more: neither a borrow nor a leased seat.
    borrow(&mut b, seat(2), 1, 1, &bob).unwrap();
    let e = borrow(&mut c, seat(3), 1, 1, &laptop("carol")).unwrap_err();
    assert!(matches!(e, Error::NoSeat { quantity: 2 }), "{e}");
    let e = acquire(&mut c, seat(4), 1).unwrap_err();
    assert!(matches!(e, Error::NoSeat { quantity: 2 }), "{e}");
    // Even on the borrowing station: a borrowed seat is a slot of its own.
    let e = acquire(&mut a, seat(5), 1).unwrap_err();
    assert!(matches!(e, Error::NoSeat { .. }), "{e}");

    // A borrowed seat is neither renewed nor released: it keeps its end.
    let listed_until = |id: &[u8; 16]| {
        listed(&f.seats(), id).unwrap()["lease_expires"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(listed_until(&seat(1)), g.until);
    match a
        .call(&NetRequest::Renew {
            seat_ids: vec![seat(1)],
        })
        .unwrap()
    {
        NetResponse::Renewed { lost, .. } => assert!(lost.is_empty(), "{lost:?}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.call(&NetRequest::Release { seat_id: seat(1) }).unwrap(),
        NetResponse::Released
    ));
    assert_eq!(listed_until(&seat(1)), g.until);
    assert!(acquire(&mut c, seat(4), 1).is_err());

    // Only Alice's container gives it back.
    let e = give_back(&mut b, seat(1), bob.return_signature(&seat(1))).unwrap_err();
    assert!(matches!(e, Error::BadSignature(_)), "{e}");
    let e = give_back(&mut a, seat(1), alice.return_signature(&seat(2))).unwrap_err();
    assert!(matches!(e, Error::BadSignature(_)), "{e}");
    let e = give_back(&mut a, seat(1), vec![0; 7]).unwrap_err();
    assert!(matches!(e, Error::BadSignature(_)), "{e}");
    assert!(acquire(&mut c, seat(4), 1).is_err());
    // From any connection, signed by Alice's container: freed at once.
    give_back(&mut c, seat(1), alice.return_signature(&seat(1))).unwrap();
    assert_eq!(acquire(&mut c, seat(4), 1).unwrap(), 2);
    assert!(listed(&f.seats(), &seat(1)).is_none());
    // Gone: a second return, or one of a seat never lent, is a lost seat.
    let e = give_back(&mut a, seat(1), alice.return_signature(&seat(1))).unwrap_err();
    assert!(matches!(e, Error::LeaseLost(_)), "{e}");
    let e = give_back(&mut a, seat(9), alice.return_signature(&seat(9))).unwrap_err();
    assert!(matches!(e, Error::LeaseLost(_)), "{e}");
    // A leased seat is not returned either.
    let e = give_back(&mut c, seat(4), alice.return_signature(&seat(4))).unwrap_err();
    assert!(matches!(e, Error::LeaseLost(_)), "{e}");
}

#[test]
fn borrowing_is_refused_beyond_what_the_license_allows() {
    let f = fixture(&[borrowable(1, 5, 2), spec(2, 5, CountingUnit::Station)]);
    let l = laptop("laptop");
    let mut conn = f.connect("laptop");
    for days in [0, 3, u32::MAX] {
        let e = borrow(&mut conn, seat(1), 1, days, &l).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{days}: {e}");
        assert!(e.to_string().contains("1 to 2 days"), "{e}");
    }
    // A license that does not allow borrowing.
    let e = borrow(&mut conn, seat(1), 2, 1, &l).unwrap_err();
    assert!(matches!(e, Error::NoLicense(_)), "{e}");
    assert!(e.to_string().contains("does not allow borrowing"), "{e}");
    // A product the server does not have.
    let e = borrow(&mut conn, seat(1), 3, 1, &l).unwrap_err();
    assert!(matches!(e, Error::NoLicense(_)), "{e}");
    // A borrowing container that is not what it says: garbage, another publisher's, a
    // request its key did not sign.
    let mut bad = Laptop {
        engine: Engine::create(ContainerKind::Software, VENDOR, 0),
        request: b"not a request".to_vec(),
    };
    assert!(borrow(&mut conn, seat(1), 1, 1, &bad).is_err());
    let stranger = Engine::create(ContainerKind::Software, VENDOR + 1, 0);
    bad.request = stranger
        .activation_request(&Fingerprint::default(), MachineKind::Physical, "x", 0)
        .unwrap();
    let e = borrow(&mut conn, seat(1), 1, 1, &bad).unwrap_err();
    assert!(e.to_string().contains("wrong vendor"), "{e}");
    let mut forged = l.request.clone();
    let n = forged.len();
    forged[n - 1] ^= 1;
    bad.request = forged;
    let e = borrow(&mut conn, seat(1), 1, 1, &bad).unwrap_err();
    assert!(matches!(e, Error::BadSignature(_)), "{e}");
    // Nothing was counted; the server goes on lending what the license allows.
    assert!(f.seats().is_empty());
    borrow(&mut conn, seat(1), 1, 2, &l).unwrap();
    assert_eq!(f.seats().len(), 1);
}

#[test]
fn a_restarted_server_keeps_its_borrowed_seats_and_their_ends() {
    let mut f = fixture(&[borrowable(1, 2, 3)]);
    let (alice, bob) = (laptop("alice"), laptop("bob"));
    let mut conn = f.connect("alice");
    borrow(&mut conn, seat(1), 1, 3, &alice).unwrap();
    borrow(&mut conn, seat(2), 1, 1, &bob).unwrap();
    let ends = |f: &Fixture| {
        let seats = f.seats();
        let end = |id| {
            let s = listed(&seats, id).unwrap_or_else(|| panic!("{seats:?}"));
            assert_eq!(s["borrowed"], true, "{s}");
            s["borrowed_until"].as_u64().unwrap()
        };
        (seats.len(), end(&seat(1)), end(&seat(2)))
    };
    let before = ends(&f);
    assert_eq!(before.0, 2);
    assert!(before.1 > before.2, "three days end after one");
    for graceful in [false, true] {
        if graceful {
            let st = f.server.stop();
            assert!(st.success(), "{st}");
            f.restart_at(&[]);
        } else {
            f.server.restart();
        }
        assert_eq!(ends(&f), before, "graceful: {graceful}");
        // Still counted: nothing more is lent or leased.
        let mut c = f.connect("carol");
        let e = acquire(&mut c, seat(3), 1).unwrap_err();
        assert!(matches!(e, Error::NoSeat { .. }), "{e}");
        let e = borrow(&mut c, seat(4), 1, 1, &laptop("carol")).unwrap_err();
        assert!(matches!(e, Error::NoSeat { .. }), "{e}");
        // A retry gets the grant it was given before the restart.
        let mut again = f.connect("alice");
        let (g, _) = borrow(&mut again, seat(1), 1, 3, &alice).unwrap();
        let g = BorrowGrant::parse_unverified(&g).unwrap();
        assert_eq!(g.until, before.1);
    }
    // Returned after the restarts: freed at once.
    let mut c = f.connect("carol");
    give_back(&mut c, seat(2), bob.return_signature(&seat(2))).unwrap();
    assert_eq!(acquire(&mut c, seat(3), 1).unwrap(), 2);
}

/// The server's clock is moved with libfaketime (as scripts/test-shifted-clock.sh moves every
/// test's): started again a few seconds before the seat's end, the seat is still held, with
/// its end (a restart neither shortens nor extends it); the expiry sweep frees it at its end;
/// a server started after the end never holds it.
#[test]
fn a_borrowed_seat_ends_at_its_time_on_the_servers_clock() {
    let mut f = fixture(&[borrowable(1, 1, 1)]);
    let alice = laptop("alice");
    let mut conn = f.connect("alice");
    let (grant, _) = borrow(&mut conn, seat(1), 1, 1, &alice).unwrap();
    let until = BorrowGrant::parse_unverified(&grant).unwrap().until;
    drop(conn);
    let Some(env) = faketime_at(until - 4) else {
        panic!("libfaketime is missing (scripts/install-deps.sh installs faketime)");
    };
    f.restart_at(&env);
    let s = listed(&f.seats(), &seat(1)).expect("held until its end");
    assert_eq!(s["lease_expires"].as_u64(), Some(until));
    let mut c = f.connect("carol");
    assert!(matches!(
        acquire(&mut c, seat(2), 1),
        Err(Error::NoSeat { .. })
    ));
    // The sweep frees it at its end (on the server's clock): polled, not timed.
    let start = Instant::now();
    while listed(&f.seats(), &seat(1)).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the borrowed seat outlived its end"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(acquire(&mut c, seat(2), 1).unwrap(), 1);
    let e = give_back(&mut c, seat(1), alice.return_signature(&seat(1))).unwrap_err();
    assert!(matches!(e, Error::LeaseLost(_)), "{e}");
    // The usage log has the seat's end at its time.
    let st = f.server.stop();
    assert!(st.success(), "{st}");
    let ends: Vec<u64> = records(&f.log())
        .into_iter()
        .filter_map(|e| match e {
            Event::Expire {
                seat: s,
                lease_end_ms,
            } if s.seat_id == seat(1) => Some(lease_end_ms),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![until * 1000]);

    // Lent again (on the moved clock: the hosted container's clock mark went with it, and
    // it lends nothing on a clock behind its mark), and a server started a day past its end
    // never holds it.
    f.restart_at(&env);
    let mut c = f.connect("carol");
    assert!(matches!(
        c.call(&NetRequest::Release { seat_id: seat(2) }).unwrap(),
        NetResponse::Released
    ));
    assert!(f.seats().is_empty());
    let mut conn = f.connect("alice");
    let (grant, _) = borrow(&mut conn, seat(3), 1, 1, &alice).unwrap();
    let until = BorrowGrant::parse_unverified(&grant).unwrap().until;
    f.restart_at(&faketime_at(until + DAY).unwrap());
    assert!(f.seats().is_empty());
    let mut c = f.connect("carol");
    assert_eq!(acquire(&mut c, seat(4), 1).unwrap(), 1);
}

#[test]
fn the_admin_api_lists_a_borrowed_seat_and_refuses_to_revoke_it() {
    let f = fixture(&[borrowable(1, 2, 3)]);
    let alice = laptop("alice-laptop");
    let mut conn = f.connect("alice-laptop");
    let (grant, _) = borrow(&mut conn, seat(1), 1, 2, &alice).unwrap();
    let g = BorrowGrant::parse_unverified(&grant).unwrap();
    acquire(&mut conn, seat(2), 1).unwrap();
    let seats = f.seats();
    let s = listed(&seats, &seat(1)).unwrap();
    assert_eq!(s["borrowed"], true, "{s}");
    assert_eq!(s["host"], "alice-laptop");
    assert_eq!(s["user"], "uid 1000");
    assert_eq!(s["borrower"], alice.engine.serial());
    assert_eq!(s["borrowed_until"].as_u64(), Some(g.until));
    assert_eq!(s["since"].as_u64(), Some(g.issued_at));
    assert_eq!(s["product_code"], 1);
    assert_eq!(listed(&seats, &seat(2)).unwrap()["borrowed"], false);

    let admin = &f.server.admin;
    let auth = format!("Bearer {}", f.token);
    // The metrics count it among the seats in use, and on its own.
    let m = get(admin, "/metrics", &[("Authorization", &auth)]);
    assert_eq!(m.status, 200, "{m:?}");
    let labels = format!("{{vendor=\"{VENDOR}\",product=\"1\",product_name=\"Product 1\"}}");
    assert!(
        m.body
            .contains(&format!("tessera_seats_borrowed{labels} 1\n")),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains(&format!("tessera_seats_in_use{labels} 2\n")),
        "{}",
        m.body
    );
    assert!(m.body.contains("tessera_borrows_total 1\n"), "{}", m.body);
    let r = request(
        admin,
        "POST",
        &format!("/api/v1/seats/{}/revoke", hex::encode(seat(1))),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.error().contains("cannot be revoked"), "{r:?}");
    assert!(r.error().contains(alice.engine.serial()), "{r:?}");
    assert!(listed(&f.seats(), &seat(1)).is_some());
    // The leased seat beside it is revoked as ever.
    let r = request(
        admin,
        "POST",
        &format!("/api/v1/seats/{}/revoke", hex::encode(seat(2))),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");

    // `tessera admin seats` shows it, marked; `tessera admin revoke` says why not.
    let out = Command::new(common::bin("tessera"))
        .args(["admin", "--server", &format!("http://{admin}"), "seats"])
        .env("TESSERA_ADMIN_TOKEN", &f.token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("borrowed"), "{text}");
    assert!(text.contains(alice.engine.serial()), "{text}");
    assert!(text.contains("alice-laptop"), "{text}");
    assert!(
        text.contains(&tessera::util::format_time(g.until)),
        "{text}"
    );
    let out = Command::new(common::bin("tessera"))
        .args([
            "admin",
            "--server",
            &format!("http://{admin}"),
            "revoke",
            &hex::encode(seat(1)),
        ])
        .env("TESSERA_ADMIN_TOKEN", &f.token)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(err.contains("cannot be revoked"), "{err}");
}

/// Every event of a log, in order.
fn records(log: &Path) -> Vec<Event> {
    let bytes = std::fs::read(log).unwrap();
    let mut out = Vec::new();
    usage::scan(&bytes[..], |_, s| {
        out.push(s.record.event.clone());
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn the_usage_log_records_borrow_and_return_and_verify_usage_counts_borrowed_time() {
    let mut f = fixture(&[borrowable(1, 3, 3)]);
    let (alice, bob) = (laptop("alice-laptop"), laptop("bob-laptop"));
    let mut conn = f.connect("alice-laptop");
    let (grant, _) = borrow(&mut conn, seat(1), 1, 3, &alice).unwrap();
    let until = BorrowGrant::parse_unverified(&grant).unwrap().until;
    // A retry is not a second borrow.
    borrow(&mut conn, seat(1), 1, 3, &alice).unwrap();
    give_back(&mut conn, seat(1), alice.return_signature(&seat(1))).unwrap();
    borrow(&mut conn, seat(2), 1, 1, &bob).unwrap();
    let st = f.server.stop();
    assert!(st.success(), "{st}");

    let events = records(&f.log());
    let borrows: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Borrow {
                seat,
                borrower,
                until_ms,
            } => Some((seat.clone(), borrower.clone(), *until_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(borrows.len(), 2, "{events:?}");
    let (s, who, end) = &borrows[0];
    assert_eq!((s.seat_id, s.product_code), (seat(1), 1));
    assert_eq!(who, alice.engine.serial());
    assert_eq!(*end, until * 1000);
    let client = s.client.as_ref().unwrap();
    assert_eq!(client.hostname, "alice-laptop");
    assert_eq!(borrows[1].1, bob.engine.serial());
    let returns: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Return(s) => Some(s.seat_id),
            _ => None,
        })
        .collect();
    assert_eq!(returns, vec![seat(1)]);

    // The publisher's tool verifies it and counts the borrowed time: the borrowed seats
    // are all the seat time there is, and no more than both held from their borrow to the
    // log's last record.
    let key_pub = f.dir.path().join("publisher.pub");
    std::fs::write(&key_pub, f.key.public_key_text()).unwrap();
    let months = verify_usage(&key_pub, &f.log());
    let sum = |k: &str| months.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("borrows"), sum("returns")), (2, 1), "{months:?}");
    let borrowed_ms = sum("borrowed_ms");
    assert!(borrowed_ms > 0, "{months:?}");
    assert_eq!(borrowed_ms, sum("seat_ms"), "{months:?}");
    let span_ms = {
        let mut first_last = (u64::MAX, 0);
        let bytes = std::fs::read(f.log()).unwrap();
        usage::scan(&bytes[..], |_, s| {
            first_last.0 = first_last.0.min(s.record.time_ms);
            first_last.1 = first_last.1.max(s.record.time_ms);
            Ok(())
        })
        .unwrap();
        first_last.1 - first_last.0
    };
    assert!(borrowed_ms <= 2 * span_ms, "{borrowed_ms} > 2 x {span_ms}");

    // The server started again logs on the same chain: Bob's return, and it still verifies.
    f.restart_at(&[]);
    let mut conn = f.connect("bob-laptop");
    give_back(&mut conn, seat(2), bob.return_signature(&seat(2))).unwrap();
    let st = f.server.stop();
    assert!(st.success(), "{st}");
    let months = verify_usage(&key_pub, &f.log());
    let sum = |k: &str| months.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("borrows"), sum("returns")), (2, 2), "{months:?}");
    assert!(sum("borrowed_ms") >= borrowed_ms);
}

/// `tessera-vendor verify-usage --json` of a log: its months (the run must succeed).
fn verify_usage(key_pub: &Path, log: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(common::bin("tessera-vendor"))
        .args([
            OsStr::new("verify-usage"),
            OsStr::new("--key"),
            key_pub.as_os_str(),
            OsStr::new("--json"),
            log.as_os_str(),
        ])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{json}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["months"].as_array().unwrap().clone()
}

#[test]
fn an_acquire_waiting_for_a_seat_gets_the_one_returned() {
    use std::sync::Arc;
    use tessera::client::{Environment, Session, SessionOptions, sources};
    let f = fixture(&[borrowable(1, 1, 2)]);
    let alice = laptop("alice");
    let mut conn = f.connect("alice");
    borrow(&mut conn, seat(1), 1, 2, &alice).unwrap();
    let mut o = SessionOptions::new(VENDOR, f.publisher());
    o.sources = sources::NETWORK;
    o.servers = vec![f.server.addr.clone()];
    o.timeout = Duration::from_secs(5);
    let env = Environment {
        home: f.dir.path().join("client-carol"),
        host: tessera::host::HostIdentity::simulated("carol"),
        clock: Arc::new(tessera::util::SystemClock),
    };
    let carol = Session::open_in(o, env).unwrap();
    assert!(matches!(
        carol.acquire(1, 0, false),
        Err(Error::NoSeat { quantity: 1 })
    ));
    let waiter = std::thread::spawn(move || {
        let got = carol.acquire_wait(1, 0, false, Duration::from_secs(60));
        got.map(|seat| seat.info().unwrap().in_use)
    });
    // Given back while Carol waits (she waits, whenever it comes): she gets the seat.
    std::thread::sleep(Duration::from_millis(300));
    give_back(&mut conn, seat(1), alice.return_signature(&seat(1))).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 1);
}

/// Borrows and acquires racing from many connections never hold more than the quantity, and
/// retries of one borrow racing each other all get its one grant.
#[test]
fn racing_borrows_and_acquires_never_exceed_the_quantity() {
    let f = std::sync::Arc::new(fixture(&[borrowable(1, 3, 2)]));
    let outcomes: Vec<(bool, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12u8)
            .map(|n| {
                let f = &f;
                s.spawn(move || {
                    let name = format!("machine-{n}");
                    let mut conn = f.connect(&name);
                    let got = if n % 3 == 0 {
                        acquire(&mut conn, seat(100 + n), 1).map(drop)
                    } else {
                        borrow(&mut conn, seat(100 + n), 1, 1, &laptop(&name)).map(drop)
                    };
                    match got {
                        Ok(()) => (true, n % 3 == 0),
                        Err(Error::NoSeat { quantity: 3 }) => (false, n % 3 == 0),
                        Err(e) => panic!("{name}: {e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|(ok, _)| *ok).count(),
        3,
        "{outcomes:?}"
    );
    assert_eq!(f.seats().len(), 3);

    // One borrow retried from four connections at once: one seat, one grant.
    let g = std::sync::Arc::new(fixture(&[borrowable(1, 1, 2)]));
    let alice = laptop("alice");
    let grants: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (g, alice) = (&g, &alice);
                s.spawn(move || {
                    let mut conn = g.connect("alice");
                    borrow(&mut conn, seat(7), 1, 2, alice).unwrap().0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(grants.iter().all(|x| *x == grants[0]));
    assert_eq!(g.seats().len(), 1);
}
