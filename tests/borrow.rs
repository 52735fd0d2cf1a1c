//! Borrowing, end to end on this machine: a real `tessera-server` on loopback lends seats to
//! client sessions of simulated machines (their own homes and host identities, injected
//! clocks), which keep them in their own software container and use them with no server.
//! The same across real links, with separate client processes under a shifted clock, is in
//! tests/netns.rs (`a_borrowed_seat_goes_home_*`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tessera::Error;
use tessera::cipher::{self, Mode};
use tessera::client::{Environment, Session, SessionOptions, SourceKind, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::license::borrow::DAY;
use tessera::publisher::{LicenseSpec, PublisherKey};
use tessera::util::OffsetClock;

mod common;
use common::server::ServerProc;
use common::spec;

const VENDOR: u32 = 0xB0;

struct Fixture {
    dir: tempfile::TempDir,
    key: PublisherKey,
    server: ServerProc,
}

/// Product 7 (`quantity` seats by station, borrowable for 3 days), product 8 (not
/// borrowable) and product 9 (4 seats by handle, borrowable for 2 days) on a server of this
/// machine.
fn fixture(quantity: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "borrow tests");
    let mut seven = spec(7, quantity, CountingUnit::Station);
    seven.borrow_days = 3;
    let eight: LicenseSpec = spec(8, quantity, CountingUnit::Station);
    let mut nine = spec(9, 4, CountingUnit::Handle);
    nine.borrow_days = 2;
    let home = dir.path().join("server-home");
    common::activate(&common::env_in(&home), &key, &[seven, eight, nine]);
    let server = ServerProc::start(&dir.path().join("server-state"), &home, 0);
    Fixture { dir, key, server }
}

/// A session of machine `name` (its home under the fixture), with its clock `offset`
/// seconds from now, on `srcs`.
fn session_of(f: &Fixture, name: &str, host: &str, offset: i64, srcs: u32) -> Session {
    session_at(
        f,
        &f.dir.path().join(format!("home-{name}")),
        host,
        offset,
        srcs,
    )
}

fn session_at(f: &Fixture, home: &Path, host: &str, offset: i64, srcs: u32) -> Session {
    let mut o = SessionOptions::new(VENDOR, f.key.public_key());
    o.sources = srcs;
    o.servers = vec![f.server.addr.clone()];
    o.timeout = Duration::from_secs(2);
    let env = Environment {
        home: home.to_path_buf(),
        host: HostIdentity::simulated(host),
        clock: Arc::new(OffsetClock { offset }),
    };
    Session::open_in(o, env).unwrap()
}

/// A session of laptop `name` (dongles left out: none are plugged in here).
fn laptop(f: &Fixture, name: &str, offset: i64) -> Session {
    session_of(f, name, name, offset, sources::SOFTWARE | sources::NETWORK)
}

/// A desktop with network seats only.
fn desk(f: &Fixture, name: &str) -> Session {
    session_of(f, name, name, 0, sources::NETWORK)
}

fn roundtrip(seat: &tessera::client::Seat, mode: Mode) -> Vec<u8> {
    let msg = b"borrowed, far from the office";
    let mut ct = vec![0u8; cipher::ciphertext_len(msg.len())];
    let n = seat.encrypt(mode, msg, &mut ct).unwrap();
    let mut pt = vec![0u8; msg.len()];
    assert_eq!(seat.decrypt(&ct[..n], &mut pt).unwrap(), msg.len());
    assert_eq!(&pt, msg);
    ct.truncate(n);
    ct
}

#[test]
fn a_borrowed_seat_works_with_no_server_until_it_ends_and_not_after() {
    let mut f = fixture(2);
    let now = tessera::util::now();
    // Ciphertext a network seat wrote at the office.
    let office = desk(&f, "office")
        .acquire(7, 0, false)
        .expect("a network seat");
    let office_ct = roundtrip(&office, Mode::Derived);
    drop(office);

    let s = laptop(&f, "laptop", 0);
    let (until, seat_id) = s.borrow(7, 1, 3).expect("borrow");
    assert!(
        until >= now + 3 * DAY && until <= tessera::util::now() + 3 * DAY,
        "{until}"
    );
    let listed = s.licenses().unwrap();
    let b = listed
        .iter()
        .find(|l| l.borrowed_until.is_some())
        .expect("listed");
    assert_eq!(
        (b.source, b.license.quantity, b.borrowed_until),
        (SourceKind::Software, 1, Some(until))
    );
    assert_eq!(s.borrowed().unwrap()[0].seat_id, seat_id);
    drop(s);

    // The server is gone: the seat is used from the laptop's container.
    f.server.kill9();
    for (offset, what) in [(0, "now"), (2 * DAY as i64, "two days on")] {
        let s = laptop(&f, "laptop", offset);
        let seat = s
            .acquire(7, 1, false)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let info = seat.info().unwrap();
        assert_eq!(info.source, SourceKind::Software, "{what}");
        assert_eq!(
            (info.borrowed_until, info.expiry),
            (Some(until), Some(until))
        );
        assert_eq!((info.quantity, info.in_use), (1, 1));
        assert_eq!(info.server.as_deref(), Some(f.server.addr.as_str()));
        roundtrip(&seat, Mode::Derived);
        roundtrip(&seat, Mode::Direct);
        // What the office wrote opens here: the borrowed seat holds the product's key.
        let mut pt = vec![0u8; cipher::plaintext_len(office_ct.len())];
        seat.decrypt(&office_ct, &mut pt).unwrap();
        assert_eq!(&pt, b"borrowed, far from the office");
    }
    // Giving it back needs the server: without it the seat stays, with the error.
    let s = laptop(&f, "laptop", 0);
    let e = s.return_borrowed(7).unwrap_err();
    assert!(matches!(e, Error::Io { .. } | Error::Timeout(_)), "{e}");
    assert_eq!(s.borrowed().unwrap().len(), 1);
    drop(s);
    // The clock set back a day behind what the container has seen: refused.
    let e = laptop(&f, "laptop", DAY as i64)
        .acquire(7, 0, false)
        .unwrap_err();
    assert!(matches!(e, Error::ClockRollback { .. }), "{e}");

    // A process that holds the seat across its end loses it then.
    let end = until as i64 - tessera::util::now() as i64;
    let clock = Arc::new(MovableClock(AtomicI64::new(end - 3600)));
    let s = session_with_clock(&f, "laptop", clock.clone());
    let held = s.acquire(7, 0, false).unwrap();
    roundtrip(&held, Mode::Derived);
    clock.0.store(end + 10, Ordering::SeqCst);
    let mut out = vec![0u8; cipher::ciphertext_len(3)];
    let e = held.encrypt(Mode::Derived, b"abc", &mut out).unwrap_err();
    assert!(
        matches!(e, Error::Expired { expiry } if expiry == until),
        "{e}"
    );
    let e = s.acquire(7, 0, false).unwrap_err();
    assert!(
        matches!(e, Error::Expired { expiry } if expiry == until),
        "{e}"
    );
    drop((held, s));
    // A session opened after the end says so too, and saves the clock mark: the ended seat
    // is gone from the container, and the clock set back into the borrowed days does not
    // bring it back.
    let s = laptop(&f, "laptop", end + 10);
    let e = s.acquire(7, 0, false).unwrap_err();
    assert!(
        matches!(e, Error::Expired { expiry } if expiry == until),
        "{e}"
    );
    assert!(s.borrowed().unwrap().is_empty());
    let back = laptop(&f, "laptop", DAY as i64);
    assert!(back.borrowed().unwrap().is_empty());
    let e = back.acquire(7, 0, false).unwrap_err();
    assert!(
        !matches!(e, Error::Internal(_)),
        "refused, as not licensed here: {e}"
    );
}

/// A clock the test moves: seconds from now.
#[derive(Debug)]
struct MovableClock(AtomicI64);

impl tessera::util::Clock for MovableClock {
    fn now(&self) -> u64 {
        tessera::util::now().saturating_add_signed(self.0.load(Ordering::SeqCst))
    }
}

fn session_with_clock(f: &Fixture, name: &str, clock: Arc<MovableClock>) -> Session {
    let mut o = SessionOptions::new(VENDOR, f.key.public_key());
    o.sources = sources::SOFTWARE | sources::NETWORK;
    o.servers = vec![f.server.addr.clone()];
    o.timeout = Duration::from_secs(2);
    let env = Environment {
        home: f.dir.path().join(format!("home-{name}")),
        host: HostIdentity::simulated(name),
        clock,
    };
    Session::open_in(o, env).unwrap()
}

#[test]
fn returning_frees_the_seat_at_once_for_another_client() {
    let f = fixture(1);
    let s = laptop(&f, "laptop", 0);
    s.borrow(7, 0, 2).expect("borrow");
    // The only seat is lent.
    let e = desk(&f, "desk").acquire(7, 0, false).unwrap_err();
    assert!(matches!(e, Error::NoSeat { .. }), "{e}");
    // A seat held here when it is given back answers LEASE_LOST afterwards.
    let held = s.acquire(7, 0, false).unwrap();
    assert!(held.borrowed_until().is_some());
    s.return_borrowed(7).expect("return");
    let mut out = vec![0u8; cipher::ciphertext_len(3)];
    assert!(matches!(
        held.encrypt(Mode::Derived, b"abc", &mut out),
        Err(Error::LeaseLost(_))
    ));
    drop(held);
    assert!(s.borrowed().unwrap().is_empty());
    let again = laptop(&f, "laptop", 0);
    assert!(
        again.borrowed().unwrap().is_empty(),
        "gone from the file too"
    );
    // The server freed it at once: another machine gets it.
    let seat = desk(&f, "desk")
        .acquire(7, 0, false)
        .expect("the freed seat");
    assert_eq!(seat.info().unwrap().source, SourceKind::Network);
    // Nothing left to give back.
    assert!(matches!(s.return_borrowed(7), Err(Error::NoLicense(_))));
}

#[test]
fn borrowing_is_refused_beyond_borrow_days_and_for_a_license_that_does_not_lend() {
    let f = fixture(1);
    let s = laptop(&f, "laptop", 0);
    let e = s.borrow(7, 0, 4).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("3 days"), "{e}");
    let e = s.borrow(8, 0, 1).unwrap_err();
    assert!(matches!(e, Error::NoLicense(_)), "{e}");
    assert!(matches!(s.borrow(7, 0, 0), Err(Error::InvalidArgument(_))));
    // Features the license does not grant.
    let e = s.borrow(7, 0x100, 1).unwrap_err();
    assert!(matches!(e, Error::FeatureMissing { .. }), "{e}");
    assert!(s.borrowed().unwrap().is_empty());
    // Nothing refused was counted: the single seat is free.
    desk(&f, "desk")
        .acquire(7, 0, false)
        .expect("the seat is free");
}

#[test]
fn a_copied_borrowed_container_does_not_open_on_another_machine() {
    let f = fixture(2);
    laptop(&f, "laptop", 0).borrow(7, 0, 3).expect("borrow");
    let home = f.dir.path().join("home-laptop");
    let copy = f.dir.path().join("home-copy");
    let from = tessera::container::software::containers_dir(&home);
    let to = tessera::container::software::containers_dir(&copy);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(&from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    // On another machine's traits the copy does not open.
    let thief = session_at(&f, &copy, "thief", 0, sources::SOFTWARE);
    let e = thief.acquire(7, 0, false).unwrap_err();
    assert!(matches!(e, Error::BindingMismatch(_)), "{e}");
    assert!(thief.borrowed().unwrap().is_empty());
    // The same file on the laptop's own traits does (the copy is not what is refused).
    let own = session_at(&f, &copy, "laptop", 0, sources::SOFTWARE);
    own.acquire(7, 0, false).expect("on its own machine");
}

#[test]
fn a_restarted_server_keeps_borrowed_seats_and_never_counts_more_than_the_quantity() {
    let mut f = fixture(2);
    let (a, b) = (laptop(&f, "lap1", 0), laptop(&f, "lap2", 0));
    let (until_a, _) = a.borrow(7, 0, 3).expect("first");
    b.borrow(7, 0, 1).expect("second");
    let e = laptop(&f, "lap3", 0).borrow(7, 0, 1).unwrap_err();
    assert!(matches!(e, Error::NoSeat { .. }), "{e}");
    f.server.restart();
    // Both still lent after the restart: nothing free, for a seat or a borrow.
    let e = desk(&f, "desk").acquire(7, 0, false).unwrap_err();
    assert!(matches!(e, Error::NoSeat { .. }), "{e}");
    let e = laptop(&f, "lap3", 0).borrow(7, 0, 1).unwrap_err();
    assert!(matches!(e, Error::NoSeat { .. }), "{e}");
    // A return after the restart is accepted (the server kept the borrower's key) and
    // frees one.
    let a = laptop(&f, "lap1", 0);
    assert_eq!(a.borrowed().unwrap()[0].until, until_a);
    a.return_borrowed(7).expect("return after a restart");
    let d = desk(&f, "desk");
    let _seat = d.acquire(7, 0, false).expect("one free");
    let e = desk(&f, "desk2").acquire(7, 0, false).unwrap_err();
    assert!(matches!(e, Error::NoSeat { .. }), "{e}");
}

/// include/tessera.hpp: borrow() and return_borrowed() from C++ (tests/c/borrow.cpp) against
/// a server lending product 1 of the demo publisher, the library loaded as an app loads it.
#[test]
fn the_cpp_wrapper_borrows_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("server-home");
    let mut one = spec(1, 1, CountingUnit::Station);
    one.borrow_days = 2;
    common::activate(&common::env_in(&home), &PublisherKey::demo(), &[one]);
    let server = ServerProc::start(&dir.path().join("server-state"), &home, 0);
    let lib = common::libdir(dir.path());
    let exe = dir.path().join("borrow-cpp");
    common::compile("tests/c/borrow.cpp", &exe, &lib, &[]);
    let out = std::process::Command::new(&exe)
        .env("TESSERA_HOME", dir.path().join("laptop-home"))
        .env("TESSERA_SERVERS", &server.addr)
        .env("TESSERA_DISCOVERY", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(", 0 failed"), "{text}");
}

/// Eight laptops borrow at once from a license of three seats: exactly three get one, the
/// others are refused with NO_SEAT, and a network acquire finds nothing left.
#[test]
fn racing_borrows_never_lend_more_than_the_quantity() {
    let f = fixture(3);
    let results: Vec<Result<(u64, [u8; 16]), Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let f = &f;
                scope.spawn(move || laptop(f, &format!("racer{i}"), 0).borrow(7, 0, 1))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let lent = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(lent, 3, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, Error::NoSeat { .. }), "{e}");
        }
    }
    let seat_ids: std::collections::HashSet<[u8; 16]> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(seat_ids.len(), 3, "three different seats");
    let e = desk(&f, "desk").acquire(7, 0, false).unwrap_err();
    assert!(matches!(e, Error::NoSeat { .. }), "{e}");
}

/// A borrowed seat is one seat by the license's counting unit, counted with the local
/// seat-slot locks: of a license counted per acquire (4 seats on the server), the laptop holds
/// one at a time, in this process or another.
#[test]
fn a_borrowed_seat_is_one_seat_by_the_licenses_unit() {
    let f = fixture(1);
    laptop(&f, "laptop", 0).borrow(9, 0, 2).expect("borrow");
    // Away from the office: the software source only (online, a second acquire would get a
    // seat of the server).
    let away = || session_of(&f, "laptop", "laptop", 0, sources::SOFTWARE);
    let s = away();
    let first = s.acquire(9, 0, false).expect("the borrowed seat");
    assert_eq!(first.info().unwrap().counting_unit, CountingUnit::Handle);
    let e = s.acquire(9, 0, false).unwrap_err();
    assert!(matches!(e, Error::NoSeat { .. }), "{e}");
    // Another session (as another process would) is counted by the same slot lock.
    let other = away();
    let e = other.acquire(9, 0, false).unwrap_err();
    assert!(matches!(e, Error::NoSeat { .. }), "{e}");
    assert_eq!(
        other
            .licenses()
            .unwrap()
            .iter()
            .find(|l| l.borrowed_until.is_some())
            .map(|l| (l.in_use, l.license.quantity)),
        Some((1, 1))
    );
    drop(first);
    other.acquire(9, 0, false).expect("free again");
}
