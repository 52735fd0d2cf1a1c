//! The seat table: counting by unit, idempotent acquire, leases.
//!
//! Pure bookkeeping, no I/O and no clock: every call that depends on time takes `now_ms`
//! (wall-clock milliseconds since the Unix epoch). Each operation returns the [`Change`]s the
//! caller must make durable (see `store.rs`) before it answers the client.
//!
//! Counting follows `docs/SERVER.md`: a seat's *unit key* says what its counting unit counts
//! ([`unit_key`]); a license grants at most `quantity` distinct unit keys among its live
//! seats, and seats with the same unit key share one slot. A seat is live while
//! `now_ms < expires_ms`.
//!
//! Everything is indexed by hash maps (seat id → row; license → unit key → seats) and one
//! ordered expiry index, so acquire, renew and release cost O(1) hash operations plus an
//! O(log n) index update. Expired seats are pruned from the front of the expiry index by the
//! operations that take `now_ms`; the `Delete`s for seats pruned that way are handed out by
//! the next [`SeatTable::expire`], so the store never keeps a dead row for long.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::license::{CountingUnit, License};
use crate::net::proto::HostInfo;
use crate::{Error, Result};

/// A seat id, chosen by the client and kept across reconnects.
pub type SeatId = [u8; 16];

/// One seat as it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatRow {
    /// The seat.
    pub seat_id: SeatId,
    /// The license it is a seat of.
    pub license_id: [u8; 16],
    /// What its counting unit counts ([`unit_key`]).
    pub unit_key: String,
    /// The client's Noise static key (its host key).
    pub client: [u8; 32],
    /// Whether the seat holds the license exclusively.
    pub exclusive: bool,
    /// When the lease runs out (Unix milliseconds); for a borrowed seat, its end.
    pub expires_ms: u64,
    /// What the server keeps of a borrowed seat; `None` for a leased one.
    pub borrow: Option<Arc<Borrowed>>,
}

impl SeatRow {
    /// Whether this is a seat lent to another machine (held until its end or its return,
    /// never renewed).
    pub fn is_borrowed(&self) -> bool {
        self.borrow.is_some()
    }
}

/// A seat lent to another machine's container (`license::borrow`), as the server keeps it
/// beside the seat: who has it, until when, and the grant (a retry after a lost answer gets
/// the same one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Borrowed {
    /// The borrowing container's Ed25519 key (a return is signed with it).
    pub borrower_key: [u8; 32],
    /// The borrowing container's serial.
    pub borrower_serial: String,
    /// The borrowing machine's host name (from the connection's hello).
    pub hostname: String,
    /// The user: the login session that borrowed it (`uid:<uid>/…`, from the hello).
    pub user: String,
    /// When it was lent (Unix seconds).
    pub issued_at: u64,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// The lending container's signed grant.
    #[serde(with = "serde_bytes")]
    pub grant: Vec<u8>,
    /// The lending container's certificate.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
}

/// The format version of a stored [`Borrowed`].
pub const BORROWED_VERSION: u16 = 1;

impl Borrowed {
    /// The stored form (versioned postcard).
    pub fn encode(&self) -> Result<Vec<u8>> {
        crate::util::encode_versioned(BORROWED_VERSION, self, "borrowed seat")
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Borrowed> {
        crate::util::decode_versioned(BORROWED_VERSION, bytes, "borrowed seat")
    }
}

/// The unit key of a borrowed seat: one slot of its own, whatever the license's counting
/// unit (`borrow:<seat id hex>`; no client-built key starts so).
pub fn borrow_unit_key(seat_id: &SeatId) -> String {
    format!("borrow:{}", hex::encode(seat_id))
}

/// A change of the seat table, to be made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace the row with this seat id.
    Upsert(SeatRow),
    /// Remove the row with this seat id (absent rows are not an error).
    Delete(SeatId),
}

/// A license the server hosts, with what it needs to answer a grant: the signed encoding the
/// client verifies and the container that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseEntry {
    /// The decoded license.
    pub license: License,
    /// The publisher-signed license (`SeatGrant::license`).
    pub signed: Vec<u8>,
    /// The serial of the container holding it.
    pub container_serial: String,
}

/// One acquire request, as the server has resolved it.
#[derive(Clone, Debug)]
pub struct AcquireSpec<'a> {
    /// The client-chosen seat id.
    pub seat_id: SeatId,
    /// The license to take a seat of.
    pub license: &'a License,
    /// The client, as its hello describes it (only its session, pid namespace and pid count,
    /// under the station of `client`).
    pub host: &'a HostInfo,
    /// The client's Noise static key (its host key, proved in the handshake): its station.
    pub client: [u8; 32],
    /// Exclusive use.
    pub exclusive: bool,
    /// Feature bits needed.
    pub features: u32,
    /// Now (Unix milliseconds).
    pub now_ms: u64,
    /// Lease length in milliseconds.
    pub lease_ms: u64,
}

/// One borrow, as the server has resolved it.
#[derive(Clone, Debug)]
pub struct BorrowSpec<'a> {
    /// The client-chosen seat id.
    pub seat_id: SeatId,
    /// The license to lend a seat of.
    pub license: &'a License,
    /// The client's machine (the VM policy applies).
    pub machine: &'a crate::host::MachineKind,
    /// The client's Noise static key.
    pub client: [u8; 32],
    /// Feature bits needed.
    pub features: u32,
    /// Now (Unix milliseconds).
    pub now_ms: u64,
}

/// The station a client is counted as: a digest of the host key it proved in its Noise
/// handshake (its static key). The `station` its hello claims is never counted: any client
/// can claim any station, but only the holder of a host key can prove it.
pub fn station_of(client: &[u8; 32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tessera station v1\0");
    h.update(client);
    h.finalize().into()
}

/// The unit key of a seat: `station:<station>`, `session:<station>/<session>`,
/// `process:<station>/<session>/<pid namespace>/<pid>` or `handle:<seat id>` (station and
/// seat id in hex). The station is [`station_of`] the client's proved host key; session, pid
/// namespace and pid are what its hello says, and only tell apart the units of that key.
///
/// The station is fixed-length hex and the pid namespace and pid the last two components
/// (numbers), so keys of different hosts never collide even when a session id contains `/`.
pub fn unit_key(
    unit: CountingUnit,
    client: &[u8; 32],
    host: &HostInfo,
    seat_id: &SeatId,
) -> String {
    use std::fmt::Write;
    // Built in place: one allocation per key (this runs for every acquire).
    let mut hex = [0u8; 64];
    let mut key = String::with_capacity(100 + host.session.len());
    let mut put = |prefix: &str, bytes: &[u8]| {
        let hex = &mut hex[..2 * bytes.len()];
        hex::encode_to_slice(bytes, hex).expect("two hex digits per byte");
        key.push_str(prefix);
        key.push_str(std::str::from_utf8(hex).expect("hex is ASCII"));
    };
    match unit {
        CountingUnit::Station => put("station:", &station_of(client)),
        CountingUnit::Session => {
            put("session:", &station_of(client));
            key.push('/');
            key.push_str(&host.session);
        }
        CountingUnit::Process => {
            put("process:", &station_of(client));
            let _ = write!(key, "/{}/{}/{}", host.session, host.pid_namespace, host.pid);
        }
        CountingUnit::Handle => put("handle:", seat_id),
    }
    key
}

/// The seats of one license.
#[derive(Debug, Default)]
struct LicenseSeats {
    /// Unit key → the seats sharing it (never empty). Its length is the number of slots used.
    units: HashMap<String, Vec<SeatId>>,
    /// How many seats the license has in all.
    seats: usize,
    /// The exclusive seats (at most one while the table's rules hold; loaded rows may differ).
    exclusive: HashSet<SeatId>,
}

/// The seat table of a server.
#[derive(Debug, Default)]
pub struct SeatTable {
    seats: HashMap<SeatId, SeatRow>,
    licenses: HashMap<[u8; 16], LicenseSeats>,
    /// `(expires_ms, seat_id)` of every seat.
    expiry: BTreeSet<(u64, SeatId)>,
    /// Seats pruned as expired whose `Delete` has not been handed out yet.
    pruned: HashSet<SeatId>,
    /// Rows pruned as expired since the last [`SeatTable::take_expired`] (the usage log
    /// records them in the order the table dropped them).
    expired: Vec<SeatRow>,
}

impl SeatTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads rows from the store at startup. Rows whose lease ran out are dropped (their
    /// `Delete`s come out of the next [`SeatTable::expire`]); live ones are honoured as they
    /// are, even beyond a license's quantity.
    pub fn load(&mut self, rows: Vec<SeatRow>, now_ms: u64) {
        for row in rows {
            if row.expires_ms <= now_ms {
                if !self.seats.contains_key(&row.seat_id) {
                    self.pruned.insert(row.seat_id);
                    self.expired.push(row);
                }
                continue;
            }
            self.pruned.remove(&row.seat_id);
            self.remove(&row.seat_id);
            self.insert(row);
        }
    }

    /// Loads the rows of a server that stopped (or was killed) at start-up, keeping every
    /// row for at least one more lease: its expiry becomes `max(stored, now_ms + lease_ms)`
    /// (Chubby's rule on fail-over).
    ///
    /// Renewals are written lazily, so a stored expiry may be shorter than the lease the
    /// server answered before it was killed; but every lease it answered ends by the kill
    /// plus one lease, hence by `now_ms + lease_ms`, so no client is ever refused a seat
    /// it was promised. This can only keep a seat longer, never grant one twice: a row is
    /// in the store only if its seat was live when the last grant was committed (a grant's
    /// batch carries the `Delete`s of every seat the table dropped before it, see
    /// [`SeatTable::expire`]), so the rows fit the quantity as the table did then. A seat
    /// whose client does not come back goes one lease later.
    pub fn load_extended(&mut self, rows: Vec<SeatRow>, now_ms: u64, lease_ms: u64) {
        let floor = now_ms.saturating_add(lease_ms);
        let rows = rows
            .into_iter()
            .map(|mut r| {
                // A borrowed seat ends when it was lent until, neither earlier nor later:
                // it is never renewed, and its end was written with its grant.
                if !r.is_borrowed() {
                    r.expires_ms = r.expires_ms.max(floor);
                }
                r
            })
            .collect();
        self.load(rows, now_ms);
    }

    /// Takes a seat, or gives back the one with the same seat id (idempotent: a client that
    /// reconnects gets its seat again, with a fresh lease, without counting twice — even if
    /// the lease ran out meanwhile, as long as the seat still fits).
    ///
    /// Checks, in order: features, the license's expiry, the VM policy, exclusive use (the
    /// license must allow it and have no other live seat; an exclusive holder blocks
    /// everyone else) and the quantity (at most `quantity` distinct unit keys among the
    /// license's live seats; a seat whose unit key already holds a slot shares it).
    ///
    /// A seat id that is live for another license or another client is refused
    /// (`InvalidArgument`). On any error the table is unchanged but for expired seats pruned.
    /// Returns the row, the change to persist and the license's seats in use.
    pub fn acquire(&mut self, spec: &AcquireSpec) -> Result<(SeatRow, Change, u32)> {
        let lic = spec.license;
        lic.check(spec.features, spec.now_ms / 1000, &spec.host.machine, None)?;
        self.prune(spec.now_ms);

        let key = unit_key(lic.counting_unit, &spec.client, spec.host, &spec.seat_id);
        let own = match self.seats.get(&spec.seat_id) {
            Some(row) if row.is_borrowed() => {
                return Err(Error::InvalidArgument(format!(
                    "seat id {} is a borrowed seat",
                    hex::encode(spec.seat_id)
                )));
            }
            Some(row) if row.license_id != lic.license_id => {
                return Err(Error::InvalidArgument(format!(
                    "seat id {} is in use for another license",
                    hex::encode(spec.seat_id)
                )));
            }
            Some(row) if row.client != spec.client => {
                return Err(Error::InvalidArgument(format!(
                    "seat id {} is held by another client",
                    hex::encode(spec.seat_id)
                )));
            }
            other => other,
        };
        let empty = LicenseSeats::default();
        let state = self.licenses.get(&lic.license_id).unwrap_or(&empty);

        // What the license holds apart from this seat.
        let own_key = own.map(|r| r.unit_key.as_str());
        let others_seats = state.seats - usize::from(own.is_some());
        let shares_own_slot = |k: &str| {
            state
                .units
                .get(k)
                .is_some_and(|s| s.iter().any(|id| *id != spec.seat_id))
        };
        let others_units =
            state.units.len() - usize::from(own_key.is_some_and(|k| !shares_own_slot(k)));

        if state.exclusive.iter().any(|id| *id != spec.seat_id) {
            return Err(Error::ExclusiveDenied(format!(
                "license {} is held exclusively by another client",
                lic.id_hex()
            )));
        }
        if spec.exclusive {
            if !lic.exclusive_allowed {
                return Err(Error::ExclusiveDenied(format!(
                    "license {} does not allow exclusive use",
                    lic.id_hex()
                )));
            }
            if others_seats > 0 {
                return Err(Error::ExclusiveDenied(format!(
                    "license {} has {others_seats} other seat(s) in use",
                    lic.id_hex()
                )));
            }
        }
        if !shares_own_slot(&key) && others_units >= lic.quantity as usize {
            return Err(Error::NoSeat {
                quantity: lic.quantity,
            });
        }

        self.remove(&spec.seat_id);
        let row = SeatRow {
            seat_id: spec.seat_id,
            license_id: lic.license_id,
            unit_key: key,
            client: spec.client,
            exclusive: spec.exclusive,
            expires_ms: spec.now_ms.saturating_add(spec.lease_ms),
            borrow: None,
        };
        self.pruned.remove(&row.seat_id);
        self.insert(row.clone());
        let in_use = self.units_of(&lic.license_id);
        Ok((row.clone(), Change::Upsert(row), in_use))
    }

    /// Checks that a seat could be lent now: the license's features, expiry and VM policy,
    /// no exclusive holder, a slot free under the quantity, and a seat id not in use. Changes
    /// nothing but pruning expired seats.
    pub fn check_borrow(&mut self, spec: &BorrowSpec) -> Result<()> {
        let lic = spec.license;
        lic.check(spec.features, spec.now_ms / 1000, spec.machine, None)?;
        self.prune(spec.now_ms);
        if self.seats.contains_key(&spec.seat_id) {
            return Err(Error::InvalidArgument(format!(
                "seat id {} is in use",
                hex::encode(spec.seat_id)
            )));
        }
        let Some(state) = self.licenses.get(&lic.license_id) else {
            return if lic.quantity == 0 {
                Err(Error::NoSeat { quantity: 0 })
            } else {
                Ok(())
            };
        };
        if !state.exclusive.is_empty() {
            return Err(Error::ExclusiveDenied(format!(
                "license {} is held exclusively by another client",
                lic.id_hex()
            )));
        }
        if state.units.len() >= lic.quantity as usize {
            return Err(Error::NoSeat {
                quantity: lic.quantity,
            });
        }
        Ok(())
    }

    /// Lends a seat: a slot of its own ([`borrow_unit_key`]) held until `borrowed.until`,
    /// counted against the quantity like any seat ([`SeatTable::check_borrow`] first). On
    /// error the table is unchanged but for expired seats pruned. Returns the row, the change
    /// to persist and the license's seats in use.
    pub fn borrow(
        &mut self,
        spec: &BorrowSpec,
        borrowed: Arc<Borrowed>,
    ) -> Result<(SeatRow, Change, u32)> {
        self.check_borrow(spec)?;
        let expires_ms = borrowed.until.saturating_mul(1000);
        if expires_ms <= spec.now_ms {
            return Err(Error::InvalidArgument(
                "a borrowed seat must end after now".into(),
            ));
        }
        let row = SeatRow {
            seat_id: spec.seat_id,
            license_id: spec.license.license_id,
            unit_key: borrow_unit_key(&spec.seat_id),
            client: spec.client,
            exclusive: false,
            expires_ms,
            borrow: Some(borrowed),
        };
        self.pruned.remove(&row.seat_id);
        self.insert(row.clone());
        let in_use = self.units_of(&spec.license.license_id);
        Ok((row.clone(), Change::Upsert(row), in_use))
    }

    /// Takes back a live borrowed seat (its return, or undoing a lend that was not made
    /// durable). `None` when no live borrowed seat has this id.
    pub fn give_back(&mut self, id: &SeatId, now_ms: u64) -> Option<SeatRow> {
        let row = self.seats.get(id)?;
        if !row.is_borrowed() || row.expires_ms <= now_ms {
            return None;
        }
        self.remove(id)
    }

    /// The live borrowed seat with this id.
    pub fn borrowed(&self, id: &SeatId, now_ms: u64) -> Option<&SeatRow> {
        self.seats
            .get(id)
            .filter(|r| r.is_borrowed() && r.expires_ms > now_ms)
    }

    /// Renews the client's seats for `lease_ms` from `now_ms`. Returns the changes to persist
    /// and the seats that are lost: not found, expired, or of another client (left untouched).
    /// A borrowed seat is never renewed: it keeps its end and is not lost.
    pub fn renew(
        &mut self,
        ids: &[SeatId],
        client: &[u8; 32],
        now_ms: u64,
        lease_ms: u64,
    ) -> (Vec<Change>, Vec<SeatId>) {
        self.prune(now_ms);
        let expires_ms = now_ms.saturating_add(lease_ms);
        let mut changes = Vec::with_capacity(ids.len());
        let mut lost = Vec::new();
        for id in ids {
            match self.seats.get_mut(id) {
                Some(row) if row.is_borrowed() => {}
                Some(row) if row.client == *client => {
                    if row.expires_ms != expires_ms {
                        self.expiry.remove(&(row.expires_ms, *id));
                        row.expires_ms = expires_ms;
                        self.expiry.insert((expires_ms, *id));
                    }
                    changes.push(Change::Upsert(row.clone()));
                }
                _ => lost.push(*id),
            }
        }
        (changes, lost)
    }

    /// Releases the client's seat. `None` when the table has no such seat of this client (a
    /// borrowed seat is given back by its return, [`SeatTable::give_back`], not released).
    pub fn release(&mut self, id: &SeatId, client: &[u8; 32]) -> Option<Change> {
        self.release_row(id, client)
            .map(|r| Change::Delete(r.seat_id))
    }

    /// [`SeatTable::release`], giving back the row released (its `Delete` is the change to
    /// persist).
    pub fn release_row(&mut self, id: &SeatId, client: &[u8; 32]) -> Option<SeatRow> {
        let row = self.seats.get(id)?;
        if row.client != *client || row.is_borrowed() {
            return None;
        }
        self.remove(id)
    }

    /// The rows dropped because their lease ran out (by any operation that takes `now_ms`,
    /// or at load) since the last call, in the order they were dropped. A seat taken back by
    /// its client after it was dropped is among them: it is a new seat since.
    pub fn take_expired(&mut self) -> Vec<SeatRow> {
        std::mem::take(&mut self.expired)
    }

    /// Drops the seats whose lease ran out and returns their `Delete`s, together with those
    /// of seats pruned earlier (by acquire, renew or load) and not handed out yet.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Change> {
        self.prune(now_ms);
        let seats = &self.seats;
        let out = self
            .pruned
            .drain()
            .filter(|id| !seats.contains_key(id))
            .map(Change::Delete)
            .collect();
        if self.pruned.capacity() > 1024 {
            self.pruned.shrink_to(1024);
        }
        out
    }

    /// The license's seats in use at `now_ms`: distinct unit keys among its live seats.
    pub fn in_use(&self, license_id: &[u8; 16], now_ms: u64) -> u32 {
        let Some(state) = self.licenses.get(license_id) else {
            return 0;
        };
        // Seats not pruned yet but already expired: only their units may be dead.
        let mut dead: HashSet<&str> = HashSet::new();
        for (_, id) in self.expiry.range(..=(now_ms, [0xFF; 16])) {
            if let Some(row) = self.seats.get(id)
                && row.license_id == *license_id
            {
                dead.insert(&row.unit_key);
            }
        }
        let dead = dead
            .into_iter()
            .filter(|k| {
                state.units.get(*k).is_some_and(|s| {
                    s.iter()
                        .all(|id| self.seats.get(id).is_none_or(|r| r.expires_ms <= now_ms))
                })
            })
            .count();
        (state.units.len() - dead) as u32
    }

    /// The seat with this id (live or not yet pruned).
    pub fn seat(&self, id: &SeatId) -> Option<&SeatRow> {
        self.seats.get(id)
    }

    /// Every seat the table holds (including expired ones not pruned yet), in no order.
    pub fn rows(&self) -> impl Iterator<Item = &SeatRow> {
        self.seats.values()
    }

    /// Takes a live seat away from whichever client holds it (an admin's revoke). `None`
    /// when no live seat has this id. The client's next renewal or call for it finds the
    /// seat gone (`TESSERA_E_LEASE_LOST`). A borrowed seat is not revoked (`None`): the
    /// machine that has it may be offline; it ends at its time or when it is returned.
    pub fn revoke(&mut self, id: &SeatId, now_ms: u64) -> Option<Change> {
        let row = self.seats.get(id)?;
        if row.expires_ms <= now_ms || row.is_borrowed() {
            return None;
        }
        self.remove(id);
        Some(Change::Delete(*id))
    }

    /// How many seats the table holds (including expired ones not pruned yet).
    pub fn len(&self) -> usize {
        self.seats.len()
    }

    /// Whether the table holds no seat.
    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    /// Distinct unit keys of a license (exact once expired seats are pruned).
    fn units_of(&self, license_id: &[u8; 16]) -> u32 {
        self.licenses
            .get(license_id)
            .map_or(0, |s| s.units.len() as u32)
    }

    /// Removes every seat whose lease ran out at `now_ms`, remembering it for `expire`.
    fn prune(&mut self, now_ms: u64) {
        while let Some(&(expires_ms, id)) = self.expiry.first() {
            if expires_ms > now_ms {
                break;
            }
            if let Some(row) = self.remove(&id) {
                self.expired.push(row);
            }
            self.pruned.insert(id);
        }
    }

    fn insert(&mut self, row: SeatRow) {
        let state = self.licenses.entry(row.license_id).or_default();
        state
            .units
            .entry(row.unit_key.clone())
            .or_default()
            .push(row.seat_id);
        state.seats += 1;
        if row.exclusive {
            state.exclusive.insert(row.seat_id);
        }
        self.expiry.insert((row.expires_ms, row.seat_id));
        self.seats.insert(row.seat_id, row);
    }

    fn remove(&mut self, id: &SeatId) -> Option<SeatRow> {
        let row = self.seats.remove(id)?;
        self.expiry.remove(&(row.expires_ms, row.seat_id));
        if let Entry::Occupied(mut lic) = self.licenses.entry(row.license_id) {
            let state = lic.get_mut();
            if let Entry::Occupied(mut unit) = state.units.entry(row.unit_key.clone()) {
                let seats = unit.get_mut();
                if let Some(i) = seats.iter().position(|s| s == id) {
                    seats.swap_remove(i);
                }
                if seats.is_empty() {
                    unit.remove();
                }
            }
            state.seats -= 1;
            state.exclusive.remove(id);
            if state.seats == 0 {
                lic.remove();
            }
        }
        Some(row)
    }

    /// Checks the indexes against the rows (tests).
    #[cfg(test)]
    fn check_invariants(&self) {
        assert_eq!(self.expiry.len(), self.seats.len());
        let mut n = 0;
        for (lid, state) in &self.licenses {
            let mut seats = 0;
            for (key, ids) in &state.units {
                assert!(!ids.is_empty());
                for id in ids {
                    let row = &self.seats[id];
                    assert_eq!(&row.unit_key, key);
                    assert_eq!(&row.license_id, lid);
                    assert!(self.expiry.contains(&(row.expires_ms, *id)));
                    assert_eq!(row.exclusive, state.exclusive.contains(id));
                }
                seats += ids.len();
            }
            assert_eq!(seats, state.seats);
            n += seats;
        }
        assert_eq!(n, self.seats.len());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::host::{Hypervisor, MachineKind};
    use crate::license::{Binding, VmPolicy};

    const LEASE: u64 = 90_000;
    const T0: u64 = 1_800_000_000_000;
    const ALICE: [u8; 32] = [0xA1; 32];
    const BOB: [u8; 32] = [0xB0; 32];

    fn license(unit: CountingUnit, quantity: u32) -> License {
        License {
            license_id: [7; 16],
            vendor_id: 42,
            product_code: 1,
            product_name: "Counted".into(),
            features: 0b0111,
            quantity,
            counting_unit: unit,
            exclusive_allowed: true,
            borrow_days: 0,
            issued_at: 1_700_000_000,
            expiry: None,
            vm_policy: VmPolicy::Allow,
            binding: Binding::Container {
                serial: "SW-1".into(),
                key: [1; 32],
            },
        }
    }

    fn host(station: u8, session: &str, pid: u32) -> HostInfo {
        HostInfo {
            machine: MachineKind::Physical,
            hostname: format!("host-{station}"),
            station: [station; 32],
            session: session.into(),
            pid,
            pid_namespace: 4026531836,
        }
    }

    fn sid(n: u32) -> SeatId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// The host key of the machine `host` claims to be: Alice's for station 1. The table
    /// counts stations by this key, never by the claim.
    fn client_of(station: u8) -> [u8; 32] {
        if station == 1 { ALICE } else { [station; 32] }
    }

    fn spec<'a>(seat: u32, lic: &'a License, host: &'a HostInfo, now_ms: u64) -> AcquireSpec<'a> {
        AcquireSpec {
            seat_id: sid(seat),
            license: lic,
            host,
            client: client_of(host.station[0]),
            exclusive: false,
            features: 0,
            now_ms,
            lease_ms: LEASE,
        }
    }

    fn take(t: &mut SeatTable, s: &AcquireSpec) -> Result<u32> {
        let r = t.acquire(s).map(|(row, change, n)| {
            assert_eq!(change, Change::Upsert(row.clone()));
            assert_eq!(row.seat_id, s.seat_id);
            assert_eq!(row.expires_ms, s.now_ms + s.lease_ms);
            n
        });
        t.check_invariants();
        r
    }

    #[test]
    fn unit_keys_name_what_the_unit_counts() {
        let h = host(0xAB, "tty/7", 4242);
        let key = [0xCD; 32];
        let st = hex::encode(station_of(&key));
        let id = sid(1);
        assert_eq!(
            unit_key(CountingUnit::Station, &key, &h, &id),
            format!("station:{st}")
        );
        assert_eq!(
            unit_key(CountingUnit::Session, &key, &h, &id),
            format!("session:{st}/tty/7")
        );
        assert_eq!(
            unit_key(CountingUnit::Process, &key, &h, &id),
            format!("process:{st}/tty/7/4026531836/4242")
        );
        assert_eq!(
            unit_key(CountingUnit::Handle, &key, &h, &id),
            format!("handle:{}", hex::encode(id))
        );
        // The claimed station never counts, the proved key always does.
        let mut other = h.clone();
        other.station = [0x11; 32];
        for unit in [
            CountingUnit::Station,
            CountingUnit::Session,
            CountingUnit::Process,
        ] {
            assert_eq!(
                unit_key(unit, &key, &h, &id),
                unit_key(unit, &key, &other, &id)
            );
            assert_ne!(
                unit_key(unit, &key, &h, &id),
                unit_key(unit, &[0xCE; 32], &h, &id)
            );
        }
        // Another PID namespace is another process, whatever the pid.
        let mut ns = h.clone();
        ns.pid_namespace += 1;
        assert_ne!(
            unit_key(CountingUnit::Process, &key, &h, &id),
            unit_key(CountingUnit::Process, &key, &ns, &id)
        );
    }

    #[test]
    fn station_unit_shares_one_slot_across_processes_and_sessions() {
        let lic = license(CountingUnit::Station, 1);
        let mut t = SeatTable::new();
        let a1 = host(1, "s1", 100);
        let a2 = host(1, "s2", 200);
        let b = host(2, "s1", 100);
        assert_eq!(take(&mut t, &spec(1, &lic, &a1, T0)).unwrap(), 1);
        assert_eq!(
            take(&mut t, &spec(2, &lic, &a2, T0)).unwrap(),
            1,
            "same station shares"
        );
        assert!(matches!(
            take(&mut t, &spec(3, &lic, &b, T0)),
            Err(Error::NoSeat { quantity: 1 })
        ));
        assert_eq!(t.len(), 2);
        assert_eq!(t.in_use(&lic.license_id, T0), 1);
        // The station keeps its slot until its last seat goes.
        t.release(&sid(1), &ALICE).unwrap();
        assert!(take(&mut t, &spec(3, &lic, &b, T0)).is_err());
        t.release(&sid(2), &ALICE).unwrap();
        assert_eq!(take(&mut t, &spec(3, &lic, &b, T0)).unwrap(), 1);
    }

    #[test]
    fn two_stations_beyond_the_quantity_get_no_seat() {
        let lic = license(CountingUnit::Station, 2);
        let mut t = SeatTable::new();
        take(&mut t, &spec(1, &lic, &host(1, "s", 1), T0)).unwrap();
        assert_eq!(
            take(&mut t, &spec(2, &lic, &host(2, "s", 1), T0)).unwrap(),
            2
        );
        assert!(matches!(
            take(&mut t, &spec(3, &lic, &host(3, "s", 1), T0)),
            Err(Error::NoSeat { quantity: 2 })
        ));
        assert_eq!(t.in_use(&lic.license_id, T0), 2);
    }

    #[test]
    fn session_unit_counts_sessions_of_a_station() {
        let lic = license(CountingUnit::Session, 2);
        let mut t = SeatTable::new();
        take(&mut t, &spec(1, &lic, &host(1, "s1", 10), T0)).unwrap();
        assert_eq!(
            take(&mut t, &spec(2, &lic, &host(1, "s1", 11), T0)).unwrap(),
            1
        );
        assert_eq!(
            take(&mut t, &spec(3, &lic, &host(1, "s2", 12), T0)).unwrap(),
            2
        );
        assert!(matches!(
            take(&mut t, &spec(4, &lic, &host(1, "s3", 13), T0)),
            Err(Error::NoSeat { .. })
        ));
        // Same session name on another station is another session.
        assert!(take(&mut t, &spec(5, &lic, &host(2, "s1", 10), T0)).is_err());
    }

    #[test]
    fn process_unit_counts_processes() {
        let lic = license(CountingUnit::Process, 2);
        let mut t = SeatTable::new();
        take(&mut t, &spec(1, &lic, &host(1, "s", 10), T0)).unwrap();
        assert_eq!(
            take(&mut t, &spec(2, &lic, &host(1, "s", 10), T0)).unwrap(),
            1
        );
        assert_eq!(
            take(&mut t, &spec(3, &lic, &host(1, "s", 11), T0)).unwrap(),
            2
        );
        assert!(take(&mut t, &spec(4, &lic, &host(1, "s", 12), T0)).is_err());
        assert!(take(&mut t, &spec(5, &lic, &host(2, "s", 10), T0)).is_err());
        assert_eq!(
            take(&mut t, &spec(6, &lic, &host(1, "s", 11), T0)).unwrap(),
            2
        );
    }

    #[test]
    fn handle_unit_counts_every_seat() {
        let lic = license(CountingUnit::Handle, 2);
        let mut t = SeatTable::new();
        let h = host(1, "s", 10);
        take(&mut t, &spec(1, &lic, &h, T0)).unwrap();
        assert_eq!(take(&mut t, &spec(2, &lic, &h, T0)).unwrap(), 2);
        assert!(matches!(
            take(&mut t, &spec(3, &lic, &h, T0)),
            Err(Error::NoSeat { quantity: 2 })
        ));
        assert_eq!(t.release(&sid(1), &ALICE), Some(Change::Delete(sid(1))));
        assert_eq!(take(&mut t, &spec(3, &lic, &h, T0)).unwrap(), 2);
    }

    /// FlexNet's seat leak: a client that reconnects and asks again is counted twice. Here the
    /// same seat id gets the same seat back.
    #[test]
    fn reacquiring_a_seat_id_is_idempotent_and_extends_the_lease() {
        let lic = license(CountingUnit::Handle, 1);
        let mut t = SeatTable::new();
        let h = host(1, "s", 10);
        let (first, _, n) = t.acquire(&spec(1, &lic, &h, T0)).unwrap();
        assert_eq!(n, 1);
        // "Reconnect" later and acquire the same id: same seat, same count, longer lease.
        let (again, change, n) = t.acquire(&spec(1, &lic, &h, T0 + 30_000)).unwrap();
        assert_eq!(n, 1);
        assert_eq!(t.in_use(&lic.license_id, T0 + 30_000), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(again.seat_id, first.seat_id);
        assert_eq!(again.expires_ms, T0 + 30_000 + LEASE);
        assert_eq!(change, Change::Upsert(again.clone()));
        // Even after the lease ran out, the seat comes back while it still fits.
        let late = T0 + 30_000 + LEASE + 5;
        assert_eq!(take(&mut t, &spec(1, &lic, &h, late)).unwrap(), 1);
        assert!(t.expire(late).is_empty(), "no Delete for a seat taken back");
        // ... but not when someone else took the slot meanwhile.
        let later = late + LEASE;
        assert_eq!(take(&mut t, &spec(2, &lic, &h, later)).unwrap(), 1);
        assert!(matches!(
            take(&mut t, &spec(1, &lic, &h, later)),
            Err(Error::NoSeat { .. })
        ));
    }

    #[test]
    fn a_seat_id_of_another_client_or_license_is_refused() {
        let lic = license(CountingUnit::Handle, 5);
        let mut other = license(CountingUnit::Handle, 5);
        other.license_id = [8; 16];
        let mut t = SeatTable::new();
        let h = host(1, "s", 10);
        take(&mut t, &spec(1, &lic, &h, T0)).unwrap();
        let mut s = spec(1, &lic, &h, T0);
        s.client = BOB;
        assert!(matches!(take(&mut t, &s), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            take(&mut t, &spec(1, &other, &h, T0)),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(t.seat(&sid(1)).unwrap().client, ALICE);
        assert_eq!(t.release(&sid(1), &BOB), None, "not Bob's seat");
        assert!(t.seat(&sid(1)).is_some());
    }

    #[test]
    fn revoke_takes_a_live_seat_from_any_client_and_frees_its_slot() {
        let lic = license(CountingUnit::Station, 1);
        let mut t = SeatTable::new();
        take(&mut t, &spec(1, &lic, &host(1, "s", 1), T0)).unwrap();
        assert!(take(&mut t, &spec(2, &lic, &host(2, "s", 1), T0)).is_err());
        assert_eq!(t.revoke(&sid(9), T0), None, "no such seat");
        assert_eq!(
            t.revoke(&sid(1), T0 + LEASE),
            None,
            "expired: nothing to revoke"
        );
        assert_eq!(t.revoke(&sid(1), T0), Some(Change::Delete(sid(1))));
        t.check_invariants();
        assert_eq!(t.revoke(&sid(1), T0), None, "revoked once");
        assert_eq!(t.rows().count(), 0);
        let (changes, lost) = t.renew(&[sid(1)], &ALICE, T0 + 1, LEASE);
        assert!(changes.is_empty());
        assert_eq!(lost, vec![sid(1)], "the holder's renewal finds it gone");
        assert_eq!(
            take(&mut t, &spec(2, &lic, &host(2, "s", 1), T0)).unwrap(),
            1
        );
    }

    #[test]
    fn an_expired_seat_frees_its_slot() {
        let lic = license(CountingUnit::Station, 1);
        let mut t = SeatTable::new();
        take(&mut t, &spec(1, &lic, &host(1, "s", 1), T0)).unwrap();
        let end = T0 + LEASE;
        assert_eq!(t.in_use(&lic.license_id, end - 1), 1);
        assert_eq!(
            t.in_use(&lic.license_id, end),
            0,
            "expired but not yet pruned"
        );
        assert!(take(&mut t, &spec(2, &lic, &host(2, "s", 1), end - 1)).is_err());
        assert_eq!(
            take(&mut t, &spec(2, &lic, &host(2, "s", 1), end)).unwrap(),
            1
        );
        assert!(t.seat(&sid(1)).is_none());
        // The pruned seat's Delete comes out of the next expire, once.
        assert_eq!(t.expire(end), vec![Change::Delete(sid(1))]);
        assert!(t.expire(end).is_empty());
        assert_eq!(t.expire(end + LEASE), vec![Change::Delete(sid(2))]);
        assert!(t.is_empty());
        assert_eq!(t.in_use(&lic.license_id, end + LEASE), 0);
    }

    #[test]
    fn expired_rows_come_out_once_in_the_order_they_were_dropped() {
        let lic = license(CountingUnit::Handle, 1);
        let mut t = SeatTable::new();
        let h = host(1, "s", 1);
        take(&mut t, &spec(1, &lic, &h, T0)).unwrap();
        assert!(t.take_expired().is_empty());
        // Seat 1's lease ran out; seat 2 takes the slot: the acquire drops seat 1 first.
        take(&mut t, &spec(2, &lic, &h, T0 + LEASE)).unwrap();
        let gone = t.take_expired();
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].seat_id, gone[0].expires_ms), (sid(1), T0 + LEASE));
        assert!(t.take_expired().is_empty(), "handed out once");
        // A seat taken back by its client after its lease ran out was dropped meanwhile.
        take(&mut t, &spec(2, &lic, &h, T0 + 3 * LEASE)).unwrap();
        assert_eq!(t.take_expired()[0].seat_id, sid(2));
        // Rows loaded already expired are among them too.
        let mut t2 = SeatTable::new();
        t2.load(vec![gone[0].clone()], T0 + 2 * LEASE);
        assert_eq!(t2.take_expired(), gone);
        // release_row gives back the row released, for its client only.
        assert_eq!(t.release_row(&sid(2), &BOB), None);
        let row = t.release_row(&sid(2), &ALICE).unwrap();
        assert_eq!(row.seat_id, sid(2));
        assert!(t.is_empty());
        t.check_invariants();
    }

    #[test]
    fn renew_extends_own_live_seats_and_reports_the_rest_lost() {
        let lic = license(CountingUnit::Handle, 5);
        let mut t = SeatTable::new();
        let h = host(1, "s", 1);
        take(&mut t, &spec(1, &lic, &h, T0)).unwrap();
        take(&mut t, &spec(2, &lic, &h, T0 + 50_000)).unwrap();
        let mut bobs = spec(3, &lic, &h, T0 + 50_000);
        bobs.client = BOB;
        take(&mut t, &bobs).unwrap();
        let now = T0 + LEASE; // seat 1 just expired
        let (changes, lost) = t.renew(&[sid(1), sid(2), sid(3), sid(9)], &ALICE, now, LEASE);
        t.check_invariants();
        assert_eq!(lost, vec![sid(1), sid(3), sid(9)]);
        assert_eq!(changes.len(), 1);
        assert!(
            matches!(&changes[0], Change::Upsert(r) if r.seat_id == sid(2) && r.expires_ms == now + LEASE)
        );
        assert_eq!(t.seat(&sid(2)).unwrap().expires_ms, now + LEASE);
        assert_eq!(
            t.seat(&sid(3)).unwrap().expires_ms,
            T0 + 50_000 + LEASE,
            "Bob's untouched"
        );
        // The renewed seat outlives its first lease.
        assert!(
            t.expire(T0 + 50_000 + LEASE)
                .contains(&Change::Delete(sid(3)))
        );
        assert!(t.seat(&sid(2)).is_some());
    }

    #[test]
    fn exclusive_needs_an_idle_license_and_blocks_everyone_else() {
        let lic = license(CountingUnit::Station, 5);
        let mut t = SeatTable::new();
        let h1 = host(1, "s", 1);
        let h2 = host(2, "s", 1);
        take(&mut t, &spec(1, &lic, &h1, T0)).unwrap();
        let mut ex = spec(2, &lic, &h2, T0);
        ex.exclusive = true;
        assert!(
            matches!(take(&mut t, &ex), Err(Error::ExclusiveDenied(_))),
            "license busy"
        );
        t.release(&sid(1), &ALICE).unwrap();
        assert_eq!(take(&mut t, &ex).unwrap(), 1);
        assert!(t.seat(&sid(2)).unwrap().exclusive);
        // Everyone else is blocked, even on the holder's station.
        for h in [&h1, &h2] {
            assert!(matches!(
                take(&mut t, &spec(3, &lic, h, T0)),
                Err(Error::ExclusiveDenied(_))
            ));
        }
        // The holder re-attaches.
        assert_eq!(take(&mut t, &ex).unwrap(), 1);
        // Once the exclusive lease runs out, others get seats again.
        assert_eq!(take(&mut t, &spec(3, &lic, &h1, T0 + LEASE)).unwrap(), 1);
        // A license that does not allow it refuses exclusive use outright.
        let mut no = license(CountingUnit::Station, 5);
        no.license_id = [8; 16];
        no.exclusive_allowed = false;
        let mut ex = spec(4, &no, &h1, T0);
        ex.exclusive = true;
        assert!(matches!(take(&mut t, &ex), Err(Error::ExclusiveDenied(_))));
    }

    #[test]
    fn a_license_that_denies_vms_refuses_a_virtual_client() {
        let mut lic = license(CountingUnit::Station, 5);
        lic.vm_policy = VmPolicy::Deny;
        let mut t = SeatTable::new();
        let mut vm = host(1, "s", 1);
        vm.machine = MachineKind::Virtual(Hypervisor::Kvm);
        match take(&mut t, &spec(1, &lic, &vm, T0)) {
            Err(Error::VmNotAllowed(m)) => assert!(m.contains("KVM"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(t.is_empty());
        assert!(take(&mut t, &spec(1, &lic, &host(1, "s", 1), T0)).is_ok());
        lic.vm_policy = VmPolicy::Allow;
        assert!(take(&mut t, &spec(2, &lic, &vm, T0)).is_ok());
    }

    #[test]
    fn features_must_be_licensed() {
        let lic = license(CountingUnit::Handle, 5);
        let mut t = SeatTable::new();
        let h = host(1, "s", 1);
        let mut s = spec(1, &lic, &h, T0);
        s.features = 0b1001;
        assert!(matches!(
            take(&mut t, &s),
            Err(Error::FeatureMissing {
                requested: 0b1001,
                licensed: 0b0111
            })
        ));
        s.features = 0b0101;
        assert!(take(&mut t, &s).is_ok());
    }

    #[test]
    fn an_expired_license_grants_nothing() {
        let mut lic = license(CountingUnit::Handle, 5);
        let expiry = T0 / 1000 + 10;
        lic.expiry = Some(expiry);
        let mut t = SeatTable::new();
        let h = host(1, "s", 1);
        assert!(take(&mut t, &spec(1, &lic, &h, expiry * 1000 - 1)).is_ok());
        assert!(matches!(
            take(&mut t, &spec(2, &lic, &h, expiry * 1000)),
            Err(Error::Expired { expiry: e }) if e == expiry
        ));
    }

    /// A stored seat `n` of station `station` of `lic`, as the store loads it.
    fn station_row(lic: &License, n: u32, station: u8, expires_ms: u64) -> SeatRow {
        SeatRow {
            seat_id: sid(n),
            license_id: lic.license_id,
            unit_key: unit_key(
                CountingUnit::Station,
                &client_of(station),
                &host(station, "s", 1),
                &sid(n),
            ),
            client: client_of(station),
            exclusive: false,
            expires_ms,
            borrow: None,
        }
    }

    #[test]
    fn load_honours_live_rows_and_drops_expired_ones() {
        let lic = license(CountingUnit::Station, 2);
        let row = |n: u32, station: u8, expires_ms: u64| station_row(&lic, n, station, expires_ms);
        let mut t = SeatTable::new();
        t.load(
            vec![row(1, 1, T0 + 10), row(2, 2, T0 + 20), row(3, 3, T0)],
            T0,
        );
        t.check_invariants();
        assert_eq!(t.len(), 2);
        assert!(t.seat(&sid(3)).is_none());
        assert_eq!(t.in_use(&lic.license_id, T0), 2);
        // The loaded seats count: a third station is refused, a loaded one re-attaches.
        assert!(matches!(
            take(&mut t, &spec(4, &lic, &host(3, "s", 1), T0 + 1)),
            Err(Error::NoSeat { .. })
        ));
        assert_eq!(
            take(&mut t, &spec(1, &lic, &host(1, "s", 1), T0 + 1)).unwrap(),
            2
        );
        // The dropped row is deleted from the store by the next expire.
        assert_eq!(t.expire(T0 + 1), vec![Change::Delete(sid(3))]);
    }

    /// After a SIGKILL the stored expiries may lag the leases answered (renewals are written
    /// lazily): every row is kept until at least one lease after the start, a longer stored
    /// lease is kept as it is, and an unrenewed seat goes one lease later.
    #[test]
    fn a_restart_keeps_every_stored_seat_for_one_more_lease() {
        let lic = license(CountingUnit::Station, 2);
        let row = |n: u32, station: u8, expires_ms: u64| station_row(&lic, n, station, expires_ms);
        let now = T0 + 10 * LEASE;
        let mut t = SeatTable::new();
        // Seat 1's stored lease ran out before the start (its last renewals were not
        // written); seat 2's runs beyond one lease.
        t.load_extended(
            vec![row(1, 1, now - 500), row(2, 2, now + 2 * LEASE)],
            now,
            LEASE,
        );
        t.check_invariants();
        assert!(t.take_expired().is_empty());
        assert_eq!(t.seat(&sid(1)).unwrap().expires_ms, now + LEASE);
        assert_eq!(t.seat(&sid(2)).unwrap().expires_ms, now + 2 * LEASE);
        assert_eq!(t.in_use(&lic.license_id, now), 2);
        // Nobody takes seat 1's slot while its holder may still be inside its lease; the
        // holder re-attaches.
        assert!(matches!(
            take(&mut t, &spec(3, &lic, &host(3, "s", 1), now + LEASE - 1)),
            Err(Error::NoSeat { .. })
        ));
        assert!(t.expire(now + LEASE - 1).is_empty());
        // Unrenewed, it goes one lease after the start.
        assert_eq!(t.expire(now + LEASE), vec![Change::Delete(sid(1))]);
        assert_eq!(
            take(&mut t, &spec(3, &lic, &host(3, "s", 1), now + LEASE)).unwrap(),
            2
        );
    }

    /// A seat stored by a server that counted the claimed station (before protocol 2) is
    /// honoured until its client re-attaches it; then it moves to the proved station's unit
    /// without counting twice.
    #[test]
    fn a_loaded_seat_of_a_claimed_station_re_attaches_under_the_proved_one() {
        let lic = license(CountingUnit::Process, 1);
        let h = host(1, "s", 10);
        let old = SeatRow {
            seat_id: sid(1),
            license_id: lic.license_id,
            unit_key: format!("process:{}/s/10", hex::encode(h.station)),
            client: ALICE,
            exclusive: false,
            expires_ms: T0 + 10,
            borrow: None,
        };
        let mut t = SeatTable::new();
        t.load(vec![old], T0);
        assert_eq!(take(&mut t, &spec(1, &lic, &h, T0 + 1)).unwrap(), 1);
        assert_eq!(
            t.seat(&sid(1)).unwrap().unit_key,
            unit_key(CountingUnit::Process, &ALICE, &h, &sid(1))
        );
        // Another process of that key is refused, as before the restart.
        assert!(take(&mut t, &spec(2, &lic, &host(1, "s", 11), T0 + 1)).is_err());
    }

    fn lent(until_s: u64) -> Arc<Borrowed> {
        Arc::new(Borrowed {
            borrower_key: [9; 32],
            borrower_serial: "SW-LAPTOP".into(),
            hostname: "laptop".into(),
            user: "uid:1000/tty1".into(),
            issued_at: T0 / 1000,
            until: until_s,
            grant: vec![1],
            certificate: vec![2],
        })
    }

    fn borrow_spec<'a>(seat: u32, lic: &'a License, now_ms: u64) -> BorrowSpec<'a> {
        const PHYSICAL: MachineKind = MachineKind::Physical;
        BorrowSpec {
            seat_id: sid(seat),
            license: lic,
            machine: &PHYSICAL,
            client: ALICE,
            features: 0,
            now_ms,
        }
    }

    /// A borrowed seat takes a slot of its own (even on a station that holds one), counted
    /// against the quantity until its end: not renewed, released or revoked; given back only
    /// by `give_back`; kept with its end, neither shortened nor extended, by a restart.
    #[test]
    fn a_borrowed_seat_holds_a_slot_of_its_own_until_its_end() {
        let lic = license(CountingUnit::Station, 2);
        let until = T0 / 1000 + 3 * 86_400;
        let mut t = SeatTable::new();
        let h = host(1, "s", 1);
        take(&mut t, &spec(1, &lic, &h, T0)).unwrap();
        let (row, change, in_use) = t.borrow(&borrow_spec(2, &lic, T0), lent(until)).unwrap();
        t.check_invariants();
        assert_eq!(in_use, 2, "the station's leased seat and the borrowed one");
        assert_eq!(change, Change::Upsert(row.clone()));
        assert_eq!(
            (row.expires_ms, row.unit_key.clone()),
            (until * 1000, borrow_unit_key(&sid(2)))
        );
        // Full: neither another borrow nor another station's acquire.
        assert!(matches!(
            t.borrow(&borrow_spec(3, &lic, T0), lent(until)),
            Err(Error::NoSeat { quantity: 2 })
        ));
        assert!(matches!(
            take(&mut t, &spec(4, &lic, &host(2, "s", 1), T0)),
            Err(Error::NoSeat { .. })
        ));
        // Its id is neither acquired, renewed, released nor revoked.
        assert!(matches!(
            take(&mut t, &spec(2, &lic, &h, T0)),
            Err(Error::InvalidArgument(_))
        ));
        let (changes, lost) = t.renew(&[sid(2)], &ALICE, T0 + 1, LEASE);
        assert!(changes.is_empty() && lost.is_empty());
        assert_eq!(t.release(&sid(2), &ALICE), None);
        assert_eq!(t.revoke(&sid(2), T0), None);
        assert_eq!(t.seat(&sid(2)).unwrap().expires_ms, until * 1000);
        // A restart keeps it with its end, even when the end is within a lease.
        let mut t2 = SeatTable::new();
        let soon = until * 1000 - 10;
        t2.load_extended(vec![row.clone()], soon, LEASE);
        assert_eq!(t2.seat(&sid(2)).unwrap().expires_ms, until * 1000);
        assert!(t2.expire(until * 1000 - 1).is_empty());
        assert_eq!(t2.expire(until * 1000), vec![Change::Delete(sid(2))]);
        assert_eq!(t2.take_expired()[0].seat_id, sid(2));
        // Given back: freed at once, once.
        assert!(t.borrowed(&sid(2), T0).is_some());
        assert_eq!(t.give_back(&sid(2), T0).unwrap().seat_id, sid(2));
        assert_eq!(t.give_back(&sid(2), T0), None);
        assert_eq!(
            t.give_back(&sid(1), T0),
            None,
            "a leased seat is not given back"
        );
        assert_eq!(
            take(&mut t, &spec(4, &lic, &host(2, "s", 1), T0)).unwrap(),
            2
        );
        t.check_invariants();
        // An exclusive holder blocks borrowing, and an end not after now is refused.
        let mut ex_lic = license(CountingUnit::Station, 5);
        ex_lic.license_id = [8; 16];
        let mut ex = spec(5, &ex_lic, &h, T0);
        ex.exclusive = true;
        take(&mut t, &ex).unwrap();
        assert!(matches!(
            t.borrow(&borrow_spec(6, &ex_lic, T0), lent(until)),
            Err(Error::ExclusiveDenied(_))
        ));
        let mut other = license(CountingUnit::Station, 5);
        other.license_id = [9; 16];
        assert!(matches!(
            t.borrow(&borrow_spec(6, &other, T0), lent(T0 / 1000)),
            Err(Error::InvalidArgument(_))
        ));
        t.check_invariants();
    }

    /// 16 threads hammer one table of a 10-seat license; after every operation, under the
    /// lock, the license never has more than 10 seats in use.
    #[test]
    fn concurrent_acquires_never_exceed_the_quantity() {
        const QUANTITY: u32 = 10;
        struct Shared {
            table: SeatTable,
            now: u64,
            grants: u64,
            refusals: u64,
        }
        let lic = license(CountingUnit::Handle, QUANTITY);
        let shared = Mutex::new(Shared {
            table: SeatTable::new(),
            now: T0,
            grants: 0,
            refusals: 0,
        });
        std::thread::scope(|s| {
            for thread in 0..16u32 {
                let (lic, shared) = (&lic, &shared);
                s.spawn(move || {
                    let h = host(thread as u8, "s", thread);
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(thread);
                    for _ in 0..3_000 {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let seat = thread * 1_000 + (rng % 40) as u32;
                        let mut g = shared.lock().unwrap();
                        g.now += 7;
                        let now = g.now;
                        match rng % 10 {
                            0..=5 => {
                                let mut sp = spec(seat, lic, &h, now);
                                sp.lease_ms = 2_000;
                                match g.table.acquire(&sp) {
                                    Ok((_, _, n)) => {
                                        assert!(n <= QUANTITY);
                                        g.grants += 1;
                                    }
                                    Err(Error::NoSeat { quantity }) => {
                                        assert_eq!(quantity, QUANTITY);
                                        g.refusals += 1;
                                    }
                                    Err(e) => panic!("{e}"),
                                }
                            }
                            6 | 7 => {
                                g.table.release(&sid(seat), &client_of(thread as u8));
                            }
                            8 => {
                                g.table
                                    .renew(&[sid(seat)], &client_of(thread as u8), now, 2_000);
                            }
                            _ => {
                                g.table.expire(now);
                            }
                        }
                        let in_use = g.table.in_use(&lic.license_id, now);
                        assert!(in_use <= QUANTITY, "{in_use} seats in use");
                        let live = g
                            .table
                            .seats
                            .values()
                            .filter(|r| r.expires_ms > now)
                            .count() as u32;
                        assert_eq!(in_use, live, "handle unit: one slot per live seat");
                    }
                });
            }
        });
        let g = shared.into_inner().unwrap();
        g.table.check_invariants();
        assert!(
            g.grants > 1_000 && g.refusals > 1_000,
            "{} / {}",
            g.grants,
            g.refusals
        );
    }

    #[test]
    fn a_hundred_thousand_seats_stay_consistent() {
        let lic = license(CountingUnit::Process, 100_000);
        let mut t = SeatTable::new();
        let h = host(1, "s", 0);
        for n in 0..100_000u32 {
            let mut hn = h.clone();
            hn.pid = n;
            t.acquire(&spec(n, &lic, &hn, T0 + u64::from(n / 2)))
                .unwrap();
        }
        assert_eq!(t.len(), 100_000);
        assert_eq!(t.in_use(&lic.license_id, T0 + 50_000), 100_000);
        let half = T0 + LEASE + 25_000; // seats 0..=50_001 have expired
        assert_eq!(t.in_use(&lic.license_id, half), 49_998);
        assert_eq!(t.expire(half).len(), 50_002);
        t.check_invariants();
        assert_eq!(t.in_use(&lic.license_id, half), 49_998);
        assert_eq!(t.expire(T0 + 2 * LEASE).len(), 49_998);
        assert!(t.is_empty() && t.licenses.is_empty() && t.expiry.is_empty());
    }
}
