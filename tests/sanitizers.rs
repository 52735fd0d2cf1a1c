//! Every C and C++ program of the suite under the sanitizers (issue 15, item 7): each one in
//! [`PROGRAMS`] is built twice against the real libtessera.so, once with AddressSanitizer and
//! LeakSanitizer (`detect_leaks=1`: a leak fails the run) and once with
//! UndefinedBehaviorSanitizer (`-fno-sanitize-recover=all`: the first finding ends it), and
//! run as its own test runs it. A run passes when the program says it succeeded, exits 0, and
//! no sanitizer said anything.
//!
//! A canary ([`tests/c/sanitizer_canary.c`]) with one bug of each kind must fail under the
//! same flags and options first: a sanitizer that quietly stopped reporting would otherwise
//! let every program pass unchecked.
//!
//! Under scripts/test-shifted-clock.sh, libfaketime is preloaded into the programs too: it
//! must come before the ASan runtime (`verify_asan_link_order=0`), and LeakSanitizer's
//! in-process symbolizer dies there ("The futex facility returned an unexpected error
//! code", SIGABRT) when it has a leak to report, so under libfaketime the reports are not
//! symbolized (`symbolize=0`; rerun without the shift to read the frames).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;

mod common;
use common::{activate, bin, compile, demo_home, env_in, libdir, spec};

/// A program of the suite and how to run it.
struct Program {
    /// The source, from the repository root (`.c` is C11, `.cpp` C++17).
    src: &'static str,
    /// Makes what its run needs in the folder given: its TESSERA_HOME and arguments.
    setup: fn(&Path) -> Run,
    /// What its output must contain when it succeeded ("" for the exit status alone).
    says: &'static str,
}

/// Every C and C++ program the tests run. A new one is one line here.
const PROGRAMS: &[Program] = &[
    Program {
        src: "tests/c/abi.c",
        setup: abi,
        says: ", 0 failed",
    },
    Program {
        src: "examples/c/quickstart.c",
        setup: demo,
        says: "quickstart: all steps succeeded",
    },
    Program {
        src: "tests/c/conformance.c",
        setup: demo,
        says: ", 0 failed",
    },
    Program {
        src: "examples/cpp/quickstart.cpp",
        setup: demo,
        says: "cpp quickstart: all steps succeeded",
    },
    Program {
        src: "examples/c/protected_app.c",
        setup: protected_app,
        says: "3 x widget = 37.50",
    },
    Program {
        src: "tests/c/fork.c",
        setup: fork_held,
        says: "RESULT ok",
    },
    Program {
        src: "tests/c/offline_client.c",
        setup: network_seat,
        says: "ERRORS 0 INFO 1 INFO_ERRORS 0 SERVER test-server",
    },
];

/// One run of a program.
struct Run {
    home: PathBuf,
    args: Vec<String>,
    /// `TESSERA_SERVERS` for it ("": none).
    servers: String,
    /// The license server it talks to, stopped when the run is dropped.
    _server: Option<common::server::ServerProc>,
}

impl Run {
    fn local(home: PathBuf, args: Vec<String>) -> Run {
        Run {
            home,
            args,
            servers: String::new(),
            _server: None,
        }
    }
}

/// tests/c/offline_client.c: a network seat of the demo product on a license server; with
/// stdin closed it does one round (encrypt and decrypt in both modes, seat_info) and reports.
fn network_seat(dir: &Path) -> Run {
    let server_home = dir.join("server-home");
    activate(
        &env_in(&server_home),
        &PublisherKey::demo(),
        &[spec(1, 5, CountingUnit::Handle)],
    );
    let server = common::server::ServerProc::start(&dir.join("server-state"), &server_home, 0);
    Run {
        home: dir.join("home"),
        args: vec![],
        servers: server.addr.clone(),
        _server: Some(server),
    }
}

/// The demo publisher's product 1 activated in a fresh home: what the examples expect.
fn demo(dir: &Path) -> Run {
    Run::local(demo_home(dir, "home"), vec![])
}

/// The demo home, and an empty folder the ABI test may write in as its argument.
fn abi(dir: &Path) -> Run {
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    Run::local(demo_home(dir, "home"), vec![scratch.display().to_string()])
}

/// The protected app reading the demo publisher's price table, encrypted for product 1.
fn protected_app(dir: &Path) -> Run {
    let key = dir.join("demo.key");
    let plain = dir.join("rates.txt");
    let sealed = dir.join("rates.tsx");
    std::fs::write(&plain, "widget 1250\ngizmo 399\n").unwrap();
    let vendor = |args: &[&Path]| {
        let out = Command::new(bin("tessera-vendor"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tessera-vendor {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    vendor(&["keygen".as_ref(), "--demo".as_ref(), "--out".as_ref(), &key]);
    vendor(&[
        "encrypt-file".as_ref(),
        "--key".as_ref(),
        &key,
        "--product".as_ref(),
        "1".as_ref(),
        &plain,
        &sealed,
    ]);
    Run::local(
        demo_home(dir, "home"),
        vec![sealed.display().to_string(), "widget".into(), "3".into()],
    )
}

/// tests/c/fork.c in its "held" mode: four children of the holder of the only seat.
fn fork_held(dir: &Path) -> Run {
    const VENDOR: u32 = 0x5A_17;
    let home = dir.join("home");
    let key = PublisherKey::generate(VENDOR, "sanitizers");
    activate(&env_in(&home), &key, &[spec(1, 1, CountingUnit::Handle)]);
    Run::local(
        home,
        vec![
            "held".into(),
            VENDOR.to_string(),
            hex::encode(key.public_key().to_bytes()),
            "1".into(),
            "4".into(),
        ],
    )
}

#[derive(Clone, Copy, Debug)]
enum Sanitizer {
    /// AddressSanitizer with LeakSanitizer.
    Address,
    /// UndefinedBehaviorSanitizer.
    Undefined,
}

impl Sanitizer {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Sanitizer::Address => &["-fsanitize=address", "-fno-omit-frame-pointer"],
            Sanitizer::Undefined => &[
                "-fsanitize=undefined",
                "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer",
            ],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sanitizer::Address => "asan",
            Sanitizer::Undefined => "ubsan",
        }
    }
}

/// The sanitizers' options; see the top of this file for libfaketime.
fn sanitizer_env(cmd: &mut Command) {
    let faketime = std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("faketime"));
    let symbolize = if faketime { ":symbolize=0" } else { "" };
    cmd.env(
        "ASAN_OPTIONS",
        format!(
            "detect_leaks=1:halt_on_error=1:abort_on_error=0:verify_asan_link_order=0{symbolize}"
        ),
    )
    .env(
        "UBSAN_OPTIONS",
        format!("print_stacktrace=1:halt_on_error=1{symbolize}"),
    );
}

/// What a sanitizer says when it found something.
fn sanitizer_spoke(stderr: &str) -> bool {
    stderr.contains("Sanitizer") || stderr.contains("runtime error:")
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `exe` with `run`'s home and arguments; kills it (a failure) after two minutes.
fn execute(exe: &Path, run: &Run, dir: &Path) -> Outcome {
    let name = exe.file_name().unwrap().to_string_lossy();
    let (out_path, err_path) = (
        dir.join(format!("{name}.out")),
        dir.join(format!("{name}.err")),
    );
    let mut cmd = Command::new(exe);
    cmd.args(&run.args)
        .env("TESSERA_HOME", &run.home)
        .env("TESSERA_SERVERS", &run.servers)
        .env("FORK_SOURCES", "")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    sanitizer_env(&mut cmd);
    let mut child = common::server::KillOnDrop(cmd.spawn().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let mut stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str("\n(killed after 120 s: it hung)");
    }
    Outcome {
        ok: status.is_some_and(|s| s.success()),
        stdout,
        stderr,
    }
}

/// Builds every program with `san` and runs it; fails listing every program that failed.
fn every_program_under(san: Sanitizer) {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir(dir.path());
    let mut failed = Vec::new();
    for p in PROGRAMS {
        let stem = Path::new(p.src).file_name().unwrap().to_string_lossy();
        let work = dir.path().join(format!("{stem}-{}", san.name()));
        std::fs::create_dir_all(&work).unwrap();
        let exe = work.join(format!("{stem}-{}", san.name()));
        compile(p.src, &exe, &lib, san.flags());
        let run = (p.setup)(&work);
        let o = execute(&exe, &run, &work);
        if !o.ok || !o.stdout.contains(p.says) || sanitizer_spoke(&o.stderr) {
            failed.push(format!(
                "{} under {san:?}: exit ok {}, said {:?}\n--- stdout\n{}--- stderr\n{}",
                p.src, o.ok, p.says, o.stdout, o.stderr
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// Builds the canary with `san` and runs it in `mode`.
fn canary(san: Sanitizer, mode: &str, dir: &Path, lib: &Path) -> Outcome {
    let exe = dir.join(format!("canary-{}", san.name()));
    if !exe.exists() {
        compile("tests/c/sanitizer_canary.c", &exe, lib, san.flags());
    }
    let run = Run::local(dir.join("empty-home"), vec![mode.into()]);
    execute(&exe, &run, dir)
}

#[test]
fn the_sanitizers_catch_a_leak_an_overflow_and_undefined_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir(dir.path());
    for (san, mode, says) in [
        (
            Sanitizer::Address,
            "leak",
            "ERROR: LeakSanitizer: detected memory leaks",
        ),
        (
            Sanitizer::Address,
            "overflow",
            "ERROR: AddressSanitizer: heap-buffer-overflow",
        ),
        (
            Sanitizer::Undefined,
            "signed",
            "runtime error: signed integer overflow",
        ),
    ] {
        let o = canary(san, mode, dir.path(), &lib);
        assert!(
            !o.ok && o.stderr.contains(says),
            "{mode} under {san:?} was not caught:\n{}{}",
            o.stdout,
            o.stderr
        );
    }
    // And without a bug, nothing to say.
    for san in [Sanitizer::Address, Sanitizer::Undefined] {
        let o = canary(san, "none", dir.path(), &lib);
        assert!(
            o.ok && !sanitizer_spoke(&o.stderr),
            "{san:?}:\n{}{}",
            o.stdout,
            o.stderr
        );
    }
}

#[test]
fn every_c_program_is_clean_under_address_and_leak_sanitizer() {
    every_program_under(Sanitizer::Address);
}

#[test]
fn every_c_program_is_clean_under_undefined_behaviour_sanitizer() {
    every_program_under(Sanitizer::Undefined);
}
