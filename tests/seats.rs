//! Local seat counting across real processes: N processes race for M < N seats and never
//! more than M hold one; a process killed with SIGKILL frees its seat at once; counting
//! units share or split seats as they should.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera::client::{Environment, Session, SessionOptions};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

mod common;
use common::spec;

const VENDOR: u32 = 88;

fn env(home: &Path) -> Environment {
    Environment {
        home: home.to_path_buf(),
        host: HostIdentity::simulated("seat host"),
        clock: Arc::new(SystemClock),
    }
}

/// Removes the seat folder of a test's container from the machine-wide registry (where local
/// seats are counted, whatever the home), also when the test fails.
struct MachineSeats(String);

impl Drop for MachineSeats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(
            Path::new(tessera::client::seats::MACHINE_DIR)
                .join("seats")
                .join(&self.0),
        );
    }
}

fn setup(home: &Path, specs: &[tessera::publisher::LicenseSpec]) -> (PublisherKey, MachineSeats) {
    let key = PublisherKey::generate(VENDOR, "seats");
    key.save(&home.join("key")).unwrap();
    let serial = common::activate(&env(home), &key, specs);
    (key, MachineSeats(serial))
}

/// Child mode: acquire a seat of the product named in the environment, print the verdict,
/// then hold it until stdin closes (or the process is killed).
#[test]
fn child_seat_holder() {
    let Ok(home) = std::env::var("TESSERA_SEAT_CHILD_HOME") else {
        return;
    };
    let product: u32 = std::env::var("TESSERA_SEAT_CHILD_PRODUCT")
        .unwrap()
        .parse()
        .unwrap();
    let home = Path::new(&home);
    let key = PublisherKey::load(&home.join("key")).unwrap();
    let s = Session::open_in(SessionOptions::new(VENDOR, key.public_key()), env(home)).unwrap();
    let verdict = s.acquire(product, 0, false);
    let mut out = std::io::stdout();
    match &verdict {
        Ok(_) => writeln!(out, "SEAT ok").unwrap(),
        Err(e) => writeln!(out, "SEAT refused {e}").unwrap(),
    }
    out.flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(verdict);
}

fn spawn_holder(home: &Path, product: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_seat_holder",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TESSERA_SEAT_CHILD_HOME", home)
        .env("TESSERA_SEAT_CHILD_PRODUCT", product.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn verdict(child: &mut Child) -> bool {
    let mut r = BufReader::new(child.stdout.as_mut().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("child exited without a verdict");
        }
        // libtest prints the test name on the same line before the test's own output.
        if let Some(at) = line.find("SEAT ") {
            return line[at + 5..].starts_with("ok");
        }
    }
}

fn in_use(home: &Path, key: &PublisherKey, product: u32) -> u32 {
    let s = Session::open_in(SessionOptions::new(VENDOR, key.public_key()), env(home)).unwrap();
    // The pool counts every holder; a probe acquire would change the count, so read it
    // through the license's pool directly.
    let lic = s.acquire(product, 0, false).map(|seat| {
        let n = seat.info().unwrap().in_use;
        n - 1
    });
    lic.unwrap_or_else(|_| {
        let c = tessera::container::SoftwareContainer::load(
            &tessera::container::software::list_for_vendor(home, VENDOR)[0],
            &env(home).host.fingerprint,
        )
        .unwrap();
        let l = c
            .engine
            .licenses()
            .iter()
            .find(|l| l.product_code == product)
            .unwrap()
            .clone();
        tessera::client::seats::Registry::machine()
            .pool(
                c.engine.serial(),
                &l.id_hex(),
                l.quantity,
                Duration::from_secs(2),
            )
            .unwrap()
            .in_use()
            .unwrap()
    })
}

#[test]
fn n_processes_racing_for_m_seats_never_exceed_m() {
    let home = tempfile::tempdir().unwrap();
    let (key, _clean) = setup(home.path(), &[spec(1, 3, CountingUnit::Process)]);
    let mut children: Vec<Child> = (0..10).map(|_| spawn_holder(home.path(), 1)).collect();
    let granted: Vec<bool> = children.iter_mut().map(verdict).collect();
    let holders = granted.iter().filter(|g| **g).count();
    assert_eq!(
        holders, 3,
        "exactly M of N processes hold a seat: {granted:?}"
    );
    assert_eq!(in_use(home.path(), &key, 1), 3);
    for mut c in children {
        drop(c.stdin.take());
        c.wait().unwrap();
    }
    assert_eq!(
        in_use(home.path(), &key, 1),
        0,
        "all seats back after the holders exit"
    );
}

#[test]
fn sigkill_frees_the_seat_at_once() {
    let home = tempfile::tempdir().unwrap();
    let (key, _clean) = setup(home.path(), &[spec(2, 1, CountingUnit::Process)]);
    let mut holder = spawn_holder(home.path(), 2);
    assert!(verdict(&mut holder));
    let mut waiting = spawn_holder(home.path(), 2);
    assert!(!verdict(&mut waiting), "the only seat is taken");
    drop(waiting.stdin.take());
    waiting.wait().unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let start = Instant::now();
    let mut next = spawn_holder(home.path(), 2);
    assert!(verdict(&mut next), "the killed process's seat is free");
    assert!(start.elapsed() < Duration::from_secs(10));
    drop(next.stdin.take());
    next.wait().unwrap();
    assert_eq!(in_use(home.path(), &key, 2), 0);
}

#[test]
fn station_unit_shares_one_seat_across_processes_and_handle_unit_does_not() {
    let home = tempfile::tempdir().unwrap();
    let (key, _clean) = setup(
        home.path(),
        &[
            spec(3, 1, CountingUnit::Station),
            spec(4, 2, CountingUnit::Handle),
        ],
    );
    let mut a = spawn_holder(home.path(), 3);
    let mut b = spawn_holder(home.path(), 3);
    assert!(
        verdict(&mut a) && verdict(&mut b),
        "one station, one seat, many processes"
    );
    let s = Session::open_in(
        SessionOptions::new(VENDOR, key.public_key()),
        env(home.path()),
    )
    .unwrap();
    let h1 = s.acquire(4, 0, false).unwrap();
    let h2 = s.acquire(4, 0, false).unwrap();
    assert!(matches!(
        s.acquire(4, 0, false),
        Err(tessera::Error::NoSeat { quantity: 2 })
    ));
    assert_eq!(h2.info().unwrap().in_use, 2);
    drop(h1);
    assert!(s.acquire(4, 0, false).is_ok());
    for mut c in [a, b] {
        drop(c.stdin.take());
        c.wait().unwrap();
    }
}
