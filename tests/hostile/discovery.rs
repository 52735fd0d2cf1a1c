//! 5. UDP discovery as a reflection amplifier; 6. small things (a network NO_SEAT's
//!    quantity, release while the server is unreachable, a client stuck in connect timeouts).

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera::Error;
use tessera::cipher::Mode;
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

use crate::common::http;
use crate::common::server::{KillOnDrop, ServerProc, child_command};
use crate::common::{activate, env_in, spec};

const VENDOR: u32 = 0x14D5;

/// The probe's wire shape, spelled out here so that the test says what the wire is: the magic,
/// the version byte 2, zeros up to 512 bytes.
const MAGIC: &[u8; 16] = b"TESSERA-DISCOVER";
const PROBE_LEN: usize = 512;

fn good_probe() -> Vec<u8> {
    let mut p = vec![0u8; PROBE_LEN];
    p[..16].copy_from_slice(MAGIC);
    p[16] = 2;
    p
}

/// A server on loopback as `tessera-server --config`, hosting `quantity` handle seats of
/// product 1: `listen` is `127.0.0.1:0` unless a port is given (a restart keeps it), the
/// admin API on a free loopback port. The shared helper always turns discovery off.
fn config_server(
    dir: &Path,
    name: &str,
    key: &PublisherKey,
    quantity: u32,
    discovery: bool,
    (lease_ms, renew_ms): (u64, u64),
    port: u16,
) -> ServerProc {
    let home = dir.join("server-home");
    if !home.exists() {
        activate(
            &env_in(&home),
            key,
            &[spec(1, quantity, CountingUnit::Handle)],
        );
    }
    let config = dir.join("server.toml");
    let toml = format!(
        "name = {name:?}\nlisten = [\"127.0.0.1:{port}\"]\ndiscovery = {discovery}\n\
         state_dir = {:?}\nhome = {:?}\ndongles = false\nlease_ms = {lease_ms}\n\
         renew_ms = {renew_ms}\nadmin_listen = \"127.0.0.1:0\"\n",
        dir.join("server-state"),
        home,
    );
    std::fs::write(&config, toml).unwrap();
    ServerProc::start_with(
        &dir.join("server-state"),
        &home,
        0,
        &["--config", config.to_str().unwrap()],
    )
}

fn discovery_server(dir: &Path, name: &str, key: &PublisherKey) -> ServerProc {
    config_server(dir, name, key, 2, true, (1500, 300), 0)
}

/// Sends each datagram from its own socket to `to` and returns, for each, the lengths of the
/// datagrams that came back within `wait`.
fn replies(to: SocketAddr, probes: &[Vec<u8>], wait: Duration) -> Vec<Vec<usize>> {
    let sockets: Vec<UdpSocket> = probes
        .iter()
        .map(|p| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s.send_to(p, to).unwrap();
            s
        })
        .collect();
    let mut got = vec![Vec::new(); probes.len()];
    let end = Instant::now() + wait;
    let mut buf = [0u8; 65536];
    while Instant::now() < end {
        for (i, s) in sockets.iter().enumerate() {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                got[i].push(n);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    got
}

#[test]
fn discovery_answers_only_exact_probes_and_never_with_more_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "discovery");
    // A long name: the answer would be longer than any probe if it were sent whole.
    let name = format!("hostile-discovery-{}", "n".repeat(700));
    let server = discovery_server(dir.path(), &name, &key);
    let udp: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();

    let good = good_probe();
    let mut junk_padding = good.clone();
    junk_padding[PROBE_LEN - 1] = 0x41;
    let mut other_version = good.clone();
    other_version[16] = 3;
    let shapes: Vec<(&str, Vec<u8>)> = vec![
        ("the old bare 16-byte magic", MAGIC.to_vec()),
        (
            "the magic with a junk tail",
            [MAGIC.as_slice(), b"junk tail"].concat(),
        ),
        ("a probe one byte short", good[..PROBE_LEN - 1].to_vec()),
        (
            "a probe with a junk byte after it",
            [good.as_slice(), &[7]].concat(),
        ),
        ("a probe with junk in its padding", junk_padding),
        ("a probe of another version", other_version),
        ("a 1400-byte datagram starting with the magic", {
            let mut p = vec![0u8; 1400];
            p[..16].copy_from_slice(MAGIC);
            p[16] = 2;
            p
        }),
        ("an empty datagram", Vec::new()),
        ("garbage", b"hello server".to_vec()),
    ];
    let mut probes: Vec<Vec<u8>> = shapes.iter().map(|(_, p)| p.clone()).collect();
    probes.push(good.clone());
    let got = replies(udp, &probes, Duration::from_millis(600));
    for ((what, probe), lens) in shapes.iter().zip(&got) {
        assert!(
            lens.is_empty(),
            "{what} ({} bytes) was answered with {lens:?} bytes",
            probe.len()
        );
    }
    let answered = got.last().unwrap();
    assert_eq!(answered.len(), 1, "the well-formed probe is answered once");
    assert!(
        answered[0] <= good.len(),
        "a {}-byte probe got a {}-byte answer",
        good.len(),
        answered[0]
    );

    // The real client's discovery still finds the server, under (the start of) its name.
    let found = tessera::net::discovery::discover_at(&[udp], Duration::from_millis(800));
    assert_eq!(found.len(), 1, "{found:?}");
    let (at, answer) = &found[0];
    assert_eq!(at.to_string(), server.addr);
    assert!(answer.name.starts_with("hostile-discovery-"), "{answer:?}");
    assert!(name.starts_with(&answer.name));
}

/// A session on `server` as the simulated host `host`, its state under `dir`.
fn session_on(dir: &Path, key: &PublisherKey, server: &str, host: &str) -> Session {
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![server.to_string()];
    o.timeout = Duration::from_millis(500);
    let env = Environment {
        home: dir.join(format!("client-{host}")),
        host: HostIdentity::simulated(host),
        clock: Arc::new(SystemClock),
    };
    Session::open_in(o, env).unwrap()
}

/// A TCP relay from a loopback port to `upstream`: a cable the test can pull. Cut, it
/// shuts every relayed connection down and closes each new one at once (the server is out
/// of reach, quickly); restored, it relays again on the same port.
struct Cable {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cable {
    fn to(upstream: &str) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.to_string();
        let thread = {
            let (cut, stop, live) = (cut.clone(), stop.clone(), live.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((down, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    down.set_nonblocking(false).unwrap();
                    let Ok(up) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let mut l = live.lock().unwrap();
                    l.push(down.try_clone().unwrap());
                    l.push(up.try_clone().unwrap());
                    for (mut from, mut to) in [
                        (down.try_clone().unwrap(), up.try_clone().unwrap()),
                        (up, down),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                }
            })
        };
        Cable {
            addr,
            cut,
            stop,
            live,
            thread: Some(thread),
        }
    }

    fn pull(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn plug(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.pull();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Revokes the only seat the server holds, through its admin API.
fn revoke_the_seat(admin: &str) {
    let list = http::get(admin, "/api/v1/seats", &[]);
    assert_eq!(list.status, 200, "{list:?}");
    let seats = list.json()["seats"].as_array().unwrap().clone();
    assert_eq!(seats.len(), 1, "{seats:?}");
    let id = seats[0]["seat_id"].as_str().unwrap().to_string();
    let bearer = http::local_bearer(admin);
    let r = http::request(
        admin,
        "POST",
        &format!("/api/v1/seats/{id}/revoke"),
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        br#"{"reason": "hostile test"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
}

const LONG_LEASE: (u64, u64) = (6000, 2000);

/// 6a and 6c: a network NO_SEAT names the license quantity; a client whose cable comes back
/// after the server freed its seat (an admin revoked it, another client took it) learns
/// LEASE_LOST at the server's first answer to its lease keeper (its encryptions are local
/// meanwhile; the keeper retries the re-attach every second), not when its 6 s lease runs
/// out.
#[test]
fn a_freed_seat_is_lost_at_the_servers_first_answer_and_no_seat_names_the_quantity() {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "freed seat");
    let server = config_server(dir.path(), "freed", &key, 1, false, LONG_LEASE, 0);
    let cable = Cable::to(&server.addr);
    let x = session_on(dir.path(), &key, &cable.addr.to_string(), "host-x");
    let y = session_on(dir.path(), &key, &server.addr, "host-y");
    let seat = x.acquire(1, 0, false).unwrap();
    let mut out = vec![0u8; tessera::cipher::ciphertext_len(5)];
    seat.encrypt(Mode::Derived, b"hello", &mut out).unwrap();

    // 6a: the network NO_SEAT names the real quantity.
    match y.acquire(1, 0, false) {
        Err(e @ Error::NoSeat { .. }) => {
            assert!(matches!(e, Error::NoSeat { quantity: 1 }), "{e:?}");
            assert!(e.to_string().contains("all 1 seat(s)"), "{e}");
        }
        other => panic!("Y got {other:?} while X holds the only seat"),
    }

    // X's cable is pulled; meanwhile an admin revokes its seat and Y takes it.
    cable.pull();
    revoke_the_seat(&server.admin);
    let y_seat = y.acquire(1, 0, false).expect("Y gets the revoked seat");
    cable.plug();
    let plugged = Instant::now();
    let mut seen = Vec::new();
    let lost = loop {
        match seat.encrypt(Mode::Derived, b"hello", &mut out) {
            Err(e @ Error::LeaseLost(_)) => break e,
            // The first few answers say enough.
            r if seen.len() < 3 => {
                seen.push(format!("{} ms: {r:?}", plugged.elapsed().as_millis()))
            }
            _ => {}
        }
        assert!(
            plugged.elapsed() < Duration::from_secs(10),
            "X never learned its seat was lost: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let after = plugged.elapsed();
    assert!(
        after < Duration::from_millis(LONG_LEASE.0 / 2),
        "X learned LEASE_LOST {} ms after its cable came back (lease {} ms): {seen:?} {lost}",
        after.as_millis(),
        LONG_LEASE.0
    );
    assert!(lost.to_string().contains("no longer holds"), "{lost}");
    // Y keeps the seat.
    y_seat.encrypt(Mode::Derived, b"hello", &mut out).unwrap();
}

/// Child mode: a C app's network seat (through the exported functions), released when stdin
/// says so; prints `SEAT ok`, then `REL <status number> <ms>`.
#[test]
fn child_c_release() {
    let Ok(server) = std::env::var("TESSERA_TEST_SERVER") else {
        return;
    };
    use tessera::ffi::*;
    let key = PublisherKey::from_bytes(
        &std::fs::read(std::env::var("TESSERA_TEST_KEY").unwrap()).unwrap(),
    )
    .unwrap()
    .public_key()
    .to_bytes();
    let servers = std::ffi::CString::new(server).unwrap();
    let mut o = std::mem::MaybeUninit::<tessera_open_options>::uninit();
    let st = tessera_open_options_init(o.as_mut_ptr(), size_of::<tessera_open_options>());
    assert_eq!(st as i32, 0);
    // SAFETY: initialized by tessera_open_options_init.
    let mut o = unsafe { o.assume_init() };
    o.vendor_id = VENDOR;
    o.publisher_key = key.as_ptr();
    o.publisher_key_len = key.len();
    o.sources = TESSERA_SOURCE_NETWORK;
    o.timeout_ms = 500;
    o.servers = servers.as_ptr();
    let mut session = 0;
    assert_eq!(tessera_open(&o, &mut session) as i32, 0);
    let mut seat = 0;
    assert_eq!(tessera_acquire(session, 1, 0, 0, &mut seat) as i32, 0);
    println!("SEAT ok");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let start = Instant::now();
    let st = tessera_release(seat);
    println!("REL {} {}", st as i32, start.elapsed().as_millis());
    assert_eq!(tessera_close(session) as i32, 0);
}

/// 6b: `tessera_release` while the server is down returns OK (the header says so), and the
/// seat, still held on the server, is freed when its lease runs out.
#[test]
fn a_release_while_the_server_is_down_is_ok_and_the_seat_expires_with_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "release while down");
    let key_file = dir.path().join("publisher.key");
    std::fs::write(&key_file, key.to_bytes().unwrap().as_slice()).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lease = (3000, 1000);
    let mut server = config_server(dir.path(), "release", &key, 1, false, lease, port);
    let child_home = dir.path().join("c-app-home");
    let mut cmd = child_command(
        "discovery::child_c_release",
        &server.addr,
        &key_file,
        &child_home,
    );
    cmd.env("TESSERA_HOME", &child_home)
        .env("TESSERA_DISCOVERY", "off")
        .stdin(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let mut input = child.0.stdin.take().unwrap();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut next = |word: &str| loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the C app ended before {word}"))
            .unwrap();
        // libtest's "test NAME ... " may come first on the line.
        if let Some(at) = line.find(word) {
            break line[at..].to_string();
        }
    };
    next("SEAT ok");

    server.kill9();
    writeln!(input, "release").unwrap();
    let rel = next("REL ");
    let fields: Vec<&str> = rel.split_whitespace().collect();
    assert_eq!(
        fields[1], "0",
        "tessera_release with the server down: {rel}"
    );
    let ms: u64 = fields[2].parse().unwrap();
    assert!(ms < 5000, "tessera_release took {ms} ms: {rel}");
    drop(input);
    let _ = child.0.wait();

    // The server comes back and still counts the seat (the release never arrived) until
    // its lease runs out.
    let server = config_server(dir.path(), "release", &key, 1, false, lease, port);
    let y = session_on(dir.path(), &key, &server.addr, "host-y");
    let back = Instant::now();
    match y.acquire(1, 0, false) {
        Err(Error::NoSeat { quantity: 1 }) => {}
        other => panic!("the seat was free at once after the restart: {other:?}"),
    }
    let seat = loop {
        match y.acquire(1, 0, false) {
            Ok(s) => break s,
            Err(Error::NoSeat { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "the released seat never expired on the server"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = vec![0u8; tessera::cipher::ciphertext_len(5)];
    seat.encrypt(Mode::Derived, b"hello", &mut out).unwrap();
}
