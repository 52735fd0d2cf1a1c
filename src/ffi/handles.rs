//! Generational handle tables: integers for the C side, `Arc`s inside.
//!
//! A handle is `kind << 56 | generation << 32 | (index + 1)`. Zero is never a handle; a
//! released slot's generation moves on, so a stale handle, one of another kind, or a forged
//! one is simply not found: `TESSERA_E_INVALID_HANDLE`, never undefined behaviour.

use std::sync::{Arc, RwLock};

use crate::{Error, Result};

const GEN_MASK: u64 = 0x00FF_FFFF;

struct Slot<T> {
    generation: u32,
    value: Option<Arc<T>>,
}

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

    fn bad(&self, h: u64) -> Error {
        Error::InvalidHandle(format!(
            "{h:#x} is not a live {} handle (released, stale, forged or of another kind)",
            self.name
        ))
    }

    /// Stores `value` and returns its handle.
    pub fn insert(&self, value: Arc<T>) -> Result<u64> {
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
                });
                t.slots.len() - 1
            }
        };
        let slot = &mut t.slots[index];
        slot.value = Some(value);
        Ok(((self.kind as u64) << 56)
            | ((slot.generation as u64 & GEN_MASK) << 32)
            | (index as u64 + 1))
    }

    /// The value behind `h`.
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
            }) if *g == generation => Ok(v.clone()),
            _ => Err(self.bad(h)),
        }
    }

    /// Removes `h`; returns its value, or an error when it is not live.
    pub fn remove(&self, h: u64) -> Result<Arc<T>> {
        let (index, generation) = self.split(h).ok_or_else(|| self.bad(h))?;
        let mut t = self
            .inner
            .write()
            .map_err(|_| Error::Internal("handle table poisoned".into()))?;
        let v = match t.slots.get_mut(index) {
            Some(slot) if slot.generation == generation && slot.value.is_some() => {
                slot.generation = (slot.generation + 1) & GEN_MASK as u32;
                if slot.generation == 0 {
                    slot.generation = 1;
                }
                slot.value.take()
            }
            _ => None,
        };
        match v {
            Some(v) => {
                t.free.push(index as u32);
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
                slot.generation = ((slot.generation + 1) & GEN_MASK as u32).max(1);
                freed.push(i as u32);
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
}
