//! `tessera-vendor`: the publisher's tool. Makes the publisher key, answers activation
//! requests with signed activations, shows what is in any Tessera file, and encrypts and
//! decrypts files with a product's key.
//!
//! Thin by design: every step is a call into the `tessera` library; this file parses
//! arguments and prints.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use ed25519_dalek::VerifyingKey;

use tessera::cipher::{self, Header, Mode};
use tessera::container::{Activation, ActivationRequest, ContainerCertificate, SoftwareContainer};
use tessera::license::usage::UsageStatement;
use tessera::license::{CountingUnit, Envelope, Kind, License, VmPolicy};
use tessera::publisher::{self, DEMO_VENDOR_ID, LicenseSpec, PublisherKey, vendor_hex};
use tessera::util::{self, format_time};
use tessera::view::LicenseView;

/// The publisher's tool: keys, activations, file inspection and file encryption.
#[derive(Parser, Debug)]
#[command(name = "tessera-vendor", version, about, long_about = None)]
struct Cli {
    /// Print the data as JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a publisher key file (private, mode 0600) and its public key file beside it.
    Keygen(KeygenArgs),
    /// First activation: answer a customer's activation request with a signed activation
    /// (container certificate, license, sealed product secret).
    Activate(IssueArgs),
    /// Add a license to an already-activated container: answer a new activation request
    /// from it. The result is the same kind of document as `activate`; installing it keeps
    /// the licenses the container already holds.
    Issue(IssueArgs),
    /// Activate a license-server pool: answer each member machine's activation request
    /// (`tessera activate request` on each member) with one activation per member, all
    /// carrying the same license (one license id, one quantity) bound to the pool and its
    /// member list. Written as `<out-dir>/<serial>.act`; install each on its member.
    ActivatePool(PoolArgs),
    /// Say what a Tessera file is and what it holds (license, activation request,
    /// activation, certificate, software container, ciphertext, publisher key). With
    /// --publisher-key, also check signatures; exits 1 when one does not verify.
    Inspect(InspectArgs),
    /// Encrypt a file with a product's key (any machine licensed for the product decrypts it).
    EncryptFile(EncryptArgs),
    /// Decrypt a Tessera ciphertext with the product key it names.
    DecryptFile(DecryptArgs),
    /// Program a dongle: certify it for this publisher and write a license (and its sealed
    /// product secret) into it over its secure channel. Licenses it holds are kept.
    Program(ProgramArgs),
    /// Check a license server's usage log (`<state_dir>/usage/<vendor>.log`) against the
    /// publisher key: the hash chain from its first record and every checkpoint's container
    /// signature and certificate; then print what it holds per product and month. Exits 1,
    /// naming the first bad record (sequence number and byte offset), when anything fails.
    /// Given the logs of all members of a license-server pool, checks each and sums them,
    /// a seat re-attached from one member to another counted once.
    VerifyUsage(VerifyUsageArgs),
}

#[derive(Args, Debug)]
struct VerifyUsageArgs {
    /// The publisher's public key file (`tessera-publisher <vendor> <hex>`, as keygen writes
    /// it) or the publisher key file itself.
    #[arg(long, visible_aliases = ["publisher-key", "vendor-key"])]
    key: PathBuf,
    /// The same server's previous report: checked too, and this log must go on from it
    /// (each container's signature numbers on from where they ended there).
    #[arg(long, value_name = "PREVIOUS_LOG")]
    after: Option<PathBuf>,
    /// The usage log; for a license-server pool, the logs of all its members (each is
    /// checked on its own, then they are summed per product and month, a seat re-attached
    /// from one member to another counted once).
    #[arg(required = true, num_args = 1..)]
    log: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct ProgramArgs {
    /// The publisher key file.
    #[arg(long)]
    key: PathBuf,
    /// The dongle: its serial, report socket or volume mount point (default: the only one attached).
    #[arg(long)]
    dongle: Option<String>,
    /// How long to wait for the dongle, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(flatten)]
    spec: SpecArgs,
}

#[derive(Args, Debug)]
struct KeygenArgs {
    /// The publisher's vendor id (decimal or 0x hex; not 0).
    #[arg(long, value_parser = publisher::vendor_id_arg, required_unless_present = "demo", conflicts_with = "demo")]
    vendor_id: Option<u32>,
    /// The publisher's name.
    #[arg(long, required_unless_present = "demo", conflicts_with = "demo")]
    name: Option<String>,
    /// Write the built-in demo key instead. It is public knowledge and protects nothing.
    #[arg(long)]
    demo: bool,
    /// The private key file to write; the public key goes beside it with extension `.pub`.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite an existing key file.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct IssueArgs {
    /// The publisher key file.
    #[arg(long)]
    key: PathBuf,
    /// The activation request the customer sent.
    #[arg(long)]
    request: PathBuf,
    /// Where to write the activation.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    spec: SpecArgs,
}

#[derive(Args, Debug)]
struct PoolArgs {
    /// The publisher key file.
    #[arg(long)]
    key: PathBuf,
    /// The pool's name (letters, digits, `.`, `_`, `-`; its etcd keys live under
    /// `/tessera/<name>/` by default).
    #[arg(long)]
    pool: String,
    /// One member's activation request; give it once per member (a majority of the members
    /// must be registered in the pool's etcd cluster for any member to grant seats).
    #[arg(long = "request", required = true)]
    requests: Vec<PathBuf>,
    /// The folder the activations are written to, one `<serial>.act` per member.
    #[arg(long)]
    out_dir: PathBuf,
    #[command(flatten)]
    spec: SpecArgs,
}

/// One license.
#[derive(Args, Debug)]
struct SpecArgs {
    /// The product code (decimal or 0x hex).
    #[arg(long, value_parser = util::u32_arg)]
    product: u32,
    /// The product name shown to people (default "Product N").
    #[arg(long)]
    name: Option<String>,
    /// Feature bits (decimal or 0x hex).
    #[arg(long, value_parser = util::u32_arg, default_value = "0xFFFFFFFF")]
    features: u32,
    /// Number of seats.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = 1)]
    quantity: u32,
    /// What one seat covers: station, session, process or handle.
    #[arg(long, value_parser = parse_unit, default_value = "station")]
    unit: CountingUnit,
    /// Allow an app to take the license exclusively.
    #[arg(long)]
    exclusive: bool,
    /// Expiry date (YYYY-MM-DD, midnight UTC). Default: perpetual.
    #[arg(long, conflicts_with = "days")]
    expires: Option<String>,
    /// Expire this many days from now. Default: perpetual.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    days: Option<u64>,
    /// Refuse use on virtual machines.
    #[arg(long)]
    deny_vm: bool,
    /// Let a user borrow a seat from a license server for up to this many days (0: not
    /// borrowable).
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=tessera::license::MAX_BORROW_DAYS as i64), default_value_t = 0)]
    borrow_days: u16,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// The file to inspect.
    file: PathBuf,
    /// The publisher's public key file (`tessera-publisher <vendor> <hex>`): check signatures.
    #[arg(long)]
    publisher_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct EncryptArgs {
    /// The publisher key file.
    #[arg(long)]
    key: PathBuf,
    /// The product whose key encrypts (decimal or 0x hex).
    #[arg(long, value_parser = util::u32_arg)]
    product: u32,
    /// Mark the ciphertext as made in direct mode (default: derived mode).
    #[arg(long)]
    direct: bool,
    /// The plaintext file.
    input: PathBuf,
    /// The ciphertext file to write.
    output: PathBuf,
}

#[derive(Args, Debug)]
struct DecryptArgs {
    /// The publisher key file.
    #[arg(long)]
    key: PathBuf,
    /// The ciphertext file.
    input: PathBuf,
    /// The plaintext file to write.
    output: PathBuf,
}

fn parse_unit(s: &str) -> std::result::Result<CountingUnit, String> {
    CountingUnit::parse(s)
        .ok_or_else(|| format!("`{s}` is not a counting unit (station, session, process, handle)"))
}

fn main() -> ExitCode {
    util::die_on_sigpipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-vendor: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Keygen(a) => keygen(a, json),
        Command::Activate(a) | Command::Issue(a) => activate(a, json),
        Command::ActivatePool(a) => activate_pool(a, json),
        Command::Inspect(a) => inspect(a, json),
        Command::EncryptFile(a) => encrypt_file(a, json),
        Command::DecryptFile(a) => decrypt_file(a, json),
        Command::Program(a) => program(a, json),
        Command::VerifyUsage(a) => verify_usage(a, json),
    }
}

/// Prints `value` as JSON (`--json`).
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Writes `data` atomically. The path is made absolute first, so a bare file name writes
/// into the current directory.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let abs = std::path::absolute(path)
        .with_context(|| format!("cannot resolve the path {}", path.display()))?;
    util::write_atomic(&abs, data, mode).with_context(|| format!("writing {}", path.display()))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

fn load_key(path: &Path) -> Result<PublisherKey> {
    PublisherKey::load(path)
        .with_context(|| format!("loading the publisher key {}", path.display()))
}

fn load_public_key(path: &Path) -> Result<(Option<u32>, VerifyingKey)> {
    let bytes = read_file(path, "public key file")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("{} is not a text public key file", path.display()))?;
    publisher::parse_public_key(&text).with_context(|| format!("reading {}", path.display()))
}

/// The public key file beside `key_path`: same name with extension `.pub`.
fn public_key_path(key_path: &Path) -> PathBuf {
    let p = key_path.with_extension("pub");
    if p == key_path {
        let mut s = key_path.as_os_str().to_owned();
        s.push(".pub");
        PathBuf::from(s)
    } else {
        p
    }
}

fn c_array(key: &[u8; 32]) -> String {
    let mut s = String::from("static const uint8_t PUBLISHER_KEY[32] = {\n");
    for chunk in key.chunks(8) {
        let line: Vec<String> = chunk.iter().map(|b| format!("0x{b:02x}")).collect();
        s.push_str("    ");
        s.push_str(&line.join(", "));
        s.push_str(",\n");
    }
    s.push_str("};");
    s
}

fn keygen(a: KeygenArgs, json: bool) -> Result<()> {
    if a.out.exists() && !a.force {
        bail!(
            "{} already exists; refusing to overwrite a publisher key (use --force)",
            a.out.display()
        );
    }
    let key = if a.demo {
        eprintln!(
            "tessera-vendor: WARNING: the demo publisher key is PUBLIC and INSECURE. Anyone can \
             issue licenses with it. Use it for examples only, never in a product."
        );
        PublisherKey::demo()
    } else {
        let vendor = a.vendor_id.context("--vendor-id is required")?;
        let name = a.name.context("--name is required")?;
        PublisherKey::generate(vendor, &name)
    };
    let abs = std::path::absolute(&a.out)
        .with_context(|| format!("cannot resolve the path {}", a.out.display()))?;
    key.save(&abs)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let pub_path = public_key_path(&a.out);
    write_file(&pub_path, key.public_key_text().as_bytes(), 0o644)?;
    if json {
        return print_json(&serde_json::json!({
            "vendor_id": key.vendor_id,
            "name": key.name,
            "key_file": a.out.display().to_string(),
            "public_key_file": pub_path.display().to_string(),
            "public_key": hex::encode(key.public_key().to_bytes()),
            "demo": a.demo,
        }));
    }
    println!(
        "publisher key of vendor {} ({}) written to {} (mode 0600: keep it secret, back it up)",
        vendor_hex(key.vendor_id),
        key.name,
        a.out.display()
    );
    println!("public key written to {}", pub_path.display());
    if key.vendor_id == DEMO_VENDOR_ID && a.demo {
        println!("WARNING: this is the demo key; it is public and protects nothing");
    }
    println!();
    println!(
        "/* Embed in the protected app: the publisher public key of vendor {}. */",
        vendor_hex(key.vendor_id)
    );
    println!("{}", c_array(&key.public_key().to_bytes()));
    Ok(())
}

fn spec_from(s: &SpecArgs, now: u64) -> Result<LicenseSpec> {
    let expiry = match (&s.expires, s.days) {
        (Some(d), _) => {
            let t = util::parse_date(d).map_err(|e| anyhow!("--expires {e}"))?;
            if t <= now {
                bail!("--expires {d} is in the past");
            }
            Some(t)
        }
        (None, Some(days)) => Some(now + days * 86_400),
        (None, None) => None,
    };
    Ok(LicenseSpec {
        product_code: s.product,
        product_name: s
            .name
            .clone()
            .unwrap_or_else(|| format!("Product {}", s.product)),
        features: s.features,
        quantity: s.quantity,
        counting_unit: s.unit,
        exclusive_allowed: s.exclusive,
        borrow_days: s.borrow_days,
        expiry,
        vm_policy: if s.deny_vm {
            VmPolicy::Deny
        } else {
            VmPolicy::Allow
        },
    })
}

fn activate(a: IssueArgs, json: bool) -> Result<()> {
    let key = load_key(&a.key)?;
    let request = read_file(&a.request, "activation request")?;
    let req = key
        .read_request(&request)
        .with_context(|| format!("reading the activation request {}", a.request.display()))?;
    let now = util::now();
    let spec = spec_from(&a.spec, now)?;
    let act = key
        .activate(&request, &[spec], now)
        .context("making the activation")?;
    write_file(&a.out, &act, 0o644)?;
    let licenses = activation_licenses(&act)?;
    if json {
        return print_json(&serde_json::json!({
            "container": req.serial,
            "host": req.hostname,
            "vendor_id": key.vendor_id,
            "activation": a.out.display().to_string(),
            "licenses": licenses.iter().map(LicenseView::from).collect::<Vec<_>>(),
        }));
    }
    println!(
        "activation for container {} (host {}) of vendor {} written to {}",
        req.serial,
        if req.hostname.is_empty() {
            "unknown"
        } else {
            &req.hostname
        },
        vendor_hex(key.vendor_id),
        a.out.display()
    );
    for lic in &licenses {
        println!("{lic}");
    }
    Ok(())
}

/// The licenses an activation carries.
fn activation_licenses(act: &[u8]) -> Result<Vec<License>> {
    let doc: Activation = Envelope::parse(Kind::Activation, act)?.decode()?;
    doc.licenses
        .iter()
        .map(|lb| Ok(License::decode(&Envelope::parse(Kind::License, lb)?)?))
        .collect()
}

fn activate_pool(a: PoolArgs, json: bool) -> Result<()> {
    let key = load_key(&a.key)?;
    let requests = a
        .requests
        .iter()
        .map(|p| read_file(p, "activation request"))
        .collect::<Result<Vec<_>>>()?;
    let now = util::now();
    let spec = spec_from(&a.spec, now)?;
    let acts = key
        .activate_pool(&a.pool, &requests, &[spec], now)
        .context("making the pool activation")?;
    fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("cannot create {}", a.out_dir.display()))?;
    let mut written = Vec::new();
    for (serial, act) in &acts {
        let out = a.out_dir.join(format!("{serial}.act"));
        write_file(&out, act, 0o644)?;
        written.push(serde_json::json!({
            "member": serial,
            "activation": out.display().to_string(),
        }));
    }
    let licenses = match acts.first() {
        Some((_, act)) => activation_licenses(act)?,
        None => Vec::new(),
    };
    if json {
        return print_json(&serde_json::json!({
            "pool": a.pool,
            "vendor_id": key.vendor_id,
            "members": written,
            "majority": acts.len() / 2 + 1,
            "licenses": licenses.iter().map(LicenseView::from).collect::<Vec<_>>(),
        }));
    }
    for w in &written {
        println!(
            "activation for member {} written to {}",
            w["member"].as_str().unwrap_or_default(),
            w["activation"].as_str().unwrap_or_default()
        );
    }
    println!(
        "pool {} of {} member(s): seats are granted while at least {} are registered",
        a.pool,
        acts.len(),
        acts.len() / 2 + 1
    );
    for lic in &licenses {
        println!("{lic}");
    }
    Ok(())
}

/// What `inspect` finds: printed as it goes (text), or gathered into one JSON object
/// (`--json`): the facts by key, the licenses, and each signature check.
struct Inspection {
    json: bool,
    facts: serde_json::Map<String, serde_json::Value>,
    licenses: Vec<LicenseView>,
    signatures: Vec<serde_json::Value>,
    failed: usize,
}

impl Inspection {
    fn new(json: bool) -> Inspection {
        Inspection {
            json,
            facts: serde_json::Map::new(),
            licenses: Vec::new(),
            signatures: Vec::new(),
            failed: 0,
        }
    }

    /// One fact: `label: text` in the text output, `key: value` in the JSON.
    fn fact(
        &mut self,
        label: &str,
        key: &str,
        text: impl std::fmt::Display,
        value: impl Into<serde_json::Value>,
    ) {
        if self.json {
            self.facts.insert(key.to_string(), value.into());
        } else {
            println!("  {:<12} {text}", format!("{label}:"));
        }
    }

    /// A fact whose text is its value.
    fn text(&mut self, label: &str, key: &str, text: impl std::fmt::Display) {
        let t = text.to_string();
        self.fact(label, key, &t, t.clone());
    }

    /// A fact of the JSON only (the text says it in its own words).
    fn data(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        if self.json {
            self.facts.insert(key.to_string(), value.into());
        }
    }

    /// A line of the text output only (its facts are in the JSON under their own keys).
    fn note(&mut self, line: impl std::fmt::Display) {
        if !self.json {
            println!("{line}");
        }
    }

    fn license(&mut self, l: &License) {
        if self.json {
            self.licenses.push(l.into());
        } else {
            println!("{l}");
        }
    }

    /// A signature verdict; a failure is remembered.
    fn report(&mut self, what: &str, ok: bool) {
        if !ok {
            self.failed += 1;
        }
        if self.json {
            self.signatures
                .push(serde_json::json!({ "what": what, "valid": ok }));
        } else if ok {
            println!("  signature:   valid ({what})");
        } else {
            println!("  signature:   INVALID ({what})");
        }
    }

    /// A time fact: its text, and Unix seconds in the JSON.
    fn time(&mut self, label: &str, key: &str, t: u64) {
        self.fact(label, key, format_time(t), t);
    }

    /// The vendor fact: hex in the text, a number in the JSON.
    fn vendor(&mut self, v: u32) {
        self.fact("vendor", "vendor_id", vendor_hex(v), v);
    }
}

fn inspect(a: InspectArgs, json: bool) -> Result<()> {
    let bytes = read_file(&a.file, "file")?;
    let pk = a
        .publisher_key
        .as_deref()
        .map(load_public_key)
        .transpose()?;
    let key = pk.as_ref().map(|(_, k)| k);
    let mut v = Inspection::new(json);
    let name = a.file.display();
    let kind_name: &str;
    if let Some(kind) = Kind::sniff(&bytes) {
        let env = Envelope::parse(kind, &bytes).with_context(|| format!("reading {name}"))?;
        kind_name = kind.name();
        v.note(format!("{name}: {kind_name}"));
        match kind {
            Kind::License => {
                let lic = License::decode(&env).with_context(|| format!("reading {name}"))?;
                v.license(&lic);
                if let Some(k) = key {
                    v.report("license, publisher key", env.verify(k).is_ok());
                }
            }
            Kind::ActivationRequest => {
                let req: ActivationRequest =
                    env.decode().with_context(|| format!("reading {name}"))?;
                if json {
                    v.vendor(req.vendor_id);
                    v.text("container", "container", &req.serial);
                    v.text("host", "host", &req.hostname);
                    v.time("created", "created_at", req.created_at);
                } else {
                    println!("{req}");
                }
                let ok =
                    VerifyingKey::from_bytes(&req.sign_key).is_ok_and(|ck| env.verify(&ck).is_ok());
                v.report("self-signed by the container key", ok);
            }
            Kind::Activation => {
                let act: Activation = env.decode().with_context(|| format!("reading {name}"))?;
                print_activation(&act, key, &mut v);
                if let Some(k) = key {
                    v.report("activation, publisher key", env.verify(k).is_ok());
                }
            }
            Kind::Delegation => {
                let d: tessera::net::proto::Delegation =
                    env.decode().with_context(|| format!("reading {name}"))?;
                v.vendor(d.vendor_id);
                v.fact(
                    "container",
                    "container",
                    format!("{} (key {})", d.serial, hex_prefix(&d.container_key)),
                    d.serial.clone(),
                );
                v.fact(
                    "server key",
                    "server_key",
                    hex_prefix(&d.server_key),
                    hex::encode(d.server_key),
                );
                v.time("issued", "issued_at", d.issued_at);
                v.time("expires", "expiry", d.expiry);
                let ok = VerifyingKey::from_bytes(&d.container_key)
                    .is_ok_and(|ck| env.verify(&ck).is_ok());
                v.report("signed by the container key", ok);
            }
            Kind::Borrow => {
                let g: tessera::license::BorrowGrant =
                    env.decode().with_context(|| format!("reading {name}"))?;
                if json {
                    v.text("seat", "seat_id", hex::encode(g.seat_id));
                    v.time("from", "issued_at", g.issued_at);
                    v.time("until", "until", g.until);
                } else {
                    println!("{g}");
                }
                // Signed by the lending container, whose key the grant does not carry.
                v.note(
                    "  signature:   not checked here (the borrowing runtime checks it against the lender's certificate)",
                );
            }
            Kind::PoolMember => {
                let r: tessera::license::PoolRegistration =
                    env.decode().with_context(|| format!("reading {name}"))?;
                v.text("pool", "pool", &r.pool);
                v.text("license", "license_id", hex::encode(r.license_id));
                v.fact(
                    "container",
                    "container",
                    format!("{} (key {})", r.serial, hex_prefix(&r.container_key)),
                    r.serial.clone(),
                );
                v.fact(
                    "server key",
                    "server_key",
                    hex_prefix(&r.server_key),
                    hex::encode(r.server_key),
                );
                v.fact(
                    "etcd",
                    "cluster_id",
                    format!("cluster {:x}", r.cluster_id),
                    r.cluster_id,
                );
                v.time("signed", "signed_at", r.signed_at);
                let ok = VerifyingKey::from_bytes(&r.container_key)
                    .is_ok_and(|ck| env.verify(&ck).is_ok());
                v.report("signed by the container key", ok);
            }
            Kind::UsageCheckpoint => {
                let st: UsageStatement = env.decode().with_context(|| format!("reading {name}"))?;
                v.vendor(st.vendor_id);
                v.fact(
                    "container",
                    "container",
                    format!("{} (key {})", st.serial, hex_prefix(&st.container_key)),
                    st.serial.clone(),
                );
                v.text("digest", "digest", hex::encode(st.digest));
                v.time("signed", "signed_at", st.signed_at);
                let ok = VerifyingKey::from_bytes(&st.container_key)
                    .is_ok_and(|ck| env.verify(&ck).is_ok());
                v.report("signed by the container key", ok);
            }
            Kind::Certificate => {
                let cert: ContainerCertificate =
                    env.decode().with_context(|| format!("reading {name}"))?;
                print_certificate(&cert, &mut v);
                if let Some(k) = key {
                    v.report("certificate, publisher key", env.verify(k).is_ok());
                }
            }
        }
    } else if bytes.starts_with(b"TSSC") {
        kind_name = "software container";
        v.note(format!("{name}: software container"));
        v.note(format!(
            "  sealed to the machine it was activated on; {} bytes",
            bytes.len()
        ));
        v.data("bytes", bytes.len());
        // This machine as the runtime sees it: its traits (through the mount guard) and its
        // TPM, so that a TPM-bound container opens here too.
        let host = tessera::host::HostIdentity::detect();
        match SoftwareContainer::load(&a.file, &host) {
            Ok(c) => {
                let st = c.engine.state();
                v.note("  opens on this machine");
                v.data("opens_here", true);
                v.fact(
                    "container",
                    "container",
                    format!("{} ({})", st.serial, st.kind),
                    st.serial.clone(),
                );
                v.vendor(st.vendor_id);
                v.time("created", "created_at", st.created_at);
                v.time("clock high-water", "clock_high_water", st.clock_high_water);
                v.fact(
                    "licenses",
                    "license_count",
                    c.engine.licenses().len(),
                    c.engine.licenses().len(),
                );
                for lic in c.engine.licenses() {
                    v.license(lic);
                }
                if let Some(k) = key {
                    let good = c.engine.verified_licenses(k, st.vendor_id).len();
                    let all = c.engine.licenses().len();
                    v.report(
                        &format!("{good} of {all} licenses verify against the publisher key"),
                        good == all,
                    );
                }
            }
            // Another machine's container is a normal sight for the publisher's tool; a
            // damaged file is an error.
            Err(e @ tessera::Error::BindingMismatch(_)) => {
                v.note(format!("  does not open here: {e}"));
                v.data("opens_here", false);
                v.data("error", e.to_string());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        }
    } else if bytes.starts_with(&cipher::MAGIC) {
        let h = Header::parse(&bytes).with_context(|| format!("reading {name}"))?;
        kind_name = "ciphertext";
        v.note(format!("{name}: ciphertext"));
        match h.key_id() {
            Some(id) => v.fact(
                "format",
                "format",
                format!("2 (a network seat's, key id {})", hex::encode(id)),
                2,
            ),
            None => v.fact("format", "format", h.version, h.version),
        }
        v.text(
            "mode",
            "mode",
            match h.mode {
                Mode::Direct => "direct",
                Mode::Derived => "derived",
            },
        );
        v.vendor(h.vendor_id);
        v.fact("product", "product_code", h.product_code, h.product_code);
        v.fact(
            "length",
            "bytes",
            format!(
                "{} bytes ({} bytes of plaintext)",
                bytes.len(),
                cipher::plaintext_len(bytes.len())
            ),
            bytes.len(),
        );
    } else if bytes.starts_with(b"TSPk") {
        let k = PublisherKey::from_bytes(&bytes).with_context(|| format!("reading {name}"))?;
        kind_name = "publisher key";
        v.note(format!("{name}: publisher key (PRIVATE: keep it secret)"));
        v.vendor(k.vendor_id);
        v.text("name", "name", &k.name);
        v.text(
            "public key",
            "public_key",
            hex::encode(k.public_key().to_bytes()),
        );
        let demo =
            k.vendor_id == DEMO_VENDOR_ID && k.public_key() == PublisherKey::demo().public_key();
        if demo {
            v.note("  WARNING: this is the public demo key; it protects nothing");
        }
        v.data("demo", demo);
        if let Some(pk) = key {
            v.report("public key file matches this key", *pk == k.public_key());
        }
    } else if bytes.starts_with(b"tessera-publisher") {
        let text = String::from_utf8_lossy(&bytes);
        let (vendor, k) =
            publisher::parse_public_key(&text).with_context(|| format!("reading {name}"))?;
        kind_name = "publisher public key";
        v.note(format!("{name}: publisher public key"));
        if let Some(vendor) = vendor {
            v.vendor(vendor);
        }
        v.text("public key", "public_key", hex::encode(k.to_bytes()));
    } else {
        bail!(
            "{name} is not a Tessera file (unknown magic {})",
            hex::encode(&bytes[..bytes.len().min(4)])
        );
    }
    if json {
        let mut out = serde_json::Map::new();
        out.insert("file".into(), name.to_string().into());
        out.insert("kind".into(), kind_name.into());
        out.extend(std::mem::take(&mut v.facts));
        out.insert("licenses".into(), serde_json::to_value(&v.licenses)?);
        out.insert(
            "signatures".into(),
            serde_json::Value::Array(std::mem::take(&mut v.signatures)),
        );
        out.insert("signatures_valid".into(), (v.failed == 0).into());
        print_json(&out)?;
    }
    if v.failed > 0 {
        bail!(
            "{} signature check(s) failed: {name} is not signed by the given publisher key",
            v.failed
        );
    }
    Ok(())
}

fn print_certificate(cert: &ContainerCertificate, v: &mut Inspection) {
    v.vendor(cert.vendor_id);
    v.fact(
        "container",
        "container",
        format!("{} ({})", cert.serial, cert.kind),
        cert.serial.clone(),
    );
    v.text("sign key", "sign_key", hex::encode(cert.sign_key));
    v.text("seal key", "seal_key", hex::encode(cert.seal_key));
    v.time("issued", "issued_at", cert.issued_at);
    match cert.expiry {
        Some(t) => v.time("expires", "expiry", t),
        None => v.fact("expires", "expiry", "never", serde_json::Value::Null),
    }
}

fn print_activation(act: &Activation, key: Option<&VerifyingKey>, v: &mut Inspection) {
    v.vendor(act.vendor_id);
    v.text(
        "publisher key",
        "publisher_key",
        hex::encode(act.publisher_key),
    );
    v.text("container", "container", &act.serial);
    v.time("issued", "issued_at", act.issued_at);
    match Envelope::parse(Kind::Certificate, &act.certificate) {
        Ok(env) => {
            match env.decode::<ContainerCertificate>() {
                Ok(c) => v.fact(
                    "certificate",
                    "certificate",
                    format!(
                        "container {} ({}), issued {}",
                        c.serial,
                        c.kind,
                        format_time(c.issued_at)
                    ),
                    serde_json::json!({
                        "container": c.serial,
                        "kind": c.kind.to_string(),
                        "issued_at": c.issued_at,
                    }),
                ),
                Err(e) => v.fact(
                    "certificate",
                    "certificate_error",
                    format!("unreadable: {e}"),
                    e.to_string(),
                ),
            }
            if let Some(k) = key {
                v.report("certificate, publisher key", env.verify(k).is_ok());
            }
        }
        Err(e) => {
            v.fact(
                "certificate",
                "certificate_error",
                format!("unreadable: {e}"),
                e.to_string(),
            );
            if key.is_some() {
                v.report("certificate, publisher key", false);
            }
        }
    }
    v.fact(
        "licenses",
        "license_count",
        act.licenses.len(),
        act.licenses.len(),
    );
    for lb in &act.licenses {
        match Envelope::parse(Kind::License, lb) {
            Ok(env) => {
                match License::decode(&env) {
                    Ok(l) => v.license(&l),
                    Err(e) => v.note(format!("license: unreadable: {e}")),
                }
                if let Some(k) = key {
                    v.report("license, publisher key", env.verify(k).is_ok());
                }
            }
            Err(e) => {
                v.note(format!("license: unreadable: {e}"));
                if key.is_some() {
                    v.report("license, publisher key", false);
                }
            }
        }
    }
    v.fact(
        "sealed product secrets",
        "sealed_secrets",
        act.secrets.len(),
        act.secrets.len(),
    );
}

fn encrypt_file(a: EncryptArgs, json: bool) -> Result<()> {
    let key = load_key(&a.key)?;
    let data = read_file(&a.input, "plaintext")?;
    let mode = if a.direct {
        Mode::Direct
    } else {
        Mode::Derived
    };
    let header = Header::new(mode, key.vendor_id, a.product);
    let ct =
        cipher::encrypt(&key.product_secret(a.product), &header, &data).context("encrypting")?;
    write_file(&a.output, &ct, 0o644)?;
    if json {
        return print_json(&serde_json::json!({
            "vendor_id": key.vendor_id,
            "product_code": a.product,
            "mode": if a.direct { "direct" } else { "derived" },
            "plaintext_bytes": data.len(),
            "ciphertext_bytes": ct.len(),
            "output": a.output.display().to_string(),
        }));
    }
    println!(
        "encrypted {} bytes for vendor {} product {} into {} ({} bytes)",
        data.len(),
        vendor_hex(key.vendor_id),
        a.product,
        a.output.display(),
        ct.len()
    );
    Ok(())
}

fn decrypt_file(a: DecryptArgs, json: bool) -> Result<()> {
    let key = load_key(&a.key)?;
    let ct = read_file(&a.input, "ciphertext")?;
    let header = Header::parse(&ct).with_context(|| format!("reading {}", a.input.display()))?;
    if header.vendor_id != key.vendor_id {
        bail!(
            "{} is encrypted for vendor {}, but {} is the key of vendor {}",
            a.input.display(),
            vendor_hex(header.vendor_id),
            a.key.display(),
            vendor_hex(key.vendor_id)
        );
    }
    let pt = cipher::decrypt(&key.product_secret(header.product_code), &ct)
        .with_context(|| format!("decrypting {}", a.input.display()))?;
    write_file(&a.output, &pt, 0o644)?;
    if json {
        return print_json(&serde_json::json!({
            "vendor_id": header.vendor_id,
            "product_code": header.product_code,
            "plaintext_bytes": pt.len(),
            "output": a.output.display().to_string(),
        }));
    }
    println!(
        "decrypted {} bytes of product {} into {}",
        pt.len(),
        header.product_code,
        a.output.display()
    );
    Ok(())
}

fn program(a: ProgramArgs, json: bool) -> Result<()> {
    let key = load_key(&a.key)?;
    let spec = spec_from(&a.spec, util::now())?;
    let timeout = std::time::Duration::from_millis(a.timeout_ms);
    let mut conn = tessera::dongle::program::find(a.dongle.as_deref(), timeout)
        .context("finding the dongle")?;
    let mode = conn.mode();
    let done = tessera::dongle::program::program(&key, &mut conn, &[spec])
        .context("programming the dongle")?;
    if json {
        return print_json(&serde_json::json!({
            "dongle": done.serial,
            "mode": mode.to_string(),
            "vendor_id": key.vendor_id,
            "added": done.added,
            "replaced": done.replaced,
        }));
    }
    println!(
        "dongle {} ({mode}) programmed for vendor {}: {} license(s) added, {} replaced",
        done.serial,
        vendor_hex(key.vendor_id),
        done.added,
        done.replaced
    );
    Ok(())
}

fn hex_prefix(k: &[u8; 32]) -> String {
    k.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A publisher key for checking: a public key file or the private key file.
fn load_any_public_key(path: &Path) -> Result<(Option<u32>, VerifyingKey)> {
    let bytes = read_file(path, "publisher key")?;
    if bytes.starts_with(b"TSPk") {
        let k = PublisherKey::from_bytes(&bytes)
            .with_context(|| format!("reading the publisher key {}", path.display()))?;
        return Ok((Some(k.vendor_id), k.public_key()));
    }
    load_public_key(path)
}

/// `verify-usage --json`: one product's month.
#[derive(serde::Serialize)]
struct MonthJson {
    product: u32,
    month: String,
    grants: u64,
    releases: u64,
    expiries: u64,
    denials: u64,
    revokes: u64,
    peak: u64,
    seat_hours: f64,
    borrows: u64,
    returns: u64,
    borrowed_hours: f64,
    seat_ms: u64,
    borrowed_ms: u64,
}

/// Hours to three decimals, as the JSON has always given them.
fn hours(h: f64) -> f64 {
    (h * 1000.0).round() / 1000.0
}

/// The months of a report or a pool's summary, as JSON.
fn months_json(
    months: &std::collections::BTreeMap<
        (u32, tessera::license::usage::MonthIndex),
        tessera::license::usage::MonthSummary,
    >,
) -> Vec<MonthJson> {
    months
        .iter()
        .map(|((p, m), s)| MonthJson {
            product: *p,
            month: tessera::license::usage::month_label(*m),
            grants: s.grants,
            releases: s.releases,
            expiries: s.expiries,
            denials: s.denials,
            revokes: s.revokes,
            peak: s.peak,
            seat_hours: hours(s.seat_hours()),
            borrows: s.borrows,
            returns: s.returns,
            borrowed_hours: hours(s.borrowed_hours()),
            seat_ms: s.seat_ms,
            borrowed_ms: s.borrowed_ms,
        })
        .collect()
}

/// `verify-usage --json`: one container's signature numbers in a log.
#[derive(serde::Serialize)]
struct SignatureNumbersJson {
    serial: String,
    first: u64,
    last: u64,
    anchor: &'static str,
}

/// `verify-usage --json`: whether a log goes on from the previous one (`--after`).
#[derive(serde::Serialize)]
struct FollowsJson {
    log: String,
    continuous: bool,
}

/// `verify-usage --json`: one verified log.
#[derive(serde::Serialize)]
struct LogJson {
    ok: bool,
    vendor_id: u32,
    server_key: String,
    records: u64,
    bytes: u64,
    starts: u64,
    cut_bytes: u64,
    checkpoints: u64,
    verified_records: u64,
    unverified_tail: u64,
    signers: Vec<String>,
    first_ms: u64,
    last_ms: u64,
    last_checkpoint_ms: Option<u64>,
    max_sign_lag_s: u64,
    open_at_end: u64,
    ends_without_grant: u64,
    signature_numbers: Vec<SignatureNumbersJson>,
    signatures_missing: u64,
    signature_rewinds: u64,
    unanchored_signers: Vec<String>,
    findings: Vec<String>,
    follows: Option<FollowsJson>,
    months: Vec<MonthJson>,
}

/// `verify-usage --json`: a log that does not verify.
#[derive(serde::Serialize)]
struct DamagedJson {
    ok: bool,
    error: String,
    seq: Option<u64>,
    offset: u64,
}

/// `verify-usage --json`: a pool's logs, each and summed.
#[derive(serde::Serialize)]
struct PoolJson {
    ok: bool,
    logs: Vec<LogJson>,
    pool: PoolSumJson,
}

/// The sums of a pool's logs.
#[derive(serde::Serialize)]
struct PoolSumJson {
    logs: usize,
    seats: u64,
    seats_in_several_logs: u64,
    open_at_end: u64,
    ends_without_grant: u64,
    months: Vec<MonthJson>,
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The JSON name of a signature counter's anchor.
fn anchor_name(a: tessera::license::usage::CounterAnchor) -> &'static str {
    use tessera::license::usage::CounterAnchor;
    match a {
        CounterAnchor::Unanchored => "unanchored",
        CounterAnchor::Tpm => "tpm",
        CounterAnchor::Dongle => "dongle",
    }
}

fn verify_usage(a: VerifyUsageArgs, json: bool) -> Result<()> {
    use tessera::license::usage;

    let (key_vendor, key) = load_any_public_key(&a.key)?;
    if let [log] = &a.log[..] {
        let (_, json) = verify_log(&a, json, log, key_vendor, &key)?;
        if let Some(json) = json {
            println!("{}", serde_json::to_string(&json)?);
        }
        return Ok(());
    }
    if a.after.is_some() {
        bail!(
            "--after goes with one log (the same server's previous one): check each member's \
             log against its previous one on its own"
        );
    }
    // A pool: every member's log checked on its own, then summed.
    let mut logs = Vec::new();
    let mut jsons = Vec::new();
    for log in &a.log {
        let (r, json) = verify_log(&a, json, log, key_vendor, &key)?;
        if let Some(json) = json {
            jsons.push(json);
        }
        let f = fs::File::open(log).with_context(|| format!("reading {}", log.display()))?;
        let spans = usage::seat_spans(std::io::BufReader::new(f), r.records)
            .map_err(|e| anyhow::anyhow!("{} changed while it was read: {e}", log.display()))?;
        logs.push((log.display().to_string(), r, spans));
    }
    for (i, (name, r, _)) in logs.iter().enumerate() {
        let (first, ..) = &logs[0];
        if r.vendor_id != logs[0].1.vendor_id {
            bail!(
                "{name} is the usage log of vendor {}, {first} of vendor {}: a pool's logs \
                 are one publisher's",
                vendor_hex(r.vendor_id),
                vendor_hex(logs[0].1.vendor_id)
            );
        }
        if let Some((other, ..)) = logs[..i]
            .iter()
            .find(|(_, o, _)| o.server_key == r.server_key && o.first_ms == r.first_ms)
        {
            bail!(
                "{name} and {other} are the same log (the same server began both at the same \
                 time): give each member's log once"
            );
        }
    }
    let reports: Vec<_> = logs.into_iter().map(|(_, r, s)| (r, s)).collect();
    let pool = usage::pool_summary(&reports);
    if json {
        let out = PoolJson {
            ok: true,
            logs: jsons,
            pool: PoolSumJson {
                logs: pool.logs,
                seats: pool.seats,
                seats_in_several_logs: pool.seats_in_several_logs,
                open_at_end: pool.open_at_end,
                ends_without_grant: pool.ends_without_grant,
                months: months_json(&pool.months),
            },
        };
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!();
    println!(
        "pool: {} summed; {} granted, {} of them in more than one log (re-attached to another \
         member, counted once)",
        plural(pool.logs as u64, "log"),
        plural(pool.seats, "seat"),
        pool.seats_in_several_logs
    );
    if pool.open_at_end > 0 {
        println!(
            "  seats held when the last of their logs ends: {}",
            pool.open_at_end
        );
    }
    if pool.ends_without_grant > 0 {
        println!(
            "  ends of seats granted before the logs began: {}",
            pool.ends_without_grant
        );
    }
    print_months(&pool.months);
    Ok(())
}

/// Checks one usage log and prints its report (text), or returns it as JSON (`--json`).
fn verify_log(
    a: &VerifyUsageArgs,
    json: bool,
    log: &Path,
    key_vendor: Option<u32>,
    key: &VerifyingKey,
) -> Result<(tessera::license::usage::Report, Option<LogJson>)> {
    use std::io::Read;
    use tessera::license::usage::{self, LogHeader, ScanError};

    let name = log.display();
    let file = fs::File::open(log).with_context(|| format!("reading the usage log {name}"))?;
    let mut head = Vec::new();
    (&file)
        .take(usage::HEADER_LEN as u64)
        .read_to_end(&mut head)?;
    if let (Some(kv), Ok(h)) = (key_vendor, LogHeader::parse(&head))
        && kv != h.vendor_id
    {
        bail!(
            "{name} is the usage log of vendor {}, but {} is the key of vendor {}",
            vendor_hex(h.vendor_id),
            a.key.display(),
            vendor_hex(kv)
        );
    }
    let reader = std::io::BufReader::new(
        fs::File::open(log).with_context(|| format!("reading the usage log {name}"))?,
    );
    let mut r = match usage::verify(reader, key) {
        Ok(r) => r,
        Err(ScanError::Io(e)) => return Err(e).with_context(|| format!("reading {name}")),
        Err(ScanError::Damaged(d)) => {
            if json {
                let out = DamagedJson {
                    ok: false,
                    error: d.to_string(),
                    seq: d.location().map(|(s, _)| s),
                    offset: d.location().map_or(0, |(_, o)| o),
                };
                println!("{}", serde_json::to_string(&out)?);
            }
            bail!("{name} does not verify: {d}");
        }
    };
    // The previous log given with --after, and whether this one goes on from it.
    let mut follows: Option<(String, bool)> = None;
    if let Some(prev) = &a.after {
        let f = fs::File::open(prev)
            .with_context(|| format!("reading the previous usage log {}", prev.display()))?;
        let p = usage::verify(std::io::BufReader::new(f), key).map_err(|e| match e {
            ScanError::Io(e) => anyhow::Error::from(e),
            ScanError::Damaged(d) => {
                anyhow::anyhow!("the previous log {} does not verify: {d}", prev.display())
            }
        })?;
        if p.vendor_id != r.vendor_id {
            bail!(
                "{} is the usage log of vendor {}, {name} of vendor {}",
                prev.display(),
                vendor_hex(p.vendor_id),
                vendor_hex(r.vendor_id)
            );
        }
        // A later copy of the same log (its first record the same) must begin with every
        // byte of the earlier one; another log (a new one begun) must go on with the
        // containers' signature numbers.
        let open = |p: &Path| {
            fs::File::open(p)
                .map(std::io::BufReader::new)
                .with_context(|| format!("reading {}", p.display()))
        };
        let gaps = match usage::first_difference(open(prev)?, open(log)?)? {
            None => Vec::new(),
            Some(at) if p.records > 0 && at >= p.first_record_end => vec![format!(
                "this copy of the log is not the earlier copy with records added: they differ \
                 from byte {at} on (records before it were changed, removed or cut)"
            )],
            Some(_) => usage::continuity(&p, &r),
        };
        follows = Some((prev.display().to_string(), gaps.is_empty()));
        r.findings.extend(
            gaps.into_iter()
                .map(|g| format!("after {}: {g}", prev.display())),
        );
    }
    let time = |ms: u64| format_time(ms / 1000);
    if json {
        let json = LogJson {
            ok: true,
            vendor_id: r.vendor_id,
            server_key: hex::encode(r.server_key),
            records: r.records,
            bytes: r.bytes,
            starts: r.starts,
            cut_bytes: r.cut_bytes,
            checkpoints: r.checkpoints,
            verified_records: r.verified,
            unverified_tail: r.unverified_tail,
            signers: r.signers.clone(),
            first_ms: r.first_ms,
            last_ms: r.last_ms,
            last_checkpoint_ms: r.last_checkpoint_ms,
            max_sign_lag_s: r.max_sign_lag_s,
            open_at_end: r.open_at_end,
            ends_without_grant: r.ends_without_grant,
            signature_numbers: r
                .signature_numbers
                .iter()
                .map(|(serial, (first, last))| SignatureNumbersJson {
                    serial: serial.clone(),
                    first: *first,
                    last: *last,
                    anchor: anchor_name(r.anchor_of(serial)),
                })
                .collect(),
            signatures_missing: r.signatures_missing,
            signature_rewinds: r.signature_rewinds,
            unanchored_signers: r
                .unanchored_signers()
                .into_iter()
                .map(str::to_string)
                .collect(),
            findings: r.findings.clone(),
            follows: follows.map(|(log, continuous)| FollowsJson { log, continuous }),
            months: months_json(&r.months),
        };
        return Ok((r, Some(json)));
    }
    println!(
        "{name}: usage log of vendor {}, {}, {} bytes",
        vendor_hex(r.vendor_id),
        plural(r.records, "record"),
        r.bytes
    );
    if r.records > 0 {
        println!(
            "  began:        {} by server key {} ({})",
            time(r.first_ms),
            hex_prefix(&r.server_key),
            plural(r.starts, "server start")
        );
        println!(
            "  chain:        intact from the header to record {} ({})",
            r.records - 1,
            time(r.last_ms)
        );
    }
    if r.cut_bytes > 0 {
        println!(
            "  torn records: {} cut by a restarting server (a server killed while writing)",
            plural(r.cut_bytes, "byte")
        );
    }
    match r.last_checkpoint_ms {
        Some(t) => {
            println!(
                "  checkpoints:  {}, signed by {} of vendor {} ({}); records 0 to {} verified; the last at {}",
                r.checkpoints,
                if r.signers.len() == 1 {
                    "a container"
                } else {
                    "containers"
                },
                vendor_hex(r.vendor_id),
                r.signers.join(", "),
                r.verified.saturating_sub(1),
                time(t)
            );
            println!(
                "  signing lag:  at most {} s between a checkpoint's last record and its signature",
                r.max_sign_lag_s
            );
            for (serial, (first, last)) in &r.signature_numbers {
                println!(
                    "  signatures:   {serial} numbered {first} to {last} here (the next log \
                     should go on from {}), {}",
                    last + 1,
                    r.anchor_of(serial).describe()
                );
            }
            for serial in r.unanchored_signers() {
                println!(
                    "  UNANCHORED:   {serial}'s signature numbers are kept only in the \
                     container's file: the customer can put back an earlier copy and sign a \
                     rewritten period with the same numbers, so numbers that run on (here or \
                     with --after) prove nothing; only a TPM-bound container or a dongle \
                     anchors them"
                );
            }
        }
        None => {
            println!("  checkpoints:  none: no container of this publisher signed for any record")
        }
    }
    if let Some((prev, ok)) = &follows {
        if *ok {
            println!(
                "  follows:      {prev}: this log goes on from it (the same log grown, or each \
                 container's signatures numbered on)"
            );
        } else {
            println!("  follows:      {prev}: NOT without a gap or an overlap (below)");
        }
    }
    for f in &r.findings {
        println!("  ASK ABOUT:    {f}");
    }
    if r.unverified_tail > 0 {
        println!(
            "  UNVERIFIED TAIL ({}): after the last checkpoint; chained, but nothing signed \
             commits to them yet",
            plural(r.unverified_tail, "record")
        );
    } else {
        println!("  unverified tail: none");
    }
    if r.open_at_end > 0 {
        println!(
            "  seats held when the log ends: {} (their time counts up to its last record)",
            r.open_at_end
        );
    }
    if r.ends_without_grant > 0 {
        println!(
            "  ends of seats granted before the log began: {}",
            r.ends_without_grant
        );
    }
    print_months(&r.months);
    Ok((r, None))
}

/// The table per product and month.
fn print_months(
    months: &std::collections::BTreeMap<
        (u32, tessera::license::usage::MonthIndex),
        tessera::license::usage::MonthSummary,
    >,
) {
    println!();
    println!(
        "{:>8}  {:7}  {:>7}  {:>8}  {:>8}  {:>7}  {:>7}  {:>5}  {:>10}  {:>7}  {:>7}  {:>14}",
        "product",
        "month",
        "grants",
        "releases",
        "expiries",
        "denials",
        "revokes",
        "peak",
        "seat-hours",
        "borrows",
        "returns",
        "borrowed-hours"
    );
    for ((p, m), s) in months {
        println!(
            "{p:>8}  {:7}  {:>7}  {:>8}  {:>8}  {:>7}  {:>7}  {:>5}  {:>10.2}  {:>7}  {:>7}  {:>14.2}",
            tessera::license::usage::month_label(*m),
            s.grants,
            s.releases,
            s.expiries,
            s.denials,
            s.revokes,
            s.peak,
            s.seat_hours(),
            s.borrows,
            s.returns,
            s.borrowed_hours()
        );
    }
}
