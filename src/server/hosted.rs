//! The containers a license server hosts: the software containers activated for the server
//! machine and the dongles attached to it, reached through the same code the client uses.
//! Each signs a delegation for the server's key, which clients check.
//!
//! A hosted container is locked machine-wide by its serial ([`HostLock`], in the seat
//! registry every process of the machine shares) for as long as the server hosts it: a second
//! server on this machine, on the same home or a copy of it, is refused the container and
//! told which server holds it, so that no two seat tables count one license.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::client::seats::{HostLock, Registry};
use crate::container::engine::RequestContext;
use crate::container::protocol::{Request, Response};
use crate::container::software;
use crate::container::{Engine, SoftwareContainer};
use crate::dongle::client::{Connection, discover};
use crate::host::HostIdentity;
use crate::license::{License, SignedLicense};
use crate::net::proto::DelegationBundle;
use crate::{Error, Result};

enum Backend {
    /// A software container file, with the host identity that opens it (its fingerprint and
    /// TPM: a usage signature writes its count back to the file).
    Software(Box<Mutex<SoftwareContainer>>, Box<HostIdentity>),
    Dongle(Box<Mutex<Connection>>),
}

/// What kind of container a hosted one is, as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostedKind {
    /// A software container file under the server's `TESSERA_HOME`.
    Software,
    /// A dongle attached to the server machine, in this mode.
    Dongle(crate::dongle::client::DongleMode),
}

/// One hosted container.
pub struct HostedContainer {
    /// The serial.
    pub serial: String,
    /// Software container or dongle (and its mode).
    pub kind: HostedKind,
    /// The publisher.
    pub vendor_id: u32,
    /// Its licenses (decoded; signed by the publisher, checked by clients).
    pub licenses: Vec<License>,
    /// The signed license bytes, in the same order.
    pub license_bytes: Vec<Vec<u8>>,
    /// The container's Ed25519 key, when known (a dongle trusted on first use has no
    /// certificate): a license is served only when its binding names this container.
    pub sign_key: Option<[u8; 32]>,
    /// Its delegation to this server (renewed while the server runs).
    delegation: RwLock<Delegated>,
    /// The machine-wide lock that makes this server its only host (shared by the reloads
    /// that keep hosting it).
    lock: Arc<HostLock>,
    backend: Backend,
    epoch: Instant,
}

impl std::fmt::Debug for HostedContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedContainer")
            .field("serial", &self.serial)
            .field("vendor_id", &self.vendor_id)
            .field("licenses", &self.licenses.len())
            .finish_non_exhaustive()
    }
}

/// A container's delegation to the server, and when it ends.
#[derive(Clone, Debug)]
struct Delegated {
    bundle: DelegationBundle,
    expiry: u64,
}

/// Who holds a hosting lock, as a refused server is told: this process and its home.
fn holder(home: &Path) -> String {
    format!(
        "tessera-server pid {} in pid namespace {}, home {}",
        std::process::id(),
        crate::host::pid_namespace(),
        home.display()
    )
}

impl HostedContainer {
    /// Checks that this server still holds the container's machine-wide hosting lock (locks
    /// it anew when its file was deleted); fails when another server took it meanwhile.
    pub fn keep_hosting(&self) -> Result<()> {
        self.lock.keep()
    }

    /// When its delegation to this server ends (Unix seconds).
    pub fn delegation_expiry(&self) -> u64 {
        self.delegated().expiry
    }

    /// Its delegation to this server and its certificate, as the server hello carries them.
    pub fn bundle(&self) -> DelegationBundle {
        self.delegated().bundle
    }

    fn delegated(&self) -> Delegated {
        match self.delegation.read() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Has the container sign a new delegation to `server_key` until `expiry`, and keeps it
    /// (a dongle signs it through its channel). On failure the old one stays.
    pub fn renew_delegation(&self, server_key: [u8; 32], expiry: u64) -> Result<()> {
        let (delegation, certificate) = match &self.backend {
            Backend::Software(c, _) => c
                .lock()
                .map_err(|_| Error::Internal("container lock poisoned".into()))?
                .engine
                .delegate(server_key, crate::util::now(), expiry)?,
            Backend::Dongle(c) => {
                let mut c = c
                    .lock()
                    .map_err(|_| Error::Internal("dongle lock poisoned".into()))?;
                delegate(&mut c, server_key, expiry)?
            }
        };
        let renewed = Delegated {
            bundle: DelegationBundle {
                certificate,
                delegation,
            },
            expiry,
        };
        match self.delegation.write() {
            Ok(mut d) => *d = renewed,
            Err(p) => *p.into_inner() = renewed,
        }
        Ok(())
    }

    /// Sends a container request (derive key, direct encrypt/decrypt) to the container.
    pub fn call(&self, req: Request) -> Result<Response> {
        let r = match &self.backend {
            Backend::Software(c, host) => {
                let mut c = c
                    .lock()
                    .map_err(|_| Error::Internal("container lock poisoned".into()))?;
                let ctx = RequestContext {
                    now: crate::util::now(),
                    now_ms: self.epoch.elapsed().as_millis() as u64,
                    host: None,
                    machine: crate::host::MachineKind::Physical,
                };
                if matches!(req, Request::SignUsage { .. }) {
                    // The signature count must outlive the server: written back to the
                    // file (re-read under its lock) before the signature is used.
                    c.update(&**host, |e| Ok(e.handle(req, &ctx).0))?
                } else {
                    c.engine.handle(req, &ctx).0
                }
            }
            Backend::Dongle(c) => c
                .lock()
                .map_err(|_| Error::Internal("dongle lock poisoned".into()))?
                .call(&req)?,
        };
        match r {
            Response::Error { status, message } => {
                Err(crate::container::protocol::response_error(status, message))
            }
            other => Ok(other),
        }
    }
}

/// What a server hosts.
#[derive(Debug, Default)]
pub struct Hosted {
    /// The containers (shared, so that a reload can keep the dongles it does not reopen).
    pub containers: Vec<Arc<HostedContainer>>,
    /// Why containers could not be hosted (reported in the log).
    pub problems: Vec<String>,
}

fn licenses_of(engine: &Engine) -> (Vec<License>, Vec<Vec<u8>>) {
    let bytes: Vec<Vec<u8>> = engine
        .state()
        .licenses
        .iter()
        .map(|l| l.bytes.clone())
        .collect();
    (engine.licenses().to_vec(), bytes)
}

/// Asks a dongle for a delegation to `server_key` until `expiry`: (delegation, certificate).
fn delegate(c: &mut Connection, server_key: [u8; 32], expiry: u64) -> Result<(Vec<u8>, Vec<u8>)> {
    match c.call(&Request::Delegate { server_key, expiry })? {
        Response::Delegation {
            delegation,
            certificate,
        } => Ok((delegation, certificate)),
        other => Err(Error::malformed("dongle answer", format!("{other:?}"))),
    }
}

impl Hosted {
    /// Loads the software containers under `home` (activated for this machine) and, when
    /// `dongles`, the dongles attached; each delegates to `server_key` until `expiry`.
    pub fn load(
        home: &Path,
        host: &HostIdentity,
        host_secret: &[u8; 32],
        server_key: [u8; 32],
        expiry: u64,
        dongles: bool,
    ) -> Hosted {
        let mut h = Self::load_software(home, host, server_key, expiry, &[]);
        if dongles {
            for ep in discover() {
                let hello =
                    crate::channel::HostHello::new(host.machine.clone(), host.hostname.clone());
                let timeout = std::time::Duration::from_secs(3);
                let conn = Connection::connect(
                    &ep,
                    host_secret,
                    hello,
                    crate::channel::Trust::FirstUse,
                    timeout,
                );
                match conn.and_then(|c| Self::dongle(c, server_key, expiry, home)) {
                    Ok(hc) => h.containers.push(Arc::new(hc)),
                    Err(e) => h.problems.push(format!("dongle at {ep:?}: {e}")),
                }
            }
        }
        h
    }

    /// What a configuration reload hosts: the software containers under `home` read anew
    /// (new activations, new licenses, fresh delegations until `expiry`) and the dongles
    /// this `Hosted` holds, kept as they are (their connections stay open).
    pub fn reload_software(
        &self,
        home: &Path,
        host: &HostIdentity,
        server_key: [u8; 32],
        expiry: u64,
    ) -> Hosted {
        let mut h = Self::load_software(home, host, server_key, expiry, &self.containers);
        h.containers.extend(
            self.containers
                .iter()
                .filter(|c| matches!(c.kind, HostedKind::Dongle(_)))
                .cloned(),
        );
        h
    }

    /// The hosting lock of `serial`: the one a container hosted now holds (a reload keeps
    /// it), else a new one.
    fn lock(
        serial: &str,
        home: &Path,
        hosted_now: &[Arc<HostedContainer>],
    ) -> Result<Arc<HostLock>> {
        if let Some(c) = hosted_now.iter().find(|c| c.serial == serial) {
            c.lock.keep()?;
            return Ok(c.lock.clone());
        }
        Ok(Arc::new(Registry::machine().host(serial, &holder(home))?))
    }

    fn load_software(
        home: &Path,
        host: &HostIdentity,
        server_key: [u8; 32],
        expiry: u64,
        hosted_now: &[Arc<HostedContainer>],
    ) -> Hosted {
        let mut h = Hosted::default();
        let now = crate::util::now();
        if let Err(e) = host.trusted_fingerprint() {
            if !software::list(home).is_empty() {
                h.problems.push(format!("software containers: {e}"));
            }
            return h;
        }
        for p in software::list(home) {
            match SoftwareContainer::load(&p, host) {
                Ok(c) => {
                    let engine = &c.engine;
                    let serial = engine.serial();
                    // Two files of one container (a copy in the home) are hosted once.
                    if h.containers.iter().any(|k| k.serial == serial) {
                        h.problems.push(format!(
                            "{}: container {serial} is hosted already, from another file",
                            p.display()
                        ));
                        continue;
                    }
                    let lock = match Self::lock(serial, home, hosted_now) {
                        Ok(l) => l,
                        Err(e) => {
                            h.problems.push(format!("{}: {e}", p.display()));
                            continue;
                        }
                    };
                    match engine.delegate(server_key, now, expiry) {
                        Ok((delegation, certificate)) => {
                            let (licenses, license_bytes) = licenses_of(engine);
                            h.containers.push(Arc::new(HostedContainer {
                                serial: engine.serial().to_string(),
                                kind: HostedKind::Software,
                                vendor_id: engine.state().vendor_id,
                                licenses,
                                license_bytes,
                                sign_key: Some(engine.sign_key().to_bytes()),
                                delegation: RwLock::new(Delegated {
                                    bundle: DelegationBundle {
                                        certificate,
                                        delegation,
                                    },
                                    expiry,
                                }),
                                lock,
                                backend: Backend::Software(
                                    Box::new(Mutex::new(c)),
                                    Box::new(host.clone()),
                                ),
                                epoch: Instant::now(),
                            }));
                        }
                        Err(e) => h.problems.push(format!("{}: {e}", p.display())),
                    }
                }
                Err(e) => h.problems.push(format!("{}: {e}", p.display())),
            }
        }
        h
    }

    fn dongle(
        mut c: Connection,
        server_key: [u8; 32],
        expiry: u64,
        home: &Path,
    ) -> Result<HostedContainer> {
        let lock = Arc::new(Registry::machine().host(&c.serial, &holder(home))?);
        let (delegation, certificate) = delegate(&mut c, server_key, expiry)?;
        let list = crate::dongle::client::list_all_licenses(|r| c.call(r))?;
        let mut licenses = Vec::new();
        for b in &list {
            licenses.push(SignedLicense::parse_unverified(b)?);
        }
        Ok(HostedContainer {
            serial: c.serial.clone(),
            kind: HostedKind::Dongle(c.mode()),
            vendor_id: c.vendor_id,
            licenses,
            license_bytes: list,
            sign_key: c.certificate.as_ref().map(|cert| cert.sign_key),
            delegation: RwLock::new(Delegated {
                bundle: DelegationBundle {
                    certificate,
                    delegation,
                },
                expiry,
            }),
            lock,
            backend: Backend::Dongle(Box::new(Mutex::new(c))),
            epoch: Instant::now(),
        })
    }

    /// The delegation bundles for the server hello.
    pub fn bundles(&self) -> Vec<DelegationBundle> {
        self.containers.iter().map(|c| c.bundle()).collect()
    }

    /// The same containers (shared) and problems, for a new hello after a renewal.
    pub fn share(&self) -> Hosted {
        Hosted {
            containers: self.containers.clone(),
            problems: self.problems.clone(),
        }
    }

    /// The vendors hosted.
    pub fn vendors(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.containers.iter().map(|c| c.vendor_id).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The licenses of `(vendor, product)`: (container index, license index).
    pub fn find(&self, vendor_id: u32, product_code: u32) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (ci, c) in self.containers.iter().enumerate() {
            for (li, l) in c.licenses.iter().enumerate() {
                if l.vendor_id == vendor_id && l.product_code == product_code {
                    out.push((ci, li));
                }
            }
        }
        out
    }

    /// The container and license index holding `license_id`.
    pub fn by_license_id(&self, license_id: &[u8; 16]) -> Option<(usize, usize)> {
        for (ci, c) in self.containers.iter().enumerate() {
            if let Some(li) = c.licenses.iter().position(|l| l.license_id == *license_id) {
                return Some((ci, li));
            }
        }
        None
    }
}
