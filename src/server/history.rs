//! Seats in use per product over time: sampled from the in-memory seat table every few
//! seconds, the peak of each minute written to `seat_history` in the seat table's SQLite
//! file once the minute is over (and at shutdown), kept for 31 days.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::Result;
use crate::server::store::{HistoryPoint, HistoryStore, HolderRow};

/// How often the seat table is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One product's sample: `(vendor_id, product_code)` → `(in_use, quantity)`.
pub type Usage = BTreeMap<(u32, u32), (u32, u32)>;

/// The minute being sampled.
#[derive(Default)]
struct Current {
    minute: u64,
    peak: Usage,
}

/// The history: the store and the minute in progress.
pub struct Recorder {
    store: Mutex<HistoryStore>,
    current: Mutex<Current>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn points(minute: u64, usage: &Usage) -> Vec<HistoryPoint> {
    usage
        .iter()
        .map(
            |(&(vendor_id, product_code), &(in_use, quantity))| HistoryPoint {
                minute,
                vendor_id,
                product_code,
                in_use,
                quantity,
            },
        )
        .collect()
}

impl Recorder {
    /// Opens the history in the seat table's file.
    pub fn open(path: &Path) -> Result<Recorder> {
        Ok(Recorder {
            store: Mutex::new(HistoryStore::open(path)?),
            current: Mutex::new(Current::default()),
        })
    }

    /// Adds a sample taken at `minute`. Returns the points of the minute that just ended,
    /// if this sample starts a new one (to be [`Recorder::write`]n).
    pub fn sample(&self, minute: u64, usage: &Usage) -> Vec<HistoryPoint> {
        let mut c = lock(&self.current);
        let mut finished = Vec::new();
        if c.minute != minute {
            if c.minute != 0 {
                finished = points(c.minute, &c.peak);
            }
            c.minute = minute;
            c.peak.clear();
        }
        for (k, &(in_use, quantity)) in usage {
            let e = c.peak.entry(*k).or_insert((0, quantity));
            e.0 = e.0.max(in_use);
            e.1 = quantity;
        }
        finished
    }

    /// Writes points (blocking: call off the async runtime).
    pub fn write(&self, points: &[HistoryPoint]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        lock(&self.store).record(points)
    }

    /// Saves who holds which seat (at shutdown; see [`HistoryStore::save_holders`]).
    pub fn save_holders(&self, rows: &[HolderRow]) -> Result<()> {
        lock(&self.store).save_holders(rows)
    }

    /// Takes the holders saved at the last shutdown (at start).
    pub fn take_holders(&self) -> Result<Vec<HolderRow>> {
        lock(&self.store).take_holders()
    }

    /// Writes the minute in progress as it stands (at shutdown).
    pub fn flush(&self) -> Result<()> {
        let pts = {
            let c = lock(&self.current);
            points(c.minute, &c.peak)
        };
        self.write(&pts)
    }

    /// The history from `since` on (see [`HistoryStore::query`]) with the minute in
    /// progress merged in.
    pub fn query(
        &self,
        since: u64,
        product: Option<(u32, u32)>,
        step: u64,
    ) -> Result<Vec<HistoryPoint>> {
        let step = step.max(1);
        let mut out = lock(&self.store).query(since, product, step)?;
        let c = lock(&self.current);
        if c.minute >= since && c.minute != 0 {
            let bucket = c.minute / step * step;
            for p in points(c.minute, &c.peak) {
                if product.is_some_and(|k| k != (p.vendor_id, p.product_code)) {
                    continue;
                }
                match out.iter_mut().find(|q| {
                    q.minute == bucket
                        && q.vendor_id == p.vendor_id
                        && q.product_code == p.product_code
                }) {
                    Some(q) => {
                        q.in_use = q.in_use.max(p.in_use);
                        q.quantity = p.quantity;
                    }
                    None => out.push(HistoryPoint {
                        minute: bucket,
                        ..p
                    }),
                }
            }
        }
        out.sort_by_key(|p| (p.vendor_id, p.product_code, p.minute));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_is_written_when_the_next_begins_and_queries_see_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::open(&dir.path().join("seats.db")).unwrap();
        let usage = |n: u32| Usage::from([((7, 1), (n, 5))]);
        assert!(r.sample(100, &usage(2)).is_empty());
        assert!(r.sample(100, &usage(4)).is_empty());
        assert!(r.sample(100, &usage(1)).is_empty());
        // The minute in progress is visible before it is written.
        let q = r.query(0, None, 1).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].minute, q[0].in_use, q[0].quantity), (100, 4, 5));
        let done = r.sample(101, &usage(1));
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].minute, done[0].in_use),
            (100, 4),
            "the minute's peak"
        );
        r.write(&done).unwrap();
        r.flush().unwrap();
        let q = r.query(0, Some((7, 1)), 1).unwrap();
        assert_eq!(
            q.iter().map(|p| (p.minute, p.in_use)).collect::<Vec<_>>(),
            [(100, 4), (101, 1)]
        );
        assert!(r.query(0, Some((7, 2)), 1).unwrap().is_empty());
        // Reopened: what was written is there.
        drop(r);
        let r = Recorder::open(&dir.path().join("seats.db")).unwrap();
        assert_eq!(r.query(0, None, 10).unwrap()[0].in_use, 4);
    }
}
