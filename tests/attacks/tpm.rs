//! 6. Rollback of a software container file on a machine with a TPM; 8. rollback of the usage
//!    log's counter.
//!
//! (a) An older copy of the container file put back undid its clock high-water mark (a clock
//!     set back then revived an expired license) and its usage-signature count. With a TPM
//!     (a real `swtpm` started by the test) the copy is refused as rolled back; without one it
//!     still opens, which is out of scope there, and the container says its binding is the
//!     fingerprint alone.
//! (b) A customer re-signed a rewritten usage period with their container put back, reusing
//!     the original signature numbers, and `verify-usage --after` found nothing. With the
//!     container bound to a TPM the put-back copy does not open, a re-signature takes the
//!     next numbers, and `verify-usage --after` reports the gap as evidence; a container
//!     without one is reported as unanchored.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use tessera::Error;
use tessera::client::{Environment, Session, SessionOptions, request_activation, sources};
use tessera::container::SoftwareContainer;
use tessera::container::software::list_for_vendor;
use tessera::host::HostIdentity;
use tessera::host::tpm::TpmConfig;
use tessera::license::CountingUnit;
use tessera::license::usage::{Chain, Event, LogHeader, SeatEvent};
use tessera::publisher::PublisherKey;
use tessera::util::OffsetClock;

use crate::common::spec;
use crate::common::swtpm::Swtpm;

const VENDOR: u32 = 0x7b;
const DAY: i64 = 86_400;

/// This machine (so that `tessera info` opens its containers too), with the TPM `tpm` (or
/// none), its clock running `offset` seconds from the real one.
fn env(home: &Path, tpm: Option<&Swtpm>, offset: i64) -> Environment {
    static HOST: OnceLock<HostIdentity> = OnceLock::new();
    let mut host = HOST.get_or_init(HostIdentity::detect).clone();
    host.tpm = tpm.map(|t| TpmConfig { tcti: t.tcti() });
    Environment {
        home: home.to_path_buf(),
        host,
        clock: Arc::new(OffsetClock { offset }),
    }
}

/// Activates a license for product 1 that expires in 10 days; returns the container file.
fn activate(env: &Environment, key: &PublisherKey) -> PathBuf {
    let (_, req) = request_activation(env, VENDOR).unwrap();
    let mut s = spec(1, 1, CountingUnit::Handle);
    s.expiry = Some(tessera::util::now() + 10 * DAY as u64);
    let act = key.activate(&req, &[s], tessera::util::now()).unwrap();
    tessera::client::install_activation(env, &act, Some(&key.public_key())).unwrap();
    let paths = list_for_vendor(&env.home, VENDOR);
    assert_eq!(paths.len(), 1, "{paths:?}");
    paths[0].clone()
}

fn session(env: Environment, key: &PublisherKey) -> Session {
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::SOFTWARE;
    Session::open_in(o, env).unwrap()
}

/// Puts back an older copy of the container after its clock mark moved past the expiry, and
/// tries the expired license with the clock set back. Returns that acquire's result.
fn restore_after_expiry(home: &Path, tpm: Option<&Swtpm>, key: &PublisherKey) -> (PathBuf, bool) {
    let file = activate(&env(home, tpm, 0), key);
    let copy = fs::read(&file).unwrap();
    // Day 1: the license works.
    let s = session(env(home, tpm, DAY), key);
    s.acquire(1, 0, false).unwrap().release();
    drop(s);
    // Day 20: expired; opening the container moved its clock mark (and wrote it).
    let s = session(env(home, tpm, 20 * DAY), key);
    assert!(s.acquire(1, 0, false).is_err(), "expired on day 20");
    drop(s);
    // The clock set back to day 2 with the mark of day 20 in the file: refused.
    let s = session(env(home, tpm, 2 * DAY), key);
    let e = s.acquire(1, 0, false).unwrap_err();
    assert!(matches!(e, Error::ClockRollback { .. }), "{e}");
    drop(s);
    // The attack: the copy from before day 20 put back, the clock still at day 2.
    fs::write(&file, &copy).unwrap();
    let s = session(env(home, tpm, 2 * DAY), key);
    let opened = s.acquire(1, 0, false).map(|seat| seat.release());
    (file, opened.is_ok())
}

#[test]
fn with_a_tpm_an_older_copy_of_the_container_is_refused_as_rolled_back() {
    let key = PublisherKey::generate(VENDOR, "tpm attacks");
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    activate(&env(dir.path(), Some(&tpm), 0), &key);
    let text = info(dir.path(), Some(&tpm));
    assert!(text.contains("binding fingerprint + TPM\n"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let (file, opened) = restore_after_expiry(dir.path(), Some(&tpm), &key);
    assert!(!opened, "the put-back copy revived the expired license");
    let host = env(dir.path(), Some(&tpm), 0).host;
    let e = SoftwareContainer::load(&file, &host).unwrap_err();
    assert!(
        matches!(&e, Error::Tampered(m) if m.contains("rolled back")),
        "{e}"
    );
    assert!(info(dir.path(), Some(&tpm)).contains("rolled back"));
}

#[test]
fn the_publishers_tool_opens_a_tpm_bound_container_on_its_machine() {
    let key = PublisherKey::generate(VENDOR, "tpm attacks");
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let file = activate(&env(dir.path(), Some(&tpm), 0), &key);
    let inspect = |tcti: String| {
        let out = Command::new(crate::common::bin("tessera-vendor"))
            .arg("inspect")
            .arg(&file)
            .env("TESSERA_TPM_TCTI", tcti)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = inspect(tpm.tcti());
    assert!(text.contains("opens on this machine"), "{text}");
    // Without its TPM it does not.
    let text = inspect("none".into());
    assert!(!text.contains("opens on this machine"), "{text}");
}

/// What `tessera info` says of the containers in `home`.
fn info(home: &Path, tpm: Option<&Swtpm>) -> String {
    let out = Command::new(crate::common::bin("tessera"))
        .arg("info")
        .env("TESSERA_HOME", home)
        .env(
            "TESSERA_TPM_TCTI",
            tpm.map_or("none".to_string(), |t| t.tcti()),
        )
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn without_a_tpm_an_older_copy_still_opens_and_the_binding_says_fingerprint_only() {
    // Out of scope without a TPM (documented): nothing on the machine outlives the file.
    let key = PublisherKey::generate(VENDOR, "tpm attacks");
    let dir = tempfile::tempdir().unwrap();
    let (file, opened) = restore_after_expiry(dir.path(), None, &key);
    assert!(opened, "without a TPM the copy opens, as documented");
    let c = SoftwareContainer::load(&file, &env(dir.path(), None, 0).host).unwrap();
    assert_eq!(c.binding_kind(), "fingerprint");
    assert_eq!(c.tpm_counter(), None);
    let text = info(dir.path(), None);
    assert!(text.contains("binding fingerprint\n"), "{text}");
}

/// A usage log of `n` grants, each followed by a checkpoint the container at `file` signs
/// (as the license server does: through `update`, so the count is written back).
fn signed_log(file: &Path, host: &HostIdentity, first: u8, n: u8) -> Vec<u8> {
    let header = LogHeader {
        vendor_id: VENDOR,
        server_key: [9; 32],
    };
    let mut chain = Chain::new(header);
    let mut bytes = header.to_bytes().to_vec();
    let mut scratch = Vec::new();
    let t0 = tessera::util::now() * 1000;
    let mut c = SoftwareContainer::load(file, host).unwrap();
    for i in 0..n {
        let t = t0 + u64::from(i) * 1000;
        let seat = SeatEvent {
            vendor_id: VENDOR,
            product_code: 1,
            license_id: [1; 16],
            seat_id: [first + i; 16],
            unit_key: format!("u{}", first + i),
            client: None,
        };
        chain
            .append(t, Event::Grant(seat), &mut bytes, &mut scratch)
            .unwrap();
        let digest = chain.checkpoint_digest();
        let (st, cert) = c
            .update(host, |e| e.sign_usage(digest, t / 1000 + 1))
            .unwrap();
        let cp = chain.checkpoint(st, cert);
        chain.append(t + 1, cp, &mut bytes, &mut scratch).unwrap();
    }
    bytes
}

fn verify_after(dir: &Path, key: &PublisherKey, prev: &[u8], next: &[u8]) -> String {
    let pub_file = dir.join("publisher.pub");
    fs::write(&pub_file, key.public_key_text()).unwrap();
    let (a, b) = (dir.join("january.log"), dir.join("february.log"));
    fs::write(&a, prev).unwrap();
    fs::write(&b, next).unwrap();
    let out = Command::new(crate::common::bin("tessera-vendor"))
        .args([OsStr::new("verify-usage"), OsStr::new("--key")])
        .arg(&pub_file)
        .arg("--after")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The customer's replay: January's log sent; February's honest log signed; the container
/// put back to its copy from the end of January and a rewritten February signed again.
/// Returns what `verify-usage --after january` says of the rewritten February.
fn replay_february(dir: &Path, tpm: Option<&Swtpm>, key: &PublisherKey) -> String {
    let home = dir.join("home");
    let host = env(&home, tpm, 0).host;
    let file = activate(&env(&home, tpm, 0), key);
    let january = signed_log(&file, &host, 0, 2); // numbers 1..2
    let end_of_january = fs::read(&file).unwrap();
    let _february = signed_log(&file, &host, 10, 3); // 3..5, the honest one
    let newest = fs::read(&file).unwrap();
    fs::write(&file, &end_of_january).unwrap(); // put back
    let rewritten = match SoftwareContainer::load(&file, &host) {
        // Without a TPM the copy opens and signs the rewritten period as 3..4 again.
        Ok(_) => signed_log(&file, &host, 10, 2),
        Err(e) => {
            assert!(tpm.is_some(), "{e}");
            assert!(
                matches!(&e, Error::Tampered(m) if m.contains("rolled back")),
                "{e}"
            );
            // With a TPM only the newest state opens: it signs 6..7.
            fs::write(&file, &newest).unwrap();
            signed_log(&file, &host, 10, 2)
        }
    };
    verify_after(dir, key, &january, &rewritten)
}

#[test]
fn a_rewritten_period_re_signed_with_a_tpm_bound_container_shows_as_evidence() {
    let key = PublisherKey::generate(VENDOR, "tpm attacks");
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let out = replay_february(dir.path(), Some(&tpm), &key);
    assert!(
        out.contains("EVIDENCE") && out.contains("numbers 3 to 5") && out.contains("TPM"),
        "{out}"
    );
    assert!(out.contains("NOT without a gap"), "{out}");
    assert!(!out.contains("UNANCHORED"), "{out}");
}

#[test]
fn a_rewritten_period_re_signed_without_a_tpm_is_reported_as_unanchored() {
    // Without an anchor the replay cannot be told from the honest log (out of scope), but
    // the report must say so rather than vouch for the numbers.
    let key = PublisherKey::generate(VENDOR, "tpm attacks");
    let dir = tempfile::tempdir().unwrap();
    let out = replay_february(dir.path(), None, &key);
    assert!(out.contains("goes on from it"), "{out}");
    assert!(
        out.contains("UNANCHORED") && out.contains("prove nothing"),
        "{out}"
    );
}
