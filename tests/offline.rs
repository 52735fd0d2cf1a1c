//! A held network seat without its server (`docs/SERVER.md`, "Offline: a held seat without
//! its server"): a real `tessera-server` process, stopped (killed and restarted on the same
//! port and state, or SIGSTOPped) while clients hold seats of it. A C client through the
//! C ABI keeps encrypting, decrypting and asking seat information with no failure; past the
//! lease every call is `TESSERA_E_LEASE_LOST`. What a network seat writes offline opens with
//! the publisher's tool, a software container of the product and another seat of the
//! server; what it opened while connected opens offline, what it never opened does not
//! until the server is back.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use tessera::Error;
use tessera::cipher::{self, Header, Mode};
use tessera::client::{Environment, Seat, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::{DEMO_PRODUCT_CODE, PublisherKey};
use tessera::status::Status;
use tessera::util::SystemClock;

mod common;
use common::server::{KillOnDrop, ServerProc};
use common::{compile, libdir, spec};

/// The demo publisher (the C checks carry its public key).
const VENDOR: u32 = 0x7E55;
/// How long the tests keep a server stopped.
const OUTAGE: Duration = Duration::from_secs(5);

/// A server hosting a software container with product 1 (5 seats a handle) of the demo
/// publisher, with leases of `lease_ms` renewed every `renew_ms`.
fn server(dir: &Path, lease_ms: u64, renew_ms: u64) -> ServerProc {
    let home = dir.join("server-home");
    common::activate(
        &common::env_in(&home),
        &PublisherKey::demo(),
        &[spec(DEMO_PRODUCT_CODE, 5, CountingUnit::Handle)],
    );
    ServerProc::start_leased(&dir.join("server-state"), &home, 0, lease_ms, renew_ms)
}

/// The C client (tests/c/offline_client.c), running, with its stdin and its stdout lines.
struct CClient {
    child: KillOnDrop,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

/// What the C client counted.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    ops: u64,
    errors: u64,
    infos: u64,
    info_errors: u64,
}

impl CClient {
    fn start(dir: &Path, server: &str, args: &[&str]) -> CClient {
        let lib = libdir(dir);
        let exe = dir.join("offline_client");
        compile("tests/c/offline_client.c", &exe, &lib, &[]);
        let mut child = Command::new(&exe)
            .args(args)
            .env("TESSERA_SERVERS", server)
            .env("TESSERA_HOME", dir.join("c-client-home"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut c = CClient {
            child: KillOnDrop(child),
            stdin,
            lines,
        };
        let seat = c.line("SEAT");
        assert_eq!(seat, "SEAT ok", "the C client holds no seat");
        c
    }

    /// The next line starting with `prefix`; an `ERROR` line before it fails the test.
    fn line(&mut self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("no {prefix} line from the C client: {e}"));
            assert!(
                !line.starts_with("ERROR"),
                "the C client failed a call: {line}"
            );
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn command(&mut self, c: &str) -> Counts {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        let line = self.line("OPS");
        let w: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| w[i].parse::<u64>().unwrap();
        assert_eq!(w.get(9).copied(), Some("test-server"), "{line}");
        Counts {
            ops: n(1),
            errors: n(3),
            infos: n(5),
            info_errors: n(7),
        }
    }

    fn report(&mut self) -> Counts {
        self.command("r")
    }
}

fn pid(s: &ServerProc) -> i32 {
    s.child.as_ref().unwrap().id() as i32
}

/// The seats the server holds, from its admin API.
fn seats_held(s: &ServerProc) -> usize {
    let a = common::http::get(&s.admin, "/api/v1/seats", &[]);
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["seats"].as_array().unwrap().len()
}

/// The server is stopped for 5 s twice: killed and restarted on the same port and state,
/// then SIGSTOPped and SIGCONTed. The C client's calls succeed throughout, and go on after.
#[test]
fn a_c_client_encrypts_decrypts_and_asks_seat_info_through_a_server_restart_and_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    // A lease much longer than the outages.
    let mut server = server(dir.path(), 30_000, 1_000);
    let mut client = CClient::start(dir.path(), &server.addr, &[]);
    let before = client.report();

    server.kill9();
    std::thread::sleep(OUTAGE / 2);
    let during = client.report();
    assert!(
        during.ops > before.ops && during.infos > before.infos,
        "the client worked with its server down: {before:?} then {during:?}"
    );
    std::thread::sleep(OUTAGE / 2);
    server.restart();
    std::thread::sleep(Duration::from_secs(2));
    let after_restart = client.report();
    assert!(after_restart.ops > during.ops);
    assert_eq!(
        seats_held(&server),
        1,
        "the seat is held across the restart"
    );

    // SIGSTOP: the connection stays open, and nothing answers on it.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid(&server), libc::SIGSTOP) };
    std::thread::sleep(OUTAGE / 2);
    let stopped = client.report();
    std::thread::sleep(OUTAGE / 2);
    // SAFETY: as above.
    unsafe { libc::kill(pid(&server), libc::SIGCONT) };
    assert!(
        stopped.ops > after_restart.ops && stopped.infos > after_restart.infos,
        "the client worked with its server stopped: {after_restart:?} then {stopped:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let last = client.command("q");
    assert!(last.ops > stopped.ops);
    assert_eq!(
        (last.errors, last.info_errors),
        (0, 0),
        "failed calls: {last:?}"
    );
    assert!(client.child.0.wait().unwrap().success());
    // The client released its seat on the restarted server at its end.
    assert_eq!(seats_held(&server), 0);
}

/// Past its lease with the server gone, the C client's next encrypt, decrypt (of its own
/// ciphertext, both modes) and seat_info are all `TESSERA_E_LEASE_LOST`, and nothing failed
/// before.
#[test]
fn a_c_client_whose_server_stays_down_past_the_lease_gets_lease_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path(), 3_000, 1_000);
    let mut client = CClient::start(dir.path(), &server.addr, &["until-lost"]);
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    let line = client.line("LOST");
    let lost = (Status::LeaseLost as i32).to_string();
    let fields: Vec<(&str, &str)> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.split_once('=').unwrap())
        .collect();
    for (name, value) in &fields {
        if *name == "ops" {
            assert!(value.parse::<u64>().unwrap() > 0, "{line}");
        } else {
            assert_eq!(*value, lost, "{name} in {line}");
        }
    }
    assert_eq!(fields.len(), 6, "{line}");
    assert!(client.child.0.wait().unwrap().success());
}

fn env(dir: &Path, name: &str) -> Environment {
    Environment {
        home: dir.join(format!("client-{name}")),
        host: HostIdentity::simulated(name),
        clock: Arc::new(SystemClock),
    }
}

fn network_session(dir: &Path, name: &str, server: &str) -> Session {
    let mut o = SessionOptions::new(VENDOR, PublisherKey::demo().public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![server.to_string()];
    o.timeout = Duration::from_secs(2);
    Session::open_in(o, env(dir, name)).unwrap()
}

fn encrypt(seat: &Seat, mode: Mode, data: &[u8]) -> Vec<u8> {
    let mut ct = vec![0u8; cipher::ciphertext_len(data.len())];
    let n = seat.encrypt(mode, data, &mut ct).unwrap();
    ct.truncate(n);
    ct
}

fn decrypt(seat: &Seat, ct: &[u8]) -> tessera::Result<Vec<u8>> {
    let mut out = vec![0u8; cipher::plaintext_len(ct.len())];
    let n = seat.decrypt(ct, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// `tessera-vendor decrypt-file` with the demo publisher's key.
fn vendor_decrypt(dir: &Path, ct: &[u8]) -> Vec<u8> {
    let key = dir.join("demo.key");
    if !key.exists() {
        PublisherKey::demo().save(&key).unwrap();
    }
    let (input, output) = (dir.join("in.tsx"), dir.join("out.bin"));
    std::fs::write(&input, ct).unwrap();
    let out = Command::new(common::bin("tessera-vendor"))
        .arg("decrypt-file")
        .arg("--key")
        .arg(&key)
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(output).unwrap()
}

/// Whether a failure is the transport's (the server cannot be reached), as a decrypt that
/// needs the server says it during an outage.
fn is_transport(e: &Error) -> bool {
    matches!(e.status(), Status::Io | Status::Timeout)
}

#[test]
fn what_a_network_seat_writes_offline_opens_anywhere_and_what_it_opened_opens_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut server = server(d, 30_000, 1_000);
    // A software container of the same product on this machine, in another home.
    let sw_home = d.join("software-home");
    common::activate(
        &common::env_in(&sw_home),
        &PublisherKey::demo(),
        &[spec(DEMO_PRODUCT_CODE, 5, CountingUnit::Handle)],
    );
    let mut o = SessionOptions::new(VENDOR, PublisherKey::demo().public_key());
    o.sources = sources::SOFTWARE;
    let sw = Session::open_in(o, common::env_in(&sw_home)).unwrap();
    let sw_seat = sw.acquire(DEMO_PRODUCT_CODE, 0, false).unwrap();
    // Format 1, written by the software container: some opened while connected, one not.
    let opened: Vec<(Vec<u8>, Vec<u8>)> = [Mode::Direct, Mode::Derived]
        .into_iter()
        .map(|m| {
            let data = format!("format 1 in {m:?} mode").into_bytes();
            (encrypt(&sw_seat, m, &data), data)
        })
        .collect();
    let never = encrypt(&sw_seat, Mode::Direct, b"never opened before the outage");
    assert_eq!(Header::parse(&never).unwrap().version, 1);

    let a = network_session(d, "host-a", &server.addr);
    let seat = a.acquire(DEMO_PRODUCT_CODE, 0, false).unwrap();
    let b = network_session(d, "host-b", &server.addr);
    let other = b.acquire(DEMO_PRODUCT_CODE, 0, false).unwrap();
    let third = b.acquire(DEMO_PRODUCT_CODE, 0, false).unwrap();
    // Other seats' format-2 ciphertext: one of a key id opened while connected (so a
    // second one of that key id opens too), one of a key id never seen.
    let other_opened = encrypt(&other, Mode::Derived, b"host b, opened");
    let other_same_key = encrypt(&other, Mode::Direct, b"host b, same key id");
    let other_never = encrypt(&third, Mode::Direct, b"host b, never opened");
    for (ct, data) in &opened {
        assert_eq!(&decrypt(&seat, ct).unwrap(), data);
    }
    assert_eq!(decrypt(&seat, &other_opened).unwrap(), b"host b, opened");
    let info = seat.info().unwrap();
    assert_eq!(info.server.as_deref(), Some("test-server"));
    assert_eq!(info.in_use, 3);

    server.kill9();
    // Written offline, both modes: format 2 under the seat's own key id.
    let mut written = Vec::new();
    for m in [Mode::Direct, Mode::Derived] {
        let data = format!("written offline in {m:?} mode").into_bytes();
        let ct = encrypt(&seat, m, &data);
        let h = Header::parse(&ct).unwrap();
        assert_eq!((h.version, h.mode), (2, m));
        assert_eq!(decrypt(&seat, &ct).unwrap(), data);
        written.push((ct, data));
    }
    // What it opened while connected opens offline.
    for (ct, data) in &opened {
        assert_eq!(&decrypt(&seat, ct).unwrap(), data);
    }
    assert_eq!(decrypt(&seat, &other_opened).unwrap(), b"host b, opened");
    assert_eq!(
        decrypt(&seat, &other_same_key).unwrap(),
        b"host b, same key id"
    );
    let info = seat.info().unwrap();
    assert_eq!(info.server.as_deref(), Some("test-server"));
    assert_eq!(info.in_use, 3, "the last answer of the server");
    // What it never opened needs the server: a clear transport error, no data.
    for ct in [&never, &other_never] {
        let mut out = vec![0xAAu8; cipher::plaintext_len(ct.len())];
        let e = seat.decrypt(ct, &mut out).unwrap_err();
        assert!(is_transport(&e), "{e}");
        assert!(e.to_string().contains("has not opened"), "{e}");
        assert!(out.iter().all(|b| *b == 0xAA), "nothing was written");
    }
    // Portability: the publisher's tool and a software container of the product open what
    // the network seat wrote offline.
    for (ct, data) in &written {
        assert_eq!(&vendor_decrypt(d, ct), data);
        assert_eq!(&decrypt(&sw_seat, ct).unwrap(), data);
        assert_eq!(
            &cipher::decrypt(&PublisherKey::demo().product_secret(DEMO_PRODUCT_CODE), ct).unwrap(),
            data
        );
    }

    std::thread::sleep(OUTAGE);
    server.restart();
    // Back: the seat re-attaches and opens what it never opened; another seat of the server
    // opens what it wrote offline (its container derives the seat key of that key id).
    let mut tries = 0;
    let back = loop {
        match decrypt(&seat, &never) {
            Ok(p) => break p,
            Err(e) if is_transport(&e) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("after the restart: {e}"),
        }
    };
    assert_eq!(back, b"never opened before the outage");
    assert_eq!(
        decrypt(&seat, &other_never).unwrap(),
        b"host b, never opened"
    );
    for (ct, data) in &written {
        assert_eq!(&decrypt(&other, ct).unwrap(), data);
    }
    assert_eq!(seat.info().unwrap().in_use, 3);
}
