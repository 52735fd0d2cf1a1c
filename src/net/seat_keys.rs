//! A network seat's keys, kept in memory so that the seat encrypts and decrypts while its
//! license server is out of reach (`docs/SERVER.md`, "Offline: a held seat without its
//! server").
//!
//! - Its own seat key: the seat picks a random key id when it is acquired (kept across
//!   re-attaches) and asks the server once for that key id's seat key (`cipher::seat_key`);
//!   it then writes format-2 ciphertext in both modes, and reads its own, with no round trip.
//! - Seat keys of other key ids (format-2 ciphertext of other seats) and message keys of
//!   format-1 headers, each fetched from the server the first time the seat opens such a
//!   ciphertext, and kept after it opened.
//!
//! Every key lives in its own heap box (moving a map's entries never leaves a copy behind)
//! and is zeroized when the seat's lease ends, when it is released, or when the table goes.
//! Each cache holds at most [`MAX_CACHED`] keys.

use std::collections::HashMap;

use zeroize::Zeroizing;

use crate::cipher::{HEADER_LEN, KEY_ID_LEN};

/// The most seat keys, and the most message keys, one seat keeps.
pub const MAX_CACHED: usize = 4096;

/// A key in its own heap box, zeroized when dropped.
pub type BoxedKey = Box<Zeroizing<[u8; 32]>>;

/// The seat's own seat key.
pub enum Own {
    /// Not fetched yet (the key id is chosen).
    Pending([u8; KEY_ID_LEN]),
    /// The server does not hand out seat keys (an older server, or a hosted container of an
    /// older firmware): the seat asks the server for every message, as before format 2.
    Unsupported,
    /// The seat key of this key id.
    Key([u8; KEY_ID_LEN], BoxedKey),
    /// The seat's lease ended or it was released: the keys are zeroized, for good.
    Gone,
}

/// What a network seat keeps for its offline use.
pub struct SeatKeys {
    /// The seat's own seat key.
    pub own: Own,
    seat_keys: HashMap<[u8; KEY_ID_LEN], BoxedKey>,
    message_keys: HashMap<[u8; HEADER_LEN], BoxedKey>,
    /// Seats of the license in use, as the server last said.
    pub in_use: u32,
}

impl std::fmt::Debug for SeatKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let own = match &self.own {
            Own::Pending(_) => "pending",
            Own::Unsupported => "unsupported",
            Own::Key(..) => "held",
            Own::Gone => "gone",
        };
        f.debug_struct("SeatKeys")
            .field("own", &own)
            .field("seat_keys", &self.seat_keys.len())
            .field("message_keys", &self.message_keys.len())
            .field("in_use", &self.in_use)
            .finish()
    }
}

fn insert<K: Eq + std::hash::Hash + Copy>(map: &mut HashMap<K, BoxedKey>, k: K, key: &[u8; 32]) {
    if !map.contains_key(&k)
        && map.len() >= MAX_CACHED
        && let Some(old) = map.keys().next().copied()
    {
        // Dropping the box zeroizes the key.
        map.remove(&old);
    }
    map.insert(k, Box::new(Zeroizing::new(*key)));
}

impl SeatKeys {
    /// A new seat's: a fresh random key id, nothing fetched yet.
    pub fn new(in_use: u32) -> SeatKeys {
        SeatKeys {
            own: Own::Pending(crate::util::random()),
            seat_keys: HashMap::new(),
            message_keys: HashMap::new(),
            in_use,
        }
    }

    /// Whether the keys were zeroized for good.
    pub fn is_gone(&self) -> bool {
        matches!(self.own, Own::Gone)
    }

    /// Zeroizes every key; the seat keeps none from now on.
    pub fn clear(&mut self) {
        self.own = Own::Gone;
        self.seat_keys = HashMap::new();
        self.message_keys = HashMap::new();
    }

    /// The seat key of `key_id`: the own one, or one kept.
    pub fn seat_key(&self, key_id: &[u8; KEY_ID_LEN]) -> Option<Zeroizing<[u8; 32]>> {
        match &self.own {
            Own::Key(id, k) if id == key_id => return Some(Zeroizing::new(***k)),
            Own::Gone => return None,
            _ => {}
        }
        self.seat_keys.get(key_id).map(|k| Zeroizing::new(***k))
    }

    /// Keeps the seat key of another key id (nothing once the keys are gone).
    pub fn keep_seat_key(&mut self, key_id: [u8; KEY_ID_LEN], key: &[u8; 32]) {
        if !self.is_gone() {
            insert(&mut self.seat_keys, key_id, key);
        }
    }

    /// The message key kept for a format-1 header.
    pub fn message_key(&self, header: &[u8; HEADER_LEN]) -> Option<Zeroizing<[u8; 32]>> {
        self.message_keys.get(header).map(|k| Zeroizing::new(***k))
    }

    /// Keeps the message key of a format-1 header (nothing once the keys are gone).
    pub fn keep_message_key(&mut self, header: [u8; HEADER_LEN], key: &[u8; 32]) {
        if !self.is_gone() {
            insert(&mut self.message_keys, header, key);
        }
    }

    /// How many seat keys and message keys are kept (the own one not counted).
    pub fn kept(&self) -> (usize, usize) {
        (self.seat_keys.len(), self.message_keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_are_bounded_and_clearing_is_for_good() {
        let mut k = SeatKeys::new(1);
        let Own::Pending(id) = k.own else { panic!() };
        assert!(k.seat_key(&id).is_none());
        k.own = Own::Key(id, Box::new(Zeroizing::new([1; 32])));
        assert_eq!(*k.seat_key(&id).unwrap(), [1; 32]);
        for i in 0..MAX_CACHED + 10 {
            let mut h = [0u8; HEADER_LEN];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k.keep_message_key(h, &[2; 32]);
            let mut kid = [0u8; KEY_ID_LEN];
            kid[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k.keep_seat_key(kid, &[3; 32]);
        }
        assert_eq!(k.kept(), (MAX_CACHED, MAX_CACHED));
        let last = {
            let mut h = [0u8; HEADER_LEN];
            h[..8].copy_from_slice(&((MAX_CACHED + 9) as u64).to_le_bytes());
            h
        };
        assert_eq!(*k.message_key(&last).unwrap(), [2; 32]);
        k.clear();
        assert!(k.is_gone());
        assert_eq!(k.kept(), (0, 0));
        assert!(k.seat_key(&id).is_none());
        assert!(k.message_key(&last).is_none());
        k.keep_message_key(last, &[2; 32]);
        k.keep_seat_key([9; KEY_ID_LEN], &[3; 32]);
        assert_eq!(k.kept(), (0, 0), "nothing is kept once gone");
        assert!(format!("{k:?}").contains("gone"));
    }
}
