//! The container engine: the pure state machine every container runs.
//!
//! It verifies and holds licenses and their product secrets, derives message keys,
//! encrypts in direct mode, signs, and keeps the clock's high-water mark. It does no I/O:
//! the software container, the virtual dongle and real dongle firmware wrap the same code
//! with their own storage and transport, and pass the time in.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use super::hosts::{HostTracker, SharePolicy};
use super::protocol::{Request, Response, error_response};
use crate::cipher::{self, Header, Key, Mode};
use crate::host::{Fingerprint, MachineKind};
use crate::license::borrow::{self, BorrowGrant};
use crate::license::delegation::{Delegation, sign_delegation};
use crate::license::usage::CounterAnchor;
use crate::license::{
    Activation, ActivationRequest, ContainerCertificate, ContainerKind, Envelope, Kind, License,
    SignedLicense, envelope,
};
use crate::{Error, Result};

mod borrowed;

pub use borrowed::BorrowedSeat;
use borrowed::borrowed_license;

/// How far the clock may run behind the high-water mark before time-limited licenses are
/// refused (covers NTP corrections and time-zone mistakes, not a week-long rollback).
pub const CLOCK_TOLERANCE_SECS: u64 = 3600;
/// The most license bytes one `ListLicenses` answer carries (it must fit a channel frame).
pub const LIST_PAGE_BYTES: usize = 4096;
/// The engine state format version (3: borrowed seats).
pub const STATE_VERSION: u16 = 3;

/// A license as stored in the engine: the signed bytes and the unsealed product secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredLicense {
    /// The signed license.
    pub bytes: Vec<u8>,
    /// The product secret.
    pub secret: [u8; 32],
}

impl Drop for StoredLicense {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// Everything a container must persist. Serialized with postcard by the container that
/// stores it; holds secrets, so it is only ever written sealed.
#[derive(Clone, Serialize, Deserialize)]
pub struct EngineState {
    /// State format version.
    pub version: u16,
    /// The container serial.
    pub serial: String,
    /// The container kind.
    pub kind: ContainerKind,
    /// The publisher this container serves.
    pub vendor_id: u32,
    /// Seed of the container's Ed25519 key.
    pub sign_seed: [u8; 32],
    /// The container's X25519 secret.
    pub seal_secret: [u8; 32],
    /// The container's X25519 Noise static secret (secure channel of a dongle).
    pub noise_secret: [u8; 32],
    /// The publisher key pinned at the first activation.
    pub publisher_key: Option<[u8; 32]>,
    /// The publisher's certificate for this container.
    pub certificate: Option<Vec<u8>>,
    /// Installed licenses.
    pub licenses: Vec<StoredLicense>,
    /// The latest time this container has seen.
    pub clock_high_water: u64,
    /// When the container was made.
    pub created_at: u64,
    /// Usage-log checkpoints signed so far: each signature carries the next number
    /// ([`crate::license::usage::UsageStatement::sequence`]), so a publisher sees signatures
    /// missing from a log, or a container state put back to an earlier copy.
    pub usage_signatures: u64,
    /// Seats of network licenses lent to this container ([`BorrowedSeat`]).
    pub borrowed: Vec<BorrowedSeat>,
}

/// [`EngineState`] as format 2 wrote it (before `borrowed`).
#[derive(Deserialize)]
struct EngineStateV2 {
    _version: u16,
    serial: String,
    kind: ContainerKind,
    vendor_id: u32,
    sign_seed: [u8; 32],
    seal_secret: [u8; 32],
    noise_secret: [u8; 32],
    publisher_key: Option<[u8; 32]>,
    certificate: Option<Vec<u8>>,
    licenses: Vec<StoredLicense>,
    clock_high_water: u64,
    created_at: u64,
    usage_signatures: u64,
}

/// [`EngineState`] as format 1 wrote it (before `usage_signatures`).
#[derive(Deserialize)]
struct EngineStateV1 {
    _version: u16,
    serial: String,
    kind: ContainerKind,
    vendor_id: u32,
    sign_seed: [u8; 32],
    seal_secret: [u8; 32],
    noise_secret: [u8; 32],
    publisher_key: Option<[u8; 32]>,
    certificate: Option<Vec<u8>>,
    licenses: Vec<StoredLicense>,
    clock_high_water: u64,
    created_at: u64,
}

impl EngineState {
    /// Decodes a persisted state of this format, of format 2 (no borrowed seats) or of
    /// format 1 (no usage signature count either: it starts at 0).
    pub fn decode(bytes: &[u8]) -> std::result::Result<EngineState, postcard::Error> {
        let version = postcard::take_from_bytes::<u16>(bytes).map(|(v, _)| v);
        if version == Ok(1) {
            let mut v1: EngineStateV1 = postcard::from_bytes(bytes)?;
            let state = EngineState {
                version: STATE_VERSION,
                serial: std::mem::take(&mut v1.serial),
                kind: v1.kind,
                vendor_id: v1.vendor_id,
                sign_seed: v1.sign_seed,
                seal_secret: v1.seal_secret,
                noise_secret: v1.noise_secret,
                publisher_key: v1.publisher_key,
                certificate: v1.certificate.take(),
                licenses: std::mem::take(&mut v1.licenses),
                clock_high_water: v1.clock_high_water,
                created_at: v1.created_at,
                usage_signatures: 0,
                borrowed: Vec::new(),
            };
            v1.sign_seed.zeroize();
            v1.seal_secret.zeroize();
            v1.noise_secret.zeroize();
            return Ok(state);
        }
        if version == Ok(2) {
            let mut v2: EngineStateV2 = postcard::from_bytes(bytes)?;
            let state = EngineState {
                version: STATE_VERSION,
                serial: std::mem::take(&mut v2.serial),
                kind: v2.kind,
                vendor_id: v2.vendor_id,
                sign_seed: v2.sign_seed,
                seal_secret: v2.seal_secret,
                noise_secret: v2.noise_secret,
                publisher_key: v2.publisher_key,
                certificate: v2.certificate.take(),
                licenses: std::mem::take(&mut v2.licenses),
                clock_high_water: v2.clock_high_water,
                created_at: v2.created_at,
                usage_signatures: v2.usage_signatures,
                borrowed: Vec::new(),
            };
            v2.sign_seed.zeroize();
            v2.seal_secret.zeroize();
            v2.noise_secret.zeroize();
            return Ok(state);
        }
        postcard::from_bytes(bytes)
    }
}

impl Drop for EngineState {
    fn drop(&mut self) {
        self.sign_seed.zeroize();
        self.seal_secret.zeroize();
        self.noise_secret.zeroize();
    }
}

/// What an app wants to use a license for.
#[derive(Clone, Debug)]
pub struct UseQuery {
    /// Feature bits required.
    pub features: u32,
    /// The time now.
    pub now: u64,
    /// The machine the app runs on.
    pub machine: MachineKind,
}

/// What an installed activation changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallReport {
    /// Licenses new to the container.
    pub added: usize,
    /// Licenses that replaced one with the same id.
    pub replaced: usize,
}

/// The engine.
pub struct Engine {
    state: EngineState,
    signing: SigningKey,
    seal: StaticSecret,
    /// Decoded licenses, in the same order as `state.licenses`.
    licenses: Vec<License>,
    /// The licenses of the borrowed seats, in the same order as `state.borrowed`.
    borrowed: Vec<License>,
    rollback: bool,
    hosts: HostTracker,
    /// What keeps the usage-signature count from going back, as the container that runs
    /// this engine says (not persisted: a dongle's firmware, a software container's TPM).
    usage_anchor: CounterAnchor,
}

/// Who asks, and when: what a container needs besides the request itself.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// Wall-clock time, seconds since the Unix epoch.
    pub now: u64,
    /// A monotonic clock in milliseconds (for the host window).
    pub now_ms: u64,
    /// The host's channel key, when the request came over a secure channel.
    pub host: Option<[u8; 32]>,
    /// The kind of machine the host says it is.
    pub machine: MachineKind,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("serial", &self.state.serial)
            .field("kind", &self.state.kind)
            .field("licenses", &self.licenses.len())
            .finish_non_exhaustive()
    }
}

/// A new container serial: a prefix and 12 random hex digits in groups of four.
pub fn new_serial(kind: ContainerKind) -> String {
    let h = hex::encode_upper(crate::util::random::<6>());
    let prefix = match kind {
        ContainerKind::Software => "SW",
        ContainerKind::Dongle => "DG",
    };
    format!("{prefix}-{}-{}-{}", &h[..4], &h[4..8], &h[8..])
}

impl Engine {
    /// A fresh container with new keys and no licenses.
    pub fn create(kind: ContainerKind, vendor_id: u32, now: u64) -> Engine {
        let state = EngineState {
            version: STATE_VERSION,
            serial: new_serial(kind),
            kind,
            vendor_id,
            sign_seed: crate::util::random(),
            seal_secret: crate::util::random(),
            noise_secret: crate::util::random(),
            publisher_key: None,
            certificate: None,
            licenses: Vec::new(),
            clock_high_water: now,
            created_at: now,
            usage_signatures: 0,
            borrowed: Vec::new(),
        };
        // A fresh state has no licenses to decode, so this cannot fail.
        Engine::from_state(state).unwrap_or_else(|_| unreachable!())
    }

    /// Rebuilds an engine from its persisted state.
    pub fn from_state(state: EngineState) -> Result<Engine> {
        if state.version != STATE_VERSION {
            return Err(Error::UnknownVersion {
                what: "container state",
                found: state.version,
                supported: STATE_VERSION,
            });
        }
        let licenses = state
            .licenses
            .iter()
            .map(|l| SignedLicense::parse_unverified(&l.bytes))
            .collect::<Result<Vec<_>>>()?;
        let borrowed = state
            .borrowed
            .iter()
            .map(borrowed_license)
            .collect::<Result<Vec<_>>>()?;
        Ok(Engine {
            signing: SigningKey::from_bytes(&state.sign_seed),
            seal: StaticSecret::from(state.seal_secret),
            licenses,
            borrowed,
            rollback: false,
            hosts: HostTracker::new(SharePolicy::default()),
            // A dongle keeps its count in its firmware; a software container says whether its
            // count is anchored (set_usage_anchor).
            usage_anchor: match state.kind {
                ContainerKind::Dongle => CounterAnchor::Dongle,
                ContainerKind::Software => CounterAnchor::Unanchored,
            },
            state,
        })
    }

    /// Says what keeps this container's usage-signature count from going back (a software
    /// container bound to a TPM: `Tpm`); its usage statements carry it, signed.
    pub fn set_usage_anchor(&mut self, anchor: CounterAnchor) {
        self.usage_anchor = anchor;
    }

    /// What keeps the usage-signature count from going back.
    pub fn usage_anchor(&self) -> CounterAnchor {
        self.usage_anchor
    }

    /// Sets the exclusive-mode policy (window and cooldown).
    pub fn set_share_policy(&mut self, policy: SharePolicy) {
        self.hosts = HostTracker::new(policy);
    }

    /// Records that `host` opened a channel or spoke at `now_ms`.
    pub fn observe_host(&mut self, host: [u8; 32], now_ms: u64) {
        self.hosts.observe(host, now_ms);
    }

    /// Whether the container is locked out as shared at `now_ms`.
    pub fn is_shared(&self, now_ms: u64) -> bool {
        self.hosts.is_shared(now_ms)
    }

    /// The index of the license with `license_id`.
    pub fn index_of(&self, license_id: &[u8; 16]) -> Option<usize> {
        self.licenses
            .iter()
            .position(|l| l.license_id == *license_id)
    }

    /// Answers a protocol request. License operations are refused while the container is
    /// shared by several hosts; a request that changes the state (`Program`, a clock that
    /// moved) returns `true` in the second place so the caller persists it.
    pub fn handle(&mut self, req: Request, ctx: &RequestContext) -> (Response, bool) {
        // Every host that uses the container counts; the publisher's tool programming it
        // (activation request, program) does not, so a freshly programmed dongle is not
        // locked out by the programming station.
        let programming = matches!(req, Request::ActivationRequest | Request::Program { .. });
        if let Some(h) = ctx.host
            && !programming
        {
            self.hosts.observe(h, ctx.now_ms);
        }
        let moved = self.observe_clock(ctx.now);
        match self.answer(req, ctx) {
            Ok((r, changed)) => (r, changed || moved),
            Err(e) => (error_response(&e), moved),
        }
    }

    fn licensed(&self, license_id: &[u8; 16], ctx: &RequestContext) -> Result<usize> {
        if self.hosts.is_shared(ctx.now_ms) {
            return Err(Error::DongleShared(format!(
                "{} is used by more than one host; it serves licenses again once one host has had it alone for {} s",
                self.state.serial,
                self.hosts.policy().window_ms / 1000
            )));
        }
        let i = self.index_of(license_id).ok_or_else(|| {
            Error::NoLicense(format!(
                "{} holds no license {}",
                self.state.serial,
                hex::encode(license_id)
            ))
        })?;
        self.check_use(
            i,
            &UseQuery {
                features: 0,
                now: ctx.now,
                machine: ctx.machine.clone(),
            },
        )?;
        Ok(i)
    }

    fn answer(&mut self, req: Request, ctx: &RequestContext) -> Result<(Response, bool)> {
        let shared = self.hosts.is_shared(ctx.now_ms);
        let refuse_shared = || {
            Error::DongleShared(format!(
                "{} is used by more than one host",
                self.state.serial
            ))
        };
        Ok(match req {
            Request::Identify => (
                Response::Identity {
                    serial: self.state.serial.clone(),
                    kind: self.state.kind,
                    vendor_id: self.state.vendor_id,
                    sign_key: self.sign_key().to_bytes(),
                    certificate: self.state.certificate.clone(),
                    clock_high_water: self.state.clock_high_water,
                    shared,
                },
                false,
            ),
            Request::ListLicenses { offset } => {
                if shared {
                    return Err(refuse_shared());
                }
                // One page at a time: an answer must fit one channel frame.
                let all = &self.state.licenses;
                let mut page = Vec::new();
                let mut bytes = 0;
                for l in all.iter().skip(offset as usize) {
                    if !page.is_empty() && bytes + l.bytes.len() + 8 > LIST_PAGE_BYTES {
                        break;
                    }
                    bytes += l.bytes.len() + 8;
                    page.push(l.bytes.clone());
                }
                (
                    Response::Licenses {
                        licenses: page,
                        total: all.len() as u32,
                    },
                    false,
                )
            }
            Request::SeatTicket {
                license_id,
                challenge,
            } => {
                self.licensed(&license_id, ctx)?;
                let mut m = b"tessera seat ticket v1".to_vec();
                m.extend_from_slice(&license_id);
                m.extend_from_slice(&challenge);
                m.extend_from_slice(&ctx.host.unwrap_or([0; 32]));
                m.extend_from_slice(&ctx.now.to_le_bytes());
                (
                    Response::Ticket {
                        signature: self.sign(&m).to_vec(),
                        now: ctx.now,
                    },
                    false,
                )
            }
            Request::DeriveKey { license_id, header } => {
                let i = self.licensed(&license_id, ctx)?;
                let h = cipher::Header::parse_header(&header)?;
                // A direct-mode header's message key too: a license server asks for it for
                // a network seat, which keeps it to open that one message again while the
                // server is out of reach. It opens only that message, whose plaintext the
                // same caller could have had from `Decrypt`; the product secret stays here.
                (Response::Key(*self.message_key(i, &h)?), false)
            }
            Request::SeatKey { license_id, key_id } => {
                let i = self.licensed(&license_id, ctx)?;
                (Response::Key(*self.seat_key(i, &key_id)?), false)
            }
            Request::Encrypt {
                license_id,
                plaintext,
            } => {
                let i = self.licensed(&license_id, ctx)?;
                let mut out = vec![0u8; cipher::ciphertext_len(plaintext.len())];
                let n = self.encrypt_direct(i, &plaintext, &mut out)?;
                out.truncate(n);
                (Response::Data(out), false)
            }
            Request::Decrypt {
                license_id,
                ciphertext,
            } => {
                let i = self.licensed(&license_id, ctx)?;
                let mut out = vec![0u8; cipher::plaintext_len(ciphertext.len())];
                let n = self.decrypt_direct(i, &ciphertext, &mut out)?;
                out.truncate(n);
                (Response::Data(out), false)
            }
            Request::ActivationRequest => {
                let req = self.activation_request(
                    &Fingerprint::default(),
                    ctx.machine.clone(),
                    "dongle",
                    ctx.now,
                )?;
                (Response::ActivationRequest(req), false)
            }
            Request::Program { activation } => {
                let r = self.install_activation(&activation, None, ctx.now)?;
                (
                    Response::Programmed {
                        added: r.added as u32,
                        replaced: r.replaced as u32,
                    },
                    true,
                )
            }
            Request::Delegate { server_key, expiry } => {
                if shared {
                    return Err(refuse_shared());
                }
                let (delegation, certificate) = self.delegate(server_key, ctx.now, expiry)?;
                (
                    Response::Delegation {
                        delegation,
                        certificate,
                    },
                    false,
                )
            }
            Request::SignUsage { digest } => {
                if shared {
                    return Err(refuse_shared());
                }
                let (statement, certificate) = self.sign_usage(digest, ctx.now)?;
                (
                    Response::UsageSignature {
                        statement,
                        certificate,
                    },
                    true,
                )
            }
            Request::Lend {
                license_id,
                seat_id,
                borrower,
                days,
            } => {
                let i = self.licensed(&license_id, ctx)?;
                let (grant, certificate) = self.lend(i, seat_id, &borrower, days, ctx.now)?;
                (Response::Lent { grant, certificate }, false)
            }
            Request::SignPoolMember {
                license_id,
                server_key,
                cluster_id,
            } => {
                let i = self.licensed(&license_id, ctx)?;
                let r = self.sign_pool_member(i, server_key, cluster_id, ctx.now)?;
                (Response::PoolRegistration(r), false)
            }
            Request::Clock { now } => {
                let rollback =
                    now.saturating_add(CLOCK_TOLERANCE_SECS) < self.state.clock_high_water;
                (
                    Response::Clock {
                        high_water: self.state.clock_high_water,
                        rollback,
                    },
                    false,
                )
            }
        })
    }

    /// Lends a seat `seat_id` of license `index` (checked usable by the caller) for `days` to
    /// the container whose activation request is `borrower` (`license::borrow`): seals the
    /// product secret to it and signs the grant. Refused while the clock runs behind the
    /// high-water mark (the grant's end is computed from it). Returns the signed grant and the
    /// container's certificate, which a borrower checks it against.
    pub fn lend(
        &self,
        index: usize,
        seat_id: [u8; 16],
        borrower: &[u8],
        days: u32,
        now: u64,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        if self.rollback || now.saturating_add(CLOCK_TOLERANCE_SECS) < self.state.clock_high_water {
            return Err(Error::ClockRollback {
                now,
                high_water: self.state.clock_high_water,
            });
        }
        let lic = self
            .licenses
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no license at index {index}")))?;
        let certificate = self.state.certificate.clone().ok_or_else(|| {
            Error::NoLicense(format!(
                "{} has no publisher certificate to lend a seat with",
                self.state.serial
            ))
        })?;
        let req = borrow::read_borrower(borrower, self.state.vendor_id)?;
        if req.serial == self.state.serial {
            return Err(Error::InvalidArgument(format!(
                "{} cannot lend a seat to itself",
                self.state.serial
            )));
        }
        let until = borrow::borrow_until(lic, days, now)?;
        let secret = cipher::seal_secret(
            &req.seal_key,
            lic.vendor_id,
            lic.product_code,
            &borrow::secret_context(&req.serial, &seat_id),
            self.secret(index)?,
        )?;
        let grant = BorrowGrant {
            seat_id,
            vendor_id: lic.vendor_id,
            license: self.state.licenses[index].bytes.clone(),
            lender_serial: self.state.serial.clone(),
            borrower_serial: req.serial,
            borrower_key: req.sign_key,
            borrower_host: req.hostname,
            issued_at: now,
            until,
            secret,
        };
        Ok((grant.sign(&self.signing)?, certificate))
    }

    /// Signs a delegation of this container's licenses to the license server whose Noise
    /// static key is `server_key`, valid until `expiry`. Returns it with the container's
    /// certificate; a container that was never activated has none to chain to.
    pub fn delegate(
        &self,
        server_key: [u8; 32],
        now: u64,
        expiry: u64,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let certificate = self.state.certificate.clone().ok_or_else(|| {
            Error::NoLicense(format!(
                "{} has no publisher certificate to delegate",
                self.state.serial
            ))
        })?;
        let d = Delegation {
            vendor_id: self.state.vendor_id,
            serial: self.state.serial.clone(),
            container_key: self.sign_key().to_bytes(),
            server_key,
            issued_at: now,
            expiry,
        };
        Ok((sign_delegation(&d, &self.signing)?, certificate))
    }

    /// Signs this container's registration as a member of the pool of license `index`
    /// (checked usable by the caller) for the server key `server_key` in the etcd cluster
    /// `cluster_id`, dated no earlier than the clock's high-water mark. A license that is not
    /// a pool license naming this container is refused.
    pub fn sign_pool_member(
        &self,
        index: usize,
        server_key: [u8; 32],
        cluster_id: u64,
        now: u64,
    ) -> Result<Vec<u8>> {
        let lic = self
            .licenses
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no license at index {index}")))?;
        let Some((pool, _)) = lic.binding.pool() else {
            return Err(Error::BindingMismatch(format!(
                "license {} is not a pool license",
                lic.id_hex()
            )));
        };
        let key = self.sign_key().to_bytes();
        if !lic.binding.admits(&self.state.serial, Some(&key)) {
            return Err(Error::BindingMismatch(format!(
                "{} is not a member of pool {pool}",
                self.state.serial
            )));
        }
        crate::license::PoolRegistration {
            pool: pool.to_string(),
            license_id: lic.license_id,
            serial: self.state.serial.clone(),
            container_key: key,
            server_key,
            cluster_id,
            signed_at: now.max(self.state.clock_high_water),
        }
        .sign(&self.signing)
    }

    /// Signs a usage log checkpoint digest (`license::usage::checkpoint_digest`) as a
    /// `UsageStatement` envelope, dated no earlier than the clock's high-water mark. Returns it
    /// with the container's certificate, which a publisher checks it against; a container
    /// that was never activated has none.
    /// Each signature takes the next number of the container's count of them
    /// ([`EngineState::usage_signatures`]): the caller persists the state.
    pub fn sign_usage(&mut self, digest: [u8; 32], now: u64) -> Result<(Vec<u8>, Vec<u8>)> {
        let certificate = self.state.certificate.clone().ok_or_else(|| {
            Error::NoLicense(format!(
                "{} has no publisher certificate to sign usage with",
                self.state.serial
            ))
        })?;
        let st = crate::license::usage::UsageStatement {
            vendor_id: self.state.vendor_id,
            serial: self.state.serial.clone(),
            container_key: self.sign_key().to_bytes(),
            digest,
            signed_at: now.max(self.state.clock_high_water),
            sequence: self.state.usage_signatures + 1,
            anchor: self.usage_anchor,
        };
        let statement = envelope::sign(Kind::UsageCheckpoint, &st, &self.signing)?;
        self.state.usage_signatures += 1;
        Ok((statement, certificate))
    }

    /// The persisted state.
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// The container serial.
    pub fn serial(&self) -> &str {
        &self.state.serial
    }

    /// The container's Ed25519 public key.
    pub fn sign_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The container's X25519 public key.
    pub fn seal_key(&self) -> [u8; 32] {
        XPublicKey::from(&self.seal).to_bytes()
    }

    /// The container's Noise static secret (the secure channel of a dongle).
    pub fn noise_secret(&self) -> &[u8; 32] {
        &self.state.noise_secret
    }

    /// The container's Noise static public key.
    pub fn noise_key(&self) -> [u8; 32] {
        XPublicKey::from(&StaticSecret::from(self.state.noise_secret)).to_bytes()
    }

    /// The publisher certificate installed with the first activation, if any.
    pub fn certificate(&self) -> Option<&[u8]> {
        self.state.certificate.as_deref()
    }

    /// Signs `msg` with the container key.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// The installed licenses (decoded, signatures not re-checked).
    pub fn licenses(&self) -> &[License] {
        &self.licenses
    }

    /// Indexes of the licenses that verify against `publisher` and belong to `vendor_id`.
    pub fn verified_licenses(&self, publisher: &VerifyingKey, vendor_id: u32) -> Vec<usize> {
        self.state
            .licenses
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                SignedLicense::verify(&l.bytes, publisher)
                    .map(|s| s.license.vendor_id == vendor_id)
                    .unwrap_or(false)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Tells the engine the time. Advances the high-water mark; a time more than
    /// [`CLOCK_TOLERANCE_SECS`] behind it marks the clock as rolled back (time-limited
    /// licenses are refused until the clock catches up). Returns whether the mark moved.
    pub fn observe_clock(&mut self, now: u64) -> bool {
        if now.saturating_add(CLOCK_TOLERANCE_SECS) < self.state.clock_high_water {
            self.rollback = true;
            return false;
        }
        self.rollback = false;
        if now > self.state.clock_high_water {
            self.state.clock_high_water = now;
            return true;
        }
        false
    }

    /// Checks that license `index` may be used for `query`.
    pub fn check_use(&self, index: usize, query: &UseQuery) -> Result<&License> {
        let lic = self
            .licenses
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no license at index {index}")))?;
        // The state may hold a license another container's activation carried (an edited
        // state, a neighbour's license): only one bound to this container is honoured.
        lic.check_binding(&self.state.serial, Some(&self.sign_key().to_bytes()))?;
        let behind = self.rollback
            || query.now.saturating_add(CLOCK_TOLERANCE_SECS) < self.state.clock_high_water;
        lic.check(
            query.features,
            query.now,
            &query.machine,
            behind.then_some(self.state.clock_high_water),
        )?;
        Ok(lic)
    }

    fn secret(&self, index: usize) -> Result<&[u8; 32]> {
        self.state
            .licenses
            .get(index)
            .map(|l| &l.secret)
            .ok_or_else(|| Error::Internal(format!("no license at index {index}")))
    }

    /// The per-message key for a header of either format, under license `index`'s product secret.
    /// The caller has checked the license with [`Engine::check_use`].
    pub fn message_key(&self, index: usize, header: &Header) -> Result<Key> {
        let lic = self
            .licenses
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no license at index {index}")))?;
        if header.vendor_id != lic.vendor_id || header.product_code != lic.product_code {
            return Err(Error::NoLicense(format!(
                "ciphertext is for vendor {:#x} product {}, the seat holds vendor {:#x} product {}",
                header.vendor_id, header.product_code, lic.vendor_id, lic.product_code
            )));
        }
        Ok(cipher::message_key(self.secret(index)?, header))
    }

    /// The seat key of `key_id` under license `index`'s product secret
    /// ([`cipher::seat_key`]). The caller has checked the license with [`Engine::check_use`].
    pub fn seat_key(&self, index: usize, key_id: &[u8; cipher::KEY_ID_LEN]) -> Result<Key> {
        let lic = self
            .licenses
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no license at index {index}")))?;
        Ok(cipher::seat_key(
            self.secret(index)?,
            lic.vendor_id,
            lic.product_code,
            key_id,
        ))
    }

    /// Encrypts inside the container (direct mode) into `out`; returns the bytes written.
    pub fn encrypt_direct(&self, index: usize, plaintext: &[u8], out: &mut [u8]) -> Result<usize> {
        let lic = self
            .licenses
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no license at index {index}")))?;
        let header = Header::new(Mode::Direct, lic.vendor_id, lic.product_code);
        let key = self.message_key(index, &header)?;
        cipher::seal_with_key(&key, &header, plaintext, out)
    }

    /// Decrypts inside the container (any mode) into `out`; returns the plaintext length.
    pub fn decrypt_direct(&self, index: usize, ct: &[u8], out: &mut [u8]) -> Result<usize> {
        let header = Header::parse(ct)?;
        let key = self.message_key(index, &header)?;
        cipher::open_with_key(&key, &header, ct, out)
    }

    /// Writes an activation request for this container, signed with its own key.
    pub fn activation_request(
        &self,
        fingerprint: &Fingerprint,
        machine: MachineKind,
        hostname: &str,
        now: u64,
    ) -> Result<Vec<u8>> {
        let req = ActivationRequest {
            vendor_id: self.state.vendor_id,
            serial: self.state.serial.clone(),
            kind: self.state.kind,
            sign_key: self.sign_key().to_bytes(),
            seal_key: self.seal_key(),
            noise_key: self.noise_key(),
            fingerprint: fingerprint.digests(self.state.serial.as_bytes()),
            machine,
            hostname: hostname.to_string(),
            created_at: now,
        };
        envelope::sign(Kind::ActivationRequest, &req, &self.signing)
    }

    /// Installs an activation. `publisher` is the key the caller trusts (the app's); when
    /// `None`, the key pinned at the first activation is used, or, for the very first, the
    /// key the activation names. Keeps the licenses already installed (a license with the
    /// same id is replaced). All or nothing: on error the engine is unchanged.
    pub fn install_activation(
        &mut self,
        bytes: &[u8],
        publisher: Option<&VerifyingKey>,
        now: u64,
    ) -> Result<InstallReport> {
        let env = Envelope::parse(Kind::Activation, bytes)?;
        let act: Activation = env.decode()?;
        let named = VerifyingKey::from_bytes(&act.publisher_key)
            .map_err(|_| Error::BadSignature("activation names an invalid publisher key".into()))?;
        let pinned = self
            .state
            .publisher_key
            .map(|k| VerifyingKey::from_bytes(&k))
            .transpose()
            .map_err(|_| Error::Internal("pinned publisher key is invalid".into()))?;
        let trusted = publisher.copied().or(pinned).unwrap_or(named);
        if let Some(p) = pinned
            && p != trusted
        {
            return Err(Error::BadSignature(
                "this container was activated by another publisher key".into(),
            ));
        }
        env.verify(&trusted)?;
        // A blank dongle takes the vendor of the publisher that programs it first.
        let vendor_id = if self.state.vendor_id == 0 && self.state.kind == ContainerKind::Dongle {
            act.vendor_id
        } else {
            self.state.vendor_id
        };
        if act.vendor_id != vendor_id {
            return Err(Error::WrongVendor {
                expected: vendor_id,
                found: act.vendor_id,
            });
        }
        if act.serial != self.state.serial || act.sign_key != self.sign_key().to_bytes() {
            return Err(Error::BindingMismatch(format!(
                "activation is for container {}, this is {}",
                act.serial, self.state.serial
            )));
        }
        let cert: ContainerCertificate =
            Envelope::open(Kind::Certificate, &act.certificate, &trusted)?;
        if cert.serial != self.state.serial
            || cert.sign_key != self.sign_key().to_bytes()
            || cert.seal_key != self.seal_key()
            || cert.noise_key != self.noise_key()
        {
            return Err(Error::BindingMismatch(
                "certificate names another container's keys".into(),
            ));
        }
        let mut licenses = self.state.licenses.clone();
        let mut decoded = self.licenses.clone();
        let mut report = InstallReport::default();
        for lb in &act.licenses {
            let s = SignedLicense::verify(lb, &trusted)?;
            s.check_vendor(vendor_id)?;
            // A pool license carries the whole member list: each member installs it.
            if !s
                .license
                .binding
                .admits(&self.state.serial, Some(&self.sign_key().to_bytes()))
            {
                return Err(Error::BindingMismatch(format!(
                    "license {} is bound to {}",
                    s.license.id_hex(),
                    s.license.binding
                )));
            }
            let sealed = act
                .secrets
                .iter()
                .find(|x| {
                    x.vendor_id == s.license.vendor_id && x.product_code == s.license.product_code
                })
                .ok_or_else(|| {
                    Error::malformed(
                        "activation",
                        format!("no product secret for product {}", s.license.product_code),
                    )
                })?;
            let secret: Zeroizing<[u8; 32]> =
                cipher::open_secret(&self.seal, self.state.serial.as_bytes(), sealed)?;
            let stored = StoredLicense {
                bytes: lb.clone(),
                secret: *secret,
            };
            match decoded
                .iter()
                .position(|l| l.license_id == s.license.license_id)
            {
                Some(i) => {
                    licenses[i] = stored;
                    decoded[i] = s.license;
                    report.replaced += 1;
                }
                None => {
                    licenses.push(stored);
                    decoded.push(s.license);
                    report.added += 1;
                }
            }
        }
        self.state.vendor_id = vendor_id;
        self.state.licenses = licenses;
        self.licenses = decoded;
        self.state.publisher_key = Some(trusted.to_bytes());
        self.state.certificate = Some(act.certificate.clone());
        self.observe_clock(now);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_1_state_loads_with_no_usage_signatures_and_signatures_are_numbered() {
        let mut e = Engine::create(ContainerKind::Dongle, 7, 1_000);
        e.state.usage_signatures = 0;
        // Format 1 is format 3 without the count and the borrowed seats at the end (a 0
        // count and no seats are one byte each).
        let mut v1 = e.state().clone();
        v1.version = 1;
        let mut bytes = postcard::to_allocvec(&v1).unwrap();
        assert_eq!(bytes.pop(), Some(0));
        assert_eq!(bytes.pop(), Some(0));
        let old = EngineState::decode(&bytes).unwrap();
        assert_eq!((old.version, old.usage_signatures), (STATE_VERSION, 0));
        assert_eq!(old.serial, e.serial());
        assert_eq!(old.sign_seed, e.state().sign_seed);
        let mut old = Engine::from_state(old).unwrap();
        // Each signature takes the next number, and the container asks to be persisted.
        old.state.certificate = Some(vec![1, 2, 3]);
        let ctx = RequestContext {
            now: 2_000,
            now_ms: 0,
            host: None,
            machine: crate::host::MachineKind::Physical,
        };
        for n in 1..=3u64 {
            let (r, persist) = old.handle(
                Request::SignUsage {
                    digest: [n as u8; 32],
                },
                &ctx,
            );
            assert!(persist, "a usage signature changes the state");
            let Response::UsageSignature { statement, .. } = r else {
                panic!("{r:?}")
            };
            let st: crate::license::usage::UsageStatement =
                envelope::Envelope::parse(Kind::UsageCheckpoint, &statement)
                    .unwrap()
                    .decode()
                    .unwrap();
            assert_eq!(st.sequence, n);
        }
        assert_eq!(old.state().usage_signatures, 3);
        // The current format round-trips the count.
        let again = EngineState::decode(&postcard::to_allocvec(old.state()).unwrap()).unwrap();
        assert_eq!(again.usage_signatures, 3);
    }

    /// A pool activation installs the one pool license in each member, never in a container
    /// outside the pool; each member signs its registration, which verifies for its own key
    /// only; a container refuses to register for a license that is not a pool license.
    #[test]
    fn each_pool_member_installs_the_pool_license_and_signs_its_registration() {
        use crate::license::{CountingUnit, PoolRegistration, VmPolicy};
        use crate::publisher::{LicenseSpec, PublisherKey};
        let now = 1_800_000_000;
        let key = PublisherKey::generate(9, "p");
        let spec = LicenseSpec {
            product_code: 1,
            product_name: "P".into(),
            features: 1,
            quantity: 4,
            counting_unit: CountingUnit::Station,
            exclusive_allowed: false,
            borrow_days: 0,
            expiry: None,
            vm_policy: VmPolicy::Allow,
        };
        let mut members: Vec<Engine> = (0..3)
            .map(|_| Engine::create(ContainerKind::Software, 9, now))
            .collect();
        let reqs: Vec<Vec<u8>> = members
            .iter()
            .map(|e| {
                e.activation_request(&Fingerprint::default(), MachineKind::Physical, "m", now)
                    .unwrap()
            })
            .collect();
        let acts = key
            .activate_pool("site-a", &reqs, std::slice::from_ref(&spec), now)
            .unwrap();
        assert_eq!(acts.len(), 3);
        let ctx = RequestContext {
            now,
            now_ms: 0,
            host: None,
            machine: MachineKind::Physical,
        };
        for (e, (serial, act)) in members.iter_mut().zip(&acts) {
            assert_eq!(serial, e.serial());
            e.install_activation(act, Some(&key.public_key()), now)
                .unwrap();
        }
        let lic = members[0].licenses()[0].clone();
        for e in &members {
            assert_eq!(e.licenses()[0], lic, "one license, one id and quantity");
        }
        assert_eq!(lic.binding.pool().unwrap().1.len(), 3);
        for (i, e) in members.iter_mut().enumerate() {
            let (r, _) = e.handle(
                Request::SignPoolMember {
                    license_id: lic.license_id,
                    server_key: [7; 32],
                    cluster_id: 99,
                },
                &ctx,
            );
            let Response::PoolRegistration(bytes) = r else {
                panic!("{r:?}")
            };
            let (index, reg) = PoolRegistration::verify(&bytes, &lic, 99).unwrap();
            assert_eq!((index, reg.server_key, reg.signed_at), (i, [7; 32], now));
        }
        // A stranger cannot install a member's activation, nor the pool license.
        let mut stranger = Engine::create(ContainerKind::Software, 9, now);
        assert!(matches!(
            stranger.install_activation(&acts[0].1, Some(&key.public_key()), now),
            Err(Error::BindingMismatch(_))
        ));
        // A single-container license is not a pool license to register for.
        let req = stranger
            .activation_request(&Fingerprint::default(), MachineKind::Physical, "s", now)
            .unwrap();
        let act = key.activate(&req, &[spec], now).unwrap();
        stranger
            .install_activation(&act, Some(&key.public_key()), now)
            .unwrap();
        let (r, _) = stranger.handle(
            Request::SignPoolMember {
                license_id: stranger.licenses()[0].license_id,
                server_key: [7; 32],
                cluster_id: 99,
            },
            &ctx,
        );
        assert!(
            matches!(&r, Response::Error { message, .. } if message.contains("not a pool license")),
            "{r:?}"
        );
        // The same request twice is refused, and a bad pool name too.
        assert!(
            key.activate_pool("site-a", &[reqs[0].clone(), reqs[0].clone()], &[], now)
                .is_err()
        );
        let one = LicenseSpec {
            product_code: 1,
            product_name: "P".into(),
            features: 1,
            quantity: 1,
            counting_unit: CountingUnit::Station,
            exclusive_allowed: false,
            borrow_days: 0,
            expiry: None,
            vm_policy: VmPolicy::Allow,
        };
        let e = key
            .activate_pool(
                "site-a",
                &[reqs[0].clone(), reqs[0].clone()],
                std::slice::from_ref(&one),
                now,
            )
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        assert!(key.activate_pool("a/b", &reqs, &[one], now).is_err());
    }

    /// A container lends a seat of a borrowable license: the grant chains to the publisher,
    /// is for the borrowing container and seals the product secret to it; refused for a
    /// license that does not allow it, days beyond it, a borrower that is not what it says,
    /// itself, and a clock behind the container's mark.
    #[test]
    fn a_container_lends_a_seat_only_as_its_license_allows() {
        use crate::license::borrow::{self, BorrowGrant, DAY};
        use crate::license::{CountingUnit, VmPolicy};
        use crate::publisher::{LicenseSpec, PublisherKey};
        let now = 1_800_000_000;
        let key = PublisherKey::generate(9, "p");
        let mut lender = Engine::create(ContainerKind::Software, 9, now);
        let req = lender
            .activation_request(&Fingerprint::default(), MachineKind::Physical, "srv", now)
            .unwrap();
        let spec = |product_code, borrow_days| LicenseSpec {
            product_code,
            product_name: "P".into(),
            features: 1,
            quantity: 5,
            counting_unit: CountingUnit::Station,
            exclusive_allowed: false,
            borrow_days,
            expiry: None,
            vm_policy: VmPolicy::Allow,
        };
        let act = key.activate(&req, &[spec(1, 3), spec(2, 0)], now).unwrap();
        lender
            .install_activation(&act, Some(&key.public_key()), now)
            .unwrap();
        let id = |i: usize| lender.licenses()[i].license_id;
        let (lid, not_borrowable) = (id(0), id(1));
        let laptop = Engine::create(ContainerKind::Software, 9, now);
        let borrower = laptop
            .activation_request(
                &Fingerprint::default(),
                MachineKind::Physical,
                "laptop",
                now,
            )
            .unwrap();
        let ctx = |now| RequestContext {
            now,
            now_ms: 0,
            host: None,
            machine: MachineKind::Physical,
        };
        let lend = |e: &mut Engine, license_id, borrower: &[u8], days, now| {
            e.handle(
                Request::Lend {
                    license_id,
                    seat_id: [4; 16],
                    borrower: borrower.to_vec(),
                    days,
                },
                &ctx(now),
            )
            .0
        };
        let refused = |r: Response| match r {
            Response::Error { status, message } => {
                crate::container::protocol::response_error(status, message)
            }
            other => panic!("lent: {other:?}"),
        };
        let Response::Lent { grant, certificate } = lend(&mut lender, lid, &borrower, 2, now)
        else {
            panic!()
        };
        let (g, lic) = BorrowGrant::verify(
            &grant,
            &certificate,
            &key.public_key(),
            9,
            laptop.serial(),
            &laptop.sign_key().to_bytes(),
        )
        .unwrap();
        assert_eq!(
            (g.issued_at, g.until, lic.license_id),
            (now, now + 2 * DAY, lid)
        );
        assert_eq!(g.borrower_host, "laptop");
        let seal = StaticSecret::from(laptop.state().seal_secret);
        let secret = cipher::open_secret(
            &seal,
            &borrow::secret_context(laptop.serial(), &[4; 16]),
            &g.secret,
        )
        .unwrap();
        assert_eq!(*secret, lender.state().licenses[0].secret);

        let e = refused(lend(&mut lender, not_borrowable, &borrower, 1, now));
        assert!(matches!(e, Error::NoLicense(_)), "{e}");
        for days in [0, 4] {
            let e = refused(lend(&mut lender, lid, &borrower, days, now));
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        }
        let e = refused(lend(&mut lender, [0; 16], &borrower, 1, now));
        assert!(matches!(e, Error::NoLicense(_)), "{e}");
        let mut forged = borrower.clone();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert!(matches!(
            refused(lend(&mut lender, lid, &forged, 1, now)),
            Error::BadSignature(_)
        ));
        let e = refused(lend(&mut lender, lid, b"junk", 1, now));
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
        let own = lender
            .activation_request(&Fingerprint::default(), MachineKind::Physical, "srv", now)
            .unwrap();
        assert!(matches!(
            refused(lend(&mut lender, lid, &own, 1, now)),
            Error::InvalidArgument(_)
        ));
        // The clock moves on a day, then back two: nothing is lent on it.
        assert!(matches!(
            lend(&mut lender, lid, &borrower, 1, now + DAY),
            Response::Lent { .. }
        ));
        let e = refused(lend(&mut lender, lid, &borrower, 1, now - DAY));
        assert!(matches!(e, Error::ClockRollback { .. }), "{e}");
    }
}
