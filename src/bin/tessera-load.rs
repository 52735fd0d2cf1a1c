//! tessera-load: a load generator for `tessera-server` (docs/BENCHMARKS.md, "License server").
//!
//! `tessera-load --server ADDR --key publisher.key ...` opens `--clients` authenticated
//! connections (each with its own random host key and simulated station), spread over
//! `--threads` OS threads. Each thread keeps one request outstanding on every one of its
//! connections and waits for the answers with `poll(2)`, so 1,000 clients put up to 1,000
//! requests in flight at once, as 1,000 real clients would.
//!
//! - `--mode cycle`: each client loops Acquire (a new seat id) → Release; both count as seat
//!   operations. Reports ops/s and the latency of each request.
//! - `--mode hold`: each client acquires `--seats-per-client` seats, then renews them all in
//!   one Renew request every `--renew-ms` (clients spread evenly over the interval) for
//!   `--duration-s`. With `--server-pid` reports the server's RSS and CPU over that time.
//!
//! `tessera-load setup` makes a publisher key and activates a software container for this
//! machine in a `TESSERA_HOME` for the server to host; `tessera-load bare` measures a plain
//! TCP echo round trip on loopback (the baseline for a request's round trip).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ed25519_dalek::VerifyingKey;
use tessera::client::{Environment, install_activation, request_activation};
use tessera::host::MachineKind;
use tessera::license::{CountingUnit, VmPolicy};
use tessera::net::conn::{NetChannel, client_handshake};
use tessera::net::proto::{self, ClientHello, HostInfo, NetRequest, NetResponse};
use tessera::publisher::{LicenseSpec, PublisherKey};

#[derive(Parser)]
#[command(
    name = "tessera-load",
    version,
    about = "Load generator for tessera-server",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a publisher key and activate a software container for this machine in DIR.
    Setup(SetupArgs),
    /// A plain TCP echo round trip on loopback (no Noise, no server): the baseline.
    Bare(BareArgs),
}

#[derive(Args)]
struct SetupArgs {
    /// The TESSERA_HOME to activate the container in (the server's --home).
    #[arg(long)]
    home: PathBuf,
    /// Where to write the publisher key file.
    #[arg(long)]
    key_out: PathBuf,
    /// Seats of the license.
    #[arg(long, default_value_t = 200_000)]
    quantity: u32,
    /// The product code.
    #[arg(long, default_value_t = 1)]
    product: u32,
    /// The vendor id of the generated publisher key.
    #[arg(long, default_value_t = 0x1234)]
    vendor: u32,
}

#[derive(Args)]
struct BareArgs {
    /// Bytes the client sends per round trip.
    #[arg(long)]
    bytes: usize,
    /// Bytes echoed back (default: --bytes).
    #[arg(long)]
    reply_bytes: Option<usize>,
    /// Round trips to time.
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Acquire a new seat, release it, repeat.
    Cycle,
    /// Acquire K seats per client, then renew them every --renew-ms.
    Hold,
}

#[derive(Args)]
struct RunArgs {
    /// The server (`host:port`).
    #[arg(long, default_value = "127.0.0.1:22630")]
    server: String,
    /// The publisher key file (only its public key and vendor id are used: to trust the server).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The product to acquire.
    #[arg(long, default_value_t = 1)]
    product: u32,
    /// Connections (simulated clients, each with its own host key and station).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// How long to run (hold: after every client holds its seats).
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Requests per second over all clients; 0 = as fast as possible (cycle mode).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// What each client does.
    #[arg(long, value_enum, default_value_t = Mode::Cycle)]
    mode: Mode,
    /// Seats each client holds (hold mode).
    #[arg(long, default_value_t = 10)]
    seats_per_client: usize,
    /// Renewal interval (hold mode).
    #[arg(long, default_value_t = 30_000)]
    renew_ms: u64,
    /// OS threads driving the connections (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// The server's pid: report its RSS and CPU (read from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Per-request (and connect) timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// After the run, time a bare TCP echo of the Acquire frame's size (same process).
    #[arg(long)]
    baseline: bool,
}

// mimalloc: every request allocates a few small buffers on whichever tokio worker runs it;
// glibc malloc's arena locking and consolidation cost about 9% of the server's CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("tessera-load: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Setup(a)) => setup(&a),
        Some(Cmd::Bare(a)) => {
            let lat = bare(a.bytes, a.reply_bytes.unwrap_or(a.bytes), a.iterations)?;
            print_latency(
                &format!(
                    "bare TCP echo {} B → {} B",
                    a.bytes,
                    a.reply_bytes.unwrap_or(a.bytes)
                ),
                &lat,
            );
            Ok(())
        }
        None => run(&cli.run),
    }
}

// --- setup ----------------------------------------------------------------------------------

fn setup(a: &SetupArgs) -> Result<()> {
    let key = PublisherKey::generate(a.vendor, "tessera-load");
    key.save(&a.key_out)
        .with_context(|| format!("writing {}", a.key_out.display()))?;
    std::fs::create_dir_all(&a.home).with_context(|| format!("creating {}", a.home.display()))?;
    let env = Environment {
        home: a.home.clone(),
        ..Environment::detect()
    };
    let spec = LicenseSpec {
        product_code: a.product,
        product_name: format!("Load test product {}", a.product),
        features: 0xFF,
        quantity: a.quantity,
        counting_unit: CountingUnit::Handle,
        exclusive_allowed: false,
        expiry: None,
        vm_policy: VmPolicy::Allow,
    };
    let (serial, req) = request_activation(&env, key.vendor_id)?;
    let act = key.activate(&req, &[spec], tessera::util::now())?;
    install_activation(&env, &act, Some(&key.public_key()))?;
    println!(
        "activated {serial} in {}: vendor {:#x} product {} quantity {} (unit handle); key in {}",
        a.home.display(),
        a.vendor,
        a.product,
        a.quantity,
        a.key_out.display()
    );
    Ok(())
}

// --- bare TCP baseline ----------------------------------------------------------------------

/// Round trips of a plain TCP echo on loopback (no-delay both ends, one write each way, as
/// the license protocol does): the latencies in nanoseconds, sorted.
fn bare(bytes: usize, reply: usize, iterations: usize) -> Result<Vec<u64>> {
    if bytes == 0 || reply == 0 {
        bail!("--bytes and --reply-bytes must be positive");
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; bytes];
        let out = vec![0x5Au8; reply];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&out)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let msg = vec![0xA5u8; bytes];
    let mut back = vec![0u8; reply];
    let mut lat = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let t = Instant::now();
        c.write_all(&msg)?;
        c.read_exact(&mut back)?;
        // The first tenth warms up.
        if i >= iterations / 10 {
            lat.push(t.elapsed().as_nanos() as u64);
        }
    }
    drop(c);
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    lat.sort_unstable();
    Ok(lat)
}

// --- connections ----------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    Acquire,
    Release,
    Renew,
}

/// One simulated client: a socket and its Noise channel (the same handshake and channel as
/// `ServerConn`, with the write and the read apart so that many requests can be in flight).
struct Conn {
    id: u32,
    /// The connection, read through a buffer: one receive call per answer, not two.
    io: BufReader<TcpStream>,
    channel: NetChannel,
    /// Reused buffers: the encoded request, and the request on the wire.
    plain: Vec<u8>,
    wire: Vec<u8>,
    /// The request in flight: what and when it was sent.
    pending: Option<(Op, Instant)>,
    /// The seat id in the request in flight.
    pending_seat: [u8; 16],
    /// Cycle: the seat held now. Hold: not used.
    holding: Option<[u8; 16]>,
    /// Hold: the seats held.
    seats: Vec<[u8; 16]>,
    /// Acquires tried (hold).
    tried: usize,
    seq: u64,
    dead: bool,
}

fn connect(
    addr: SocketAddr,
    id: u32,
    publisher: &VerifyingKey,
    vendor_id: u32,
    timeout: Duration,
) -> tessera::Result<Conn> {
    let io = |e| tessera::Error::io(format!("license server {addr}"), e);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let host_secret: [u8; 32] = tessera::util::random();
    let hello = ClientHello {
        version: proto::PROTOCOL_VERSION,
        host: HostInfo {
            machine: MachineKind::Physical,
            hostname: format!("load-{id}"),
            station: tessera::util::random(),
            session: "1".into(),
            pid: id,
        },
    };
    let (channel, _, _) = client_handshake(
        &mut stream,
        &host_secret,
        &hello,
        publisher,
        vendor_id,
        tessera::util::now(),
    )?;
    Ok(Conn {
        id,
        io: BufReader::with_capacity(4096, stream),
        channel,
        plain: Vec::with_capacity(256),
        wire: Vec::with_capacity(256),
        pending: None,
        pending_seat: [0; 16],
        holding: None,
        seats: Vec::new(),
        tried: 0,
        seq: 0,
        dead: false,
    })
}

impl Conn {
    /// A seat id no other client or run uses: run nonce | client id | sequence.
    fn new_seat(&mut self, nonce: [u8; 4]) -> [u8; 16] {
        self.seq += 1;
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&nonce);
        s[4..8].copy_from_slice(&self.id.to_le_bytes());
        s[8..].copy_from_slice(&self.seq.to_le_bytes());
        s
    }

    /// Sends a request; returns the frame's size on the wire.
    fn send(&mut self, req: &NetRequest) -> tessera::Result<usize> {
        // One buffer for the length prefix and the sealed frame: one allocation-free write.
        let (mut plain, mut wire) = (
            std::mem::take(&mut self.plain),
            std::mem::take(&mut self.wire),
        );
        plain.clear();
        wire.clear();
        wire.extend_from_slice(&[0; 4]);
        let sealed = proto::encode_into(req, &mut plain)
            .and_then(|()| self.channel.seal_into(&plain, &mut wire));
        let result = sealed.and_then(|()| {
            let len = (wire.len() - 4) as u32;
            wire[..4].copy_from_slice(&len.to_be_bytes());
            self.io
                .get_mut()
                .write_all(&wire)
                .map_err(|e| tessera::Error::io("server connection", e))
                .map(|()| wire.len())
        });
        (self.plain, self.wire) = (plain, wire);
        result
    }

    /// Reads the response; returns it and the frame's size on the wire.
    fn recv(&mut self) -> tessera::Result<(NetResponse, usize)> {
        let frame = proto::read_frame(&mut self.io)?;
        let n = 4 + frame.len();
        Ok((self.channel.open_message(&frame, "server response")?, n))
    }
}

/// A short name for an error's kind: its variant.
fn kind(e: &tessera::Error) -> String {
    let d = format!("{e:?}");
    d.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_string()
}

// --- what one thread measures ---------------------------------------------------------------

#[derive(Default)]
struct Tally {
    /// Latencies in nanoseconds by operation.
    lat: BTreeMap<Op, Vec<u64>>,
    errors: BTreeMap<String, u64>,
    connected: usize,
    connect_ns: Vec<u64>,
    /// Seats the server said were lost in a Renew.
    lost: u64,
    /// Frame sizes of the first Acquire and its answer.
    acquire_frame: Option<(usize, usize)>,
    release_frame: Option<(usize, usize)>,
    renew_frame: Option<(usize, usize)>,
}

impl Tally {
    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }

    fn merge(&mut self, o: Tally) {
        for (op, v) in o.lat {
            self.lat.entry(op).or_default().extend(v);
        }
        for (k, n) in o.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.connected += o.connected;
        self.connect_ns.extend(o.connect_ns);
        self.lost += o.lost;
        self.acquire_frame = self.acquire_frame.or(o.acquire_frame);
        self.release_frame = self.release_frame.or(o.release_frame);
        self.renew_frame = self.renew_frame.or(o.renew_frame);
    }
}

#[derive(Clone, Copy)]
enum Work {
    /// Acquire → Release, forever (until the deadline).
    Cycle,
    /// Acquire until holding this many seats.
    Fill(usize),
}

struct Ctx {
    vendor_id: u32,
    product: u32,
    nonce: [u8; 4],
}

/// The next request of a client, or None when it has nothing more to do.
fn next_request(c: &mut Conn, work: Work, ctx: &Ctx) -> Option<(Op, NetRequest)> {
    let acquire = |seat_id| NetRequest::Acquire {
        seat_id,
        vendor_id: ctx.vendor_id,
        product_code: ctx.product,
        features: 0,
        exclusive: false,
    };
    match work {
        Work::Cycle => match c.holding {
            Some(seat_id) => {
                c.pending_seat = seat_id;
                Some((Op::Release, NetRequest::Release { seat_id }))
            }
            None => {
                let s = c.new_seat(ctx.nonce);
                c.pending_seat = s;
                Some((Op::Acquire, acquire(s)))
            }
        },
        Work::Fill(k) => {
            if c.seats.len() >= k || c.tried >= 2 * k {
                return None;
            }
            c.tried += 1;
            let s = c.new_seat(ctx.nonce);
            c.pending_seat = s;
            Some((Op::Acquire, acquire(s)))
        }
    }
}

/// Handles the answer to the request in flight.
fn on_response(c: &mut Conn, work: Work, op: Op, resp: NetResponse, t: &mut Tally) {
    match (op, resp) {
        (Op::Acquire, NetResponse::Granted(g)) if g.seat_id == c.pending_seat => match work {
            Work::Cycle => c.holding = Some(g.seat_id),
            Work::Fill(_) => c.seats.push(g.seat_id),
        },
        (Op::Release, NetResponse::Released) => c.holding = None,
        (Op::Renew, NetResponse::Renewed { lost, .. }) => t.lost += lost.len() as u64,
        (op, NetResponse::Error { status, message }) => {
            if op == Op::Release {
                c.holding = None;
            }
            let e = proto::response_error(status, message);
            t.error(format!("{op:?}: {}", kind(&e)));
        }
        (op, other) => {
            if op == Op::Release {
                c.holding = None;
            }
            t.error(format!(
                "{op:?}: unexpected answer {}",
                kind_of_response(&other)
            ));
        }
    }
}

fn kind_of_response(r: &NetResponse) -> String {
    let d = format!("{r:?}");
    d.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_string()
}

/// Paces a thread's requests at a fixed interval.
struct Pacer {
    interval: Duration,
    next: Instant,
}

/// Keeps one request in flight on every live connection until each client is done or the
/// deadline passes (then waits up to `drain` for the answers still in flight).
fn drive(
    conns: &mut [Conn],
    work: Work,
    ctx: &Ctx,
    mut pacer: Option<Pacer>,
    deadline: Instant,
    drain: Duration,
    t: &mut Tally,
) {
    let mut idle: VecDeque<usize> = (0..conns.len()).filter(|&i| !conns[i].dead).collect();
    let mut in_flight = 0usize;
    // Answers are waited for with epoll: poll(2) over a thousand sockets per wait costs the
    // load generator more CPU than the requests themselves.
    let epoll = Epoll::new(conns).unwrap_or_else(|e| panic!("epoll: {e}"));
    let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut which: Vec<usize> = Vec::with_capacity(conns.len());
    loop {
        let now = Instant::now();
        let sending = now < deadline;
        while sending && let Some(&i) = idle.front() {
            if let Some(p) = pacer.as_mut() {
                if now < p.next {
                    break;
                }
                p.next += p.interval;
                if p.next + Duration::from_millis(100) < now {
                    p.next = now; // never burst more than 100 ms of backlog
                }
            }
            idle.pop_front();
            let c = &mut conns[i];
            let Some((op, req)) = next_request(c, work, ctx) else {
                continue;
            };
            let sent = Instant::now();
            match c.send(&req) {
                Ok(n) => {
                    c.pending = Some((op, sent));
                    in_flight += 1;
                    if op == Op::Acquire && t.acquire_frame.is_none() {
                        t.acquire_frame = Some((n, 0));
                    }
                    if op == Op::Release && t.release_frame.is_none() {
                        t.release_frame = Some((n, 0));
                    }
                }
                Err(e) => {
                    c.dead = true;
                    t.error(format!("{op:?}: transport {}", kind(&e)));
                }
            }
        }
        if in_flight == 0 {
            if !sending || idle.is_empty() {
                return;
            }
            // Rate-limited: wait for the next slot.
            if let Some(p) = &pacer {
                std::thread::sleep(p.next.saturating_duration_since(Instant::now()));
            }
            continue;
        }
        if !sending && now > deadline + drain {
            for c in conns.iter_mut() {
                if let Some((op, _)) = c.pending.take() {
                    t.error(format!("{op:?}: no answer before the end of the run"));
                }
            }
            return;
        }
        // Wait for answers: with one connection a blocking read, else epoll.
        which.clear();
        if conns.len() == 1 {
            which.push(0);
        } else {
            let wait_ms = match &pacer {
                Some(p) if !idle.is_empty() => {
                    p.next.saturating_duration_since(Instant::now()).as_millis() as i32
                }
                _ => 100,
            };
            match epoll.wait(&mut events, wait_ms) {
                Ok(n) => which.extend(events[..n].iter().map(|e| e.u64 as usize)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    t.error(format!("epoll_wait: {e}"));
                    return;
                }
            }
        }
        for &i in &which {
            let c = &mut conns[i];
            let Some((op, sent)) = c.pending.take() else {
                // Readable with nothing asked: the server closed it or said something
                // unasked. Either way the connection is done.
                if !c.dead {
                    c.dead = true;
                    t.error("unsolicited data or close from the server".to_string());
                }
                epoll.remove(c);
                continue;
            };
            in_flight -= 1;
            match c.recv() {
                Ok((resp, n)) => {
                    let ns = sent.elapsed().as_nanos() as u64;
                    t.lat.entry(op).or_default().push(ns);
                    if op == Op::Acquire
                        && let Some((_, r @ 0)) = t.acquire_frame.as_mut()
                    {
                        *r = n;
                    }
                    if op == Op::Release
                        && let Some((_, r @ 0)) = t.release_frame.as_mut()
                    {
                        *r = n;
                    }
                    on_response(c, work, op, resp, t);
                    idle.push_back(i);
                }
                Err(e) => {
                    c.dead = true;
                    t.error(format!("{op:?}: transport {}", kind(&e)));
                }
            }
        }
    }
}

/// An epoll instance watching every live connection for input (level-triggered; the
/// event's data is the connection's index).
struct Epoll(std::os::fd::OwnedFd);

impl Epoll {
    fn new(conns: &[Conn]) -> std::io::Result<Epoll> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the result is checked before it is owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new epoll descriptor that nothing else owns.
        let ep = Epoll(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        for (i, c) in conns.iter().enumerate().filter(|(_, c)| !c.dead) {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: both descriptors are open; ev is a valid epoll_event.
            let r = unsafe {
                libc::epoll_ctl(
                    ep.0.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    c.io.get_ref().as_raw_fd(),
                    &mut ev,
                )
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(ep)
    }

    fn remove(&self, c: &Conn) {
        // SAFETY: both descriptors are open; a NULL event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                c.io.get_ref().as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }

    /// Waits up to `ms` for input; returns how many events were written to `events`.
    fn wait(&self, events: &mut [libc::epoll_event], ms: i32) -> std::io::Result<usize> {
        // SAFETY: events is a valid, writable array of events.len() entries.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Hold mode's steady state: each client renews all its seats every `renew`, at its own
/// offset in the interval, until `end`.
fn renew_loop(
    conns: &mut [Conn],
    offsets: &[Duration],
    renew: Duration,
    end: Instant,
    t: &mut Tally,
) {
    let start = Instant::now();
    let mut round = 0u32;
    loop {
        for (c, off) in conns.iter_mut().zip(offsets) {
            if c.dead || c.seats.is_empty() {
                continue;
            }
            let due = start + renew * round + *off;
            if due >= end {
                return;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let req = NetRequest::Renew {
                seat_ids: c.seats.clone(),
            };
            let sent = Instant::now();
            let r = c
                .send(&req)
                .and_then(|n| c.recv().map(|(resp, m)| (resp, n, m)));
            match r {
                Ok((resp, n, m)) => {
                    t.lat
                        .entry(Op::Renew)
                        .or_default()
                        .push(sent.elapsed().as_nanos() as u64);
                    t.renew_frame.get_or_insert((n, m));
                    on_response(c, Work::Fill(0), Op::Renew, resp, t);
                }
                Err(e) => {
                    c.dead = true;
                    t.error(format!("Renew: transport {}", kind(&e)));
                }
            }
        }
        round += 1;
        if start + renew * round >= end {
            return;
        }
    }
}

// --- the server process ---------------------------------------------------------------------

struct Proc {
    pid: u32,
}

impl Proc {
    /// utime + stime in seconds.
    fn cpu_s(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let rest = &s[s.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the command: field 3 (state) is f[0]; utime is field 14, stime 15.
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Some(ticks as f64 / hz)
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
    fn kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    fn threads(&self) -> Option<u64> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .ok()
            .map(|d| d.count() as u64)
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Raises the open-file soft limit to the hard limit: every client is a socket.
fn raise_file_limit() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialized struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

// --- the run --------------------------------------------------------------------------------

fn run(a: &RunArgs) -> Result<()> {
    let key_path: &Path = a
        .key
        .as_deref()
        .context("--key is required (the publisher key file, to trust the server)")?;
    let key =
        PublisherKey::load(key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let publisher = key.public_key();
    let addr = a
        .server
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", a.server))?
        .next()
        .context("the server address resolves to nothing")?;
    if a.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = a.threads.unwrap_or(cpus).clamp(1, a.clients);
    let nofile = raise_file_limit();
    if (nofile as usize) < a.clients + 64 {
        bail!(
            "the open-file limit ({nofile}) is too low for {} clients: raise the hard limit",
            a.clients
        );
    }
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let duration = Duration::from_secs(a.duration_s);
    let server = a.server_pid.map(|pid| Proc { pid });
    let ctx = Ctx {
        vendor_id: key.vendor_id,
        product: a.product,
        nonce: tessera::util::random(),
    };
    println!(
        "tessera-load: {} clients, {threads} threads, mode {}, server {addr}, load average {}",
        a.clients,
        match a.mode {
            Mode::Cycle => "cycle",
            Mode::Hold => "hold",
        },
        loadavg()
    );

    // Client c belongs to thread c % threads; hold mode spreads client c's renewals at
    // offset c / clients of the interval.
    let renew = Duration::from_millis(a.renew_ms.max(1));
    let barrier = Barrier::new(threads + 1);
    let mut total = Tally::default();
    let mut report = Report::default();
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for th in 0..threads {
            let (ctx, barrier, publisher) = (&ctx, &barrier, &publisher);
            handles.push(s.spawn(move || {
                let mut t = Tally::default();
                let mut conns = Vec::new();
                let mut offsets = Vec::new();
                for id in (th..a.clients).step_by(threads) {
                    let t0 = Instant::now();
                    match connect(addr, id as u32, publisher, ctx.vendor_id, timeout) {
                        Ok(c) => {
                            t.connect_ns.push(t0.elapsed().as_nanos() as u64);
                            conns.push(c);
                            offsets.push(renew.mul_f64(id as f64 / a.clients as f64));
                        }
                        Err(e) => t.error(format!("connect: {}", kind(&e))),
                    }
                }
                t.connected = conns.len();
                barrier.wait(); // everyone connected
                match a.mode {
                    Mode::Cycle => {
                        let pacer = (a.rate > 0).then(|| Pacer {
                            interval: Duration::from_secs_f64(threads as f64 / a.rate as f64),
                            next: Instant::now(),
                        });
                        let deadline = Instant::now() + duration;
                        drive(
                            &mut conns,
                            Work::Cycle,
                            ctx,
                            pacer,
                            deadline,
                            timeout,
                            &mut t,
                        );
                        barrier.wait(); // done
                        // Give back the seats still held (not measured).
                        for c in conns.iter_mut().filter(|c| !c.dead) {
                            if let Some(seat_id) = c.holding.take() {
                                let r = c.send(&NetRequest::Release { seat_id });
                                if r.and_then(|_| c.recv()).is_err() {
                                    t.error("Release at the end: transport".into());
                                }
                            }
                        }
                    }
                    Mode::Hold => {
                        let deadline = Instant::now() + Duration::from_secs(600);
                        let k = a.seats_per_client;
                        drive(
                            &mut conns,
                            Work::Fill(k),
                            ctx,
                            None,
                            deadline,
                            timeout,
                            &mut t,
                        );
                        barrier.wait(); // population established
                        renew_loop(
                            &mut conns,
                            &offsets,
                            renew,
                            Instant::now() + duration,
                            &mut t,
                        );
                        barrier.wait(); // done
                    }
                }
                // Closing the connections releases nothing: hold-mode seats stay until their
                // leases run out (as for a client that dies).
                t
            }));
        }
        // Phase 1: connecting.
        let t0 = Instant::now();
        barrier.wait();
        report.connect_s = t0.elapsed().as_secs_f64();
        report.after_connect = server.as_ref().map(sample);
        if a.mode == Mode::Hold {
            let t1 = Instant::now();
            barrier.wait();
            report.fill_s = Some(t1.elapsed().as_secs_f64());
        }
        // The measured phase.
        let start = Instant::now();
        let before = server.as_ref().map(sample);
        let load_before = loadavg();
        let mut peak_rss = 0u64;
        let mut rss_samples = Vec::new();
        if let Some(p) = &server {
            // Sample the RSS once a second while the threads work (the last barrier ends it).
            let done = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s2| {
                s2.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Some(r) = p.kib("VmRSS") {
                            peak_rss = peak_rss.max(r);
                            rss_samples.push(r);
                        }
                        let until = Instant::now() + Duration::from_secs(1);
                        while Instant::now() < until
                            && !done.load(std::sync::atomic::Ordering::Relaxed)
                        {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                });
                barrier.wait();
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        } else {
            barrier.wait();
        }
        report.measured_s = start.elapsed().as_secs_f64();
        let after = server.as_ref().map(sample);
        report.load = (load_before, loadavg());
        if let (Some(b), Some(e)) = (before, after) {
            report.server = Some(ServerUse {
                cpu_pct: 100.0 * (e.cpu_s - b.cpu_s) / report.measured_s,
                rss_start_kib: b.rss_kib,
                rss_end_kib: e.rss_kib,
                rss_peak_kib: peak_rss.max(e.rss_kib),
                rss_hwm_kib: e.hwm_kib,
                threads: e.threads,
                samples: rss_samples.len(),
            });
        }
        for h in handles {
            let t = h
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
            total.merge(t);
        }
        Ok(())
    })?;
    print_report(a, &total, &report);
    if a.baseline {
        let Some((req, resp)) = total.acquire_frame else {
            bail!("no Acquire was answered: no frame size for the baseline");
        };
        let n = total
            .lat
            .get(&Op::Acquire)
            .map_or(0, |v| v.len())
            .clamp(1000, 50_000);
        let same = bare(req, req, n)?;
        print_latency(&format!("bare TCP echo {req} B → {req} B"), &same);
        let sized = bare(req, resp, n)?;
        print_latency(&format!("bare TCP echo {req} B → {resp} B"), &sized);
        let p50 = |v: &[u64]| percentile(v, 50.0) as f64;
        for op in [Op::Acquire, Op::Release] {
            if let Some(v) = total.lat.get(&op) {
                let mut v = v.clone();
                v.sort_unstable();
                println!(
                    "ratio p50 {op:?} / bare echo ({req} B each way): {:.2}x; / bare ({req} B → {resp} B): {:.2}x",
                    p50(&v) / p50(&same),
                    p50(&v) / p50(&sized)
                );
            }
        }
    }
    Ok(())
}

struct Sample {
    cpu_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn sample(p: &Proc) -> Sample {
    Sample {
        cpu_s: p.cpu_s().unwrap_or(0.0),
        rss_kib: p.kib("VmRSS").unwrap_or(0),
        hwm_kib: p.kib("VmHWM").unwrap_or(0),
        threads: p.threads().unwrap_or(0),
    }
}

struct ServerUse {
    cpu_pct: f64,
    rss_start_kib: u64,
    rss_end_kib: u64,
    rss_peak_kib: u64,
    rss_hwm_kib: u64,
    threads: u64,
    samples: usize,
}

#[derive(Default)]
struct Report {
    connect_s: f64,
    fill_s: Option<f64>,
    measured_s: f64,
    after_connect: Option<Sample>,
    load: (String, String),
    server: Option<ServerUse>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

fn print_latency(what: &str, sorted: &[u64]) {
    println!(
        "{what}: n={} p50 {} p90 {} p99 {} p99.9 {} max {}",
        sorted.len(),
        us(percentile(sorted, 50.0)),
        us(percentile(sorted, 90.0)),
        us(percentile(sorted, 99.0)),
        us(percentile(sorted, 99.9)),
        us(sorted.last().copied().unwrap_or(0)),
    );
}

fn print_report(a: &RunArgs, t: &Tally, r: &Report) {
    let mut hs = t.connect_ns.clone();
    hs.sort_unstable();
    println!(
        "connected {}/{} clients in {:.2} s ({:.0} handshakes/s)",
        t.connected,
        a.clients,
        r.connect_s,
        t.connected as f64 / r.connect_s.max(1e-9)
    );
    print_latency("connect+handshake", &hs);
    if let Some(s) = &r.after_connect {
        println!(
            "server after connecting: RSS {:.1} MiB, {} threads",
            s.rss_kib as f64 / 1024.0,
            s.threads
        );
    }
    if let Some(f) = r.fill_s {
        let n = t.lat.get(&Op::Acquire).map_or(0, |v| v.len());
        println!(
            "acquired {n} seats in {f:.2} s ({:.0} acquires/s)",
            n as f64 / f.max(1e-9)
        );
    }
    let mut all = Vec::new();
    for (op, v) in &t.lat {
        let mut v = v.clone();
        v.sort_unstable();
        print_latency(&format!("{op:?}"), &v);
        if a.mode == Mode::Cycle || *op == Op::Renew {
            all.extend(v);
        }
    }
    all.sort_unstable();
    let secs = r.measured_s.max(1e-9);
    match a.mode {
        Mode::Cycle => {
            println!(
                "seat ops (acquire + release) in {secs:.2} s: {} = {:.0} ops/s",
                all.len(),
                all.len() as f64 / secs
            );
            print_latency("all seat ops", &all);
        }
        Mode::Hold => {
            let seats: usize = t.lat.get(&Op::Acquire).map_or(0, |v| v.len());
            println!(
                "renewals in {secs:.2} s: {} = {:.1}/s, seats held {seats}, seats reported lost {}",
                all.len(),
                all.len() as f64 / secs,
                t.lost
            );
        }
    }
    for (name, f) in [
        ("Acquire", t.acquire_frame),
        ("Release", t.release_frame),
        ("Renew", t.renew_frame),
    ] {
        if let Some((q, p)) = f {
            println!("frame sizes {name}: request {q} B, response {p} B (with the 4-byte length)");
        }
    }
    if t.errors.is_empty() {
        println!("errors: none");
    } else {
        for (k, n) in &t.errors {
            println!("errors: {k}: {n}");
        }
    }
    if let Some(s) = &r.server {
        println!(
            "server over {secs:.1} s: CPU {:.1}% of one core; RSS start {:.1} MiB, end {:.1} MiB, peak {:.1} MiB ({} samples), VmHWM {:.1} MiB; {} threads",
            s.cpu_pct,
            s.rss_start_kib as f64 / 1024.0,
            s.rss_end_kib as f64 / 1024.0,
            s.rss_peak_kib as f64 / 1024.0,
            s.samples,
            s.rss_hwm_kib as f64 / 1024.0,
            s.threads
        );
    }
    println!("load average: before {}, after {}", r.load.0, r.load.1);
}
