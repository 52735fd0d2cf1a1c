//! Model checks of seat counting (issue 15, item 6): random sequences of operations are run
//! against the real code and against a small reference model written from the documented
//! rules (`docs/SERVER.md`, `README.md` "Seats on one machine"), and every answer is
//! compared. proptest generates the sequences and, on a disagreement, shrinks them to a
//! minimal one, which the failure message prints.
//!
//! - [`table`]: the license server's seat table (`server::seats::SeatTable`) with its durable
//!   SQLite store (`server::store::SqliteStore`): acquire, renew, release, revoke, expiry,
//!   clock steps and crash-and-reopen, for every counting unit and quantities 1 to 4.
//! - [`committer`]: the group committer's thread, which `table` replaces by synchronous
//!   writes: what waited for one wake is written in submission order, a resolved waiter's
//!   changes are on disk, shutdown writes the rest.
//! - [`local`]: local seats of a software container, taken by real child processes, with
//!   SIGKILL of holders.
//!
//! Case counts: `TESSERA_MODEL_CASES` (seat table, all units together; default 2,000) and
//! `TESSERA_MODEL_PROCESS_CASES` (real processes; default 64). `make model-check` runs the
//! nightly configuration (`docs/BENCHMARKS.md`, "Model check").

#[path = "model/table.rs"]
mod table;

#[path = "model/local.rs"]
mod local;

#[path = "model/committer.rs"]
mod committer;

mod common;

/// A case count from the environment variable `var`, or `default`.
pub fn cases_from_env(var: &str, default: u32) -> u32 {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a number of cases")),
        Err(_) => default,
    }
}
