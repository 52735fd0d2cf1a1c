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
use tessera::publisher::{self, DEMO_VENDOR_ID, LicenseSpec, PublisherKey};
use tessera::util::{self, format_time};

/// The publisher's tool: keys, activations, file inspection and file encryption.
#[derive(Parser, Debug)]
#[command(name = "tessera-vendor", version, about, long_about = None)]
struct Cli {
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
    /// Print JSON (for scripts) instead of text.
    #[arg(long)]
    json: bool,
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
    match cli.command {
        Command::Keygen(a) => keygen(a),
        Command::Activate(a) | Command::Issue(a) => activate(a),
        Command::ActivatePool(a) => activate_pool(a),
        Command::Inspect(a) => inspect(a),
        Command::EncryptFile(a) => encrypt_file(a),
        Command::DecryptFile(a) => decrypt_file(a),
        Command::Program(a) => program(a),
        Command::VerifyUsage(a) => verify_usage(a),
    }
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

fn keygen(a: KeygenArgs) -> Result<()> {
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
    println!(
        "publisher key of vendor {} ({}) written to {} (mode 0600: keep it secret, back it up)",
        key.vendor_id,
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
        key.vendor_id
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

fn activate(a: IssueArgs) -> Result<()> {
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
    println!(
        "activation for container {} (host {}) of vendor {} written to {}",
        req.serial,
        if req.hostname.is_empty() {
            "unknown"
        } else {
            &req.hostname
        },
        key.vendor_id,
        a.out.display()
    );
    let doc: Activation = Envelope::parse(Kind::Activation, &act)?.decode()?;
    for lb in &doc.licenses {
        let lic = License::decode(&Envelope::parse(Kind::License, lb)?)?;
        println!("{lic}");
    }
    Ok(())
}

fn activate_pool(a: PoolArgs) -> Result<()> {
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
    for (serial, act) in &acts {
        let out = a.out_dir.join(format!("{serial}.act"));
        write_file(&out, act, 0o644)?;
        println!(
            "activation for member {serial} written to {}",
            out.display()
        );
    }
    println!(
        "pool {} of {} member(s): seats are granted while at least {} are registered",
        a.pool,
        acts.len(),
        acts.len() / 2 + 1
    );
    if let Some((_, act)) = acts.first() {
        let doc: Activation = Envelope::parse(Kind::Activation, act)?.decode()?;
        for lb in &doc.licenses {
            println!("{}", License::decode(&Envelope::parse(Kind::License, lb)?)?);
        }
    }
    Ok(())
}

/// Prints a signature verdict and remembers a failure.
struct Verdicts {
    failed: usize,
}

impl Verdicts {
    fn report(&mut self, what: &str, ok: bool) {
        if ok {
            println!("  signature:   valid ({what})");
        } else {
            self.failed += 1;
            println!("  signature:   INVALID ({what})");
        }
    }
}

fn inspect(a: InspectArgs) -> Result<()> {
    let bytes = read_file(&a.file, "file")?;
    let pk = a
        .publisher_key
        .as_deref()
        .map(load_public_key)
        .transpose()?;
    let key = pk.as_ref().map(|(_, k)| k);
    let mut v = Verdicts { failed: 0 };
    let name = a.file.display();
    if let Some(kind) = Kind::sniff(&bytes) {
        let env = Envelope::parse(kind, &bytes).with_context(|| format!("reading {name}"))?;
        println!("{name}: {}", kind.name());
        match kind {
            Kind::License => {
                let lic = License::decode(&env).with_context(|| format!("reading {name}"))?;
                println!("{lic}");
                if let Some(k) = key {
                    v.report("license, publisher key", env.verify(k).is_ok());
                }
            }
            Kind::ActivationRequest => {
                let req: ActivationRequest =
                    env.decode().with_context(|| format!("reading {name}"))?;
                println!("{req}");
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
                println!("  vendor:      {}", d.vendor_id);
                println!(
                    "  container:   {} (key {})",
                    d.serial,
                    hex_prefix(&d.container_key)
                );
                println!("  server key:  {}", hex_prefix(&d.server_key));
                println!("  issued:      {}", format_time(d.issued_at));
                println!("  expires:     {}", format_time(d.expiry));
                let ok = VerifyingKey::from_bytes(&d.container_key)
                    .is_ok_and(|ck| env.verify(&ck).is_ok());
                v.report("signed by the container key", ok);
            }
            Kind::Borrow => {
                let g: tessera::license::BorrowGrant =
                    env.decode().with_context(|| format!("reading {name}"))?;
                println!("{g}");
                // Signed by the lending container, whose key the grant does not carry.
                println!(
                    "  signature:   not checked here (the borrowing runtime checks it against the lender's certificate)"
                );
            }
            Kind::PoolMember => {
                let r: tessera::license::PoolRegistration =
                    env.decode().with_context(|| format!("reading {name}"))?;
                println!("  pool:        {}", r.pool);
                println!("  license:     {}", hex::encode(r.license_id));
                println!(
                    "  container:   {} (key {})",
                    r.serial,
                    hex_prefix(&r.container_key)
                );
                println!("  server key:  {}", hex_prefix(&r.server_key));
                println!("  etcd:        cluster {:x}", r.cluster_id);
                println!("  signed:      {}", format_time(r.signed_at));
                let ok = VerifyingKey::from_bytes(&r.container_key)
                    .is_ok_and(|ck| env.verify(&ck).is_ok());
                v.report("signed by the container key", ok);
            }
            Kind::UsageCheckpoint => {
                let st: UsageStatement = env.decode().with_context(|| format!("reading {name}"))?;
                println!("  vendor:      {}", st.vendor_id);
                println!(
                    "  container:   {} (key {})",
                    st.serial,
                    hex_prefix(&st.container_key)
                );
                println!("  digest:      {}", hex::encode(st.digest));
                println!("  signed:      {}", format_time(st.signed_at));
                let ok = VerifyingKey::from_bytes(&st.container_key)
                    .is_ok_and(|ck| env.verify(&ck).is_ok());
                v.report("signed by the container key", ok);
            }
            Kind::Certificate => {
                let cert: ContainerCertificate =
                    env.decode().with_context(|| format!("reading {name}"))?;
                print_certificate(&cert);
                if let Some(k) = key {
                    v.report("certificate, publisher key", env.verify(k).is_ok());
                }
            }
        }
    } else if bytes.starts_with(b"TSSC") {
        println!("{name}: software container");
        println!(
            "  sealed to the machine it was activated on; {} bytes",
            bytes.len()
        );
        // This machine as the runtime sees it: its traits (through the mount guard) and its
        // TPM, so that a TPM-bound container opens here too.
        let host = tessera::host::HostIdentity::detect();
        match SoftwareContainer::load(&a.file, &host) {
            Ok(c) => {
                let st = c.engine.state();
                println!("  opens on this machine");
                println!("  container:   {} ({})", st.serial, st.kind);
                println!("  vendor:      {}", st.vendor_id);
                println!("  created:     {}", format_time(st.created_at));
                println!("  clock high-water: {}", format_time(st.clock_high_water));
                println!("  licenses:    {}", c.engine.licenses().len());
                for lic in c.engine.licenses() {
                    println!("{lic}");
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
            Err(e @ tessera::Error::BindingMismatch(_)) => println!("  does not open here: {e}"),
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        }
    } else if bytes.starts_with(&cipher::MAGIC) {
        let h = Header::parse(&bytes).with_context(|| format!("reading {name}"))?;
        println!("{name}: ciphertext");
        match h.key_id() {
            Some(id) => println!(
                "  format:      2 (a network seat's, key id {})",
                hex::encode(id)
            ),
            None => println!("  format:      {}", h.version),
        }
        println!(
            "  mode:        {}",
            match h.mode {
                Mode::Direct => "direct",
                Mode::Derived => "derived",
            }
        );
        println!("  vendor:      {}", h.vendor_id);
        println!("  product:     {}", h.product_code);
        println!(
            "  length:      {} bytes ({} bytes of plaintext)",
            bytes.len(),
            cipher::plaintext_len(bytes.len())
        );
    } else if bytes.starts_with(b"TSPk") {
        let k = PublisherKey::from_bytes(&bytes).with_context(|| format!("reading {name}"))?;
        println!("{name}: publisher key (PRIVATE: keep it secret)");
        println!("  vendor:      {}", k.vendor_id);
        println!("  name:        {}", k.name);
        println!("  public key:  {}", hex::encode(k.public_key().to_bytes()));
        if k.vendor_id == DEMO_VENDOR_ID && k.public_key() == PublisherKey::demo().public_key() {
            println!("  WARNING: this is the public demo key; it protects nothing");
        }
        if let Some(pk) = key {
            v.report("public key file matches this key", *pk == k.public_key());
        }
    } else if bytes.starts_with(b"tessera-publisher") {
        let text = String::from_utf8_lossy(&bytes);
        let (vendor, k) =
            publisher::parse_public_key(&text).with_context(|| format!("reading {name}"))?;
        println!("{name}: publisher public key");
        if let Some(vendor) = vendor {
            println!("  vendor:      {vendor}");
        }
        println!("  public key:  {}", hex::encode(k.to_bytes()));
    } else {
        bail!(
            "{name} is not a Tessera file (unknown magic {})",
            hex::encode(&bytes[..bytes.len().min(4)])
        );
    }
    if v.failed > 0 {
        bail!(
            "{} signature check(s) failed: {name} is not signed by the given publisher key",
            v.failed
        );
    }
    Ok(())
}

fn print_certificate(cert: &ContainerCertificate) {
    println!("  vendor:      {}", cert.vendor_id);
    println!("  container:   {} ({})", cert.serial, cert.kind);
    println!("  sign key:    {}", hex::encode(cert.sign_key));
    println!("  seal key:    {}", hex::encode(cert.seal_key));
    println!("  issued:      {}", format_time(cert.issued_at));
    match cert.expiry {
        Some(t) => println!("  expires:     {}", format_time(t)),
        None => println!("  expires:     never"),
    }
}

fn print_activation(act: &Activation, key: Option<&VerifyingKey>, v: &mut Verdicts) {
    println!("  vendor:      {}", act.vendor_id);
    println!("  publisher key: {}", hex::encode(act.publisher_key));
    println!("  container:   {}", act.serial);
    println!("  issued:      {}", format_time(act.issued_at));
    match Envelope::parse(Kind::Certificate, &act.certificate) {
        Ok(env) => {
            match env.decode::<ContainerCertificate>() {
                Ok(c) => println!(
                    "  certificate: container {} ({}), issued {}",
                    c.serial,
                    c.kind,
                    format_time(c.issued_at)
                ),
                Err(e) => println!("  certificate: unreadable: {e}"),
            }
            if let Some(k) = key {
                v.report("certificate, publisher key", env.verify(k).is_ok());
            }
        }
        Err(e) => {
            println!("  certificate: unreadable: {e}");
            if key.is_some() {
                v.report("certificate, publisher key", false);
            }
        }
    }
    println!("  licenses:    {}", act.licenses.len());
    for lb in &act.licenses {
        match Envelope::parse(Kind::License, lb) {
            Ok(env) => {
                match License::decode(&env) {
                    Ok(l) => println!("{l}"),
                    Err(e) => println!("license: unreadable: {e}"),
                }
                if let Some(k) = key {
                    v.report("license, publisher key", env.verify(k).is_ok());
                }
            }
            Err(e) => {
                println!("license: unreadable: {e}");
                if key.is_some() {
                    v.report("license, publisher key", false);
                }
            }
        }
    }
    println!("  sealed product secrets: {}", act.secrets.len());
}

fn encrypt_file(a: EncryptArgs) -> Result<()> {
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
    println!(
        "encrypted {} bytes for vendor {} product {} into {} ({} bytes)",
        data.len(),
        key.vendor_id,
        a.product,
        a.output.display(),
        ct.len()
    );
    Ok(())
}

fn decrypt_file(a: DecryptArgs) -> Result<()> {
    let key = load_key(&a.key)?;
    let ct = read_file(&a.input, "ciphertext")?;
    let header = Header::parse(&ct).with_context(|| format!("reading {}", a.input.display()))?;
    if header.vendor_id != key.vendor_id {
        bail!(
            "{} is encrypted for vendor {}, but {} is the key of vendor {}",
            a.input.display(),
            header.vendor_id,
            a.key.display(),
            key.vendor_id
        );
    }
    let pt = cipher::decrypt(&key.product_secret(header.product_code), &ct)
        .with_context(|| format!("decrypting {}", a.input.display()))?;
    write_file(&a.output, &pt, 0o644)?;
    println!(
        "decrypted {} bytes of product {} into {}",
        pt.len(),
        header.product_code,
        a.output.display()
    );
    Ok(())
}

fn program(a: ProgramArgs) -> Result<()> {
    let key = load_key(&a.key)?;
    let spec = spec_from(&a.spec, util::now())?;
    let timeout = std::time::Duration::from_millis(a.timeout_ms);
    let mut conn = tessera::dongle::program::find(a.dongle.as_deref(), timeout)
        .context("finding the dongle")?;
    let mode = conn.mode();
    let done = tessera::dongle::program::program(&key, &mut conn, &[spec])
        .context("programming the dongle")?;
    println!(
        "dongle {} ({mode}) programmed for vendor {}: {} license(s) added, {} replaced",
        done.serial, key.vendor_id, done.added, done.replaced
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

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

fn verify_usage(a: VerifyUsageArgs) -> Result<()> {
    use tessera::license::usage;

    let (key_vendor, key) = load_any_public_key(&a.key)?;
    if let [log] = &a.log[..] {
        let (_, json) = verify_log(&a, log, key_vendor, &key)?;
        if let Some(json) = json {
            println!("{json}");
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
        let (r, json) = verify_log(&a, log, key_vendor, &key)?;
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
                r.vendor_id,
                logs[0].1.vendor_id
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
    if a.json {
        let months: Vec<serde_json::Value> = pool
            .months
            .iter()
            .map(|((p, m), s)| {
                serde_json::json!({
                    "product": p,
                    "month": usage::month_label(*m),
                    "grants": s.grants,
                    "releases": s.releases,
                    "expiries": s.expiries,
                    "denials": s.denials,
                    "revokes": s.revokes,
                    "peak": s.peak,
                    "seat_hours": s.seat_hours(),
                    "borrows": s.borrows,
                    "returns": s.returns,
                    "borrowed_hours": s.borrowed_hours(),
                    "seat_ms": s.seat_ms,
                    "borrowed_ms": s.borrowed_ms,
                })
            })
            .collect();
        let logs: Vec<serde_json::Value> = jsons
            .iter()
            .map(|j| serde_json::from_str(j))
            .collect::<Result<_, _>>()?;
        let out = serde_json::json!({
            "ok": true,
            "logs": logs,
            "pool": {
                "logs": pool.logs,
                "seats": pool.seats,
                "seats_in_several_logs": pool.seats_in_several_logs,
                "open_at_end": pool.open_at_end,
                "ends_without_grant": pool.ends_without_grant,
                "months": months,
            },
        });
        println!("{out}");
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
    log: &Path,
    key_vendor: Option<u32>,
    key: &VerifyingKey,
) -> Result<(tessera::license::usage::Report, Option<String>)> {
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
            "{name} is the usage log of vendor {}, but {} is the key of vendor {kv}",
            h.vendor_id,
            a.key.display()
        );
    }
    let reader = std::io::BufReader::new(
        fs::File::open(log).with_context(|| format!("reading the usage log {name}"))?,
    );
    let mut r = match usage::verify(reader, key) {
        Ok(r) => r,
        Err(ScanError::Io(e)) => return Err(e).with_context(|| format!("reading {name}")),
        Err(ScanError::Damaged(d)) => {
            if a.json {
                let (seq, offset) = match d.location() {
                    Some((s, o)) => (s.to_string(), o.to_string()),
                    None => ("null".into(), "0".into()),
                };
                println!(
                    "{{\"ok\":false,\"error\":{},\"seq\":{seq},\"offset\":{offset}}}",
                    json_str(&d.to_string())
                );
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
                p.vendor_id,
                r.vendor_id
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
    if a.json {
        let months: Vec<String> = r
            .months
            .iter()
            .map(|((p, m), s)| {
                format!(
                    "{{\"product\":{p},\"month\":{},\"grants\":{},\"releases\":{},\"expiries\":{},\"denials\":{},\"revokes\":{},\"peak\":{},\"seat_hours\":{:.3},\"borrows\":{},\"returns\":{},\"borrowed_hours\":{:.3},\"seat_ms\":{},\"borrowed_ms\":{}}}",
                    json_str(&usage::month_label(*m)),
                    s.grants, s.releases, s.expiries, s.denials, s.revokes, s.peak,
                    s.seat_hours(), s.borrows, s.returns, s.borrowed_hours(), s.seat_ms,
                    s.borrowed_ms
                )
            })
            .collect();
        let signers: Vec<String> = r.signers.iter().map(|s| json_str(s)).collect();
        let numbers: Vec<String> = r
            .signature_numbers
            .iter()
            .map(|(serial, (first, last))| {
                format!(
                    "{{\"serial\":{},\"first\":{first},\"last\":{last},\"anchor\":{}}}",
                    json_str(serial),
                    json_str(anchor_name(r.anchor_of(serial)))
                )
            })
            .collect();
        let unanchored: Vec<String> = r.unanchored_signers().into_iter().map(json_str).collect();
        let findings: Vec<String> = r.findings.iter().map(|f| json_str(f)).collect();
        let follows = follows.as_ref().map_or("null".to_string(), |(p, ok)| {
            format!("{{\"log\":{},\"continuous\":{ok}}}", json_str(p))
        });
        let json = format!(
            "{{\"ok\":true,\"vendor_id\":{},\"server_key\":{},\"records\":{},\"bytes\":{},\"starts\":{},\"cut_bytes\":{},\"checkpoints\":{},\"verified_records\":{},\"unverified_tail\":{},\"signers\":[{}],\"first_ms\":{},\"last_ms\":{},\"last_checkpoint_ms\":{},\"max_sign_lag_s\":{},\"open_at_end\":{},\"ends_without_grant\":{},\"signature_numbers\":[{}],\"signatures_missing\":{},\"signature_rewinds\":{},\"unanchored_signers\":[{}],\"findings\":[{}],\"follows\":{},\"months\":[{}]}}",
            r.vendor_id,
            json_str(&hex::encode(r.server_key)),
            r.records,
            r.bytes,
            r.starts,
            r.cut_bytes,
            r.checkpoints,
            r.verified,
            r.unverified_tail,
            signers.join(","),
            r.first_ms,
            r.last_ms,
            r.last_checkpoint_ms
                .map_or("null".into(), |t| t.to_string()),
            r.max_sign_lag_s,
            r.open_at_end,
            r.ends_without_grant,
            numbers.join(","),
            r.signatures_missing,
            r.signature_rewinds,
            unanchored.join(","),
            findings.join(","),
            follows,
            months.join(",")
        );
        return Ok((r, Some(json)));
    }
    println!(
        "{name}: usage log of vendor {}, {}, {} bytes",
        r.vendor_id,
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
                r.vendor_id,
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
