//! The coverage-guided fuzz targets (`fuzz/`, run by `make fuzz` on nightly) on stable: every
//! committed seed (`fuzz/corpus/<target>/`) and every input that once crashed a target
//! (`fuzz/regressions/<target>/`) goes through the same function of `tessera::fuzzing` the
//! target calls, so a fixed crash stays fixed in every `make test`.
//!
//! `TESSERA_BLESS_FUZZ_CORPUS=1 cargo test --test fuzz_corpus` writes the seed corpora anew
//! (valid inputs of every kind, from `tessera::fuzzing::seeds`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tessera::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_committed_seed_and_regression_passes_its_target() {
    let home = tempfile::tempdir().unwrap();
    if std::env::var_os("TESSERA_BLESS_FUZZ_CORPUS").is_some() {
        for (target, name, bytes) in fuzzing::seeds(home.path()) {
            let dir = fuzz_dir().join("corpus").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut replayed = 0;
    for t in fuzzing::STATEFUL_TARGETS {
        assert!(!files(&fuzz_dir().join("corpus").join(t)).is_empty());
    }
    for (target, run) in fuzzing::targets() {
        let seeds = files(&fuzz_dir().join("corpus").join(target));
        assert!(!seeds.is_empty(), "no committed seeds for {target}");
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let bytes = std::fs::read(path).unwrap();
            let r = std::panic::catch_unwind(|| run(&bytes));
            assert!(r.is_ok(), "{target} panics on {}", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= fuzzing::targets().len());
}

/// The request handler's target: a server on a temporary state directory, fed every seed
/// and regression in order, as the fuzzer feeds it.
#[test]
fn every_committed_request_passes_the_server_target() {
    let dir = tempfile::tempdir().unwrap();
    let harness = fuzzing::ServerHarness::new(dir.path()).unwrap();
    let mut n = 0;
    for sub in ["corpus", "regressions"] {
        for path in files(&fuzz_dir().join(sub).join("server_request")) {
            let bytes = std::fs::read(&path).unwrap();
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness.request(&bytes)));
            assert!(r.is_ok(), "server_request panics on {}", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "no committed seeds for server_request");
    // The seeds reach past the decoder: a seat is granted, and the publisher's ciphertext
    // decrypts in its container.
    let seed = |name: &str| std::fs::read(fuzz_dir().join("corpus/server_request").join(name));
    use tessera::net::proto::NetResponse;
    let seat = harness.request(&seed("request-0").unwrap());
    assert!(matches!(seat, Some(NetResponse::Granted(_))), "{seat:?}");
    let data = harness.request(&seed("request-9-decrypt-genuine").unwrap());
    assert_eq!(
        data,
        Some(NetResponse::Data(b"sealed by the publisher".to_vec()))
    );
}

#[test]
fn the_seed_builders_pass_their_targets() {
    let home = tempfile::tempdir().unwrap();
    let targets = fuzzing::targets();
    for (target, name, bytes) in fuzzing::seeds(home.path()) {
        if fuzzing::STATEFUL_TARGETS.contains(&target) {
            continue;
        }
        let run = targets
            .iter()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("seed {name} for unknown target {target}"))
            .1;
        run(&bytes);
    }
}

/// Seeds that are genuine documents must be accepted, or the targets' checks that only
/// genuine documents are accepted would never run.
#[test]
fn genuine_seeds_verify_under_the_fixed_keys() {
    use tessera::license::{Envelope, Kind, SignedLicense};
    let home = tempfile::tempdir().unwrap();
    let seeds = fuzzing::seeds(home.path());
    let seed = |t: &str, n: &str| {
        seeds
            .iter()
            .find(|(target, name, _)| *target == t && name == n)
            .unwrap_or_else(|| panic!("no seed {t}/{n}"))
            .2
            .clone()
    };
    let pk = fuzzing::publisher().public_key();
    assert!(SignedLicense::verify(&seed("envelope", "license"), &pk).is_ok());
    let cert = Envelope::parse(Kind::Certificate, &seed("envelope", "certificate")).unwrap();
    assert!(cert.verify(&pk).is_ok());
    assert!(
        fuzzing::publisher()
            .read_request(&seed("activation", "request"))
            .is_ok()
    );
    let act = Envelope::parse(Kind::Activation, &seed("activation", "activation")).unwrap();
    assert!(act.verify(&pk).is_ok());
    let ct = seed("ciphertext", "ct-0");
    assert_eq!(
        tessera::cipher::decrypt(&fuzzing::PRODUCT_SECRET, &ct).unwrap(),
        b"some plaintext"
    );
    let report = tessera::license::usage::verify(&seed("usage_log", "log")[..], &pk).unwrap();
    assert_eq!((report.verified, report.unverified_tail), (3, 1));
    let tsc = home.path().join("seed.tsc");
    std::fs::write(&tsc, seed("container_file", "software")).unwrap();
    assert!(
        tessera::container::SoftwareContainer::load(&tsc, &fuzzing::host().fingerprint).is_ok()
    );
    let hello = seed("hello", "server");
    assert!(tessera::net::proto::decode::<tessera::net::proto::ServerHello>(&hello, "h").is_ok());
}

/// The fuzz crate has one target per function here, and the other way round.
#[test]
fn every_target_has_its_cargo_fuzz_binary() {
    let names: BTreeSet<String> = fuzzing::targets()
        .iter()
        .map(|(t, _)| t.to_string())
        .chain(fuzzing::STATEFUL_TARGETS.iter().map(|t| t.to_string()))
        .collect();
    let bins: BTreeSet<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, bins);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for n in &names {
        assert!(
            manifest.contains(&format!("name = \"{n}\"")),
            "fuzz/Cargo.toml has no [[bin]] {n}"
        );
    }
}
