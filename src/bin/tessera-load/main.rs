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
//! `tessera-load soak --kills 1000 --clients 32 --quantity 8` starts a server of its own and
//! SIGKILLs and restarts it at random moments while library sessions take, renew and give
//! back seats; it counts over-grants and seats lost by clients that kept renewing (both must
//! be 0) and exits non-zero when there was one (`soak`, docs/BENCHMARKS.md, "Soak").
//!
//! `tessera-load pool` starts a three-node etcd, a three-member pool and a single server of
//! its own on loopback and measures them side by side with etcd's own round trips, then the
//! fail-over time of a killed member's client (`pool`, docs/BENCHMARKS.md, "Pool").
//!
//! `tessera-load setup` makes a publisher key and activates a software container for this
//! machine in a `TESSERA_HOME` for the server to host; `tessera-load bare` measures a plain
//! TCP echo round trip on loopback (the baseline for a request's round trip).
//!
//! The parts: `client` (one simulated client's connection), `scenario` (what the clients
//! do, cycle or fill-and-renew, and the loop that keeps their requests in flight, waiting
//! with `epoll`), `run` (threads and phases; `server_proc` samples the server's process),
//! `report` (what is measured, and its printing), `setup` and `bare` (the subcommands).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

mod bare;
mod client;
mod epoll;
mod pool;
mod report;
mod run;
mod scenario;
mod server_proc;
mod setup;
mod soak;

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
    /// A server of its own SIGKILLed and restarted at random moments under load from many
    /// clients; counts over-grants and lost seats (exit 1 when there was one).
    Soak(SoakArgs),
    /// A three-member license-server pool on a three-node etcd, started here on loopback,
    /// measured beside a single server and etcd's own round trips; then the fail-over time
    /// of a killed member's client (docs/BENCHMARKS.md, "Pool"). Needs root (each member
    /// gets a private /dev/shm) and etcd.
    Pool(PoolArgs),
}

#[derive(Args)]
struct PoolArgs {
    /// etcd nodes.
    #[arg(long, default_value_t = 3)]
    etcd_nodes: usize,
    /// Clients of the throughput phase.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of each load phase.
    #[arg(long, default_value_t = 5)]
    duration_s: u64,
    /// Round trips of each of etcd's own measurements (the floor).
    #[arg(long, default_value_t = 2000)]
    floor_ops: usize,
    /// Seats of the license.
    #[arg(long, default_value_t = 100_000)]
    quantity: u32,
    /// Seats held on the pool at once for the last phase (0: skip it): spread over the
    /// members, renewed at the members' interval, while one client measures acquire+release.
    #[arg(long, default_value_t = 10_000)]
    held: usize,
    /// Seconds the held seats are kept (after all are acquired): long enough for a few
    /// renewal rounds at the members' default interval (30 s).
    #[arg(long, default_value_t = 65)]
    held_s: u64,
    /// Servers without fsync (the single server's SQLite; the members write no seats).
    #[arg(long)]
    no_fsync: bool,
    /// The tessera-server binary (default: beside tessera-load).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

#[derive(Args)]
struct SoakArgs {
    /// SIGKILLs (each followed by a restart on the same port and state directory).
    #[arg(long, default_value_t = 1000)]
    kills: u64,
    /// Clients: library sessions, each a simulated machine, one thread each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seats of the license the clients compete for (fewer than --clients keeps it full).
    #[arg(long, default_value_t = 8)]
    quantity: u32,
    /// The server's lease length.
    #[arg(long, default_value_t = 2000)]
    lease_ms: u64,
    /// The server's renewal interval.
    #[arg(long, default_value_t = 400)]
    renew_ms: u64,
    /// Longest time the server stays up between a restart and the next kill (a third of the
    /// kills come within 100 ms of the restart). Above --lease-ms lets the seats of clients
    /// that released them while the server was down run out now and then.
    #[arg(long, default_value_t = 2500)]
    max_up_ms: u64,
    /// Longest time the server stays down (its restart comes on top).
    #[arg(long, default_value_t = 500)]
    max_down_ms: u64,
    /// Longest time a client keeps a seat before it releases it.
    #[arg(long, default_value_t = 2000)]
    hold_ms: u64,
    /// The clients' per-operation timeout.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
    /// The seed of the kill moments and the clients' pauses, decimal or 0x-hex as a run
    /// prints it (default: from the clock).
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// The tessera-server binary (default: beside tessera-load).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The folder for the server's state and the clients' homes (kept); default: a
    /// temporary one, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary folder (the server's log and seat table) after the run.
    #[arg(long)]
    keep: bool,
    /// Start the server with --no-fsync (commits reach the OS's cache, not the disk).
    #[arg(long)]
    no_fsync: bool,
    /// Also print the figures as one line of JSON.
    #[arg(long)]
    json: bool,
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

fn parse_seed(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?} is not a number: {e}"))
}

// mimalloc: every request allocates a few small buffers on whichever tokio worker runs it;
// glibc malloc's arena locking and consolidation cost about 9% of the server's CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A one-shot tool: ends quietly when what reads its report goes away.
    tessera::util::die_on_sigpipe();
    if let Err(e) = real_main() {
        eprintln!("tessera-load: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Setup(a)) => setup::setup(&a),
        Some(Cmd::Bare(a)) => {
            let lat = bare::bare(a.bytes, a.reply_bytes.unwrap_or(a.bytes), a.iterations)?;
            report::print_latency(
                &format!(
                    "bare TCP echo {} B → {} B",
                    a.bytes,
                    a.reply_bytes.unwrap_or(a.bytes)
                ),
                &lat,
            );
            Ok(())
        }
        Some(Cmd::Soak(a)) => soak::soak(&a),
        Some(Cmd::Pool(a)) => pool::pool(&a),
        None => run::run(&cli.run),
    }
}
