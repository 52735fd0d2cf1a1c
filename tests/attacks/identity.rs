//! 7. Who a client is: station, session and pid claims in the hello, and a copied host key.
//!    The server counts by the host key the client proved in its Noise handshake, the pid
//!    namespace is part of a process unit (3., the server's half), and the host key is bound
//!    to its machine the way a software container is.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tessera::Error;
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::{HostIdentity, MachineKind};
use tessera::license::CountingUnit;
use tessera::net::conn::ServerConn;
use tessera::net::proto::{ClientHello, HostInfo, NetRequest, NetResponse, PROTOCOL_VERSION};
use tessera::publisher::PublisherKey;
use tessera::util::OffsetClock;

use crate::common::server::{KillOnDrop, ServerProc};
use crate::common::{activate, env_in, spec};

const VENDOR: u32 = 78;
/// 1 station.
const STATION: u32 = 1;
/// 1 process.
const PROCESS: u32 = 2;
/// 10 per handle.
const HANDLE: u32 = 3;

/// A `tessera-server` hosting a software container of this machine with the three licenses,
/// and the publisher key (also in `key_file`, for child processes).
struct Fixture {
    key: PublisherKey,
    key_file: std::path::PathBuf,
    server: ServerProc,
    dir: tempfile::TempDir,
}

fn serve() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (home, state) = (dir.path().join("server-home"), dir.path().join("state"));
    let key = PublisherKey::generate(VENDOR, "t");
    activate(
        &env_in(&home),
        &key,
        &[
            spec(STATION, 1, CountingUnit::Station),
            spec(PROCESS, 1, CountingUnit::Process),
            spec(HANDLE, 10, CountingUnit::Handle),
        ],
    );
    let key_file = dir.path().join("publisher.key");
    std::fs::write(&key_file, key.to_bytes().unwrap().as_slice()).unwrap();
    let server = ServerProc::start(&state, &home, 0);
    Fixture {
        key,
        key_file,
        server,
        dir,
    }
}

/// What a client that writes its own hello says: every claim the same for all of them.
fn claims() -> HostInfo {
    HostInfo {
        machine: MachineKind::Physical,
        hostname: "workstation".into(),
        station: [7; 32],
        session: "uid:0/login:1".into(),
        pid: 1,
        pid_namespace: 4026531836,
    }
}

/// A connection with a host key of its own (another machine) and the hello `host`.
fn connect(f: &Fixture, host: HostInfo) -> ServerConn {
    let secret: [u8; 32] = tessera::util::random();
    let hello = ClientHello {
        version: PROTOCOL_VERSION,
        host,
    };
    ServerConn::connect(
        &f.server.addr,
        &secret,
        &hello,
        &f.key.public_key(),
        VENDOR,
        Duration::from_secs(5),
    )
    .unwrap()
}

/// Asks for a seat of `product_code`: whether it was granted (a refusal must be `NoSeat`).
fn granted(c: &mut ServerConn, product_code: u32) -> bool {
    let r = c.call(&NetRequest::Acquire {
        seat_id: tessera::util::random(),
        vendor_id: VENDOR,
        product_code,
        features: 0,
        exclusive: false,
    });
    match r {
        Ok(NetResponse::Granted(_)) => true,
        Err(Error::NoSeat { .. }) => false,
        other => panic!("{other:?}"),
    }
}

#[test]
fn four_machines_claiming_one_station_take_one_seat_each() {
    let f = serve();
    // All four stay connected (and so hold their seats) to the end.
    let mut conns: Vec<ServerConn> = (0..4).map(|_| connect(&f, claims())).collect();
    let grants: Vec<bool> = conns.iter_mut().map(|c| granted(c, STATION)).collect();
    assert_eq!(
        grants,
        [true, false, false, false],
        "machines that claim one station share its seat"
    );
}

#[test]
fn machines_that_all_claim_pid_1_take_one_process_seat_each() {
    let f = serve();
    let mut conns: Vec<ServerConn> = (0..3).map(|_| connect(&f, claims())).collect();
    let grants: Vec<bool> = conns.iter_mut().map(|c| granted(c, PROCESS)).collect();
    assert_eq!(
        grants,
        [true, false, false],
        "processes of other machines that claim pid 1 share one seat"
    );
}

fn env(home: &Path, host: &str) -> Environment {
    Environment {
        home: home.to_path_buf(),
        host: HostIdentity::simulated(host),
        clock: Arc::new(OffsetClock { offset: 0 }),
    }
}

fn session(f: &Fixture, env: &Environment, sources: u32) -> Session {
    let mut o = SessionOptions::new(VENDOR, f.key.public_key());
    o.sources = sources;
    o.servers = vec![f.server.addr.clone()];
    o.timeout = Duration::from_secs(5);
    Session::open_in(o, env.clone()).unwrap()
}

#[test]
fn a_host_key_copied_to_another_machine_does_not_open() {
    let f = serve();
    let (a, b) = (f.dir.path().join("home-a"), f.dir.path().join("home-b"));
    let machine_a = env(&a, "machine A");
    let seat = session(&f, &machine_a, sources::NETWORK)
        .acquire(HANDLE, 0, false)
        .unwrap();
    drop(seat);
    // Machine B takes A's host key: to a server or a dongle it would be A.
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(a.join("host.key"), b.join("host.key")).unwrap();
    let machine_b = env(&b, "machine B");
    for (source, name) in [(sources::NETWORK, "network"), (sources::DONGLE, "dongle")] {
        let r = session(&f, &machine_b, source).acquire(HANDLE, 0, false);
        match &r {
            Err(Error::BindingMismatch(m)) => assert!(m.contains("host key"), "{m}"),
            _ => panic!("{name}: machine B uses A's host key: {r:?}"),
        }
    }
    // The copy is left as it was (no silent new key), and A still opens its own.
    assert_eq!(
        std::fs::read(a.join("host.key")).unwrap(),
        std::fs::read(b.join("host.key")).unwrap()
    );
    assert!(
        session(&f, &machine_a, sources::NETWORK)
            .acquire(HANDLE, 0, false)
            .is_ok()
    );
}

/// Child mode of the PID-namespace attack: a network client of the server the parent names,
/// on the simulated machine "one machine", that takes a seat of the 1-per-process license,
/// says so, and holds it until its stdin closes.
#[test]
fn pid_namespace_child() {
    let Some(s) = crate::common::server::child_session(VENDOR, "one machine") else {
        return;
    };
    match s.acquire(PROCESS, 0, false) {
        Ok(_seat) => {
            println!("SEAT ok pid {}", std::process::id());
            std::io::stdout().flush().unwrap();
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
        Err(e) => println!("SEAT refused {e}"),
    }
}

#[test]
fn processes_in_separate_pid_namespaces_take_one_process_seat_each() {
    let f = serve();
    let home = f.dir.path().join("client-home");
    let mut children = Vec::new();
    let mut said = Vec::new();
    for _ in 0..3 {
        // Each child is pid 1 of a PID namespace of its own, on one machine, in one session.
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "identity::pid_namespace_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TESSERA_TEST_SERVER", &f.server.addr)
            .env("TESSERA_TEST_KEY", &f.key_file)
            .env("TESSERA_TEST_HOME", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = KillOnDrop(cmd.spawn().unwrap());
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("SEAT") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        }
        // The harness prints the test's name in front of what the test prints.
        said.push(line[line.find("SEAT").unwrap()..].trim().to_string());
        children.push(child);
    }
    assert!(said[0].starts_with("SEAT ok pid 1"), "{said:?}");
    assert!(
        said[1..].iter().all(|l| l.starts_with("SEAT refused")),
        "processes in separate PID namespaces share one seat: {said:?}"
    );
}
