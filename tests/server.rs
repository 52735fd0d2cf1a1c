//! The license server on loopback: `tessera-server` as a real process, clients as sessions
//! (threads) and processes. Counting by unit, encryption over the network, leases, a server
//! killed with SIGKILL and restarted, a client that dies, a server that cannot prove its
//! delegation, and hostile connections.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tessera::Error;
use tessera::cipher::Mode;
use tessera::client::{Environment, Session, SessionOptions, SourceKind, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::{LicenseSpec, PublisherKey};
use tessera::util::SystemClock;

mod common;
use common::server::{LEASE_MS, ServerProc};
use common::spec;

const VENDOR: u32 = 0x5E;

struct Fixture {
    dir: tempfile::TempDir,
    key: PublisherKey,
    server: ServerProc,
}

fn fixture(specs: &[LicenseSpec]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "server tests");
    let home = dir.path().join("server-home");
    common::activate(&common::env_in(&home), &key, specs);
    let server = ServerProc::start(&dir.path().join("server-state"), &home, 0);
    Fixture { dir, key, server }
}

fn client_env(f: &Fixture, name: &str) -> Environment {
    Environment {
        home: f.dir.path().join(format!("client-{name}")),
        host: HostIdentity::simulated(name),
        clock: Arc::new(SystemClock),
    }
}

fn session(f: &Fixture, name: &str) -> Session {
    let mut o = SessionOptions::new(VENDOR, f.key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![f.server.addr.clone()];
    o.timeout = Duration::from_secs(2);
    Session::open_in(o, client_env(f, name)).unwrap()
}

#[test]
fn a_seat_over_the_network_encrypts_decrypts_and_names_the_server() {
    let f = fixture(&[spec(1, 5, CountingUnit::Handle)]);
    let s = session(&f, "host-a");
    let seat = s.acquire(1, 0x3, false).expect("a network seat");
    let info = seat.info().unwrap();
    assert_eq!(info.source, SourceKind::Network);
    assert_eq!(info.server.as_deref(), Some("test-server"));
    assert!(info.container_serial.starts_with("SW-"));
    assert_eq!(info.in_use, 1);
    // 40,000 bytes: frames far larger than the server's 1 KiB read buffer.
    for (mode, len) in [
        (Mode::Derived, 1000),
        (Mode::Direct, 1000),
        (Mode::Direct, 40_000),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut ct = vec![0u8; len + 56];
        let n = seat.encrypt(mode, &data, &mut ct).unwrap();
        let mut pt = vec![0u8; len];
        assert_eq!(seat.decrypt(&ct[..n], &mut pt).unwrap(), len);
        assert_eq!(pt, data);
        assert_eq!(
            tessera::cipher::decrypt(&f.key.product_secret(1), &ct[..n]).unwrap(),
            data
        );
    }
    assert!(matches!(s.acquire(9, 0, false), Err(Error::NoLicense(_))));
    assert!(matches!(
        s.acquire(1, 0x100, false),
        Err(Error::FeatureMissing { .. })
    ));
    drop(seat);
    let again = s.acquire(1, 0, false).unwrap();
    assert_eq!(
        again.info().unwrap().in_use,
        1,
        "the released seat was returned"
    );
}

#[test]
fn stations_sessions_and_vms_are_counted_by_the_license_unit() {
    let deny_vm = LicenseSpec {
        vm_policy: tessera::license::VmPolicy::Deny,
        ..spec(3, 5, CountingUnit::Station)
    };
    let f = fixture(&[spec(1, 2, CountingUnit::Station), deny_vm]);
    // Host A twice (two sessions of one machine) is one station.
    let a1 = session(&f, "host-a");
    let a2 = session(&f, "host-a");
    let s_a1 = a1.acquire(1, 0, false).unwrap();
    let s_a2 = a2.acquire(1, 0, false).unwrap();
    assert_eq!(s_a2.info().unwrap().in_use, 1);
    let b = session(&f, "host-b");
    let s_b = b.acquire(1, 0, false).unwrap();
    assert_eq!(s_b.info().unwrap().in_use, 2);
    let c = session(&f, "host-c");
    assert!(matches!(c.acquire(1, 0, false), Err(Error::NoSeat { .. })));
    drop((s_a1, s_a2));
    assert!(
        c.acquire(1, 0, false).is_ok(),
        "host A's station is free again"
    );
    drop(s_b);
    // A license that denies VMs refuses a VM guest, and serves a physical machine.
    let mut vm_env = client_env(&f, "guest");
    vm_env.host.machine = tessera::host::MachineKind::Virtual(tessera::host::Hypervisor::Kvm);
    let mut o = SessionOptions::new(VENDOR, f.key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![f.server.addr.clone()];
    let vm = Session::open_in(o, vm_env).unwrap();
    assert!(matches!(
        vm.acquire(3, 0, false),
        Err(Error::VmNotAllowed(_))
    ));
    assert!(session(&f, "host-d").acquire(3, 0, false).is_ok());
}

#[test]
fn a_session_lists_the_servers_licenses_and_waits_for_a_seat_to_come_free() {
    let deny_vm = LicenseSpec {
        vm_policy: tessera::license::VmPolicy::Deny,
        ..spec(3, 5, CountingUnit::Station)
    };
    let f = fixture(&[spec(1, 2, CountingUnit::Station), deny_vm]);
    let a = session(&f, "host-a");
    let listed = |s: &Session, product: u32| {
        let all = s.licenses().expect("a listing");
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all.iter().all(|l| l.source == SourceKind::Network
            && l.server.as_deref() == Some("test-server")
            && l.container_serial.starts_with("SW-")));
        all.into_iter()
            .find(|l| l.license.product_code == product)
            .unwrap()
    };
    let one = listed(&a, 1);
    assert_eq!((one.license.quantity, one.in_use), (2, 0));
    assert_eq!(one.verdict, tessera::status::Status::Ok);
    let held_a = a.acquire(1, 0, false).unwrap();
    let b = session(&f, "host-b");
    assert_eq!(listed(&b, 1).in_use, 1, "host A's seat, seen from host B");
    // What an acquire would meet: a VM guest sees the VM-denying license refused.
    let mut vm_env = client_env(&f, "guest");
    vm_env.host.machine = tessera::host::MachineKind::Virtual(tessera::host::Hypervisor::Kvm);
    let mut o = SessionOptions::new(VENDOR, f.key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![f.server.addr.clone()];
    let vm = Session::open_in(o, vm_env).unwrap();
    assert_eq!(
        listed(&vm, 3).verdict,
        tessera::status::Status::VmNotAllowed
    );
    // A session with another key for the same vendor id: the server cannot prove a
    // delegation from that key, so nothing it says is listed.
    let other = PublisherKey::generate(VENDOR, "another key");
    let mut o = SessionOptions::new(VENDOR, other.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![f.server.addr.clone()];
    let stranger = Session::open_in(o, client_env(&f, "host-x")).unwrap();
    assert!(matches!(stranger.licenses(), Err(Error::Tampered(_))));

    // Both seats taken: a wait runs out with NoSeat, after its time.
    let held_b = b.acquire(1, 0, false).unwrap();
    let c = session(&f, "host-c");
    let t0 = Instant::now();
    assert!(matches!(
        c.acquire_wait(1, 0, false, Duration::from_millis(300)),
        Err(Error::NoSeat { .. })
    ));
    assert!(t0.elapsed() >= Duration::from_millis(300));
    // A license that is not there ends the wait at once.
    assert!(matches!(
        c.acquire_wait(9, 0, false, Duration::from_secs(3600)),
        Err(Error::NoLicense(_))
    ));
    // Host B lets go while host C waits: C gets the seat.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(held_b);
    });
    let got = c
        .acquire_wait(1, 0, false, Duration::from_secs(60))
        .expect("the seat host B released");
    assert_eq!(got.info().unwrap().in_use, 2);
    releaser.join().unwrap();
    drop(held_a);
}

#[test]
fn a_server_killed_with_sigkill_honours_its_leases_after_restart_and_clients_reattach() {
    let mut f = fixture(&[spec(1, 1, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let seat = a.acquire(1, 0, false).unwrap();
    f.server.restart();
    // The restarted server still counts A's seat: no over-grant to B.
    let b = session(&f, "host-b");
    assert!(matches!(b.acquire(1, 0, false), Err(Error::NoSeat { .. })));
    // A carries on: its lease keeper re-attaches the same seat.
    let mut buf = vec![0u8; 100];
    let start = Instant::now();
    loop {
        match seat.encrypt(Mode::Derived, b"after restart", &mut buf) {
            Ok(_) => break,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(5),
                "A never re-attached: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        seat.info().unwrap().in_use,
        1,
        "re-attached, not counted twice"
    );
    drop(seat);
    assert!(b.acquire(1, 0, false).is_ok());
}

/// Child mode: acquire a network seat and hold it until killed.
#[test]
fn child_network_holder() {
    let Some(s) = common::server::child_session(VENDOR, "child") else {
        return;
    };
    let seat = s.acquire(1, 0, false);
    println!("SEAT {}", if seat.is_ok() { "ok" } else { "refused" });
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_client_that_dies_loses_its_seat_when_the_lease_runs_out() {
    let f = fixture(&[spec(1, 1, CountingUnit::Handle)]);
    let keyfile = f.dir.path().join("key");
    f.key.save(&keyfile).unwrap();
    let mut child = common::server::spawn_seat_holder(
        "child_network_holder",
        &f.server.addr,
        &keyfile,
        &f.dir.path().join("child-home"),
    );
    let b = session(&f, "host-b");
    assert!(matches!(b.acquire(1, 0, false), Err(Error::NoSeat { .. })));
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let start = Instant::now();
    loop {
        if b.acquire(1, 0, false).is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(LEASE_MS * 4),
            "the dead client's seat never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        killed.elapsed() >= Duration::from_millis(LEASE_MS / 2),
        "the seat came back before its lease could run out"
    );
}

#[test]
fn a_server_without_a_delegation_from_the_publisher_is_refused() {
    // The server hosts a container activated by an impostor with the same vendor id.
    let impostor = PublisherKey::generate(VENDOR, "impostor");
    let f = fixture(&[spec(1, 5, CountingUnit::Handle)]);
    let other = Fixture {
        key: impostor,
        server: {
            let home = f.dir.path().join("impostor-home");
            let k = PublisherKey::generate(VENDOR, "impostor");
            common::activate(
                &common::env_in(&home),
                &k,
                &[spec(1, 5, CountingUnit::Handle)],
            );
            ServerProc::start(&f.dir.path().join("impostor-state"), &home, 0)
        },
        dir: tempfile::tempdir().unwrap(),
    };
    let mut o = SessionOptions::new(VENDOR, f.key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![other.server.addr.clone()];
    let s = Session::open_in(o, client_env(&f, "host-a")).unwrap();
    let e = s.acquire(1, 0, false).unwrap_err();
    assert!(matches!(e, Error::Tampered(_)), "{e}");
    assert_eq!(
        tessera::ffi::status::from_error(&e),
        tessera::ffi::tessera_status::TESSERA_E_TAMPERED
    );
}

#[test]
fn hostile_connections_do_not_stop_the_server_serving_others() {
    let mut f = fixture(&[spec(1, 5, CountingUnit::Handle)]);
    let addr = f.server.addr.clone();
    // Garbage, a length near 4 GiB, a truncated frame, half-open connections, a flood.
    let mut held = Vec::new();
    for payload in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0xFF, 0xFF, 0xFF, 0xFE, 1, 2, 3],
        vec![0, 0, 0, 50, 1, 2],
        vec![0, 0, 0, 0],
    ] {
        let mut c = TcpStream::connect(&addr).unwrap();
        let _ = c.write_all(&payload);
        held.push(c);
    }
    for _ in 0..300 {
        if let Ok(c) = TcpStream::connect(&addr) {
            held.push(c);
        }
    }
    let s = session(&f, "host-a");
    let seat = s
        .acquire(1, 0, false)
        .expect("a well-behaved client is still served");
    let mut buf = vec![0u8; 100];
    assert!(seat.encrypt(Mode::Derived, b"x", &mut buf).is_ok());
    drop(held);
    assert!(f.server.alive());
}

/// A connection through the handshake, speaking the protocol by hand.
fn raw_client(f: &Fixture, name: &str) -> (TcpStream, tessera::net::conn::NetChannel) {
    use tessera::host::MachineKind;
    use tessera::net::proto::{ClientHello, HostInfo, PROTOCOL_VERSION};
    let mut stream = TcpStream::connect(&f.server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let hello = ClientHello {
        version: PROTOCOL_VERSION,
        host: HostInfo {
            machine: MachineKind::Physical,
            hostname: name.into(),
            station: [7; 32],
            session: "1".into(),
            pid: 1,
            pid_namespace: 1,
        },
    };
    let (channel, _, _) = tessera::net::conn::client_handshake(
        &mut stream,
        &[5; 32],
        &hello,
        &f.key.public_key(),
        VENDOR,
        tessera::util::now(),
    )
    .unwrap();
    (stream, channel)
}

/// A connection that holds a seat and renews it is never closed, however long it lasts; a
/// silent one and one that sent half a length prefix are closed after the idle limit (for a
/// connection never granted a seat: `quiet_timeout_ms`, at most three leases; here three
/// leases, 4.5 s). `tests/hostile/silent_clients.rs` has the quiet limit on its own.
#[test]
fn a_silent_connection_is_closed_and_a_seat_holder_that_renews_never() {
    use std::io::Read;
    use tessera::net::proto::{self, NetRequest, NetResponse};
    let mut f = fixture(&[spec(1, 5, CountingUnit::Handle)]);
    let idle = Duration::from_millis(3 * LEASE_MS);
    let (mut holder, mut channel) = raw_client(&f, "holder");
    let (mut silent, _) = raw_client(&f, "silent");
    let (mut half, _) = raw_client(&f, "half");
    // Half a length prefix, then nothing: a frame that never completes.
    half.write_all(&[0, 0]).unwrap();
    let started = Instant::now();
    let mut call = |req: &NetRequest| -> NetResponse {
        let frame = channel.seal(&proto::encode(req).unwrap()).unwrap();
        proto::write_frame(&mut holder, &frame).expect("the seat holder is not cut off");
        let answer = channel
            .open(&proto::read_frame(&mut holder).unwrap())
            .unwrap();
        proto::decode::<NetResponse>(&answer, "answer").unwrap()
    };
    let seat_id = [0x14; 16];
    let granted = call(&NetRequest::Acquire {
        seat_id,
        vendor_id: VENDOR,
        product_code: 1,
        features: 0,
        exclusive: false,
    });
    assert!(matches!(granted, NetResponse::Granted(_)), "{granted:?}");
    // Well past one idle period, a renewal every lease/3: every one is answered.
    while started.elapsed() < idle + Duration::from_millis(2 * LEASE_MS) {
        std::thread::sleep(Duration::from_millis(LEASE_MS / 3));
        let renewed = call(&NetRequest::Renew {
            seat_ids: vec![seat_id],
        });
        assert!(
            matches!(&renewed, NetResponse::Renewed { lost, .. } if lost.is_empty()),
            "{renewed:?}"
        );
    }
    // The silent and the half-sent connections were closed by the server (end of stream).
    for (name, s) in [("silent", &mut silent), ("half", &mut half)] {
        let mut b = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let r = s.read(&mut b);
        assert!(
            matches!(&r, Ok(0))
                || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "the {name} connection is still open after {:?}: {r:?}",
            started.elapsed()
        );
    }
    assert!(f.server.alive());
}

#[test]
fn hundreds_of_clients_racing_never_exceed_the_quantity() {
    let f = fixture(&[spec(1, 10, CountingUnit::Handle)]);
    let f = Arc::new(f);
    let holding = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let granted = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let (f, holding, peak, granted) =
                (f.clone(), holding.clone(), peak.clone(), granted.clone());
            std::thread::spawn(move || {
                let s = session(&f, &format!("racer-{}", i % 50));
                for _ in 0..3 {
                    if let Ok(seat) = s.acquire(1, 0, false) {
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        granted.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        holding.fetch_sub(1, Ordering::SeqCst);
                        drop(seat);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        peak.load(Ordering::SeqCst) <= 10,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(
        granted.load(Ordering::SeqCst) >= 10,
        "the license was used at all"
    );
}

#[test]
fn the_example_configuration_parses() {
    let c = tessera::server::config::ServerConfig::from_file(
        &common::root().join("systemd/server.toml"),
    )
    .unwrap();
    assert_eq!(c.name, "license-server-1");
    assert_eq!(c.lease_ms, 90_000);
    assert!(c.lease_ms >= 3 * c.renew_ms);
}

#[test]
fn sigterm_shuts_the_server_down_gracefully_and_keeps_its_seats() {
    let mut f = fixture(&[spec(1, 1, CountingUnit::Handle)]);
    let a = session(&f, "host-a");
    let seat = a.acquire(1, 0, false).unwrap();
    let status = f.server.stop();
    assert!(status.success(), "graceful exit, not a crash: {status}");
    // Restarted on its state: the seat is still counted.
    f.server = ServerProc::start(
        &f.server.state.clone(),
        &f.server.home.clone(),
        f.server.port,
    );
    let b = session(&f, "host-b");
    assert!(matches!(b.acquire(1, 0, false), Err(Error::NoSeat { .. })));
    drop(seat);
}

#[test]
fn delegations_are_renewed_before_they_run_out() {
    use tessera::server::config::ServerConfig;
    use tessera::server::daemon::Server;
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "delegation renewal");
    let home = dir.path().join("home");
    common::activate(
        &common::env_in(&home),
        &key,
        &[spec(1, 1, CountingUnit::Handle)],
    );
    let config = ServerConfig {
        state_dir: dir.path().join("state"),
        home,
        dongles: false,
        discovery: false,
        admin: false,
        delegation_days: 2,
        ..ServerConfig::default()
    };
    let server = Server::open(config).unwrap();
    let expiry = |s: &Server| s.hosting().hosted.containers[0].delegation_expiry();
    let first = expiry(&server);
    // Fresh delegations are not renewed.
    assert!(!server.renew_delegations());
    assert_eq!(expiry(&server), first);
    // A day and an hour later, past half of the two days: renewed, for two days from now.
    std::thread::sleep(Duration::from_millis(1100));
    let later = tessera::util::now() + 86_400 + 3_600;
    assert!(server.renew_delegations_at(later));
    let renewed = expiry(&server);
    assert!(renewed > first, "{renewed} is not after {first}");
    assert_eq!(server.hosting().hosted.containers.len(), 1);
}
