//! tessera-dongle: the virtual dongle. A process running the container engine with its
//! state in a file, serving the same frames a hardware dongle does: in HID mode over a
//! report socket in the dongle directory, in mass-storage mode as a FUSE volume.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tessera::container::hosts::SharePolicy;
use tessera::dongle::device::{DongleDevice, create_state, load_state};
use tessera::dongle::framing::ReportSink;
use tessera::util::{format_time, say};

#[derive(Parser)]
#[command(name = "tessera-dongle", version, about = "The Tessera virtual dongle")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Makes a new blank dongle: device keys and a serial, in a state file.
    Create {
        /// The state file to write (must not exist).
        #[arg(long)]
        state: PathBuf,
    },
    /// Serves the dongle until SIGTERM or SIGINT.
    Serve {
        /// The state file.
        #[arg(long)]
        state: PathBuf,
        /// HID mode: a report socket (default `<dongle dir>/<serial>.hid`).
        #[arg(long)]
        hid: bool,
        /// The report socket path, instead of the default.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Mass-storage mode: mount the dongle's FUSE volume at this directory.
        #[arg(long)]
        msd: Option<PathBuf>,
        /// Exclusive-mode window: how long a host counts as present (milliseconds).
        #[arg(long, default_value_t = 10_000)]
        share_window_ms: u64,
        /// How long a dongle hopping between hosts stays locked (milliseconds).
        #[arg(long, default_value_t = 120_000)]
        cooldown_ms: u64,
    },
    /// Prints the dongle's serial, vendor and licenses.
    Info {
        /// The state file.
        #[arg(long)]
        state: PathBuf,
        /// Print them as JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let cli = Cli::parse();
    // `create` and `info` are one-shot tools and end quietly on a closed pipe; `serve` keeps
    // serving whatever becomes of its standard output (it writes it with `util::say`).
    if !matches!(cli.command, Command::Serve { .. }) {
        tessera::util::die_on_sigpipe();
    }
    if let Err(e) = run(cli) {
        eprintln!("tessera-dongle: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Create { state } => {
            let e =
                create_state(&state, 0).with_context(|| format!("creating {}", state.display()))?;
            println!("serial:       {}", e.serial());
            println!("state:        {}", state.display());
            println!("The dongle is blank: program it with `tessera-vendor program`.");
        }
        Command::Info { state, json } => {
            let e = load_state(&state).with_context(|| format!("reading {}", state.display()))?;
            if json {
                let licenses: Vec<tessera::view::LicenseView> =
                    e.licenses().iter().map(Into::into).collect();
                let out = serde_json::json!({
                    "serial": e.serial(),
                    "vendor_id": e.state().vendor_id,
                    "certified": e.certificate().is_some(),
                    "clock_high_water": e.state().clock_high_water,
                    "licenses": licenses,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            println!("serial:       {}", e.serial());
            match e.state().vendor_id {
                0 => println!("vendor:       none (blank)"),
                v => println!("vendor:       {}", tessera::publisher::vendor_hex(v)),
            }
            println!(
                "certified:    {}",
                if e.certificate().is_some() {
                    "yes"
                } else {
                    "no (blank)"
                }
            );
            println!(
                "clock high-water: {}",
                format_time(e.state().clock_high_water)
            );
            println!("licenses:     {}", e.licenses().len());
            for l in e.licenses() {
                println!("{l}");
            }
        }
        Command::Serve {
            state,
            hid,
            socket,
            msd,
            share_window_ms,
            cooldown_ms,
        } => {
            if !hid && socket.is_none() && msd.is_none() {
                bail!("say how to serve: --hid, --socket PATH and/or --msd DIR");
            }
            let mut device = DongleDevice::open(&state)
                .with_context(|| format!("reading {}", state.display()))?;
            device.set_share_policy(SharePolicy {
                window_ms: share_window_ms,
                cooldown_ms,
                ..SharePolicy::default()
            });
            let serial = device.engine().serial().to_string();
            // SAFETY: installing a handler that only stores to an atomic.
            unsafe {
                libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
                libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            }
            let sink: Arc<Mutex<dyn ReportSink>> = Arc::new(Mutex::new(device));
            let stop = Arc::new(AtomicBool::new(false));
            let mut threads = Vec::new();
            if hid || socket.is_some() {
                let path = socket.unwrap_or_else(|| {
                    tessera::dongle::socket::dongle_dir().join(format!("{serial}.hid"))
                });
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                say(format!("HID report socket: {}", path.display()));
                let (sink, stop) = (sink.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    tessera::dongle::socket::serve(&path, sink, stop)
                }));
            }
            if let Some(dir) = msd {
                say(format!("MSD volume: {}", dir.display()));
                let (sink, stop, serial) = (sink.clone(), stop.clone(), serial.clone());
                threads.push(std::thread::spawn(move || {
                    tessera::dongle::msd_volume::serve_until(&dir, &serial, sink, stop)
                }));
            }
            say(format!(
                "serving dongle {serial} (pid {})",
                std::process::id()
            ));
            while !STOP.load(Ordering::SeqCst) && !threads.iter().all(|t| t.is_finished()) {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::SeqCst);
            for t in threads {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => bail!("{e}"),
                    Err(_) => bail!("a transport thread panicked"),
                }
            }
        }
    }
    Ok(())
}
