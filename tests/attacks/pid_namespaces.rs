//! 3. PID namespaces (the local half): processes started in separate PID namespaces
//!    (`unshare -pf`) each see themselves as pid 1, and their POSIX sessions have the same
//!    numbers too. A per-process or per-session seat is keyed by the PID namespace as well
//!    as the number, so they cannot share one seat.

use tessera::license::CountingUnit;

use crate::common::spec;
use crate::home_copies::{Holder, MachineFolders, setup};

/// Three seat holders, each under `wrapper` (which puts it in a PID namespace of its own),
/// for a 1-seat license of `unit`: asserts that all saw themselves as the same pid (the
/// attack) and that only one got the seat.
fn three_in_their_own_namespaces(unit: CountingUnit, wrapper: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (_, serial) = setup(dir.path(), "home", &[spec(1, 1, unit)]);
    let _clean = MachineFolders(serial);
    let home = dir.path().join("home");
    // Each holder keeps its seat (and its process) until it is dropped.
    let mut holders: Vec<Holder> = (0..3)
        .map(|_| Holder::spawn(dir.path(), &home, 1, wrapper))
        .collect();
    let verdicts: Vec<(Result<(), String>, u32)> =
        holders.iter_mut().map(Holder::verdict_and_pid).collect();
    assert!(
        verdicts.iter().all(|(_, pid)| *pid == verdicts[0].1),
        "the holders do not share one pid number in namespaces of their own: {verdicts:?}"
    );
    let granted = verdicts.iter().filter(|(v, _)| v.is_ok()).count();
    assert_eq!(
        granted, 1,
        "{} processes share one seat of a 1-seat {unit:?} license: {verdicts:?}",
        granted
    );
    // The one that has it uses it.
    let i = verdicts.iter().position(|(v, _)| v.is_ok()).unwrap();
    assert_eq!(holders[i].use_seat(), "ok");
}

#[test]
fn three_pid_1_processes_in_their_own_pid_namespaces_get_one_per_process_seat() {
    three_in_their_own_namespaces(
        CountingUnit::Process,
        &["unshare", "--pid", "--fork", "--kill-child"],
    );
}

#[test]
fn three_sessions_numbered_alike_in_their_own_pid_namespaces_get_one_per_session_seat() {
    // `setsid` makes each pid 1 the leader of a new session, numbered 1 in its namespace.
    three_in_their_own_namespaces(
        CountingUnit::Session,
        &["unshare", "--pid", "--fork", "--kill-child", "setsid"],
    );
}
