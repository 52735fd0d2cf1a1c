//! A load run: the clients connected over a pool of threads, the phases (connect, fill,
//! the measured phase) kept in step with a barrier, the server sampled meanwhile, and the
//! baseline after.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tessera::net::proto::NetRequest;
use tessera::publisher::PublisherKey;

use crate::bare::bare;
use crate::client::{Op, connect};
use crate::report::{Report, ServerUse, Tally, kind, percentile, print_latency, print_report};
use crate::scenario::{Ctx, Pacer, Work, drive, renew_loop};
use crate::server_proc::{Proc, loadavg, sample};
use crate::{Mode, RunArgs};

/// Runs the load (`tessera-load` without a subcommand): connects the clients, drives them
/// in `--mode`, prints the report, and with `--baseline` the bare echo after it.
pub(crate) fn run(a: &RunArgs) -> Result<()> {
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
