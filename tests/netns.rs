//! The license server across real links: Linux network namespaces as separate machines,
//! joined by veth pairs to a bridge in a "switch" namespace (one broadcast domain).
//! `tessera-server` runs in one namespace; clients are this test binary re-executed in child
//! mode (`child_agent`, `child_worker`) in others. Discovery by broadcast, station counting
//! across hosts, a cut link (grace, then a clear loss) and a server killed with SIGKILL
//! under load.
//!
//! Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and iproute2: a test that cannot make its
//! namespaces fails, it does not skip. All traffic stays inside the namespaces the tests
//! make; every test removes them (and kills what it started) on success and on failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tessera::Error;
use tessera::cipher::Mode;
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::ffi::status::from_error;
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::license::borrow::DAY;
use tessera::publisher::{LicenseSpec, PublisherKey};
use tessera::util::SystemClock;

mod common;
use common::netlab::{Net, in_ns, sweep_stale_namespaces};
use common::spec;

const VENDOR: u32 = 0x5F;
/// The license and discovery port inside the server's namespace.
const PORT: u16 = 22630;
/// Child mode: which child to be, and its parameters.
const CHILD: &str = "TSR_NETNS_CHILD";
const C_KEY: &str = "TSR_NETNS_KEY";
const C_HOME: &str = "TSR_NETNS_HOME";
const C_HOST: &str = "TSR_NETNS_HOST";
const C_SERVERS: &str = "TSR_NETNS_SERVERS";
const C_TIMEOUT: &str = "TSR_NETNS_TIMEOUT_MS";
const C_PERIOD: &str = "TSR_NETNS_PERIOD_MS";

/// Wall-clock milliseconds: parent and children share the clock, so their events order.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tests here are timing-sensitive (leases of a second or two) and start many
/// processes on few cores: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    lock(&SERIAL)
}

// ---------------------------------------------------------------------------------------------
// The lab: namespaces, links, processes.

/// One host of the lab: its short name, namespace and address.
struct Host {
    name: String,
    ns: String,
    ip: String,
}

/// Namespaces joined by a bridge in a switch namespace, a temp dir and a publisher key.
/// Dropping it kills every process left in its namespaces and deletes them.
struct Lab {
    net: Net,
    hosts: Vec<Host>,
    dir: tempfile::TempDir,
    key: PublisherKey,
    keyfile: PathBuf,
}

impl Lab {
    /// A switch and `hosts` on 10.203.`net`.0/24: the first host gets .1, the others .11,
    /// .12, ... Panics (the test fails) when namespaces cannot be made.
    fn new(net: u8, hosts: &[&str]) -> Lab {
        // Names are `tsr-<role>-<pid>-<net>`.
        sweep_stale_namespaces("tsr", 4);
        let tag = format!("{}-{net}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let key = PublisherKey::generate(VENDOR, "netns tests");
        let keyfile = dir.path().join("publisher.key");
        key.save(&keyfile).unwrap();
        let mut lab = Lab {
            net: Net::new(&format!("tsr-sw-{tag}")),
            hosts: Vec::new(),
            dir,
            key,
            keyfile,
        };
        for (i, h) in hosts.iter().enumerate() {
            assert!(h.len() <= 8 && !h.contains('-'), "host name {h}");
            let ns = format!("tsr-{h}-{tag}");
            let ipaddr = format!("10.203.{net}.{}", if i == 0 { 1 } else { 10 + i });
            lab.net
                .add_host(h, &ns, &format!("{ipaddr}/24"), &["brd", "+"]);
            lab.hosts.push(Host {
                name: h.to_string(),
                ns,
                ip: ipaddr,
            });
        }
        lab
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `host:22630` of a host.
    fn addr(&self, name: &str) -> String {
        format!("{}:{PORT}", self.host(name).ip)
    }

    /// Brings the switch port of `host` down or up (pulls or plugs its cable).
    fn link(&self, host: &str, up: bool) {
        self.net.link(host, up);
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Activates `specs` for the machine as seen from inside `host`'s namespace (the
    /// server's fingerprint there lacks the NICs of the real machine): the request and the
    /// install run there with the `tessera` CLI, the publisher answers here.
    fn activate_in(&self, host: &str, home: &Path, specs: &[LicenseSpec]) {
        let ns = &self.host(host).ns;
        let req = self.dir.path().join(format!("{host}.req"));
        let act = self.dir.path().join(format!("{host}.act"));
        let run = |args: &[&std::ffi::OsStr]| {
            let out = in_ns(ns, &common::bin("tessera"))
                .args(args)
                .env("TESSERA_HOME", home)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "tessera {args:?} in {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "activate".as_ref(),
            "request".as_ref(),
            "--vendor-id".as_ref(),
            VENDOR.to_string().as_ref(),
            "--out".as_ref(),
            req.as_os_str(),
        ]);
        let answer = self
            .key
            .activate(&std::fs::read(&req).unwrap(), specs, tessera::util::now())
            .expect("publisher activates");
        std::fs::write(&act, answer).unwrap();
        run(&["activate".as_ref(), "install".as_ref(), act.as_os_str()]);
    }

    /// Activates `specs` in `host` and starts the server there.
    fn server(&self, host: &str, specs: &[LicenseSpec], opts: ServerOpts) -> Server {
        let home = self.dir.path().join(format!("{host}-home"));
        self.activate_in(host, &home, specs);
        let mut args: Vec<String> = vec![
            "--name".into(),
            format!("netns-{host}"),
            "--listen".into(),
            format!("0.0.0.0:{PORT}"),
            "--state-dir".into(),
            self.dir
                .path()
                .join(format!("{host}-state"))
                .display()
                .to_string(),
            "--home".into(),
            home.display().to_string(),
            "--no-dongles".into(),
            // The admin API is tested in tests/admin.rs.
            "--no-admin".into(),
            "--lease-ms".into(),
            opts.lease_ms.to_string(),
            "--renew-ms".into(),
            opts.renew_ms.to_string(),
        ];
        if !opts.discovery {
            args.push("--no-discovery".into());
        }
        let mut s = Server {
            ns: self.host(host).ns.clone(),
            args,
            log: self.log(host),
            child: None,
        };
        s.start();
        s
    }

    fn child(&self, mode: &str, host: &str, c: &ClientOpts) -> Proc {
        self.child_with(mode, host, c, &c.name, &[])
    }

    /// A child (`child_<mode>`) with extra environment variables, its log named `label`.
    fn child_with(
        &self,
        mode: &str,
        host: &str,
        c: &ClientOpts,
        label: &str,
        extra_env: &[(&str, String)],
    ) -> Proc {
        let h = self.host(host);
        let label = format!("{mode}-{label}");
        let mut cmd = in_ns(&h.ns, &std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            &format!("child_{mode}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .env(C_KEY, &self.keyfile)
        .env(C_HOME, self.dir.path().join(format!("home-{}", c.name)))
        .env(C_HOST, &c.name)
        .env(C_SERVERS, c.servers.join(","))
        .env(C_TIMEOUT, c.timeout_ms.to_string())
        .env(C_PERIOD, c.period_ms.to_string())
        .env("TESSERA_DISCOVERY", if c.discovery { "on" } else { "off" })
        .env_remove("TESSERA_SERVERS")
        .env("RUST_BACKTRACE", "1");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Proc::spawn(cmd, &label, &self.log(&label))
    }

    /// A client that borrows, uses and returns seats (`child_borrower`) with its clock at
    /// `at` (Unix seconds, under libfaketime, ticking on from there) or the real one.
    fn borrower(&self, host: &str, c: &ClientOpts, at: Option<u64>) -> Proc {
        let mut env = Vec::new();
        let label = match at {
            None => c.name.clone(),
            Some(t) => {
                env.push(("LD_PRELOAD", faketime_library()));
                // An absolute start (in UTC): it holds under a shifted-clock run too, where
                // FAKETIME is already set for this process.
                let when = tessera::util::format_time(t);
                env.push(("FAKETIME", format!("@{}", when.trim_end_matches(" UTC"))));
                env.push(("TZ", "UTC".to_string()));
                env.push(("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()));
                format!("{}-at-{t}", c.name)
            }
        };
        self.child_with("borrower", host, c, &label, &env)
    }

    /// A client that does what it is told on stdin (`child_agent`).
    fn agent(&self, host: &str, c: &ClientOpts) -> Proc {
        self.child("agent", host, c)
    }

    /// A client that holds a seat and encrypts in a loop (`child_worker`).
    fn worker(&self, host: &str, c: &ClientOpts) -> Proc {
        self.child("worker", host, c)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The namespaces and whatever runs in them go with `net`, after this.
        if std::thread::panicking() {
            let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for p in logs {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                if !tail.is_empty() {
                    eprintln!("--- {} (last lines) ---", p.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct ServerOpts {
    lease_ms: u64,
    renew_ms: u64,
    discovery: bool,
}

/// A client's parameters.
struct ClientOpts {
    /// Its simulated host name (and state directory).
    name: String,
    servers: Vec<String>,
    discovery: bool,
    timeout_ms: u64,
    period_ms: u64,
}

impl ClientOpts {
    fn new(name: &str, servers: &[String]) -> ClientOpts {
        ClientOpts {
            name: name.into(),
            servers: servers.to_vec(),
            discovery: true,
            timeout_ms: 1000,
            period_ms: 50,
        }
    }
}

/// A `tessera-server` in a namespace; killed on drop.
struct Server {
    ns: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = in_ns(&self.ns, &common::bin("tessera-server"))
            .args(&self.args)
            .env("TESSERA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("listening on "),
            "the server in {} said {line:?} (log: {})",
            self.ns,
            self.log.display()
        );
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One line a child printed: `@@ <wall ms> <WORD> <rest>`.
#[derive(Clone, Debug)]
struct Event {
    ts: u64,
    word: String,
    rest: String,
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let mut it = line.strip_prefix("@@ ")?.splitn(3, ' ');
        Some(Event {
            ts: it.next()?.parse().ok()?,
            word: it.next()?.to_string(),
            rest: it.next().unwrap_or("").to_string(),
        })
    }
}

#[derive(Default)]
struct Output {
    events: Vec<Event>,
    ended: bool,
}

/// A child process in a namespace, its stdin, and what it printed. Killed on drop.
struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<(Mutex<Output>, Condvar)>,
    cursor: usize,
}

impl Proc {
    fn spawn(mut cmd: Command, label: &str, log: &Path) -> Proc {
        let log = std::fs::File::create(log).unwrap();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let out = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let stdout = child.stdout.take().unwrap();
        let shared = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(e) = Event::parse(&line) {
                    lock(&shared.0).events.push(e);
                    shared.1.notify_all();
                }
            }
            lock(&shared.0).ended = true;
            shared.1.notify_all();
        });
        Proc {
            label: label.into(),
            stdin: child.stdin.take(),
            child,
            out,
            cursor: 0,
        }
    }

    /// The next event (after the last one returned) that `pred` accepts.
    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.out;
        let mut out = lock(m);
        loop {
            while self.cursor < out.events.len() {
                let e = out.events[self.cursor].clone();
                self.cursor += 1;
                if pred(&e) {
                    return e;
                }
            }
            let now = Instant::now();
            assert!(
                !out.ended,
                "{}: ended while waiting for {what}; it printed {:?}",
                self.label, out.events
            );
            assert!(
                now < deadline,
                "{}: no {what} within {timeout:?}; it printed {:?}",
                self.label,
                out.events
            );
            out = cv
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The next event with `word`.
    fn next(&mut self, word: &str, timeout: Duration) -> Event {
        self.wait_for(word, timeout, |e| e.word == word)
    }

    /// Sends an agent command and waits for its answer (`word`).
    fn ask(&mut self, cmd: &str, word: &str) -> Event {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        self.next(word, Duration::from_secs(10))
    }

    fn events(&self) -> Vec<Event> {
        lock(&self.out.0).events.clone()
    }

    /// Closes stdin (the child releases its seat and exits) and waits for the exit.
    fn finish(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "{} exited with {st}", self.label);
                break;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.label);
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader thread sees the end of stdout right after.
        let (m, cv) = &*self.out;
        let mut out = lock(m);
        while !out.ended {
            out = cv
                .wait_timeout(out, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Child mode.

/// Prints `@@ <wall ms> <word> <rest>` (stdout is line buffered).
fn emit(word: &str, rest: &str) {
    println!("@@ {} {word} {rest}", wall_ms());
}

/// `<STATUS> <message>` for an error.
fn describe(e: &Error) -> String {
    format!("{:?} {e}", from_error(e))
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap().parse().unwrap()
}

/// The child's session: network only, its own simulated host and home.
fn child_session() -> Session {
    let key =
        PublisherKey::from_bytes(&std::fs::read(std::env::var(C_KEY).unwrap()).unwrap()).unwrap();
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = std::env::var(C_SERVERS)
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    o.timeout = Duration::from_millis(env_u64(C_TIMEOUT));
    let host = std::env::var(C_HOST).unwrap();
    let env = Environment {
        home: PathBuf::from(std::env::var(C_HOME).unwrap()),
        host: HostIdentity::simulated(&host),
        clock: Arc::new(SystemClock),
    };
    Session::open_in(o, env).expect("session")
}

/// Child mode: a client that does what stdin says, one line at a time:
/// `acquire` (`SEAT ok <server> in_use=<n>` / `SEAT refused <STATUS> <message>`), `release`
/// (`REL`), `encrypt` (`ENC ok` / `ENC err <STATUS> <message>`). At the end of stdin it
/// releases its seats and exits (`EXIT`).
#[test]
fn child_agent() {
    if std::env::var(CHILD).as_deref() != Ok("agent") {
        return;
    }
    let s = child_session();
    emit("READY", "");
    let mut seats = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        match line.trim() {
            "acquire" => match s.acquire(1, 0, false) {
                Ok(seat) => {
                    let info = seat.info();
                    let (server, in_use) = match &info {
                        Ok(i) => (i.server.clone().unwrap_or_default(), i.in_use.to_string()),
                        Err(e) => (format!("?({e})"), "?".into()),
                    };
                    emit("SEAT", &format!("ok {server} in_use={in_use}"));
                    seats.push(seat);
                }
                Err(e) => emit("SEAT", &format!("refused {}", describe(&e))),
            },
            "release" => {
                seats.clear();
                emit("REL", "");
            }
            "encrypt" => {
                let mut out = vec![0u8; tessera::cipher::ciphertext_len(5)];
                match seats
                    .last()
                    .map(|s| s.encrypt(Mode::Derived, b"hello", &mut out))
                {
                    Some(Ok(_)) => emit("ENC", "ok"),
                    Some(Err(e)) => emit("ENC", &format!("err {}", describe(&e))),
                    None => emit("ENC", "err no seat"),
                }
            }
            other => panic!("unknown command {other:?}"),
        }
    }
    drop(seats);
    emit("EXIT", "");
}

/// Child mode: a client that wants a seat and uses it until stdin ends. Without a seat it
/// acquires (`HOLD` / `REFUSED <STATUS> <message>`); with one it encrypts (`OK` /
/// `ERR <STATUS> <message>`; a lost lease prints `LOST <STATUS> <message>`, drops the seat
/// and goes back to acquiring). Every `period` ms. At the end of stdin it releases (`EXIT`).
#[test]
fn child_worker() {
    if std::env::var(CHILD).as_deref() != Ok("worker") {
        return;
    }
    let period = Duration::from_millis(env_u64(C_PERIOD));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            stop.store(true, Ordering::SeqCst);
        });
    }
    let s = child_session();
    emit("READY", "");
    let mut seat = None;
    let mut out = vec![0u8; tessera::cipher::ciphertext_len(64)];
    while !stop.load(Ordering::SeqCst) {
        match &seat {
            None => match s.acquire(1, 0, false) {
                Ok(st) => {
                    emit("HOLD", "");
                    seat = Some(st);
                }
                Err(e) => emit("REFUSED", &describe(&e)),
            },
            Some(st) => match st.encrypt(Mode::Derived, &[7u8; 64], &mut out) {
                Ok(_) => emit("OK", ""),
                Err(e @ Error::LeaseLost(_)) => {
                    emit("LOST", &describe(&e));
                    seat = None;
                }
                Err(e) => emit("ERR", &describe(&e)),
            },
        }
        std::thread::sleep(period);
    }
    drop(seat);
    emit("EXIT", "");
}

/// libfaketime, as scripts/test-shifted-clock.sh finds it (a test that needs it fails
/// without it; scripts/install-deps.sh installs it).
fn faketime_library() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found
        .expect("libfaketime is missing (scripts/install-deps.sh installs faketime)")
        .display()
        .to_string()
}

/// Acquires product 1, encrypts and decrypts in both modes, releases: `<source> <until>`.
fn use_borrowed(s: &Session) -> tessera::Result<String> {
    let seat = s.acquire(1, 0, false)?;
    let info = seat.info()?;
    for mode in [Mode::Derived, Mode::Direct] {
        let msg = b"on the road";
        let mut ct = vec![0u8; tessera::cipher::ciphertext_len(msg.len())];
        let n = seat.encrypt(mode, msg, &mut ct)?;
        let mut pt = vec![0u8; msg.len()];
        seat.decrypt(&ct[..n], &mut pt)?;
        assert_eq!(&pt, msg);
    }
    Ok(format!(
        "{:?} {}",
        info.source,
        info.borrowed_until.unwrap_or(0)
    ))
}

/// Child mode: a laptop that borrows. Its session uses the software source (where borrowed
/// seats are) and the network. Commands: `borrow <days>` (`BORROWED ok <until>` /
/// `BORROWED err <STATUS> <message>`), `use` (acquire, encrypt and decrypt in both modes,
/// release: `USE ok <source> <until>` / `USE err ...`), `return` (`RET ok` / `RET err ...`).
#[test]
fn child_borrower() {
    if std::env::var(CHILD).as_deref() != Ok("borrower") {
        return;
    }
    let key =
        PublisherKey::from_bytes(&std::fs::read(std::env::var(C_KEY).unwrap()).unwrap()).unwrap();
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::SOFTWARE | sources::NETWORK;
    o.servers = vec![std::env::var(C_SERVERS).unwrap()];
    o.timeout = Duration::from_millis(env_u64(C_TIMEOUT));
    let env = Environment {
        home: PathBuf::from(std::env::var(C_HOME).unwrap()),
        host: HostIdentity::simulated(&std::env::var(C_HOST).unwrap()),
        clock: Arc::new(SystemClock),
    };
    let s = Session::open_in(o, env).expect("session");
    // Not waited for: with --nocapture the first line shares libtest's "test ... " line.
    emit("READY", "");
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["borrow", days] => match s.borrow(1, 0, days.parse().unwrap()) {
                Ok((until, _)) => emit("BORROWED", &format!("ok {until}")),
                Err(e) => emit("BORROWED", &format!("err {}", describe(&e))),
            },
            ["use"] => match use_borrowed(&s) {
                Ok(what) => emit("USE", &format!("ok {what}")),
                Err(e) => emit("USE", &format!("err {}", describe(&e))),
            },
            ["return"] => match s.return_borrowed(1) {
                Ok(()) => emit("RET", "ok"),
                Err(e) => emit("RET", &format!("err {}", describe(&e))),
            },
            other => panic!("unknown command {other:?}"),
        }
    }
    emit("EXIT", "");
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn discovery_finds_the_server_across_the_link() {
    let _one = serial();
    let lab = Lab::new(1, &["srv", "cA"]);
    let _server = lab.server(
        "srv",
        &[spec(1, 5, CountingUnit::Handle)],
        ServerOpts {
            lease_ms: 9000,
            renew_ms: 3000,
            discovery: true,
        },
    );
    // No servers configured: the client broadcasts on its link and the server answers.
    let mut a = lab.agent("cA", &ClientOpts::new("host-a", &[]));
    let e = a.ask("acquire", "SEAT");
    assert!(
        e.rest.starts_with("ok netns-srv "),
        "a seat from the server found by discovery: {e:?}"
    );
    assert!(e.rest.ends_with("in_use=1"), "{e:?}");
    assert_eq!(a.ask("encrypt", "ENC").rest, "ok");
    // The control: with discovery off, the same client finds no server.
    let mut off = lab.agent(
        "cA",
        &ClientOpts {
            discovery: false,
            ..ClientOpts::new("host-b", &[])
        },
    );
    let e = off.ask("acquire", "SEAT");
    assert!(
        e.rest.starts_with("refused TESSERA_E_NO_LICENSE"),
        "without discovery there is no server: {e:?}"
    );
    a.finish();
    off.finish();
}

#[test]
fn station_counting_across_hosts() {
    let _one = serial();
    let lab = Lab::new(2, &["srv", "cA", "cB", "cC"]);
    let _server = lab.server(
        "srv",
        &[spec(1, 2, CountingUnit::Station)],
        ServerOpts {
            lease_ms: 9000,
            renew_ms: 3000,
            discovery: false,
        },
    );
    let servers = [lab.addr("srv")];
    let mut a1 = lab.agent("cA", &ClientOpts::new("host-a", &servers));
    let mut b = lab.agent("cB", &ClientOpts::new("host-b", &servers));
    let mut c = lab.agent("cC", &ClientOpts::new("host-c", &servers));
    let e = a1.ask("acquire", "SEAT");
    assert_eq!(e.rest, "ok netns-srv in_use=1", "host A");
    let e = b.ask("acquire", "SEAT");
    assert_eq!(e.rest, "ok netns-srv in_use=2", "host B");
    let e = c.ask("acquire", "SEAT");
    assert!(
        e.rest.starts_with("refused TESSERA_E_NO_SEAT"),
        "host C, the third station: {e:?}"
    );
    // A second process on host A is the same station: it shares A's seat.
    let mut a2 = lab.agent("cA", &ClientOpts::new("host-a", &servers));
    let e = a2.ask("acquire", "SEAT");
    assert_eq!(e.rest, "ok netns-srv in_use=2", "host A's second process");
    assert_eq!(a2.ask("encrypt", "ENC").rest, "ok");
    // One of A's processes leaving keeps the station: C is still refused.
    a1.finish();
    let e = c.ask("acquire", "SEAT");
    assert!(
        e.rest.starts_with("refused TESSERA_E_NO_SEAT"),
        "host A still holds its station: {e:?}"
    );
    // After all of A's processes left, C gets a seat.
    a2.finish();
    let e = c.ask("acquire", "SEAT");
    assert_eq!(e.rest, "ok netns-srv in_use=2", "host C after A left");
    assert_eq!(c.ask("encrypt", "ENC").rest, "ok");
    assert_eq!(b.ask("encrypt", "ENC").rest, "ok", "B kept its seat");
    b.finish();
    c.finish();
}

const CUT_LEASE_MS: u64 = 2500;
const CUT_RENEW_MS: u64 = 300;

#[test]
fn a_cut_link_means_grace_then_a_clear_loss() {
    let _one = serial();
    let lab = Lab::new(3, &["srv", "cA", "cB"]);
    let _server = lab.server(
        "srv",
        &[spec(1, 1, CountingUnit::Handle)],
        ServerOpts {
            lease_ms: CUT_LEASE_MS,
            renew_ms: CUT_RENEW_MS,
            discovery: false,
        },
    );
    let servers = [lab.addr("srv")];
    let quick = |name: &str| ClientOpts {
        timeout_ms: 300,
        period_ms: 100,
        ..ClientOpts::new(name, &servers)
    };
    let mut a = lab.worker("cA", &quick("host-a"));
    let mut b = lab.agent("cB", &quick("host-b"));
    a.next("HOLD", Duration::from_secs(10));
    for _ in 0..3 {
        a.next("OK", Duration::from_secs(5));
    }
    // B is refused while A holds the only seat (and B's connection is warm).
    let e = b.ask("acquire", "SEAT");
    assert!(e.rest.starts_with("refused TESSERA_E_NO_SEAT"), "{e:?}");

    // Pull A's cable.
    lab.link("cA", false);
    let cut = wall_ms();
    // Within the grace the server still counts A's seat.
    let e = b.ask("acquire", "SEAT");
    assert!(
        e.rest.starts_with("refused TESSERA_E_NO_SEAT"),
        "B was given A's seat {} ms after the cut, within A's lease: {e:?}",
        e.ts.saturating_sub(cut)
    );
    assert!(
        e.ts < cut + CUT_LEASE_MS - CUT_RENEW_MS,
        "B's answer came {} ms after the cut, too late to tell",
        e.ts - cut
    );
    // A's calls keep working within its lease (a network seat encrypts with the keys it
    // keeps, with no round trip), then report the lost lease.
    let lost = a.next("LOST", Duration::from_secs(8));
    let since_cut: Vec<Event> = a
        .events()
        .into_iter()
        .filter(|e| e.ts > cut && e.ts < lost.ts)
        .collect();
    let errors: Vec<&Event> = since_cut.iter().filter(|e| e.word == "ERR").collect();
    assert!(
        errors.is_empty(),
        "a call failed within A's lease with its link cut (at {cut}): {errors:?}"
    );
    assert!(
        since_cut.iter().any(|e| e.word == "OK" && e.ts > cut + 100),
        "A's calls did not work with its link cut (at {cut}): {since_cut:?}"
    );
    // No call hangs on the dead link (TCP retransmissions would take minutes): the calls
    // never wait for the lease keeper, which holds the connection while it reconnects.
    let mut last = cut;
    for e in since_cut.iter().chain([&lost]) {
        assert!(
            e.ts - last < 3000,
            "a call on the cut link (at {cut}) took {} ms: {since_cut:?} {lost:?}",
            e.ts - last
        );
        last = e.ts;
    }
    assert!(
        lost.rest.starts_with("TESSERA_E_LEASE_LOST ") && lost.rest.contains("lease"),
        "{lost:?}"
    );
    let after = lost.ts - cut;
    assert!(
        (CUT_LEASE_MS - CUT_RENEW_MS - 100..CUT_LEASE_MS + 3000).contains(&after),
        "A lost its lease {after} ms after the cut (lease {CUT_LEASE_MS} ms)"
    );
    // The server freed the seat when the lease ran out: B gets it.
    let start = Instant::now();
    loop {
        let e = b.ask("acquire", "SEAT");
        if e.rest.starts_with("ok ") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the server never freed A's seat: {e:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b.ask("encrypt", "ENC").rest, "ok");
    b.ask("release", "REL");

    // Plug the cable back in: A's next acquire works.
    lab.link("cA", true);
    let hold = a.next("HOLD", Duration::from_secs(6));
    assert!(hold.ts >= lost.ts);
    a.next("OK", Duration::from_secs(3));
    a.finish();
    b.finish();
}

const LOAD_LEASE_MS: u64 = 4000;
const LOAD_RENEW_MS: u64 = 400;

#[test]
fn server_sigkill_under_load_never_over_grants_and_reattaches() {
    let _one = serial();
    let lab = Lab::new(4, &["srv", "cA", "cB"]);
    let mut server = lab.server(
        "srv",
        &[spec(1, 5, CountingUnit::Handle)],
        ServerOpts {
            lease_ms: LOAD_LEASE_MS,
            renew_ms: LOAD_RENEW_MS,
            discovery: false,
        },
    );
    let servers = [lab.addr("srv")];
    let mut workers: Vec<Proc> = (0..8)
        .map(|i| {
            let host = if i % 2 == 0 { "cA" } else { "cB" };
            lab.worker(
                host,
                &ClientOpts {
                    timeout_ms: 500,
                    period_ms: 50,
                    ..ClientOpts::new(&format!("load-{i}"), &servers)
                },
            )
        })
        .collect();
    // Five hold seats, three are refused.
    let start = Instant::now();
    loop {
        let (holding, refused) = workers.iter().fold((0, 0), |(h, r), w| {
            let ev = w.events();
            (
                h + usize::from(ev.iter().any(|e| e.word == "OK")),
                r + usize::from(
                    ev.iter()
                        .any(|e| e.word == "REFUSED" && e.rest.starts_with("TESSERA_E_NO_SEAT")),
                ),
            )
        });
        if holding == 5 && refused == 3 {
            break;
        }
        assert!(
            holding <= 5 && start.elapsed() < Duration::from_secs(15),
            "{holding} workers hold seats, {refused} were refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));

    server.kill9();
    let killed = wall_ms();
    std::thread::sleep(Duration::from_millis(600));
    server.start();
    let restarted = wall_ms();
    assert!(
        restarted - killed < LOAD_LEASE_MS - LOAD_RENEW_MS - 1000,
        "the restart took {} ms, beyond the grace",
        restarted - killed
    );
    std::thread::sleep(Duration::from_secs(4));
    let stopped = wall_ms();
    for w in &mut workers {
        w.finish();
    }

    // Everyone's view of holding a seat, in time order, up to the stop.
    let mut transitions: Vec<(u64, usize, bool)> = Vec::new();
    let mut held_at_kill = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        let mut holding = false;
        for e in w.events().iter().filter(|e| e.ts < stopped) {
            let on = match e.word.as_str() {
                "HOLD" => true,
                "LOST" => false,
                _ => continue,
            };
            assert_ne!(holding, on, "worker {i}: {e:?}");
            holding = on;
            transitions.push((e.ts, i, on));
        }
        let at_kill = transitions
            .iter()
            .rfind(|&&(ts, j, _)| j == i && ts < killed);
        if at_kill.is_some_and(|&(_, _, on)| on) {
            held_at_kill.push(i);
        }
    }
    transitions.sort_by_key(|&(ts, i, on)| (ts, !on as u8, i));
    let (mut now, mut peak) = (0i32, 0i32);
    for &(_, _, on) in &transitions {
        now += if on { 1 } else { -1 };
        peak = peak.max(now);
    }
    assert!(
        peak <= 5,
        "{peak} clients held a seat at once (quantity 5): {transitions:?}"
    );
    assert_eq!(held_at_kill.len(), 5, "holders when the server was killed");
    assert_eq!(
        transitions.len(),
        5,
        "no seat changed hands: every holder kept its seat, no waiter got one: {transitions:?}"
    );
    // The restarted server was asked, and refused the others: it counted the five seats
    // it granted before it died.
    for (i, w) in workers.iter().enumerate() {
        if held_at_kill.contains(&i) {
            continue;
        }
        let ev = w.events();
        assert!(
            ev.iter().any(|e| e.ts > restarted
                && e.ts < stopped
                && e.word == "REFUSED"
                && e.rest.starts_with("TESSERA_E_NO_SEAT")),
            "worker {i} was never refused by the restarted server: {ev:?}"
        );
    }
    for &i in &held_at_kill {
        let ev = workers[i].events();
        assert!(
            !ev.iter().any(|e| e.word == "LOST"),
            "worker {i} lost its seat: {ev:?}"
        );
        let resumed = ev
            .iter()
            .find(|e| e.word == "OK" && e.ts > restarted)
            .unwrap_or_else(|| panic!("worker {i} never encrypted after the restart: {ev:?}"));
        assert!(
            resumed.ts - restarted < 3000,
            "worker {i} resumed {} ms after the restart",
            resumed.ts - restarted
        );
        // The outage showed as transport errors, not as a lost lease.
        for e in ev.iter().filter(|e| e.word == "ERR") {
            assert!(
                e.rest.starts_with("TESSERA_E_IO ") || e.rest.starts_with("TESSERA_E_TIMEOUT "),
                "worker {i}: {e:?}"
            );
        }
    }
}

/// Borrowing across a real link: the laptop borrows the only seat (the desk is refused),
/// gives it back early (the desk gets it at once), borrows it again, and its cable is
/// pulled. Separate client processes on the laptop, with their clocks moved by libfaketime,
/// use the seat two days on, are refused after its end, and still refused with the clock
/// set back. Borrowing beyond what the license allows is refused.
#[test]
fn a_borrowed_seat_goes_home_and_works_off_the_network_for_its_days_only() {
    let _one = serial();
    let lab = Lab::new(5, &["srv", "lap", "desk"]);
    let mut lendable = spec(1, 1, CountingUnit::Station);
    lendable.borrow_days = 3;
    let _server = lab.server(
        "srv",
        &[lendable],
        ServerOpts {
            lease_ms: 3000,
            renew_ms: 300,
            discovery: false,
        },
    );
    let servers = [lab.addr("srv")];
    let laptop = ClientOpts {
        discovery: false,
        ..ClientOpts::new("laptop", &servers)
    };
    let mut desk = lab.agent(
        "desk",
        &ClientOpts {
            discovery: false,
            ..ClientOpts::new("desk", &servers)
        },
    );
    let mut lap = lab.borrower("lap", &laptop, None);

    // Beyond borrow_days: refused, nothing lent.
    let e = lap.ask("borrow 4", "BORROWED");
    assert!(
        e.rest.starts_with("err TESSERA_E_INVALID_ARGUMENT"),
        "{e:?}"
    );
    assert!(desk.ask("acquire", "SEAT").rest.starts_with("ok "));
    desk.ask("release", "REL");

    // Borrowed: the desk is refused; returned early: the desk gets it at once.
    let e = lap.ask("borrow 3", "BORROWED");
    assert!(e.rest.starts_with("ok "), "{e:?}");
    let e = desk.ask("acquire", "SEAT");
    assert!(e.rest.starts_with("refused TESSERA_E_NO_SEAT"), "{e:?}");
    assert_eq!(lap.ask("return", "RET").rest, "ok");
    let e = desk.ask("acquire", "SEAT");
    assert!(e.rest.starts_with("ok "), "{e:?}");
    desk.ask("release", "REL");

    // Borrowed again, for the trip.
    let e = lap.ask("borrow 3", "BORROWED");
    let until: u64 = e
        .rest
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{e:?}"))
        .parse()
        .unwrap();
    let e = desk.ask("acquire", "SEAT");
    assert!(e.rest.starts_with("refused TESSERA_E_NO_SEAT"), "{e:?}");
    lap.finish();

    // The laptop leaves the network.
    lab.link("lap", false);
    let now = tessera::util::now();
    let use_at = |at: Option<u64>| {
        let mut p = lab.borrower("lap", &laptop, at);
        let e = p.ask("use", "USE");
        p.finish();
        e
    };
    for at in [None, Some(now + 2 * DAY)] {
        let e = use_at(at);
        assert_eq!(e.rest, format!("ok Software {until}"), "at {at:?}");
    }
    // After its end: refused as expired, even with the network gone.
    let e = use_at(Some(until + 60));
    assert!(e.rest.starts_with("err TESSERA_E_EXPIRED"), "{e:?}");
    // The clock set back into the borrowed days: still refused.
    let e = use_at(Some(now + DAY));
    assert!(e.rest.starts_with("err "), "{e:?}");
    assert!(!e.rest.contains("Software"), "{e:?}");
    desk.finish();
}
