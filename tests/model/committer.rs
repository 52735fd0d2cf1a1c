//! The group committer (`server::store::GroupCommitter`) against the simplest model of it:
//! the seat table's file holds what the submitted changes, applied in submission order, give.
//!
//! The seat-table check (`table.rs`) replaces the committer's thread by synchronous writes,
//! so it cannot see in which order the thread writes what waited for it. Here random
//! submissions (durable ones, whose waiter resolves once they are written, and lazy ones) go
//! to a real committer whose store can stall (its next commit blocks until released, as a
//! disk that hangs), so that several submissions wait for one wake. The store records its
//! rows after every transaction; each must be what a prefix of the submissions gives (a
//! transaction is a contiguous run of them, never a reordering), growing; a resolved waiter
//! means its submission is in; after shutdown the file holds what all of them give.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tessera::Result;
use tessera::server::seats::{Change, SeatId, SeatRow};
use tessera::server::store::{CommitWaiter, GroupCommitter, SeatStore};

type Rows = BTreeMap<SeatId, SeatRow>;

fn row(seat: u8, expires_ms: u64) -> SeatRow {
    SeatRow {
        seat_id: [seat; 16],
        license_id: [7; 16],
        unit_key: format!("handle:{seat}"),
        client: [1; 32],
        exclusive: false,
        expires_ms,
        borrow: None,
    }
}

fn apply(rows: &mut Rows, c: &Change) {
    match c {
        Change::Upsert(r) => {
            rows.insert(r.seat_id, r.clone());
        }
        Change::Delete(id) => {
            rows.remove(id);
        }
    }
}

/// Whether the disk hangs, shared by the test and the store.
#[derive(Default)]
struct Stall {
    stalled: Mutex<bool>,
    released: Condvar,
}

/// A store in memory that records its rows after every transaction.
struct Recording {
    rows: Rows,
    after: Arc<Mutex<Vec<Rows>>>,
    stall: Arc<Stall>,
}

impl SeatStore for Recording {
    fn load(&mut self) -> Result<Vec<SeatRow>> {
        Ok(self.rows.values().cloned().collect())
    }

    fn commit(&mut self, changes: &[Change]) -> Result<()> {
        let mut stalled = self.stall.stalled.lock().unwrap();
        while *stalled {
            stalled = self.stall.released.wait(stalled).unwrap();
        }
        drop(stalled);
        for c in changes {
            apply(&mut self.rows, c);
        }
        self.after.lock().unwrap().push(self.rows.clone());
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    /// Submit changes: `(seat, Some(expiry))` upserts, `(seat, None)` deletes.
    Submit {
        durable: bool,
        changes: Vec<(u8, Option<u64>)>,
    },
    /// The disk hangs: the next commit blocks until `Release`.
    Stall,
    Release,
    /// Wait for every durable submission so far.
    WaitAll,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let change = (0u8..4, prop::option::weighted(0.6, 1u64..1000));
    prop_oneof![
        6 => (any::<bool>(), prop::collection::vec(change, 0..4))
            .prop_map(|(durable, changes)| Op::Submit { durable, changes }),
        1 => Just(Op::Stall),
        1 => Just(Op::Release),
        1 => Just(Op::WaitAll),
    ]
}

fn run_case(ops: &[Op]) -> std::result::Result<(), String> {
    let after = Arc::new(Mutex::new(Vec::new()));
    let stall = Arc::new(Stall::default());
    let committer = GroupCommitter::start(Box::new(Recording {
        rows: Rows::new(),
        after: Arc::clone(&after),
        stall: Arc::clone(&stall),
    }));
    // The rows each prefix of the submitted changes gives (prefixes[0]: none), and after
    // which change each submission ends.
    let mut prefixes = vec![Rows::new()];
    let mut waiters: Vec<(usize, CommitWaiter)> = Vec::new();
    let set_stall = |on: bool| {
        *stall.stalled.lock().unwrap() = on;
        stall.released.notify_all();
    };
    let check_waiters = |waiters: &mut Vec<(usize, CommitWaiter)>,
                         prefixes: &Vec<Rows>|
     -> std::result::Result<(), String> {
        for (end, w) in waiters.drain(..) {
            w.wait().map_err(|e| format!("a commit failed: {e}"))?;
            // Written: some transaction since left the rows of a prefix that holds it.
            // (A submission without changes may resolve before any commit: no rows.)
            let last = after.lock().unwrap().last().cloned().unwrap_or_default();
            if !prefixes[end..].contains(&last) {
                return Err(format!(
                    "a durable submission (changes up to {end}) resolved, but the file holds \
                     {last:?}, the rows of no prefix that includes it"
                ));
            }
        }
        Ok(())
    };
    for op in ops {
        match op {
            Op::Submit { durable, changes } => {
                let changes: Vec<Change> = changes
                    .iter()
                    .map(|(seat, e)| match e {
                        Some(e) => Change::Upsert(row(*seat, *e)),
                        None => Change::Delete([*seat; 16]),
                    })
                    .collect();
                for c in &changes {
                    let mut next = prefixes.last().unwrap().clone();
                    apply(&mut next, c);
                    prefixes.push(next);
                }
                if *durable {
                    waiters.push((prefixes.len() - 1, committer.submit(changes)));
                } else {
                    committer.submit_lazy(changes);
                }
            }
            Op::Stall => set_stall(true),
            Op::Release => set_stall(false),
            Op::WaitAll => {
                set_stall(false);
                check_waiters(&mut waiters, &prefixes)?;
            }
        }
    }
    set_stall(false);
    check_waiters(&mut waiters, &prefixes)?;
    drop(committer); // flushes what is pending and joins the thread
    // Every transaction left the rows of a prefix, and the prefixes only grow.
    let states = after.lock().unwrap();
    let mut at = 0;
    for (t, s) in states.iter().enumerate() {
        match (at..prefixes.len()).find(|i| prefixes[*i] == *s) {
            Some(i) => at = i,
            None => {
                return Err(format!(
                    "transaction {t} left {s:?}: the rows of no prefix of the submissions from \
                     change {at} on"
                ));
            }
        }
    }
    let last = states.last().cloned().unwrap_or_default();
    if last != *prefixes.last().unwrap() {
        return Err(format!(
            "after shutdown the file holds {last:?}, the submissions give {:?}",
            prefixes.last().unwrap()
        ));
    }
    Ok(())
}

/// The committer's order and durability, against the model.
#[test]
fn the_group_committer_writes_in_submission_order() {
    let cases = (crate::cases_from_env("TESSERA_MODEL_CASES", 2_000) / 4).max(1);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    match runner.run(&prop::collection::vec(op_strategy(), 1..24), |ops| {
        run_case(&ops).map_err(TestCaseError::fail)
    }) {
        Ok(()) => eprintln!("model check, group committer: {cases} cases, 0 disagreements"),
        Err(TestError::Fail(why, ops)) => {
            panic!("the group committer disagrees with the model: {why}\nminimal case: {ops:#?}")
        }
        Err(e) => panic!("group committer: {e}"),
    }
}

/// The case the committer got wrong before 2d01b70: a grant waits for a hung disk, and the
/// lazy deletion of the same seat is submitted behind it.
#[test]
fn a_lazy_delete_behind_a_stalled_grant_is_written_after_it() {
    let ops = vec![
        Op::Stall,
        Op::Submit {
            durable: true,
            changes: vec![(9, Some(1))],
        },
        Op::Submit {
            durable: true,
            changes: vec![(1, Some(100))],
        },
        Op::Submit {
            durable: false,
            changes: vec![(1, None)],
        },
    ];
    assert_eq!(run_case(&ops), Ok(()));
}
