//! `tessera-load pool`: a license-server pool measured beside a single server, in one run
//! (docs/BENCHMARKS.md, "Pool").
//!
//! It starts a three-node etcd on loopback (each node on free ports, its own data folder),
//! three `tessera-server --pool` members on it and one single server with SQLite, all hosting
//! copies of one software container (each member in a mount namespace of its own with a
//! private `/dev/shm`, where the machine-wide hosting lock lives: needs root), and measures:
//!
//! 1. the floor: etcd's own round trips from this process, sequential: a put, and a
//!    transaction of the seat's shape (compare the mod revision of the license's gate key,
//!    put a row with a lease and the gate);
//! 2. acquire+release latency, one client, sequential: on the single server, on a member;
//! 3. seat ops/s with `--clients` clients: on the single server, on one member, and spread
//!    over the three members at once (each its share of the clients);
//! 4. fail-over: a library session on the three members holds a seat; its member is
//!    SIGKILLed; the time until the client's next acquire is served (by another member),
//!    and until its held seat is re-attached to another member (by its lease keeper, at its
//!    next renewal at the latest). Once per member, with the server's default lease settings.
//!
//! 5. (before 4, which restarts members) `--held` seats held at once over the members
//!    and renewed at the members' interval by `tessera-load --mode hold` children; meanwhile
//!    acquire+release with one client, the seat's transaction on a license of as many rows
//!    in both shapes (the gate's, and comparing every row as before), the members' and etcd's
//!    memory and CPU, and etcd's database size.
//!
//! Phases 2 and 3 run this binary's own load mode (`tessera-load --server ...`) as child
//! processes and print the lines of their reports that carry the figures.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::publisher::PublisherKey;

use crate::PoolArgs;
use crate::report::{percentile, print_latency};
use crate::soak::{Folder, Server};

const VENDOR: u32 = 0x10AD;
const PRODUCT: u32 = 1;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd nodes; killed when dropped.
struct Etcd {
    children: Vec<Child>,
    endpoints: Vec<String>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Etcd {
    /// `n` nodes on loopback in `dir`, healthy (or an error after 30 s).
    fn start(dir: &Path, n: usize) -> Result<Etcd> {
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut e = Etcd {
            children: Vec::new(),
            endpoints: ports
                .iter()
                .map(|(c, _)| format!("127.0.0.1:{c}"))
                .collect(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("etcd-{i}.log")))?;
            let mut cmd = Command::new("etcd");
            cmd.args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("etcd-{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-cluster",
                    &cluster.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &format!("tessera-load-{}", std::process::id()),
                ])
                .stdout(Stdio::null())
                .stderr(log);
            if std::env::consts::ARCH != "x86_64" {
                cmd.env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
            }
            e.children.push(
                cmd.spawn()
                    .context("starting etcd (scripts/install-deps.sh)")?,
            );
        }
        let start = Instant::now();
        loop {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", e.endpoints.join(",")))
                .args(["endpoint", "health"])
                .output()?;
            if out.status.success() {
                return Ok(e);
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "etcd not healthy after 30 s: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The floor: sequential puts and seat-shaped transactions from this process.
fn etcd_floor(endpoints: &[String], n: usize) -> Result<(Vec<u64>, Vec<u64>)> {
    use etcd_client::Client;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = Client::connect([format!("http://{}", endpoints[0])], None).await?;
        let mut puts = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            c.put(format!("/floor/put/{}", i % 16), vec![0u8; 120], None)
                .await?;
            puts.push(t.elapsed().as_nanos() as u64);
        }
        let txns = seat_txns(&mut c, "/floor/seats/lic/", Shape::Gate, n).await?;
        puts.sort_unstable();
        Ok((puts, txns))
    })
}

/// How a seat's transaction makes sure no other grant came first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// What a member does: compare the mod revision of the license's gate key, put the row
    /// with a lease and the gate.
    Gate,
    /// What it did before: compare the mod revision of every key under the license's prefix
    /// (etcd evaluates it key by key), put the row with a lease.
    Range,
}

/// `n` transactions of the seat's shape, sequential, on the license `prefix` (ends in `/`).
/// Sorted, in ns.
async fn seat_txns(
    c: &mut etcd_client::Client,
    prefix: &str,
    shape: Shape,
    n: usize,
) -> Result<Vec<u64>> {
    use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
    let lease = c.lease_grant(60, None).await?.id();
    let end = format!("{}0", prefix.trim_end_matches('/'));
    let gate = format!("{}.gate", prefix.trim_end_matches('/'));
    let mut txns = Vec::with_capacity(n);
    for i in 0..n {
        let rev = c.get("/floor/none", None).await?;
        let rev = rev.header().map_or(0, |h| h.revision());
        let row = TxnOp::put(
            format!("{prefix}{}", i % 16),
            vec![0u8; 120],
            Some(PutOptions::new().with_lease(lease)),
        );
        let txn = match shape {
            Shape::Gate => Txn::new()
                .when([Compare::mod_revision(
                    gate.as_str(),
                    CompareOp::Less,
                    rev + 1,
                )])
                .and_then([row, TxnOp::put(gate.as_str(), "m0", None)]),
            Shape::Range => Txn::new()
                .when([Compare::mod_revision(prefix, CompareOp::Less, rev + 1)
                    .with_range(end.as_str())])
                .and_then([row]),
        };
        let t = Instant::now();
        let r = c.txn(txn).await?;
        txns.push(t.elapsed().as_nanos() as u64);
        if !r.succeeded() {
            bail!("the floor's transaction failed its compare (nothing else writes there)");
        }
    }
    txns.sort_unstable();
    Ok(txns)
}

/// The seat's transaction, both shapes, on a license prefix that holds `rows` rows (put
/// first, 100 to a transaction).
fn txns_beside_rows(endpoints: &[String], rows: usize, n: usize) -> Result<[Vec<u64>; 2]> {
    use etcd_client::{Client, Txn, TxnOp};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = Client::connect([format!("http://{}", endpoints[0])], None).await?;
        let prefix = format!("/floor/held-{rows}/lic/");
        for chunk in (0..rows).collect::<Vec<_>>().chunks(100) {
            let puts: Vec<TxnOp> = chunk
                .iter()
                .map(|i| TxnOp::put(format!("{prefix}row-{i}"), vec![0u8; 120], None))
                .collect();
            c.txn(Txn::new().and_then(puts)).await?;
        }
        Ok([
            seat_txns(&mut c, &prefix, Shape::Gate, n).await?,
            seat_txns(&mut c, &prefix, Shape::Range, n).await?,
        ])
    })
}

/// etcdctl on `endpoints` (v3 API).
fn etcdctl(endpoints: &[String], args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .output()?)
}

/// The seat rows the pool holds in etcd now (pool `load`).
fn seat_rows(endpoints: &[String]) -> Result<u64> {
    // The answer's count is the range's, whatever the limit (etcdctl 3.4 has no
    // --count-only).
    let out = etcdctl(
        endpoints,
        &[
            "get",
            "/tessera/load/seats/",
            "--prefix",
            "--keys-only",
            "--limit=1",
            "-w",
            "json",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("etcdctl get: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(v["count"].as_u64().unwrap_or(0))
}

/// Phase 5: `a.held` seats held on the pool at once, spread over the members and renewed at
/// their default interval by `tessera-load --mode hold` children; meanwhile one client
/// measures acquire+release on a member, and etcd's own seat transaction is timed, in both
/// shapes, on a license as full. Reports the members' and etcd's memory and CPU.
fn held(a: &PoolArgs, key: &Path, members: &[Server], etcd: &Etcd) -> Result<()> {
    use crate::server_proc::{Proc, sample};
    const CLIENTS_PER_MEMBER: usize = 32;
    // The members run with the server's defaults: 90 s leases, renewed every 30 s.
    const RENEW_MS: u64 = 30_000;
    let clients = CLIENTS_PER_MEMBER * members.len();
    let per = a.held.div_ceil(clients);
    let total = per * clients;
    println!(
        "{total} seats held over {} members ({clients} clients holding {per} each, renewed every {} s), {} s after the last is acquired:",
        members.len(),
        RENEW_MS / 1000,
        a.held_s
    );
    let me = std::env::current_exe()?;
    let start = Instant::now();
    let children: Vec<Child> = members
        .iter()
        .map(|m| {
            let mut c = Command::new(&me);
            c.args(["--server", &m.addr, "--key"])
                .arg(key)
                .args(["--mode", "hold", "--threads", "1", "--timeout-ms", "60000"])
                .args(["--clients", &CLIENTS_PER_MEMBER.to_string()])
                .args(["--seats-per-client", &per.to_string()])
                .args(["--renew-ms", &RENEW_MS.to_string()])
                .args(["--duration-s", &a.held_s.to_string()])
                .args(["--product", &PRODUCT.to_string()]);
            if let Some(pid) = m.pid() {
                c.args(["--server-pid", &pid.to_string()]);
            }
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting tessera-load --mode hold")
        })
        .collect::<Result<_>>()?;
    loop {
        let rows = seat_rows(&etcd.endpoints)?;
        if rows >= total as u64 {
            break;
        }
        if start.elapsed() > Duration::from_secs(900) {
            bail!("only {rows} of {total} seats held after 900 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let fill = start.elapsed().as_secs_f64();
    println!(
        "held: {total} seats acquired in {fill:.1} s ({:.0} acquires/s over the pool)",
        total as f64 / fill
    );
    load(
        &format!("pool member, {total} seats held"),
        key,
        &[&members[0].addr],
        1,
        a.duration_s,
    )?;
    let [gate, range] = txns_beside_rows(&etcd.endpoints, total, a.floor_ops.min(500))?;
    print_latency(
        &format!("etcd seat-shaped txn, a license of {total} rows (floor)"),
        &gate,
    );
    print_latency(
        &format!("etcd txn comparing all {total} rows of a license (the former shape)"),
        &range,
    );
    let rss = |pid: u32| Proc { pid }.kib("VmRSS").unwrap_or(0) as f64 / 1024.0;
    for (i, m) in members.iter().enumerate() {
        if let Some(pid) = m.pid() {
            println!("held: member m{i} RSS {:.1} MiB", rss(pid));
        }
    }
    let etcd_cpu: Vec<(u32, f64)> = etcd
        .children
        .iter()
        .map(|c| (c.id(), sample(&Proc { pid: c.id() }).cpu_s))
        .collect();
    let t0 = Instant::now();
    let mut lines = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let keep = [
            "acquired ",
            "Renew:",
            "renewals in",
            "errors:",
            "server over",
        ];
        for line in report_lines("held", c, &keep)? {
            lines.push(format!("  held [m{i}]: {line}"));
        }
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    for l in lines {
        println!("{l}");
    }
    for (i, (pid, cpu0)) in etcd_cpu.iter().enumerate() {
        let s = sample(&Proc { pid: *pid });
        println!(
            "held: etcd node {i} RSS {:.1} MiB, CPU {:.1}% of one core over the last {secs:.0} s",
            s.rss_kib as f64 / 1024.0,
            (s.cpu_s - cpu0) / secs * 100.0
        );
    }
    let status = etcdctl(&etcd.endpoints, &["endpoint", "status", "-w", "json"])?;
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&status.stdout) {
        let sizes: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["Status"]["dbSize"].as_u64())
            .map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
            .collect();
        println!("held: etcd db size {}", sizes.join(", "));
    }
    Ok(())
}

/// Waits for a `tessera-load` child and returns the lines of its report that begin with one
/// of `keep`; an error with what it said when it failed.
fn report_lines(label: &str, child: Child, keep: &[&str]) -> Result<Vec<String>> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{label}: tessera-load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .map(str::to_string)
        .collect())
}

/// Runs this binary's load mode against `servers` (each its share of `clients`) at once and
/// prints the lines of their reports with the figures, under `label`.
fn load(label: &str, key: &Path, servers: &[&str], clients: usize, secs: u64) -> Result<()> {
    let me = std::env::current_exe()?;
    let share = clients.div_ceil(servers.len()).max(1);
    let children: Vec<Child> = servers
        .iter()
        .map(|s| {
            Command::new(&me)
                .args(["--server", s, "--key"])
                .arg(key)
                .args([
                    "--clients",
                    &share.to_string(),
                    "--duration-s",
                    &secs.to_string(),
                    "--product",
                    &PRODUCT.to_string(),
                    "--threads",
                    "1",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting tessera-load")
        })
        .collect::<Result<_>>()?;
    let mut total_ops = 0.0;
    for (i, c) in children.into_iter().enumerate() {
        let keep = ["Acquire:", "Release:", "seat ops", "errors:"];
        for line in report_lines(label, c, &keep)? {
            println!("  {label} [{}]: {line}", servers[i]);
            if let Some(rate) = line
                .strip_suffix(" ops/s")
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|r| r.parse::<f64>().ok())
            {
                total_ops += rate;
            }
        }
    }
    println!(
        "{label}: {clients} clients over {} server(s): {total_ops:.0} seat ops/s in all",
        servers.len()
    );
    Ok(())
}

/// A library session of the simulated host `name` on `servers`, in that order.
fn session(dir: &Path, key: &PublisherKey, name: &str, servers: Vec<String>) -> Result<Session> {
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = servers;
    o.timeout = Duration::from_secs(3);
    Ok(Session::open_in(
        o,
        Environment {
            home: dir.join(format!("client-{name}")),
            host: HostIdentity::simulated(name),
            clock: Arc::new(tessera::util::SystemClock),
        },
    )?)
}

pub(crate) fn pool(a: &PoolArgs) -> Result<()> {
    let folder = Folder {
        path: std::env::temp_dir().join(format!("tessera-load-pool-{}", std::process::id())),
        remove: true,
    };
    let dir = folder.path.as_path();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = match &a.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the folder of tessera-load")?
            .join("tessera-server"),
    };
    println!(
        "tessera-load pool: {} etcd nodes, 3 members, 1 single server; load average {}",
        a.etcd_nodes,
        crate::server_proc::loadavg()
    );
    let etcd = Etcd::start(dir, a.etcd_nodes)?;
    let key = PublisherKey::generate(VENDOR, "tessera-load pool");
    let key_file = dir.join("publisher.key");
    key.save(&key_file)?;
    let home0 = dir.join("home-0");
    crate::setup::activate(&home0, &key, PRODUCT, a.quantity)?;
    let homes: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("home-{i}"))).collect();
    for h in &homes[1..] {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(&home0)
            .arg(h)
            .status()?
            .success();
        if !ok {
            bail!("copying the container to {}", h.display());
        }
    }
    let server_args = |name: &str, home: &Path| -> Vec<String> {
        let state = dir.join(format!("state-{name}"));
        let mut v: Vec<String> = [
            "--name",
            name,
            "--no-discovery",
            "--no-dongles",
            "--no-admin",
            "--listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend([
            "--state-dir".into(),
            state.display().to_string(),
            "--home".into(),
            home.display().to_string(),
        ]);
        if a.no_fsync {
            v.push("--no-fsync".into());
        }
        v
    };
    // Members: each in a mount namespace with a private /dev/shm (the hosting lock).
    let unshare = PathBuf::from("unshare");
    let mut members: Vec<Server> = Vec::new();
    for (i, home) in homes[..3].iter().enumerate() {
        let mut args: Vec<String> = [
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /dev/shm && exec \"$0\" \"$@\"",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(bin.display().to_string());
        args.extend(server_args(&format!("m{i}"), home));
        args.extend([
            "--pool".into(),
            format!("etcd://{}", etcd.endpoints.join(",")),
            "--pool-name".into(),
            "load".into(),
        ]);
        members.push(Server::start(
            &unshare,
            args,
            &dir.join(format!("m{i}.log")),
        )?);
    }
    let single = Server::start(
        &bin,
        server_args("single", &homes[3]),
        &dir.join("single.log"),
    )?;
    let addrs: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
    println!(
        "members {}; single server {}; etcd {}",
        addrs.join(", "),
        single.addr,
        etcd.endpoints.join(", ")
    );

    // 1. The floor.
    let (puts, txns) = etcd_floor(&etcd.endpoints, a.floor_ops)?;
    print_latency("etcd put (floor)", &puts);
    print_latency("etcd seat-shaped txn (floor)", &txns);

    // 2. One client, sequential.
    println!(
        "one client, acquire+release in a loop, {} s each:",
        a.duration_s
    );
    load("single server", &key_file, &[&single.addr], 1, a.duration_s)?;
    load("pool member", &key_file, &[&addrs[0]], 1, a.duration_s)?;

    // 3. Many clients.
    println!("{} clients, {} s each:", a.clients, a.duration_s);
    load(
        "single server",
        &key_file,
        &[&single.addr],
        a.clients,
        a.duration_s,
    )?;
    load(
        "pool, one member",
        &key_file,
        &[&addrs[0]],
        a.clients,
        a.duration_s,
    )?;
    let all: Vec<&str> = addrs.iter().map(String::as_str).collect();
    load(
        "pool, three members",
        &key_file,
        &all,
        a.clients,
        a.duration_s,
    )?;

    // 5 (before the fail-over restarts members). Many seats held at once.
    if a.held > 0 {
        held(a, &key_file, &members, &etcd)?;
    }

    // 4. Fail-over: each member killed once under a client that holds a seat there.
    let (mut took, mut reattached) = (Vec::new(), Vec::new());
    for victim in 0..members.len() {
        let order: Vec<String> = (0..members.len())
            .map(|k| members[(victim + k) % members.len()].addr.clone())
            .collect();
        let s = session(dir, &key, &format!("failover-{victim}"), order)?;
        let seat = s.acquire(PRODUCT, 0, false)?;
        let name = seat.info()?.server;
        if name.as_deref() != Some(&format!("m{victim}")) {
            bail!("the seat is on {name:?}, not m{victim}");
        }
        members[victim].kill9();
        let t = Instant::now();
        // (a) The client asks for another seat: its connection to the dead member fails
        // and it moves on to the next member of its list.
        let mut first_error = None;
        let extra = loop {
            match s.acquire(PRODUCT, 0, false) {
                Ok(x) => break x,
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("m{victim}'s client got no seat within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let acquire_ms = t.elapsed().as_secs_f64() * 1000.0;
        let by = extra.info().ok().and_then(|i| i.server).unwrap_or_default();
        drop(extra);
        // (b) The seat it held: re-attached to another member by its lease keeper (at its
        // next renewal at the latest; the app meanwhile encrypts and decrypts with the
        // seat's own keys).
        let moved_to = loop {
            if let Ok(i) = seat.info()
                && i.server.as_deref() != Some(&format!("m{victim}"))
            {
                break i.server.unwrap_or_default();
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("m{victim}'s seat was not re-attached within 120 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let reattach_ms = t.elapsed().as_secs_f64() * 1000.0;
        println!(
            "fail-over: m{victim} SIGKILLed; a new acquire of its client served by {by} after \
             {acquire_ms:.0} ms{}; its held seat re-attached to {moved_to} after {reattach_ms:.0} ms",
            first_error
                .map(|e| format!(" (first refused: {e})"))
                .unwrap_or_default()
        );
        took.push((acquire_ms * 1000.0) as u64);
        reattached.push((reattach_ms * 1000.0) as u64);
        drop(seat);
        drop(s);
        // Back for the next round (on a new port).
        members[victim].restart()?;
    }
    took.sort_unstable();
    reattached.sort_unstable();
    println!(
        "fail-over (default lease settings), n={}: a new acquire served again after median \
         {:.0} ms, max {:.0} ms; a held seat re-attached after median {:.0} ms, max {:.0} ms",
        took.len(),
        percentile(&took, 50.0) as f64 / 1000.0,
        took.last().copied().unwrap_or(0) as f64 / 1000.0,
        percentile(&reattached, 50.0) as f64 / 1000.0,
        reattached.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!("load average after: {}", crate::server_proc::loadavg());
    drop(members);
    drop(single);
    drop(etcd);
    drop(folder);
    Ok(())
}
