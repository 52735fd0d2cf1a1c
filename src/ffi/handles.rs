//! Generational handle tables: integers for the C side, `Arc`s inside.
//!
//! A handle is `kind << 56 | generation << 32 | (index + 1)`. Zero is never a handle; a
//! released slot's generation moves on, so a stale handle, one of another kind, or a forged
//! one is simply not found: `TESSERA_E_INVALID_HANDLE`, never undefined behaviour. A slot
//! whose 24-bit generation is spent is retired instead of wrapping, so a handle value is
//! never valid twice in a process's lifetime.
//!
//! Handles are per process. Each value records the process that made it
//! ([`Owner`]); in a forked child every inherited handle answers `TESSERA_E_FORKED`, and
//! removing one (release, close) only forgets the child's copy: the value is dropped in the
//! child, where its destructors close the child's descriptors and nothing else (no unlock of
//! the parent's seat, no release sent over the parent's connection). The table's own lock is
//! held across every fork ([`Table::hold_across_fork`]), so a child never starts with it
//! held by a thread it does not have.

use std::sync::{Arc, RwLock};

use crate::util::process::{self, Owner};
use crate::{Error, Result};

const GEN_MASK: u64 = 0x00FF_FFFF;

struct Slot<T> {
    generation: u32,
    value: Option<Arc<T>>,
    /// The process that inserted `value`.
    owner: Option<Owner>,
}

impl<T> Slot<T> {
    /// Moves the slot to its next generation after its value left; false when the
    /// generation is spent (it would wrap to one already handed out): the slot is then
    /// retired for the rest of the process, so no handle is ever valid twice. A retired slot
    /// costs a few bytes once per 16,777,215 uses of one slot.
    fn next_generation(&mut self) -> bool {
        if self.generation as u64 >= GEN_MASK {
            self.generation = RETIRED;
            return false;
        }
        self.generation += 1;
        true
    }
}

/// The generation of a retired slot: never in a handle (handles carry 24 bits of it).
const RETIRED: u32 = u32::MAX;

/// A table of values of one kind.
pub struct Table<T> {
    kind: u8,
    name: &'static str,
    inner: RwLock<Inner<T>>,
}

struct Inner<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> Table<T> {
    /// An empty table whose handles carry `kind` in their top byte.
    pub const fn new(kind: u8, name: &'static str) -> Table<T> {
        Table {
            kind,
            name,
            inner: RwLock::new(Inner {
                slots: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    fn split(&self, h: u64) -> Option<(usize, u32)> {
        if (h >> 56) as u8 != self.kind {
            return None;
        }
        let index = (h & 0xFFFF_FFFF).checked_sub(1)? as usize;
        let generation = ((h >> 32) & GEN_MASK) as u32;
        Some((index, generation))
    }

    fn forked(&self, owner: &Owner) -> Error {
        match owner.check(self.name) {
            Err(e) => e,
            Ok(()) => Error::Internal("a handle's owner check changed its mind".into()),
        }
    }

    /// Takes the table's lock for the duration of a fork (a `pthread_atfork` prepare
    /// handler calls this; the parent and child handlers release it).
    pub fn hold_across_fork(&'static self)
    where
        T: 'static,
    {
        let g = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        process::hold_across_fork(Box::new(g));
    }

    fn bad(&self, h: u64) -> Error {
        Error::InvalidHandle(format!(
            "{h:#x} is not a live {} handle (released, stale, forged or of another kind)",
            self.name
        ))
    }

    /// Stores `value` and returns its handle.
    pub fn insert(&self, value: Arc<T>) -> Result<u64> {
        // Before the lock: the first `Owner::current` registers an atfork handler, which
        // waits for glibc's atfork lock, which a forking thread holds while our prepare
        // handler waits for this table's lock.
        let owner = Owner::current();
        let mut t = self
            .inner
            .write()
            .map_err(|_| Error::Internal("handle table poisoned".into()))?;
        let index = match t.free.pop() {
            Some(i) => i as usize,
            None => {
                if t.slots.len() >= u32::MAX as usize - 1 {
                    return Err(Error::Internal("handle table is full".into()));
                }
                t.slots.push(Slot {
                    generation: 1,
                    value: None,
                    owner: None,
                });
                t.slots.len() - 1
            }
        };
        let slot = &mut t.slots[index];
        slot.value = Some(value);
        slot.owner = Some(owner);
        Ok(((self.kind as u64) << 56)
            | ((slot.generation as u64 & GEN_MASK) << 32)
            | (index as u64 + 1))
    }

    /// The value behind `h`; `Error::Forked` when `h` was made by the process this one
    /// was forked from.
    pub fn get(&self, h: u64) -> Result<Arc<T>> {
        let (index, generation) = self.split(h).ok_or_else(|| self.bad(h))?;
        let t = self
            .inner
            .read()
            .map_err(|_| Error::Internal("handle table poisoned".into()))?;
        match t.slots.get(index) {
            Some(Slot {
                generation: g,
                value: Some(v),
                owner,
            }) if *g == generation => match owner {
                Some(o) if !o.is_current() => Err(self.forked(o)),
                _ => Ok(v.clone()),
            },
            _ => Err(self.bad(h)),
        }
    }

    /// Removes `h`; returns its value, or an error when it is not live. A handle made by
    /// the process this one was forked from is removed too (this process forgets its copy:
    /// the value is dropped here, after the table's lock is released) and the answer is
    /// `Error::Forked`: nothing of the parent's was released.
    pub fn remove(&self, h: u64) -> Result<Arc<T>> {
        let v = self.remove_any(h)?;
        match v {
            (v, Some(o)) if !o.is_current() => {
                drop(v);
                Err(self.forked(&o))
            }
            (v, _) => Ok(v),
        }
    }

    fn remove_any(&self, h: u64) -> Result<(Arc<T>, Option<Owner>)> {
        let (index, generation) = self.split(h).ok_or_else(|| self.bad(h))?;
        let mut t = self
            .inner
            .write()
            .map_err(|_| Error::Internal("handle table poisoned".into()))?;
        let v = match t.slots.get_mut(index) {
            Some(slot) if slot.generation == generation && slot.value.is_some() => {
                let reusable = slot.next_generation();
                slot.value
                    .take()
                    .map(|v| ((v, slot.owner.take()), reusable))
            }
            _ => None,
        };
        match v {
            Some((v, reusable)) => {
                if reusable {
                    t.free.push(index as u32);
                }
                Ok(v)
            }
            None => Err(self.bad(h)),
        }
    }

    /// Removes every value for which `pred` holds; returns them.
    pub fn remove_where(&self, pred: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
        let Ok(mut t) = self.inner.write() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut freed = Vec::new();
        for (i, slot) in t.slots.iter_mut().enumerate() {
            if slot.value.as_deref().is_some_and(&pred) {
                out.extend(slot.value.take());
                slot.owner = None;
                if slot.next_generation() {
                    freed.push(i as u32);
                }
            }
        }
        t.free.extend(freed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_forged_and_foreign_handles_are_rejected() {
        let a: Table<u32> = Table::new(1, "session");
        let b: Table<u32> = Table::new(2, "seat");
        let h = a.insert(Arc::new(5)).unwrap();
        assert_eq!(*a.get(h).unwrap(), 5);
        assert!(b.get(h).is_err(), "a session handle is not a seat handle");
        assert!(a.get(0).is_err());
        assert!(a.get(h + 1).is_err());
        assert!(a.get(h ^ (1 << 40)).is_err());
        a.remove(h).unwrap();
        assert!(a.get(h).is_err());
        assert!(a.remove(h).is_err(), "second release is an error, not UB");
        let h2 = a.insert(Arc::new(6)).unwrap();
        assert_ne!(h, h2, "a reused slot gets a new generation");
        assert!(a.get(h).is_err());
        assert_eq!(a.remove_where(|v| *v == 6).len(), 1);
        assert!(a.get(h2).is_err());
    }

    #[test]
    fn a_slot_whose_generation_is_spent_is_retired_not_wrapped() {
        let t: Table<u32> = Table::new(1, "seat");
        let first = t.insert(Arc::new(0)).unwrap();
        t.remove(first).unwrap();
        // The generations of slot 0 in turn, as 16,777,215 acquire/release cycles of a busy
        // app would use them: the first thousand, then (the middle skipped, it takes half a
        // minute in a debug build) the last thousand. They only grow, so no handle repeats.
        let mut last = first;
        for i in (1..1000).chain(GEN_MASK - 1000..GEN_MASK) {
            if i == GEN_MASK - 1000 {
                t.inner.write().unwrap().slots[0].generation = i as u32 + 1;
            }
            let h = t.insert(Arc::new(i as u32)).unwrap();
            assert_eq!(
                h & 0xFFFF_FFFF,
                1,
                "slot 0 is reused while it has generations"
            );
            assert_eq!(
                (h >> 32) & GEN_MASK,
                i + 1,
                "cycle {i}: the generation moved on"
            );
            t.remove(h).unwrap();
            last = h;
        }
        assert_eq!(
            (last >> 32) & GEN_MASK,
            GEN_MASK,
            "the last generation was used"
        );
        let live = t.insert(Arc::new(42)).unwrap();
        assert_eq!(
            live & 0xFFFF_FFFF,
            2,
            "the spent slot is retired, a new one is used"
        );
        for stale in [first, last] {
            assert!(t.get(stale).is_err());
            assert!(
                t.remove(stale).is_err(),
                "a stale handle never releases a live seat"
            );
        }
        assert_eq!(*t.get(live).unwrap(), 42);
        // remove_where retires a spent slot the same way.
        let w: Table<u32> = Table::new(1, "seat");
        let h = w.insert(Arc::new(1)).unwrap();
        w.inner.write().unwrap().slots[0].generation = GEN_MASK as u32;
        let h = (h & !(GEN_MASK << 32)) | (GEN_MASK << 32);
        assert_eq!(*w.get(h).unwrap(), 1);
        assert_eq!(w.remove_where(|_| true).len(), 1);
        let next = w.insert(Arc::new(2)).unwrap();
        assert_eq!(next & 0xFFFF_FFFF, 2);
        assert!(w.get(h).is_err());
    }

    // Not under Miri, which cannot run fork(2): `make miri` runs the other table tests.
    #[cfg(not(miri))]
    #[test]
    fn a_forked_child_gets_forked_for_inherited_handles_and_can_make_its_own() {
        let t: Table<u32> = Table::new(1, "session");
        let h = t.insert(Arc::new(7)).unwrap();
        // SAFETY: the child only uses the table (no other thread of it exists, and no
        // table lock was held at the fork) and leaves through _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut bad = 0;
            if !matches!(t.get(h), Err(Error::Forked(_))) {
                bad |= 1;
            }
            if !matches!(t.remove(h), Err(Error::Forked(_))) {
                bad |= 2;
            }
            if !matches!(t.remove(h), Err(Error::InvalidHandle(_))) {
                bad |= 4;
            }
            match t.insert(Arc::new(8)) {
                Ok(mine) if t.get(mine).is_ok_and(|v| *v == 8) && mine != h => {}
                _ => bad |= 8,
            }
            // SAFETY: leaves the child at once.
            unsafe { libc::_exit(bad) };
        }
        let mut st = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert!(libc::WIFEXITED(st), "{st:#x}");
        assert_eq!(libc::WEXITSTATUS(st), 0, "failed checks (bits)");
        assert_eq!(*t.get(h).unwrap(), 7, "the parent's handle is untouched");
    }
}
