//! 3. Silent authenticated clients filling `max_connections`; 4. memory for announced
//!    frames before they arrive.
//!
//! Every server here is a real `tessera-server` process started from a configuration file
//! that names only keys the server has always had: what is tested is what the defaults do
//! (a quiet connection closed after `quiet_timeout_ms`, 10 s; a host's share of the
//! connections, a quarter of `max_connections`). Clients from other hosts are connections
//! from other loopback addresses (127.0.0.2, …): the whole 127/8 is this machine's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;

use crate::common;
use crate::common::server::KillOnDrop;

pub(crate) const VENDOR: u32 = 0x5E14;

/// A server (killed on drop) with one software container of product 1 (`quantity` seats),
/// its license address, admin address and publisher key.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: PublisherKey,
    pub server: KillOnDrop,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Fixture {
    pub fn pid(&self) -> u32 {
        self.server.0.id()
    }

    /// A network session of this machine, as the simulated host `name`.
    pub fn session(&self, name: &str) -> Session {
        let mut o = SessionOptions::new(VENDOR, self.key.public_key());
        o.sources = sources::NETWORK;
        o.servers = vec![self.addr.to_string()];
        o.timeout = Duration::from_secs(2);
        let env = Environment {
            home: self.dir.path().join(format!("client-{name}")),
            host: HostIdentity::simulated(name),
            clock: Arc::new(tessera::util::SystemClock),
        };
        Session::open_in(o, env).unwrap()
    }
}

/// Starts `tessera-server --config FILE` with `settings` (TOML lines) added to a loopback
/// configuration; `nofile` sets its open-file limit (soft and hard) before it runs.
pub(crate) fn start(settings: &str, nofile: Option<u64>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "hostile tests");
    let home = dir.path().join("server-home");
    common::activate(
        &common::env_in(&home),
        &key,
        &[common::spec(1, 50, CountingUnit::Handle)],
    );
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"hostile\"\nlisten = [\"127.0.0.1:0\"]\ndiscovery = false\n\
             dongles = false\nfsync = false\nadmin_listen = \"127.0.0.1:0\"\n\
             state_dir = {:?}\nhome = {:?}\n{settings}\n",
            dir.path().join("server-state"),
            home
        ),
    )
    .unwrap();
    let mut cmd = Command::new(common::bin("tessera-server"));
    cmd.arg("--config")
        .arg(&config)
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut server = KillOnDrop(cmd.spawn().unwrap());
    let mut out = BufReader::new(server.0.stdout.take().unwrap());
    let mut said = |prefix: &str| -> SocketAddr {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("the server said {line:?}"))
            .parse()
            .unwrap()
    };
    let addr = said("listening on ");
    let admin = said("admin on ");
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = out.read_to_string(&mut sink);
    });
    Fixture {
        dir,
        key,
        server,
        addr,
        admin,
    }
}

/// A TCP connection to `to` from the local address `from`.
pub(crate) fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// A connection from `from` through the Noise handshake, then nothing: what a client that
/// authenticated and went silent looks like. None when the server would not have it.
fn silent_client(f: &Fixture, from: IpAddr) -> Option<(TcpStream, tessera::net::conn::NetChannel)> {
    use tessera::host::MachineKind;
    use tessera::net::proto::{ClientHello, HostInfo, PROTOCOL_VERSION};
    let mut stream = connect_from(from, f.addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let hello = ClientHello {
        version: PROTOCOL_VERSION,
        host: HostInfo {
            machine: MachineKind::Physical,
            hostname: format!("silent-{from}"),
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
    .ok()?;
    Some((stream, channel))
}

/// Whether the server closed `s` (end of stream or reset) by `deadline`.
pub(crate) fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut b = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn silent_clients_of_one_host_leave_room_for_another_and_are_closed_soon() {
    // Leases of 30 s: the old idle limit (three leases) is 90 s.
    let f = start(
        "lease_ms = 30000\nrenew_ms = 10000\nmax_connections = 40\n",
        None,
    );
    let silent_host: IpAddr = "127.0.0.2".parse().unwrap();
    // 100 clients of one host finish the handshake and say nothing.
    let mut silent = Vec::new();
    for _ in 0..100 {
        if let Some(c) = silent_client(&f, silent_host) {
            silent.push((Instant::now(), c));
        }
    }
    assert!(!silent.is_empty(), "the host got none of the connections");
    let held = silent.len();
    // Another host (this one, 127.0.0.1) gets a seat at once.
    let started = Instant::now();
    let s = f.session("another-host");
    let seat = s.acquire(1, 0, false);
    assert!(
        seat.is_ok(),
        "{held} silent connections of one host locked another out: {:?}",
        seat.err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the seat took {:?}",
        started.elapsed()
    );
    assert!(held <= 10, "one host holds {held} of 40 connections");
    // The silent ones are closed after the quiet limit (10 s by default), not after three
    // leases (90 s).
    for (i, (since, (stream, _))) in silent.iter_mut().enumerate() {
        assert!(
            closed_by(stream, *since + Duration::from_secs(13)),
            "silent connection {i} still open {:?} after its handshake",
            since.elapsed()
        );
    }
    // The seat holder's connection is another matter: its seat still works.
    let seat = seat.unwrap();
    let mut ct = vec![0u8; 200];
    assert!(
        seat.encrypt(tessera::cipher::Mode::Direct, b"still here", &mut ct)
            .is_ok()
    );
}

#[test]
fn frames_announced_and_never_sent_cost_no_memory() {
    let f = start("lease_ms = 30000\nrenew_ms = 10000\n", None);
    const N: usize = 200;
    const ANNOUNCED: u64 = 65_536;
    // Connections from 20 hosts, each through the handshake.
    let mut conns = Vec::new();
    for i in 0..N {
        let from: IpAddr = format!("127.0.1.{}", 1 + i % 20).parse().unwrap();
        let (s, _) = silent_client(&f, from).expect("a connection");
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss(f.pid());
    // Each announces a 64 KiB frame (the largest allowed) and sends none of it.
    for s in &mut conns {
        s.write_all(&(ANNOUNCED as u32).to_be_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1000));
    let after = rss(f.pid());
    let grew = after.saturating_sub(before);
    println!(
        "RSS {} KiB before, {} KiB after {N} announcements of 64 KiB: +{} KiB",
        before / 1024,
        after / 1024,
        grew / 1024
    );
    assert!(
        grew < N as u64 * ANNOUNCED / 8,
        "{N} announced frames grew the server by {} KiB ({} KiB announced)",
        grew / 1024,
        N as u64 * ANNOUNCED / 1024
    );
    assert!(alive(f.pid()), "the server died");
}

/// Whether a process is running (not gone, not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            let state = st
                .rsplit(')')
                .next()?
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z")
        })
        .unwrap_or(false)
}
