//! The usage log of a real `tessera-server`: grants, releases, a denial and an expiry driven
//! through the Rust client, checkpoints signed by the hosted software container every second
//! and at SIGTERM, the log checked by `tessera-vendor verify-usage`; copies with an edited
//! byte, a deleted record, swapped records, a cut, a checkpoint of another publisher's
//! container and a forged checkpoint refused with the record named; a SIGKILL'd server's torn
//! record cut by its restart; a log damaged in its middle refused and left alone until an
//! admin moves it aside.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use tessera::Error;
use tessera::cipher::Mode;
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::container::{ContainerKind, Engine};
use tessera::host::{Fingerprint, HostIdentity, MachineKind};
use tessera::license::CountingUnit;
use tessera::license::usage::{self, Event, Record, Scanned};
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

mod common;
use common::server::{LEASE_MS, ServerProc};
use common::spec;

const VENDOR: u32 = 0x5F;

struct Fixture {
    dir: tempfile::TempDir,
    key: PublisherKey,
    /// The private key file and the public one beside it.
    key_file: PathBuf,
    pub_file: PathBuf,
    server: ServerProc,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = PublisherKey::generate(VENDOR, "usage tests");
        let key_file = dir.path().join("publisher.key");
        key.save(&key_file).unwrap();
        let pub_file = dir.path().join("publisher.pub");
        std::fs::write(&pub_file, key.public_key_text()).unwrap();
        let home = dir.path().join("server-home");
        common::activate(
            &common::env_in(&home),
            &key,
            &[spec(1, 2, CountingUnit::Handle)],
        );
        let server = ServerProc::start_with(
            &dir.path().join("server-state"),
            &home,
            0,
            &["--usage-checkpoint-s", "1"],
        );
        Fixture {
            dir,
            key,
            key_file,
            pub_file,
            server,
        }
    }

    fn log(&self) -> PathBuf {
        self.server
            .state
            .join("usage")
            .join(format!("{VENDOR}.log"))
    }

    fn session(&self, name: &str) -> Session {
        let mut o = SessionOptions::new(VENDOR, self.key.public_key());
        o.sources = sources::NETWORK;
        o.servers = vec![self.server.addr.clone()];
        o.timeout = Duration::from_secs(2);
        let env = Environment {
            home: self.dir.path().join(format!("client-{name}")),
            host: HostIdentity::simulated(name),
            clock: Arc::new(SystemClock),
        };
        Session::open_in(o, env).unwrap()
    }

    /// SIGTERM, and wait for a clean exit.
    fn stop(&mut self) {
        let status = self.server.stop();
        assert!(status.success(), "{status}");
    }

    fn restart(&mut self) {
        let (state, home) = (self.server.state.clone(), self.server.home.clone());
        self.server = ServerProc::start_with(&state, &home, 0, &["--usage-checkpoint-s", "1"]);
    }
}

fn vendor_tool(args: &[&OsStr]) -> Output {
    Command::new(common::bin("tessera-vendor"))
        .args(args)
        .output()
        .unwrap()
}

fn verify_usage(key: &Path, log: &Path, json: bool) -> Output {
    let mut args = vec![
        OsStr::new("verify-usage"),
        OsStr::new("--key"),
        key.as_os_str(),
    ];
    if json {
        args.push(OsStr::new("--json"));
    }
    args.push(log.as_os_str());
    vendor_tool(&args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A number field of flat JSON (`"key":123`).
fn field(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let i = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    json[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {json}"))
}

/// A per-month field summed (or its maximum) over the months of product 1.
fn months(json: &str, key: &str, max: bool) -> u64 {
    let all = json.split("{\"product\":1,").skip(1).map(|m| field(m, key));
    if max {
        all.max().unwrap_or(0)
    } else {
        all.sum()
    }
}

/// Every whole record of a log, with where it is.
fn records(log: &[u8]) -> Vec<Scanned> {
    let mut out = Vec::new();
    usage::scan(log, |_, s| {
        out.push(s.clone());
        Ok(())
    })
    .unwrap();
    out
}

/// Asserts `verify-usage` refuses `bytes`, naming record `seq` at its byte offset.
fn refused(f: &Fixture, name: &str, bytes: &[u8], seq: u64, offset: u64, why: &str) {
    let copy = f.dir.path().join(name);
    std::fs::write(&copy, bytes).unwrap();
    let out = verify_usage(&f.pub_file, &copy, false);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name} accepted: {}",
        text(&out.stdout)
    );
    assert!(
        err.contains(&format!("record {seq} at byte {offset}")) && err.contains(why),
        "{name}: {err}"
    );
    let out = verify_usage(&f.pub_file, &copy, true);
    assert_eq!(out.status.code(), Some(1));
    let json = text(&out.stdout);
    assert!(json.starts_with("{\"ok\":false"), "{json}");
    assert_eq!((field(&json, "seq"), field(&json, "offset")), (seq, offset));
}

/// Child mode: acquire a seat and hold it until killed.
#[test]
fn child_usage_holder() {
    let Some(s) = common::server::child_session(VENDOR, "child") else {
        return;
    };
    let seat = s.acquire(1, 0, false);
    println!("SEAT {}", if seat.is_ok() { "ok" } else { "refused" });
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// A client process that takes a seat and is then SIGKILLed: its lease runs out.
fn a_client_that_dies(f: &Fixture) {
    let mut child = common::server::spawn_seat_holder(
        "child_usage_holder",
        &f.server.addr,
        &f.key_file,
        &f.dir.path().join("child-home"),
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Another publisher's (same vendor id) activated container, to sign with.
fn impostor_container() -> Engine {
    let impostor = PublisherKey::generate(VENDOR, "impostor");
    let now = tessera::util::now();
    let mut e = Engine::create(ContainerKind::Software, VENDOR, now);
    let req = e
        .activation_request(&Fingerprint::default(), MachineKind::Physical, "x", now)
        .unwrap();
    let act = impostor
        .activate(&req, &[spec(1, 2, CountingUnit::Handle)], now)
        .unwrap();
    e.install_activation(&act, Some(&impostor.public_key()), now)
        .unwrap();
    e
}

#[test]
fn a_servers_usage_log_verifies_sums_up_and_every_tampered_copy_is_refused() {
    let mut f = Fixture::new();
    let a = f.session("host-a");
    let seat1 = a.acquire(1, 0, false).unwrap(); // grant 1
    let seat2 = a.acquire(1, 0, false).unwrap(); // grant 2: both seats in use
    // Denials: a client that retries 30 times costs the log a Deny and one folded Denials.
    for _ in 0..30 {
        assert!(matches!(a.acquire(1, 0, false), Err(Error::NoSeat { .. })));
    }
    drop(seat1); // release 1
    a_client_that_dies(&f); // grant 3, then its lease runs out
    std::thread::sleep(Duration::from_millis(LEASE_MS + 1000));
    let seat4 = a.acquire(1, 0, false).unwrap(); // grant 4 (after the expiry)
    // Wait for a periodic checkpoint (every second) to cover all that.
    std::thread::sleep(Duration::from_millis(1500));
    drop(seat2); // release 2
    drop(seat4); // release 3
    f.stop(); // the shutdown checkpoint covers the releases

    // Checked with the public key file, and with the private key file.
    let log = f.log();
    for key in [&f.pub_file, &f.key_file] {
        let out = verify_usage(key, &log, false);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let t = text(&out.stdout);
        assert!(t.contains("unverified tail: none"), "{t}");
        assert!(
            t.contains(&format!("usage log of vendor {VENDOR:#x}")),
            "{t}"
        );
    }
    let out = verify_usage(&f.pub_file, &log, true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    assert!(json.starts_with("{\"ok\":true"), "{json}");
    assert_eq!(field(&json, "vendor_id"), u64::from(VENDOR));
    assert_eq!(field(&json, "starts"), 1);
    assert!(field(&json, "checkpoints") >= 2, "{json}");
    assert_eq!(field(&json, "unverified_tail"), 0);
    assert_eq!(
        field(&json, "verified_records"),
        field(&json, "records") - 1
    );
    assert_eq!(field(&json, "open_at_end"), 0);
    assert_eq!(months(&json, "grants", false), 4, "{json}");
    assert_eq!(months(&json, "releases", false), 3, "{json}");
    assert_eq!(months(&json, "expiries", false), 1, "{json}");
    assert_eq!(months(&json, "denials", false), 30, "{json}");
    assert_eq!(months(&json, "revokes", false), 0, "{json}");
    assert_eq!(months(&json, "peak", true), 2, "{json}");

    // The records as the server wrote them: Start, two grants, the denial, the release, ...
    let bytes = std::fs::read(&log).unwrap();
    let recs = records(&bytes);
    let kinds: Vec<&str> = recs.iter().map(|s| s.record.event.name()).collect();
    assert_eq!(
        &kinds[..5],
        ["start", "grant", "grant", "denial", "release"],
        "{kinds:?}"
    );
    assert!(kinds.contains(&"expiry"), "{kinds:?}");
    let denial_records = kinds
        .iter()
        .filter(|k| matches!(**k, "denial" | "folded denials"))
        .count();
    assert!(
        kinds.contains(&"folded denials") && denial_records <= 4,
        "30 refusals in {denial_records} records: {kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"checkpoint"));
    match &recs[3].record.event {
        Event::Deny { seat, status } => {
            assert_eq!(*status, 101, "TESSERA_E_NO_SEAT");
            assert_eq!(seat.client.as_ref().unwrap().hostname, "host-a");
        }
        other => panic!("{other:?}"),
    }
    let at = |i: usize| recs[i].offset;
    let span = |i: usize| recs[i].offset as usize..(recs[i].offset + recs[i].len) as usize;

    // An edited byte (the last of record 2, inside its client's machine text).
    let mut b = bytes.clone();
    b[span(2).end - 1] ^= 0x20;
    refused(
        &f,
        "edited.log",
        &b,
        2,
        at(2),
        "changed after it was written",
    );
    // A deleted record.
    let mut b = bytes.clone();
    b.drain(span(3));
    refused(&f, "deleted.log", &b, 3, at(3), "record 3 is missing");
    // Two records swapped.
    let mut b = bytes[..span(3).start].to_vec();
    b.extend_from_slice(&bytes[span(4)]);
    b.extend_from_slice(&bytes[span(3)]);
    b.extend_from_slice(&bytes[span(4).end..]);
    refused(&f, "reordered.log", &b, 3, at(3), "deleted or reordered");
    // Cut in the middle of a record.
    refused(
        &f,
        "truncated.log",
        &bytes[..span(4).start + 9],
        4,
        at(4),
        "truncated in the middle of record 4",
    );
    // The first checkpoint re-signed, over the same head, by another publisher's container;
    // and the same checkpoint with a forged signature.
    let c = recs
        .iter()
        .position(|s| matches!(s.record.event, Event::Checkpoint(_)))
        .unwrap();
    let Event::Checkpoint(cp) = &recs[c].record.event else {
        unreachable!()
    };
    let header = usage::LogHeader::parse(&bytes).unwrap();
    let digest = usage::checkpoint_digest(&header, cp.count, &cp.head);
    let (statement, certificate) = impostor_container().sign_usage(digest, 0).unwrap();
    let splice = |cp: usage::Checkpoint| {
        let rec = Record {
            event: Event::Checkpoint(cp),
            ..recs[c].record.clone()
        };
        let mut body = Vec::new();
        rec.encode(&mut body).unwrap();
        let mut b = bytes[..span(c).start].to_vec();
        b.extend_from_slice(&(body.len() as u32).to_le_bytes());
        b.extend_from_slice(&body);
        b.extend_from_slice(&bytes[span(c).end..]);
        b
    };
    let other = splice(usage::Checkpoint {
        statement,
        certificate,
        ..cp.clone()
    });
    refused(
        &f,
        "other-publisher.log",
        &other,
        c as u64,
        at(c),
        "another publisher",
    );
    let mut forged = cp.clone();
    *forged.statement.last_mut().unwrap() ^= 1;
    refused(
        &f,
        "forged.log",
        &splice(forged),
        c as u64,
        at(c),
        "forged checkpoint",
    );

    // The key of another vendor is refused before anything is read.
    let stranger = f.dir.path().join("stranger.pub");
    std::fs::write(
        &stranger,
        PublisherKey::generate(VENDOR + 1, "s").public_key_text(),
    )
    .unwrap();
    let out = verify_usage(&stranger, &log, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is the key of vendor"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bytes,
        "verifying changed nothing"
    );
}

#[test]
fn a_sigkilled_servers_torn_record_is_cut_at_restart_and_damage_is_left_alone() {
    let mut f = Fixture::new();
    let a = f.session("host-a");
    drop(a.acquire(1, 0, false).unwrap());
    // Let a periodic checkpoint (every second) sign before the kill.
    std::thread::sleep(Duration::from_millis(1500));
    f.server.kill9();
    // A write cut short by the kill: a length of 50 and 3 bytes of the record.
    let log = f.log();
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(&[50, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(file);
    let n = records(&std::fs::read(&log).unwrap()[..]).len();
    let out = verify_usage(&f.pub_file, &log, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("truncated in the middle of record {n}")),
        "{}",
        text(&out.stderr)
    );

    // The restarted server cuts exactly the torn part, says so, and carries on.
    f.restart();
    let a = f.session("host-a");
    drop(a.acquire(1, 0, false).unwrap());
    f.stop();
    let out = verify_usage(&f.pub_file, &log, true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    assert_eq!(
        (field(&json, "starts"), field(&json, "cut_bytes")),
        (2, 7),
        "{json}"
    );
    assert_eq!(field(&json, "unverified_tail"), 0);
    assert_eq!(months(&json, "grants", false), 2);
    // The container's signature count outlived the killed server: numbered on, not again
    // from 1 (which verify-usage would report as a container put back).
    assert_eq!(field(&json, "signature_rewinds"), 0, "{json}");
    assert!(field(&json, "checkpoints") >= 2, "{json}");
    assert!(field(&json, "signatures_missing") <= 1, "{json}");

    // Damage before the end: the server appends nothing and grants no seat of this
    // publisher; the file stays as it was.
    let mut bytes = std::fs::read(&log).unwrap();
    let recs = records(&bytes);
    let i = recs[1].offset as usize + 12;
    bytes[i] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    f.restart();
    let a = f.session("host-a");
    let e = a.acquire(1, 0, false).unwrap_err();
    assert!(e.to_string().contains("usage log"), "{e}");
    assert_eq!(std::fs::read(&log).unwrap(), bytes, "left alone");
    // The admin moves it aside: the running server begins a new log and grants again.
    let aside = log.with_extension("log.damaged");
    std::fs::rename(&log, &aside).unwrap();
    drop(a.acquire(1, 0, false).unwrap());
    f.stop();
    assert_eq!(std::fs::read(&aside).unwrap(), bytes, "still left alone");
    let out = verify_usage(&f.pub_file, &log, true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    assert_eq!(months(&json, "grants", false), 1, "{json}");
    assert_eq!(field(&json, "unverified_tail"), 0, "{json}");
}

#[test]
fn a_later_report_goes_on_from_the_earlier_one() {
    let after = |f: &Fixture, prev: &Path, log: &Path| -> String {
        let out = vendor_tool(&[
            OsStr::new("verify-usage"),
            OsStr::new("--json"),
            OsStr::new("--key"),
            f.pub_file.as_os_str(),
            OsStr::new("--after"),
            prev.as_os_str(),
            log.as_os_str(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    // A period: a seat taken and given back, the server stopped, the log copied as `name`.
    let period = |f: &mut Fixture, name: &str| -> PathBuf {
        drop(f.session("host-a").acquire(1, 0, false).unwrap());
        f.stop();
        let copy = f.dir.path().join(name);
        std::fs::copy(f.log(), &copy).unwrap();
        copy
    };
    let mut f = Fixture::new();
    let january = period(&mut f, "january.log");
    f.restart();
    let february = period(&mut f, "february.log");
    // The same log grown: February begins with every byte of January.
    let json = after(&f, &january, &february);
    assert!(json.contains("\"continuous\":true"), "{json}");
    assert!(json.contains("\"findings\":[]"), "{json}");
    // Given the wrong way round, the "later" copy is shorter: not a continuation.
    let json = after(&f, &february, &january);
    assert!(json.contains("\"continuous\":false"), "{json}");
    assert!(json.contains("differ from byte"), "{json}");
    // A new log begun (the old one moved aside): the container's signature numbers go on
    // from where February's ended, across the two files and the restarts.
    std::fs::rename(f.log(), f.dir.path().join("moved-aside.log")).unwrap();
    f.restart();
    let march = period(&mut f, "march.log");
    let json = after(&f, &february, &march);
    assert!(json.contains("\"continuous\":true"), "{json}");
    assert!(json.contains("\"signature_rewinds\":0"), "{json}");
    // The server's container is a software container without a TPM: its numbers going on
    // is no proof (the customer could put it back and re-sign), and the report says so.
    assert!(json.contains("\"anchor\":\"unanchored\""), "{json}");
    assert!(!json.contains("\"unanchored_signers\":[]"), "{json}");
    let out = verify_usage(&f.pub_file, &march, false);
    let words = text(&out.stdout);
    assert!(
        words.contains("UNANCHORED:") && words.contains("prove nothing"),
        "{words}"
    );
    // And January to March skips February's signatures: a gap, named.
    let json = after(&f, &january, &march);
    assert!(json.contains("\"continuous\":false"), "{json}");
    assert!(json.contains("in neither"), "{json}");
}

/// A pool's members each keep their own log; `verify-usage` given all of them sums them up,
/// and a seat whose client moved from a killed member to another (the same seat id,
/// re-attached by the lease keeper) counts once. Two servers of the same publisher stand in
/// for two members here: the logs, the kill and the re-attach are real.
#[test]
fn the_logs_of_a_pools_members_sum_up_with_a_moved_seat_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "pool usage");
    let pub_file = dir.path().join("publisher.pub");
    std::fs::write(&pub_file, key.public_key_text()).unwrap();
    let member = |name: &str| {
        let home = dir.path().join(format!("{name}-home"));
        common::activate(
            &common::env_in(&home),
            &key,
            &[spec(1, 2, CountingUnit::Handle)],
        );
        ServerProc::start_with(
            &dir.path().join(format!("{name}-state")),
            &home,
            0,
            &["--usage-checkpoint-s", "1"],
        )
    };
    let (mut a, mut b) = (member("a"), member("b"));
    let log_of = |s: &ServerProc| s.state.join("usage").join(format!("{VENDOR}.log"));
    let session = |name: &str, servers: Vec<String>| {
        let mut o = SessionOptions::new(VENDOR, key.public_key());
        o.sources = sources::NETWORK;
        o.servers = servers;
        o.timeout = Duration::from_secs(2);
        let env = Environment {
            home: dir.path().join(format!("client-{name}")),
            host: HostIdentity::simulated(name),
            clock: Arc::new(SystemClock),
        };
        Session::open_in(o, env).unwrap()
    };
    // A client of both members takes its seat from the first, A.
    let mover = session("mover", vec![a.addr.clone(), b.addr.clone()]);
    let seat = mover.acquire(1, 0, false).unwrap();
    // Another client uses member B alone.
    drop(
        session("steady", vec![b.addr.clone()])
            .acquire(1, 0, false)
            .unwrap(),
    );
    // Let A's periodic checkpoint (every second) sign the grant, then kill A.
    std::thread::sleep(Duration::from_millis(1500));
    a.kill9();
    // The lease keeper re-attaches the seat, by its id, to B: B logs it as a grant.
    let grants_on_b = || {
        records(&std::fs::read(log_of(&b)).unwrap())
            .iter()
            .filter(|s| matches!(s.record.event, Event::Grant(_)))
            .count()
    };
    let start = std::time::Instant::now();
    while grants_on_b() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the seat never moved to B"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut buf = vec![0u8; 64];
    assert!(seat.encrypt(Mode::Derived, b"moved", &mut buf).is_ok());
    drop(seat); // released on B
    drop(mover);
    let status = b.stop();
    assert!(status.success(), "{status}");

    let (log_a, log_b) = (log_of(&a), log_of(&b));
    // Each log alone: A saw one grant and no end, B two grants (its own and the re-attach).
    for (log, grants, open) in [(&log_a, 1, 1), (&log_b, 2, 0)] {
        let out = verify_usage(&pub_file, log, true);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let json = text(&out.stdout);
        assert_eq!(months(&json, "grants", false), grants, "{json}");
        assert_eq!(field(&json, "open_at_end"), open, "{json}");
    }
    // Both together: two seats, each granted and released once.
    let out = vendor_tool(&[
        OsStr::new("verify-usage"),
        OsStr::new("--json"),
        OsStr::new("--key"),
        pub_file.as_os_str(),
        log_a.as_os_str(),
        log_b.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["logs"].as_array().map(Vec::len), Some(2), "{json}");
    let pool = &v["pool"];
    assert_eq!(pool["seats"], 2, "{json}");
    assert_eq!(pool["seats_in_several_logs"], 1, "{json}");
    assert_eq!(pool["open_at_end"], 0, "{json}");
    let sum = |k: &str| -> u64 {
        pool["months"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!((sum("grants"), sum("releases")), (2, 2), "{json}");
    // The moved seat's time runs from its grant on A to its release on B, once.
    let seat_ms = sum("seat_ms");
    assert!(seat_ms > 1500, "{json}");
    // The text report says how many seats moved.
    let out = vendor_tool(&[
        OsStr::new("verify-usage"),
        OsStr::new("--key"),
        pub_file.as_os_str(),
        log_a.as_os_str(),
        log_b.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let words = text(&out.stdout);
    assert!(
        words.contains("pool: 2 logs summed; 2 seats granted, 1 of them in more than one log"),
        "{words}"
    );
    // The same log given twice is refused, not summed twice.
    let out = vendor_tool(&[
        OsStr::new("verify-usage"),
        OsStr::new("--key"),
        pub_file.as_os_str(),
        log_b.as_os_str(),
        log_b.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("are the same log"),
        "{}",
        text(&out.stderr)
    );
}

/// A pool member `name` on the one-node `etcd` (pool `usage`), hosting the container in
/// `home`, checkpointing its usage log every second.
fn pool_member(dir: &Path, etcd: &common::etcd::Etcd, name: &str, home: &Path) -> ServerProc {
    common::server::pool_member(
        dir,
        &etcd.endpoints()[..1],
        "usage",
        name,
        home,
        0,
        &format!(
            "lease_ms = {LEASE_MS}\nrenew_ms = {}\nusage_checkpoint_s = 1",
            common::server::RENEW_MS
        ),
    )
}

/// A pool seat whose client dies is dropped by etcd with its lease, and the member that
/// wrote it logs the expiry (nobody releases it): the seat does not stay open to the end of
/// the log, and its seat time is about its lease, not the member's whole run.
#[test]
fn a_pool_seat_whose_client_dies_is_logged_expired_by_the_member_that_served_it() {
    let etcd = common::etcd::Etcd::single();
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "pool usage");
    let pub_file = dir.path().join("publisher.pub");
    std::fs::write(&pub_file, key.public_key_text()).unwrap();
    let key_file = dir.path().join("publisher.key");
    key.save(&key_file).unwrap();
    let home = dir.path().join("home-m0");
    common::activate(
        &common::env_in(&home),
        &key,
        &[spec(1, 2, CountingUnit::Handle)],
    );
    let mut m0 = pool_member(dir.path(), &etcd, "m0", &home);
    let granted = std::time::Instant::now();
    let mut child = common::server::spawn_seat_holder(
        "child_usage_holder",
        &m0.addr,
        &key_file,
        &dir.path().join("child-home"),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // etcd drops the row one lease (in whole seconds) after the last keep-alive.
    let seats = || {
        let out = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/tessera/usage/seats/"]);
        assert!(out.status.success(), "{out:?}");
        text(&out.stdout).lines().filter(|l| !l.is_empty()).count()
    };
    assert_eq!(
        seats(),
        1,
        "the dead client's seat is in etcd until its lease runs out"
    );
    while seats() > 0 {
        assert!(
            granted.elapsed() < Duration::from_secs(30),
            "etcd never dropped the seat"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The member logs the expiry at its next sweep (a quarter of a renewal at most).
    std::thread::sleep(Duration::from_millis(1000));
    let held_for = granted.elapsed();
    let status = m0.stop();
    assert!(status.success(), "{status}");

    let log = m0.state.join("usage").join(format!("{VENDOR}.log"));
    let out = vendor_tool(&[
        OsStr::new("verify-usage"),
        OsStr::new("--json"),
        OsStr::new("--key"),
        pub_file.as_os_str(),
        log.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["open_at_end"], 0, "the seat ended in the log: {json}");
    let month = &v["months"][0];
    assert_eq!(
        (month["grants"].as_u64(), month["expiries"].as_u64()),
        (Some(1), Some(1)),
        "{json}"
    );
    // Seat time runs from the grant to when etcd dropped it: at least the lease, at most
    // the time until the member saw it gone.
    let seat_ms = month["seat_ms"].as_u64().unwrap();
    assert!(
        seat_ms >= LEASE_MS && seat_ms <= held_for.as_millis() as u64,
        "seat time {seat_ms} ms, lease {LEASE_MS} ms, seen gone within {held_for:?}: {json}"
    );
}

/// The same with a real pool: two members on one etcd, a client's seat granted by the first,
/// the first SIGKILLed, the seat re-attached to the second (which takes its row over and
/// logs no second grant, only the release): the two logs sum to one seat, granted and
/// released once.
#[test]
fn a_seat_that_moves_between_pool_members_counts_once_in_their_logs() {
    let etcd = common::etcd::Etcd::single();
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "pool usage");
    let pub_file = dir.path().join("publisher.pub");
    std::fs::write(&pub_file, key.public_key_text()).unwrap();
    let home0 = dir.path().join("home-m0");
    common::activate(
        &common::env_in(&home0),
        &key,
        &[spec(1, 2, CountingUnit::Handle)],
    );
    let home1 = dir.path().join("home-m1");
    common::server::copy_dir(&home0, &home1);
    let mut m0 = pool_member(dir.path(), &etcd, "m0", &home0);
    let mut m1 = pool_member(dir.path(), &etcd, "m1", &home1);
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![m0.addr.clone(), m1.addr.clone()];
    o.timeout = Duration::from_secs(2);
    let client = Session::open_in(
        o,
        Environment {
            home: dir.path().join("client"),
            host: HostIdentity::simulated("mover"),
            clock: Arc::new(SystemClock),
        },
    )
    .unwrap();
    let seat = client.acquire(1, 0, false).unwrap();
    assert_eq!(seat.info().unwrap().server.as_deref(), Some("m0"));
    // m0's periodic checkpoint signs the grant; then m0 dies.
    std::thread::sleep(Duration::from_millis(1500));
    m0.kill9();
    // The client's lease keeper re-attaches the seat to m1 at its next renewal.
    let start = std::time::Instant::now();
    while seat.info().unwrap().server.as_deref() != Some("m1") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the seat never moved to m1"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(seat); // released on m1
    drop(client);
    let status = m1.stop();
    assert!(status.success(), "{status}");

    let log = |s: &ServerProc| s.state.join("usage").join(format!("{VENDOR}.log"));
    let (log0, log1) = (log(&m0), log(&m1));
    let out = vendor_tool(&[
        OsStr::new("verify-usage"),
        OsStr::new("--json"),
        OsStr::new("--key"),
        pub_file.as_os_str(),
        log0.as_os_str(),
        log1.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // Each log alone: m0 granted and never saw the end; m1 saw only the release.
    assert_eq!(v["logs"][0]["open_at_end"], 1, "{json}");
    assert_eq!(v["logs"][1]["ends_without_grant"], 1, "{json}");
    let pool = &v["pool"];
    assert_eq!(pool["seats"], 1, "{json}");
    assert_eq!(pool["seats_in_several_logs"], 1, "{json}");
    assert_eq!(pool["open_at_end"], 0, "{json}");
    assert_eq!(pool["ends_without_grant"], 0, "{json}");
    let month = &pool["months"][0];
    assert_eq!(
        (month["grants"].as_u64(), month["releases"].as_u64()),
        (Some(1), Some(1)),
        "{json}"
    );
    assert_eq!(month["peak"], 1, "{json}");
}
