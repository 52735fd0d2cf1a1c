//! `tessera`: the end user's and admin's command line (in the manner of FlexNet's `lmutil`
//! and CodeMeter's `cmu`): host info, offline activation of software containers, the list
//! of containers on this machine with their licenses, borrowed seats and seats in use,
//! borrowing a seat of a license server and returning it, and a license server's
//! administration through its admin API (`tessera admin`).
//!
//! Thin by design: every step is a call into the `tessera` library; this file parses
//! arguments and prints.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use ed25519_dalek::VerifyingKey;

use tessera::client::seats::Registry;
use tessera::client::{self, Environment};
use tessera::container::{SoftwareContainer, software};
use tessera::host::HostIdentity;
use tessera::publisher;
use tessera::util::{self, format_time};

/// Tessera licensing runtime: host info, activation, containers.
#[derive(Parser, Debug)]
#[command(
    name = "tessera",
    version,
    about,
    long_about = None,
    after_help = "Exit status: 0 done; 1 an error (the message says which); 2 a command line \
                  it does not understand; 3 nothing matched a filter (`list --vendor-id` with \
                  no container or dongle of that vendor). Vendor ids are read in decimal or \
                  0x hex and shown in hex (0x1092)."
)]
struct Cli {
    /// Print the data as JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The exit status of a filter that matched nothing (`tessera list --vendor-id`).
const NOTHING_MATCHED: u8 = 3;

#[derive(Subcommand, Debug)]
enum Command {
    /// Show this machine as the runtime sees it, the state directory and the version.
    Info,
    /// Offline activation of this machine's software container.
    #[command(subcommand)]
    Activate(ActivateCommand),
    /// List the software containers under TESSERA_HOME with their licenses, borrowed seats
    /// and seats in use.
    List(ListArgs),
    /// Borrow a seat of a network license for some days: it is kept in this machine's
    /// container and works with no server until it ends.
    Borrow(BorrowArgs),
    /// Give a borrowed seat back to the license server before it ends.
    Return(ReturnArgs),
    /// Administer a license server through its admin API (status, licenses, seats, revoke,
    /// reload, export usage, the admin page's link).
    Admin(AdminArgs),
}

#[derive(Args, Debug)]
struct AdminArgs {
    /// The admin API of the server.
    #[arg(long, global = true, default_value = tessera::admin_client::DEFAULT_URL)]
    server: String,
    /// The admin token (default: the TESSERA_ADMIN_TOKEN environment variable). Not needed
    /// on the server's own machine unless the server has one: without one, `revoke` and
    /// `reload` use the local admin token the server writes at each start in
    /// `<state_dir>/local-admin.token`, which only root and the server's user can read (run
    /// them as one of those, e.g. with sudo), and so does the admin page: `sudo tessera
    /// admin page` prints its link with that token. Reading needs no token on that machine.
    #[arg(long, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// The server: name, version, uptime, addresses, connections, seats in use.
    Status,
    /// The licenses the server offers, with seats in use.
    Licenses,
    /// The seats held and who holds them.
    Seats,
    /// Take a seat away from its holder (its next call gets TESSERA_E_LEASE_LOST).
    Revoke {
        /// The seat id (32 hex digits, as `tessera admin seats` shows it).
        seat_id: String,
        /// Why (logged by the server).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Re-read the server's configuration (lease times, admin token, containers).
    Reload,
    /// Print the admin page's link for a browser on this machine (with the local admin
    /// token, which lets the page revoke and reload).
    ///
    /// Without an admin token on the server the link carries it in its fragment
    /// (`#token=...`): run this as root or the server's user (sudo). With an admin token,
    /// the plain address: the page asks for it.
    Page,
    /// Download the server's usage log, to prove usage to the publisher.
    ExportUsage {
        /// Write it here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The publisher whose log to export (decimal or 0x hex); needed when the server
        /// keeps the logs of several.
        #[arg(long, value_parser = publisher::vendor_id_arg)]
        vendor: Option<u32>,
    },
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
    /// The publisher's vendor id (decimal or 0x hex; not 0).
    #[arg(long, value_parser = publisher::vendor_id_arg)]
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

/// Who the publisher is and where the servers are, for a session (`borrow`, `return`).
#[derive(Args, Debug)]
struct PublisherArgs {
    /// The publisher's public key file (`tessera-publisher <vendor> <hex>`, as the publisher
    /// ships it); default: the TESSERA_PUBLISHER_KEY environment variable, else the key
    /// pinned in this machine's container of `--vendor-id`.
    #[arg(long)]
    publisher_key: Option<PathBuf>,
    /// The publisher's vendor id (decimal or 0x hex; not 0); default: the one the key file
    /// names.
    #[arg(long, value_parser = publisher::vendor_id_arg)]
    vendor_id: Option<u32>,
    /// License servers, comma-separated `host[:port]`; default: TESSERA_SERVERS, else a
    /// discovery broadcast.
    #[arg(long)]
    servers: Option<String>,
}

#[derive(Args, Debug)]
struct BorrowArgs {
    /// The product.
    #[arg(long, value_parser = util::u32_arg)]
    product: u32,
    /// For how many days (1 to what the license allows).
    #[arg(long)]
    days: u32,
    /// Feature bits the seat must grant (decimal or 0x hex).
    #[arg(long, value_parser = util::u32_arg, default_value = "0")]
    features: u32,
    #[command(flatten)]
    publisher: PublisherArgs,
}

#[derive(Args, Debug)]
struct ReturnArgs {
    /// The product whose borrowed seat to give back.
    #[arg(long, value_parser = util::u32_arg)]
    product: u32,
    #[command(flatten)]
    publisher: PublisherArgs,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only this publisher's containers (decimal or 0x hex; not 0).
    #[arg(long, value_parser = publisher::vendor_id_arg)]
    vendor_id: Option<u32>,
}

fn main() -> ExitCode {
    util::die_on_sigpipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tessera: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        Command::Info => info(json),
        Command::Activate(ActivateCommand::Request(a)) => request(a, json),
        Command::Activate(ActivateCommand::Install(a)) => install(a, json),
        Command::List(a) => {
            return Ok(if list(a, json)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(NOTHING_MATCHED)
            });
        }
        Command::Borrow(a) => borrow(a, json),
        Command::Return(a) => give_back(a, json),
        Command::Admin(a) => admin(a, json),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` as JSON (`--json`).
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A string from the server made safe for a terminal (no control characters).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

fn field(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => "-".into(),
        Some(serde_json::Value::String(s)) => clean(s),
        Some(other) => clean(&other.to_string()),
    }
}

fn time_field(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .map_or_else(|| "-".into(), format_time)
}

/// Prints rows as aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn admin(a: AdminArgs, json: bool) -> Result<()> {
    use tessera::admin_client::AdminClient;
    let token = a
        .token
        .or_else(|| std::env::var("TESSERA_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let mut api = AdminClient::new(&a.server, token.clone())?;
    // A change with no token given: the server's local admin token, which root and the
    // server's user can read on its machine.
    if token.is_none()
        && matches!(
            a.command,
            AdminCommand::Revoke { .. } | AdminCommand::Reload
        )
    {
        api.set_token(api.local_token()?);
    }
    match a.command {
        AdminCommand::Page => {
            let link = api.page_link()?;
            if json {
                return print_json(&serde_json::json!({ "url": link.url }));
            }
            println!("{}", link.url);
            if link.needs_admin_token {
                eprintln!("this server has an admin token: the page asks for it");
            } else {
                eprintln!(
                    "open it in a browser on this machine: the link holds this server start's \
                     local admin token, which lets the page revoke seats and reload"
                );
            }
        }
        AdminCommand::Status => {
            let s = api.get("/api/v1/status")?;
            if json {
                return print_json(&s);
            }
            let n = |k: &str| s.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            println!(
                "server:       {} (version {})",
                field(&s, "name"),
                field(&s, "version")
            );
            println!(
                "up since:     {} ({} s)",
                time_field(&s, "started_at"),
                n("uptime_s")
            );
            let listen: Vec<String> = s
                .get("listen")
                .and_then(serde_json::Value::as_array)
                .map(|l| l.iter().filter_map(|x| x.as_str()).map(clean).collect())
                .unwrap_or_default();
            println!("listening on: {}", listen.join(", "));
            println!(
                "admin API:    {} ({})",
                field(&s, "admin_listen"),
                field(&s, "auth")
            );
            // Handles: the acquires holding those seats (not known in a pool).
            let handles = s
                .get("handles")
                .and_then(serde_json::Value::as_u64)
                .map(|h| format!("; {h} handle(s) hold them"))
                .unwrap_or_default();
            println!(
                "seats in use: {} of {} (counted by each license's unit{handles})",
                n("seats_in_use"),
                n("quantity"),
            );
            println!(
                "connections:  {} open, {} since the start",
                n("connections"),
                n("connections_total")
            );
            println!("requests:     {}", n("requests"));
            println!(
                "hosting:      {} container(s), {} license(s)",
                n("containers"),
                n("licenses")
            );
            println!(
                "leases:       {} ms, renewed every {} ms",
                n("lease_ms"),
                n("renew_ms")
            );
            if let Some(p) = s.get("pool").filter(|p| !p.is_null()) {
                print_pool(p);
            }
        }
        AdminCommand::Licenses => {
            let v = api.get("/api/v1/licenses")?;
            if json {
                return print_json(&v);
            }
            let list = v
                .get("licenses")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default();
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|l| {
                    vec![
                        field(l, "product_name"),
                        format!(
                            "{}:{}",
                            l.get("vendor_id")
                                .and_then(serde_json::Value::as_u64)
                                .and_then(|v| u32::try_from(v).ok())
                                .map_or_else(|| field(l, "vendor_id"), publisher::vendor_hex),
                            field(l, "product_code")
                        ),
                        format!("{} of {}", field(l, "in_use"), field(l, "quantity")),
                        field(l, "counting_unit"),
                        field(l, "features"),
                        if l.get("expiry").is_some_and(serde_json::Value::is_null) {
                            "perpetual".into()
                        } else {
                            time_field(l, "expiry")
                        },
                        field(l, "vm_policy"),
                        field(l, "container"),
                    ]
                })
                .collect();
            table(
                &[
                    "PRODUCT",
                    "ID",
                    "IN USE",
                    "UNIT",
                    "FEATURES",
                    "EXPIRY",
                    "VMS",
                    "CONTAINER",
                ],
                &rows,
            );
        }
        AdminCommand::Seats => {
            let v = api.get("/api/v1/seats")?;
            if json {
                return print_json(&v);
            }
            let list = v
                .get("seats")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default();
            if list.is_empty() {
                println!("no seat is held");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    vec![
                        field(s, "seat_id"),
                        field(s, "product_name"),
                        field(s, "host"),
                        field(s, "user"),
                        field(s, "session"),
                        field(s, "machine"),
                        field(s, "pid"),
                        time_field(s, "since"),
                        time_field(s, "lease_expires"),
                        // A borrowed seat: held by another machine's container until its
                        // end (or its return), never renewed.
                        if s.get("borrowed").and_then(serde_json::Value::as_bool) == Some(true) {
                            format!("borrowed by {}", field(s, "borrower"))
                        } else {
                            "-".into()
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "SEAT",
                    "PRODUCT",
                    "HOST",
                    "USER",
                    "SESSION",
                    "MACHINE",
                    "PID",
                    "SINCE",
                    "LEASE UNTIL",
                    "BORROWED",
                ],
                &rows,
            );
        }
        AdminCommand::Revoke { seat_id, reason } => {
            let body = match reason {
                Some(r) => serde_json::json!({ "reason": r }),
                None => serde_json::json!({}),
            };
            let v = api.post(&format!("/api/v1/seats/{}/revoke", seat_id.trim()), &body)?;
            if json {
                return print_json(&v);
            }
            println!("revoked seat {}", field(&v, "revoked"));
        }
        AdminCommand::Reload => {
            let v = api.post("/api/v1/reload", &serde_json::json!({}))?;
            if json {
                return print_json(&v);
            }
            let list = |k: &str| -> Vec<String> {
                v.get(k)
                    .and_then(serde_json::Value::as_array)
                    .map(|l| l.iter().filter_map(|x| x.as_str()).map(clean).collect())
                    .unwrap_or_default()
            };
            println!("reloaded:     {}", list("applied").join("; "));
            println!(
                "hosting:      {} container(s), {} license(s)",
                field(&v, "containers"),
                field(&v, "licenses")
            );
            let restart = list("restart_needed");
            if !restart.is_empty() {
                println!("restart needed for: {}", restart.join(", "));
            }
            for p in list("problems") {
                println!("not hosted:   {p}");
            }
        }
        AdminCommand::ExportUsage { out, vendor } => {
            let url = match vendor {
                Some(v) => format!("/api/v1/usage?vendor={v}"),
                None => "/api/v1/usage".to_string(),
            };
            match out {
                Some(path) => {
                    let tmp = path.with_extension("part");
                    let mut f = fs::File::create(&tmp)
                        .with_context(|| format!("creating {}", tmp.display()))?;
                    let n = match api.download(&url, &mut f) {
                        Ok(n) => n,
                        Err(e) => {
                            drop(f);
                            let _ = fs::remove_file(&tmp);
                            return Err(e.into());
                        }
                    };
                    f.sync_all()
                        .with_context(|| format!("writing {}", tmp.display()))?;
                    fs::rename(&tmp, &path)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("usage log: {n} bytes written to {}", path.display());
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = stdout.lock();
                    api.download(&url, &mut lock)?;
                }
            }
        }
    }
    Ok(())
}

fn info(json: bool) -> Result<()> {
    use sha2::Digest;
    let host = HostIdentity::detect();
    let home = client::default_home();
    // Each software container and what it is bound to.
    let containers: Vec<serde_json::Value> = software::list(&home)
        .iter()
        .map(|p| match SoftwareContainer::load(p, &host) {
            Ok(c) => serde_json::json!({
                "file": p.display().to_string(),
                "serial": c.engine.serial(),
                "binding": c.binding_kind(),
            }),
            Err(e) => serde_json::json!({
                "file": p.display().to_string(),
                "error": e.to_string(),
            }),
        })
        .collect();
    if json {
        // Trait values as the text shows them: the first 8 hex digits of their SHA-256.
        let traits: Vec<serde_json::Value> = host
            .fingerprint
            .traits
            .iter()
            .map(|t| {
                let digest = sha2::Sha256::digest(t.value.as_bytes());
                serde_json::json!({
                    "kind": t.kind.to_string(),
                    "digest": hex::encode(&digest[..4]),
                })
            })
            .collect();
        return print_json(&serde_json::json!({
            "hostname": host.hostname,
            "machine": host.machine.to_string(),
            "container": host.container.as_ref().map(ToString::to_string),
            "session": host.session.to_string(),
            "refused": host.overmounted.as_ref().map(ToString::to_string),
            "fingerprint": traits,
            "home": home.display().to_string(),
            "version": tessera::VERSION,
            "tpm": host.tpm.as_ref().map(|t| t.tcti.to_string()),
            "containers": containers,
        }));
    }
    println!("{host}");
    println!("home:         {}", home.display());
    println!("version:      {}", tessera::VERSION);
    match &host.tpm {
        Some(t) => println!("tpm:          {}", t.tcti),
        None => println!("tpm:          none"),
    }
    for c in &containers {
        let name = c["file"].as_str().unwrap_or_default();
        let name = Path::new(name)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        match c.get("error") {
            None => println!(
                "container:    {} binding {}",
                field(c, "serial"),
                field(c, "binding")
            ),
            Some(e) => println!(
                "container:    {name} does not open here: {}",
                e.as_str().unwrap_or_default()
            ),
        }
    }
    Ok(())
}

fn request(a: RequestArgs, json: bool) -> Result<()> {
    let env = Environment::detect();
    let vendor = publisher::vendor_hex(a.vendor_id);
    let (serial, bytes) = client::request_activation(&env, a.vendor_id).with_context(|| {
        format!(
            "making an activation request for vendor {vendor} in {}",
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
    if json {
        return print_json(&serde_json::json!({
            "container": serial,
            "vendor_id": a.vendor_id,
            "request": out.display().to_string(),
        }));
    }
    println!("container:    {serial}");
    println!("request:      {}", out.display());
    println!(
        "Send the request file to the publisher (vendor {vendor}) and install the activation \
         they send back with `tessera activate install FILE`."
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

fn install(a: InstallArgs, json: bool) -> Result<()> {
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
    if json {
        return print_json(&serde_json::json!({
            "container": serial,
            "added": report.added,
            "replaced": report.replaced,
        }));
    }
    println!("container:    {serial}");
    println!(
        "licenses:     {} added, {} replaced",
        report.added, report.replaced
    );
    Ok(())
}

/// `tessera list`: the dongles and software containers (of a vendor, with a filter), as
/// text or JSON. `Ok(false)` when a filter matched nothing (exit status 3).
fn list(a: ListArgs, json: bool) -> Result<bool> {
    use tessera::view::{BorrowedView, ContainerView, LicenseInUse, ListView};
    let env = Environment::detect();
    let home = &env.home;
    let all = software::list(home);
    let paths = match a.vendor_id {
        Some(v) => software::list_for_vendor(home, v),
        None => all.clone(),
    };
    let in_use = |serial: &str, pool: &str| Registry::machine().count_in_use(serial, pool);
    let containers: Vec<ContainerView> = paths
        .iter()
        .map(|p| {
            let mut v = ContainerView {
                file: p.display().to_string(),
                error: None,
                serial: None,
                vendor_id: None,
                binding: None,
                tpm_counter: None,
                clock_high_water: None,
                licenses: Vec::new(),
                borrowed: Vec::new(),
            };
            let c = match SoftwareContainer::load(p, &env.host) {
                Ok(c) => c,
                Err(e) => {
                    v.error = Some(e.to_string());
                    return v;
                }
            };
            let st = c.engine.state();
            v.serial = Some(st.serial.clone());
            v.vendor_id = Some(st.vendor_id);
            v.binding = Some(c.binding_kind().to_string());
            v.tpm_counter = c.tpm_counter();
            v.clock_high_water = Some(st.clock_high_water);
            v.licenses = c
                .engine
                .licenses()
                .iter()
                .map(|lic| {
                    let n = in_use(&st.serial, &lic.id_hex());
                    LicenseInUse {
                        license: lic.into(),
                        in_use: n.as_ref().ok().map(|n| *n as u64),
                        in_use_error: n.err().map(|e| e.to_string()),
                    }
                })
                .collect();
            v.borrowed = c
                .engine
                .borrowed()
                .iter()
                .zip(c.engine.borrowed_licenses())
                .map(|(b, lic)| BorrowedView {
                    seat_id: hex::encode(b.seat_id),
                    product_code: lic.product_code,
                    product_name: lic.product_name.clone(),
                    server: b.server.clone(),
                    until: b.until,
                    ended: b.until <= util::now(),
                    in_use: in_use(&st.serial, &client::borrowed_pool_name(lic, &b.seat_id))
                        .ok()
                        .map(|n| n as u64),
                })
                .collect();
            v
        })
        .collect();
    let view = ListView {
        home: home.display().to_string(),
        home_exists: home.exists(),
        vendor_id: a.vendor_id,
        dongles: list_dongles(&env, a.vendor_id),
        others: all.len() - paths.len(),
        containers,
    };
    let matched = a.vendor_id.is_none() || !view.dongles.is_empty() || !view.containers.is_empty();
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(matched);
    }
    print_dongles(&view.dongles);
    println!();
    if view.containers.is_empty() {
        let others = match view.others {
            0 => String::new(),
            1 => " (1 of another vendor)".into(),
            n => format!(" ({n} of other vendors)"),
        };
        match (a.vendor_id, view.home_exists) {
            (_, false) => println!("no software containers: {} does not exist", view.home),
            (Some(v), true) => println!(
                "no software containers of vendor {} in {}{others}",
                publisher::vendor_hex(v),
                view.home
            ),
            (None, true) => println!("no software containers in {}", view.home),
        }
    }
    for (i, c) in view.containers.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_container(c);
    }
    Ok(matched)
}

/// One software container of `tessera list`, as text.
fn print_container(c: &tessera::view::ContainerView) {
    println!("file:         {}", c.file);
    if let Some(e) = &c.error {
        println!("status:       does not open here: {e}");
        return;
    }
    println!("serial:       {}", c.serial.as_deref().unwrap_or("-"));
    println!(
        "vendor:       {}",
        c.vendor_id.map_or("-".into(), publisher::vendor_hex)
    );
    let binding = c.binding.as_deref().unwrap_or("-");
    match c.tpm_counter {
        Some((index, value)) => {
            println!("binding:      {binding} (NV counter {index:#010x} at {value})")
        }
        None => println!("binding:      {binding}"),
    }
    println!(
        "clock high-water: {}",
        format_time(c.clock_high_water.unwrap_or(0))
    );
    println!("licenses:     {}", c.licenses.len());
    for l in &c.licenses {
        println!("{}", l.license.text);
        match (l.in_use, &l.in_use_error) {
            (Some(n), _) => println!("  in use:      {n} of {}", l.license.quantity),
            (None, e) => println!("  in use:      unknown ({})", e.as_deref().unwrap_or("-")),
        }
    }
    if !c.borrowed.is_empty() {
        println!("borrowed:     {}", c.borrowed.len());
    }
    for b in &c.borrowed {
        println!(
            "  borrowed seat {} of product {} ({})",
            b.seat_id, b.product_code, b.product_name
        );
        println!("  from:        {}", b.server);
        println!(
            "  until:       {}{}",
            format_time(b.until),
            if b.ended { " (ended)" } else { "" }
        );
        match b.in_use {
            Some(n) => println!("  in use:      {n} of 1"),
            None => println!("  in use:      unknown"),
        }
    }
}

/// A session for the publisher `a` names (key file, or the key pinned in this machine's
/// container of the vendor), on the servers it names.
fn open_session(a: &PublisherArgs) -> Result<client::Session> {
    let env = Environment::detect();
    let file = a
        .publisher_key
        .clone()
        .or_else(|| std::env::var_os("TESSERA_PUBLISHER_KEY").map(PathBuf::from));
    let (vendor_id, key) = match file {
        Some(path) => {
            let bytes = fs::read(&path)
                .with_context(|| format!("reading the public key {}", path.display()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow!("{} is not a text public key file", path.display()))?;
            let (named, key) = publisher::parse_public_key(&text)
                .with_context(|| format!("reading {}", path.display()))?;
            let vendor = a.vendor_id.or(named).ok_or_else(|| {
                anyhow!(
                    "{} does not name the publisher's vendor id: pass --vendor-id",
                    path.display()
                )
            })?;
            (vendor, key)
        }
        None => {
            let vendor = a.vendor_id.ok_or_else(|| {
                anyhow!("pass --publisher-key FILE (or set TESSERA_PUBLISHER_KEY), or --vendor-id")
            })?;
            let pinned = software::list_for_vendor(&env.home, vendor)
                .into_iter()
                .filter_map(|p| SoftwareContainer::load(&p, &env.host).ok())
                .find_map(|c| c.engine.state().publisher_key)
                .ok_or_else(|| {
                    anyhow!(
                        "no container of vendor {} on this machine knows the publisher's \
                         key: pass --publisher-key FILE",
                        publisher::vendor_hex(vendor)
                    )
                })?;
            let key = VerifyingKey::from_bytes(&pinned)
                .map_err(|_| anyhow!("the pinned publisher key is not valid"))?;
            (vendor, key)
        }
    };
    let mut opts = client::SessionOptions::new(vendor_id, key);
    let servers = a
        .servers
        .clone()
        .or_else(|| std::env::var("TESSERA_SERVERS").ok())
        .unwrap_or_default();
    opts.servers = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    client::Session::open_in(opts, env).context("opening a session")
}

fn borrow(a: BorrowArgs, json: bool) -> Result<()> {
    let s = open_session(&a.publisher)?;
    let (until, seat_id) = s
        .borrow(a.product, a.features, a.days)
        .with_context(|| format!("borrowing a seat of product {}", a.product))?;
    let from = s
        .borrowed()?
        .into_iter()
        .find(|b| b.seat_id == seat_id)
        .map(|b| b.server)
        .unwrap_or_default();
    let vendor = s.options().vendor_id;
    if json {
        return print_json(&serde_json::json!({
            "product_code": a.product,
            "vendor_id": vendor,
            "seat_id": hex::encode(seat_id),
            "server": from,
            "until": until,
            "until_text": format_time(until),
        }));
    }
    println!(
        "borrowed:     product {} of vendor {}",
        a.product,
        publisher::vendor_hex(vendor)
    );
    println!("seat:         {}", hex::encode(seat_id));
    println!("from:         {from}");
    println!("until:        {}", format_time(until));
    println!(
        "It works on this machine with no server until then; `tessera return --product {}` \
         gives it back earlier.",
        a.product
    );
    Ok(())
}

fn give_back(a: ReturnArgs, json: bool) -> Result<()> {
    let s = open_session(&a.publisher)?;
    s.return_borrowed(a.product)
        .with_context(|| format!("returning the borrowed seat of product {}", a.product))?;
    let vendor = s.options().vendor_id;
    if json {
        return print_json(&serde_json::json!({
            "returned": true,
            "product_code": a.product,
            "vendor_id": vendor,
        }));
    }
    println!(
        "returned:     product {} of vendor {}",
        a.product,
        publisher::vendor_hex(vendor)
    );
    Ok(())
}

/// The dongles attached to this machine (of `vendor`, with a filter), as they describe
/// themselves (nothing is trusted: an app checks the certificate against its own publisher
/// key).
fn list_dongles(env: &Environment, vendor: Option<u32>) -> Vec<tessera::view::DongleView> {
    use tessera::channel::{HostHello, Trust};
    use tessera::container::protocol::{Request, Response};
    use tessera::dongle::client::{Connection, discover};
    use tessera::license::SignedLicense;
    use tessera::view::DongleView;

    let endpoints = discover();
    let blank = |endpoint: String, error: String| DongleView {
        endpoint,
        error: Some(error),
        serial: None,
        mode: None,
        vendor_id: None,
        shared: None,
        clock_high_water: None,
        licenses: Vec::new(),
    };
    if endpoints.is_empty() {
        return Vec::new();
    }
    // This machine's own host key, so that listing does not make the dongle look shared.
    let host_secret = match env
        .host
        .trusted_fingerprint()
        .and_then(|fp| client::hostkey::load_or_create(&env.home, fp))
    {
        Ok(k) => k,
        Err(e) => {
            return vec![blank("-".into(), format!("cannot read the host key: {e}"))];
        }
    };
    let mut out = Vec::new();
    for ep in endpoints {
        let hello = HostHello::new(env.host.machine.clone(), env.host.hostname.clone());
        let timeout = std::time::Duration::from_secs(3);
        let name = format!("{ep:?}");
        let mut c = match Connection::connect(&ep, &host_secret, hello, Trust::FirstUse, timeout) {
            Ok(c) => c,
            Err(e) => {
                out.push(blank(name, format!("does not answer: {e}")));
                continue;
            }
        };
        if vendor.is_some_and(|v| v != c.vendor_id) {
            continue;
        }
        let mut d = DongleView {
            endpoint: name,
            error: None,
            serial: Some(c.serial.clone()),
            mode: Some(c.mode().to_string()),
            vendor_id: Some(c.vendor_id),
            shared: None,
            clock_high_water: None,
            licenses: Vec::new(),
        };
        if let Ok(Response::Identity {
            shared,
            clock_high_water,
            ..
        }) = c.call(&Request::Identify)
        {
            d.shared = Some(shared);
            d.clock_high_water = Some(clock_high_water);
        }
        match tessera::dongle::client::list_all_licenses(|r| c.call(r)) {
            Ok(list) => {
                for b in list {
                    match SignedLicense::parse_unverified(&b) {
                        Ok(l) => d.licenses.push((&l).into()),
                        Err(e) => d.error = Some(format!("unreadable license: {e}")),
                    }
                }
            }
            Err(e) => d.error = Some(e.to_string()),
        }
        out.push(d);
    }
    out
}

/// The dongles of `tessera list`, as text.
fn print_dongles(dongles: &[tessera::view::DongleView]) {
    if dongles.is_empty() {
        println!("no dongles attached");
    }
    for d in dongles {
        let Some(serial) = &d.serial else {
            println!(
                "dongle at {}: {}",
                d.endpoint,
                d.error.as_deref().unwrap_or("-")
            );
            continue;
        };
        println!(
            "dongle:       {serial} ({} mode)",
            d.mode.as_deref().unwrap_or("-")
        );
        println!(
            "vendor:       {}",
            match d.vendor_id {
                Some(0) | None => "none (blank)".to_string(),
                Some(v) => publisher::vendor_hex(v),
            }
        );
        if let (Some(shared), Some(t)) = (d.shared, d.clock_high_water) {
            println!(
                "exclusive:    {}",
                if shared {
                    "NO: used by several hosts, locked out"
                } else {
                    "yes"
                }
            );
            println!("clock high-water: {}", format_time(t));
        }
        println!("licenses:     {}", d.licenses.len());
        for l in &d.licenses {
            println!("{}", l.text);
        }
        if let Some(e) = &d.error {
            println!("  {e}");
        }
    }
}

/// The pool part of `tessera admin status`: members (which are up), the etcd endpoints and
/// their health.
fn print_pool(p: &serde_json::Value) {
    use serde_json::Value;
    let list = |k: &str| {
        p.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (members, endpoints) = (list("members"), list("endpoints"));
    println!(
        "pool:         member {} of the pool at {} ({} seats served here)",
        field(p, "member"),
        field(p, "prefix"),
        n("seats_served")
    );
    println!("members:      {} of {} up", n("members_up"), members.len());
    for m in &members {
        let up = m.get("up").and_then(Value::as_bool).unwrap_or(false);
        let this = m.get("this").and_then(Value::as_bool).unwrap_or(false);
        let listen: Vec<String> = m
            .get("listen")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(|x| x.as_str()).map(clean).collect())
            .unwrap_or_default();
        println!(
            "  {:<4} {}{}  {}  version {}, since {}",
            if up { "up" } else { "DOWN" },
            field(m, "name"),
            if this { " (this one)" } else { "" },
            listen.join(", "),
            field(m, "version"),
            time_field(m, "started_at")
        );
    }
    println!(
        "etcd:         {} of {} endpoints healthy",
        n("endpoints_healthy"),
        endpoints.len()
    );
    for e in &endpoints {
        let healthy = e.get("healthy").and_then(Value::as_bool).unwrap_or(false);
        let leader = e.get("leader").and_then(Value::as_bool).unwrap_or(false);
        let detail = if healthy {
            format!(
                "etcd {}, member {}{}, database {:.1} MiB, {:.1} ms",
                field(e, "version"),
                field(e, "member_id"),
                if leader { ", leader" } else { "" },
                e.get("db_size").and_then(Value::as_f64).unwrap_or(0.0) / 1048576.0,
                e.get("round_trip_ms")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0)
            )
        } else {
            field(e, "error")
        };
        println!(
            "  {:<4} {}  {}",
            if healthy { "ok" } else { "DOWN" },
            field(e, "endpoint"),
            detail
        );
    }
    if let Some(err) = p.get("error").and_then(Value::as_str) {
        println!("  pool keys not read at the last look: {}", clean(err));
    }
}
