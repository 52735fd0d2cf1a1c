//! Local seats of a software container, taken by real processes, against a reference model.
//!
//! Child processes (this test binary run again in child mode, [`model_seat_child`]) open a
//! session on a software container in a temporary `TESSERA_HOME` and take and drop seats
//! through the library on command; the parent starts them, tells them what to do, kills them
//! with SIGKILL, and after every step reads the seats in use from the machine-wide registry
//! (`/dev/shm/tessera/seats/<this test's container serial>`, removed at the end). The model
//! (`README.md`, "Seats on one machine"): a seat is held by its identity (the station, a
//! session, a process, or each acquire for the handle unit); holders of one identity share a
//! seat; at most `quantity` identities hold seats; an exclusive seat needs an idle license
//! and blocks every other acquire; a killed process's seats are free at once.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tessera::client::seats::{MACHINE_DIR, Registry};
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::container::SoftwareContainer;
use tessera::container::software::list_for_vendor;
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

const VENDOR: u32 = 0x30DE;
/// Quantities tried per unit.
const QUANTITIES: [u32; 3] = [1, 2, 3];
/// Sessions the children run in, and how many children live at once at most.
const SESSIONS: usize = 2;
const MAX_CHILDREN: usize = 4;
const UNITS: [CountingUnit; 4] = [
    CountingUnit::Station,
    CountingUnit::Session,
    CountingUnit::Process,
    CountingUnit::Handle,
];

fn product(unit: CountingUnit, quantity: u32) -> u32 {
    10 * unit.code() + quantity
}

/// The environment of every process of the test: one simulated machine (the container is
/// activated for it) in login session `session`. The clock is only read for the
/// container's high-water mark; the licenses are perpetual.
fn env(home: &Path, session: usize) -> Environment {
    let mut host = HostIdentity::simulated("model host");
    host.session.id = format!("model-session-{session}");
    Environment {
        home: home.to_path_buf(),
        host,
        clock: Arc::new(SystemClock),
    }
}

fn options(key: &PublisherKey) -> SessionOptions {
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::SOFTWARE;
    o
}

/// Child mode: with `TESSERA_MODEL_CHILD_HOME` set, opens a session and, for each line on
/// stdin, `acquire <product> <exclusive 0|1>` or `release` (the latest seat), answers one
/// `MODEL ...` line. Ends when stdin closes. Without the variable (an ordinary test run) it
/// has nothing to do.
#[test]
fn model_seat_child() {
    let Ok(home) = std::env::var("TESSERA_MODEL_CHILD_HOME") else {
        return;
    };
    let session: usize = std::env::var("TESSERA_MODEL_CHILD_SESSION")
        .expect("child session")
        .parse()
        .expect("child session number");
    let home = PathBuf::from(home);
    let key = PublisherKey::load(&home.join("key")).expect("publisher key");
    let s = Session::open_in(options(&key), env(&home, session)).expect("session");
    let mut seats = Vec::new();
    let mut out = std::io::stdout();
    for line in std::io::stdin().lines() {
        let line = line.expect("a command");
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["acquire", product, exclusive] => {
                match s.acquire(product.parse().unwrap(), 0, *exclusive == "1") {
                    Ok(seat) => {
                        seats.push(seat);
                        "ok".to_string()
                    }
                    Err(tessera::Error::NoSeat { .. }) => "no-seat".into(),
                    Err(tessera::Error::ExclusiveDenied(_)) => "exclusive-denied".into(),
                    Err(e) => format!("error {e}"),
                }
            }
            ["release"] => match seats.pop() {
                Some(seat) => {
                    drop(seat);
                    "released".into()
                }
                None => "none".into(),
            },
            _ => format!("error unknown command {line:?}"),
        };
        writeln!(out, "MODEL {answer}").unwrap();
        out.flush().unwrap();
    }
}

/// A child process in child mode.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    session: usize,
    /// The model: the identities of the seats it holds, in the order taken.
    seats: Vec<(Identity, bool)>,
}

impl Proc {
    fn spawn(home: &Path, session: usize) -> Proc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "local::model_seat_child", "--nocapture"])
            .args(["--test-threads=1"])
            .env("TESSERA_MODEL_CHILD_HOME", home)
            .env("TESSERA_MODEL_CHILD_SESSION", session.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning a child");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Proc {
            child,
            stdin,
            stdout,
            session,
            seats: Vec::new(),
        }
    }

    /// Sends a command and reads its answer.
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("writing to a child");
        self.stdin.flush().expect("writing to a child");
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("reading a child");
            assert!(n > 0, "a child exited before answering {command:?}");
            // libtest may print the test's name on the line before the test's own output.
            if let Some(at) = line.find("MODEL ") {
                return line[at + 6..].trim().to_string();
            }
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The children of a case: killed (and waited for) when the case ends, also on a failure.
#[derive(Default)]
struct Children(Vec<Proc>);

impl Drop for Children {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
            p.kill();
        }
    }
}

/// Removes the test's container's seat folder from the machine-wide registry.
struct MachineSeats(String);

impl Drop for MachineSeats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new(MACHINE_DIR).join("seats").join(&self.0));
    }
}

/// How often each answer and event came.
type Tally = std::collections::BTreeMap<&'static str, u64>;

/// What a seat is held by, in the model.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Identity {
    Station,
    Session(usize),
    Process(u32),
    Handle(u32),
}

#[derive(Clone, Debug)]
pub enum Step {
    /// A new process (in a session) starts and takes a seat.
    SpawnAcquire { session: usize, exclusive: bool },
    /// A running process (index modulo the running ones) takes another seat.
    Acquire { child: usize, exclusive: bool },
    /// A running process drops its latest seat.
    Release { child: usize },
    /// A running process is killed with SIGKILL.
    Kill { child: usize },
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let excl = || prop::bool::weighted(0.15);
    prop_oneof![
        4 => (0..SESSIONS, excl())
            .prop_map(|(session, exclusive)| Step::SpawnAcquire { session, exclusive }),
        2 => (0..MAX_CHILDREN, excl()).prop_map(|(child, exclusive)| Step::Acquire { child, exclusive }),
        2 => (0..MAX_CHILDREN).prop_map(|child| Step::Release { child }),
        2 => (0..MAX_CHILDREN).prop_map(|child| Step::Kill { child }),
    ]
}

/// A case: the license (unit, quantity) and the steps.
type Case = (CountingUnit, u32, Vec<Step>);

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(UNITS.to_vec()),
        prop::sample::select(QUANTITIES.to_vec()),
        prop::collection::vec(step_strategy(), 1..12),
    )
}

/// The test's container and how to read a license's seats in use.
struct Fixture {
    home: tempfile::TempDir,
    serial: String,
    /// (product, license id in hex, quantity).
    licenses: Vec<(u32, String, u32)>,
    _clean: MachineSeats,
}

impl Fixture {
    fn new() -> Fixture {
        let home = tempfile::tempdir().expect("a temporary home");
        let key = PublisherKey::generate(VENDOR, "model");
        key.save(&home.path().join("key")).expect("saving the key");
        let mut specs = Vec::new();
        for unit in UNITS {
            for q in QUANTITIES {
                let mut s = crate::common::spec(product(unit, q), q, unit);
                s.exclusive_allowed = true;
                specs.push(s);
            }
        }
        let e = env(home.path(), 0);
        let serial = crate::common::activate(&e, &key, &specs);
        let clean = MachineSeats(serial.clone());
        let c = SoftwareContainer::load(
            &list_for_vendor(home.path(), VENDOR)[0],
            &e.host.fingerprint,
        )
        .expect("loading the container");
        let licenses = c
            .engine
            .licenses()
            .iter()
            .map(|l| (l.product_code, l.id_hex(), l.quantity))
            .collect();
        Fixture {
            home,
            serial,
            licenses,
            _clean: clean,
        }
    }

    fn in_use(&self, product: u32) -> u32 {
        let (_, id, q) = self
            .licenses
            .iter()
            .find(|(p, _, _)| *p == product)
            .expect("the product's license");
        Registry::machine()
            .pool(&self.serial, id, *q, Duration::from_secs(5))
            .and_then(|p| p.in_use())
            .expect("reading the seats in use")
    }
}

/// The model's answer to an acquire by `me` (an index into `children`).
fn expect_acquire(
    children: &[Proc],
    quantity: u32,
    identity: &Identity,
    exclusive: bool,
) -> &'static str {
    let held: BTreeSet<&Identity> = children
        .iter()
        .flat_map(|p| p.seats.iter().map(|(i, _)| i))
        .collect();
    // An exclusive holder blocks every other acquire, its own process's too.
    if children.iter().any(|p| p.seats.iter().any(|(_, x)| *x)) {
        return "exclusive-denied";
    }
    if exclusive && !held.is_empty() {
        return "exclusive-denied";
    }
    // Holders of one identity share its seat (a handle's identity is new each time).
    if held.contains(identity) {
        return "ok";
    }
    if held.len() as u32 >= quantity {
        return "no-seat";
    }
    "ok"
}

fn held_count(children: &[Proc]) -> u32 {
    children
        .iter()
        .flat_map(|p| p.seats.iter().map(|(i, _)| i.clone()))
        .collect::<BTreeSet<_>>()
        .len() as u32
}

fn run_case(fx: &Fixture, case: &Case, tally: &mut Tally) -> Result<(), String> {
    let (unit, quantity, steps) = case;
    let product = product(*unit, *quantity);
    let mut children = Children::default();
    let mut handles = 0u32;
    for (i, step) in steps.iter().enumerate() {
        let running = children.0.len();
        let (me, exclusive) = match *step {
            Step::SpawnAcquire { session, exclusive } => {
                if running == MAX_CHILDREN {
                    continue;
                }
                children.0.push(Proc::spawn(fx.home.path(), session));
                *tally.entry("processes").or_default() += 1;
                (running, exclusive)
            }
            Step::Acquire { child, exclusive } if running > 0 => (child % running, exclusive),
            Step::Release { child } if running > 0 => {
                let p = &mut children.0[child % running];
                let got = p.ask("release");
                let want = if p.seats.pop().is_some() {
                    "released"
                } else {
                    "none"
                };
                if got != want {
                    return Err(format!(
                        "step {i} ({step:?}): child says {got}, model {want}"
                    ));
                }
                *tally.entry(want).or_default() += 1;
                check_in_use(fx, product, &children.0, i, step)?;
                continue;
            }
            Step::Kill { child } if running > 0 => {
                children.0.remove(child % running).kill();
                *tally.entry("killed").or_default() += 1;
                check_in_use(fx, product, &children.0, i, step)?;
                continue;
            }
            _ => continue,
        };
        let identity = match unit {
            CountingUnit::Station => Identity::Station,
            CountingUnit::Session => Identity::Session(children.0[me].session),
            CountingUnit::Process => Identity::Process(children.0[me].child.id()),
            CountingUnit::Handle => {
                handles += 1;
                Identity::Handle(handles)
            }
        };
        let want = expect_acquire(&children.0, *quantity, &identity, exclusive);
        let p = &mut children.0[me];
        let got = p.ask(&format!("acquire {product} {}", u8::from(exclusive)));
        if got != want {
            return Err(format!(
                "step {i} ({step:?}) by child {me}: child says {got}, model {want}"
            ));
        }
        *tally.entry(want).or_default() += 1;
        if got == "ok" {
            p.seats.push((identity, exclusive));
        }
        check_in_use(fx, product, &children.0, i, step)?;
    }
    drop(children);
    let left = fx.in_use(product);
    if left != 0 {
        return Err(format!(
            "{left} seat(s) still in use after every child was killed"
        ));
    }
    Ok(())
}

fn check_in_use(
    fx: &Fixture,
    product: u32,
    children: &[Proc],
    i: usize,
    step: &Step,
) -> Result<(), String> {
    let (real, model) = (fx.in_use(product), held_count(children));
    if real != model {
        return Err(format!(
            "after step {i} ({step:?}): {real} seat(s) in use, model {model}"
        ));
    }
    Ok(())
}

#[test]
fn local_seats_of_real_processes_agree_with_the_model() {
    let cases = crate::cases_from_env("TESSERA_MODEL_PROCESS_CASES", 64);
    let fx = Fixture::new();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Each shrinking step starts processes again: keep shrinking short.
        max_shrink_iters: 256,
        ..Config::default()
    });
    let tally = std::cell::RefCell::new(Tally::new());
    match runner.run(&case_strategy(), |case| {
        run_case(&fx, &case, &mut tally.borrow_mut()).map_err(TestCaseError::fail)
    }) {
        Ok(()) => {
            let tally = tally.into_inner();
            eprintln!("model check, local seats: {cases} cases, 0 disagreements; {tally:?}");
            // The cases reach the rules that matter.
            if cases >= 32 {
                for k in ["ok", "no-seat", "killed"] {
                    assert!(tally.get(k).is_some_and(|n| *n > 0), "no {k} in {tally:?}");
                }
            }
        }
        Err(TestError::Fail(why, (unit, quantity, steps))) => panic!(
            "local seats disagree with the model: {why}\nminimal case: {unit} unit, quantity \
             {quantity}, steps {steps:#?}"
        ),
        Err(e) => panic!("local seats: {e}"),
    }
}
