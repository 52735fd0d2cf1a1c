//! Sessions and seats.
//!
//! A [`Session`] is an app's open handle to the runtime for one publisher: it loads the
//! publisher's software containers on this machine and checks their licenses against the
//! publisher key the app compiled in. [`Session::acquire`] picks a license (dongle, then
//! software container, then network, as the sources allow), checks it (features, expiry,
//! clock, VM policy) and takes a seat in its [`SeatPool`]. A [`Seat`] encrypts and decrypts
//! with its product's key: in the container (direct mode) or in the app with a per-message
//! key the container derives (derived mode).
//!
//! This module holds the session and the choice among the sources; each source's acquire
//! path is a module of its own (`dongle`, `software`, `network`), and the seat it hands
//! out is in `seat`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use super::dongles::Dongle;
use super::seats::{Registry, SeatPool};
use crate::container::engine::InstallReport;
use crate::host::HostIdentity;
use crate::license::{CountingUnit, License};
use crate::net::lease::NetSeats;
use crate::util::process::{self, Owner};
use crate::util::{SharedClock, SystemClock};
use crate::{Error, Result};

mod borrow;
mod dongle;
mod list;
mod network;
mod seat;
mod software;

pub use borrow::BorrowedEntry;
pub use list::LicenseEntry;
pub use network::station_id;
pub use seat::{Seat, SeatInfo};

use seat::Backing;
use software::Loaded;

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
        Environment {
            home: default_home(),
            host: this_host(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// This machine's identity, read at the first call of the process and kept.
///
/// A plain mutex rather than a `LazyLock`: a fork while another thread is reading the traits
/// would leave a lazy initializer running forever in the child, and a later call there
/// would wait for it. The mutex is held across every fork instead (the prepare handler
/// waits for a detection under way to finish, the parent and child handlers release it),
/// so a child finds the identity read, or not started. It is the client layer's only
/// process-wide lock; the C API's handle tables are the others (`ffi::api`).
fn this_host() -> HostIdentity {
    static HOST: Mutex<Option<HostIdentity>> = Mutex::new(None);
    static REGISTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    unsafe extern "C" fn hold_host_across_fork() {
        let g = HOST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        process::hold_across_fork(Box::new(g));
    }
    process::at_fork(&REGISTERED, hold_host_across_fork);
    let mut host = HOST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    host.get_or_insert_with(HostIdentity::detect).clone()
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

/// A seat pool's key: the container serial and the pool's name (a license id in hex, or
/// [`borrowed_pool_name`]).
type PoolKey = (String, String);

/// The name of a borrowed seat's pool of one seat: the license id and the seat id, in hex.
pub fn borrowed_pool_name(lic: &License, seat_id: &[u8; 16]) -> String {
    format!("{}{}", lic.id_hex(), hex::encode(seat_id))
}

struct Inner {
    opts: SessionOptions,
    env: Environment,
    containers: RwLock<Vec<Arc<Loaded>>>,
    /// Why containers of this publisher failed to open, reported when nothing else fits.
    load_errors: Mutex<Vec<Error>>,
    /// Seat pools by (container serial, license id).
    pools: Mutex<HashMap<PoolKey, Arc<SeatPool>>>,
    dongles: RwLock<Vec<Arc<Dongle>>>,
    /// Why dongles failed to connect (another publisher's, a forged certificate, ...).
    dongle_errors: Mutex<Vec<Error>>,
    last_discovery: Mutex<Option<std::time::Instant>>,
    /// Seats on license servers, made on the first network acquire.
    net: Mutex<Option<Arc<NetSeats>>>,
    /// The process that opened the session: a session is used only there
    /// ([`crate::util::process`]).
    owner: Owner,
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
                owner: Owner::current(),
            }),
        };
        s.reload()?;
        Ok(s)
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
        let pool = match &backing {
            Backing::Software(c, _) => self.pool(&c.serial, &lic.id_hex(), lic.quantity)?,
            Backing::Dongle(d) => self.pool(&d.serial, &lic.id_hex(), lic.quantity)?,
            // One seat, whatever the license's quantity, in a pool of its own.
            Backing::Borrowed {
                container, seat_id, ..
            } => self.pool(&container.serial, &borrowed_pool_name(&lic, seat_id), 1)?,
            Backing::Network { .. } => {
                return Err(Error::Internal("a network seat has no local seat".into()));
            }
        };
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

    /// The session's environment.
    pub fn environment(&self) -> &Environment {
        &self.inner.env
    }

    /// The session's options.
    pub fn options(&self) -> &SessionOptions {
        &self.inner.opts
    }

    /// Who a local seat of `unit` belongs to, as its slot file names it. A pid means
    /// something only within its PID namespace (`unshare -pf` makes pid 1 again), so the
    /// process unit names the namespace too; the session id does the same for a `getsid`
    /// session ([`crate::host::session_id`]).
    fn identity(&self, unit: CountingUnit) -> String {
        match unit {
            CountingUnit::Station => "station".to_string(),
            CountingUnit::Session => format!("session:{}", self.inner.env.host.session.id),
            CountingUnit::Process => format!(
                "process:{}:{}",
                crate::host::pid_namespace(),
                std::process::id()
            ),
            CountingUnit::Handle => format!("handle:{}", hex::encode(crate::util::random::<12>())),
        }
    }

    /// The seat pool `name` (a license id, or [`borrowed_pool_name`]) of `quantity` seats in
    /// container `serial`, in the machine-wide registry (never under the home: a copy of the
    /// home holds the same container and the same seats).
    fn pool(&self, serial: &str, name: &str, quantity: u32) -> Result<Arc<SeatPool>> {
        let mut pools = self.inner.pools.lock().map_err(|_| poisoned())?;
        let key = (serial.to_string(), name.to_string());
        if let Some(p) = pools.get(&key)
            && p.quantity() == quantity.min(super::seats::MAX_LOCAL_SLOTS)
        {
            return Ok(p.clone());
        }
        let p =
            Arc::new(Registry::machine().pool(serial, name, quantity, self.inner.opts.timeout)?);
        pools.insert(key, p.clone());
        Ok(p)
    }

    /// Acquires a seat of `product_code` with at least the `features` bits.
    /// `Error::Forked` in a process forked from the one that opened the session.
    pub fn acquire(&self, product_code: u32, features: u32, exclusive: bool) -> Result<Seat> {
        self.check_owner()?;
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
                // A dongle that could not be reached says nothing about this product.
                consider(match e {
                    Error::Io { .. } => Error::NoLicense(e.to_string()),
                    e => clone_verdict(e),
                });
            }
        }
        if allowed & sources::SOFTWARE != 0 {
            if let Some(seat) =
                self.acquire_from_software(product_code, features, exclusive, &mut consider)?
            {
                return Ok(seat);
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
                "vendor {:#x} product {product_code}: {}",
                i.opts.vendor_id,
                where_.join("; ")
            ))
        }))
    }

    /// `Error::Forked` unless this is the process that opened the session. Checked before
    /// any of the session's locks is taken: in a forked child, a lock a parent thread held
    /// at the fork is never released.
    pub(super) fn check_owner(&self) -> Result<()> {
        self.inner.owner.check("session")
    }

    /// Whether this is the process that opened the session.
    pub(super) fn owned_here(&self) -> bool {
        self.inner.owner.is_current()
    }

    /// Writes an activation request for this machine (see [`super::request_activation`]).
    pub fn activation_request(&self) -> Result<Vec<u8>> {
        self.check_owner()?;
        let (_, req) = super::request_activation(&self.inner.env, self.inner.opts.vendor_id)?;
        Ok(req)
    }

    /// The size of the request [`Session::activation_request`] would write, found without
    /// changing anything on the machine.
    pub fn activation_request_size(&self) -> Result<usize> {
        self.check_owner()?;
        super::activation::activation_request_size(&self.inner.env, self.inner.opts.vendor_id)
    }

    /// Installs an activation, trusting only the session's publisher key, and reloads.
    pub fn activation_install(&self, bytes: &[u8]) -> Result<InstallReport> {
        self.check_owner()?;
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
        // The I/O failure stays one: a home that cannot be read is "could not look", not
        // "looked, found nothing".
        Error::Io {
            path,
            error: source,
        } => Error::Io {
            path: path.clone(),
            error: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::NoLicense(other.to_string()),
    }
}
