//! tessera-server: the license server. Hosts the software containers activated for this
//! machine and the dongles attached to it, and counts seats for clients on the network.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use tessera::server::config::{AdminToken, ServerConfig};
use tessera::server::daemon::Server;
use tessera::server::run;

#[derive(Parser, Clone)]
#[command(name = "tessera-server", version, about = "The Tessera license server")]
struct Cli {
    /// A TOML configuration file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The server's name.
    #[arg(long)]
    name: Option<String>,
    /// An address for the license protocol (repeatable).
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Where the server keeps its key and seat table.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The TESSERA_HOME whose software containers to host. A home given here (or another
    /// than the default in the configuration) that does not exist is refused; the default
    /// one may be missing on a server that hosts dongles only (the log then says so).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Lease length in milliseconds.
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Renewal interval in milliseconds.
    #[arg(long)]
    renew_ms: Option<u64>,
    /// Most connections at once.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Do not answer discovery broadcasts.
    #[arg(long)]
    no_discovery: bool,
    /// Do not host attached dongles.
    #[arg(long)]
    no_dongles: bool,
    /// Do not sync each seat-table commit to the disk (grants survive a killed process,
    /// not a power loss).
    #[arg(long)]
    no_fsync: bool,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Where the admin HTTP API and page listen (an address that is not loopback needs an
    /// admin token).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// A file holding the admin API token (instead of `admin_token` in the configuration;
    /// a file keeps it out of the process list).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// A further `Host` header value the admin API answers to (`name:port`; repeatable).
    #[arg(long)]
    admin_host: Vec<String>,
    /// Do not serve the admin API.
    #[arg(long)]
    no_admin: bool,
    /// Checkpoint the usage logs at least this often, in seconds.
    #[arg(long)]
    usage_checkpoint_s: Option<u64>,
    /// When saturated, commit the seat table at most once per this many microseconds (0
    /// commits as requests come).
    #[arg(long)]
    commit_window_us: Option<u64>,
    /// Threads serving client connections (0: one fewer than the CPUs, at least 1).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Pool mode: share the seat table with the other members of a pool in etcd
    /// (`etcd://host:2379,host2:2379`, the etcd cluster's client endpoints) instead of this
    /// server's SQLite file. The TOML equivalent is `[pool] endpoints = [...]`.
    #[arg(long, value_name = "etcd://HOST:PORT,...")]
    pool: Option<String>,
    /// The pool's key prefix in etcd [default: /tessera/<pool name>/].
    #[arg(long, requires = "pool")]
    pool_prefix: Option<String>,
    /// The pool's name [default: default].
    #[arg(long, requires = "pool")]
    pool_name: Option<String>,
}

// mimalloc: every request allocates a few small buffers on whichever tokio worker runs it;
// glibc malloc's arena locking and consolidation cost about 9% of the server's CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The command line, its help showing the defaults (those of `ServerConfig`, which a
/// configuration file overrides, so they are not clap defaults).
fn command() -> clap::Command {
    use clap::CommandFactory;
    let d = ServerConfig::default();
    let listen: Vec<String> = d.listen.iter().map(ToString::to_string).collect();
    let defaults = [
        ("name", d.name.clone() + " (this machine's host name)"),
        ("listen", listen.join(", ")),
        ("state_dir", d.state_dir.display().to_string()),
        ("home", d.home.display().to_string()),
        ("lease_ms", d.lease_ms.to_string()),
        ("renew_ms", d.renew_ms.to_string()),
        ("max_connections", d.max_connections.to_string()),
        ("log_format", d.log_format.clone()),
        ("admin_listen", d.admin_listen.to_string()),
        ("usage_checkpoint_s", d.usage_checkpoint_s.to_string()),
        ("commit_window_us", d.commit_window_us.to_string()),
        ("worker_threads", d.worker_threads.to_string()),
    ];
    defaults
        .into_iter()
        .fold(Cli::command(), |cmd, (id, value)| {
            cmd.mut_arg(id, |a| {
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                a.help(format!("{help} [default: {value}]"))
            })
        })
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("tessera-server: error: {e:#}");
        std::process::exit(1);
    }
}

/// The configuration: the file (if any) with the command line's overrides. Run again by a
/// reload, so flags keep winning over the file.
fn load_config(cli: &Cli) -> Result<ServerConfig> {
    let mut c = match &cli.config {
        Some(p) => {
            ServerConfig::from_file(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => ServerConfig::default(),
    };
    let home_given = cli.home.is_some();
    let cli = cli.clone();
    if let Some(v) = cli.name {
        c.name = v;
    }
    if !cli.listen.is_empty() {
        c.listen = cli.listen;
    }
    if let Some(v) = cli.state_dir {
        c.state_dir = v;
    }
    if let Some(v) = cli.home {
        c.home = v;
    }
    if let Some(v) = cli.lease_ms {
        c.lease_ms = v;
    }
    if let Some(v) = cli.renew_ms {
        c.renew_ms = v;
    }
    if let Some(v) = cli.max_connections {
        c.max_connections = v;
    }
    if let Some(v) = cli.log_format {
        c.log_format = v;
    }
    if let Some(v) = cli.admin_listen {
        c.admin_listen = v;
    }
    if let Some(p) = &cli.admin_token_file {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading the admin token file {}", p.display()))?;
        c.admin_token = Some(AdminToken::new(&text));
    }
    c.admin_hosts.extend(cli.admin_host);
    if let Some(v) = cli.usage_checkpoint_s {
        c.usage_checkpoint_s = v;
    }
    if let Some(v) = cli.commit_window_us {
        c.commit_window_us = v;
    }
    if let Some(v) = cli.worker_threads {
        c.worker_threads = v;
    }
    if let Some(url) = &cli.pool {
        let mut p = tessera::server::config::PoolConfig::from_url(url)?;
        p.prefix = cli.pool_prefix.clone();
        p.name = cli.pool_name.clone();
        c.pool = Some(p);
    }
    c.discovery &= !cli.no_discovery;
    c.dongles &= !cli.no_dongles;
    c.fsync &= !cli.no_fsync;
    c.admin &= !cli.no_admin;
    c.check()?;
    // A home named on purpose must be there: a typo would start a server hosting nothing.
    if !c.home.exists() && (home_given || c.home != ServerConfig::default().home) {
        anyhow::bail!(
            "the home {} does not exist: give the TESSERA_HOME where `tessera activate` put \
             this machine's software containers, or make the directory first (a server that \
             hosts dongles only)",
            c.home.display()
        );
    }
    Ok(c)
}

fn real_main() -> Result<()> {
    use clap::FromArgMatches;
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    let c = load_config(&cli)?;

    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| "info".into());
    // Colour only for a terminal, and never with NO_COLOR set (https://no-color.org): a log
    // written to a file or the journal gets no escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if c.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .init();
    }
    if !c.home.exists() {
        tracing::warn!(
            home = %c.home.display(),
            "the home does not exist: this server hosts no software container (only dongles); \
             activate one there with `tessera activate request`, or give --home"
        );
    }

    // One fewer worker than the CPUs by default: the seat table's commit thread is busy too,
    // and two workers on two CPUs beside it cost more in wake-ups and work stealing than the
    // second one serves (docs/BENCHMARKS.md, "Issue 4 again").
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(c.workers())
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let server = Server::open(c)?;
        server.set_config_source(Box::new(move || {
            load_config(&cli).map_err(|e| tessera::Error::InvalidArgument(format!("{e:#}")))
        }));
        let (tx, rx) = tokio::sync::oneshot::channel::<tessera::server::daemon::Bound>();
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        };
        let announce = tokio::spawn(async move {
            if let Ok(bound) = rx.await {
                for a in bound.listen {
                    tessera::util::say(format!("listening on {a}"));
                }
                if let Some(a) = bound.admin {
                    tessera::util::say(format!("admin on {a}"));
                }
            }
        });
        run(server, shutdown, Some(tx)).await?;
        let _ = announce.await;
        Ok::<_, anyhow::Error>(())
    })
}
