//! Finding license servers on the local network: a UDP broadcast of a probe ([`probe`]:
//! [`DISCOVERY_PROBE`], [`DISCOVERY_VERSION`], zeros up to [`DISCOVERY_PROBE_LEN`] bytes) to
//! the discovery port, answered by each server with [`DISCOVERY_ANSWER`] and a
//! [`DiscoveryAnswer`]. Both sides are here: [`discover`] for the client, [`answer_probe`] for
//! the server.
//!
//! A server is no reflection amplifier: it answers only a well-formed probe of exactly the
//! probe length, and never with more bytes than the probe had (an answer that would not fit
//! loses vendors, then the end of the name). A spoofed source address gets at most what its
//! sender paid for. Old clients' 16-byte probes get no answer.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::proto::{
    self, DISCOVERY_ANSWER, DISCOVERY_PROBE, DISCOVERY_PROBE_LEN, DISCOVERY_VERSION,
    DiscoveryAnswer,
};

/// The largest discovery datagram read.
const MAX_DATAGRAM: usize = 2048;

/// The probe a client sends: the magic, the version, zeros.
pub fn probe() -> [u8; DISCOVERY_PROBE_LEN] {
    let mut p = [0u8; DISCOVERY_PROBE_LEN];
    p[..DISCOVERY_PROBE.len()].copy_from_slice(DISCOVERY_PROBE);
    p[DISCOVERY_PROBE.len()] = DISCOVERY_VERSION;
    p
}

/// Whether `packet` is exactly a probe of this version: its length, magic, version and
/// all-zero padding.
pub fn is_probe(packet: &[u8]) -> bool {
    packet.len() == DISCOVERY_PROBE_LEN
        && packet.starts_with(DISCOVERY_PROBE)
        && packet[DISCOVERY_PROBE.len()] == DISCOVERY_VERSION
        && packet[DISCOVERY_PROBE.len() + 1..].iter().all(|&b| b == 0)
}

/// What a server sends back for `packet`: `DISCOVERY_ANSWER | encode(answer)` when the packet
/// is a probe ([`is_probe`]), `None` for anything else. The answer is never longer than the
/// probe: one that would be loses vendors from its end, then characters from the end of its
/// name, until it fits.
pub fn answer_probe(packet: &[u8], answer: &DiscoveryAnswer) -> Option<Vec<u8>> {
    if !is_probe(packet) {
        return None;
    }
    let limit = packet.len();
    let mut answer = answer.clone();
    loop {
        let body = proto::encode(&answer).ok()?;
        let len = DISCOVERY_ANSWER.len() + body.len();
        if len <= limit {
            let mut out = Vec::with_capacity(len);
            out.extend_from_slice(DISCOVERY_ANSWER);
            out.extend_from_slice(&body);
            return Some(out);
        }
        if answer.vendors.pop().is_some() {
            continue;
        }
        if answer.name.is_empty() {
            return None;
        }
        let mut keep = answer.name.len().saturating_sub(len - limit);
        while !answer.name.is_char_boundary(keep) {
            keep -= 1;
        }
        answer.name.truncate(keep);
    }
}

/// Decodes a server's answer; `None` for anything else.
pub fn parse_answer(packet: &[u8]) -> Option<DiscoveryAnswer> {
    let body = packet.strip_prefix(DISCOVERY_ANSWER.as_slice())?;
    let answer: DiscoveryAnswer = proto::decode(body, "discovery answer").ok()?;
    (answer.port != 0).then_some(answer)
}

/// Servers answering on the local network within `timeout`: probes go to 255.255.255.255 and
/// to the broadcast address of every IPv4 interface that has one (loopback excluded), at the
/// discovery `port`. Each server once, as (its address and license port, its answer).
pub fn discover(timeout: Duration, port: u16) -> Vec<(SocketAddr, DiscoveryAnswer)> {
    if !discovery_enabled() {
        return Vec::new();
    }
    let mut targets = vec![SocketAddr::from((Ipv4Addr::BROADCAST, port))];
    for b in interface_broadcasts() {
        let a = SocketAddr::from((b, port));
        if !targets.contains(&a) {
            targets.push(a);
        }
    }
    discover_at(&targets, timeout)
}

/// Whether broadcast discovery may run: `TESSERA_DISCOVERY=off` (or `0`, `no`) turns it off,
/// for sites that forbid broadcasts and for test runs that must not send traffic beyond
/// the machine.
pub fn discovery_enabled() -> bool {
    !matches!(
        std::env::var("TESSERA_DISCOVERY")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Ok("off" | "0" | "no" | "false")
    )
}

/// Probes the given IPv4 addresses (unicast or broadcast) and collects answers until
/// `timeout`: a probe at the start and again half-way (UDP may drop one), garbage ignored,
/// each server (sender address, answered port) once, in the order they answered. IPv6
/// targets are skipped (discovery is IPv4 broadcast).
pub fn discover_at(addrs: &[SocketAddr], timeout: Duration) -> Vec<(SocketAddr, DiscoveryAnswer)> {
    let deadline = Instant::now() + timeout;
    let socket = match probe_socket() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "discovery socket");
            return Vec::new();
        }
    };
    let probe = probe();
    let send_probes = || {
        for a in addrs.iter().filter(|a| a.is_ipv4()) {
            if let Err(e) = socket.send_to(&probe, a) {
                tracing::debug!(target = %a, error = %e, "discovery probe not sent");
            }
        }
    };
    send_probes();
    let mut resend = Some(Instant::now() + timeout / 2);
    let mut found: Vec<(SocketAddr, DiscoveryAnswer)> = Vec::new();
    let mut seen = HashSet::new();
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(at) = resend
            && now >= at
        {
            send_probes();
            resend = None;
        }
        let wait = resend.map_or(deadline, |at| at.min(deadline)) - now;
        if wait.is_zero() || socket.set_read_timeout(Some(wait)).is_err() {
            continue;
        }
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "discovery receive");
                break;
            }
        };
        let Some(answer) = parse_answer(&buf[..n]) else {
            continue;
        };
        let server = SocketAddr::new(from.ip(), answer.port);
        if seen.insert(server) {
            found.push((server, answer));
        }
    }
    found
}

fn probe_socket() -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_broadcast(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    Ok(socket.into())
}

/// The broadcast addresses of the IPv4 interfaces that are up, have one, and are not
/// loopback.
pub fn interface_broadcasts() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let flags = ifa.ifa_flags;
        if flags & libc::IFF_UP as libc::c_uint == 0
            || flags & libc::IFF_LOOPBACK as libc::c_uint != 0
            || flags & libc::IFF_BROADCAST as libc::c_uint == 0
            || ifa.ifa_addr.is_null()
        {
            continue;
        }
        // SAFETY: non-null sockaddr from getifaddrs.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        let broadcast = broadcast_field(ifa);
        if broadcast.is_null() {
            continue;
        }
        // SAFETY: with IFF_BROADCAST the field is the broadcast address, of the interface's
        // family (AF_INET, checked above) when set; the family is checked again.
        let sin = unsafe { &*(broadcast as *const libc::sockaddr_in) };
        if i32::from(sin.sin_family) != libc::AF_INET {
            continue;
        }
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if !ip.is_unspecified() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn broadcast_field(ifa: &libc::ifaddrs) -> *mut libc::sockaddr {
    ifa.ifa_ifu
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn broadcast_field(ifa: &libc::ifaddrs) -> *mut libc::sockaddr {
    ifa.ifa_dstaddr
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn answer(name: &str, port: u16) -> DiscoveryAnswer {
        DiscoveryAnswer {
            name: name.into(),
            port,
            vendors: vec![7, 8],
        }
    }

    #[test]
    fn answers_only_probes_and_round_trips() {
        let a = answer("s", 22630);
        let packet = answer_probe(&probe(), &a).unwrap();
        assert!(packet.starts_with(DISCOVERY_ANSWER));
        assert_eq!(parse_answer(&packet), Some(a.clone()));
        assert!(answer_probe(b"hello", &a).is_none());
        assert!(answer_probe(&DISCOVERY_PROBE[..8], &a).is_none());
        assert!(parse_answer(&probe()).is_none());
        assert!(
            parse_answer(&packet[..packet.len() - 1]).is_none(),
            "truncated"
        );
        assert!(
            parse_answer(&[packet.as_slice(), &[0]].concat()).is_none(),
            "trailing"
        );
    }

    #[test]
    fn only_an_exact_probe_is_answered() {
        let a = answer("s", 22630);
        let p = probe();
        assert!(is_probe(&p));
        assert!(
            answer_probe(DISCOVERY_PROBE, &a).is_none(),
            "version 1's bare magic"
        );
        assert!(answer_probe(&p[..p.len() - 1], &a).is_none(), "short");
        assert!(
            answer_probe(&[p.as_slice(), &[0]].concat(), &a).is_none(),
            "long"
        );
        let mut junk = p;
        junk[DISCOVERY_PROBE_LEN - 1] = 1;
        assert!(answer_probe(&junk, &a).is_none(), "junk in the padding");
        let mut other = p;
        other[DISCOVERY_PROBE.len()] = DISCOVERY_VERSION + 1;
        assert!(answer_probe(&other, &a).is_none(), "another version");
    }

    #[test]
    fn an_answer_never_outgrows_the_probe() {
        for (name, vendors) in [
            ("short".to_string(), 0..3u32),
            ("é".repeat(400), 0..3),
            ("n".repeat(100), 0..200),
            ("x".repeat(5000), 0..2000),
        ] {
            let a = DiscoveryAnswer {
                name: name.clone(),
                port: 22630,
                vendors: vendors.map(|v| v.wrapping_mul(0x9E37_79B9)).collect(),
            };
            let reply = answer_probe(&probe(), &a).unwrap();
            assert!(reply.len() <= DISCOVERY_PROBE_LEN, "{} bytes", reply.len());
            let back = parse_answer(&reply).unwrap();
            assert_eq!(back.port, 22630);
            assert!(name.starts_with(&back.name));
            assert!(!back.name.is_empty());
            assert!(a.vendors.starts_with(&back.vendors));
        }
        let small = answer("short", 1);
        assert_eq!(
            parse_answer(&answer_probe(&probe(), &small).unwrap()),
            Some(small)
        );
    }

    /// A responder on 127.0.0.1 that first sends garbage, then answers with `answer_probe`.
    fn responder(a: DiscoveryAnswer) -> (SocketAddr, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Some(reply) = answer_probe(&buf[..n], &a) else {
                    continue;
                };
                socket.send_to(b"garbage", from).unwrap();
                socket.send_to(DISCOVERY_ANSWER, from).unwrap();
                socket
                    .send_to(&[DISCOVERY_ANSWER.as_slice(), &[1, 0, 0xFF]].concat(), from)
                    .unwrap();
                socket.send_to(&reply, from).unwrap();
            }
        });
        (addr, stop, thread)
    }

    #[test]
    fn discover_at_finds_a_responder_once_and_ignores_garbage() {
        let (addr, stop, thread) = responder(answer("alpha", 4321));
        let (addr2, stop2, thread2) = responder(answer("beta", 4322));
        let found = discover_at(&[addr, addr2], Duration::from_millis(400));
        stop.store(true, Ordering::SeqCst);
        stop2.store(true, Ordering::SeqCst);
        thread.join().unwrap();
        thread2.join().unwrap();
        let mut found: Vec<(SocketAddr, String)> =
            found.into_iter().map(|(a, d)| (a, d.name)).collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                ("127.0.0.1:4321".parse().unwrap(), "alpha".to_string()),
                ("127.0.0.1:4322".parse().unwrap(), "beta".to_string()),
            ]
        );
    }

    #[test]
    fn discover_at_nothing_returns_nothing_in_time() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let found = discover_at(&[silent.local_addr().unwrap()], Duration::from_millis(150));
        assert!(found.is_empty());
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn interface_broadcasts_are_ipv4_broadcasts_not_loopback() {
        for b in interface_broadcasts() {
            assert!(!b.is_loopback() && !b.is_unspecified(), "{b}");
        }
    }
}
