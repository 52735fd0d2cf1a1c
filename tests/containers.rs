//! Software containers through the Rust API, with host identities and clocks injected to
//! simulate other machines: copied elsewhere, edited, clock set back, VMs refused, bad
//! license/request/container files, and a kill -9 in the middle of a write.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tessera::Error;
use tessera::client::{
    Environment, Session, SessionOptions, install_activation, request_activation,
};
use tessera::container::software::list_for_vendor;
use tessera::host::{HostIdentity, Hypervisor, MachineKind};
use tessera::license::{CountingUnit, SignedLicense, VmPolicy};
use tessera::publisher::{LicenseSpec, PublisherKey};
use tessera::util::OffsetClock;

mod common;
use common::spec;

const VENDOR: u32 = 77;

fn env(home: &Path, host: &str, offset: i64) -> Environment {
    Environment {
        home: home.to_path_buf(),
        host: HostIdentity::simulated(host),
        clock: Arc::new(OffsetClock { offset }),
    }
}

fn activate(env: &Environment, key: &PublisherKey, specs: &[LicenseSpec]) {
    let (_, req) = request_activation(env, VENDOR).unwrap();
    let act = key.activate(&req, specs, tessera::util::now()).unwrap();
    install_activation(env, &act, Some(&key.public_key())).unwrap();
}

fn session(env: &Environment, key: &PublisherKey) -> Session {
    Session::open_in(SessionOptions::new(VENDOR, key.public_key()), env.clone()).unwrap()
}

#[test]
fn a_container_copied_to_another_machine_is_a_binding_mismatch() {
    let home = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "t");
    let a = env(home.path(), "machine A", 0);
    activate(&a, &key, &[spec(1, 1, CountingUnit::Station)]);
    assert!(session(&a, &key).acquire(1, 0, false).is_ok());
    // The same files seen from machine B (as if copied there).
    let b = env(home.path(), "machine B", 0);
    let e = session(&b, &key).acquire(1, 0, false).unwrap_err();
    assert!(matches!(e, Error::BindingMismatch(_)), "{e}");
    // One part of machine A changed (a new NIC): still A.
    let mut a2 = a.clone();
    for t in a2.host.fingerprint.traits.iter_mut() {
        if t.kind == tessera::host::TraitKind::Mac {
            t.value = "02:00:00:00:00:99".into();
        }
    }
    assert!(session(&a2, &key).acquire(1, 0, false).is_ok());
}

#[test]
fn an_edited_container_is_tampered() {
    let home = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "t");
    let a = env(home.path(), "machine A", 0);
    activate(&a, &key, &[spec(1, 1, CountingUnit::Station)]);
    let path = &list_for_vendor(home.path(), VENDOR)[0];
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(path, &bytes).unwrap();
    let e = session(&a, &key).acquire(1, 0, false).unwrap_err();
    assert!(matches!(e, Error::Tampered(_)), "{e}");
    assert_eq!(
        tessera::ffi::status::from_error(&e),
        tessera::ffi::tessera_status::TESSERA_E_TAMPERED
    );
}

#[test]
fn clock_set_back_refuses_time_limited_licenses_only() {
    let home = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "t");
    let mut limited = spec(1, 1, CountingUnit::Station);
    limited.expiry = Some(tessera::util::now() + 365 * 86_400);
    let perpetual = spec(2, 1, CountingUnit::Station);
    // The container sees a date ten days ahead (and persists it as its high-water mark)...
    let ahead = env(home.path(), "A", 10 * 86_400);
    activate(&ahead, &key, &[limited, perpetual]);
    assert!(session(&ahead, &key).acquire(1, 0, false).is_ok());
    // ...then the clock is back at today: ten days behind the mark.
    let today = env(home.path(), "A", 0);
    let s = session(&today, &key);
    let e = s.acquire(1, 0, false).unwrap_err();
    assert!(matches!(e, Error::ClockRollback { .. }), "{e}");
    assert!(
        s.acquire(2, 0, false).is_ok(),
        "perpetual licenses do not care"
    );
    // Within the tolerance (30 minutes behind) is fine.
    let slightly = env(home.path(), "A", 10 * 86_400 - 1800);
    assert!(session(&slightly, &key).acquire(1, 0, false).is_ok());
}

#[test]
fn vm_policy_deny_refuses_virtual_machines() {
    let home = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "t");
    let mut vm = env(home.path(), "guest", 0);
    vm.host.machine = MachineKind::Virtual(Hypervisor::Kvm);
    let deny = LicenseSpec {
        vm_policy: VmPolicy::Deny,
        ..spec(1, 1, CountingUnit::Station)
    };
    activate(&vm, &key, &[deny, spec(2, 1, CountingUnit::Station)]);
    let e = session(&vm, &key).acquire(1, 0, false).unwrap_err();
    assert!(matches!(e, Error::VmNotAllowed(_)), "{e}");
    assert!(session(&vm, &key).acquire(2, 0, false).is_ok());
    let mut physical = vm.clone();
    physical.host.machine = MachineKind::Physical;
    assert!(session(&physical, &key).acquire(1, 0, false).is_ok());
}

#[test]
fn bad_license_request_and_activation_files_get_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "t");
    let a = env(home.path(), "A", 0);
    let (_, req) = request_activation(&a, VENDOR).unwrap();
    // Requests: truncated, flipped, of another vendor, future version.
    assert!(matches!(
        key.read_request(&req[..req.len() - 1]),
        Err(Error::Malformed { .. })
    ));
    let mut flipped = req.clone();
    flipped[20] ^= 1;
    assert!(key.read_request(&flipped).is_err());
    let other_vendor = PublisherKey::generate(VENDOR + 1, "o");
    assert!(matches!(
        other_vendor.read_request(&req),
        Err(Error::WrongVendor { .. })
    ));
    let mut future = req.clone();
    future[4] = 7;
    assert!(matches!(
        key.read_request(&future),
        Err(Error::UnknownVersion { found: 7, .. })
    ));
    // Licenses inside an activation: each verifies only with its publisher.
    let act = key
        .activate(
            &req,
            &[spec(1, 1, CountingUnit::Handle)],
            tessera::util::now(),
        )
        .unwrap();
    let parsed: tessera::container::Activation =
        tessera::license::Envelope::parse(tessera::license::Kind::Activation, &act)
            .unwrap()
            .decode()
            .unwrap();
    let lic = &parsed.licenses[0];
    assert!(SignedLicense::verify(lic, &key.public_key()).is_ok());
    assert!(matches!(
        SignedLicense::verify(lic, &other_vendor.public_key()),
        Err(Error::BadSignature(_))
    ));
    assert!(matches!(
        SignedLicense::verify(&lic[..lic.len() - 10], &key.public_key()),
        Err(Error::Malformed { .. })
    ));
    // A license from another vendor's activation is refused by this container.
    let (_, req2) = request_activation(&a, VENDOR).unwrap();
    assert!(
        other_vendor
            .activate(&req2, &[spec(1, 1, CountingUnit::Handle)], 0)
            .is_err()
    );
    install_activation(&a, &act, Some(&key.public_key())).unwrap();
    assert!(session(&a, &key).acquire(1, 0, false).is_ok());
}

/// Child mode: install activations in a loop until killed.
#[test]
fn child_install_loop() {
    let Ok(home) = std::env::var("TESSERA_TEST_CHILD_HOME") else {
        return;
    };
    let key =
        PublisherKey::from_bytes(&std::fs::read(Path::new(&home).join("key")).unwrap()).unwrap();
    let e = env(Path::new(&home), "A", 0);
    let mut product = 100;
    loop {
        let (_, req) = request_activation(&e, VENDOR).unwrap();
        let act = key
            .activate(
                &req,
                &[spec(product, 1, CountingUnit::Handle)],
                tessera::util::now(),
            )
            .unwrap();
        install_activation(&e, &act, None).unwrap();
        product += 1;
    }
}

#[test]
fn kill_9_in_the_middle_of_writes_leaves_a_whole_container() {
    let home = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "t");
    key.save(&home.path().join("key")).unwrap();
    let a = env(home.path(), "A", 0);
    activate(&a, &key, &[spec(1, 1, CountingUnit::Handle)]);
    for round in 0..8 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_install_loop",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TESSERA_TEST_CHILD_HOME", home.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + round * 37));
        // SIGKILL: no destructor, no flush, whatever it was doing.
        child.kill().unwrap();
        child.wait().unwrap();
        let s = session(&a, &key);
        assert!(
            s.acquire(1, 0, false).is_ok(),
            "round {round}: the first license survives every kill"
        );
    }
    let s = session(&a, &key);
    let installed = (100..10_000)
        .take_while(|p| s.acquire(*p, 0, false).is_ok())
        .count();
    assert!(
        installed > 0,
        "the child installed licenses before it was killed"
    );
    let stray: Vec<_> = std::fs::read_dir(home.path().join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".tsc") && !n.ends_with(".lock"))
        .collect();
    assert!(
        stray.len() <= 1,
        "at most the temp file of the killed write is left: {stray:?}"
    );
}

#[test]
fn a_container_with_many_licenses_lists_them_page_by_page_within_a_channel_frame() {
    use tessera::container::engine::RequestContext;
    use tessera::container::protocol::{Request, encode_response};
    use tessera::container::{ContainerKind, Engine};
    let now = tessera::util::now();
    let key = PublisherKey::generate(VENDOR, "t");
    let mut engine = Engine::create(ContainerKind::Dongle, 0, now);
    let req = engine
        .activation_request(
            &tessera::host::Fingerprint::default(),
            MachineKind::Physical,
            "h",
            now,
        )
        .unwrap();
    let specs: Vec<LicenseSpec> = (1..=80).map(|p| spec(p, 1, CountingUnit::Handle)).collect();
    let act = key.activate(&req, &specs, now).unwrap();
    engine.install_activation(&act, None, now).unwrap();
    let ctx = RequestContext {
        now,
        now_ms: 0,
        host: None,
        machine: MachineKind::Physical,
    };
    let (first, _) = engine.handle(Request::ListLicenses { offset: 0 }, &ctx);
    assert!(
        encode_response(&first).unwrap().len() <= tessera::channel::MAX_PLAINTEXT,
        "one page fits one channel frame"
    );
    let mut pages = 0;
    let all = tessera::dongle::client::list_all_licenses(|r| {
        pages += 1;
        Ok(engine.handle(r.clone(), &ctx).0)
    })
    .unwrap();
    assert_eq!(all.len(), 80);
    assert!(pages > 1, "80 licenses do not fit one page");
}
