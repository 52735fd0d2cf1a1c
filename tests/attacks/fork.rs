//! 4. fork: children inheriting a session and its seat claims. A C app (tests/c/fork.c)
//!    acquires the only seat of a license and forks; its children use the inherited session
//!    and seat, race through the parent's seat pool, open sessions of their own, and are
//!    forked while other threads are inside the library. Handles are per process: every
//!    inherited handle answers TESSERA_E_FORKED, the parent's seat stays held and working,
//!    a child's own session counts as a new holder, and no child hangs.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;

use crate::common::server::ServerProc;
use crate::common::{activate, compile, env_in, libdir, spec};

const VENDOR: u32 = 0xF0_4C;
/// One seat, counted per acquire.
const ONE_PER_HANDLE: u32 = 1;
/// One seat, counted per process.
const ONE_PER_PROCESS: u32 = 2;
/// Plenty of seats, for the threads and children of the hammer.
const MANY: u32 = 3;

struct Fork {
    dir: tempfile::TempDir,
    home: PathBuf,
    exe: PathBuf,
    key: PublisherKey,
}

/// A TESSERA_HOME with the three licenses, and tests/c/fork.c built against libtessera.so.
fn setup() -> Fork {
    setup_with(&[])
}

/// [`setup`], with extra compiler flags.
fn setup_with(flags: &[&str]) -> Fork {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir(dir.path());
    let exe = dir.path().join("fork");
    compile("tests/c/fork.c", &exe, &lib, flags);
    let home = dir.path().join("home");
    let key = PublisherKey::generate(VENDOR, "fork attacks");
    activate(
        &env_in(&home),
        &key,
        &[
            spec(ONE_PER_HANDLE, 1, CountingUnit::Handle),
            spec(ONE_PER_PROCESS, 1, CountingUnit::Process),
            spec(MANY, 1000, CountingUnit::Handle),
        ],
    );
    Fork {
        dir,
        home,
        exe,
        key,
    }
}

/// Runs fork.c in `mode`; kills it (and fails) when it runs longer than `limit`.
fn run(f: &Fork, mode: &str, product: u32, count: u32, limit: Duration) -> (bool, String) {
    run_on(f, None, mode, product, count, limit)
}

/// [`run`], with seats from the license server at `server` when there is one.
fn run_on(
    f: &Fork,
    server: Option<&str>,
    mode: &str,
    product: u32,
    count: u32,
    limit: Duration,
) -> (bool, String) {
    let out_path = f
        .dir
        .path()
        .join(format!("{mode}-{product}-{}.out", server.is_some()));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(&f.exe)
        .args([
            mode,
            &VENDOR.to_string(),
            &hex::encode(f.key.public_key().to_bytes()),
            &product.to_string(),
            &count.to_string(),
        ])
        .env("TESSERA_HOME", &f.home)
        .env("TESSERA_SERVERS", server.unwrap_or(""))
        .env(
            "FORK_SOURCES",
            if server.is_some() { "network" } else { "" },
        )
        // verify_asan_link_order=0: as in tests/quickstart.rs (libfaketime under the
        // shifted-clock run); ignored by a build without AddressSanitizer.
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0",
        )
        .stderr(out.try_clone().unwrap())
        .stdout(out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{mode} (product {product}):\n{text}");
    match status {
        Some(st) => (st.success() && text.contains("RESULT ok"), text),
        None => (false, format!("{text}\n(killed after {limit:?}: it hung)")),
    }
}

#[test]
fn children_of_a_seat_holder_can_neither_use_nor_release_its_seat() {
    let f = setup();
    for product in [ONE_PER_HANDLE, ONE_PER_PROCESS] {
        let (ok, text) = run(&f, "held", product, 8, Duration::from_secs(120));
        assert!(ok, "product {product}:\n{text}");
        assert!(
            text.contains("held: children granted a seat: 0, children encrypting: 0"),
            "{text}"
        );
    }
}

#[test]
fn the_fork_contract_holds_under_address_sanitizer() {
    // The children's paths (refusing, forgetting and dropping inherited handles) and the
    // parent's, with every heap access checked and leaks reported at the parent's exit.
    let f = setup_with(&["-fsanitize=address", "-fno-omit-frame-pointer"]);
    for (mode, product) in [("held", ONE_PER_HANDLE), ("own", ONE_PER_PROCESS)] {
        let (ok, text) = run(&f, mode, product, 4, Duration::from_secs(120));
        assert!(ok, "{mode}:\n{text}");
    }
}

#[test]
fn children_racing_through_an_inherited_seat_pool_never_share_a_seat() {
    // The children share the parent's claim lock (one open file description), so it no
    // longer serialises their claims: before the fix, 32 children made up to 2 holders of
    // the one seat at once (1, 1, 2 in three runs).
    let f = setup();
    let (ok, text) = run(&f, "idle", ONE_PER_HANDLE, 32, Duration::from_secs(120));
    assert!(ok, "{text}");
    assert!(
        text.contains("idle: holders through the inherited session: 0, through their own: 1"),
        "{text}"
    );
}

#[test]
fn a_child_with_its_own_session_gets_the_seat_once_the_parent_releases_it() {
    let f = setup();
    let (ok, text) = run(&f, "own", ONE_PER_HANDLE, 1, Duration::from_secs(60));
    assert!(ok, "{text}");
}

#[test]
fn children_forked_while_threads_are_inside_the_library_never_hang() {
    let f = setup();
    let (ok, text) = run(&f, "hammer", MANY, 200, Duration::from_secs(300));
    assert!(ok, "{text}");
    assert!(text.contains("hammer: forks=200 hung=0 failed=0"), "{text}");
}

#[test]
fn children_of_a_network_seat_holder_can_neither_use_nor_release_its_seat() {
    // The parent's seat is on a license server: its connection's socket and channel state
    // are what a child inherits. A child's release would go out over the parent's socket
    // (releasing the parent's seat, and reusing the parent's channel counters).
    let f = setup();
    let server_home = f.dir.path().join("server-home");
    activate(
        &env_in(&server_home),
        &f.key,
        &[spec(ONE_PER_HANDLE, 1, CountingUnit::Handle)],
    );
    let server = ServerProc::start(&f.dir.path().join("server-state"), &server_home, 0);
    let (ok, text) = run_on(
        &f,
        Some(&server.addr),
        "held",
        ONE_PER_HANDLE,
        8,
        Duration::from_secs(120),
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("held: children granted a seat: 0, children encrypting: 0"),
        "{text}"
    );
}
