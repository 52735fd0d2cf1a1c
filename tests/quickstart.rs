//! The C examples and the C conformance tests, compiled with the system C compiler (-Werror)
//! against the built libtessera.so, and run (under the sanitizers: tests/sanitizers.rs).

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{compile, demo_home, libdir};

fn run(exe: &Path, home: &Path) -> Output {
    Command::new(exe)
        .env("TESSERA_HOME", home)
        .output()
        .expect("run")
}

#[test]
fn quickstart_runs_end_to_end_on_an_activated_machine() {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir(dir.path());
    let exe = dir.path().join("quickstart");
    compile("examples/c/quickstart.c", &exe, &lib, &[]);
    let home = demo_home(dir.path(), "home");
    let out = run(&exe, &home);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "quickstart failed:\n{text}");
    for line in [
        "acquire product 1            ok",
        "round trip matches: \"Hello from a protected app\"",
        "round trip matches: \"Keys never leave the container\"",
        "flipped bit detected: yes",
        "release again -> invalid handle",
        "quickstart: all steps succeeded",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn quickstart_says_why_when_there_is_no_license() {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir(dir.path());
    let exe = dir.path().join("quickstart");
    compile("examples/c/quickstart.c", &exe, &lib, &[]);
    let out = run(&exe, &dir.path().join("empty-home"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAILED: no license (100)"), "{text}");
}

/// tests/sanitizers.rs runs it under ASan+LSan and UBSan too.
#[test]
fn c_conformance_passes() {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir(dir.path());
    let home = demo_home(dir.path(), "home");
    let exe = dir.path().join("conformance");
    compile("tests/c/conformance.c", &exe, &lib, &[]);
    let out = run(&exe, &home);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "conformance failed:\n{text}\n{err}");
    assert!(text.contains(", 0 failed"), "{text}");
}

/// tests/sanitizers.rs runs it under ASan+LSan and UBSan too.
#[test]
fn cpp_quickstart_with_the_raii_header_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir(dir.path());
    let home = demo_home(dir.path(), "home");
    let exe = dir.path().join("quickstart-cpp");
    compile("examples/cpp/quickstart.cpp", &exe, &lib, &[]);
    let out = run(&exe, &home);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("unlicensed product refused: tessera_acquire: no license"),
        "{text}"
    );
    assert!(
        text.contains("licensed: product 1, features 0xff, 0 of 4 in use"),
        "{text}"
    );
    assert!(
        text.contains("cpp quickstart: all steps succeeded"),
        "{text}"
    );
}

/// tests/c/abi.c: in-place encryption, handles that never come back, the settled contract
/// gaps, the license list and the waiting acquire (tests/sanitizers.rs runs it under ASan,
/// LeakSanitizer and UBSan).
#[test]
fn c_abi_contract_holds() {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir(dir.path());
    let home = demo_home(dir.path(), "home");
    let exe = dir.path().join("abi");
    compile("tests/c/abi.c", &exe, &lib, &[]);
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out = Command::new(&exe)
        .arg(&scratch)
        .env("TESSERA_HOME", &home)
        .output()
        .expect("run abi");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "abi failed:\n{text}\n{err}");
    assert!(text.contains(", 0 failed"), "{text}");
}
