//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod borrow;
pub mod etcd;
pub mod http;
pub mod netlab;
pub mod server;
pub mod swtpm;

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>, where this test binary's profile puts the library and binaries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// A binary of this crate, as cargo built it for the integration tests (with their
/// features).
pub fn bin(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "tessera" => env!("CARGO_BIN_EXE_tessera"),
        "tessera-vendor" => env!("CARGO_BIN_EXE_tessera-vendor"),
        "tessera-server" => env!("CARGO_BIN_EXE_tessera-server"),
        "tessera-dongle" => env!("CARGO_BIN_EXE_tessera-dongle"),
        other => panic!("no binary {other}"),
    })
}

/// The freshly built libtessera.so. `cargo test` builds the rlib only, so this runs
/// `cargo build --lib` once per test binary (a no-op when it is up to date).
pub fn cdylib() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = profile_dir();
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "--lib", "--quiet"]).current_dir(root());
            // The build runs on the real clock even when the tests run under libfaketime
            // (scripts/test-shifted-clock.sh): rustc's allocator deadlocks under it, and a
            // build would stamp its outputs with the shifted time.
            cmd.env_remove("LD_PRELOAD").env_remove("FAKETIME");
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("cargo build --lib");
            assert!(st.success(), "building libtessera.so failed");
            dir.join("libtessera.so")
        })
        .clone()
}

/// Makes `cmd` run as `nobody` (uid and gid 65534, no supplementary groups).
///
/// Under scripts/test-shifted-clock.sh every process inherits, through FAKETIME_SHARED, a
/// libfaketime semaphore the root test binary created with mode 0600. `nobody` cannot open
/// it, and libfaketime 0.9.10 then tries `/faketime_sem_<its pid>`, which a process of the
/// same pid may have left behind earlier in the run: the child exits 1 before `main`.
/// Without FAKETIME_SHARED it makes its own or goes without; a relative offset needs none.
pub fn as_nobody(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.uid(65534).gid(65534).env_remove("FAKETIME_SHARED")
}

use tessera::client::{Environment, install_activation, request_activation};
use tessera::license::{CountingUnit, VmPolicy};
use tessera::publisher::{LicenseSpec, PublisherKey};

/// A license spec with the usual defaults: all features, perpetual, VMs allowed.
pub fn spec(product_code: u32, quantity: u32, unit: CountingUnit) -> LicenseSpec {
    LicenseSpec {
        product_code,
        product_name: format!("Product {product_code}"),
        features: 0xFF,
        quantity,
        counting_unit: unit,
        exclusive_allowed: false,
        borrow_days: 0,
        expiry: None,
        vm_policy: VmPolicy::Allow,
    }
}

/// The environment of this machine with its state in `home`.
pub fn env_in(home: &Path) -> Environment {
    Environment {
        home: home.to_path_buf(),
        ..Environment::detect()
    }
}

/// Activates `specs` for `key`'s vendor in `env` (request, publisher answer, install).
pub fn activate(env: &Environment, key: &PublisherKey, specs: &[LicenseSpec]) -> String {
    let (serial, req) = request_activation(env, key.vendor_id).expect("activation request");
    let act = key
        .activate(&req, specs, tessera::util::now())
        .expect("publisher activates");
    install_activation(env, &act, Some(&key.public_key())).expect("install");
    serial
}

/// A lib directory in `dir` with libtessera.so and its soname link.
pub fn libdir(dir: &Path) -> PathBuf {
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(cdylib(), lib.join("libtessera.so")).unwrap();
    std::os::unix::fs::symlink("libtessera.so", lib.join("libtessera.so.0")).unwrap();
    lib
}

/// Compiles a C (`.c`, C11) or C++ (`.cpp`, C++17) source of the repository with warnings
/// as errors against include/ and the library in `lib`, found at run time through an rpath.
pub fn compile(src: &str, out: &Path, lib: &Path, extra: &[&str]) {
    let (compiler, std) = if src.ends_with(".cpp") {
        ("c++", "-std=c++17")
    } else {
        ("cc", "-std=c11")
    };
    let st = Command::new(compiler)
        .args([std, "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-g"])
        .args(extra)
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join(src))
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        .arg("-ltessera")
        .arg("-lpthread")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .expect(compiler);
    assert!(
        st.status.success(),
        "compiling {src} failed:\n{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// `dir/name`, a TESSERA_HOME where the demo publisher's product 1 (features 0xff, 4 seats
/// per process) is activated: what the examples expect.
pub fn demo_home(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    let mut s = spec(
        tessera::publisher::DEMO_PRODUCT_CODE,
        4,
        CountingUnit::Process,
    );
    s.features = 0xFF;
    activate(&env_in(&home), &PublisherKey::demo(), &[s]);
    home
}
