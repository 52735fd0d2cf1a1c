//! The exported functions and the types they exchange.

use std::ffi::{CStr, c_char};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use zeroize::Zeroizing;

use super::handles::Table;
use super::status::{self, tessera_status};
use super::{boundary, boundary_value, check_ptr, input, last_error_ptr, output};
use crate::cipher::{self, Mode};
use crate::client::{Seat, Session, SessionOptions, SourceKind};
use crate::container::ContainerKind;
use crate::dongle::client::DongleMode;
use crate::{Error, Result};

/// The ABI version. It changes only when an existing signature, struct prefix or constant
/// changes incompatibly; bindings refuse a library whose `tessera_abi_version()` differs.
pub const TESSERA_ABI_VERSION: u32 = 1;

/// A session: the app's open handle to the runtime. 0 is never a valid handle.
pub type tessera_session = u64;
/// A held seat. 0 is never a valid handle.
pub type tessera_seat = u64;

/// Source bit: a USB dongle on this machine.
pub const TESSERA_SOURCE_DONGLE: u32 = 1;
/// Source bit: a software container on this machine.
pub const TESSERA_SOURCE_SOFTWARE: u32 = 2;
/// Source bit: a license server on the network.
pub const TESSERA_SOURCE_NETWORK: u32 = 4;
/// All sources (also what 0 means).
pub const TESSERA_SOURCE_ALL: u32 = 7;

/// `tessera_acquire` flag: take the license exclusively (no other seat may be held, and
/// none can be taken while this one is held). The license must allow it.
pub const TESSERA_ACQUIRE_EXCLUSIVE: u32 = 1;

/// `tessera_encrypt` flag: derived mode (the default): the container derives a per-message
/// key and the app encrypts at memory speed.
pub const TESSERA_CRYPT_DERIVED: u32 = 0;
/// `tessera_encrypt` flag: direct mode: the data is encrypted inside the container (for a
/// seat on a license server: in the app under the seat's own seat key, as derived mode is;
/// see `tessera_encrypt`).
pub const TESSERA_CRYPT_DIRECT: u32 = 1;
/// Bytes a ciphertext adds to its plaintext: its 40-byte header and 16-byte tag (see
/// `tessera_encrypt`).
pub const TESSERA_CIPHERTEXT_OVERHEAD: usize = 56;
/// Length of a publisher public key (Ed25519).
pub const TESSERA_PUBLISHER_KEY_LEN: usize = 32;
/// Size of `tessera_seat_details.container_serial` and `.server`, NUL included.
pub const TESSERA_SERIAL_MAX: usize = 64;

/// Counting unit: one machine, physical or virtual.
pub const TESSERA_UNIT_STATION: u32 = 1;
/// Counting unit: one login or terminal-server session.
pub const TESSERA_UNIT_SESSION: u32 = 2;
/// Counting unit: one process.
pub const TESSERA_UNIT_PROCESS: u32 = 3;
/// Counting unit: each acquire.
pub const TESSERA_UNIT_HANDLE: u32 = 4;

/// Transport: none (not a dongle).
pub const TESSERA_TRANSPORT_NONE: u32 = 0;
/// Transport: a dongle in HID mode.
pub const TESSERA_TRANSPORT_HID: u32 = 1;
/// Transport: a dongle in mass-storage mode.
pub const TESSERA_TRANSPORT_MSD: u32 = 2;
/// Transport: a dongle on raw USB bulk endpoints.
pub const TESSERA_TRANSPORT_USB: u32 = 3;

/// Container kind: a software container.
pub const TESSERA_CONTAINER_SOFTWARE: u32 = 1;
/// Container kind: a dongle.
pub const TESSERA_CONTAINER_DONGLE: u32 = 2;

/// Options for `tessera_open`. Initialize with `tessera_open_options_init`, then set
/// `vendor_id` and `publisher_key`. The struct only ever grows at the end; `struct_size`
/// tells the library which version the app was compiled against.
#[repr(C)]
#[derive(Debug)]
pub struct tessera_open_options {
    /// `sizeof(tessera_open_options)`, set by `tessera_open_options_init`.
    pub struct_size: u32,
    /// The publisher's vendor id.
    pub vendor_id: u32,
    /// The publisher's Ed25519 public key (`TESSERA_PUBLISHER_KEY_LEN` bytes), compiled into
    /// the app. Borrowed for the duration of `tessera_open` only.
    pub publisher_key: *const u8,
    /// Length of `publisher_key`; must be `TESSERA_PUBLISHER_KEY_LEN`.
    pub publisher_key_len: usize,
    /// Allowed license sources, `TESSERA_SOURCE_*` bits; 0 means all.
    pub sources: u32,
    /// How long any one operation may wait, in milliseconds; 0 means the default (5000).
    pub timeout_ms: u32,
    /// License servers, comma-separated `host[:port]`, NUL-terminated; NULL means the
    /// `TESSERA_SERVERS` environment variable. Borrowed for the duration of `tessera_open`.
    pub servers: *const c_char,
}

/// What `tessera_seat_info` reports (a struct named apart from the function, as C requires). Set `struct_size` to `sizeof(tessera_seat_details)`
/// before the call; the library fills in at most that many bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tessera_seat_details {
    /// `sizeof(tessera_seat_details)`, set by the caller.
    pub struct_size: u32,
    /// The publisher.
    pub vendor_id: u32,
    /// The product.
    pub product_code: u32,
    /// Feature bits the license grants.
    pub features: u32,
    /// The license quantity.
    pub quantity: u32,
    /// Seats of the license in use now (this one included).
    pub seats_in_use: u32,
    /// Expiry in seconds since the Unix epoch; 0 when the license is perpetual.
    pub expiry: u64,
    /// Where the license is: one `TESSERA_SOURCE_*` bit.
    pub source: u32,
    /// What one seat covers: `TESSERA_UNIT_*`.
    pub counting_unit: u32,
    /// The container kind: `TESSERA_CONTAINER_*`.
    pub container_kind: u32,
    /// `TESSERA_ACQUIRE_EXCLUSIVE` when the seat is held exclusively; `TESSERA_SEAT_BORROWED`
    /// when it is a borrowed seat (`tessera_borrow`).
    pub flags: u32,
    /// The container serial, NUL-terminated.
    pub container_serial: [c_char; TESSERA_SERIAL_MAX],
    /// How a dongle is attached: `TESSERA_TRANSPORT_*` (`TESSERA_TRANSPORT_NONE` for a
    /// software container).
    pub transport: u32,
    /// The license server's name, NUL-terminated, for a network seat (for a borrowed seat,
    /// the server it was borrowed from); "" otherwise.
    pub server: [c_char; TESSERA_SERIAL_MAX],
}

/// `tessera_license_info.flags` bit: the license allows exclusive use
/// (`TESSERA_ACQUIRE_EXCLUSIVE`).
pub const TESSERA_LICENSE_EXCLUSIVE_ALLOWED: u32 = 1;
/// `tessera_license_info.flags` bit: a seat borrowed from a license server
/// (`tessera_borrow`), held in this machine's software container: quantity 1, usable with no
/// server until `borrowed_until`.
pub const TESSERA_LICENSE_BORROWED: u32 = 2;
/// `tessera_seat_details.flags` bit: the seat is a borrowed one (`tessera_borrow`); its
/// `expiry` is when the borrowing ends (or the license's expiry, when that comes first).
pub const TESSERA_SEAT_BORROWED: u32 = 2;

/// One license `tessera_license_list` reports. The library sets `struct_size` of each entry
/// to the bytes it filled in.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tessera_license_info {
    /// Bytes of this entry the library filled in.
    pub struct_size: u32,
    /// The publisher.
    pub vendor_id: u32,
    /// The product.
    pub product_code: u32,
    /// Feature bits the license grants.
    pub features: u32,
    /// The license quantity.
    pub quantity: u32,
    /// Seats of the license in use now: on this machine for a dongle or software container,
    /// on the server for a network license.
    pub seats_in_use: u32,
    /// Expiry in seconds since the Unix epoch; 0 when the license is perpetual.
    pub expiry: u64,
    /// Where the license is: one `TESSERA_SOURCE_*` bit.
    pub source: u32,
    /// What one seat covers: `TESSERA_UNIT_*`.
    pub counting_unit: u32,
    /// The container kind: `TESSERA_CONTAINER_*`.
    pub container_kind: u32,
    /// `TESSERA_LICENSE_*` bits.
    pub flags: u32,
    /// What `tessera_acquire` of this license would meet now, free seats aside: `TESSERA_OK`,
    /// or the verdict as a `tessera_status` value (`TESSERA_E_EXPIRED`,
    /// `TESSERA_E_VM_NOT_ALLOWED`, `TESSERA_E_CLOCK_ROLLBACK`, ...).
    pub status: i32,
    /// How a dongle is attached: `TESSERA_TRANSPORT_*`.
    pub transport: u32,
    /// The container serial, NUL-terminated.
    pub container_serial: [c_char; TESSERA_SERIAL_MAX],
    /// The license server's name, NUL-terminated, for a network license; "" otherwise. For
    /// a borrowed seat, the server it was borrowed from.
    pub server: [c_char; TESSERA_SERIAL_MAX],
    /// For a borrowed seat (`TESSERA_LICENSE_BORROWED`): when it ends, in seconds since the
    /// Unix epoch; 0 otherwise. Added after the first version of the struct: an entry whose
    /// `struct_size` does not reach it was not filled in this far.
    pub borrowed_until: u64,
}

struct SessionEntry {
    session: Session,
}

struct SeatEntry {
    seat: Seat,
    session: tessera_session,
}

// The two tables are the library's only process-wide locks above the client layer (which
// has one: the host identity, `client::session`). Plain statics, not lazily initialized:
// a lazy initializer running in another thread at a fork would never finish in the child.
static SESSIONS: Table<SessionEntry> = Table::new(0x53, "session");
static SEATS: Table<SeatEntry> = Table::new(0x54, "seat");

/// Fork safety of the C API (`tessera.h`, "fork"). A child of a multithreaded process
/// starts with one thread, and any lock another thread of the parent held at the fork stays
/// held in the child forever. Three kinds of lock could be met by a child:
/// - the locks inside sessions and seats (a software container's lock, a seat pool's, a
///   license-server connection's): a child never takes them, because every handle it
///   inherited answers `TESSERA_E_FORKED` before its session or seat is touched, and one it
///   opens itself has fresh locks;
/// - the two handle tables: held across every fork by this prepare handler (it waits for the
///   short table operations of other threads to finish), released in parent and child;
/// - the host identity, read once per process: the same, in `client::session`.
///
/// No library code holds one table's lock while taking another lock, and the library never
/// forks (nor runs a program) while it holds one, so the prepare handler cannot deadlock
/// against a thread of the library, or against the forking thread itself.
unsafe extern "C" fn hold_tables_across_fork() {
    SESSIONS.hold_across_fork();
    SEATS.hold_across_fork();
}

fn register_fork_handlers() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    crate::util::process::at_fork(&REGISTERED, hold_tables_across_fork);
}

/// Writes `v` through `p` (checked non-NULL by the caller).
fn put<T>(p: *mut T, v: T) {
    // SAFETY: every caller has checked `p` for NULL; the C caller promises it is writable.
    unsafe { p.write(v) }
}

/// Writes bytes into a caller buffer with the size-query convention.
fn emit(data: &[u8], out: *mut u8, cap: usize, out_len: *mut usize) -> Result<()> {
    check_ptr!(out_len, "out_len");
    // SAFETY: the C caller promises `out` has `cap` writable bytes.
    let buf = unsafe { output(out, cap, "out")? };
    if buf.len() < data.len() {
        put(out_len, data.len());
        return Err(Error::BufferTooSmall { needed: data.len() });
    }
    buf[..data.len()].copy_from_slice(data);
    put(out_len, data.len());
    Ok(())
}

/// Whether the byte ranges `[a, a + a_len)` and `[b, b + b_len)` share a byte.
fn overlaps(a: *const u8, a_len: usize, b: *const u8, b_len: usize) -> bool {
    if a.is_null() || b.is_null() || a_len == 0 || b_len == 0 {
        return false;
    }
    let (a, b) = (a as usize, b as usize);
    a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

/// The shape encrypt and decrypt share: check the seat handle first (a released seat is
/// INVALID_HANDLE whatever else is wrong), then the buffers, answer a size query (the size
/// `need` gives for the input) with `TESSERA_E_BUFFER_TOO_SMALL`, then run `op` on the seat.
///
/// `input` and `out` may overlap (in-place use, `out == input`, is what C callers expect of
/// an AEAD). Rust must never hold a shared and a mutable slice over the same bytes, so an
/// overlapping call works on copies: the input is copied first, `op` writes into a scratch
/// buffer, and only a success is copied into `out`; a failure leaves `out` (and so the
/// caller's input) as it was. Both copies are zeroed when dropped.
fn crypt(
    seat: tessera_seat,
    (input, input_len): (*const u8, usize),
    (out, out_cap, out_len): (*mut u8, usize, *mut usize),
    need: impl FnOnce(&[u8]) -> Result<usize>,
    op: impl FnOnce(&Seat, &[u8], &mut [u8]) -> Result<usize>,
) -> Result<()> {
    let e = SEATS.get(seat)?;
    check_ptr!(out_len, "out_len");
    if overlaps(input, input_len, out, out_cap) {
        // SAFETY: the C caller promises `input` has `input_len` readable bytes; the slice
        // lives only until it is copied, before any mutable view of `out` exists.
        let inp = Zeroizing::new(unsafe { super::input(input, input_len, "input")? }.to_vec());
        let need = need(&inp)?;
        if out_cap < need {
            put(out_len, need);
            return Err(Error::BufferTooSmall { needed: need });
        }
        let mut scratch = Zeroizing::new(vec![0u8; need]);
        let n = op(&e.seat, &inp, &mut scratch)?;
        // SAFETY: the caller promises `out` has `out_cap >= need >= n` writable bytes; no
        // other view of them is alive.
        let buf = unsafe { output(out, out_cap, "out")? };
        buf[..n].copy_from_slice(&scratch[..n]);
        put(out_len, n);
        return Ok(());
    }
    // SAFETY: the C caller promises the buffers are as large as they say; they do not
    // overlap (checked above).
    let (inp, buf) = unsafe {
        (
            super::input(input, input_len, "input")?,
            output(out, out_cap, "out")?,
        )
    };
    let need = need(inp)?;
    if buf.len() < need {
        put(out_len, need);
        return Err(Error::BufferTooSmall { needed: need });
    }
    let n = op(&e.seat, inp, buf)?;
    put(out_len, n);
    Ok(())
}

/// Fills `options` with the defaults: all sources, a 5-second timeout, zero/NULL for the
/// rest, and `struct_size = options_size`. Pass `sizeof(tessera_open_options)` of the header
/// the app was built with: the library writes exactly `options_size` bytes, so an app built
/// against an older (smaller) or newer (larger) header is never written past its struct.
/// Returns `TESSERA_E_INVALID_ARGUMENT` when `options` is NULL or `options_size` is smaller
/// than the first version of the struct or larger than 4096.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_open_options_init(
    options: *mut tessera_open_options,
    options_size: usize,
) -> tessera_status {
    boundary(|| {
        check_ptr!(options, "options");
        let ours = size_of::<tessera_open_options>();
        if !(OPTIONS_V1_SIZE..=OPTIONS_MAX_SIZE).contains(&options_size) {
            return Err(Error::InvalidArgument(format!(
                "options_size {options_size} is not a tessera_open_options size \
                 (pass sizeof(tessera_open_options))"
            )));
        }
        let defaults = tessera_open_options {
            struct_size: options_size as u32,
            vendor_id: 0,
            publisher_key: std::ptr::null(),
            publisher_key_len: 0,
            sources: TESSERA_SOURCE_ALL,
            timeout_ms: 5000,
            servers: std::ptr::null(),
        };
        // SAFETY: non-NULL, and the caller promises `options_size` writable bytes. The
        // first min(options_size, ours) bytes are our defaults; a larger (newer) struct's
        // tail is zeroed, which is every newer field's "not set".
        unsafe {
            let dst = options as *mut u8;
            std::ptr::write_bytes(dst, 0, options_size);
            std::ptr::copy_nonoverlapping(
                &defaults as *const tessera_open_options as *const u8,
                dst,
                options_size.min(ours),
            );
        }
        Ok(())
    })
}

/// The size of the first `tessera_open_options` (ABI 1): every later version starts with it.
const OPTIONS_V1_SIZE: usize = size_of::<tessera_open_options>();
// The defaults are copied as bytes: the struct must have no padding (4+4+8+8+4+4+8).
const _: () = assert!(size_of::<tessera_open_options>() == 40);
// A license entry is copied as bytes too: no padding (6*4 + 8 + 6*4 + 2*64 + 8).
const _: () = assert!(size_of::<tessera_license_info>() == 192);
/// The size of the first `tessera_license_info` (before `borrowed_until`): apps built
/// against it pass it as `entry_size`.
const LICENSE_INFO_V1_SIZE: usize = 184;

/// The largest `struct_size` accepted: anything beyond is a wrong value, not a struct.
const OPTIONS_MAX_SIZE: usize = 4096;

/// The options an app passed, read according to its `struct_size`.
fn read_options(options: *const tessera_open_options) -> Result<SessionOptions> {
    check_ptr!(options, "options");
    // SAFETY: non-NULL; the caller promises at least `struct_size` readable bytes, and we
    // read `struct_size` first.
    let size = unsafe { std::ptr::addr_of!((*options).struct_size).read_unaligned() } as usize;
    let ours = size_of::<tessera_open_options>();
    // The same bounds as tessera_open_options_init: no struct version is smaller than the
    // first.
    if size < OPTIONS_V1_SIZE {
        return Err(Error::InvalidArgument(format!(
            "options.struct_size {size} is smaller than any tessera_open_options \
             (call tessera_open_options_init)"
        )));
    }
    if size > ours {
        if size > OPTIONS_MAX_SIZE {
            return Err(Error::InvalidArgument(format!(
                "options.struct_size {size} is implausible"
            )));
        }
        // SAFETY: the caller says the struct has `size` bytes.
        let tail =
            unsafe { std::slice::from_raw_parts((options as *const u8).add(ours), size - ours) };
        if tail.iter().any(|b| *b != 0) {
            return Err(Error::Unsupported(
                "options set fields this library version does not know".into(),
            ));
        }
    }
    let mut o = tessera_open_options {
        struct_size: 0,
        vendor_id: 0,
        publisher_key: std::ptr::null(),
        publisher_key_len: 0,
        sources: 0,
        timeout_ms: 0,
        servers: std::ptr::null(),
    };
    // SAFETY: copies min(size, ours) bytes of the caller's struct into ours (same layout
    // prefix); fields beyond the caller's size keep their zero defaults.
    unsafe {
        std::ptr::copy_nonoverlapping(
            options as *const u8,
            &mut o as *mut _ as *mut u8,
            size.min(ours),
        );
    }
    if o.vendor_id == 0 {
        return Err(Error::InvalidArgument("options.vendor_id is 0".into()));
    }
    // SAFETY: the caller promises publisher_key points to publisher_key_len bytes.
    let key = unsafe {
        input(
            o.publisher_key,
            o.publisher_key_len,
            "options.publisher_key",
        )?
    };
    let key: [u8; 32] = key.try_into().map_err(|_| {
        Error::InvalidArgument(format!(
            "options.publisher_key must be {TESSERA_PUBLISHER_KEY_LEN} bytes, not {}",
            o.publisher_key_len
        ))
    })?;
    let publisher_key = VerifyingKey::from_bytes(&key).map_err(|_| {
        Error::InvalidArgument("options.publisher_key is not an Ed25519 public key".into())
    })?;
    if o.sources & !TESSERA_SOURCE_ALL != 0 {
        return Err(Error::InvalidArgument(format!(
            "options.sources has unknown bits {:#x}",
            o.sources
        )));
    }
    let servers = if o.servers.is_null() {
        std::env::var("TESSERA_SERVERS").unwrap_or_default()
    } else {
        // SAFETY: the caller promises a NUL-terminated string.
        unsafe { CStr::from_ptr(o.servers) }
            .to_str()
            .map_err(|_| Error::InvalidArgument("options.servers is not UTF-8".into()))?
            .to_string()
    };
    let mut opts = SessionOptions::new(o.vendor_id, publisher_key);
    opts.sources = if o.sources == 0 {
        TESSERA_SOURCE_ALL
    } else {
        o.sources
    };
    opts.servers = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if o.timeout_ms != 0 {
        opts.timeout = Duration::from_millis(o.timeout_ms as u64);
    }
    Ok(opts)
}

/// Opens a session for the publisher in `options` and writes its handle to `*session`.
/// Finds the publisher's software containers on this machine; opening succeeds even when
/// there is no license yet (so the app can offer activation), and `tessera_acquire` then
/// says why there is none. Close with `tessera_close`. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_open(
    options: *const tessera_open_options,
    session: *mut tessera_session,
) -> tessera_status {
    boundary(|| {
        check_ptr!(session, "session");
        register_fork_handlers();
        let opts = read_options(options)?;
        let s = Session::open(opts)?;
        let h = SESSIONS.insert(Arc::new(SessionEntry { session: s }))?;
        put(session, h);
        Ok(())
    })
}

/// Closes a session and releases every seat it still holds. The handle is invalid after.
/// Closing a closed or unknown handle returns `TESSERA_E_INVALID_HANDLE` and does nothing.
/// In a forked child, closing a session inherited from the parent forgets the child's copy
/// of it and of its seats, releases nothing of the parent's, and returns `TESSERA_E_FORKED`.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_close(session: tessera_session) -> tessera_status {
    boundary(|| {
        let r = SESSIONS.remove(session);
        if matches!(r, Ok(_) | Err(Error::Forked(_))) {
            // In a child these are the parent's seats: dropped here, they only close the
            // child's copies of their descriptors.
            drop(SEATS.remove_where(|e| e.session == session));
        }
        r.map(drop)
    })
}

/// Acquires a seat of `product_code` whose license grants at least the `features` bits,
/// and writes its handle to `*seat`. `flags`: 0 or `TESSERA_ACQUIRE_EXCLUSIVE`. Looks in
/// the sources the session allows (dongle, then software container, then network). On
/// failure the status says why (`TESSERA_E_NO_LICENSE`, `_NO_SEAT`, `_EXPIRED`, ...) and
/// `*seat` is untouched. Release with `tessera_release`. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_acquire(
    session: tessera_session,
    product_code: u32,
    features: u32,
    flags: u32,
    seat: *mut tessera_seat,
) -> tessera_status {
    boundary(|| {
        check_ptr!(seat, "seat");
        if flags & !TESSERA_ACQUIRE_EXCLUSIVE != 0 {
            return Err(Error::InvalidArgument(format!(
                "unknown acquire flags {flags:#x}"
            )));
        }
        let s = SESSIONS.get(session)?;
        let st = s.session.acquire(
            product_code,
            features,
            flags & TESSERA_ACQUIRE_EXCLUSIVE != 0,
        )?;
        let h = insert_seat(session, st)?;
        put(seat, h);
        Ok(())
    })
}

/// Puts a seat of `session` in the table.
fn insert_seat(session: tessera_session, st: Seat) -> Result<tessera_seat> {
    let h = SEATS.insert(Arc::new(SeatEntry { seat: st, session }))?;
    // A tessera_close of this session on another thread may have swept its seats between
    // the caller's SESSIONS.get and the insert. Close removes the session before it sweeps,
    // so if the session is still there now, the sweep (if any) comes after the insert and
    // takes this seat with it; if it is gone, the seat must not outlive it.
    if SESSIONS.get(session).is_err() {
        drop(SEATS.remove(h));
        return Err(Error::InvalidHandle(
            "the session was closed while the seat was being acquired".into(),
        ));
    }
    Ok(h)
}

/// Like `tessera_acquire`, but while every seat is taken (`TESSERA_E_NO_SEAT`, or
/// `TESSERA_E_EXCLUSIVE_DENIED` because another holder has the license) waits up to
/// `timeout_ms` milliseconds for one to come free, trying again after pauses that grow from
/// 20 ms to 500 ms, instead of the app polling. When the time is up the answer is that of
/// the last try (`TESSERA_E_NO_SEAT`, ...); any other answer (`TESSERA_E_NO_LICENSE`,
/// `TESSERA_E_EXPIRED`, ...) ends the wait at once. `timeout_ms = 0` tries once. The call
/// blocks its thread; other threads may use the session meanwhile. `*seat` is written only
/// on success. A `tessera_close` of the session on another thread ends the wait within half
/// a second with `TESSERA_E_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_acquire_wait(
    session: tessera_session,
    product_code: u32,
    features: u32,
    flags: u32,
    timeout_ms: u32,
    seat: *mut tessera_seat,
) -> tessera_status {
    boundary(|| {
        check_ptr!(seat, "seat");
        if flags & !TESSERA_ACQUIRE_EXCLUSIVE != 0 {
            return Err(Error::InvalidArgument(format!(
                "unknown acquire flags {flags:#x}"
            )));
        }
        let s = SESSIONS.get(session)?;
        // A tessera_close on another thread ends the wait (within one pause).
        let closed = || {
            SESSIONS.get(session).err().map(|_| {
                Error::InvalidHandle("the session was closed while waiting for a seat".into())
            })
        };
        let st = s.session.acquire_wait_unless(
            product_code,
            features,
            flags & TESSERA_ACQUIRE_EXCLUSIVE != 0,
            Duration::from_millis(timeout_ms as u64),
            &closed,
        )?;
        let h = insert_seat(session, st)?;
        put(seat, h);
        Ok(())
    })
}

/// Lists the licenses of the session's publisher that its sources hold (software
/// containers, dongles, the license server), without taking a seat: product, features,
/// expiry, quantity, seats in use, and what an acquire would meet. Licenses the
/// publisher's key does not verify are not listed.
///
/// `out` is an array of `out_cap` entries of `entry_size` bytes each; pass
/// `entry_size = sizeof(tessera_license_info)` (a newer, larger struct is filled as far as
/// this library knows it, an older, smaller one as far as it goes, and each entry's
/// `struct_size` says how far). A seat borrowed into this machine (`tessera_borrow`) is
/// listed as a software license of quantity 1 with `TESSERA_LICENSE_BORROWED` set, its end
/// in `borrowed_until` and `expiry`, and the server it came from in `server`. On success
/// `*out_count` is the number of entries written. Size query: `out = NULL, out_cap = 0`
/// gives `TESSERA_E_BUFFER_TOO_SMALL` with the number of entries in `*out_count` (as does
/// any `out_cap` that is too small; nothing is written to `out` then). No license at all is
/// `TESSERA_OK` with `*out_count = 0`. When a source cannot be read (the server is down, the
/// home is unreadable) and no other source holds a license, that failure is the answer.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_license_list(
    session: tessera_session,
    out: *mut tessera_license_info,
    out_cap: usize,
    entry_size: usize,
    out_count: *mut usize,
) -> tessera_status {
    boundary(|| {
        check_ptr!(out_count, "out_count");
        let ours = size_of::<tessera_license_info>();
        // The first struct, or today's or a newer (larger) one: a size between two
        // versions is no version of it.
        if entry_size != LICENSE_INFO_V1_SIZE && !(ours..=OPTIONS_MAX_SIZE).contains(&entry_size) {
            return Err(Error::InvalidArgument(format!(
                "entry_size {entry_size} is not a tessera_license_info size \
                 (pass sizeof(tessera_license_info))"
            )));
        }
        let bytes = out_cap.checked_mul(entry_size).ok_or_else(|| {
            Error::InvalidArgument(format!("out_cap {out_cap} entries is out of range"))
        })?;
        // SAFETY: the caller promises `out_cap` entries of `entry_size` writable bytes.
        let buf = unsafe { output(out as *mut u8, bytes, "out")? };
        let s = SESSIONS.get(session)?;
        let list = s.session.licenses()?;
        if list.len() > out_cap {
            put(out_count, list.len());
            return Err(Error::BufferTooSmall { needed: list.len() });
        }
        let filled = ours.min(entry_size);
        for (l, dst) in list.iter().zip(buf.chunks_exact_mut(entry_size)) {
            let mut flags = 0;
            if l.license.exclusive_allowed {
                flags |= TESSERA_LICENSE_EXCLUSIVE_ALLOWED;
            }
            if l.borrowed_until.is_some() {
                flags |= TESSERA_LICENSE_BORROWED;
            }
            let expiry = match (l.license.expiry, l.borrowed_until) {
                (Some(e), Some(u)) => e.min(u),
                (e, u) => e.or(u).unwrap_or(0),
            };
            let info = tessera_license_info {
                struct_size: filled as u32,
                vendor_id: l.license.vendor_id,
                product_code: l.license.product_code,
                features: l.license.features,
                quantity: l.license.quantity,
                seats_in_use: l.in_use,
                expiry,
                source: source_code(l.source),
                counting_unit: l.license.counting_unit.code(),
                container_kind: container_code(l.container_kind),
                flags,
                status: l.verdict.code() as i32,
                transport: transport_code(l.dongle_mode),
                container_serial: fixed_str(&l.container_serial),
                server: fixed_str(l.server.as_deref().unwrap_or_default()),
                borrowed_until: l.borrowed_until.unwrap_or(0),
            };
            // SAFETY: plain-old-data, `ours` bytes, read as bytes.
            let raw = unsafe {
                std::slice::from_raw_parts(&info as *const tessera_license_info as *const u8, ours)
            };
            dst[..filled].copy_from_slice(&raw[..filled]);
            dst[filled..].fill(0);
        }
        put(out_count, list.len());
        Ok(())
    })
}

/// Releases a seat. The handle is invalid after; releasing again returns
/// `TESSERA_E_INVALID_HANDLE` and does nothing else. In a forked child, releasing a seat
/// inherited from the parent forgets the child's copy, leaves the parent's seat held, and
/// returns `TESSERA_E_FORKED`.
///
/// A seat of a license server is released on the server when it can be reached. When it
/// cannot (the server is down or the link is cut), `tessera_release` still returns
/// `TESSERA_OK`: the seat is gone from this process at once, its lease is no longer
/// renewed, and the server frees it when the lease runs out (`lease_ms`, 90 s by default).
/// Never retry a release: there is nothing left to release. The call may wait up to the
/// session's timeout for each configured server while it tries to reach one.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_release(seat: tessera_seat) -> tessera_status {
    boundary(|| {
        SEATS.remove(seat)?;
        Ok(())
    })
}

/// `s` as a NUL-terminated C string of at most `TESSERA_SERIAL_MAX - 1` bytes.
fn fixed_str(s: &str) -> [c_char; TESSERA_SERIAL_MAX] {
    let mut out = [0; TESSERA_SERIAL_MAX];
    for (d, b) in out.iter_mut().zip(s.bytes().take(TESSERA_SERIAL_MAX - 1)) {
        *d = b as c_char;
    }
    out
}

fn source_code(s: SourceKind) -> u32 {
    match s {
        SourceKind::Dongle => TESSERA_SOURCE_DONGLE,
        SourceKind::Software => TESSERA_SOURCE_SOFTWARE,
        SourceKind::Network => TESSERA_SOURCE_NETWORK,
    }
}

fn container_code(k: ContainerKind) -> u32 {
    match k {
        ContainerKind::Software => TESSERA_CONTAINER_SOFTWARE,
        ContainerKind::Dongle => TESSERA_CONTAINER_DONGLE,
    }
}

fn transport_code(m: Option<DongleMode>) -> u32 {
    match m {
        None => TESSERA_TRANSPORT_NONE,
        Some(DongleMode::Hid) => TESSERA_TRANSPORT_HID,
        Some(DongleMode::Msd) => TESSERA_TRANSPORT_MSD,
        Some(DongleMode::Usb) => TESSERA_TRANSPORT_USB,
    }
}

/// Describes a seat. Set `info->struct_size = sizeof(tessera_seat_details)` first; at most
/// that many bytes are written, and only on success. On success `info->struct_size` is set
/// to the number of bytes the library filled in (the smaller of the caller's `struct_size`
/// and the library's own struct): an app built against a newer header learns which of its
/// fields an older library left untouched.
///
/// For a seat on a license server, `seats_in_use` is the server's answer when the
/// connection is up and free, and otherwise (the server out of reach, or being reconnected
/// to) the last answer it gave, while the seat's lease runs; `server` is the last server.
/// Past the lease without a re-attach: `TESSERA_E_LEASE_LOST`.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_seat_info(
    seat: tessera_seat,
    info: *mut tessera_seat_details,
) -> tessera_status {
    boundary(|| {
        check_ptr!(info, "info");
        // SAFETY: non-NULL; the caller promises a writable struct of `struct_size` bytes.
        let size = unsafe { std::ptr::addr_of!((*info).struct_size).read_unaligned() } as usize;
        if size < 8 {
            return Err(Error::InvalidArgument(format!(
                "info.struct_size {size} is too small (set it to sizeof(tessera_seat_details))"
            )));
        }
        let e = SEATS.get(seat)?;
        let i = e.seat.info()?;
        let mut out = tessera_seat_details {
            struct_size: size.min(size_of::<tessera_seat_details>()) as u32,
            vendor_id: i.vendor_id,
            product_code: i.product_code,
            features: i.features,
            quantity: i.quantity,
            seats_in_use: i.in_use,
            expiry: i.expiry.unwrap_or(0),
            source: source_code(i.source),
            counting_unit: i.counting_unit.code(),
            container_kind: container_code(i.container_kind),
            flags: if i.exclusive {
                TESSERA_ACQUIRE_EXCLUSIVE
            } else {
                0
            } | if i.borrowed_until.is_some() {
                TESSERA_SEAT_BORROWED
            } else {
                0
            },
            container_serial: [0; TESSERA_SERIAL_MAX],
            server: [0; TESSERA_SERIAL_MAX],
            transport: transport_code(i.dongle_mode),
        };
        out.container_serial = fixed_str(&i.container_serial);
        out.server = fixed_str(i.server.as_deref().unwrap_or_default());
        let n = size.min(size_of::<tessera_seat_details>());
        // SAFETY: `info` has at least `n` writable bytes (the caller's struct_size).
        unsafe { std::ptr::copy_nonoverlapping(&out as *const _ as *const u8, info as *mut u8, n) };
        Ok(())
    })
}

/// Encrypts `input_len` bytes at `input` with the seat's product key into `out`.
/// `flags`: `TESSERA_CRYPT_DERIVED` (0) or `TESSERA_CRYPT_DIRECT`. The ciphertext is
/// `input_len + TESSERA_CIPHERTEXT_OVERHEAD` bytes, self-describing, and decrypts on any
/// machine licensed for the product:
///
/// ```text
/// "TSX" | version u8 | mode u8 | 0 0 0 | vendor_id u32 LE | product_code u32 LE
///       | nonce[24] | ciphertext | tag[16]
/// ```
///
/// The 40-byte header is authenticated. Version 1 is written by a dongle or a software
/// container (the message key comes from the product secret and the nonce); version 2 by a
/// seat on a license server, whose nonce field is `key_id[12] | salt[12]` (the message key
/// comes from the seat key of `key_id`, which comes from the product secret). A network
/// seat encrypts in the app in both modes, with no round trip to its server, for as long as
/// its lease runs (`TESSERA_E_LEASE_LOST` after it ran out without a re-attach).
///
/// Size query: pass `out = NULL, out_cap = 0`; the call
/// returns `TESSERA_E_BUFFER_TOO_SMALL` and writes the size needed to `*out_len` (as it does
/// whenever `out_cap` is too small). `input` may be NULL when `input_len` is 0.
/// `input` and `out` may overlap, in-place included (`out == input`, with `out_cap` at
/// least `input_len + TESSERA_CIPHERTEXT_OVERHEAD`): the library copies the input first,
/// and a failure leaves the buffer as it was. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_encrypt(
    seat: tessera_seat,
    flags: u32,
    input: *const u8,
    input_len: usize,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> tessera_status {
    boundary(|| {
        check_ptr!(out_len, "out_len");
        let mode = match flags {
            TESSERA_CRYPT_DERIVED => Mode::Derived,
            TESSERA_CRYPT_DIRECT => Mode::Direct,
            f => {
                return Err(Error::InvalidArgument(format!(
                    "unknown encrypt flags {f:#x}"
                )));
            }
        };
        crypt(
            seat,
            (input, input_len),
            (out, out_cap, out_len),
            |inp| Ok(cipher::ciphertext_len(inp.len())),
            |st, inp, buf| st.encrypt(mode, inp, buf),
        )
    })
}

/// Decrypts a Tessera ciphertext (either version, see `tessera_encrypt`) with the seat's
/// product key into `out` (in the container for direct-mode ciphertext, in the app for
/// derived mode). A seat on a license server decrypts both modes in the app with keys it
/// keeps: its own, and those it fetched from its server for ciphertext it opened before; so
/// these open with the server out of reach, while the seat's lease runs. Ciphertext it never
/// opened, under a key id it never saw, needs the server (the product secret stays in its
/// container): while the server is out of reach that fails with `TESSERA_E_IO` or
/// `TESSERA_E_TIMEOUT`, and `out` is left untouched. `flags` must be 0. The
/// plaintext is `input_len - TESSERA_CIPHERTEXT_OVERHEAD` bytes; size query as for
/// `tessera_encrypt`. Any modification of the ciphertext gives `TESSERA_E_TAMPERED`, except
/// in its clear header, which may then name another format version
/// (`TESSERA_E_UNKNOWN_VERSION`), publisher (`TESSERA_E_WRONG_VENDOR`) or product
/// (`TESSERA_E_NO_LICENSE`); in every case nothing is decrypted and `*out_len` is not
/// written.
///
/// What `out` holds after a failure: when `out` does not overlap `input`, a failed
/// authentication (`TESSERA_E_TAMPERED`) leaves zeros in its first
/// `input_len - TESSERA_CIPHERTEXT_OVERHEAD` bytes (the check runs in the output buffer,
/// and the zeros replace the bytes it held then: never ciphertext, never partial
/// plaintext); every other failure leaves `out` untouched. `input` and `out` may overlap,
/// in-place included (`out == input`): the library then decrypts a copy, and any failure
/// leaves the buffer, ciphertext and all, as it was. The ciphertext of an empty plaintext
/// decrypts with `out = NULL, out_cap = 0` and gives `TESSERA_OK` with `*out_len = 0`.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_decrypt(
    seat: tessera_seat,
    flags: u32,
    input: *const u8,
    input_len: usize,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> tessera_status {
    boundary(|| {
        check_ptr!(out_len, "out_len");
        if flags != 0 {
            return Err(Error::InvalidArgument(format!(
                "unknown decrypt flags {flags:#x}"
            )));
        }
        crypt(
            seat,
            (input, input_len),
            (out, out_cap, out_len),
            |inp| {
                cipher::Header::parse(inp)?;
                Ok(cipher::plaintext_len(inp.len()))
            },
            |st, inp, buf| st.decrypt(inp, buf),
        )
    })
}

/// Writes an offline activation request for this machine into `out` (step one of offline
/// activation: send it to the publisher, who answers with an activation file). Makes the
/// publisher's software container on this machine if there is none, else reuses it, so an
/// activation adds licenses to those it already holds. Size query as for `tessera_encrypt`:
/// a size query (or any call whose `out_cap` is too small) changes nothing on the machine
/// (no container, no key is made); the container is made by the call that writes the
/// request. Each call writes a new request (same size, later timestamp); any of them can be
/// activated.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_activation_request(
    session: tessera_session,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> tessera_status {
    boundary(|| {
        check_ptr!(out_len, "out_len");
        let e = SESSIONS.get(session)?;
        // SAFETY: only checks the pair (NULL with a capacity is refused) before any effect;
        // the slice is not kept.
        let _ = unsafe { output(out, out_cap, "out")? };
        let size = e.session.activation_request_size()?;
        if out_cap < size {
            put(out_len, size);
            return Err(Error::BufferTooSmall { needed: size });
        }
        let req = e.session.activation_request()?;
        emit(&req, out, out_cap, out_len)
    })
}

/// Installs an activation (step two) into this machine's software container, checking it
/// against the publisher key the session was opened with. Licenses already in the container
/// are kept. On any failure the container is unchanged. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_activation_install(
    session: tessera_session,
    activation: *const u8,
    activation_len: usize,
) -> tessera_status {
    boundary(|| {
        // SAFETY: the C caller promises `activation` has `activation_len` readable bytes.
        let data = unsafe { input(activation, activation_len, "activation")? };
        let e = SESSIONS.get(session)?;
        e.session.activation_install(data)?;
        Ok(())
    })
}

/// Borrows a seat of `product_code` whose license grants at least the `features` bits from
/// the session's license server (the servers it was opened with, else `TESSERA_SERVERS`, else
/// a discovery broadcast) for `days` days, and writes when the borrowing ends (seconds since
/// the Unix epoch) to `*until_out`. The seat is kept in this machine's software container of
/// the publisher (made if there is none; bound to this machine, so a copy does not open on
/// another): from then on `tessera_acquire` serves it from that container with no server at
/// all, as one seat by the license's counting unit, until it ends (or the license expires,
/// if that is sooner). The server counts it as held until then or until
/// `tessera_return_borrowed`. Blocks while it talks to the server (up to the session's
/// timeout per server, one retry after a connection failure). `*until_out` is written only
/// on success.
///
/// Statuses: `TESSERA_OK`; `TESSERA_E_INVALID_ARGUMENT` (`until_out` NULL, `days` 0 or
/// beyond what the license allows); `TESSERA_E_INVALID_HANDLE` (unknown or closed session);
/// `TESSERA_E_NO_LICENSE` (no server, no license of the product there, or the license does
/// not allow borrowing); `TESSERA_E_NO_SEAT` (every seat is taken);
/// `TESSERA_E_FEATURE_MISSING`, `TESSERA_E_EXPIRED`, `TESSERA_E_VM_NOT_ALLOWED` (the
/// license's verdict); `TESSERA_E_BINDING_MISMATCH`, `TESSERA_E_BAD_SIGNATURE`,
/// `TESSERA_E_TAMPERED`, `TESSERA_E_WRONG_VENDOR` (the grant or this machine's container
/// does not check out); `TESSERA_E_CLOCK_ROLLBACK` (this machine's clock runs behind its
/// container's high-water mark); `TESSERA_E_IO`, `TESSERA_E_TIMEOUT` (no server could be
/// reached; nothing is borrowed); `TESSERA_E_FORKED` (a session of the parent process).
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_borrow(
    session: tessera_session,
    product_code: u32,
    features: u32,
    days: u32,
    until_out: *mut u64,
) -> tessera_status {
    boundary(|| {
        check_ptr!(until_out, "until_out");
        let e = SESSIONS.get(session)?;
        let (until, _) = e.session.borrow(product_code, features, days)?;
        put(until_out, until);
        Ok(())
    })
}

/// Gives a seat of `product_code` borrowed into this machine (`tessera_borrow`) back to the
/// license server before it ends (the one that ends first, when several are). The return is
/// signed with this machine's container key and sent to the server the seat came from (when
/// it cannot be reached, to the session's servers); the seat leaves the container when a
/// server confirms, or the server it came from says it no longer holds the seat, and the
/// server frees it at once. Seats of it held in this session answer `TESSERA_E_LEASE_LOST`
/// afterwards.
///
/// Statuses: `TESSERA_OK`; `TESSERA_E_INVALID_HANDLE` (unknown or closed session);
/// `TESSERA_E_NO_LICENSE` (no seat of the product is borrowed here); `TESSERA_E_IO`,
/// `TESSERA_E_TIMEOUT` (no server could be reached: the seat is kept, try again later);
/// `TESSERA_E_BAD_SIGNATURE` (the server did not accept the signature: the seat is kept);
/// `TESSERA_E_LEASE_LOST` (a server other than the one the seat came from does not know it:
/// the seat is kept);
/// `TESSERA_E_FORKED` (a session of the parent process). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_return_borrowed(
    session: tessera_session,
    product_code: u32,
) -> tessera_status {
    boundary(|| {
        let e = SESSIONS.get(session)?;
        e.session.return_borrowed(product_code)
    })
}

/// A static, NUL-terminated description of a status ("no seat available"). Never NULL; an
/// unknown number gives "unknown status". Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_status_str(status: i32) -> *const c_char {
    boundary_value(c"unknown status".as_ptr(), || {
        match status::from_code(status as i64) {
            Some(s) => status::describe_ptr(s),
            None => c"unknown status".as_ptr(),
        }
    })
}

/// The detail of the most recent failed call on this thread, NUL-terminated; "" when none
/// failed yet. Owned by the library and valid until the next call on this thread. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_last_error() -> *const c_char {
    boundary_value(c"".as_ptr(), last_error_ptr)
}

/// The library version ("0.1.0"), a static NUL-terminated string. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"",
        };
    boundary_value(c"".as_ptr(), || V.as_ptr())
}

/// The ABI version (`TESSERA_ABI_VERSION` of the header the library was built with).
/// Bindings compare it with their own and refuse to run on a mismatch.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_abi_version() -> u32 {
    TESSERA_ABI_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::sources;
    use crate::license::CountingUnit;

    #[test]
    fn header_constants_match_the_library() {
        assert_eq!(TESSERA_SOURCE_DONGLE, sources::DONGLE);
        assert_eq!(TESSERA_SOURCE_SOFTWARE, sources::SOFTWARE);
        assert_eq!(TESSERA_SOURCE_NETWORK, sources::NETWORK);
        assert_eq!(TESSERA_SOURCE_ALL, sources::ALL);
        assert_eq!(TESSERA_CIPHERTEXT_OVERHEAD, cipher::OVERHEAD);
        assert_eq!(TESSERA_UNIT_STATION, CountingUnit::Station.code());
        assert_eq!(TESSERA_UNIT_SESSION, CountingUnit::Session.code());
        assert_eq!(TESSERA_UNIT_PROCESS, CountingUnit::Process.code());
        assert_eq!(TESSERA_UNIT_HANDLE, CountingUnit::Handle.code());
    }

    // The tests below run under Miri too (`make miri`): they drive the unsafe reads and
    // writes of caller memory with buffers of exactly the size the caller claims, so a read
    // or write one byte past it is reported.

    /// A caller's options struct of `size` bytes, in memory of exactly that size.
    fn caller_options(size: usize) -> Vec<u8> {
        vec![0xAA; size]
    }

    fn demo_key() -> [u8; 32] {
        crate::publisher::PublisherKey::demo()
            .public_key()
            .to_bytes()
    }

    /// `o` as the bytes of a caller's struct of `size` bytes (zero tail when larger).
    fn options_bytes(o: &tessera_open_options, size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size];
        let n = size.min(size_of::<tessera_open_options>());
        // SAFETY: `o` is a live struct of at least `n` bytes, `b` has `size` >= n bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(o as *const _ as *const u8, b.as_mut_ptr(), n);
        }
        b
    }

    #[test]
    fn options_init_writes_exactly_the_size_it_is_given() {
        let ours = size_of::<tessera_open_options>();
        for size in [ours, ours + 24] {
            let mut b = caller_options(size);
            let st = tessera_open_options_init(b.as_mut_ptr().cast(), size);
            assert_eq!(st, tessera_status::TESSERA_OK, "size {size}");
            assert_eq!(
                u32::from_ne_bytes(b[..4].try_into().unwrap()) as usize,
                size
            );
            assert!(
                b[ours..].iter().all(|x| *x == 0),
                "a newer struct's tail is zeroed"
            );
        }
        let mut b = caller_options(ours);
        for bad in [ours - 1, OPTIONS_MAX_SIZE + 1] {
            let st = tessera_open_options_init(b.as_mut_ptr().cast(), bad);
            assert_eq!(st, tessera_status::TESSERA_E_INVALID_ARGUMENT, "size {bad}");
        }
        assert!(b.iter().all(|x| *x == 0xAA), "refused sizes write nothing");
        let st = tessera_open_options_init(std::ptr::null_mut(), ours);
        assert_eq!(st, tessera_status::TESSERA_E_INVALID_ARGUMENT);
    }

    #[test]
    fn options_are_read_up_to_their_struct_size_and_no_further() {
        let key = demo_key();
        let servers = c"a:1, b:2";
        let ours = size_of::<tessera_open_options>();
        let full = tessera_open_options {
            struct_size: 0,
            vendor_id: 0x1234,
            publisher_key: key.as_ptr(),
            publisher_key_len: key.len(),
            sources: TESSERA_SOURCE_NETWORK,
            timeout_ms: 1500,
            servers: servers.as_ptr(),
        };
        // The first struct (today's, as tessera_open_options_init accepts it) and a newer one.
        let minimum = OPTIONS_V1_SIZE;
        for size in [ours, ours + 16] {
            let mut b = options_bytes(&full, size);
            b[..4].copy_from_slice(&(size as u32).to_ne_bytes());
            let o = read_options(b.as_ptr().cast()).unwrap_or_else(|e| panic!("{size}: {e}"));
            assert_eq!(o.vendor_id, 0x1234);
            assert_eq!(o.publisher_key.to_bytes(), key);
            assert_eq!(o.sources, TESSERA_SOURCE_NETWORK);
            assert_eq!(o.timeout, Duration::from_millis(1500));
            assert_eq!(o.servers, ["a:1", "b:2"]);
        }
        // Every size below the first struct is refused, as options_init refuses it.
        for size in 24..minimum {
            let mut b = options_bytes(&full, minimum);
            b[..4].copy_from_slice(&(size as u32).to_ne_bytes());
            assert!(
                matches!(
                    read_options(b.as_ptr().cast()),
                    Err(Error::InvalidArgument(_))
                ),
                "{size}"
            );
        }
        // A newer struct that sets a field this version does not know.
        let mut b = options_bytes(&full, ours + 16);
        b[..4].copy_from_slice(&((ours + 16) as u32).to_ne_bytes());
        b[ours + 3] = 1;
        assert!(matches!(
            read_options(b.as_ptr().cast()),
            Err(Error::Unsupported(_))
        ));
        // Too small, implausible, NULL, a short key.
        for size in [minimum - 1, OPTIONS_MAX_SIZE + 1] {
            let mut b = options_bytes(&full, minimum);
            b[..4].copy_from_slice(&(size as u32).to_ne_bytes());
            assert!(matches!(
                read_options(b.as_ptr().cast()),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(read_options(std::ptr::null()).is_err());
        let short = tessera_open_options {
            publisher_key_len: 31,
            struct_size: ours as u32,
            ..full
        };
        assert!(matches!(
            read_options(&short),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn bad_handles_and_pointers_are_refused_before_any_buffer_is_touched() {
        let mut out = [0xAAu8; 8];
        let mut out_len = 7usize;
        // Seat and session kinds, a generation no table reaches in a test.
        let (forged, forged_session) = (0x54FF_FFFF_0000_0001, 0x53FF_FFFF_0000_0001);
        let st = tessera_encrypt(
            forged,
            0,
            std::ptr::null(),
            0,
            out.as_mut_ptr(),
            8,
            &mut out_len,
        );
        assert_eq!(st, tessera_status::TESSERA_E_INVALID_HANDLE);
        let st = tessera_decrypt(
            forged,
            0,
            out.as_ptr(),
            8,
            out.as_mut_ptr(),
            8,
            &mut out_len,
        );
        assert_eq!(st, tessera_status::TESSERA_E_INVALID_HANDLE);
        assert_eq!((out, out_len), ([0xAA; 8], 7), "nothing written on failure");
        let mut info = [0u8; size_of::<tessera_seat_details>()];
        let len = info.len() as u32;
        info[..4].copy_from_slice(&len.to_ne_bytes());
        let st = tessera_seat_info(forged, info.as_mut_ptr().cast());
        assert_eq!(st, tessera_status::TESSERA_E_INVALID_HANDLE);
        info[..4].copy_from_slice(&4u32.to_ne_bytes());
        let st = tessera_seat_info(forged, info.as_mut_ptr().cast());
        assert_eq!(
            st,
            tessera_status::TESSERA_E_INVALID_ARGUMENT,
            "struct_size 4 is too small"
        );
        assert_eq!(
            tessera_release(forged),
            tessera_status::TESSERA_E_INVALID_HANDLE
        );
        assert_eq!(
            tessera_close(forged_session),
            tessera_status::TESSERA_E_INVALID_HANDLE
        );
        let mut seat = 0;
        assert_eq!(
            tessera_acquire(forged_session, 1, 0, 0, &mut seat),
            tessera_status::TESSERA_E_INVALID_HANDLE
        );
        assert_eq!(seat, 0);
        let mut until = 7u64;
        assert_eq!(
            tessera_borrow(forged_session, 1, 0, 1, &mut until),
            tessera_status::TESSERA_E_INVALID_HANDLE
        );
        assert_eq!(
            tessera_borrow(forged_session, 1, 0, 1, std::ptr::null_mut()),
            tessera_status::TESSERA_E_INVALID_ARGUMENT
        );
        assert_eq!(until, 7, "nothing written on failure");
        assert_eq!(
            tessera_return_borrowed(forged_session, 1),
            tessera_status::TESSERA_E_INVALID_HANDLE
        );
        // The detail of the last failure, read as C reads it.
        // SAFETY: never NULL, NUL-terminated, valid until the next call on this thread.
        let detail = unsafe { CStr::from_ptr(tessera_last_error()) };
        assert!(detail.to_str().unwrap().contains("handle"), "{detail:?}");
    }

    #[test]
    fn status_strings_and_the_version_are_static_c_strings() {
        for code in [0, 1, 100, -1, i32::MAX, i32::MIN] {
            // SAFETY: never NULL, static and NUL-terminated.
            let s = unsafe { CStr::from_ptr(tessera_status_str(code)) };
            assert!(!s.to_bytes().is_empty(), "{code}");
        }
        // SAFETY: as above.
        let v = unsafe { CStr::from_ptr(tessera_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
