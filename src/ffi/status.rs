//! `tessera_status`: every outcome of a C API call, with a stable number and a string.

use std::ffi::{CStr, c_char};

use crate::Error;

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
    /// A network seat's lease could not be kept: the server was lost beyond the grace
    /// period, or no longer knows the seat. Acquire again.
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

/// The status for a library error.
pub fn from_error(e: &Error) -> tessera_status {
    use tessera_status::*;
    match e {
        Error::InvalidArgument(_) => TESSERA_E_INVALID_ARGUMENT,
        Error::InvalidHandle(_) => TESSERA_E_INVALID_HANDLE,
        Error::BufferTooSmall { .. } => TESSERA_E_BUFFER_TOO_SMALL,
        Error::Unsupported(_) => TESSERA_E_UNSUPPORTED,
        Error::NoLicense(_) => TESSERA_E_NO_LICENSE,
        Error::NoSeat { .. } => TESSERA_E_NO_SEAT,
        Error::Expired { .. } => TESSERA_E_EXPIRED,
        Error::FeatureMissing { .. } => TESSERA_E_FEATURE_MISSING,
        Error::VmNotAllowed(_) => TESSERA_E_VM_NOT_ALLOWED,
        Error::ExclusiveDenied(_) => TESSERA_E_EXCLUSIVE_DENIED,
        Error::BindingMismatch(_) => TESSERA_E_BINDING_MISMATCH,
        Error::Tampered(_) => TESSERA_E_TAMPERED,
        Error::ClockRollback { .. } => TESSERA_E_CLOCK_ROLLBACK,
        Error::BadSignature(_) => TESSERA_E_BAD_SIGNATURE,
        Error::DongleShared(_) => TESSERA_E_DONGLE_SHARED,
        Error::LeaseLost(_) => TESSERA_E_LEASE_LOST,
        Error::WrongVendor { .. } => TESSERA_E_WRONG_VENDOR,
        Error::UnknownVersion { .. } => TESSERA_E_UNKNOWN_VERSION,
        Error::Malformed { .. } => TESSERA_E_MALFORMED,
        Error::Io { .. } => TESSERA_E_IO,
        Error::Timeout(_) => TESSERA_E_TIMEOUT,
        Error::Internal(_) => TESSERA_E_INTERNAL,
    }
}

/// The static string of a status, as `(name, words)`.
pub(crate) fn describe(s: tessera_status) -> &'static CStr {
    use tessera_status::*;
    match s {
        TESSERA_OK => c"ok",
        TESSERA_E_INVALID_ARGUMENT => c"invalid argument",
        TESSERA_E_INVALID_HANDLE => c"invalid handle",
        TESSERA_E_BUFFER_TOO_SMALL => c"buffer too small",
        TESSERA_E_UNSUPPORTED => c"unsupported",
        TESSERA_E_NO_LICENSE => c"no license",
        TESSERA_E_NO_SEAT => c"no seat available",
        TESSERA_E_EXPIRED => c"license expired",
        TESSERA_E_FEATURE_MISSING => c"feature not licensed",
        TESSERA_E_VM_NOT_ALLOWED => c"virtual machines not allowed",
        TESSERA_E_EXCLUSIVE_DENIED => c"exclusive use refused",
        TESSERA_E_BINDING_MISMATCH => c"bound to another machine or container",
        TESSERA_E_TAMPERED => c"tampered",
        TESSERA_E_CLOCK_ROLLBACK => c"clock rollback",
        TESSERA_E_BAD_SIGNATURE => c"bad signature",
        TESSERA_E_WRONG_VENDOR => c"wrong vendor",
        TESSERA_E_UNKNOWN_VERSION => c"unknown format version",
        TESSERA_E_MALFORMED => c"malformed data",
        TESSERA_E_DONGLE_SHARED => c"dongle shared by several hosts",
        TESSERA_E_LEASE_LOST => c"lease lost",
        TESSERA_E_IO => c"i/o error",
        TESSERA_E_TIMEOUT => c"timed out",
        TESSERA_E_INTERNAL => c"internal error",
        TESSERA_E_PANIC => c"internal error (panic)",
    }
}

/// Every status, for tests and bindings.
pub const ALL: [tessera_status; 24] = {
    use tessera_status::*;
    [
        TESSERA_OK,
        TESSERA_E_INVALID_ARGUMENT,
        TESSERA_E_INVALID_HANDLE,
        TESSERA_E_BUFFER_TOO_SMALL,
        TESSERA_E_UNSUPPORTED,
        TESSERA_E_NO_LICENSE,
        TESSERA_E_NO_SEAT,
        TESSERA_E_EXPIRED,
        TESSERA_E_FEATURE_MISSING,
        TESSERA_E_VM_NOT_ALLOWED,
        TESSERA_E_EXCLUSIVE_DENIED,
        TESSERA_E_BINDING_MISMATCH,
        TESSERA_E_TAMPERED,
        TESSERA_E_CLOCK_ROLLBACK,
        TESSERA_E_BAD_SIGNATURE,
        TESSERA_E_WRONG_VENDOR,
        TESSERA_E_UNKNOWN_VERSION,
        TESSERA_E_MALFORMED,
        TESSERA_E_DONGLE_SHARED,
        TESSERA_E_LEASE_LOST,
        TESSERA_E_IO,
        TESSERA_E_TIMEOUT,
        TESSERA_E_INTERNAL,
        TESSERA_E_PANIC,
    ]
};

/// The status with number `n`, if there is one.
pub fn from_code(n: i64) -> Option<tessera_status> {
    ALL.into_iter().find(|s| *s as i64 == n)
}

pub(crate) fn describe_ptr(s: tessera_status) -> *const c_char {
    describe(s).as_ptr()
}
