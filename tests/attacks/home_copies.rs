//! 2. Two homes, twice the seats: copies of `TESSERA_HOME`, a deleted seat folder, two
//!    servers hosting one container.
//! 3. PID namespaces: processes in separate PID namespaces each claiming to be pid 1
//!    (`pid_namespaces.rs`, which uses the seat holder of this file).
//!
//! Local seats are counted in the machine-wide place `/dev/shm/tessera/seats/<container
//! serial>/`, whichever home a container file is opened from; deleting or replacing the
//! registry at most moves a seat (its holder re-claims, or loses it on its next use); a
//! server holds a machine-wide lock on every container it hosts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tessera::Error;
use tessera::cipher::Mode;
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

use crate::common::server::ServerProc;
use crate::common::{self, spec};

const VENDOR: u32 = 0x13_02;

/// The machine-wide place where local seats and hosting locks live (see
/// `tessera::client::seats`): fixed, whatever `TESSERA_HOME` says.
const MACHINE: &str = "/dev/shm/tessera";

/// Removes what a test's container left in the machine-wide place, also when it fails.
pub(crate) struct MachineFolders(pub String);

impl Drop for MachineFolders {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new(MACHINE).join("seats").join(&self.0));
        let _ = std::fs::remove_file(Path::new(MACHINE).join("hosted").join(&self.0));
    }
}

/// A publisher key saved in `dir/key`, and a home `dir/<name>` of this machine with `specs`
/// activated in one software container; returns the key and the container's serial.
pub(crate) fn setup(
    dir: &Path,
    name: &str,
    specs: &[tessera::publisher::LicenseSpec],
) -> (PublisherKey, String) {
    let key = PublisherKey::generate(VENDOR, "attacks");
    key.save(&dir.join("key")).unwrap();
    let serial = common::activate(&common::env_in(&dir.join(name)), &key, specs);
    (key, serial)
}

/// Child mode: a session of this machine on the home `TESSERA_ATTACK_HOME` (software
/// containers only) acquires product `TESSERA_ATTACK_PRODUCT`, prints `PID <its pid>`, then
/// `SEAT ok` or `SEAT refused <error>`, then for every `use` line on stdin encrypts with the seat and
/// prints `USE ok` or `USE <error>`; it ends when stdin closes.
#[test]
fn child_local_seat_holder() {
    let Ok(home) = std::env::var("TESSERA_ATTACK_HOME") else {
        return;
    };
    let product: u32 = std::env::var("TESSERA_ATTACK_PRODUCT")
        .unwrap()
        .parse()
        .unwrap();
    let key = PublisherKey::load(Path::new(&std::env::var("TESSERA_ATTACK_KEY").unwrap())).unwrap();
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::SOFTWARE;
    let s = Session::open_in(o, common::env_in(Path::new(&home))).unwrap();
    let seat = s.acquire(product, 0, false);
    let mut out = std::io::stdout();
    writeln!(out, "PID {}", std::process::id()).unwrap();
    match &seat {
        Ok(_) => writeln!(out, "SEAT ok").unwrap(),
        Err(e) => writeln!(out, "SEAT refused {e}").unwrap(),
    }
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() != "use" {
            continue;
        }
        let verdict = match &seat {
            Ok(seat) => {
                let mut ct = [0u8; 128];
                match seat.encrypt(Mode::Derived, b"attack", &mut ct) {
                    Ok(_) => "ok".to_string(),
                    Err(Error::LeaseLost(m)) => format!("lost {m}"),
                    Err(e) => format!("failed {e}"),
                }
            }
            Err(_) => "noseat".to_string(),
        };
        writeln!(out, "USE {verdict}").unwrap();
        out.flush().unwrap();
    }
}

/// A [`child_local_seat_holder`] process; killed (and reaped) on drop, also on a failed test.
pub(crate) struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    /// Runs the seat holder on `home` for `product`, under `wrapper` (a command and its
    /// arguments that run the rest, as `unshare --pid --fork` does; empty for none).
    pub(crate) fn spawn(dir: &Path, home: &Path, product: u32, wrapper: &[&str]) -> Holder {
        Self::spawn_env(dir, home, product, wrapper, &[])
    }

    /// [`Holder::spawn`] with more environment variables.
    pub(crate) fn spawn_env(
        dir: &Path,
        home: &Path,
        product: u32,
        wrapper: &[&str],
        vars: &[(&str, &str)],
    ) -> Holder {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = cmd
            .args([
                "--exact",
                "home_copies::child_local_seat_holder",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TESSERA_ATTACK_HOME", home)
            .env("TESSERA_ATTACK_KEY", dir.join("key"))
            .env("TESSERA_ATTACK_PRODUCT", product.to_string())
            // The session id must come from the kernel only.
            .env_remove("SSH_CONNECTION")
            .env_remove("SSH_CLIENT")
            .env_remove("XRDP_SESSION")
            .env_remove("DISPLAY")
            .envs(vars.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Holder {
            child,
            stdin,
            stdout,
        }
    }

    /// The rest of the first line starting with `word ` that the child prints.
    fn line(&mut self, word: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the seat holder ended before saying {word}");
            // libtest prints the test's name on the line before the test's own output.
            if let Some(at) = line.find(&format!("{word} ")) {
                return line[at + word.len() + 1..].trim().to_string();
            }
        }
    }

    /// Whether the child got its seat (else why not), and the pid it sees itself as.
    pub(crate) fn verdict_and_pid(&mut self) -> (Result<(), String>, u32) {
        let pid = self.line("PID").parse().unwrap();
        let v = self.line("SEAT");
        (if v == "ok" { Ok(()) } else { Err(v) }, pid)
    }

    /// Whether the child got its seat, else why not.
    pub(crate) fn verdict(&mut self) -> Result<(), String> {
        self.verdict_and_pid().0
    }

    /// Has the child encrypt with its seat: `ok`, `lost ...` or `failed ...`.
    pub(crate) fn use_seat(&mut self) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"use\n").unwrap();
        stdin.flush().unwrap();
        self.line("USE")
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// Every seat folder of `serial` a runtime may use: the machine-wide one, and the one the
/// runtime used to keep under the home.
fn seat_folders(home: &Path, serial: &str) -> Vec<PathBuf> {
    vec![
        Path::new(MACHINE).join("seats").join(serial),
        home.join("seats"),
    ]
}

#[test]
fn a_copied_home_on_the_same_machine_gives_no_second_seat() {
    let dir = tempfile::tempdir().unwrap();
    let (_, serial) = setup(dir.path(), "home", &[spec(1, 1, CountingUnit::Process)]);
    let _clean = MachineFolders(serial);
    let home = dir.path().join("home");
    let copy = dir.path().join("home2");
    cp_a(&home, &copy);
    let mut a = Holder::spawn(dir.path(), &home, 1, &[]);
    a.verdict().expect("the first process takes the only seat");
    let mut b = Holder::spawn(dir.path(), &copy, 1, &[]);
    let r = b.verdict();
    assert!(
        r.is_err(),
        "the copy of the home gave a second seat of a 1-seat license"
    );
    assert_eq!(a.use_seat(), "ok");
    // The seat is one for both homes: once A ends, the copy may have it.
    drop(a);
    let mut c = Holder::spawn(dir.path(), &copy, 1, &[]);
    c.verdict().expect("the seat is free again");
}

#[test]
fn deleting_the_seat_folder_while_a_seat_is_held_never_gives_two_seats_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (_, serial) = setup(dir.path(), "home", &[spec(2, 1, CountingUnit::Process)]);
    let _clean = MachineFolders(serial.clone());
    let home = dir.path().join("home");
    let mut a = Holder::spawn(dir.path(), &home, 2, &[]);
    a.verdict().expect("A takes the only seat");
    assert_eq!(a.use_seat(), "ok");
    for f in seat_folders(&home, &serial) {
        let _ = std::fs::remove_dir_all(&f);
    }
    // The registry is gone: a new process may get the seat, but then A has lost it.
    let mut b = Holder::spawn(dir.path(), &home, 2, &[]);
    b.verdict().expect("B claims in the new registry");
    let used = a.use_seat();
    assert!(
        used.starts_with("lost"),
        "A and B both use the one seat (A's use said {used:?})"
    );
    assert_eq!(b.use_seat(), "ok");
    // A stays without a seat while B holds it.
    assert!(a.use_seat().starts_with("lost"));
}

#[test]
fn replacing_the_seat_files_while_a_seat_is_held_at_most_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, serial) = setup(dir.path(), "home", &[spec(3, 1, CountingUnit::Process)]);
    let _clean = MachineFolders(serial.clone());
    let home = dir.path().join("home");
    let mut a = Holder::spawn(dir.path(), &home, 3, &[]);
    a.verdict().expect("A takes the only seat");
    // Every seat file replaced by a fresh, unlocked one.
    let mut replaced = 0;
    for f in seat_folders(&home, &serial) {
        replaced += replace_slot_files(&f);
    }
    assert!(replaced > 0, "no seat file found to replace");
    // A uses its seat first: it re-claims it in the registry as it is now ...
    assert_eq!(a.use_seat(), "ok");
    // ... so the seat is still taken.
    let mut b = Holder::spawn(dir.path(), &home, 3, &[]);
    let r = b.verdict();
    assert!(
        r.is_err(),
        "replacing the seat files gave a second seat of a 1-seat license"
    );
    assert_eq!(a.use_seat(), "ok");
}

/// Replaces every seat file under `dir` (`seat-*`, or `slot-*` as they were once named) by a
/// new empty file (renamed over it); returns how many.
fn replace_slot_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            n += replace_slot_files(&p);
        } else if ["slot-", "seat-"]
            .iter()
            .any(|p| e.file_name().to_string_lossy().starts_with(p))
        {
            let fresh = dir.join("fresh");
            std::fs::write(&fresh, b"").unwrap();
            std::fs::rename(&fresh, &p).unwrap();
            n += 1;
        }
    }
    n
}

/// Takes an OFD read lock on byte 0 of `f`, as a seat holder does (any process can).
fn ofd_read_lock(f: &std::fs::File) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock is a plain C struct; all-zero is valid (l_pid 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_len = 1;
    // SAFETY: a valid fd and flock struct.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

/// A 128-byte identity record, as seat files hold one.
fn record(text: &str) -> Vec<u8> {
    let mut r = text.as_bytes().to_vec();
    r.resize(128, 0);
    r
}

#[test]
fn forged_identity_records_in_the_registry_give_no_seat_to_another_session() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let (_, serial) = setup(dir.path(), "home", &[spec(4, 1, CountingUnit::Session)]);
    let _clean = MachineFolders(serial.clone());
    let home = dir.path().join("home");
    // Two SSH sessions of this POSIX session: the runtime tells them apart by the client.
    let me = tessera::host::session_id().id;
    let kernel: Vec<&str> = me.splitn(3, '/').take(2).collect();
    let kernel = kernel.join("/");
    let a_ssh = "10.13.0.1 1001 10.13.0.9 22";
    let b_ssh = "10.13.0.2 2002 10.13.0.9 22";
    let b_identity = format!("session:{kernel}/ssh:10.13.0.2:2002");
    let mut a = Holder::spawn_env(dir.path(), &home, 4, &[], &[("SSH_CONNECTION", a_ssh)]);
    a.verdict().expect("session A takes the only seat");
    // The attacker (any user: the registry is writable by all) makes B's identity look
    // like a holder of the taken seat: B's identity in every seat file, and a locked file
    // for B's identity as the runtime would name it.
    let mut forged = Vec::new();
    let lic_dirs: Vec<PathBuf> = std::fs::read_dir(Path::new(MACHINE).join("seats").join(&serial))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!lic_dirs.is_empty());
    let digest = Sha256::digest(b_identity.as_bytes());
    for d in &lic_dirs {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("slot-") || name.starts_with("seat-") {
                let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                f.write_all(&record(&b_identity)).unwrap();
            }
        }
        for (name, text) in [
            (
                format!("ident-{}", hex::encode(&digest[..12])),
                "0".to_string(),
            ),
            (
                format!("seat-{}", hex::encode(&digest[..16])),
                b_identity.clone(),
            ),
        ] {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(d.join(name))
                .unwrap();
            (&f).write_all(&record(&text)).unwrap();
            ofd_read_lock(&f);
            forged.push(f);
        }
    }
    let mut b = Holder::spawn_env(dir.path(), &home, 4, &[], &[("SSH_CONNECTION", b_ssh)]);
    let r = b.verdict();
    assert!(
        r.is_err(),
        "session B shares session A's seat through forged records"
    );
    assert_eq!(a.use_seat(), "ok");
}

/// A `tessera-server` on loopback hosting `home`, its log (warnings) in `log`.
fn server(state: &Path, home: &Path, log: &Path) -> ServerProc {
    let mut child = Command::new(common::bin("tessera-server"))
        .args([
            "--name",
            "attack",
            "--no-discovery",
            "--no-dongles",
            "--no-admin",
        ])
        // Renewals every 300 ms: a network seat encrypts by itself between them, and learns
        // at the next one that the server lost its container.
        .args(["--lease-ms", "1500", "--renew-ms", "300"])
        .args(["--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(state)
        .arg("--home")
        .arg(home)
        .env("TESSERA_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server said {line:?}")
        })
        .to_string();
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut sink);
    });
    ServerProc {
        child: Some(child),
        addr,
        admin: String::new(),
        extra: Vec::new(),
        state: state.to_path_buf(),
        home: home.to_path_buf(),
        port: 0,
        lease: (common::server::LEASE_MS, common::server::RENEW_MS),
        wrap: Vec::new(),
    }
}

fn network_session(key: &PublisherKey, dir: &Path, name: &str, server: &str) -> Session {
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![server.to_string()];
    o.timeout = Duration::from_secs(2);
    let env = Environment {
        home: dir.join(format!("client-{name}")),
        host: HostIdentity::simulated(name),
        clock: Arc::new(SystemClock),
    };
    Session::open_in(o, env).unwrap()
}

#[test]
fn two_servers_on_one_machine_never_host_one_container_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, serial) = setup(d, "server-home", &[spec(1, 1, CountingUnit::Station)]);
    let _clean = MachineFolders(serial.clone());
    let home = d.join("server-home");
    let copy = d.join("server-home2");
    cp_a(&home, &copy);
    let mut first = server(&d.join("state1"), &home, &d.join("log1"));
    // A second server on a copy of the home, and a third on the same home, each with its
    // own state directory (its own seat table).
    let second = server(&d.join("state2"), &copy, &d.join("log2"));
    let third = server(&d.join("state3"), &home, &d.join("log3"));
    let a = network_session(&key, d, "host-a", &first.addr);
    let _seat = a
        .acquire(1, 0, false)
        .expect("the first server grants the seat");
    for (s, name) in [(&second, "host-b"), (&third, "host-c")] {
        let r = network_session(&key, d, name, &s.addr).acquire(1, 0, false);
        assert!(
            r.is_err(),
            "a second server counted the same 1-seat license again"
        );
    }
    let pid = first.child.as_ref().unwrap().id();
    for log in ["log2", "log3"] {
        let text = std::fs::read_to_string(d.join(log)).unwrap();
        assert!(
            text.contains(&serial) && text.contains(&format!("pid {pid}")),
            "the refusing server names neither the container nor the server holding it: {text}"
        );
    }
    // Once the first server is gone (even killed), the container is free for another.
    drop(_seat);
    first.kill9();
    let fourth = server(&d.join("state4"), &copy, &d.join("log4"));
    let r = network_session(&key, d, "host-d", &fourth.addr).acquire(1, 0, false);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn deleting_the_hosting_lock_never_lets_two_servers_serve_one_container() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, serial) = setup(d, "server-home", &[spec(1, 1, CountingUnit::Station)]);
    let _clean = MachineFolders(serial.clone());
    let home = d.join("server-home");
    let copy = d.join("server-home2");
    cp_a(&home, &copy);
    let first = server(&d.join("state1"), &home, &d.join("log1"));
    let a = network_session(&key, d, "host-a", &first.addr);
    let seat_a = a
        .acquire(1, 0, false)
        .expect("the first server grants the seat");
    let mut ct = [0u8; 128];
    seat_a.encrypt(Mode::Derived, b"a", &mut ct).unwrap();
    // The lock file deleted under the first server: a second server takes the container.
    std::fs::remove_file(Path::new(MACHINE).join("hosted").join(&serial)).unwrap();
    let second = server(&d.join("state2"), &copy, &d.join("log2"));
    let b = network_session(&key, d, "host-b", &second.addr);
    let seat_b = b.acquire(1, 0, false);
    // Seat A encrypts by itself between renewals (with keys the first server handed it
    // while it hosted the container); its next renewal says it is lost.
    let mut tries = 0;
    let used_a = loop {
        match seat_a.encrypt(Mode::Derived, b"a", &mut ct) {
            Ok(_) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other,
        }
    };
    assert!(
        !(seat_b.is_ok() && used_a.is_ok()),
        "two servers serve one seat of a 1-seat license each"
    );
    assert!(
        matches!(used_a, Err(Error::LeaseLost(_))),
        "the first server still serves a container it no longer hosts: {used_a:?}"
    );
    let seat_b = seat_b.expect("the second server hosts the container now");
    seat_b.encrypt(Mode::Derived, b"b", &mut ct).unwrap();
    // New grants of the first server are refused too.
    let c = network_session(&key, d, "host-c", &first.addr);
    assert!(c.acquire(1, 0, false).is_err());
}

#[test]
fn a_container_is_counted_either_by_its_server_or_by_local_seats_never_both() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, serial) = setup(d, "server-home", &[spec(1, 1, CountingUnit::Station)]);
    let _clean = MachineFolders(serial.clone());
    let home = d.join("server-home");
    // A process of the server's machine uses the container directly and holds its only
    // seat: a server that starts now does not host it (it would count the seat again).
    let mut local = Holder::spawn(d, &home, 1, &[]);
    local
        .verdict()
        .expect("the local process takes the only seat");
    let first = server(&d.join("state1"), &home, &d.join("log1"));
    let r = network_session(&key, d, "host-a", &first.addr).acquire(1, 0, false);
    assert!(
        r.is_err(),
        "the server granted the seat a local process holds"
    );
    let log = std::fs::read_to_string(d.join("log1")).unwrap();
    assert!(
        log.contains(&serial) && log.contains("held by processes on this machine"),
        "the server does not say why it does not host the container: {log}"
    );
    assert_eq!(local.use_seat(), "ok");
    drop(local);
    drop(first);
    // A server hosts it: a local process beside it gets no seat of its own.
    let second = server(&d.join("state2"), &home, &d.join("log2"));
    let _seat = network_session(&key, d, "host-b", &second.addr)
        .acquire(1, 0, false)
        .expect("the server grants the seat");
    let mut beside = Holder::spawn(d, &home, 1, &[]);
    let v = beside.verdict();
    assert!(
        v.as_ref()
            .is_err_and(|e| e.contains("hosted by a license server")),
        "a local process took a seat of a container the server counts: {v:?}"
    );
}
