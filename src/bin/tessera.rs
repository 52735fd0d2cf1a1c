//! `tessera`: the end user's and admin's command line (in the manner of FlexNet's `lmutil`
//! and CodeMeter's `cmu`): host info, offline activation of software containers, and the list
//! of containers on this machine with their licenses and seats in use.
//!
//! Thin by design: every step is a call into the `tessera` library; this file parses
//! arguments and prints.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use ed25519_dalek::VerifyingKey;

use tessera::client::seats::SeatPool;
use tessera::client::{self, Environment};
use tessera::container::{SoftwareContainer, software};
use tessera::host::HostIdentity;
use tessera::publisher;
use tessera::util::{self, format_time};

/// Tessera licensing runtime: host info, activation, containers.
#[derive(Parser, Debug)]
#[command(name = "tessera", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show this machine as the runtime sees it, the state directory and the version.
    Info,
    /// Offline activation of this machine's software container.
    #[command(subcommand)]
    Activate(ActivateCommand),
    /// List the software containers under TESSERA_HOME with their licenses and seats in use.
    List(ListArgs),
}

#[derive(Subcommand, Debug)]
enum ActivateCommand {
    /// Write an activation request for a publisher (makes the container if there is none;
    /// reuses it to add licenses).
    Request(RequestArgs),
    /// Install the activation the publisher sent back.
    Install(InstallArgs),
}

#[derive(Args, Debug)]
struct RequestArgs {
    /// The publisher's vendor id (decimal or 0x hex).
    #[arg(long, value_parser = parse_u32)]
    vendor_id: u32,
    /// The request file to write (default `tessera-<vendor>-request.bin`).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct InstallArgs {
    /// The activation file.
    file: PathBuf,
    /// The publisher's public key file (`tessera-publisher <vendor> <hex>`) to trust.
    /// Default: the key pinned at the container's first activation.
    #[arg(long)]
    publisher_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only this publisher's containers (decimal or 0x hex).
    #[arg(long, value_parser = parse_u32)]
    vendor_id: Option<u32>,
}

fn parse_u32(s: &str) -> std::result::Result<u32, String> {
    let s = s.trim();
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse::<u32>(),
    };
    r.map_err(|_| format!("`{s}` is not a 32-bit number (decimal or 0x hex)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info => info(),
        Command::Activate(ActivateCommand::Request(a)) => request(a),
        Command::Activate(ActivateCommand::Install(a)) => install(a),
        Command::List(a) => list(a),
    }
}

fn info() -> Result<()> {
    println!("{}", HostIdentity::detect());
    println!("home:         {}", client::default_home().display());
    println!("version:      {}", tessera::VERSION);
    Ok(())
}

fn request(a: RequestArgs) -> Result<()> {
    let env = Environment::detect();
    let (serial, bytes) = client::request_activation(&env, a.vendor_id).with_context(|| {
        format!(
            "making an activation request for vendor {} in {}",
            a.vendor_id,
            env.home.display()
        )
    })?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("tessera-{}-request.bin", a.vendor_id)));
    let abs = std::path::absolute(&out)
        .with_context(|| format!("cannot resolve the path {}", out.display()))?;
    util::write_atomic(&abs, &bytes, 0o644)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("container:    {serial}");
    println!("request:      {}", out.display());
    println!(
        "Send the request file to the publisher (vendor {}) and install the activation they \
         send back with `tessera activate install FILE`.",
        a.vendor_id
    );
    Ok(())
}

fn load_public_key(path: &Path) -> Result<VerifyingKey> {
    let bytes =
        fs::read(path).with_context(|| format!("reading the public key {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("{} is not a text public key file", path.display()))?;
    let (_, key) = publisher::parse_public_key(&text)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(key)
}

fn install(a: InstallArgs) -> Result<()> {
    let key = a
        .publisher_key
        .as_deref()
        .map(load_public_key)
        .transpose()?;
    let bytes = fs::read(&a.file)
        .with_context(|| format!("reading the activation {}", a.file.display()))?;
    let env = Environment::detect();
    let (serial, report) = client::install_activation(&env, &bytes, key.as_ref())
        .with_context(|| format!("installing {}", a.file.display()))?;
    println!("container:    {serial}");
    println!(
        "licenses:     {} added, {} replaced",
        report.added, report.replaced
    );
    Ok(())
}

fn list(a: ListArgs) -> Result<()> {
    let env = Environment::detect();
    let home = &env.home;
    let paths = match a.vendor_id {
        Some(v) => software::list_for_vendor(home, v),
        None => software::list(home),
    };
    list_dongles(&env, a.vendor_id);
    println!();
    if paths.is_empty() {
        println!("no software containers under {}", home.display());
        return Ok(());
    }
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("file:         {}", p.display());
        let c = match SoftwareContainer::load(p, &env.host.fingerprint) {
            Ok(c) => c,
            Err(e) => {
                println!("status:       does not open here: {e}");
                continue;
            }
        };
        let st = c.engine.state();
        println!("serial:       {}", st.serial);
        println!("vendor:       {}", st.vendor_id);
        println!("clock high-water: {}", format_time(st.clock_high_water));
        let lics = c.engine.licenses();
        println!("licenses:     {}", lics.len());
        for lic in lics {
            println!("{lic}");
            let seats = SeatPool::count_in_use(home, &lic.id_hex(), lic.quantity);
            match seats {
                Ok(n) => println!("  in use:      {n} of {}", lic.quantity),
                Err(e) => println!("  in use:      unknown ({e})"),
            }
        }
    }
    Ok(())
}

/// The dongles attached to this machine, as they describe themselves (nothing is trusted:
/// an app checks the certificate against its own publisher key).
fn list_dongles(env: &Environment, vendor: Option<u32>) {
    use tessera::channel::{HostHello, Trust};
    use tessera::container::protocol::{Request, Response};
    use tessera::dongle::client::{Connection, discover};
    use tessera::license::SignedLicense;

    let endpoints = discover();
    if endpoints.is_empty() {
        println!("no dongles attached");
        return;
    }
    // This machine's own host key, so that listing does not make the dongle look shared.
    let host_secret = match client::hostkey::load_or_create(&env.home) {
        Ok(k) => k,
        Err(e) => {
            println!("dongles:      cannot read the host key: {e}");
            return;
        }
    };
    for ep in endpoints {
        let hello = HostHello::new(env.host.machine.clone(), env.host.hostname.clone());
        let timeout = std::time::Duration::from_secs(3);
        let mut c = match Connection::connect(&ep, &host_secret, hello, Trust::FirstUse, timeout) {
            Ok(c) => c,
            Err(e) => {
                println!("dongle at {ep:?}: does not answer: {e}");
                continue;
            }
        };
        if vendor.is_some_and(|v| v != c.vendor_id) {
            continue;
        }
        println!("dongle:       {} ({} mode)", c.serial, c.mode());
        println!(
            "vendor:       {}",
            if c.vendor_id == 0 {
                "none (blank)".to_string()
            } else {
                c.vendor_id.to_string()
            }
        );
        if let Ok(Response::Identity {
            shared,
            clock_high_water,
            ..
        }) = c.call(&Request::Identify)
        {
            println!(
                "exclusive:    {}",
                if shared {
                    "NO: used by several hosts, locked out"
                } else {
                    "yes"
                }
            );
            println!("clock high-water: {}", format_time(clock_high_water));
        }
        match tessera::dongle::client::list_all_licenses(|r| c.call(r)) {
            Ok(list) => {
                println!("licenses:     {}", list.len());
                for b in list {
                    match SignedLicense::parse_unverified(&b) {
                        Ok(l) => println!("{l}"),
                        Err(e) => println!("  unreadable license: {e}"),
                    }
                }
            }
            Err(e) => println!("licenses:     {e}"),
        }
    }
}
