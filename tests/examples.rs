//! The examples in every language, run as a customer would: the quickstarts in C, C++,
//! Python and C# against a software container and against a license server, and the
//! protected app against the real library and against a stub that answers OK to everything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod common;
use common::server::ServerProc;
use common::{bin, compile, demo_home, libdir, root};

/// Where a quickstart finds its license.
enum Source<'a> {
    /// A software container in this TESSERA_HOME.
    Software(&'a Path),
    /// A license server at this address (the client's own TESSERA_HOME is empty).
    Server(&'a str, &'a Path),
}

impl Source<'_> {
    fn apply(&self, cmd: &mut Command) {
        match self {
            Source::Software(home) => cmd.env("TESSERA_HOME", home).env_remove("TESSERA_SERVERS"),
            Source::Server(addr, home) => {
                cmd.env("TESSERA_HOME", home).env("TESSERA_SERVERS", addr)
            }
        };
    }
}

/// The examples' working directory: a shared lib dir and the compiled programs, built once.
struct Built {
    _dir: tempfile::TempDir,
    lib: PathBuf,
    c: PathBuf,
    cpp: PathBuf,
    protected: PathBuf,
    csharp: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let lib = libdir(dir.path());
        let c = dir.path().join("quickstart");
        compile("examples/c/quickstart.c", &c, &lib, &[]);
        let cpp = dir.path().join("quickstart-cpp");
        compile("examples/cpp/quickstart.cpp", &cpp, &lib, &[]);
        let protected = dir.path().join("protected_app");
        compile("examples/c/protected_app.c", &protected, &lib, &[]);
        let csharp = dir.path().join("csharp");
        // Mono (mcs too) may leave mono_crash.* files in its working directory: the
        // temporary one, never the work tree.
        // Building is not what is tested: the compiler runs on the real clock, also in the
        // shifted-clock passes (mcs under libfaketime can abort in `clock_nanosleep` with
        // EINVAL); the quickstarts below run on the moved clock.
        let out = Command::new(root().join("bindings/csharp/build.sh"))
            .arg(&csharp)
            .current_dir(dir.path())
            .env_remove("LD_PRELOAD")
            .env_remove("FAKETIME")
            .output()
            .expect("bindings/csharp/build.sh");
        assert!(
            out.status.success(),
            "building the C# binding failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Built {
            lib,
            c,
            cpp,
            protected,
            csharp,
            _dir: dir,
        }
    })
}

fn run(mut cmd: Command, source: &Source) -> (bool, String) {
    let b = built();
    source.apply(&mut cmd);
    cmd.current_dir(b._dir.path());
    cmd.env("TESSERA_LIBRARY", b.lib.join("libtessera.so"))
        .env("LD_LIBRARY_PATH", &b.lib)
        .env("PYTHONPATH", root().join("bindings/python/src"));
    let out: Output = cmd.output().expect("run example");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs the quickstart of every language against `source` and checks each one succeeded.
fn every_quickstart(source: &Source) {
    let b = built();
    let mut python = Command::new("python3");
    python.arg(root().join("examples/python/quickstart.py"));
    let mut csharp = Command::new("mono");
    csharp.arg(b.csharp.join("Quickstart.exe"));
    let runs = [
        ("C", Command::new(&b.c), "quickstart: all steps succeeded"),
        (
            "C++",
            Command::new(&b.cpp),
            "cpp quickstart: all steps succeeded",
        ),
        ("Python", python, "quickstart: all steps succeeded"),
        ("C#", csharp, "quickstart: all steps succeeded"),
    ];
    for (lang, cmd, done) in runs {
        let (ok, text) = run(cmd, source);
        assert!(ok, "the {lang} quickstart failed:\n{text}");
        assert!(text.contains(done), "the {lang} quickstart said:\n{text}");
    }
}

#[test]
fn every_quickstart_runs_on_a_software_container() {
    let dir = tempfile::tempdir().unwrap();
    let home = demo_home(dir.path(), "home");
    every_quickstart(&Source::Software(&home));
}

#[test]
fn every_quickstart_runs_against_a_license_server() {
    let dir = tempfile::tempdir().unwrap();
    let server_home = demo_home(dir.path(), "server-home");
    let server = ServerProc::start(&dir.path().join("server-state"), &server_home, 0);
    let client_home = dir.path().join("client-home");
    let addr = server.addr.clone();
    let source = Source::Server(&addr, &client_home);
    every_quickstart(&source);

    // Each one really went to the server: the C quickstart names it as the seat's source,
    // and without the server there is nothing to find.
    let (ok, text) = run(Command::new(&built().c), &source);
    assert!(ok && text.contains("served by license server"), "{text}");
    drop(server);
    let (ok, text) = run(Command::new(&built().c), &source);
    assert!(
        !ok,
        "a quickstart without its server still succeeded:\n{text}"
    );
}

/// The publisher's side of the protected app: a price table encrypted for product 1.
fn encrypted_rates(dir: &Path) -> PathBuf {
    let key = dir.join("demo.key");
    let plain = dir.join("rates.txt");
    let sealed = dir.join("rates.tsx");
    std::fs::write(&plain, "widget 1250\ngizmo 399\n").unwrap();
    for args in [
        vec!["keygen", "--demo", "--out", key.to_str().unwrap()],
        vec![
            "encrypt-file",
            "--key",
            key.to_str().unwrap(),
            "--product",
            "1",
            plain.to_str().unwrap(),
            sealed.to_str().unwrap(),
        ],
    ] {
        let out = Command::new(bin("tessera-vendor"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tessera-vendor {args:?} failed");
    }
    std::fs::remove_file(&plain).unwrap();
    sealed
}

#[test]
fn the_protected_app_works_with_a_seat_and_a_stub_library_gains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rates = encrypted_rates(dir.path());
    let home = demo_home(dir.path(), "home");
    let app = |lib_source: &Source| {
        let mut cmd = Command::new(&built().protected);
        cmd.arg(&rates).args(["widget", "3"]);
        run(cmd, lib_source)
    };

    // Licensed: the table opens and the app does its job.
    let (ok, text) = app(&Source::Software(&home));
    assert!(ok, "{text}");
    assert!(text.contains("3 x widget = 37.50"), "{text}");

    // Unlicensed: a clear refusal.
    let (ok, text) = app(&Source::Software(&dir.path().join("empty")));
    assert!(!ok && text.contains("no license (100)"), "{text}");

    // The attacker's library answers OK to everything. The app is the same binary, loaded
    // with the stub first on the library path (its rpath names the real library, so the
    // stub goes in with LD_PRELOAD, the easiest swap there is).
    let stub_dir = dir.path().join("stub");
    std::fs::create_dir_all(&stub_dir).unwrap();
    let stub = stub_dir.join("libtessera.so.0");
    let out = Command::new("cc")
        .args([
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
        ])
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join("tests/c/stub_tessera.c"))
        .arg("-Wl,-soname,libtessera.so.0")
        .arg("-o")
        .arg(&stub)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new(&built().protected);
    cmd.arg(&rates)
        .args(["widget", "3"])
        .env("LD_PRELOAD", &stub);
    let (ok, text) = run(cmd, &Source::Software(&home));
    assert!(!ok, "the protected app worked on a stub library:\n{text}");
    assert!(
        !text.contains("37.50") && !text.contains("1250"),
        "the stub library revealed the protected data:\n{text}"
    );
    assert!(text.contains("no price for \"widget\""), "{text}");
}
