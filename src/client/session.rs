//! Sessions and seats.
//!
//! A [`Session`] is an app's open handle to the runtime for one publisher: it loads the
//! publisher's software containers on this machine and checks their licenses against the
//! publisher key the app compiled in. [`Session::acquire`] picks a license (dongle, then
//! software container, then network, as the sources allow), checks it (features, expiry,
//! clock, VM policy) and takes a seat in its [`SeatPool`]. A [`Seat`] encrypts and decrypts
//! with its product's key: in the container (direct mode) or in the app with a per-message
//! key the container derives (derived mode).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use super::dongles::{Dongle, DongleContext, unexpected};
use super::seats::{SeatGuard, SeatPool};
use crate::cipher::{self, Header, Mode};
use crate::container::engine::{InstallReport, UseQuery};
use crate::container::protocol::{Request, Response};
use crate::container::software::list_for_vendor;
use crate::container::{ContainerKind, SoftwareContainer};
use crate::dongle::client::DongleMode;
use crate::host::HostIdentity;
use crate::license::{CountingUnit, License};
use crate::net::lease::NetSeats;
use crate::net::proto::{NetRequest, NetResponse};
use crate::util::{SharedClock, SystemClock};
use crate::{Error, Result};

/// License sources, as a bit mask.
pub mod sources {
    /// A USB dongle on this machine.
    pub const DONGLE: u32 = 1;
    /// A software container on this machine.
    pub const SOFTWARE: u32 = 2;
    /// A license server on the network.
    pub const NETWORK: u32 = 4;
    /// All of them.
    pub const ALL: u32 = DONGLE | SOFTWARE | NETWORK;
}

/// How a session is opened.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// The publisher.
    pub vendor_id: u32,
    /// The publisher's public key, compiled into the app.
    pub publisher_key: VerifyingKey,
    /// Allowed sources ([`sources`] bits); 0 means all.
    pub sources: u32,
    /// License servers (`host[:port]`), for the network source.
    pub servers: Vec<String>,
    /// How long any one operation may wait.
    pub timeout: Duration,
}

impl SessionOptions {
    /// Options for `vendor_id` with all sources and a 5-second timeout.
    pub fn new(vendor_id: u32, publisher_key: VerifyingKey) -> SessionOptions {
        SessionOptions {
            vendor_id,
            publisher_key,
            sources: sources::ALL,
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Where and on what the runtime runs: its state directory, the host identity and the clock.
/// [`Environment::detect`] reads the real ones; tests build their own to simulate other
/// machines (the C ABI never lets an app choose).
#[derive(Clone, Debug)]
pub struct Environment {
    /// The runtime's state directory (`TESSERA_HOME`).
    pub home: PathBuf,
    /// This machine.
    pub host: HostIdentity,
    /// The clock.
    pub clock: SharedClock,
}

/// The state directory: `TESSERA_HOME`, else `/var/lib/tessera` for root, else
/// `$XDG_STATE_HOME/tessera` (or `~/.local/state/tessera`).
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("TESSERA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/tessera");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("tessera");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/tessera")
}

impl Environment {
    /// This machine, the default state directory and the system clock. The host identity
    /// is read once per process (it does not change while a process runs; reading the
    /// traits is most of the cost of opening a session).
    pub fn detect() -> Environment {
        static HOST: std::sync::LazyLock<HostIdentity> =
            std::sync::LazyLock::new(HostIdentity::detect);
        Environment {
            home: default_home(),
            host: HOST.clone(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Where a seat's license came from (`TESSERA_SOURCE_*` in the C API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A dongle.
    Dongle,
    /// A software container.
    Software,
    /// A license server.
    Network,
}

struct Loaded {
    container: RwLock<SoftwareContainer>,
    serial: String,
    kind: ContainerKind,
    /// Licenses that verify against the session's publisher key.
    verified: Vec<usize>,
}

struct Inner {
    opts: SessionOptions,
    env: Environment,
    containers: RwLock<Vec<Arc<Loaded>>>,
    /// Why containers of this publisher failed to open, reported when nothing else fits.
    load_errors: Mutex<Vec<Error>>,
    pools: Mutex<HashMap<[u8; 16], Arc<SeatPool>>>,
    dongles: RwLock<Vec<Arc<Dongle>>>,
    /// Why dongles failed to connect (another publisher's, a forged certificate, ...).
    dongle_errors: Mutex<Vec<Error>>,
    last_discovery: Mutex<Option<std::time::Instant>>,
    /// Seats on license servers, made on the first network acquire.
    net: Mutex<Option<Arc<NetSeats>>>,
}

/// An open session.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("vendor_id", &self.inner.opts.vendor_id)
            .field("home", &self.inner.env.home)
            .finish_non_exhaustive()
    }
}

/// Only persist the clock's high-water mark when it moved this far, to keep opens cheap.
const HIGH_WATER_PERSIST_STEP: u64 = 300;

fn load_one(env: &Environment, opts: &SessionOptions, path: &std::path::Path) -> Result<Loaded> {
    let mut c = SoftwareContainer::load(path, &env.host.fingerprint)?;
    if c.engine.state().vendor_id != opts.vendor_id {
        return Err(Error::WrongVendor {
            expected: opts.vendor_id,
            found: c.engine.state().vendor_id,
        });
    }
    let now = env.clock.now();
    let persisted = c.engine.state().clock_high_water;
    c.engine.observe_clock(now);
    if now > persisted.saturating_add(HIGH_WATER_PERSIST_STEP) {
        // Best effort: a read-only home still lets the app run.
        let _ = c.update(&env.host.fingerprint, |e| {
            e.observe_clock(now);
            Ok(())
        });
    }
    let verified = c
        .engine
        .verified_licenses(&opts.publisher_key, opts.vendor_id);
    Ok(Loaded {
        serial: c.engine.serial().to_string(),
        kind: c.engine.state().kind,
        container: RwLock::new(c),
        verified,
    })
}

fn poisoned() -> Error {
    Error::Internal("a lock was poisoned by a panic".into())
}

impl Session {
    /// Opens a session on this machine.
    pub fn open(opts: SessionOptions) -> Result<Session> {
        Self::open_in(opts, Environment::detect())
    }

    /// Opens a session in a given environment (tests simulate machines with this).
    pub fn open_in(mut opts: SessionOptions, env: Environment) -> Result<Session> {
        if opts.sources == 0 {
            opts.sources = sources::ALL;
        }
        if opts.sources & !sources::ALL != 0 {
            return Err(Error::InvalidArgument(format!(
                "unknown source bits {:#x}",
                opts.sources
            )));
        }
        if opts.timeout.is_zero() {
            opts.timeout = Duration::from_secs(5);
        }
        let s = Session {
            inner: Arc::new(Inner {
                opts,
                env,
                containers: RwLock::new(Vec::new()),
                load_errors: Mutex::new(Vec::new()),
                pools: Mutex::new(HashMap::new()),
                dongles: RwLock::new(Vec::new()),
                dongle_errors: Mutex::new(Vec::new()),
                // Dongles are looked for at the first acquire, not at open.
                last_discovery: Mutex::new(None),
                net: Mutex::new(None),
            }),
        };
        s.reload()?;
        Ok(s)
    }

    /// Re-reads the software containers of the session's publisher.
    pub fn reload(&self) -> Result<()> {
        let i = &self.inner;
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        if i.opts.sources & sources::SOFTWARE != 0 {
            for p in list_for_vendor(&i.env.home, i.opts.vendor_id) {
                match load_one(&i.env, &i.opts, &p) {
                    Ok(l) => loaded.push(Arc::new(l)),
                    Err(e) => errors.push(e),
                }
            }
        }
        *i.containers.write().map_err(|_| poisoned())? = loaded;
        *i.load_errors.lock().map_err(|_| poisoned())? = errors;
        Ok(())
    }

    /// Looks for dongles again (at open, and when an acquire finds nothing in the ones known).
    pub fn rediscover_dongles(&self) -> Result<()> {
        let i = &self.inner;
        if i.opts.sources & sources::DONGLE == 0 {
            return Ok(());
        }
        let (found, mut errors) = match super::hostkey::load_or_create(&i.env.home) {
            Ok(host_secret) => Dongle::discover_all(&DongleContext {
                host_secret,
                host: i.env.host.clone(),
                publisher: i.opts.publisher_key,
                vendor_id: i.opts.vendor_id,
                timeout: i.opts.timeout,
            }),
            Err(e) => (Vec::new(), vec![e]),
        };
        let mut dongles = i.dongles.write().map_err(|_| poisoned())?;
        for d in found {
            if !dongles.iter().any(|k| k.serial == d.serial) {
                dongles.push(Arc::new(d));
            }
        }
        let mut e = i.dongle_errors.lock().map_err(|_| poisoned())?;
        e.clear();
        e.append(&mut errors);
        Ok(())
    }

    /// Whether enough time passed since the last look for new dongles (at most one look
    /// every two seconds, so acquires of software licenses stay cheap).
    fn rediscovery_due(&self) -> bool {
        let Ok(mut last) = self.inner.last_discovery.lock() else {
            return false;
        };
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// The dongles this session knows.
    pub fn dongles(&self) -> Vec<Arc<Dongle>> {
        self.inner
            .dongles
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Takes a local seat of `lic` (checked already) in its seat pool.
    fn take_seat(
        &self,
        lic: License,
        backing: Backing,
        source: SourceKind,
        exclusive: bool,
    ) -> Result<Seat> {
        if exclusive && !lic.exclusive_allowed {
            return Err(Error::ExclusiveDenied(
                "the license does not allow exclusive use".into(),
            ));
        }
        let pool = self.pool(&lic)?;
        let guard = pool.acquire(&self.identity(lic.counting_unit), exclusive)?;
        Ok(Seat {
            session: self.clone(),
            backing,
            license: lic,
            local: Some((pool, guard)),
            source,
            exclusive,
        })
    }

    /// The session's server seats: the servers from the options (or `TESSERA_SERVERS`), else
    /// those that answer a discovery broadcast. `None` when there is no server.
    fn net_seats(&self) -> Result<Option<Arc<NetSeats>>> {
        let i = &self.inner;
        let mut net = i.net.lock().map_err(|_| poisoned())?;
        if let Some(n) = net.as_ref() {
            return Ok(Some(n.clone()));
        }
        let mut servers = i.opts.servers.clone();
        if servers.is_empty() {
            let wait = i.opts.timeout.min(Duration::from_millis(500));
            servers = crate::net::discovery::discover(wait, crate::net::proto::DEFAULT_PORT)
                .into_iter()
                .map(|(addr, _)| addr.to_string())
                .collect();
        }
        if servers.is_empty() {
            return Ok(None);
        }
        let host_secret = super::hostkey::load_or_create(&i.env.home)?;
        let h = &i.env.host;
        let client = crate::net::proto::ClientHello {
            version: crate::net::proto::PROTOCOL_VERSION,
            host: crate::net::proto::HostInfo {
                machine: h.machine.clone(),
                hostname: h.hostname.clone(),
                station: station_id(&h.fingerprint),
                session: h.session.id.clone(),
                pid: std::process::id(),
            },
        };
        let n = Arc::new(NetSeats::new(
            servers,
            &host_secret,
            client,
            i.opts.publisher_key,
            i.opts.vendor_id,
            i.opts.timeout,
        ));
        *net = Some(n.clone());
        Ok(Some(n))
    }

    /// Tries the license servers for a seat.
    fn acquire_from_network(
        &self,
        product_code: u32,
        features: u32,
        exclusive: bool,
    ) -> Result<Option<Seat>> {
        let Some(net) = self.net_seats()? else {
            return Ok(None);
        };
        let i = &self.inner;
        let (seat_id, grant) = net.acquire(i.opts.vendor_id, product_code, features, exclusive)?;
        // The server proves its license with the publisher's signature, not its word.
        let lic = match crate::license::SignedLicense::verify(&grant.license, &i.opts.publisher_key)
        {
            Ok(s)
                if s.license.vendor_id == i.opts.vendor_id
                    && s.license.product_code == product_code =>
            {
                s.license
            }
            _ => {
                let _ = net.release(seat_id);
                return Err(Error::Tampered(
                    "the server granted a seat of a license the publisher did not sign".into(),
                ));
            }
        };
        let container_kind = if grant.container_serial.starts_with("DG-") {
            ContainerKind::Dongle
        } else {
            ContainerKind::Software
        };
        Ok(Some(Seat {
            session: self.clone(),
            backing: Backing::Network {
                net,
                seat_id,
                container_serial: grant.container_serial,
                container_kind,
            },
            license: lic,
            local: None,
            source: SourceKind::Network,
            exclusive,
        }))
    }

    /// Tries the dongles for a seat; `None` when none holds the product.
    fn acquire_from_dongles(
        &self,
        product_code: u32,
        features: u32,
        exclusive: bool,
        consider: &mut dyn FnMut(Error),
    ) -> Result<Option<Seat>> {
        let i = &self.inner;
        let now = i.env.clock.now();
        for d in self.dongles() {
            match d.is_shared() {
                Ok(false) => {}
                Ok(true) => {
                    consider(Error::DongleShared(format!(
                        "dongle {} is used by more than one host and is locked out",
                        d.serial
                    )));
                    continue;
                }
                Err(e) => {
                    consider(e);
                    continue;
                }
            }
            let lics = match d.licenses() {
                Ok(l) => l,
                Err(e) => {
                    consider(e);
                    continue;
                }
            };
            for lic in lics.into_iter().filter(|l| l.product_code == product_code) {
                // The dongle enforces its own clock on every key operation.
                if let Err(e) = lic.check(features, now, &i.env.host.machine, None) {
                    consider(e);
                    continue;
                }
                match self.take_seat(
                    lic,
                    Backing::Dongle(d.clone()),
                    SourceKind::Dongle,
                    exclusive,
                ) {
                    Ok(seat) => return Ok(Some(seat)),
                    Err(e) => consider(e),
                }
            }
        }
        Ok(None)
    }

    /// The session's environment.
    pub fn environment(&self) -> &Environment {
        &self.inner.env
    }

    /// The session's options.
    pub fn options(&self) -> &SessionOptions {
        &self.inner.opts
    }

    fn identity(&self, unit: CountingUnit) -> String {
        match unit {
            CountingUnit::Station => "station".to_string(),
            CountingUnit::Session => format!("session:{}", self.inner.env.host.session.id),
            CountingUnit::Process => format!("process:{}", std::process::id()),
            CountingUnit::Handle => format!("handle:{}", hex::encode(crate::util::random::<12>())),
        }
    }

    fn pool(&self, lic: &License) -> Result<Arc<SeatPool>> {
        let mut pools = self.inner.pools.lock().map_err(|_| poisoned())?;
        if let Some(p) = pools.get(&lic.license_id)
            && p.quantity() == lic.quantity.min(super::seats::MAX_LOCAL_SLOTS)
        {
            return Ok(p.clone());
        }
        let p = Arc::new(SeatPool::open(
            &self.inner.env.home,
            &lic.id_hex(),
            lic.quantity,
            self.inner.opts.timeout,
        )?);
        pools.insert(lic.license_id, p.clone());
        Ok(p)
    }

    /// Acquires a seat of `product_code` with at least the `features` bits.
    pub fn acquire(&self, product_code: u32, features: u32, exclusive: bool) -> Result<Seat> {
        let i = &self.inner;
        let mut best: Option<Error> = None;
        let mut consider = |e: Error| {
            if best
                .as_ref()
                .is_none_or(|b| e.specificity() > b.specificity())
            {
                best = Some(e);
            }
        };
        let allowed = i.opts.sources;
        if allowed & sources::DONGLE != 0 {
            if let Some(seat) =
                self.acquire_from_dongles(product_code, features, exclusive, &mut consider)?
            {
                return Ok(seat);
            }
            if self.rediscovery_due() {
                // Nothing known holds it: a dongle may have been plugged in since.
                self.rediscover_dongles()?;
                if let Some(seat) =
                    self.acquire_from_dongles(product_code, features, exclusive, &mut consider)?
                {
                    return Ok(seat);
                }
            }
            for e in i.dongle_errors.lock().map_err(|_| poisoned())?.iter() {
                consider(clone_verdict(e));
            }
        }
        if allowed & sources::SOFTWARE != 0 {
            let now = i.env.clock.now();
            let query = UseQuery {
                features,
                now,
                machine: i.env.host.machine.clone(),
            };
            let containers = i.containers.read().map_err(|_| poisoned())?.clone();
            for c in containers {
                let mut sc = c.container.write().map_err(|_| poisoned())?;
                sc.engine.observe_clock(now);
                for &idx in &c.verified {
                    let lic = sc.engine.licenses()[idx].clone();
                    if lic.product_code != product_code {
                        continue;
                    }
                    if let Err(e) = sc.engine.check_use(idx, &query) {
                        consider(e);
                        continue;
                    }
                    match self.take_seat(
                        lic,
                        Backing::Software(c.clone(), idx),
                        SourceKind::Software,
                        exclusive,
                    ) {
                        Ok(seat) => return Ok(seat),
                        Err(e) => consider(e),
                    }
                }
            }
            for e in i.load_errors.lock().map_err(|_| poisoned())?.iter() {
                consider(clone_verdict(e));
            }
        }
        if allowed & sources::NETWORK != 0 {
            match self.acquire_from_network(product_code, features, exclusive) {
                Ok(Some(seat)) => return Ok(seat),
                Ok(None) => {}
                Err(e) => consider(e),
            }
        }
        Err(best.unwrap_or_else(|| {
            let mut where_ = Vec::new();
            if allowed & sources::DONGLE != 0 {
                where_.push("no dongle of this publisher is connected");
            }
            if allowed & sources::SOFTWARE != 0 {
                where_.push("no software container of this publisher holds it");
            }
            if allowed & sources::NETWORK != 0 {
                where_.push("no license server is configured");
            }
            Error::NoLicense(format!(
                "vendor {} product {product_code}: {}",
                i.opts.vendor_id,
                where_.join("; ")
            ))
        }))
    }

    /// Writes an activation request for this machine (see [`super::request_activation`]).
    pub fn activation_request(&self) -> Result<Vec<u8>> {
        let (_, req) = super::request_activation(&self.inner.env, self.inner.opts.vendor_id)?;
        Ok(req)
    }

    /// Installs an activation, trusting only the session's publisher key, and reloads.
    pub fn activation_install(&self, bytes: &[u8]) -> Result<InstallReport> {
        // A session is one publisher's: an activation of another vendor is refused even
        // when the same key signed it.
        let act: crate::container::Activation =
            crate::license::Envelope::parse(crate::license::Kind::Activation, bytes)?.decode()?;
        if act.vendor_id != self.inner.opts.vendor_id {
            return Err(Error::WrongVendor {
                expected: self.inner.opts.vendor_id,
                found: act.vendor_id,
            });
        }
        let (_, r) = super::install_activation(
            &self.inner.env,
            bytes,
            Some(&self.inner.opts.publisher_key),
        )?;
        self.reload()?;
        Ok(r)
    }
}

/// A copy of a load error for reporting (I/O errors lose their source chain).
fn clone_verdict(e: &Error) -> Error {
    match e {
        Error::BindingMismatch(s) => Error::BindingMismatch(s.clone()),
        Error::Tampered(s) => Error::Tampered(s.clone()),
        Error::DongleShared(s) => Error::DongleShared(s.clone()),
        Error::BadSignature(s) => Error::BadSignature(s.clone()),
        Error::Timeout(s) => Error::Timeout(s.clone()),
        Error::Expired { expiry } => Error::Expired { expiry: *expiry },
        Error::WrongVendor { expected, found } => Error::WrongVendor {
            expected: *expected,
            found: *found,
        },
        Error::UnknownVersion {
            what,
            found,
            supported,
        } => Error::UnknownVersion {
            what,
            found: *found,
            supported: *supported,
        },
        Error::Malformed { what, detail } => Error::Malformed {
            what,
            detail: detail.clone(),
        },
        other => Error::NoLicense(other.to_string()),
    }
}

/// What a seat is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatInfo {
    /// The publisher.
    pub vendor_id: u32,
    /// The product.
    pub product_code: u32,
    /// Licensed feature bits.
    pub features: u32,
    /// License quantity.
    pub quantity: u32,
    /// Seats of the license in use now, on this machine (this one included).
    pub in_use: u32,
    /// Expiry, or `None` when perpetual.
    pub expiry: Option<u64>,
    /// Where the license is.
    pub source: SourceKind,
    /// What one seat covers.
    pub counting_unit: CountingUnit,
    /// The serial of the container holding the license.
    pub container_serial: String,
    /// The container kind.
    pub container_kind: ContainerKind,
    /// Whether this seat is held exclusively.
    pub exclusive: bool,
    /// How the dongle is attached, for a dongle license.
    pub dongle_mode: Option<DongleMode>,
    /// The license server's name, for a network seat.
    pub server: Option<String>,
}

/// Where a seat's license is.
enum Backing {
    /// A software container and the license's index in it.
    Software(Arc<Loaded>, usize),
    /// A dongle.
    Dongle(Arc<Dongle>),
    /// A seat on a license server.
    Network {
        /// The session's server seats.
        net: Arc<NetSeats>,
        /// The seat id.
        seat_id: [u8; 16],
        /// The serial of the server's container.
        container_serial: String,
        /// Its kind (a server hosts both).
        container_kind: ContainerKind,
    },
}

/// One id per physical or virtual machine: a digest of its fingerprint traits.
pub fn station_id(fp: &crate::host::Fingerprint) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tessera station v1");
    for (_, d) in fp.digests(b"station") {
        h.update(d);
    }
    h.finalize().into()
}

/// A held seat. Dropping it releases the seat.
pub struct Seat {
    session: Session,
    backing: Backing,
    license: License,
    /// The local seat slot (dongle and software-container licenses).
    local: Option<(Arc<SeatPool>, SeatGuard)>,
    source: SourceKind,
    exclusive: bool,
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seat")
            .field("product_code", &self.license.product_code)
            .field("container", &self.container_serial())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A container reached over a link (a dongle, or a server's container): where a seat's
/// keys come from when the container is not in this process.
trait RemoteContainer {
    fn derive_key(&self, header: &Header) -> Result<cipher::Key>;
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>>;
    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>>;
}

struct DongleLicense<'a>(&'a Dongle, [u8; 16]);

impl RemoteContainer for DongleLicense<'_> {
    fn derive_key(&self, header: &Header) -> Result<cipher::Key> {
        match self.0.call(&Request::DeriveKey {
            license_id: self.1,
            header: header.encode().to_vec(),
        })? {
            Response::Key(k) => Ok(zeroize::Zeroizing::new(k)),
            other => Err(unexpected(&other)),
        }
    }
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        match self.0.call(&Request::Encrypt {
            license_id: self.1,
            plaintext: plaintext.to_vec(),
        })? {
            Response::Data(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }
    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        match self.0.call(&Request::Decrypt {
            license_id: self.1,
            ciphertext: ciphertext.to_vec(),
        })? {
            Response::Data(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }
}

struct ServerSeat<'a>(&'a NetSeats, [u8; 16]);

fn unexpected_net(r: &NetResponse) -> Error {
    Error::malformed("server answer", format!("unexpected answer {r:?}"))
}

impl RemoteContainer for ServerSeat<'_> {
    fn derive_key(&self, header: &Header) -> Result<cipher::Key> {
        let req = NetRequest::DeriveKey {
            seat_id: self.1,
            header: header.encode().to_vec(),
        };
        match self.0.call_for_seat(self.1, req)? {
            NetResponse::Key(k) => Ok(zeroize::Zeroizing::new(k)),
            other => Err(unexpected_net(&other)),
        }
    }
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let req = NetRequest::Encrypt {
            seat_id: self.1,
            plaintext: plaintext.to_vec(),
        };
        match self.0.call_for_seat(self.1, req)? {
            NetResponse::Data(d) => Ok(d),
            other => Err(unexpected_net(&other)),
        }
    }
    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let req = NetRequest::Decrypt {
            seat_id: self.1,
            ciphertext: ciphertext.to_vec(),
        };
        match self.0.call_for_seat(self.1, req)? {
            NetResponse::Data(d) => Ok(d),
            other => Err(unexpected_net(&other)),
        }
    }
}

fn copy_out(data: Vec<u8>, out: &mut [u8]) -> Result<usize> {
    if data.len() > out.len() {
        return Err(Error::BufferTooSmall { needed: data.len() });
    }
    out[..data.len()].copy_from_slice(&data);
    Ok(data.len())
}

impl Seat {
    /// The license behind the seat.
    pub fn license(&self) -> &License {
        &self.license
    }

    /// What the seat is.
    pub fn info(&self) -> Result<SeatInfo> {
        let (in_use, server) = match (&self.local, &self.backing) {
            (Some((pool, _)), _) => (pool.in_use()?, None),
            (None, Backing::Network { net, seat_id, .. }) => {
                match net.call_for_seat(*seat_id, NetRequest::SeatInfo { seat_id: *seat_id })? {
                    NetResponse::Info { in_use, .. } => (in_use, net.server_name()),
                    other => return Err(unexpected_net(&other)),
                }
            }
            (None, _) => (0, None),
        };
        Ok(SeatInfo {
            vendor_id: self.license.vendor_id,
            product_code: self.license.product_code,
            features: self.license.features,
            quantity: self.license.quantity,
            in_use,
            expiry: self.license.expiry,
            source: self.source,
            counting_unit: self.license.counting_unit,
            container_serial: self.container_serial(),
            container_kind: match &self.backing {
                Backing::Software(c, _) => c.kind,
                Backing::Dongle(_) => ContainerKind::Dongle,
                Backing::Network { container_kind, .. } => *container_kind,
            },
            dongle_mode: match &self.backing {
                Backing::Dongle(d) => Some(d.mode),
                _ => None,
            },
            exclusive: self.exclusive,
            server,
        })
    }

    fn check(&self) -> Result<()> {
        let env = &self.session.inner.env;
        let now = env.clock.now();
        if let Some(expiry) = self.license.expiry
            && now >= expiry
        {
            return Err(Error::Expired { expiry });
        }
        Ok(())
    }

    fn remote(&self) -> Option<Box<dyn RemoteContainer + '_>> {
        match &self.backing {
            Backing::Software(..) => None,
            Backing::Dongle(d) => Some(Box::new(DongleLicense(d, self.license.license_id))),
            Backing::Network { net, seat_id, .. } => Some(Box::new(ServerSeat(net, *seat_id))),
        }
    }

    /// Encrypts `plaintext` into `out` in `mode`; returns the bytes written. `out` must hold
    /// [`cipher::ciphertext_len`] bytes.
    pub fn encrypt(&self, mode: Mode, plaintext: &[u8], out: &mut [u8]) -> Result<usize> {
        let need = cipher::ciphertext_len(plaintext.len());
        if out.len() < need {
            return Err(Error::BufferTooSmall { needed: need });
        }
        self.check()?;
        let header = Header::new(mode, self.license.vendor_id, self.license.product_code);
        if let Some(r) = self.remote() {
            return match mode {
                Mode::Derived => {
                    let key = r.derive_key(&header)?;
                    cipher::seal_with_key(&key, &header, plaintext, out)
                }
                Mode::Direct => copy_out(r.encrypt(plaintext)?, out),
            };
        }
        let Backing::Software(c, index) = &self.backing else {
            return Err(Error::Internal("seat without a container".into()));
        };
        let c = c.container.read().map_err(|_| poisoned())?;
        match mode {
            Mode::Direct => c.engine.encrypt_direct(*index, plaintext, out),
            Mode::Derived => {
                let key = c.engine.message_key(*index, &header)?;
                drop(c);
                cipher::seal_with_key(&key, &header, plaintext, out)
            }
        }
    }

    /// Decrypts `ct` into `out`; returns the plaintext length. Direct-mode ciphertext is
    /// decrypted in the container, derived-mode ciphertext in the app.
    pub fn decrypt(&self, ct: &[u8], out: &mut [u8]) -> Result<usize> {
        let header = Header::parse(ct)?;
        let need = cipher::plaintext_len(ct.len());
        if out.len() < need {
            return Err(Error::BufferTooSmall { needed: need });
        }
        self.check()?;
        if header.vendor_id != self.license.vendor_id {
            return Err(Error::WrongVendor {
                expected: self.license.vendor_id,
                found: header.vendor_id,
            });
        }
        if header.product_code != self.license.product_code {
            return Err(Error::NoLicense(format!(
                "ciphertext is for vendor {} product {}, the seat holds vendor {} product {}",
                header.vendor_id,
                header.product_code,
                self.license.vendor_id,
                self.license.product_code
            )));
        }
        if let Some(r) = self.remote() {
            return match header.mode {
                Mode::Derived => {
                    let key = r.derive_key(&header)?;
                    cipher::open_with_key(&key, &header, ct, out)
                }
                Mode::Direct => copy_out(r.decrypt(ct)?, out),
            };
        }
        let Backing::Software(c, index) = &self.backing else {
            return Err(Error::Internal("seat without a container".into()));
        };
        let c = c.container.read().map_err(|_| poisoned())?;
        match header.mode {
            Mode::Direct => c.engine.decrypt_direct(*index, ct, out),
            Mode::Derived => {
                let key = c.engine.message_key(*index, &header)?;
                drop(c);
                cipher::open_with_key(&key, &header, ct, out)
            }
        }
    }

    fn container_serial(&self) -> String {
        match &self.backing {
            Backing::Software(c, _) => c.serial.clone(),
            Backing::Dongle(d) => d.serial.clone(),
            Backing::Network {
                container_serial, ..
            } => container_serial.clone(),
        }
    }

    /// Releases the seat (same as dropping it).
    pub fn release(self) {}
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Backing::Network { net, seat_id, .. } = &self.backing {
            // Best effort: a server out of reach frees the seat when its lease runs out.
            let _ = net.release(*seat_id);
        }
    }
}
