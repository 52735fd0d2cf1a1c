//! The license server's seat table and its durable store against a reference model.
//!
//! The system under test is [`Server`]: a `SeatTable` and a `SqliteStore` driven the way
//! `server::daemon::requests` drives them (a grant is written, with the `Delete`s of every
//! seat the table dropped before it, before it is answered; renewals and the drops of a
//! refused acquire are lazy and ride with the next write; a release, a revoke and a non-empty
//! expiry sweep are written at once; a start loads the file with `load_extended`). The
//! group committer's thread is replaced by these synchronous calls in the same order, so a
//! case is deterministic and shrinks; a crash keeps exactly what the committer had written.
//!
//! The reference model ([`Model`]) is plain maps: seats with a unit key (a tuple, not the
//! real key's string), lease end, exclusive flag, the license's quantity, and what the disk
//! holds. Every answer is compared (granted, or refused with which status; the seats in use;
//! renewed and lost seats; released and revoked seats; the seats an expiry sweep deletes),
//! and after every step the whole table, the rows in the SQLite file and the counts per
//! license, and the invariant: never more distinct live units than the quantity, and an
//! exclusive seat alone.
//!
//! Borrowed seats (`SeatTable::borrow`) are in the cases too: a slot of their own, counted
//! against the quantity until their end, never renewed, released or revoked, given back by
//! `give_back`, and kept with their end (not one more lease) by a restart.
//!
//! Time is the harness's `now`, starting at a fixed instant and moved only by the case's
//! clock steps: nothing here reads the real clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tessera::Error;
use tessera::host::{Hypervisor, MachineKind};
use tessera::license::{Binding, CountingUnit, License, VmPolicy};
use tessera::net::proto::HostInfo;
use tessera::server::seats::{
    AcquireSpec, BorrowSpec, Borrowed, Change, SeatId, SeatRow, SeatTable,
};
use tessera::server::store::{Durability, SeatStore, SqliteStore};

/// The server's lease (ms).
const LEASE: u64 = 10_000;
/// Where every case's clock starts (2027-01-15, Unix ms); only clock steps move it.
const T0: u64 = 1_800_000_000_000;
/// Feature bits every license grants; acquires ask for one of [`FEATURES`].
const LICENSED: u32 = 0b0111;
const FEATURES: [u32; 3] = [0, 0b0001, 0b1001];
/// Client machines: their host keys, and whether each is a virtual machine (a VM is a
/// machine of its own, with a host key of its own).
const MACHINES: usize = 3;
const VIRTUAL: [bool; MACHINES] = [false, false, true];
/// Sessions (one with a `/`: unit keys must not collide), pid namespaces, pids, seat ids.
const SESSIONS: [&str; 3] = ["1", "2", "1/2"];
const PID_NAMESPACES: [u64; 2] = [4026531836, 4026532001];
const PIDS: [u32; 2] = [100, 2];
const SEATS: usize = 5;

fn host_key(machine: usize) -> [u8; 32] {
    [0x10 + machine as u8; 32]
}

fn seat_id(n: usize) -> SeatId {
    let mut id = [0u8; 16];
    id[0] = 0x5E;
    id[15] = n as u8;
    id
}

fn license_id(n: usize) -> [u8; 16] {
    [0xA0 + n as u8; 16]
}

// ---------------------------------------------------------------------------------------
// Cases

/// One license of a case.
#[derive(Clone, Debug)]
pub struct LicCfg {
    unit: CountingUnit,
    quantity: u32,
    exclusive_allowed: bool,
    vm_deny: bool,
    /// Seconds after `T0 / 1000` when it expires.
    expiry: Option<u64>,
}

/// One step of a case. Indexes pick from the pools above.
#[derive(Clone, Debug)]
pub enum Op {
    /// A client asks for seat `seat` of license `lic`.
    Acquire {
        seat: usize,
        lic: usize,
        machine: usize,
        session: usize,
        ns: usize,
        pid: usize,
        /// The station its hello claims (never counted).
        claim: u8,
        exclusive: bool,
        features: usize,
    },
    /// A client renews the seats of a bit mask of seat ids; `by_holder`: the client is the
    /// one holding the lowest seat of the mask, if any (resolved before the step).
    Renew {
        seats: u8,
        machine: usize,
        by_holder: bool,
    },
    /// A client releases a seat (`by_holder`: the client holding it, if any).
    Release {
        seat: usize,
        machine: usize,
        by_holder: bool,
    },
    /// An admin revokes a seat.
    Revoke { seat: usize },
    /// Machine `machine` borrows seat `seat` of license `lic` for `secs` seconds (from the
    /// current second on).
    Borrow {
        seat: usize,
        lic: usize,
        machine: usize,
        features: usize,
        secs: u64,
    },
    /// The borrowing container gives seat `seat` back.
    GiveBack { seat: usize },
    /// The clock moves on.
    Step { ms: u64 },
    /// The clock moves to the next lease end, a millisecond before it or after it.
    StepToLeaseEnd { delta: i8 },
    /// The server's periodic expiry sweep.
    Sweep,
    /// The committer's timer writes the lazy changes.
    Flush,
    /// The server stops (gracefully: lazy changes written; or killed: lost) and starts again
    /// from its file.
    Restart { graceful: bool },
}

fn unit_strategy() -> impl Strategy<Value = CountingUnit> {
    prop_oneof![
        Just(CountingUnit::Station),
        Just(CountingUnit::Session),
        Just(CountingUnit::Process),
        Just(CountingUnit::Handle),
    ]
}

fn lic_strategy(unit: impl Strategy<Value = CountingUnit>) -> impl Strategy<Value = LicCfg> {
    (
        unit,
        1u32..=4,
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.2, 1u64..60),
    )
        .prop_map(
            |(unit, quantity, exclusive_allowed, vm_deny, expiry)| LicCfg {
                unit,
                quantity,
                exclusive_allowed,
                vm_deny,
                expiry,
            },
        )
}

/// The seats a renewal names: mostly one (as a client with one seat), else any set.
fn renew_mask() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => (0..SEATS).prop_map(|i| 1u8 << i),
        1 => 0u8..(1 << SEATS),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let acquire = (
        0..SEATS,
        prop::bool::weighted(0.8).prop_map(|first| if first { 0 } else { 1 }),
        0..MACHINES,
        0..SESSIONS.len(),
        0..PID_NAMESPACES.len(),
        0..PIDS.len(),
        0u8..3,
        prop::bool::weighted(0.15),
        prop::sample::select(vec![0usize, 0, 0, 0, 1, 2]),
    )
        .prop_map(
            |(seat, lic, machine, session, ns, pid, claim, exclusive, features)| Op::Acquire {
                seat,
                lic,
                machine,
                session,
                ns,
                pid,
                claim,
                exclusive,
                features,
            },
        );
    prop_oneof![
        10 => acquire,
        3 => (renew_mask(), 0..MACHINES, any::<bool>())
            .prop_map(|(seats, machine, by_holder)| Op::Renew { seats, machine, by_holder }),
        3 => (0..SEATS, 0..MACHINES, any::<bool>())
            .prop_map(|(seat, machine, by_holder)| Op::Release { seat, machine, by_holder }),
        2 => (0..SEATS).prop_map(|seat| Op::Revoke { seat }),
        2 => (1u64..LEASE / 3).prop_map(|ms| Op::Step { ms }),
        1 => (LEASE..3 * LEASE).prop_map(|ms| Op::Step { ms }),
        2 => (-1i8..=1).prop_map(|delta| Op::StepToLeaseEnd { delta }),
        2 => Just(Op::Sweep),
        1 => Just(Op::Flush),
        2 => any::<bool>().prop_map(|graceful| Op::Restart { graceful }),
        2 => (
            0..SEATS,
            prop::bool::weighted(0.8).prop_map(|first| if first { 0 } else { 1 }),
            0..MACHINES,
            prop::sample::select(vec![0usize, 0, 0, 0, 1, 2]),
            1u64..3 * LEASE / 1000,
        )
            .prop_map(|(seat, lic, machine, features, secs)| Op::Borrow {
                seat,
                lic,
                machine,
                features,
                secs,
            }),
        2 => (0..SEATS).prop_map(|seat| Op::GiveBack { seat }),
    ]
}

/// A case: the first license has the unit under test, the second any; the store's
/// durability; the steps.
pub type Case = (Vec<LicCfg>, bool, Vec<Op>);

fn case_strategy(unit: CountingUnit) -> impl Strategy<Value = Case> {
    (
        lic_strategy(Just(unit)),
        lic_strategy(unit_strategy()),
        any::<bool>(),
        prop::collection::vec(op_strategy(), 1..48),
    )
        .prop_map(|(a, b, fsync, ops)| (vec![a, b], fsync, ops))
}

fn license(n: usize, cfg: &LicCfg) -> License {
    License {
        license_id: license_id(n),
        vendor_id: 0x7E55,
        product_code: 1,
        product_name: format!("Model {n}"),
        features: LICENSED,
        quantity: cfg.quantity,
        counting_unit: cfg.unit,
        exclusive_allowed: cfg.exclusive_allowed,
        borrow_days: 0,
        issued_at: T0 / 1000 - 86_400,
        expiry: cfg.expiry.map(|s| T0 / 1000 + s),
        vm_policy: if cfg.vm_deny {
            VmPolicy::Deny
        } else {
            VmPolicy::Allow
        },
        binding: Binding::Container {
            serial: "SW-MODEL".into(),
            key: [1; 32],
        },
    }
}

// ---------------------------------------------------------------------------------------
// The reference model

/// What one seat counts against its license's quantity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Unit {
    Station(usize),
    Session(usize, usize),
    Process(usize, usize, usize, usize),
    Handle(usize),
    /// A borrowed seat: a slot of its own.
    Borrowed(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct MSeat {
    lic: usize,
    unit: Unit,
    machine: usize,
    exclusive: bool,
    expires: u64,
    borrowed: bool,
}

/// An answer, as the model and the real table give it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Granted {
        in_use: u32,
    },
    FeatureMissing,
    Expired {
        expiry: u64,
    },
    VmNotAllowed,
    /// The seat id is another license's or another client's.
    InvalidArgument,
    ExclusiveDenied,
    NoSeat {
        quantity: u32,
    },
    Renewed {
        renewed: Vec<usize>,
        lost: Vec<usize>,
    },
    /// Release or revoke: whether a seat went.
    Gone(bool),
    /// An expiry sweep: the seats whose rows it deletes.
    Swept(BTreeSet<usize>),
    Nothing,
}

fn answer_of(r: &tessera::Result<u32>) -> Answer {
    match r {
        Ok(in_use) => Answer::Granted { in_use: *in_use },
        Err(Error::FeatureMissing { .. }) => Answer::FeatureMissing,
        Err(Error::Expired { expiry }) => Answer::Expired { expiry: *expiry },
        Err(Error::VmNotAllowed(_)) => Answer::VmNotAllowed,
        Err(Error::InvalidArgument(_)) => Answer::InvalidArgument,
        Err(Error::ExclusiveDenied(_)) => Answer::ExclusiveDenied,
        Err(Error::NoSeat { quantity }) => Answer::NoSeat {
            quantity: *quantity,
        },
        Err(e) => panic!("an acquire failed with an unexpected error: {e}"),
    }
}

/// The documented rules, over plain maps.
struct Model {
    lics: Vec<LicCfg>,
    now: u64,
    /// The seats the table holds: live ones, and expired ones no operation has dropped yet.
    mem: BTreeMap<usize, MSeat>,
    /// Seats dropped as expired whose row's `Delete` no sweep has handed out yet.
    pruned: BTreeSet<usize>,
    /// Changes submitted lazily, not written yet: the latest per seat (`None`: delete).
    lazy: BTreeMap<usize, Option<MSeat>>,
    /// The rows in the file.
    disk: BTreeMap<usize, MSeat>,
}

impl Model {
    fn new(lics: Vec<LicCfg>) -> Self {
        Model {
            lics,
            now: T0,
            mem: BTreeMap::new(),
            pruned: BTreeSet::new(),
            lazy: BTreeMap::new(),
            disk: BTreeMap::new(),
        }
    }

    fn unit(&self, op: &Op) -> Unit {
        let Op::Acquire {
            seat,
            lic,
            machine,
            session,
            ns,
            pid,
            ..
        } = *op
        else {
            unreachable!()
        };
        match self.lics[lic].unit {
            CountingUnit::Station => Unit::Station(machine),
            CountingUnit::Session => Unit::Session(machine, session),
            CountingUnit::Process => Unit::Process(machine, session, ns, pid),
            CountingUnit::Handle => Unit::Handle(seat),
        }
    }

    /// A seat is live while `now < expires`.
    fn live(&self) -> impl Iterator<Item = (&usize, &MSeat)> {
        self.mem.iter().filter(|(_, s)| s.expires > self.now)
    }

    /// Distinct units among the license's live seats.
    fn in_use(&self, lic: usize) -> u32 {
        self.live()
            .filter(|(_, s)| s.lic == lic)
            .map(|(_, s)| &s.unit)
            .collect::<BTreeSet<_>>()
            .len() as u32
    }

    /// The table drops the seats whose lease ran out (an operation that takes the time).
    fn prune(&mut self) {
        let now = self.now;
        let dead: Vec<usize> = self
            .mem
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.mem.remove(&id);
            self.pruned.insert(id);
        }
    }

    /// An expiry sweep of the table: drops the expired seats and hands out the `Delete`s of
    /// every seat dropped since the last sweep.
    fn expire(&mut self) -> BTreeSet<usize> {
        self.prune();
        std::mem::take(&mut self.pruned)
    }

    /// Writes the lazy changes, then `changes` (`None`: delete), in one transaction.
    fn write(&mut self, changes: Vec<(usize, Option<MSeat>)>) {
        let lazy = std::mem::take(&mut self.lazy);
        for (id, c) in lazy.into_iter().chain(changes) {
            match c {
                Some(s) => self.disk.insert(id, s),
                None => self.disk.remove(&id),
            };
        }
    }

    fn deletes(ids: &BTreeSet<usize>) -> Vec<(usize, Option<MSeat>)> {
        ids.iter().map(|id| (*id, None)).collect()
    }

    fn step(&mut self, op: &Op) -> Answer {
        match *op {
            Op::Acquire {
                seat,
                lic,
                machine,
                exclusive,
                features,
                ..
            } => {
                let answer = self.acquire(op, seat, lic, machine, exclusive, features);
                // The server hands out the drops with the grant, or lazily when refused.
                let dropped = self.expire();
                match answer {
                    Answer::Granted { .. } => {
                        let mut changes = Self::deletes(&dropped);
                        changes.push((seat, Some(self.mem[&seat].clone())));
                        self.write(changes);
                    }
                    _ => {
                        for id in dropped {
                            self.lazy.insert(id, None);
                        }
                    }
                }
                answer
            }
            Op::Renew { seats, machine, .. } => {
                self.prune();
                let (mut renewed, mut lost) = (Vec::new(), Vec::new());
                for id in (0..SEATS).filter(|i| seats & (1 << i) != 0) {
                    match self.mem.get_mut(&id) {
                        // A borrowed seat is never renewed, nor lost.
                        Some(s) if s.borrowed => {}
                        Some(s) if s.machine == machine => {
                            s.expires = self.now + LEASE;
                            let s = s.clone();
                            self.lazy.insert(id, Some(s));
                            renewed.push(id);
                        }
                        _ => lost.push(id),
                    }
                }
                Answer::Renewed { renewed, lost }
            }
            Op::Release { seat, machine, .. } => {
                // Release does not look at the time: a seat expired but not dropped yet is
                // released (and its row deleted) like a live one.
                let gone = self
                    .mem
                    .get(&seat)
                    .is_some_and(|s| s.machine == machine && !s.borrowed);
                if gone {
                    self.mem.remove(&seat);
                    self.write(vec![(seat, None)]);
                }
                Answer::Gone(gone)
            }
            Op::Revoke { seat } => {
                let gone = self
                    .mem
                    .get(&seat)
                    .is_some_and(|s| s.expires > self.now && !s.borrowed);
                if gone {
                    self.mem.remove(&seat);
                    self.write(vec![(seat, None)]);
                }
                Answer::Gone(gone)
            }
            Op::Borrow {
                seat,
                lic,
                machine,
                features,
                secs,
            } => {
                let answer = self.borrow(seat, lic, machine, features, secs);
                let dropped = self.expire();
                match answer {
                    Answer::Granted { .. } => {
                        let mut changes = Self::deletes(&dropped);
                        changes.push((seat, Some(self.mem[&seat].clone())));
                        self.write(changes);
                    }
                    _ => {
                        for id in dropped {
                            self.lazy.insert(id, None);
                        }
                    }
                }
                answer
            }
            Op::GiveBack { seat } => {
                let gone = self
                    .mem
                    .get(&seat)
                    .is_some_and(|s| s.expires > self.now && s.borrowed);
                if gone {
                    self.mem.remove(&seat);
                    self.write(vec![(seat, None)]);
                }
                Answer::Gone(gone)
            }
            Op::Sweep => {
                let dropped = self.expire();
                if !dropped.is_empty() {
                    self.write(Self::deletes(&dropped));
                }
                Answer::Swept(dropped)
            }
            Op::Flush => {
                self.write(Vec::new());
                Answer::Nothing
            }
            Op::Restart { graceful } => {
                if graceful {
                    self.write(Vec::new());
                }
                self.lazy.clear();
                self.pruned.clear();
                // Documented (`SeatTable::load_extended`, docs/SERVER.md): every stored row
                // is kept for at least one more lease from the start, because renewals are
                // written lazily. Rows whose delete was lazy and lost come back with it.
                let floor = self.now + LEASE;
                self.mem = self
                    .disk
                    .iter()
                    .map(|(id, s)| {
                        let mut s = s.clone();
                        // A borrowed seat keeps its end.
                        if !s.borrowed {
                            s.expires = s.expires.max(floor);
                        }
                        (*id, s)
                    })
                    .collect();
                // One whose end passed while the server was down is dropped at the start
                // (its row's `Delete` comes out of the next sweep).
                let now = self.now;
                let ended: Vec<usize> = self
                    .mem
                    .iter()
                    .filter(|(_, s)| s.expires <= now)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ended {
                    self.mem.remove(&id);
                    self.pruned.insert(id);
                }
                Answer::Nothing
            }
            Op::Step { .. } | Op::StepToLeaseEnd { .. } => Answer::Nothing,
        }
    }

    fn acquire(
        &mut self,
        op: &Op,
        seat: usize,
        lic: usize,
        machine: usize,
        exclusive: bool,
        features: usize,
    ) -> Answer {
        let cfg = self.lics[lic].clone();
        // The license itself first: features, expiry, VM policy.
        if FEATURES[features] & !LICENSED != 0 {
            return Answer::FeatureMissing;
        }
        if let Some(e) = cfg.expiry.map(|s| T0 / 1000 + s)
            && self.now / 1000 >= e
        {
            return Answer::Expired { expiry: e };
        }
        if cfg.vm_deny && VIRTUAL[machine] {
            return Answer::VmNotAllowed;
        }
        self.prune();
        // A seat id is its holder's: another license's or another client's is refused, and
        // a borrowed seat's to anyone.
        if let Some(own) = self.mem.get(&seat)
            && (own.lic != lic || own.machine != machine || own.borrowed)
        {
            return Answer::InvalidArgument;
        }
        let others: Vec<&MSeat> = self
            .mem
            .iter()
            .filter(|(id, s)| **id != seat && s.lic == lic)
            .map(|(_, s)| s)
            .collect();
        // An exclusive holder blocks everyone else; an exclusive seat needs an idle license.
        if others.iter().any(|s| s.exclusive) {
            return Answer::ExclusiveDenied;
        }
        if exclusive && (!cfg.exclusive_allowed || !others.is_empty()) {
            return Answer::ExclusiveDenied;
        }
        // At most `quantity` distinct units; a seat of a unit that holds a slot shares it.
        let unit = self.unit(op);
        let units: BTreeSet<&Unit> = others.iter().map(|s| &s.unit).collect();
        if !units.contains(&unit) && units.len() >= cfg.quantity as usize {
            return Answer::NoSeat {
                quantity: cfg.quantity,
            };
        }
        // Granted (again, for the same seat id: idempotent), with a fresh lease.
        self.mem.insert(
            seat,
            MSeat {
                lic,
                unit,
                machine,
                exclusive,
                expires: self.now + LEASE,
                borrowed: false,
            },
        );
        self.pruned.remove(&seat);
        Answer::Granted {
            in_use: self.in_use(lic),
        }
    }

    /// A borrow (docs/SERVER.md, Borrowing): the license's rules, a seat id not in use, no
    /// exclusive holder, a slot free; held until its end.
    fn borrow(
        &mut self,
        seat: usize,
        lic: usize,
        machine: usize,
        features: usize,
        secs: u64,
    ) -> Answer {
        let cfg = self.lics[lic].clone();
        if FEATURES[features] & !LICENSED != 0 {
            return Answer::FeatureMissing;
        }
        if let Some(e) = cfg.expiry.map(|s| T0 / 1000 + s)
            && self.now / 1000 >= e
        {
            return Answer::Expired { expiry: e };
        }
        if cfg.vm_deny && VIRTUAL[machine] {
            return Answer::VmNotAllowed;
        }
        self.prune();
        if self.mem.contains_key(&seat) {
            return Answer::InvalidArgument;
        }
        let others: Vec<&MSeat> = self.mem.values().filter(|s| s.lic == lic).collect();
        if others.iter().any(|s| s.exclusive) {
            return Answer::ExclusiveDenied;
        }
        let units: BTreeSet<&Unit> = others.iter().map(|s| &s.unit).collect();
        if units.len() >= cfg.quantity as usize {
            return Answer::NoSeat {
                quantity: cfg.quantity,
            };
        }
        self.mem.insert(
            seat,
            MSeat {
                lic,
                unit: Unit::Borrowed(seat),
                machine,
                exclusive: false,
                expires: (self.now / 1000 + secs) * 1000,
                borrowed: true,
            },
        );
        self.pruned.remove(&seat);
        Answer::Granted {
            in_use: self.in_use(lic),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The system under test

/// A seat table and its SQLite file, driven as the server drives them.
struct Server {
    dir: tempfile::TempDir,
    generation: u32,
    durability: Durability,
    store: Option<SqliteStore>,
    table: SeatTable,
    lazy: BTreeMap<SeatId, Change>,
    lics: Vec<License>,
}

fn change_id(c: &Change) -> SeatId {
    match c {
        Change::Upsert(r) => r.seat_id,
        Change::Delete(id) => *id,
    }
}

impl Server {
    fn start(lics: Vec<License>, fsync: bool) -> Self {
        // tmpfs when there is one: a case writes the file a few dozen times.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new()
                .prefix("tessera-model-")
                .tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary folder");
        let durability = if fsync {
            Durability::PowerLoss
        } else {
            Durability::ProcessCrash
        };
        let store = SqliteStore::open_with(&dir.path().join("seats-0.db"), durability)
            .expect("a new seat table file");
        Server {
            dir,
            generation: 0,
            durability,
            store: Some(store),
            table: SeatTable::new(),
            lazy: BTreeMap::new(),
            lics,
        }
    }

    fn db(&self, generation: u32) -> PathBuf {
        self.dir.path().join(format!("seats-{generation}.db"))
    }

    fn store(&mut self) -> &mut SqliteStore {
        self.store.as_mut().expect("the store is open")
    }

    /// The committer's transaction: the lazy changes first, then `changes`.
    fn write(&mut self, changes: Vec<Change>) {
        let mut all: Vec<Change> = std::mem::take(&mut self.lazy).into_values().collect();
        all.extend(changes);
        if !all.is_empty() {
            self.store().commit(&all).expect("the seat table commits");
        }
    }

    fn write_lazy(&mut self, changes: Vec<Change>) {
        for c in changes {
            self.lazy.insert(change_id(&c), c);
        }
    }

    fn host(&self, op: &Op) -> HostInfo {
        let Op::Acquire {
            machine,
            session,
            ns,
            pid,
            claim,
            ..
        } = *op
        else {
            unreachable!()
        };
        HostInfo {
            machine: if VIRTUAL[machine] {
                MachineKind::Virtual(Hypervisor::Kvm)
            } else {
                MachineKind::Physical
            },
            hostname: format!("machine-{machine}"),
            station: [claim; 32],
            session: SESSIONS[session].into(),
            pid: PIDS[pid],
            pid_namespace: PID_NAMESPACES[ns],
        }
    }

    /// One step at `now`; the answer and, for a grant, the row granted.
    fn step(&mut self, op: &Op, now: u64) -> (Answer, Option<SeatRow>) {
        match *op {
            Op::Acquire {
                seat,
                lic,
                machine,
                exclusive,
                features,
                ..
            } => {
                let host = self.host(op);
                let license = self.lics[lic].clone();
                let spec = AcquireSpec {
                    seat_id: seat_id(seat),
                    license: &license,
                    host: &host,
                    client: host_key(machine),
                    exclusive,
                    features: FEATURES[features],
                    now_ms: now,
                    lease_ms: LEASE,
                };
                let granted = self.table.acquire(&spec);
                let mut changes = self.table.expire(now);
                match granted {
                    Ok((row, change, in_use)) => {
                        changes.push(change);
                        self.write(changes);
                        (Answer::Granted { in_use }, Some(row))
                    }
                    Err(e) => {
                        self.write_lazy(changes);
                        (answer_of(&Err(e)), None)
                    }
                }
            }
            Op::Renew { seats, machine, .. } => {
                let ids: Vec<SeatId> = (0..SEATS)
                    .filter(|i| seats & (1 << i) != 0)
                    .map(seat_id)
                    .collect();
                let (changes, lost) = self.table.renew(&ids, &host_key(machine), now, LEASE);
                let renewed = changes.iter().map(|c| seat_index(&change_id(c))).collect();
                self.write_lazy(changes);
                let lost = lost.iter().map(seat_index).collect();
                (Answer::Renewed { renewed, lost }, None)
            }
            Op::Release { seat, machine, .. } => {
                let row = self.table.release_row(&seat_id(seat), &host_key(machine));
                if let Some(r) = &row {
                    assert_eq!(r.seat_id, seat_id(seat), "release gives back its own row");
                    self.write(vec![Change::Delete(r.seat_id)]);
                }
                (Answer::Gone(row.is_some()), None)
            }
            Op::Revoke { seat } => {
                let change = self.table.revoke(&seat_id(seat), now);
                let gone = change.is_some();
                if let Some(c) = change {
                    self.write(vec![c]);
                }
                (Answer::Gone(gone), None)
            }
            Op::Borrow {
                seat,
                lic,
                machine,
                features,
                secs,
            } => {
                let license = self.lics[lic].clone();
                let kind = if VIRTUAL[machine] {
                    MachineKind::Virtual(Hypervisor::Kvm)
                } else {
                    MachineKind::Physical
                };
                let spec = BorrowSpec {
                    seat_id: seat_id(seat),
                    license: &license,
                    machine: &kind,
                    client: host_key(machine),
                    features: FEATURES[features],
                    now_ms: now,
                };
                let record = std::sync::Arc::new(Borrowed {
                    borrower_key: [machine as u8; 32],
                    borrower_serial: format!("SW-LAPTOP-{machine}"),
                    hostname: format!("machine-{machine}"),
                    user: "uid:1000/1".into(),
                    issued_at: now / 1000,
                    until: now / 1000 + secs,
                    grant: vec![seat as u8],
                    certificate: vec![1],
                });
                let lent = self.table.borrow(&spec, record);
                let mut changes = self.table.expire(now);
                match lent {
                    Ok((row, change, in_use)) => {
                        changes.push(change);
                        self.write(changes);
                        (Answer::Granted { in_use }, Some(row))
                    }
                    Err(e) => {
                        self.write_lazy(changes);
                        (answer_of(&Err(e)), None)
                    }
                }
            }
            Op::GiveBack { seat } => {
                let row = self.table.give_back(&seat_id(seat), now);
                if let Some(r) = &row {
                    self.write(vec![Change::Delete(r.seat_id)]);
                }
                (Answer::Gone(row.is_some()), None)
            }
            Op::Sweep => {
                let changes = self.table.expire(now);
                let mut swept = BTreeSet::new();
                for c in &changes {
                    match c {
                        Change::Delete(id) => {
                            swept.insert(seat_index(id));
                        }
                        Change::Upsert(r) => panic!("a sweep upserts {r:?}"),
                    }
                }
                if !changes.is_empty() {
                    self.write(changes);
                }
                (Answer::Swept(swept), None)
            }
            Op::Flush => {
                self.write(Vec::new());
                (Answer::Nothing, None)
            }
            Op::Restart { graceful } => {
                if graceful {
                    self.write(Vec::new());
                }
                // A killed server leaves its file as the OS has it: copy the database and
                // its write-ahead log (what a SIGKILL leaves; SQLite recovers the log at the
                // next open), then drop the table and the connection.
                let (old, new) = (self.db(self.generation), self.db(self.generation + 1));
                for suffix in ["", "-wal"] {
                    let from = PathBuf::from(format!("{}{suffix}", old.display()));
                    let to = PathBuf::from(format!("{}{suffix}", new.display()));
                    if from.exists() {
                        std::fs::copy(&from, &to).expect("copying the crash image");
                    }
                }
                self.lazy.clear();
                self.table = SeatTable::new();
                self.store = None;
                self.generation += 1;
                // The server's start: load every row, each kept for one more lease.
                let mut store =
                    SqliteStore::open_with(&new, self.durability).expect("reopening the file");
                let rows = store.load().expect("loading the seat table");
                self.table.load_extended(rows, now, LEASE);
                self.store = Some(store);
                (Answer::Nothing, None)
            }
            Op::Step { .. } | Op::StepToLeaseEnd { .. } => (Answer::Nothing, None),
        }
    }
}

fn seat_index(id: &SeatId) -> usize {
    id[15] as usize
}

// ---------------------------------------------------------------------------------------
// Comparison

/// Unit keys seen so far and the model's units they stand for: the same key must always be
/// the same unit, and the same unit the same key.
#[derive(Default)]
struct Keys {
    to_unit: HashMap<(usize, String), Unit>,
    to_key: HashMap<(usize, Unit), String>,
}

impl Keys {
    fn check(&mut self, lic: usize, key: &str, unit: &Unit) -> Result<(), String> {
        let u = self
            .to_unit
            .entry((lic, key.to_string()))
            .or_insert_with(|| unit.clone());
        if u != unit {
            return Err(format!("unit key {key} stands for {u:?} and for {unit:?}"));
        }
        let k = self
            .to_key
            .entry((lic, unit.clone()))
            .or_insert_with(|| key.to_string());
        if k != key {
            return Err(format!("unit {unit:?} has keys {k} and {key}"));
        }
        Ok(())
    }
}

fn lic_index(id: &[u8; 16]) -> usize {
    (id[0] - 0xA0) as usize
}

/// Compares a real row with the model's seat.
fn same_row(keys: &mut Keys, what: &str, row: &SeatRow, m: &MSeat) -> Result<(), String> {
    let lic = lic_index(&row.license_id);
    if lic != m.lic
        || row.client != host_key(m.machine)
        || row.exclusive != m.exclusive
        || row.expires_ms != m.expires
        || row.is_borrowed() != m.borrowed
    {
        return Err(format!("{what}: real {row:?}, model {m:?}"));
    }
    keys.check(lic, &row.unit_key, &m.unit)
        .map_err(|e| format!("{what}: {e}"))
}

fn same_rows<'a>(
    keys: &mut Keys,
    what: &str,
    real: impl Iterator<Item = &'a SeatRow>,
    model: &BTreeMap<usize, MSeat>,
) -> Result<(), String> {
    let real: BTreeMap<usize, &SeatRow> = real.map(|r| (seat_index(&r.seat_id), r)).collect();
    let ids: BTreeSet<&usize> = real.keys().collect();
    let mids: BTreeSet<&usize> = model.keys().collect();
    if ids != mids {
        return Err(format!("{what}: real seats {ids:?}, model {mids:?}"));
    }
    for (id, r) in &real {
        same_row(keys, &format!("{what}, seat {id}"), r, &model[id])?;
    }
    Ok(())
}

/// Everything after a step: the table, the file, the counts, the invariant.
fn compare_state(s: &mut Server, m: &Model, keys: &mut Keys) -> Result<(), String> {
    same_rows(keys, "table", s.table.rows(), &m.mem)?;
    let stored = s.store().load().map_err(|e| format!("loading: {e}"))?;
    same_rows(keys, "file", stored.iter(), &m.disk)?;
    for (lic, cfg) in m.lics.iter().enumerate() {
        let real = s.table.in_use(&license_id(lic), m.now);
        let model = m.in_use(lic);
        if real != model {
            return Err(format!("license {lic}: {real} in use, model {model}"));
        }
        // The invariant, on the real rows alone.
        let live: Vec<&SeatRow> = s
            .table
            .rows()
            .filter(|r| r.license_id == license_id(lic) && r.expires_ms > m.now)
            .collect();
        let units: BTreeSet<&str> = live.iter().map(|r| r.unit_key.as_str()).collect();
        if units.len() > cfg.quantity as usize {
            return Err(format!(
                "license {lic}: {} units in use, quantity {}",
                units.len(),
                cfg.quantity
            ));
        }
        if live.iter().any(|r| r.exclusive) && live.len() > 1 {
            return Err(format!(
                "license {lic}: an exclusive seat beside {} other(s)",
                live.len() - 1
            ));
        }
    }
    Ok(())
}

/// How often each kind of answer came (to see that the cases reach every rule).
pub type Tally = BTreeMap<&'static str, u64>;

fn kind(a: &Answer) -> &'static str {
    match a {
        Answer::Granted { .. } => "granted",
        Answer::FeatureMissing => "feature missing",
        Answer::Expired { .. } => "license expired",
        Answer::VmNotAllowed => "VM not allowed",
        Answer::InvalidArgument => "seat id of another",
        Answer::ExclusiveDenied => "exclusive denied",
        Answer::NoSeat { .. } => "no seat",
        Answer::Renewed { lost, .. } if lost.is_empty() => "renewed",
        Answer::Renewed { .. } => "renewal lost a seat",
        Answer::Gone(true) => "released/revoked",
        Answer::Gone(false) => "release/revoke found none",
        Answer::Swept(s) if s.is_empty() => "sweep deleted none",
        Answer::Swept(_) => "sweep deleted rows",
        Answer::Nothing => "clock, flush or restart",
    }
}

/// Runs one case; `Err` names the first disagreement.
pub fn run_case(case: &Case) -> Result<(), String> {
    run_case_counted(case, &mut Tally::new())
}

fn run_case_counted(case: &Case, tally: &mut Tally) -> Result<(), String> {
    let (cfgs, fsync, ops) = case;
    let lics: Vec<License> = cfgs
        .iter()
        .enumerate()
        .map(|(n, c)| license(n, c))
        .collect();
    let mut server = Server::start(lics, *fsync);
    let mut model = Model::new(cfgs.clone());
    let mut keys = Keys::default();
    for (i, op) in ops.iter().enumerate() {
        // A step "by the holder" names the client holding the seat now, if any.
        let holder = |seat: usize| model.mem.get(&seat).map(|s| s.machine);
        let resolved = match *op {
            Op::Renew {
                seats,
                machine,
                by_holder: true,
            } => Op::Renew {
                seats,
                machine: holder(seats.trailing_zeros() as usize).unwrap_or(machine),
                by_holder: false,
            },
            Op::Release {
                seat,
                machine,
                by_holder: true,
            } => Op::Release {
                seat,
                machine: holder(seat).unwrap_or(machine),
                by_holder: false,
            },
            ref other => other.clone(),
        };
        let op = &resolved;
        match *op {
            Op::Step { ms } => model.now += ms,
            Op::StepToLeaseEnd { delta } => {
                let next = model
                    .mem
                    .values()
                    .map(|s| s.expires)
                    .filter(|e| *e > model.now)
                    .min();
                if let Some(e) = next {
                    model.now = model.now.max(e.saturating_add_signed(delta.into()));
                }
            }
            _ => {}
        }
        let now = model.now;
        let (real, row) = server.step(op, now);
        let expected = model.step(op);
        let at = |e: String| format!("step {i} ({op:?}) at T0+{} ms: {e}", now - T0);
        if real != expected {
            return Err(at(format!("real {real:?}, model {expected:?}")));
        }
        *tally.entry(kind(&real)).or_default() += 1;
        match (op, &real) {
            (Op::Borrow { .. }, Answer::Granted { .. }) => {
                *tally.entry("borrowed").or_default() += 1
            }
            (Op::GiveBack { .. }, Answer::Gone(true)) => {
                *tally.entry("given back").or_default() += 1
            }
            _ => {}
        }
        if let (Some(row), Op::Acquire { seat, .. } | Op::Borrow { seat, .. }) = (row, op) {
            same_row(&mut keys, "granted row", &row, &model.mem[seat]).map_err(at)?;
        }
        compare_state(&mut server, &model, &mut keys).map_err(at)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The properties

/// Seat-table cases per run, for all four units together.
fn table_cases() -> u32 {
    crate::cases_from_env("TESSERA_MODEL_CASES", 2_000)
}

fn check_unit(unit: CountingUnit) {
    let cases = table_cases().div_ceil(4).max(1);
    let mut runner = TestRunner::new(Config {
        cases,
        // Failures are kept as tests of their own (below), not in a file beside the tests.
        failure_persistence: None,
        ..Config::default()
    });
    let tally = std::cell::RefCell::new(Tally::new());
    let result = runner.run(&case_strategy(unit), |case| {
        run_case_counted(&case, &mut tally.borrow_mut()).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {
            let tally = tally.into_inner();
            eprintln!(
                "model check, {unit} seats: {cases} cases, {} steps, 0 disagreements; {tally:?}",
                tally.values().sum::<u64>()
            );
            // The cases reach the rules that matter (a generator that stopped producing
            // refusals would pass vacuously).
            if cases >= 500 {
                for k in [
                    "granted",
                    "no seat",
                    "exclusive denied",
                    "seat id of another",
                    "borrowed",
                    "given back",
                ] {
                    assert!(tally.get(k).is_some_and(|n| *n > 0), "no {k} in {tally:?}");
                }
            }
        }
        Err(TestError::Fail(why, (lics, fsync, ops))) => panic!(
            "{unit} seats disagree with the model: {why}\nminimal case: licenses {lics:#?}\n\
             fsync {fsync}\nsteps {ops:#?}"
        ),
        Err(e) => panic!("{unit} seats: {e}"),
    }
}

#[test]
fn station_seats_agree_with_the_model() {
    check_unit(CountingUnit::Station);
}

#[test]
fn session_seats_agree_with_the_model() {
    check_unit(CountingUnit::Session);
}

#[test]
fn process_seats_agree_with_the_model() {
    check_unit(CountingUnit::Process);
}

#[test]
fn handle_seats_agree_with_the_model() {
    check_unit(CountingUnit::Handle);
}

/// The harness itself can tell a wrong answer: a model with one seat too many disagrees
/// with the table at the first refusal.
#[test]
fn a_model_with_a_wrong_quantity_disagrees() {
    let lic = LicCfg {
        unit: CountingUnit::Station,
        quantity: 1,
        exclusive_allowed: false,
        vm_deny: false,
        expiry: None,
    };
    let acquire = |seat, machine| Op::Acquire {
        seat,
        lic: 0,
        machine,
        session: 0,
        ns: 0,
        pid: 0,
        claim: 0,
        exclusive: false,
        features: 0,
    };
    let ops = vec![acquire(0, 0), acquire(1, 1)];
    let right = (vec![lic.clone(), lic.clone()], false, ops.clone());
    assert_eq!(run_case(&right), Ok(()));
    // The same steps, with the model told the license has two seats.
    let lics: Vec<License> = right
        .0
        .iter()
        .enumerate()
        .map(|(n, c)| license(n, c))
        .collect();
    let mut server = Server::start(lics, false);
    let mut wrong = lic;
    wrong.quantity = 2;
    let mut model = Model::new(vec![wrong.clone(), wrong]);
    assert_eq!(server.step(&ops[0], T0).0, model.step(&ops[0]));
    let (real, _) = server.step(&ops[1], T0);
    assert_eq!(real, Answer::NoSeat { quantity: 1 });
    assert_eq!(model.step(&ops[1]), Answer::Granted { in_use: 2 });
}
