//! The virtual dongle's HID report socket: a Unix `SOCK_SEQPACKET` socket `<serial>.hid` in
//! the dongle directory, one packet per 64-byte report. Every report the dongle sends goes
//! to every connected client, as hidraw does. See `docs/DONGLES.md`.
//!
//! std has no `SOCK_SEQPACKET`, so this module uses `libc` for the socket calls; every fd is
//! held in an [`OwnedFd`].

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::framing::{REPORT_LEN, Report, ReportDevice, ReportSink};
use crate::{Error, Result};

/// Clients one server accepts at once; more are refused (closed at once).
pub const MAX_CLIENTS: usize = 64;
/// How often [`serve`] looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Packets read from one client before the others get their turn.
const PACKETS_PER_TURN: usize = 16;
/// A receive buffer larger than a report, so that an oversized packet is seen as such.
const RECV_BUF: usize = REPORT_LEN * 2;

/// The directory holding the virtual dongles' report sockets: `TESSERA_DONGLE_DIR` if set
/// and non-empty, else `/run/tessera/dongles` as root, else
/// `$XDG_RUNTIME_DIR/tessera/dongles`, else `/tmp/tessera-<uid>/dongles`.
pub fn dongle_dir() -> PathBuf {
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    dongle_dir_from(
        std::env::var_os("TESSERA_DONGLE_DIR"),
        euid,
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

/// [`dongle_dir`] from the values it reads.
fn dongle_dir_from(
    configured: Option<std::ffi::OsString>,
    euid: libc::uid_t,
    runtime_dir: Option<std::ffi::OsString>,
) -> PathBuf {
    if let Some(dir) = configured.filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if euid == 0 {
        return PathBuf::from("/run/tessera/dongles");
    }
    match runtime_dir.filter(|d| !d.is_empty()) {
        Some(run) => PathBuf::from(run).join("tessera").join("dongles"),
        None => PathBuf::from(format!("/tmp/tessera-{euid}/dongles")),
    }
}

/// The report sockets in `dir`: entries named `*.hid` that are sockets, sorted. A missing
/// or unreadable directory holds none.
pub fn enumerate(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("hid")))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .collect();
    found.sort();
    found
}

/// `sockaddr_un` for `path`.
fn sockaddr(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "socket path {} is empty, too long (at most {} bytes) or holds a NUL",
            path.display(),
            addr.sun_path.len() - 1
        )));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// A new `SOCK_SEQPACKET` Unix socket (close-on-exec).
fn seqpacket_socket(path: &Path) -> Result<OwnedFd> {
    // SAFETY: plain system call; the returned fd is checked and then owned.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io(path, io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Connects a fresh socket to `path`.
fn connect(path: &Path) -> Result<OwnedFd> {
    let (addr, len) = sockaddr(path)?;
    let fd = seqpacket_socket(path)?;
    loop {
        // SAFETY: addr is a valid sockaddr_un of length len.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                len,
            )
        };
        if rc == 0 {
            return Ok(fd);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(Error::io(path, e));
        }
    }
}

/// Waits until `fd` is readable (or hung up) or `timeout` passes; `true` if it is.
fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up, so that a short positive timeout does not become a busy loop.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(rc > 0)
}

/// Receives one packet into `buf`; returns its real length (which may exceed `buf`:
/// `MSG_TRUNC`), 0 at end of stream.
fn recv_packet(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags | libc::MSG_TRUNC,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends one packet.
fn send_packet(fd: RawFd, data: &[u8], flags: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: data is valid for data.len() bytes.
        let n = unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            // A seqpacket send is all or nothing.
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The client side: a connection to a virtual dongle's report socket.
#[derive(Debug)]
pub struct SocketDevice {
    fd: OwnedFd,
    path: PathBuf,
}

impl SocketDevice {
    /// Connects to the report socket at `path`.
    pub fn open(path: &Path) -> Result<SocketDevice> {
        Ok(SocketDevice {
            fd: connect(path)?,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ReportDevice for SocketDevice {
    fn write_report(&mut self, report: &Report) -> Result<()> {
        send_packet(self.fd.as_raw_fd(), report, 0).map_err(|e| Error::io(&self.path, e))
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Option<Report>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; RECV_BUF];
        loop {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            let ready =
                poll_readable(self.fd.as_raw_fd(), left).map_err(|e| Error::io(&self.path, e))?;
            if ready {
                let n = match recv_packet(self.fd.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(Error::io(&self.path, e)),
                };
                if n == 0 {
                    return Err(Error::io(
                        &self.path,
                        io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "the virtual dongle closed the report socket",
                        ),
                    ));
                }
                if n == REPORT_LEN {
                    let mut report = [0u8; REPORT_LEN];
                    report.copy_from_slice(&buf[..REPORT_LEN]);
                    return Ok(Some(report));
                }
                tracing::debug!("report socket: dropping a packet of {n} bytes");
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

/// A connected client of [`serve`].
struct Client {
    fd: OwnedFd,
    id: u64,
}

/// Removes a socket file left by a server that is gone; refuses a live one or a file that
/// is not a socket.
fn remove_stale(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::InvalidArgument(format!(
            "{} exists and is not a socket",
            path.display()
        )));
    }
    if connect(path).is_ok() {
        return Err(Error::io(
            path,
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "another virtual dongle serves this socket",
            ),
        ));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Binds and listens at `path` (non-blocking). The socket is bound under a temporary name
/// and renamed into place once it listens, so a client never finds a socket that refuses it.
fn listen(path: &Path) -> Result<OwnedFd> {
    sockaddr(path)?;
    remove_stale(path)?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.binding",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let fd = listen_at(&tmp)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(fd)
}

fn listen_at(path: &Path) -> Result<OwnedFd> {
    let (addr, len) = sockaddr(path)?;
    let fd = seqpacket_socket(path)?;
    // SAFETY: addr is a valid sockaddr_un of length len; fd is ours.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc != 0 {
        return Err(Error::io(path, io::Error::last_os_error()));
    }
    // SAFETY: plain system calls on our fd.
    let ok = unsafe {
        libc::listen(fd.as_raw_fd(), 16) == 0
            && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) == 0
    };
    if !ok {
        let e = io::Error::last_os_error();
        let _ = std::fs::remove_file(path);
        return Err(Error::io(path, e));
    }
    Ok(fd)
}

/// Serves a dongle on a report socket at `path` until `stop` is set: binds (removing a
/// stale socket file first), accepts up to [`MAX_CLIENTS`] clients, feeds every 64-byte
/// packet a client sends to `sink` and sends every report the sink returns to every
/// connected client. Packets of another size are dropped; a client that hangs up or errs is
/// dropped alone; a client too slow to read loses the reports its socket buffer cannot take
/// (as with hidraw). Checks `stop` every 50 ms; removes the socket file when it returns.
pub fn serve(path: &Path, sink: Arc<Mutex<dyn ReportSink>>, stop: Arc<AtomicBool>) -> Result<()> {
    let listener = listen(path)?;
    // The file we made, so that we do not remove a successor's socket on the way out.
    let ours = std::fs::symlink_metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let result = serve_loop(path, &listener, &*sink, &stop);
    drop(listener);
    if let Some(id) = ours
        && std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == id)
    {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn serve_loop(
    path: &Path,
    listener: &OwnedFd,
    sink: &Mutex<dyn ReportSink>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut clients: Vec<Client> = Vec::new();
    let mut next_id = 0u64;
    let mut buf = [0u8; RECV_BUF];
    while !stop.load(Ordering::Relaxed) {
        let mut pfds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(clients.iter().map(|c| c.fd.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = STOP_POLL.as_millis() as libc::c_int;
        // SAFETY: pfds is a valid array of pfds.len() pollfds.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io(path, e));
        }
        if rc == 0 {
            continue;
        }

        // New clients.
        if pfds[0].revents != 0 {
            loop {
                // SAFETY: accept4 with null address pointers; the fd is checked and owned.
                let fd = unsafe {
                    libc::accept4(
                        listener.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    )
                };
                if fd < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => {}
                        // The connection went away before we took it, or we are out of
                        // descriptors for now: try again on the next round.
                        _ => tracing::debug!("report socket: accept: {e}"),
                    }
                    break;
                }
                // SAFETY: fd is a fresh descriptor nobody else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                if clients.len() >= MAX_CLIENTS {
                    tracing::debug!("report socket: refusing a client beyond {MAX_CLIENTS}");
                    continue;
                }
                clients.push(Client { fd, id: next_id });
                next_id += 1;
            }
        }

        // Packets from clients, in turn.
        let mut gone: Vec<u64> = Vec::new();
        for (i, pfd) in pfds.iter().enumerate().skip(1) {
            if pfd.revents == 0 {
                continue;
            }
            let client = &clients[i - 1];
            if gone.contains(&client.id) {
                continue;
            }
            // A seqpacket socket delivers an empty packet as 0 bytes too: only with a hangup
            // does 0 mean the end.
            let hung_up = pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0;
            for _ in 0..PACKETS_PER_TURN {
                match recv_packet(client.fd.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT) {
                    Ok(0) if hung_up => {
                        gone.push(client.id);
                        break;
                    }
                    Ok(0) => {}
                    Ok(REPORT_LEN) => {
                        let mut report = [0u8; REPORT_LEN];
                        report.copy_from_slice(&buf[..REPORT_LEN]);
                        let answers = handle(sink, &report);
                        broadcast(&clients, &answers, &mut gone);
                    }
                    Ok(n) => tracing::debug!("report socket: dropping a packet of {n} bytes"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!("report socket: client {}: {e}", client.id);
                        gone.push(client.id);
                        break;
                    }
                }
            }
        }
        clients.retain(|c| !gone.contains(&c.id));
    }
    Ok(())
}

/// Runs the sink on one report. A panicking sink loses that report, not the server.
fn handle(sink: &Mutex<dyn ReportSink>, report: &Report) -> Vec<Report> {
    let run = || {
        let mut guard = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.handle_report(report, Instant::now())
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(answers) => answers,
        Err(_) => {
            tracing::error!("report socket: the dongle panicked on a report; dropped it");
            Vec::new()
        }
    }
}

/// Sends every answer to every client not yet gone; a client whose socket errs is gone, one
/// whose buffer is full misses the report.
fn broadcast(clients: &[Client], answers: &[Report], gone: &mut Vec<u64>) {
    for answer in answers {
        for client in clients {
            if gone.contains(&client.id) {
                continue;
            }
            match send_packet(client.fd.as_raw_fd(), answer, libc::MSG_DONTWAIT) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tracing::debug!("report socket: client {} is not reading", client.id);
                }
                Err(e) => {
                    tracing::debug!("report socket: client {}: {e}", client.id);
                    gone.push(client.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::dongle::framing::{
        DeviceFraming, MAX_MESSAGE, Message, allocate_channel, cmd, fragment, transact,
    };

    /// A dongle that echoes MSG payloads.
    struct Echo(DeviceFraming);

    impl ReportSink for Echo {
        fn handle_report(&mut self, report: &Report, now: Instant) -> Vec<Report> {
            self.0.handle(report, now, &mut |m| {
                (m.cmd == cmd::MSG).then(|| Message::new(m.cid, cmd::MSG, m.payload.clone()))
            })
        }
    }

    struct Server {
        path: PathBuf,
        stop: Arc<AtomicBool>,
        thread: Option<thread::JoinHandle<Result<()>>>,
        _dir: tempfile::TempDir,
    }

    impl Server {
        fn start() -> Server {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("TEST0001.hid");
            let sink: Arc<Mutex<dyn ReportSink>> = Arc::new(Mutex::new(Echo(DeviceFraming::new())));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let (path, stop) = (path.clone(), stop.clone());
                thread::spawn(move || serve(&path, sink, stop))
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while enumerate(dir.path()).is_empty() {
                assert!(Instant::now() < deadline, "the server did not come up");
                thread::sleep(Duration::from_millis(5));
            }
            Server {
                path,
                stop,
                thread: Some(thread),
                _dir: dir,
            }
        }

        fn stop(&mut self) -> Result<()> {
            self.stop.store(true, Ordering::Relaxed);
            match self.thread.take() {
                Some(t) => t.join().unwrap(),
                None => Ok(()),
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.stop();
        }
    }

    // Generous: the test binary runs two hundred tests at once on two CPUs.
    const T: Duration = Duration::from_secs(30);

    fn payload(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ salt)
            .collect()
    }

    #[test]
    fn two_clients_transact_concurrently() {
        let server = Server::start();
        let workers: Vec<_> = (0..2u8)
            .map(|k| {
                let path = server.path.clone();
                thread::spawn(move || {
                    let mut dev = SocketDevice::open(&path).unwrap();
                    let cid = allocate_channel(&mut dev, T).unwrap();
                    for round in 0..30 {
                        let len = [0, 1, 57, 58, 500, 3000, MAX_MESSAGE][round % 7];
                        let data = payload(len, k * 100 + round as u8);
                        let answer = transact(&mut dev, cid, cmd::MSG, &data, T).unwrap();
                        assert_eq!(answer, Message::new(cid, cmd::MSG, data));
                    }
                    cid
                })
            })
            .collect();
        let cids: Vec<u32> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_ne!(cids[0], cids[1]);
    }

    #[test]
    fn every_client_sees_every_answer() {
        let server = Server::start();
        let mut a = SocketDevice::open(&server.path).unwrap();
        let mut b = SocketDevice::open(&server.path).unwrap();
        // Give the server time to take b's connection before the exchange.
        thread::sleep(Duration::from_millis(150));
        let cid = allocate_channel(&mut a, T).unwrap();
        transact(&mut a, cid, cmd::PING, b"hello", T).unwrap();
        // b saw a's INIT answer and its PING answer.
        let mut seen = Vec::new();
        while let Some(r) = b.read_report(Duration::from_millis(200)).unwrap() {
            seen.push(r);
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1], fragment(cid, cmd::PING, b"hello").unwrap()[0]);
    }

    #[test]
    fn garbage_and_hangups_do_not_disturb_others() {
        let server = Server::start();
        let mut good = SocketDevice::open(&server.path).unwrap();
        let cid = allocate_channel(&mut good, T).unwrap();

        // A client sending garbage: packets of the wrong size, random reports, an empty
        // packet; then hanging up with a message half sent.
        let fd = connect(&server.path).unwrap();
        for len in [0usize, 1, 63, 65, 200, 4096] {
            let _ = send_packet(fd.as_raw_fd(), &vec![0xA5; len], 0);
        }
        for _ in 0..100 {
            let _ = send_packet(fd.as_raw_fd(), &crate::util::random::<REPORT_LEN>(), 0);
        }
        let half = fragment(0x5555_5555, cmd::MSG, &payload(1000, 1)).unwrap();
        for r in &half[..5] {
            send_packet(fd.as_raw_fd(), r, 0).unwrap();
        }
        drop(fd);
        // A client that connects and never reads.
        let _idle = SocketDevice::open(&server.path).unwrap();

        for round in 0..5u8 {
            let data = payload(2000, round);
            let answer = transact(&mut good, cid, cmd::MSG, &data, T).unwrap();
            assert_eq!(answer.payload, data);
        }
    }

    #[test]
    fn stop_removes_the_socket() {
        let mut server = Server::start();
        let mut dev = SocketDevice::open(&server.path).unwrap();
        assert_eq!(
            enumerate(server.path.parent().unwrap()),
            vec![server.path.clone()]
        );
        let started = Instant::now();
        server.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(!server.path.exists());
        // The client learns that the dongle is gone.
        assert!(matches!(dev.read_report(T), Err(Error::Io { .. })));
        assert!(SocketDevice::open(&server.path).is_err());
    }

    #[test]
    fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("STALE.hid");
        // A socket file nobody listens on.
        drop(listen(&path).unwrap());
        assert!(path.exists());
        let live = listen(&path).unwrap();
        assert!(matches!(listen(&path), Err(Error::Io { .. })));
        drop(live);
        // Not a socket: left alone.
        let file = dir.path().join("FILE.hid");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(listen(&file), Err(Error::InvalidArgument(_))));
        assert!(file.exists());
        // Only the socket is enumerated.
        assert_eq!(enumerate(dir.path()), vec![path]);
    }

    #[test]
    fn dongle_dir_precedence() {
        let s = |v: &str| Some(std::ffi::OsString::from(v));
        assert_eq!(
            dongle_dir_from(s("/x/y"), 0, s("/run/user/1")),
            PathBuf::from("/x/y")
        );
        assert_eq!(
            dongle_dir_from(s(""), 0, s("/run/user/1")),
            PathBuf::from("/run/tessera/dongles")
        );
        assert_eq!(
            dongle_dir_from(None, 1000, s("/run/user/1000")),
            PathBuf::from("/run/user/1000/tessera/dongles")
        );
        assert_eq!(
            dongle_dir_from(None, 1000, s("")),
            PathBuf::from("/tmp/tessera-1000/dongles")
        );
        assert!(
            dongle_dir().ends_with("dongles") || std::env::var_os("TESSERA_DONGLE_DIR").is_some()
        );
    }
}
