//! `tessera-load soak`: a license server SIGKILLed and restarted at random moments while many
//! clients hold, renew, release and take seats of one license (docs/BENCHMARKS.md, "Soak").
//!
//! The server is a real `tessera-server` process on loopback with a real state directory
//! (its seat table in SQLite). The clients are real library sessions ([`Session`], each a
//! simulated machine with its own lease keeper), one thread each: they acquire a seat of a
//! license with fewer seats than clients, keep it a random while (the lease keeper renews
//! it; the client asks the server about it every so often), release it and try again. The
//! killer, on the main thread, SIGKILLs the server at random moments (some within a few
//! milliseconds of the last restart, in the burst of re-attachments), keeps it down a random
//! while, always well inside a lease, and restarts it on the same port and state directory.
//!
//! What is counted:
//! - **over-grants**: a moment when more clients believe they hold a seat of the license
//!   than its quantity. A [`Checker`] records every grant a client observed (after its
//!   acquire returned, with the seat id) and every release (before it is sent), so the
//!   seats it counts are a subset of those the server had granted and not yet freed;
//!   also, after every kill, the server's own seat table as the restarted server will load
//!   it: more distinct seats of the license than its quantity is an over-grant too.
//! - **lost seats**: a client that kept renewing within its lease and was told `LEASE_LOST`,
//!   or whose seat is missing from the server's table after a kill (it will be refused its
//!   re-attachment).
//! - everything else (timeouts and refused connections while the server is down, NO_SEAT
//!   while the license is full) is counted by kind and reported apart.
//!
//! The run ends with a non-zero exit when there was an over-grant or a lost seat.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tessera::Error;
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::publisher::PublisherKey;
use tessera::server::store::{SeatStore, SqliteStore};
use tessera::util::SystemClock;

use crate::SoakArgs;

const VENDOR: u32 = 0x50_AC;
const PRODUCT: u32 = 1;
/// What a dark spell (see [`kill_loop`]) leaves of a lease, beyond a renewal interval: for a
/// reconnection's handshake and a slow restart.
const DARK_MARGIN_MS: u64 = 300;

/// A small xorshift: the kill moments and the clients' pauses, from the seed printed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo).max(1)))
    }
}

/// What the clients observed, checked as it happens.
struct Checker {
    quantity: u32,
    started: Instant,
    state: Mutex<Observed>,
    /// The kill round now running (0 before the first kill).
    round: AtomicU64,
    /// When the server was last killed, and last listening again (ms since `started`).
    killed_at: AtomicU64,
    up_at: AtomicU64,
}

#[derive(Default)]
struct Observed {
    /// Seats the clients believe they hold: seat id -> (client, granted at ms since start).
    held: HashMap<[u8; 16], (usize, u64)>,
    most_held: u32,
    grants: u64,
    releases: u64,
    refused: u64,
    /// Over-grants, with what was held at that moment.
    over: Vec<String>,
    /// Seats lost, by seat id (a seat counts once): when (ms since the start), and how.
    lost: BTreeMap<[u8; 16], (u64, String)>,
    /// Dark spells the killer meant to keep inside a lease but that ran longer (a restart
    /// slower than any before): (start, end) in ms since the start. A seat lost in one of
    /// these, or within a lease after it, lapsed because the server was out of reach for a
    /// whole lease, which is the design (docs/SERVER.md, "Leases"), and is counted apart.
    overlong: Vec<(u64, u64)>,
    /// Everything else, by what was called and the status it answered.
    errors: BTreeMap<String, u64>,
}

impl Observed {
    /// The lost seats, split: (lost while the server was reachable as promised, lost in or
    /// within `lease_ms` after an overlong dark spell).
    fn lost_split(&self, lease_ms: u64) -> (Vec<&str>, Vec<&str>) {
        let excused = |t: u64| {
            self.overlong
                .iter()
                .any(|(start, end)| t >= *start && t <= end + lease_ms)
        };
        let (mut bad, mut lapsed) = (Vec::new(), Vec::new());
        for (t, line) in self.lost.values() {
            if excused(*t) {
                lapsed.push(line.as_str());
            } else {
                bad.push(line.as_str());
            }
        }
        (bad, lapsed)
    }
}

impl Checker {
    fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client's acquire returned this seat.
    fn grant(&self, client: usize, seat: [u8; 16]) {
        let t = self.ms();
        let round = self.round.load(Ordering::SeqCst);
        let mut o = self.lock();
        o.grants += 1;
        if let Some((other, _)) = o.held.insert(seat, (client, t)) {
            o.over.push(format!(
                "round {round}, {t} ms: seat {} granted to client {client} while client {other} held it",
                hex::encode(seat)
            ));
        }
        let n = o.held.len() as u32;
        o.most_held = o.most_held.max(n);
        if n > self.quantity {
            let who: Vec<String> = o
                .held
                .iter()
                .map(|(id, (c, at))| format!("client {c} seat {} since {at} ms", hex::encode(id)))
                .collect();
            o.over.push(format!(
                "round {round}, {t} ms: {n} seats held, quantity {}: {}",
                self.quantity,
                who.join("; ")
            ));
        }
    }

    /// A client is about to release this seat (or found it lost).
    fn release(&self, seat: &[u8; 16]) {
        let mut o = self.lock();
        o.releases += 1;
        o.held.remove(seat);
    }

    fn lost(&self, client: usize, seat: [u8; 16], why: String) {
        let (t, round) = (self.ms(), self.round.load(Ordering::SeqCst));
        let (killed, up) = (
            self.killed_at.load(Ordering::SeqCst),
            self.up_at.load(Ordering::SeqCst),
        );
        let mut o = self.lock();
        o.held.remove(&seat);
        o.lost.entry(seat).or_insert_with(|| {
            let line = format!(
                "round {round}, {t} ms (last kill at {killed} ms, listening again at {up} ms): \
                 client {client} seat {}: {why}",
                hex::encode(seat)
            );
            (t, line)
        });
    }

    fn error(&self, call: &str, e: &Error) {
        *self
            .lock()
            .errors
            .entry(format!("{call}: {}", e.status().name()))
            .or_default() += 1;
    }

    /// The server's table, as the restarted server will load it, against what the clients
    /// believe: at most `quantity` seats, and every seat a client holds is in it.
    fn check_table(&self, db: &Path) -> Result<usize> {
        let rows = SqliteStore::open(db)
            .and_then(|mut s| s.load())
            .with_context(|| format!("reading the seat table {}", db.display()))?;
        let (t, round) = (self.ms(), self.round.load(Ordering::SeqCst));
        let mut o = self.lock();
        let mut per_license: HashMap<[u8; 16], HashSet<&str>> = HashMap::new();
        for r in &rows {
            per_license
                .entry(r.license_id)
                .or_default()
                .insert(&r.unit_key);
        }
        let mut over = Vec::new();
        for (lic, units) in &per_license {
            if units.len() as u32 > self.quantity {
                over.push(format!(
                    "round {round}, {t} ms: the stored seat table holds {} seats of license {}, \
                     quantity {}",
                    units.len(),
                    hex::encode(lic),
                    self.quantity
                ));
            }
        }
        let stored: HashSet<[u8; 16]> = rows.iter().map(|r| r.seat_id).collect();
        let vanished: Vec<([u8; 16], usize)> = o
            .held
            .iter()
            .filter(|(id, _)| !stored.contains(*id))
            .map(|(id, (c, _))| (*id, *c))
            .collect();
        o.over.extend(over);
        for (id, client) in vanished {
            o.lost.entry(id).or_insert_with(|| {
                let line = format!(
                    "round {round}, {t} ms: client {client} holds seat {}, missing from the \
                     stored seat table after the kill",
                    hex::encode(id)
                );
                (t, line)
            });
        }
        Ok(rows.len())
    }
}

/// The server process; SIGKILLed when dropped, and by the kernel when this thread ends
/// (`PR_SET_PDEATHSIG`), so a killed `tessera-load` leaves no server behind.
pub(crate) struct Server {
    child: Option<Child>,
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) fn start(bin: &Path, args: Vec<String>, log: &Path) -> Result<Server> {
        let mut s = Server {
            child: None,
            bin: bin.to_path_buf(),
            args,
            log: log.to_path_buf(),
            addr: String::new(),
        };
        s.restart()?;
        Ok(s)
    }

    /// Starts the server and waits until it listens.
    pub(crate) fn restart(&mut self) -> Result<()> {
        self.kill9();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .env("TESSERA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches nothing of this process's memory.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let mut out = BufReader::new(child.stdout.take().context("server stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)
            .context("reading the server's first line")?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the server said {line:?}, not where it listens (its log: {})",
                self.log.display()
            );
        };
        self.addr = addr.to_string();
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        self.child = Some(child);
        Ok(())
    }

    /// The running server's pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn kill9(&mut self) {
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

/// The soak's folder: removed at the end unless the user named it or asked to keep it.
pub(crate) struct Folder {
    pub(crate) path: PathBuf,
    pub(crate) remove: bool,
}

impl Drop for Folder {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The figures of a run.
struct Figures {
    kills: u64,
    restart_failures: u64,
    longest_outage: Duration,
    /// The longest time from a kill until the server had stayed up a renewal interval.
    longest_dark: Duration,
    rows_after_kills: usize,
    elapsed: Duration,
}

pub(crate) fn soak(a: &SoakArgs) -> Result<()> {
    if a.clients == 0 || a.quantity == 0 {
        bail!("--clients and --quantity must be at least 1");
    }
    if a.renew_ms == 0 || a.lease_ms < 3 * a.renew_ms {
        bail!("--lease-ms must be at least three times --renew-ms (and --renew-ms > 0)");
    }
    // A dark spell (see kill_loop) must fit in a lease from the clients' last renewal.
    if a.renew_ms + DARK_MARGIN_MS + 100 >= a.lease_ms {
        bail!(
            "--lease-ms must exceed --renew-ms by more than {} ms",
            DARK_MARGIN_MS + 100
        );
    }
    let folder = match &a.dir {
        Some(d) => Folder {
            path: d.clone(),
            remove: false,
        },
        None => Folder {
            path: std::env::temp_dir().join(format!("tessera-soak-{}", std::process::id())),
            remove: !a.keep,
        },
    };
    let dir = &folder.path;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });

    // The publisher, and the license the server hosts.
    let key = PublisherKey::generate(VENDOR, "tessera-load soak");
    let server_home = dir.join("server-home");
    crate::setup::activate(&server_home, &key, PRODUCT, a.quantity)?;
    let state = dir.join("server-state");
    std::fs::create_dir_all(&state)?;
    let bin = match &a.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the folder of tessera-load")?
            .join("tessera-server"),
    };
    let mut args: Vec<String> = [
        "--name",
        "soak",
        "--no-discovery",
        "--no-dongles",
        "--no-admin",
        "--listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--state-dir".into(),
        state.display().to_string(),
        "--home".into(),
        server_home.display().to_string(),
        "--lease-ms".into(),
        a.lease_ms.to_string(),
        "--renew-ms".into(),
        a.renew_ms.to_string(),
    ]);
    if a.no_fsync {
        args.push("--no-fsync".into());
    }
    let log = dir.join("server.log");
    let mut server = Server::start(&bin, args, &log)?;
    // Every restart on the same port.
    let port = server.addr.rsplit(':').next().unwrap_or("0").to_string();
    if let Some(l) = server.args.iter().position(|s| s == "127.0.0.1:0") {
        server.args[l] = format!("127.0.0.1:{port}");
    }
    let addr = server.addr.clone();
    eprintln!(
        "soak: server {addr} (state in {}), {} clients, quantity {}, lease {} ms, renew {} ms, \
         seed {seed:#x}",
        dir.display(),
        a.clients,
        a.quantity,
        a.lease_ms,
        a.renew_ms
    );

    let checker = Arc::new(Checker {
        quantity: a.quantity,
        started: Instant::now(),
        state: Mutex::new(Observed::default()),
        round: AtomicU64::new(0),
        killed_at: AtomicU64::new(0),
        up_at: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    // The clients stop when this function returns, also on an error.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _stop = StopOnDrop(Arc::clone(&stop));
    let mut clients = Vec::new();
    for i in 0..a.clients {
        let mut o = SessionOptions::new(VENDOR, key.public_key());
        o.sources = sources::NETWORK;
        o.servers = vec![addr.clone()];
        o.timeout = Duration::from_millis(a.timeout_ms);
        let env = Environment {
            home: dir.join(format!("client-{i}")),
            host: HostIdentity::simulated(&format!("soak-client-{i}")),
            clock: Arc::new(SystemClock),
        };
        let session = Session::open_in(o, env).with_context(|| format!("client {i}"))?;
        let (checker, stop) = (Arc::clone(&checker), Arc::clone(&stop));
        let rng = Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let hold_ms = a.hold_ms;
        clients.push(
            std::thread::Builder::new()
                .name(format!("soak-client-{i}"))
                .spawn(move || client(i, &session, &checker, &stop, rng, hold_ms))?,
        );
    }

    let figures = kill_loop(a, &mut server, &checker, &state.join("seats.db"), seed)?;

    // The last restart's re-attachments, then every client looks at its seat once more.
    std::thread::sleep(Duration::from_millis(a.lease_ms));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        if c.join().is_err() {
            bail!("a client thread panicked");
        }
    }
    server.kill9();
    report(a, &checker, &figures, seed)
}

/// One client: take a seat, keep it a while, give it back, again, until `stop`.
fn client(
    i: usize,
    session: &Session,
    checker: &Checker,
    stop: &AtomicBool,
    mut rng: Rng,
    hold_ms: u64,
) {
    while !stop.load(Ordering::SeqCst) {
        let seat = match session.acquire(PRODUCT, 0, false) {
            Ok(seat) => seat,
            Err(Error::NoSeat { .. }) => {
                checker.lock().refused += 1;
                std::thread::sleep(rng.ms(10, 100));
                continue;
            }
            Err(e) => {
                checker.error("acquire", &e);
                std::thread::sleep(rng.ms(20, 150));
                continue;
            }
        };
        let Some(id) = seat.server_seat_id() else {
            checker.error("acquire", &Error::Internal("not a network seat".into()));
            continue;
        };
        checker.grant(i, id);
        // Held a random while (several renewals at the longest), asking the server about it.
        let until = Instant::now() + rng.ms(hold_ms / 10, hold_ms);
        let mut lost = false;
        loop {
            let last = Instant::now() >= until || stop.load(Ordering::SeqCst);
            match seat.info() {
                Ok(_) => {}
                Err(Error::LeaseLost(why)) => {
                    checker.lost(i, id, why);
                    lost = true;
                    break;
                }
                Err(e) => checker.error("seat info", &e),
            }
            if last {
                break;
            }
            std::thread::sleep(rng.ms(50, 300));
        }
        if !lost {
            checker.release(&id);
        }
        drop(seat);
        std::thread::sleep(rng.ms(0, 50));
    }
}

/// SIGKILLs and restarts the server `a.kills` times; after each kill, reads its seat table.
///
/// Kills may come in a row, a few milliseconds after a restart, but the clients are always
/// left a chance to renew within their lease: a *dark spell* runs from a kill until the server
/// has stayed up for a renewal interval (enough for a lease keeper, which retries every half
/// interval while a seat is not re-attached, to reconnect), and the killer keeps every dark
/// spell, restarts included, under the lease minus a renewal interval minus a margin. A seat
/// lost within that is the runtime's fault, not the soak's.
fn kill_loop(
    a: &SoakArgs,
    server: &mut Server,
    checker: &Checker,
    db: &Path,
    seed: u64,
) -> Result<Figures> {
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut fig = Figures {
        kills: 0,
        restart_failures: 0,
        longest_outage: Duration::ZERO,
        longest_dark: Duration::ZERO,
        rows_after_kills: 0,
        elapsed: Duration::ZERO,
    };
    let renew = Duration::from_millis(a.renew_ms);
    let stable = renew + Duration::from_millis(100);
    let budget = Duration::from_millis(a.lease_ms)
        .saturating_sub(renew)
        .saturating_sub(Duration::from_millis(DARK_MARGIN_MS));
    let mut dark_since: Option<Instant> = None;
    // When the dark spell began and when the server last listened again (ms since start).
    let mut spell = (0u64, 0u64);
    // The slowest of the last 20 restarts: what the next one is expected to take.
    let mut restarts: std::collections::VecDeque<Duration> = std::collections::VecDeque::new();
    let mut slowest_restart = Duration::from_millis(100);
    // Let every client get going first.
    std::thread::sleep(renew * 2);
    for round in 1..=a.kills {
        // Up a random while: a third of the time within 100 ms of the restart, in the
        // burst of re-attachments and waiting acquires; else anywhere in a renewal cycle
        // and the lazy flush's second.
        let mut up = if rng.below(3) == 0 {
            rng.ms(0, 100)
        } else {
            rng.ms(100, a.max_up_ms.max(101))
        };
        if let Some(since) = dark_since
            && up < stable
            && since.elapsed() + up + slowest_restart >= budget
        {
            // No room for another kill in this dark spell: let the clients recover.
            up = stable;
        }
        std::thread::sleep(up);
        if up >= stable
            && let Some(since) = dark_since.take()
        {
            let dark = since.elapsed() - up;
            fig.longest_dark = fig.longest_dark.max(dark);
            if dark > budget {
                checker.lock().overlong.push(spell);
            }
        }
        checker.round.store(round, Ordering::SeqCst);
        let killed = Instant::now();
        server.kill9();
        checker.killed_at.store(checker.ms(), Ordering::SeqCst);
        fig.kills += 1;
        fig.rows_after_kills += checker.check_table(db)?;
        let since = *dark_since.get_or_insert_with(|| {
            spell.0 = checker.ms();
            killed
        });
        // Down a random while (a supervisor restarting it), reading the table included,
        // within what the dark spell has left.
        let room = budget.saturating_sub(since.elapsed() + slowest_restart);
        let down = rng.ms(0, (a.max_down_ms as u128).min(room.as_millis()) as u64);
        if let Some(rest) = down.checked_sub(killed.elapsed()) {
            std::thread::sleep(rest);
        }
        let restarting = Instant::now();
        let mut tries = 0;
        while let Err(e) = server.restart() {
            fig.restart_failures += 1;
            tries += 1;
            if tries >= 20 {
                return Err(e.context("the server did not restart 20 times in a row"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        spell.1 = checker.ms();
        checker.up_at.store(spell.1, Ordering::SeqCst);
        restarts.push_back(restarting.elapsed());
        if restarts.len() > 20 {
            restarts.pop_front();
        }
        slowest_restart = restarts.iter().copied().max().unwrap_or_default();
        fig.longest_outage = fig.longest_outage.max(killed.elapsed());
        if round % 50 == 0 {
            let o = checker.lock();
            eprintln!(
                "soak: {round} kills in {:.0} s: {} grants, {} over-grants, {} lost",
                started.elapsed().as_secs_f64(),
                o.grants,
                o.over.len(),
                o.lost.len()
            );
        }
    }
    if let Some(since) = dark_since {
        let dark = since.elapsed();
        fig.longest_dark = fig.longest_dark.max(dark);
        if dark > budget {
            checker.lock().overlong.push(spell);
        }
    }
    fig.elapsed = started.elapsed();
    Ok(fig)
}

fn report(a: &SoakArgs, checker: &Checker, f: &Figures, seed: u64) -> Result<()> {
    let o = checker.lock();
    let errors: u64 = o.errors.values().sum();
    let (lost, lapsed) = o.lost_split(a.lease_ms);
    println!(
        "soak: {} SIGKILLs in {:.1} s ({} clients, quantity {}, lease {} ms, renew {} ms, seed \
         {seed:#x})",
        f.kills,
        f.elapsed.as_secs_f64(),
        a.clients,
        a.quantity,
        a.lease_ms,
        a.renew_ms
    );
    println!(
        "grants {}, releases {}, refused (NO_SEAT) {}, most held at once {}",
        o.grants, o.releases, o.refused, o.most_held
    );
    println!(
        "longest outage {} ms, longest dark spell {} ms, dark spells longer than promised {}, \
         restarts that failed {}, seat-table rows read after kills {}",
        f.longest_outage.as_millis(),
        f.longest_dark.as_millis(),
        o.overlong.len(),
        f.restart_failures,
        f.rows_after_kills
    );
    println!("over-grants: {}", o.over.len());
    println!("lost seats: {}", lost.len());
    println!(
        "seats lapsed in a dark spell longer than promised (by design): {}",
        lapsed.len()
    );
    println!("other errors: {errors}");
    for (kind, n) in &o.errors {
        println!("  {kind}: {n}");
    }
    for l in o.over.iter().take(20) {
        println!("OVER-GRANT {l}");
    }
    for l in lost.iter().take(20) {
        println!("LOST {l}");
    }
    for l in lapsed.iter().take(20) {
        println!("LAPSED {l}");
    }
    for (start, end) in o.overlong.iter().take(20) {
        println!("OVERLONG dark spell {start}..{end} ms ({} ms)", end - start);
    }
    if a.json {
        let v = serde_json::json!({
            "kills": f.kills,
            "clients": a.clients,
            "quantity": a.quantity,
            "lease_ms": a.lease_ms,
            "renew_ms": a.renew_ms,
            "seed": seed,
            "elapsed_s": f.elapsed.as_secs_f64(),
            "grants": o.grants,
            "releases": o.releases,
            "refused": o.refused,
            "most_held": o.most_held,
            "over_grants": o.over.len(),
            "lost": lost.len(),
            "lapsed_in_overlong_outages": lapsed.len(),
            "overlong_dark_spells": o.overlong.len(),
            "errors": o.errors,
            "restart_failures": f.restart_failures,
            "longest_outage_ms": f.longest_outage.as_millis() as u64,
            "longest_dark_ms": f.longest_dark.as_millis() as u64,
        });
        println!("{v}");
    }
    if !o.over.is_empty() || !lost.is_empty() {
        bail!(
            "{} over-grant(s) and {} lost seat(s) (seed {seed:#x})",
            o.over.len(),
            lost.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera::server::seats::{Change, SeatRow};

    fn checker(quantity: u32) -> Checker {
        Checker {
            quantity,
            started: Instant::now(),
            state: Mutex::new(Observed::default()),
            round: AtomicU64::new(3),
            killed_at: AtomicU64::new(0),
            up_at: AtomicU64::new(0),
        }
    }

    fn row(seat: u8) -> SeatRow {
        SeatRow {
            seat_id: [seat; 16],
            license_id: [7; 16],
            unit_key: format!("handle:{seat}"),
            client: [seat; 32],
            exclusive: false,
            expires_ms: 1,
            borrow: None,
        }
    }

    #[test]
    fn one_seat_more_than_the_quantity_in_the_clients_view_is_an_over_grant() {
        let c = checker(2);
        c.grant(0, [1; 16]);
        c.grant(1, [2; 16]);
        c.release(&[1; 16]);
        c.grant(2, [3; 16]);
        assert!(c.lock().over.is_empty(), "two held at a time fit");
        c.grant(3, [4; 16]);
        let o = c.lock();
        assert_eq!(o.over.len(), 1);
        assert!(
            o.over[0].contains("3 seats held, quantity 2"),
            "{}",
            o.over[0]
        );
        assert_eq!((o.grants, o.most_held), (4, 3));
    }

    #[test]
    fn one_seat_granted_to_two_clients_is_an_over_grant() {
        let c = checker(5);
        c.grant(0, [1; 16]);
        c.grant(1, [1; 16]);
        assert!(c.lock().over[0].contains("while client 0 held it"));
    }

    #[test]
    fn the_stored_table_over_the_quantity_or_without_a_held_seat_is_caught() {
        let dir = std::env::temp_dir().join(format!("tessera-soak-test-{}", std::process::id()));
        let _remove = Folder {
            path: dir.clone(),
            remove: true,
        };
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("seats.db");
        let mut store = SqliteStore::open(&db).unwrap();
        store
            .commit(&[Change::Upsert(row(1)), Change::Upsert(row(2))])
            .unwrap();
        let c = checker(2);
        c.grant(0, [1; 16]);
        c.grant(1, [2; 16]);
        assert_eq!(c.check_table(&db).unwrap(), 2);
        assert!(c.lock().over.is_empty() && c.lock().lost.is_empty());
        // A third seat in the table: over the quantity.
        store.commit(&[Change::Upsert(row(3))]).unwrap();
        c.check_table(&db).unwrap();
        assert!(
            c.lock().over[0].contains("holds 3 seats"),
            "{:?}",
            c.lock().over
        );
        // A seat a client holds, gone from the table: lost, once.
        store.commit(&[Change::Delete([2; 16])]).unwrap();
        c.check_table(&db).unwrap();
        c.check_table(&db).unwrap();
        let o = c.lock();
        assert_eq!(o.lost.len(), 1);
        assert!(
            o.lost[&[2; 16]]
                .1
                .contains("missing from the stored seat table")
        );
    }

    #[test]
    fn a_lease_lost_counts_once_and_frees_the_clients_view() {
        let c = checker(1);
        c.grant(0, [1; 16]);
        c.lost(0, [1; 16], "gone".into());
        c.lost(0, [1; 16], "gone again".into());
        c.grant(1, [2; 16]);
        let o = c.lock();
        assert_eq!(o.lost.len(), 1);
        assert!(o.over.is_empty());
    }

    #[test]
    fn only_a_seat_lost_in_or_just_after_an_overlong_dark_spell_is_excused() {
        let c = checker(4);
        {
            let mut o = c.lock();
            o.overlong.push((10_000, 11_200));
            for (seat, t) in [(1u8, 9_999), (2, 10_500), (3, 12_700), (4, 12_701)] {
                o.lost.insert([seat; 16], (t, format!("seat {seat}")));
            }
        }
        let o = c.lock();
        let (lost, lapsed) = o.lost_split(1500);
        assert_eq!(lost, ["seat 1", "seat 4"]);
        assert_eq!(lapsed, ["seat 2", "seat 3"]);
    }
}
