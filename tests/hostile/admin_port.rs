//! 2. The admin port: idle connections, header and idle timeouts, its own connection cap.
//!
//! Servers as in `silent_clients` (a configuration file with only long-standing keys, so
//! what is tested is what the defaults do: 128 admin connections at most, request headers
//! within 10 s).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::silent_clients::{alive, closed_by, start};

/// Raises this test process's open-file soft limit to its hard limit (it holds hundreds of
/// sockets).
fn raise_own_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialized struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn idle_admin_connections_never_starve_the_license_port() {
    raise_own_file_limit();
    // 256 descriptors: a few hundred idle admin connections reach the limit (as 1,100 did
    // at the usual 1,024).
    let f = start(
        "lease_ms = 30000\nrenew_ms = 10000\nmax_connections = 64\n",
        Some(256),
    );
    let mut idle: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(f.admin).ok())
        .collect();
    assert!(idle.len() >= 300, "only {} admin connections", idle.len());
    // Let the server accept what it will.
    std::thread::sleep(Duration::from_millis(1000));
    let opened = Instant::now();
    // A license client gets its seat at once.
    let started = Instant::now();
    let s = f.session("license-client");
    let seat = s.acquire(1, 0, false);
    assert!(
        seat.is_ok(),
        "{} idle admin connections starved the license port: {:?}",
        idle.len(),
        seat.err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The idle ones are closed after the header timeout (10 s) ...
    for (i, c) in idle.iter_mut().enumerate() {
        assert!(
            closed_by(c, opened + Duration::from_secs(14)),
            "idle admin connection {i} still open after {:?}",
            opened.elapsed()
        );
    }
    drop(idle);
    // ... and the admin port answers again.
    let a = crate::common::http::get(&f.admin.to_string(), "/api/v1/status", &[]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(alive(f.pid()));
}

#[test]
fn a_slowloris_on_the_admin_port_is_closed() {
    let f = start("lease_ms = 30000\nrenew_ms = 10000\n", None);
    let mut c = TcpStream::connect(f.admin).unwrap();
    let opened = Instant::now();
    c.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    // A header line every half second, never the end of the headers.
    let mut closed = false;
    for i in 0.. {
        if opened.elapsed() > Duration::from_secs(15) {
            break;
        }
        if c.write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .is_err()
            || closed_by(&mut c, Instant::now() + Duration::from_millis(500))
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a request whose headers never end still open after {:?}",
        opened.elapsed()
    );
    assert!(
        opened.elapsed() >= Duration::from_secs(9),
        "closed after {:?}, before the 10 s header timeout",
        opened.elapsed()
    );
    assert!(alive(f.pid()));
}
