//! 5. The soak, short: `tessera-load soak` (issue 15) SIGKILLs and restarts a server 15 times
//!    while 16 library sessions compete for 4 seats, taking, renewing and releasing them. No
//!    moment may see more seats held than the quantity, in the clients' view or in the stored
//!    seat table, and no client that kept renewing may lose its seat. The long run (1,000
//!    kills) and its figures are in docs/BENCHMARKS.md, "Soak".

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::server::KillOnDrop;

const KILLS: u64 = 15;

#[test]
fn a_server_killed_fifteen_times_under_load_never_over_grants_or_loses_a_renewed_seat() {
    // Not beside the SIGKILL loops: they share two cores.
    let _serial = crate::lease_kill::SERIAL
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("soak.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera-load"))
        .args(["soak", "--kills", &KILLS.to_string()])
        .args(["--clients", "16", "--quantity", "4", "--json"])
        .arg("--server-bin")
        .arg(env!("CARGO_BIN_EXE_tessera-server"))
        .arg("--dir")
        .arg(dir.path().join("soak"))
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Killed (with its server, through PR_SET_PDEATHSIG) if this test fails or hangs.
    let mut child = KillOnDrop(child);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(300) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_path).unwrap();
    let status = status.unwrap_or_else(|| panic!("the soak hung:\n{text}"));
    let figures: serde_json::Value = text
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no figures in:\n{text}"));
    assert!(status.success(), "{text}");
    assert_eq!(figures["kills"], KILLS, "{text}");
    assert_eq!(figures["over_grants"], 0, "{text}");
    assert_eq!(figures["lost"], 0, "{text}");
    // The clients did take, renew and release seats between the kills.
    assert!(figures["grants"].as_u64().unwrap() >= 8, "{text}");
    assert_eq!(
        figures["most_held"], 4,
        "the license was never full:\n{text}"
    );
}
