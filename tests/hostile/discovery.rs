//! 5. UDP discovery as a reflection amplifier; 6. small things (a network NO_SEAT's
//!    quantity, release while the server is unreachable, a client stuck in connect timeouts).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

use crate::common::server::ServerProc;
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

/// A server with discovery on (the shared helper turns it off), on loopback port 0; its UDP
/// discovery socket shares the license port.
fn discovery_server(dir: &Path, name: &str, key: &PublisherKey) -> ServerProc {
    let home = dir.join("server-home");
    activate(&env_in(&home), key, &[spec(1, 2, CountingUnit::Handle)]);
    let config = dir.join("server.toml");
    let toml = format!(
        "name = {name:?}\nlisten = [\"127.0.0.1:0\"]\ndiscovery = true\nstate_dir = {:?}\n\
         home = {:?}\ndongles = false\nlease_ms = 1500\nrenew_ms = 300\n\
         admin_listen = \"127.0.0.1:0\"\n",
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
