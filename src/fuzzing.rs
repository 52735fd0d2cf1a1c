//! The bodies of the coverage-guided fuzz targets (`fuzz/`, `cargo +nightly fuzz`), one
//! function per decoder that outside bytes reach. Each decodes its input and must never
//! panic; where a decoded value re-encodes it checks the round trip, and where an input is
//! signed or authenticated it checks that only what the fixed test keys below signed is
//! accepted. A failed check panics, which is what the fuzzer reports.
//!
//! The stable test `tests/fuzz_corpus.rs` replays every committed corpus and regression file
//! through these same functions in every `make test`; it also writes the seed corpora
//! (`TESSERA_BLESS_FUZZ_CORPUS=1`) with the keys and builders here. Not a public API.

use std::collections::{HashMap, VecDeque};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::channel::{self, Channel, ClientHandshake, DeviceHandshake, DeviceHello, HostHello};
use crate::cipher::{self, HEADER_LEN, Header, OVERHEAD};
use crate::container::{ContainerKind, Engine, SoftwareContainer};
use crate::dongle::framing::{
    self, DeviceFraming, Message, REPORT_LEN, Reassembler, Report, ReportSink,
};
use crate::host::{Fingerprint, HostIdentity, MachineKind};
use crate::license::envelope::{self, Envelope, Kind};
use crate::license::usage;
use crate::license::{Activation, ActivationRequest, ContainerCertificate, Delegation, License};
use crate::net::proto::{self, ClientHello, DiscoveryAnswer, NetRequest, NetResponse, ServerHello};
use crate::publisher::PublisherKey;

/// The vendor of the fixed test publisher.
pub const VENDOR: u32 = 0x7E57;
/// The "now" (Unix seconds) the targets check validity at: 2030-01-01. Fixed, so that a
/// replay does not depend on the day it runs.
pub const NOW: u64 = 1_893_456_000;
/// The product secret ciphertexts are checked with.
pub const PRODUCT_SECRET: [u8; 32] = [0x5E; 32];

/// The fixed test publisher every signed seed is signed with.
pub fn publisher() -> &'static PublisherKey {
    static KEY: LazyLock<PublisherKey> =
        LazyLock::new(|| PublisherKey::from_parts(VENDOR, "fuzz", [0x11; 32], [0x22; 32]));
    &KEY
}

/// The fixed key of the test container (activation requests, delegations, checkpoints).
pub fn container_key() -> SigningKey {
    SigningKey::from_bytes(&[0x33; 32])
}

/// The host whose fingerprint the seed container is bound to.
pub fn host() -> &'static HostIdentity {
    static HOST: LazyLock<HostIdentity> = LazyLock::new(|| HostIdentity::simulated("fuzz"));
    &HOST
}

// ---------------------------------------------------------------------------------------
// The license server's wire.

/// The frame reader on a byte stream, then each frame decoded as every message the wire
/// carries after the handshake (requests, responses) and the discovery answer; every decoded
/// message must re-encode to a value that decodes equal.
pub fn wire_frame(data: &[u8]) {
    let mut r = data;
    for _ in 0..64 {
        let Ok(frame) = proto::read_frame(&mut r) else {
            break;
        };
        assert!(frame.len() <= proto::MAX_FRAME, "frame over the limit read");
        // The frame writer gives back the same bytes.
        let mut w = Vec::new();
        proto::write_frame(&mut w, &frame).expect("a read frame is writable");
        assert_eq!(
            proto::read_frame(&mut w.as_slice()).ok(),
            Some(frame.clone())
        );
        wire_message(&frame);
    }
    wire_message(data);
}

/// One decrypted message of the wire: a request (what the server decodes), a response (what
/// the client decodes), a discovery answer.
pub fn wire_message(data: &[u8]) {
    round_trip_versioned::<NetRequest>(data, "request");
    round_trip_versioned::<NetResponse>(data, "response");
    round_trip_versioned::<DiscoveryAnswer>(data, "discovery answer");
    if let Some(a) = crate::net::discovery::parse_answer(data) {
        // A server answers a probe with at most the probe's length.
        let probe = crate::net::discovery::probe();
        if let Some(answer) = crate::net::discovery::answer_probe(&probe, &a) {
            assert!(answer.len() <= probe.len());
            assert!(crate::net::discovery::parse_answer(&answer).is_some());
        }
    }
    let _ = crate::net::discovery::is_probe(data);
}

fn round_trip_versioned<T>(data: &[u8], what: &'static str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = proto::decode::<T>(data, what) {
        let again = proto::encode(&v).expect("a decoded message re-encodes");
        assert_eq!(
            proto::decode::<T>(&again, what).ok(),
            Some(v),
            "{what} round trip"
        );
    }
}

/// The hellos of both handshakes: the license server's (client and server hello, the
/// server's delegations checked against the fixed publisher) and the dongle channel's (host
/// and device hello).
pub fn hello(data: &[u8]) {
    round_trip_versioned::<ClientHello>(data, "client hello");
    if let Ok(h) = proto::decode::<ServerHello>(data, "server hello") {
        let again = proto::encode(&h).expect("re-encodes");
        assert_eq!(
            proto::decode::<ServerHello>(&again, "server hello").ok(),
            Some(h.clone())
        );
        let server_key = server_key();
        if let Ok(ds) =
            proto::verified_delegations(&h, &publisher().public_key(), VENDOR, &server_key, NOW)
        {
            // Only bundles the fixed keys signed verify: every delegation names the
            // container key and the server key, and is re-signed to the same bytes.
            for d in &ds {
                assert_eq!(d.container_key, container_key().verifying_key().to_bytes());
                assert_eq!(d.server_key, server_key);
                let signed = proto::sign_delegation(d, &container_key()).expect("signs");
                assert!(
                    h.delegations.iter().any(|b| b.delegation == signed),
                    "a delegation verified that the container key did not sign"
                );
            }
        }
    }
    for_hello::<HostHello>(data, "host hello");
    for_hello::<DeviceHello>(data, "device hello");
}

fn for_hello<T>(data: &[u8], what: &'static str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = channel::decode_hello::<T>(what, data) {
        let again = channel::encode_hello(what, &v).expect("re-encodes");
        assert_eq!(channel::decode_hello::<T>(what, &again).ok(), Some(v));
    }
}

/// The license server's static Noise public key in the seed hellos.
pub fn server_key() -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([0x44; 32])).to_bytes()
}

// ---------------------------------------------------------------------------------------
// Dongles: HID reports and the MSD volume.

/// A dongle that answers every complete message with itself (an echo), over the real
/// device-side framing.
struct EchoDongle(DeviceFraming);

impl ReportSink for EchoDongle {
    fn handle_report(&mut self, report: &Report, now: Instant) -> Vec<Report> {
        self.0.handle(report, now, &mut |m: Message| Some(m))
    }
}

fn base_instant() -> Instant {
    static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);
    *BASE
}

/// HID reports: the input is a run of 64-byte reports, each preceded by one byte of elapsed
/// time (in units of 10 ms), fed to the dongle's framing; every report the dongle answers
/// with must reassemble on the host's side without a framing error. Then the input as a
/// message payload: fragmenting and reassembling gives it back.
pub fn hid_report(data: &[u8]) {
    let mut dongle = EchoDongle(DeviceFraming::new().with_capabilities(1));
    let mut host = Reassembler::new();
    let mut now = base_instant();
    for chunk in data.chunks(REPORT_LEN + 1) {
        now += Duration::from_millis(10 * u64::from(chunk[0]));
        let mut report: Report = [0; REPORT_LEN];
        report[..chunk.len() - 1].copy_from_slice(&chunk[1..]);
        for answer in dongle.handle_report(&report, now) {
            if let Some(Err(e)) = host.push(&answer, now) {
                panic!("the dongle's answer does not reassemble: {e}");
            }
        }
    }
    fragment_round_trip(data);
}

fn fragment_round_trip(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let cid = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let cmd = data[4] | 0x80;
    let payload = &data[5..];
    let Ok(reports) = framing::fragment(cid, cmd, payload) else {
        assert!(payload.len() > framing::MAX_MESSAGE || cid == 0);
        return;
    };
    let mut r = Reassembler::new();
    let now = base_instant();
    let mut got = None;
    for (i, rep) in reports.iter().enumerate() {
        assert_eq!(framing::report_cid(rep), cid);
        match r.push(rep, now) {
            None => assert!(i + 1 < reports.len(), "message not complete at its end"),
            Some(m) => {
                assert_eq!(i + 1, reports.len(), "message complete before its end");
                got = Some(m.expect("own fragments reassemble"));
            }
        }
    }
    assert_eq!(got, Some(Message::new(cid, cmd, payload.to_vec())));
}

/// The MSD volume: the input as a batch written to the volume (processed by the echo
/// dongle), as a block the client reads back (split into reports), and as the text of the
/// ID file and of `/proc/self/mountinfo`. The volume's answer block must split back into
/// exactly the reports it carries.
#[cfg(feature = "virtual-dongle")]
pub fn msd(data: &[u8]) {
    use crate::dongle::msd::{self, BLOCK_LEN};
    let mut dongle = EchoDongle(DeviceFraming::new());
    let block = crate::dongle::msd_volume::process_batch(&mut dongle, data, base_instant())
        .expect("the echo dongle does not panic");
    assert_eq!(block.len() % BLOCK_LEN, 0);
    // (A block of answers that fills whole blocks ends without padding: the client reads
    // again and gets a block of zeros.)
    let mut reports = VecDeque::new();
    msd::response_reports(&block, &mut reports);
    let expected: Vec<Report> = block
        .chunks_exact(REPORT_LEN)
        .filter(|c| c.iter().any(|&b| b != 0))
        .map(|c| c.try_into().expect("64 bytes"))
        .collect();
    assert_eq!(Vec::from(reports), expected);
    let mut incoming = VecDeque::new();
    let ends = msd::response_reports(data, &mut incoming);
    assert!(incoming.len() <= data.len() / REPORT_LEN);
    assert!(!ends || data.len() < REPORT_LEN || incoming.len() < data.len() / REPORT_LEN);
    let text = String::from_utf8_lossy(data);
    if let Some(serial) = msd::parse_id(&text) {
        assert!(!serial.contains('\n'));
    }
    let _ = msd::parse_mountinfo(&text);
}

// ---------------------------------------------------------------------------------------
// The dongle channel's frames.

struct Pair {
    sender: Channel,
    receiver: Channel,
    /// A receiver that has accepted nothing (the fuzzer's raw frames go here).
    fresh: Channel,
}

fn channel_pair() -> (Channel, Channel) {
    let host = [0x55; 32];
    let device = [0x66; 32];
    let mut c = ClientHandshake::new(&host, HostHello::new(MachineKind::Physical, "fuzz"))
        .expect("handshake");
    let mut d =
        DeviceHandshake::new(&device, DeviceHello::new("TD-FUZZ", 0, None)).expect("handshake");
    let m1 = c.message1().expect("message 1");
    let m2 = d.message2(&m1).expect("message 2");
    let m3 = c
        .message3(&m2, channel::Trust::FirstUse)
        .expect("message 3");
    let (client, _, _) = c.finish().expect("client finishes");
    let (device, _, _) = d.finish(&m3).expect("device finishes");
    (client, device)
}

thread_local! {
    static PAIR: std::cell::RefCell<Pair> = std::cell::RefCell::new({
        let (sender, receiver) = channel_pair();
        let (_, fresh) = channel_pair();
        Pair { sender, receiver, fresh }
    });
}

/// Channel frames: the input as a frame from the peer (never accepted: the fuzzer holds no
/// key of this channel), and as a plaintext that is sealed, opened back to the same bytes,
/// then refused as a replay and refused with any one bit flipped.
pub fn channel_frame(data: &[u8]) {
    PAIR.with(|p| {
        let p = &mut *p.borrow_mut();
        assert!(
            p.fresh.open(data).is_err(),
            "a frame the fuzzer made was accepted"
        );
        let plain = &data[..data.len().min(channel::MAX_PLAINTEXT)];
        let frame = p.sender.seal(plain).expect("seals");
        if !data.is_empty() {
            let mut bad = frame.clone();
            let bit = usize::from(data[0]) * 8 + usize::from(data[data.len() - 1] % 8);
            let i = bit / 8 % bad.len();
            bad[i] ^= 1 << (bit % 8);
            assert!(p.receiver.open(&bad).is_err(), "a flipped bit was accepted");
        }
        assert_eq!(p.receiver.open(&frame).expect("opens"), plain);
        assert!(p.receiver.open(&frame).is_err(), "a replay was accepted");
    });
}

// ---------------------------------------------------------------------------------------
// Signed documents.

/// Decodes an envelope's body as `T`; when it verifies under `key`, re-signing the decoded
/// value with `signer` must give back exactly the input (nothing else verifies).
fn signed_as<T>(kind: Kind, data: &[u8], key: &VerifyingKey, signer: &SigningKey) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let env = Envelope::parse(kind, data).ok()?;
    let decoded = env.decode::<T>();
    if let Ok(v) = &decoded {
        let body = postcard::to_stdvec(v).expect("re-encodes");
        assert_eq!(postcard::from_bytes::<T>(&body).ok().as_ref(), Some(v));
    }
    if env.verify(key).is_ok() {
        let v = decoded.expect("a signed body decodes");
        let again = envelope::sign(kind, &v, signer).expect("signs");
        assert_eq!(
            again,
            data,
            "a {} verified that the key did not sign",
            kind.name()
        );
        return Some(v);
    }
    None
}

/// A license envelope of either format: decoded, and when signed, re-signed to the same bytes.
fn signed_license(data: &[u8], key: &VerifyingKey, signer: &SigningKey) -> Option<License> {
    let env = Envelope::parse(Kind::License, data).ok()?;
    let decoded = License::decode(&env);
    if env.verify(key).is_ok() {
        let v = decoded.expect("a signed license decodes");
        let again = v.sign(signer).expect("signs").bytes;
        assert_eq!(again, data, "a license verified that the key did not sign");
        return Some(v);
    }
    None
}

/// A pool member registration the fixed container key signed.
fn seed_pool_member() -> Vec<u8> {
    let ck = container_key();
    crate::license::PoolRegistration {
        pool: "site-a".into(),
        license_id: [3; 16],
        serial: "SW-FUZZ".into(),
        container_key: ck.verifying_key().to_bytes(),
        server_key: [9; 32],
        cluster_id: 0x1234_5678,
        signed_at: NOW,
    }
    .sign(&ck)
    .expect("signs")
}

/// Signed envelopes of every kind, each body decoded as its type, each verified against the
/// fixed key that signs it (publisher or container).
pub fn envelope(data: &[u8]) {
    let p = publisher();
    let (pk, ps) = (p.public_key(), p.signing_key());
    let ck = container_key();
    let cv = ck.verifying_key();
    if Kind::sniff(data).is_none() {
        assert!(Envelope::parse(Kind::License, data).is_err());
    }
    let lic = signed_license(data, &pk, ps);
    assert_eq!(
        crate::license::SignedLicense::verify(data, &pk)
            .ok()
            .map(|s| s.license),
        lic
    );
    let _ = crate::license::SignedLicense::parse_unverified(data);
    signed_as::<ContainerCertificate>(Kind::Certificate, data, &pk, ps);
    signed_as::<Delegation>(Kind::Delegation, data, &cv, &ck);
    signed_as::<usage::UsageStatement>(Kind::UsageCheckpoint, data, &cv, &ck);
    if let Some(r) = signed_as::<crate::license::PoolRegistration>(Kind::PoolMember, data, &cv, &ck)
    {
        // Counted only for a pool whose license names its signer under its serial.
        let mut lic = crate::license::License {
            license_id: r.license_id,
            vendor_id: VENDOR,
            product_code: 1,
            product_name: "pool".into(),
            features: 1,
            quantity: 1,
            counting_unit: crate::license::CountingUnit::Station,
            exclusive_allowed: false,
            issued_at: 0,
            expiry: None,
            vm_policy: crate::license::VmPolicy::Allow,
            binding: crate::license::Binding::Pool {
                name: r.pool.clone(),
                members: vec![(r.serial.clone(), cv.to_bytes())],
            },
            borrow_days: 0,
        };
        let counted = crate::license::PoolRegistration::verify(data, &lic, r.cluster_id);
        assert_eq!(counted.is_ok(), r.container_key == cv.to_bytes());
        assert!(crate::license::PoolRegistration::verify(data, &lic, r.cluster_id ^ 1).is_err());
        lic.binding = crate::license::Binding::Pool {
            name: r.pool.clone(),
            members: vec![(r.serial.clone(), [7; 32])],
        };
        assert!(crate::license::PoolRegistration::verify(data, &lic, r.cluster_id).is_err());
    }
    let _ = crate::license::PoolRegistration::parse_unverified(data);
    if let Some(g) = signed_as::<crate::license::BorrowGrant>(Kind::Borrow, data, &cv, &ck) {
        // The chain check never panics, and a grant for another borrower never passes.
        let _ = crate::license::BorrowGrant::verify(
            data,
            &[],
            &pk,
            VENDOR,
            &g.borrower_serial,
            &g.borrower_key,
        );
        assert!(
            crate::license::BorrowGrant::verify(data, &[], &pk, VENDOR, "someone else", &[0; 32])
                .is_err()
        );
    }
    if let Ok(env) = Envelope::parse(Kind::UsageCheckpoint, data) {
        let _ = usage::UsageStatement::decode(&env);
    }
}

/// Activation requests (as the publisher's tool reads them) and activations (decoded,
/// verified against the fixed publisher, installed into a container engine that never
/// asked for them, which must refuse).
pub fn activation(data: &[u8]) {
    let p = publisher();
    let ck = container_key();
    signed_as::<ActivationRequest>(Kind::ActivationRequest, data, &ck.verifying_key(), &ck);
    if let Ok(req) = p.read_request(data) {
        // Self-signed: only a request signed with the fixed container key can verify.
        assert_eq!(req.sign_key, ck.verifying_key().to_bytes());
        let again = envelope::sign(Kind::ActivationRequest, &req, &ck).expect("signs");
        assert_eq!(again, data, "a request verified that its key did not sign");
    }
    let act = signed_as::<Activation>(Kind::Activation, data, &p.public_key(), p.signing_key());
    ENGINE.with(|e| {
        let e = &mut *e.borrow_mut();
        assert!(
            e.install_activation(data, Some(&p.public_key()), NOW)
                .is_err(),
            "an activation for another container was installed"
        );
        if act.is_none() {
            assert!(e.install_activation(data, None, NOW).is_err());
        }
        // The same bytes as a borrowed seat's grant (and as the lender's certificate): no
        // grant lent to this container can be among them.
        assert!(
            e.install_borrowed(data, data, &p.public_key(), "fuzz", NOW)
                .is_err(),
            "a borrowed seat lent to no one was installed"
        );
        assert!(e.borrowed().is_empty());
    });
}

thread_local! {
    static ENGINE: std::cell::RefCell<Engine> =
        std::cell::RefCell::new(Engine::create(ContainerKind::Software, VENDOR, NOW));
}

// ---------------------------------------------------------------------------------------
// Files.

/// A software container file, opened as it is and again with its trailing integrity digest
/// recomputed (so that the fuzzer reaches the binding and the body behind it).
pub fn container_file(data: &[u8]) {
    let path = std::path::Path::new("fuzz.tsc");
    let fp: &Fingerprint = &host().fingerprint;
    let _ = SoftwareContainer::open_bytes(path, data, fp);
    if data.len() >= 32 {
        let mut fixed = data.to_vec();
        let n = fixed.len() - 32;
        let digest = Sha256::digest(&fixed[..n]);
        fixed[n..].copy_from_slice(&digest);
        let _ = SoftwareContainer::open_bytes(path, &fixed, fp);
    }
}

/// A publisher key file and a public key file: a parsed key re-encodes to a key file that
/// parses to the same key.
pub fn key_file(data: &[u8]) {
    if let Ok(k) = PublisherKey::from_bytes(data) {
        let again = PublisherKey::from_bytes(&k.to_bytes().expect("encodes")).expect("parses");
        assert_eq!(
            (again.vendor_id, &again.name, again.public_key()),
            (k.vendor_id, &k.name, k.public_key())
        );
        assert_eq!(*again.product_secret(1), *k.product_secret(1));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok((vendor, key)) = crate::publisher::parse_public_key(text)
    {
        let line = match vendor {
            Some(v) => format!("tessera-publisher {v} {}", hex::encode(key.to_bytes())),
            None => hex::encode(key.to_bytes()),
        };
        assert_eq!(
            crate::publisher::parse_public_key(&line).ok(),
            Some((vendor, key))
        );
    }
}

/// A ciphertext: its header parses to a value that encodes to the same 40 bytes, and it
/// decrypts under the fixed product secret only if re-encrypting the plaintext under the
/// same header gives it back (nothing else authenticates).
pub fn ciphertext(data: &[u8]) {
    if let Ok(h) = Header::parse(data) {
        assert_eq!(h.encode()[..], data[..HEADER_LEN]);
        assert_eq!(Header::parse_header(&data[..HEADER_LEN]).ok(), Some(h));
    } else {
        assert!(cipher::decrypt(&PRODUCT_SECRET, data).is_err());
    }
    if data.len() == HEADER_LEN {
        let mut padded = data.to_vec();
        padded.resize(OVERHEAD, 0);
        assert_eq!(Header::parse_header(data).ok(), Header::parse(&padded).ok());
    }
    if let Ok(plain) = cipher::decrypt(&PRODUCT_SECRET, data) {
        let h = Header::parse(data).expect("decrypted, so the header parses");
        let again = cipher::encrypt(&PRODUCT_SECRET, &h, &plain).expect("encrypts");
        assert_eq!(
            again, data,
            "a ciphertext authenticated that was not sealed"
        );
    }
}

/// A license server's usage log: scanned, and verified against the fixed publisher. A log
/// that verifies scans cleanly.
pub fn usage_log(data: &[u8]) {
    let scanned = usage::scan(data, |_, _| Ok(()));
    if let Ok(report) = usage::verify(data, &publisher().public_key()) {
        assert!(scanned.is_ok(), "verified but does not scan: {report:?}");
    }
    if data.len() >= usage::HEADER_LEN
        && let Ok(h) = usage::LogHeader::parse(&data[..usage::HEADER_LEN])
    {
        assert_eq!(h.to_bytes()[..], data[..usage::HEADER_LEN]);
    }
}

// ---------------------------------------------------------------------------------------
// The license server's admin API and configuration.

/// The admin API's JSON bodies: the input's first line is the seat id of a revoke, the rest
/// its body (a reload's body goes through the same parser).
#[cfg(feature = "server")]
pub fn admin_body(data: &[u8]) {
    let (seat, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let seat = String::from_utf8_lossy(seat);
    if let Ok((id, reason)) = crate::server::admin::api::revoke_request(&seat, body) {
        assert!(seat.eq_ignore_ascii_case(&hex::encode(id)));
        assert!(reason.chars().count() <= 200);
    }
    let _ = crate::server::admin::api::revoke_request(&hex::encode([7u8; 16]), data);
}

/// The admin API's query strings, parsed as axum's `Query` extractor does, then checked as
/// the history, report and usage endpoints check them.
#[cfg(feature = "server")]
pub fn admin_query(data: &[u8]) {
    use axum::extract::Query;
    use axum::http::Uri;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/api/v1/history?{text}").parse::<Uri>() else {
        return;
    };
    let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        return;
    };
    if let Ok(h) = crate::server::admin::api::history_query(&q) {
        assert!((1..=1440).contains(&h.step));
        assert!(h.minutes >= 1);
    }
    if let Ok(Some(v)) = crate::server::admin::api::usage_query(&q) {
        assert!(q.contains_key("vendor"), "vendor {v} out of nothing");
    }
    if let Ok((json, h)) = crate::server::admin::api::report_query(&q) {
        assert!(!json || q.get("format").is_some_and(|f| f == "json"));
        assert!((1..=1440).contains(&h.step));
    }
}

/// The server's TOML configuration: parsed into the config type and checked.
#[cfg(feature = "server")]
pub fn server_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = crate::server::config::ServerConfig::from_toml(text) {
        assert!(
            c.check().is_ok(),
            "a parsed configuration fails its own check"
        );
        let _ = (
            c.per_host_limit(),
            c.files_needed(),
            c.commit_window(),
            c.workers(),
        );
    }
}

/// A target: its name (that of its `fuzz/fuzz_targets/` file) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// The targets that need a harness (`ServerHarness`), not in [`targets`].
pub const STATEFUL_TARGETS: &[&str] = &["server_request"];

/// Every target by name, for the replay test and the corpus generator.
pub fn targets() -> Vec<Target> {
    let mut t: Vec<Target> = vec![
        ("wire_frame", wire_frame),
        ("hello", hello),
        ("hid_report", hid_report),
        ("channel_frame", channel_frame),
        ("envelope", envelope),
        ("activation", activation),
        ("container_file", container_file),
        ("key_file", key_file),
        ("ciphertext", ciphertext),
        ("usage_log", usage_log),
    ];
    #[cfg(feature = "virtual-dongle")]
    t.push(("msd", msd));
    #[cfg(feature = "server")]
    t.extend([
        ("admin_body", admin_body as fn(&[u8])),
        ("admin_query", admin_query),
        ("server_config", server_config),
    ]);
    t
}

// ---------------------------------------------------------------------------------------
// Seeds: valid inputs of every kind, so that the fuzzer starts deep.

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    proto::write_frame(&mut out, payload).expect("a seed frame fits");
    out
}

fn spec(product_code: u32) -> crate::publisher::LicenseSpec {
    crate::publisher::LicenseSpec {
        product_code,
        product_name: format!("Product {product_code}"),
        features: 0xFF,
        quantity: 3,
        counting_unit: crate::license::CountingUnit::Handle,
        exclusive_allowed: true,
        borrow_days: 0,
        expiry: Some(NOW + 86_400),
        vm_policy: crate::license::VmPolicy::Allow,
    }
}

/// An activation request signed with the fixed container key.
pub fn seed_request() -> Vec<u8> {
    let ck = container_key();
    let req = ActivationRequest {
        vendor_id: VENDOR,
        serial: "TS-FUZZ-0001".into(),
        kind: ContainerKind::Software,
        sign_key: ck.verifying_key().to_bytes(),
        seal_key: x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([0x77; 32]))
            .to_bytes(),
        noise_key: [0x88; 32],
        fingerprint: host().fingerprint.digests(b"TS-FUZZ-0001"),
        machine: MachineKind::Physical,
        hostname: "fuzz".into(),
        created_at: NOW - 100,
    };
    envelope::sign(Kind::ActivationRequest, &req, &ck).expect("signs")
}

/// A borrowable license (format 2) and a seat of it lent by the fixed container.
fn seed_borrow() -> (Vec<u8>, Vec<u8>) {
    let ck = container_key();
    let mut s = spec(1);
    s.borrow_days = 7;
    let license = publisher()
        .issue(
            &publisher().read_request(&seed_request()).expect("reads"),
            &s,
            NOW - 50,
        )
        .expect("issues");
    let grant = crate::license::BorrowGrant {
        seat_id: [4; 16],
        vendor_id: VENDOR,
        license: license.clone(),
        lender_serial: "TS-FUZZ-0001".into(),
        borrower_serial: "SW-BORROWER".into(),
        borrower_key: [0x44; 32],
        borrower_host: "laptop".into(),
        issued_at: NOW,
        until: NOW + 3 * 86_400,
        secret: cipher::seal_secret(
            &[0x55; 32],
            VENDOR,
            1,
            &crate::license::borrow::secret_context("SW-BORROWER", &[4; 16]),
            &PRODUCT_SECRET,
        )
        .expect("seals"),
    };
    (license, grant.sign(&ck).expect("signs"))
}

fn seed_delegation() -> Vec<u8> {
    let d = Delegation {
        vendor_id: VENDOR,
        serial: "TS-FUZZ-0001".into(),
        container_key: container_key().verifying_key().to_bytes(),
        server_key: server_key(),
        issued_at: NOW - 10,
        expiry: NOW + 86_400,
    };
    proto::sign_delegation(&d, &container_key()).expect("signs")
}

/// A usage log with grants, a denial, a release, a checkpoint signed by a container the
/// fixed publisher activated, and a record after it.
fn seed_usage_log() -> Vec<u8> {
    use crate::license::usage::{Chain, Event, LogHeader, SeatEvent};
    let p = publisher();
    let mut engine = Engine::create(ContainerKind::Software, VENDOR, NOW);
    let req = engine
        .activation_request(&Fingerprint::default(), MachineKind::Physical, "f", NOW)
        .expect("request");
    let act = p.activate(&req, &[spec(1)], NOW).expect("activates");
    engine
        .install_activation(&act, Some(&p.public_key()), NOW)
        .expect("installs");
    let header = LogHeader {
        vendor_id: VENDOR,
        server_key: server_key(),
    };
    let mut chain = Chain::new(header);
    let mut log = header.to_bytes().to_vec();
    let mut scratch = Vec::new();
    let seat = |n: u8| SeatEvent {
        vendor_id: VENDOR,
        product_code: 1,
        license_id: [1; 16],
        seat_id: [n; 16],
        unit_key: format!("handle:{n}"),
        client: None,
    };
    let t = NOW * 1000;
    let events = [
        Event::Grant(seat(1)),
        Event::Deny {
            seat: seat(2),
            status: 101,
        },
        Event::Release(seat(1)),
    ];
    for (i, e) in events.into_iter().enumerate() {
        chain
            .append(t + i as u64, e, &mut log, &mut scratch)
            .expect("appends");
    }
    let (st, cert) = engine
        .sign_usage(chain.checkpoint_digest(), NOW)
        .expect("signs usage");
    let cp = chain.checkpoint(st, cert);
    chain
        .append(t + 5, cp, &mut log, &mut scratch)
        .expect("appends");
    chain
        .append(t + 6, Event::Grant(seat(3)), &mut log, &mut scratch)
        .expect("appends");
    log
}

/// A seed: its target, its file name, its bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Valid inputs for each target: `(target, seed name, bytes)`. `home` is a scratch
/// directory (a software container is created in it).
pub fn seeds(home: &std::path::Path) -> Vec<Seed> {
    let mut out: Vec<Seed> = Vec::new();
    let mut add = |t: &'static str, name: &str, bytes: Vec<u8>| out.push((t, name.into(), bytes));
    let p = publisher();

    // The wire.
    let requests = [
        NetRequest::Acquire {
            seat_id: [1; 16],
            vendor_id: VENDOR,
            product_code: 1,
            features: 3,
            exclusive: true,
        },
        NetRequest::Renew {
            seat_ids: vec![[1; 16], [2; 16]],
        },
        NetRequest::Release { seat_id: [1; 16] },
        NetRequest::DeriveKey {
            seat_id: [1; 16],
            header: Header::new(cipher::Mode::Derived, VENDOR, 1)
                .encode()
                .to_vec(),
        },
        NetRequest::Encrypt {
            seat_id: [1; 16],
            plaintext: b"plain text".to_vec(),
        },
        NetRequest::Decrypt {
            seat_id: [1; 16],
            ciphertext: vec![0x54; 60],
        },
        NetRequest::SeatInfo { seat_id: [1; 16] },
        NetRequest::Ping,
        NetRequest::Borrow {
            seat_id: [2; 16],
            vendor_id: VENDOR,
            product_code: 1,
            features: 1,
            days: 2,
            borrower: seed_request(),
        },
        NetRequest::Return {
            seat_id: [2; 16],
            signature: vec![0x66; 64],
        },
        NetRequest::SeatKey {
            seat_id: [1; 16],
            key_id: [2; 12],
        },
        NetRequest::RenewWhy {
            seat_ids: vec![[1; 16], [2; 16]],
        },
    ];
    let act = p
        .activate(&seed_request(), &[spec(1)], NOW)
        .expect("activates");
    let activation: Activation = Envelope::parse(Kind::Activation, &act)
        .and_then(|e| e.decode())
        .expect("decodes");
    let license = activation.licenses[0].clone();
    let responses = [
        NetResponse::Granted(proto::SeatGrant {
            seat_id: [1; 16],
            license: license.clone(),
            container_serial: "TS-FUZZ-0001".into(),
            lease_ms: 90_000,
            renew_ms: 30_000,
            in_use: 1,
        }),
        NetResponse::Renewed {
            lost: vec![[2; 16]],
            lease_ms: 90_000,
        },
        NetResponse::Released,
        NetResponse::Key([9; 32]),
        NetResponse::Data(b"data".to_vec()),
        NetResponse::Info {
            in_use: 1,
            quantity: 3,
        },
        NetResponse::Pong,
        NetResponse::Error {
            status: 101,
            message: "no seat".into(),
        },
        NetResponse::SeatKey { key: [9; 32] },
        NetResponse::RenewedWhy {
            lost: vec![
                proto::LostSeat {
                    seat_id: [1; 16],
                    reason: proto::LossReason::Revoked {
                        reason: "left the team".into(),
                    },
                },
                proto::LostSeat {
                    seat_id: [2; 16],
                    reason: proto::LossReason::NotHosted,
                },
            ],
            lease_ms: 90_000,
        },
    ];
    for (i, r) in requests.iter().enumerate() {
        add(
            "server_request",
            &format!("request-{i}"),
            proto::encode(r).expect("encodes"),
        );
    }
    let mut h = Header::new(cipher::Mode::Direct, VENDOR, 1);
    h.nonce = [3; 24];
    let sealed =
        cipher::encrypt(&p.product_secret(1), &h, b"sealed by the publisher").expect("encrypts");
    let decrypt = NetRequest::Decrypt {
        seat_id: [1; 16],
        ciphertext: sealed,
    };
    add(
        "server_request",
        "request-9-decrypt-genuine",
        proto::encode(&decrypt).expect("encodes"),
    );
    let mut stream = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let f = frame(&proto::encode(r).expect("encodes"));
        stream.extend_from_slice(&f);
        add("wire_frame", &format!("request-{i}"), f);
    }
    add("wire_frame", "request-stream", stream);
    for (i, r) in responses.iter().enumerate() {
        add(
            "wire_frame",
            &format!("response-{i}"),
            frame(&proto::encode(r).expect("encodes")),
        );
    }
    let answer = DiscoveryAnswer {
        name: "fuzz-server".into(),
        port: proto::DEFAULT_PORT,
        vendors: vec![VENDOR, 1],
    };
    let probe = crate::net::discovery::probe();
    add(
        "wire_frame",
        "discovery-answer",
        crate::net::discovery::answer_probe(&probe, &answer).expect("answers"),
    );
    add("wire_frame", "discovery-probe", probe.to_vec());

    // Hellos.
    let client = ClientHello {
        version: proto::PROTOCOL_VERSION,
        host: proto::HostInfo {
            machine: MachineKind::Virtual(crate::host::Hypervisor::Kvm),
            hostname: "fuzz-host".into(),
            station: [5; 32],
            session: "tty1".into(),
            pid: 4242,
            pid_namespace: 4_026_531_836,
        },
    };
    add("hello", "client", proto::encode(&client).expect("encodes"));
    let server = ServerHello {
        version: proto::PROTOCOL_VERSION,
        name: "fuzz-server".into(),
        delegations: vec![proto::DelegationBundle {
            certificate: activation.certificate.clone(),
            delegation: seed_delegation(),
        }],
    };
    add("hello", "server", proto::encode(&server).expect("encodes"));
    let host_hello = HostHello::new(MachineKind::Physical, "workstation");
    add(
        "hello",
        "host",
        channel::encode_hello("h", &host_hello).expect("encodes"),
    );
    let device_hello = DeviceHello::new("TD-FUZZ", VENDOR, Some(activation.certificate.clone()));
    add(
        "hello",
        "device",
        channel::encode_hello("d", &device_hello).expect("encodes"),
    );
    add(
        "hello",
        "device-blank",
        channel::encode_hello("d", &DeviceHello::new("TD-0", 0, None)).expect("encodes"),
    );

    // HID reports: an INIT, a PING over several reports, a MSG, each report after a byte of
    // elapsed time.
    let timed = |reports: &[Report]| -> Vec<u8> {
        let mut v = Vec::new();
        for r in reports {
            v.push(1);
            v.extend_from_slice(r);
        }
        v
    };
    let init = framing::fragment(
        framing::BROADCAST_CID,
        framing::cmd::INIT,
        &[1, 2, 3, 4, 5, 6, 7, 8],
    )
    .expect("fragments");
    let ping = framing::fragment(0x0102_0304, framing::cmd::PING, &[0xAB; 300]).expect("fragments");
    let msg = framing::fragment(0x0102_0304, framing::cmd::MSG, &[0xCD; 40]).expect("fragments");
    add("hid_report", "init", timed(&init));
    add("hid_report", "ping", timed(&ping));
    let mut all = init.clone();
    all.extend_from_slice(&ping);
    all.extend_from_slice(&msg);
    add("hid_report", "session", timed(&all));
    let mut payload = 0x0102_0304u32.to_be_bytes().to_vec();
    payload.push(framing::cmd::MSG);
    payload.extend_from_slice(&[0x42; 200]);
    add("hid_report", "fragment", payload);

    // The MSD volume: a written batch, the ID file, a mount table.
    let mut batch: Vec<u8> = all.iter().flat_map(|r| r.iter().copied()).collect();
    batch.resize(batch.len().div_ceil(512) * 512, 0);
    add("msd", "batch", batch);
    add("msd", "id", b"tessera-dongle v1\nTD-0001\n".to_vec());
    add(
        "msd",
        "mountinfo",
        b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
          36 22 0:45 / /media/usb\\040stick rw,nosuid - fuse tessera-dongle rw,user_id=0\n"
            .to_vec(),
    );

    // Channel frames.
    let (mut sender, _) = channel_pair();
    add(
        "channel_frame",
        "frame",
        sender.seal(b"a channel message").expect("seals"),
    );
    add(
        "channel_frame",
        "hello",
        channel::encode_hello("h", &host_hello).expect("encodes"),
    );

    // Signed documents.
    add("envelope", "license", license.clone());
    add("envelope", "certificate", activation.certificate.clone());
    add("envelope", "delegation", seed_delegation());
    let (borrowable, grant) = seed_borrow();
    add("envelope", "license-v2", borrowable);
    add("envelope", "borrow", grant);
    add("envelope", "pool-member", seed_pool_member());
    add("activation", "request", seed_request());
    add("activation", "activation", act.clone());
    add("envelope", "activation", act.clone());

    // Files.
    let c = SoftwareContainer::create(home, VENDOR, &host().fingerprint, NOW).expect("creates");
    add(
        "container_file",
        "software",
        std::fs::read(c.path()).expect("reads the container"),
    );
    add(
        "key_file",
        "private",
        p.to_bytes().expect("encodes").to_vec(),
    );
    add("key_file", "public", p.public_key_text().into_bytes());
    add(
        "key_file",
        "public-hex",
        hex::encode(p.public_key().to_bytes()).into_bytes(),
    );
    for (i, (mode, text)) in [
        (cipher::Mode::Direct, &b"some plaintext"[..]),
        (cipher::Mode::Derived, &b""[..]),
        (cipher::Mode::Derived, &[7u8; 100][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut h = Header::new(mode, VENDOR, 1);
        h.nonce = [i as u8; 24];
        add(
            "ciphertext",
            &format!("ct-{i}"),
            cipher::encrypt(&PRODUCT_SECRET, &h, text).expect("encrypts"),
        );
        if i == 0 {
            add("ciphertext", "header", h.encode().to_vec());
        }
        // Format 2, as a network seat writes it.
        let mut h = Header::new_seat(mode, VENDOR, 1, [i as u8 + 1; 12]);
        h.nonce[12..].copy_from_slice(&[i as u8; 12]);
        add(
            "ciphertext",
            &format!("ct-v2-{i}"),
            cipher::encrypt(&PRODUCT_SECRET, &h, text).expect("encrypts"),
        );
    }
    let log = seed_usage_log();
    add("usage_log", "log", log.clone());
    add("envelope", "log", log);

    // The admin API and the configuration.
    add(
        "admin_body",
        "revoke",
        b"00112233445566778899aabbccddeeff\n{\"reason\": \"left the company\"}".to_vec(),
    );
    add(
        "admin_body",
        "empty",
        b"00112233445566778899AABBCCDDEEFF\n".to_vec(),
    );
    add("admin_body", "null", b"\n{\"reason\": null}".to_vec());
    add(
        "admin_query",
        "history",
        b"product=1:2&minutes=120&step=5".to_vec(),
    );
    add("admin_query", "usage", b"vendor=0x7E57".to_vec());
    add(
        "admin_query",
        "report",
        b"format=json&minutes=1440&product=1:2".to_vec(),
    );
    add(
        "admin_query",
        "escaped",
        b"product=32343%3A1&minutes=%36%30".to_vec(),
    );
    add(
        "server_config",
        "full",
        br#"name = "fuzz-server"
listen = ["0.0.0.0:22630", "[::1]:22631"]
discovery = false
state_dir = "/var/lib/tessera-server"
home = "/var/lib/tessera-server/home"
dongles = false
lease_ms = 90000
renew_ms = 30000
max_connections = 1000
max_connections_per_host = 16
handshake_timeout_ms = 5000
quiet_timeout_ms = 10000
delegation_days = 7
log_format = "json"
fsync = true
admin = true
admin_listen = "127.0.0.1:22631"
admin_token = "0123456789abcdef0123456789abcdef"
admin_hosts = ["licenses.example"]
admin_max_connections = 64
admin_header_timeout_ms = 10000
admin_idle_timeout_ms = 30000
usage_checkpoint_s = 60
commit_window_us = 1000
worker_threads = 2
"#
        .to_vec(),
    );
    add(
        "server_config",
        "minimal",
        b"listen = [\"127.0.0.1:22630\"]\n".to_vec(),
    );
    out
}

// ---------------------------------------------------------------------------------------
// The license server's request handler.

/// A license server opened on a temporary state directory, hosting a software container of
/// this machine activated by the fixed publisher (products 1 and 2), and a client: the
/// `server_request` target feeds it decoded requests. Seats it grants stay between
/// requests, as on a connection.
#[cfg(feature = "server")]
pub struct ServerHarness {
    server: std::sync::Arc<crate::server::daemon::Server>,
    runtime: tokio::runtime::Runtime,
    hello: ClientHello,
}

#[cfg(feature = "server")]
impl ServerHarness {
    /// Activates a container in `dir/home` and opens a server with its state in
    /// `dir/state` (no listeners: requests come in through [`ServerHarness::request`]).
    pub fn new(dir: &std::path::Path) -> crate::Result<ServerHarness> {
        let home = dir.join("home");
        let env = crate::client::Environment {
            home: home.clone(),
            host: HostIdentity::detect(),
            clock: std::sync::Arc::new(crate::util::SystemClock),
        };
        let (_, req) = crate::client::request_activation(&env, VENDOR)?;
        let now = crate::util::now();
        let mut two = spec(2);
        two.expiry = None;
        two.quantity = 1;
        let act = publisher().activate(&req, &[spec_at(1, now), two], now)?;
        crate::client::install_activation(&env, &act, Some(&publisher().public_key()))?;
        let config = crate::server::config::ServerConfig {
            name: "fuzz-server".into(),
            state_dir: dir.join("state"),
            home,
            dongles: false,
            discovery: false,
            admin: false,
            fsync: false,
            commit_window_us: 0,
            ..Default::default()
        };
        let server = crate::server::daemon::Server::open(config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Internal(format!("runtime: {e}")))?;
        let hello = ClientHello {
            version: proto::PROTOCOL_VERSION,
            host: proto::HostInfo {
                machine: MachineKind::Physical,
                hostname: "fuzz-client".into(),
                station: [5; 32],
                session: "tty1".into(),
                pid: 4242,
                pid_namespace: 1,
            },
        };
        Ok(ServerHarness {
            server,
            runtime,
            hello,
        })
    }

    /// The input as the plaintext of one request frame: decoded as the listener decodes
    /// it, answered by the server's handler. An answer always encodes (the listener sends
    /// it); a grant is of a hosted product and within its quantity.
    pub fn request(&self, data: &[u8]) -> Option<NetResponse> {
        let req = proto::decode::<NetRequest>(data, "request").ok()?;
        let client = [0x99; 32];
        let resp = self
            .runtime
            .block_on(self.server.answer(&client, self.hello.clone(), req));
        let again = proto::encode(&resp).expect("an answer encodes");
        assert_eq!(
            proto::decode::<NetResponse>(&again, "response").ok(),
            Some(resp.clone())
        );
        if let NetResponse::Granted(g) = &resp {
            let lic = crate::license::SignedLicense::verify(&g.license, &publisher().public_key())
                .expect("a granted license is the publisher's");
            assert!(matches!(lic.license.product_code, 1 | 2));
            assert!(
                g.in_use <= lic.license.quantity,
                "{} seats of {}",
                g.in_use,
                lic.license.quantity
            );
        }
        Some(resp)
    }
}

#[cfg(feature = "server")]
fn spec_at(product_code: u32, now: u64) -> crate::publisher::LicenseSpec {
    let mut s = spec(product_code);
    s.expiry = Some(now + 30 * 86_400);
    s
}
