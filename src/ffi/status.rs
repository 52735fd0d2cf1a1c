//! `tessera_status`: the C face of the core's status table ([`crate::status`]).
//!
//! The enum is spelled out here, numbers and docs, because cbindgen reads this file to write
//! `include/tessera.h`. It is tied to [`Status`] both ways by exhaustive matches, and a
//! compile-time check compares every number: a status added, dropped or renumbered on one
//! side only does not build.

use std::ffi::{CStr, c_char};

use crate::Error;
use crate::status::Status;

/// The result of every fallible call. `TESSERA_OK` (0) is the only success: anything else
/// means "not licensed" / "not done". Numbers are stable and never reused; they are grouped:
/// 1–99 arguments and handles, 100–199 licensing verdicts, 200–299 transport, 900–999
/// internal. Retired numbers stay listed as comments.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum tessera_status {
    /// Success.
    TESSERA_OK = 0,
    /// An argument is NULL, out of range, or malformed (see `tessera_last_error`).
    TESSERA_E_INVALID_ARGUMENT = 1,
    /// A session or seat handle is stale, released, forged, or of the wrong kind.
    TESSERA_E_INVALID_HANDLE = 2,
    /// An output buffer is too small; the size needed was written to the length out-parameter.
    TESSERA_E_BUFFER_TOO_SMALL = 3,
    /// Well formed but not supported by this build or this license source (e.g. an options
    /// struct from a newer header with fields this library does not know).
    TESSERA_E_UNSUPPORTED = 4,
    /// The session or seat was opened by the parent of this process, which then forked:
    /// handles are per process. Open a new session in the child (`tessera.h`, "fork").
    TESSERA_E_FORKED = 5,
    /// No license for the product in any allowed source.
    TESSERA_E_NO_LICENSE = 100,
    /// A license exists but all of its seats are in use.
    TESSERA_E_NO_SEAT = 101,
    /// The license has expired.
    TESSERA_E_EXPIRED = 102,
    /// The license lacks requested feature bits.
    TESSERA_E_FEATURE_MISSING = 103,
    /// The license does not allow virtual machines, and this is one.
    TESSERA_E_VM_NOT_ALLOWED = 104,
    /// Exclusive use refused, or another process holds the license exclusively.
    TESSERA_E_EXCLUSIVE_DENIED = 105,
    /// A container or activation is bound to another machine or container.
    TESSERA_E_BINDING_MISMATCH = 106,
    /// Data failed its integrity check: a container file was edited, a ciphertext modified.
    TESSERA_E_TAMPERED = 107,
    /// The clock runs behind the container's high-water mark (time-limited licenses only).
    TESSERA_E_CLOCK_ROLLBACK = 108,
    /// A signature does not verify against the publisher key given to `tessera_open`.
    TESSERA_E_BAD_SIGNATURE = 109,
    /// The data belongs to another publisher.
    TESSERA_E_WRONG_VENDOR = 110,
    /// A file or message has a format version this library does not know.
    TESSERA_E_UNKNOWN_VERSION = 111,
    /// A file or message is truncated or not of the expected kind.
    TESSERA_E_MALFORMED = 112,
    /// A dongle is used by more than one host at once and is locked out.
    TESSERA_E_DONGLE_SHARED = 113,
    /// A seat could not be kept: a network seat's server was lost beyond the grace period or
    /// no longer knows the seat, or a local seat's slot in the machine's seat registry was
    /// deleted or replaced and another process holds the seat now. Acquire again.
    TESSERA_E_LEASE_LOST = 114,
    /// An I/O operation failed (file, device, network).
    TESSERA_E_IO = 200,
    /// An operation did not finish within its timeout.
    TESSERA_E_TIMEOUT = 201,
    /// A bug in the library: an invariant does not hold.
    TESSERA_E_INTERNAL = 900,
    /// A panic was caught at the API boundary.
    TESSERA_E_PANIC = 901,
}

/// The C status of a core status.
pub const fn to_c(s: Status) -> tessera_status {
    use tessera_status::*;
    match s {
        Status::Ok => TESSERA_OK,
        Status::InvalidArgument => TESSERA_E_INVALID_ARGUMENT,
        Status::InvalidHandle => TESSERA_E_INVALID_HANDLE,
        Status::BufferTooSmall => TESSERA_E_BUFFER_TOO_SMALL,
        Status::Unsupported => TESSERA_E_UNSUPPORTED,
        Status::Forked => TESSERA_E_FORKED,
        Status::NoLicense => TESSERA_E_NO_LICENSE,
        Status::NoSeat => TESSERA_E_NO_SEAT,
        Status::Expired => TESSERA_E_EXPIRED,
        Status::FeatureMissing => TESSERA_E_FEATURE_MISSING,
        Status::VmNotAllowed => TESSERA_E_VM_NOT_ALLOWED,
        Status::ExclusiveDenied => TESSERA_E_EXCLUSIVE_DENIED,
        Status::BindingMismatch => TESSERA_E_BINDING_MISMATCH,
        Status::Tampered => TESSERA_E_TAMPERED,
        Status::ClockRollback => TESSERA_E_CLOCK_ROLLBACK,
        Status::BadSignature => TESSERA_E_BAD_SIGNATURE,
        Status::WrongVendor => TESSERA_E_WRONG_VENDOR,
        Status::UnknownVersion => TESSERA_E_UNKNOWN_VERSION,
        Status::Malformed => TESSERA_E_MALFORMED,
        Status::DongleShared => TESSERA_E_DONGLE_SHARED,
        Status::LeaseLost => TESSERA_E_LEASE_LOST,
        Status::Io => TESSERA_E_IO,
        Status::Timeout => TESSERA_E_TIMEOUT,
        Status::Internal => TESSERA_E_INTERNAL,
        Status::Panic => TESSERA_E_PANIC,
    }
}

impl From<Status> for tessera_status {
    fn from(s: Status) -> Self {
        to_c(s)
    }
}

impl From<tessera_status> for Status {
    fn from(s: tessera_status) -> Self {
        use tessera_status::*;
        match s {
            TESSERA_OK => Status::Ok,
            TESSERA_E_INVALID_ARGUMENT => Status::InvalidArgument,
            TESSERA_E_INVALID_HANDLE => Status::InvalidHandle,
            TESSERA_E_BUFFER_TOO_SMALL => Status::BufferTooSmall,
            TESSERA_E_UNSUPPORTED => Status::Unsupported,
            TESSERA_E_FORKED => Status::Forked,
            TESSERA_E_NO_LICENSE => Status::NoLicense,
            TESSERA_E_NO_SEAT => Status::NoSeat,
            TESSERA_E_EXPIRED => Status::Expired,
            TESSERA_E_FEATURE_MISSING => Status::FeatureMissing,
            TESSERA_E_VM_NOT_ALLOWED => Status::VmNotAllowed,
            TESSERA_E_EXCLUSIVE_DENIED => Status::ExclusiveDenied,
            TESSERA_E_BINDING_MISMATCH => Status::BindingMismatch,
            TESSERA_E_TAMPERED => Status::Tampered,
            TESSERA_E_CLOCK_ROLLBACK => Status::ClockRollback,
            TESSERA_E_BAD_SIGNATURE => Status::BadSignature,
            TESSERA_E_WRONG_VENDOR => Status::WrongVendor,
            TESSERA_E_UNKNOWN_VERSION => Status::UnknownVersion,
            TESSERA_E_MALFORMED => Status::Malformed,
            TESSERA_E_DONGLE_SHARED => Status::DongleShared,
            TESSERA_E_LEASE_LOST => Status::LeaseLost,
            TESSERA_E_IO => Status::Io,
            TESSERA_E_TIMEOUT => Status::Timeout,
            TESSERA_E_INTERNAL => Status::Internal,
            TESSERA_E_PANIC => Status::Panic,
        }
    }
}

// Every status has the same number in C as in the core.
const _: () = {
    let mut i = 0;
    while i < Status::ALL.len() {
        assert!(to_c(Status::ALL[i]) as i64 == Status::ALL[i].code() as i64);
        i += 1;
    }
};

/// The status for a library error.
pub fn from_error(e: &Error) -> tessera_status {
    to_c(Status::from_error(e))
}

/// The static string of a status.
pub(crate) fn describe(s: tessera_status) -> &'static CStr {
    Status::from(s).c_text()
}

/// Every status, for tests and bindings.
pub const ALL: [tessera_status; Status::ALL.len()] = {
    let mut all = [tessera_status::TESSERA_OK; Status::ALL.len()];
    let mut i = 0;
    while i < all.len() {
        all[i] = to_c(Status::ALL[i]);
        i += 1;
    }
    all
};

/// The status with number `n`, if there is one.
pub fn from_code(n: i64) -> Option<tessera_status> {
    Status::from_code(n).map(to_c)
}

pub(crate) fn describe_ptr(s: tessera_status) -> *const c_char {
    describe(s).as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_enum_has_the_core_tables_numbers_and_names() {
        for s in Status::ALL {
            let c = tessera_status::from(s);
            assert_eq!(c as i64, s.code() as i64, "{s:?}");
            assert_eq!(format!("{c:?}"), s.name(), "{s:?}");
            assert_eq!(Status::from(c), s);
            assert_eq!(describe(c), s.c_text());
        }
        assert_eq!(ALL.len(), Status::ALL.len());
    }
}
