//! The status table: every outcome of a runtime call as a kind of [`Error`], a stable
//! number, a name and a text.
//!
//! The numbers travel on the wire (container and license-server error answers), in the usage
//! log (denials) and in the server's metrics, and the C API returns them as `tessera_status`
//! (`src/ffi/status.rs`, the C face of this table). They are stable and never reused, and
//! grouped: 1–99 arguments and handles, 100–199 licensing verdicts, 200–299 transport,
//! 900–999 internal. Retired numbers stay listed as comments.

use std::ffi::CStr;

use crate::Error;

/// One row of the table. `Status::Ok` (0) is the only success.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// [`Error::InvalidArgument`].
    InvalidArgument = 1,
    /// [`Error::InvalidHandle`].
    InvalidHandle = 2,
    /// [`Error::BufferTooSmall`].
    BufferTooSmall = 3,
    /// [`Error::Unsupported`].
    Unsupported = 4,
    /// [`Error::Forked`].
    Forked = 5,
    /// [`Error::NoLicense`].
    NoLicense = 100,
    /// [`Error::NoSeat`].
    NoSeat = 101,
    /// [`Error::Expired`].
    Expired = 102,
    /// [`Error::FeatureMissing`].
    FeatureMissing = 103,
    /// [`Error::VmNotAllowed`].
    VmNotAllowed = 104,
    /// [`Error::ExclusiveDenied`].
    ExclusiveDenied = 105,
    /// [`Error::BindingMismatch`].
    BindingMismatch = 106,
    /// [`Error::Tampered`].
    Tampered = 107,
    /// [`Error::ClockRollback`].
    ClockRollback = 108,
    /// [`Error::BadSignature`].
    BadSignature = 109,
    /// [`Error::WrongVendor`].
    WrongVendor = 110,
    /// [`Error::UnknownVersion`].
    UnknownVersion = 111,
    /// [`Error::Malformed`].
    Malformed = 112,
    /// [`Error::DongleShared`].
    DongleShared = 113,
    /// [`Error::LeaseLost`].
    LeaseLost = 114,
    /// [`Error::Io`].
    Io = 200,
    /// [`Error::Timeout`].
    Timeout = 201,
    /// [`Error::Internal`].
    Internal = 900,
    /// A panic was caught at the C API boundary (no [`Error`] carries it).
    Panic = 901,
}

impl Status {
    /// Every status, in number order.
    pub const ALL: [Status; 25] = [
        Status::Ok,
        Status::InvalidArgument,
        Status::InvalidHandle,
        Status::BufferTooSmall,
        Status::Unsupported,
        Status::Forked,
        Status::NoLicense,
        Status::NoSeat,
        Status::Expired,
        Status::FeatureMissing,
        Status::VmNotAllowed,
        Status::ExclusiveDenied,
        Status::BindingMismatch,
        Status::Tampered,
        Status::ClockRollback,
        Status::BadSignature,
        Status::WrongVendor,
        Status::UnknownVersion,
        Status::Malformed,
        Status::DongleShared,
        Status::LeaseLost,
        Status::Io,
        Status::Timeout,
        Status::Internal,
        Status::Panic,
    ];

    /// Its stable number.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The status with number `n`, if there is one.
    pub fn from_code(n: i64) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() as i64 == n)
    }

    /// The status of an error.
    pub fn from_error(e: &Error) -> Status {
        match e {
            Error::InvalidArgument(_) => Status::InvalidArgument,
            Error::InvalidHandle(_) => Status::InvalidHandle,
            Error::BufferTooSmall { .. } => Status::BufferTooSmall,
            Error::Unsupported(_) => Status::Unsupported,
            Error::Forked(_) => Status::Forked,
            Error::NoLicense(_) => Status::NoLicense,
            Error::NoSeat { .. } => Status::NoSeat,
            Error::Expired { .. } => Status::Expired,
            Error::FeatureMissing { .. } => Status::FeatureMissing,
            Error::VmNotAllowed(_) => Status::VmNotAllowed,
            Error::ExclusiveDenied(_) => Status::ExclusiveDenied,
            Error::BindingMismatch(_) => Status::BindingMismatch,
            Error::Tampered(_) => Status::Tampered,
            Error::ClockRollback { .. } => Status::ClockRollback,
            Error::BadSignature(_) => Status::BadSignature,
            Error::DongleShared(_) => Status::DongleShared,
            Error::LeaseLost(_) => Status::LeaseLost,
            Error::WrongVendor { .. } => Status::WrongVendor,
            Error::UnknownVersion { .. } => Status::UnknownVersion,
            Error::Malformed { .. } => Status::Malformed,
            Error::Io { .. } => Status::Io,
            Error::Timeout(_) => Status::Timeout,
            Error::Internal(_) => Status::Internal,
        }
    }

    /// Its name: the C enum value (`TESSERA_E_NO_SEAT`).
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "TESSERA_OK",
            Status::InvalidArgument => "TESSERA_E_INVALID_ARGUMENT",
            Status::InvalidHandle => "TESSERA_E_INVALID_HANDLE",
            Status::BufferTooSmall => "TESSERA_E_BUFFER_TOO_SMALL",
            Status::Unsupported => "TESSERA_E_UNSUPPORTED",
            Status::Forked => "TESSERA_E_FORKED",
            Status::NoLicense => "TESSERA_E_NO_LICENSE",
            Status::NoSeat => "TESSERA_E_NO_SEAT",
            Status::Expired => "TESSERA_E_EXPIRED",
            Status::FeatureMissing => "TESSERA_E_FEATURE_MISSING",
            Status::VmNotAllowed => "TESSERA_E_VM_NOT_ALLOWED",
            Status::ExclusiveDenied => "TESSERA_E_EXCLUSIVE_DENIED",
            Status::BindingMismatch => "TESSERA_E_BINDING_MISMATCH",
            Status::Tampered => "TESSERA_E_TAMPERED",
            Status::ClockRollback => "TESSERA_E_CLOCK_ROLLBACK",
            Status::BadSignature => "TESSERA_E_BAD_SIGNATURE",
            Status::WrongVendor => "TESSERA_E_WRONG_VENDOR",
            Status::UnknownVersion => "TESSERA_E_UNKNOWN_VERSION",
            Status::Malformed => "TESSERA_E_MALFORMED",
            Status::DongleShared => "TESSERA_E_DONGLE_SHARED",
            Status::LeaseLost => "TESSERA_E_LEASE_LOST",
            Status::Io => "TESSERA_E_IO",
            Status::Timeout => "TESSERA_E_TIMEOUT",
            Status::Internal => "TESSERA_E_INTERNAL",
            Status::Panic => "TESSERA_E_PANIC",
        }
    }

    /// Its text, NUL-terminated (what `tessera_status_str` returns): "no seat available".
    pub const fn c_text(self) -> &'static CStr {
        match self {
            Status::Ok => c"ok",
            Status::InvalidArgument => c"invalid argument",
            Status::InvalidHandle => c"invalid handle",
            Status::BufferTooSmall => c"buffer too small",
            Status::Unsupported => c"unsupported",
            Status::Forked => c"handle belongs to the parent process",
            Status::NoLicense => c"no license",
            Status::NoSeat => c"no seat available",
            Status::Expired => c"license expired",
            Status::FeatureMissing => c"feature not licensed",
            Status::VmNotAllowed => c"virtual machines not allowed",
            Status::ExclusiveDenied => c"exclusive use refused",
            Status::BindingMismatch => c"bound to another machine or container",
            Status::Tampered => c"tampered",
            Status::ClockRollback => c"clock rollback",
            Status::BadSignature => c"bad signature",
            Status::WrongVendor => c"wrong vendor",
            Status::UnknownVersion => c"unknown format version",
            Status::Malformed => c"malformed data",
            Status::DongleShared => c"dongle shared by several hosts",
            Status::LeaseLost => c"lease lost",
            Status::Io => c"i/o error",
            Status::Timeout => c"timed out",
            Status::Internal => c"internal error",
            Status::Panic => c"internal error (panic)",
        }
    }

    /// Its text: "no seat available".
    pub fn text(self) -> &'static str {
        // Every text is an ASCII literal (a test checks), so this never falls back.
        self.c_text().to_str().unwrap_or("")
    }
}

impl Error {
    /// This error's row of the status table.
    pub fn status(&self) -> Status {
        Status::from_error(self)
    }
}

/// The error an error answer carries (a status number and a message, from a container or a
/// license server), rebuilt on the asking side with the same status where the message is all
/// the detail there is. A verdict whose fields did not travel keeps zeros in them; a number
/// this build does not know is an internal error that names it.
pub fn error_from_code(status: u32, message: String) -> Error {
    match Status::from_code(status as i64) {
        Some(Status::NoLicense) => Error::NoLicense(message),
        Some(Status::Expired) => Error::Expired { expiry: 0 },
        Some(Status::DongleShared) => Error::DongleShared(message),
        Some(Status::LeaseLost) => Error::LeaseLost(message),
        Some(Status::NoSeat) => Error::NoSeat {
            quantity: no_seat_quantity(&message),
        },
        Some(Status::FeatureMissing) => Error::FeatureMissing {
            requested: 0,
            licensed: 0,
        },
        Some(Status::VmNotAllowed) => Error::VmNotAllowed(message),
        Some(Status::ExclusiveDenied) => Error::ExclusiveDenied(message),
        Some(Status::Timeout) => Error::Timeout(message),
        Some(Status::BindingMismatch) => Error::BindingMismatch(message),
        Some(Status::Tampered) => Error::Tampered(message),
        Some(Status::ClockRollback) => Error::ClockRollback {
            now: 0,
            high_water: 0,
        },
        Some(Status::BadSignature) => Error::BadSignature(message),
        Some(Status::WrongVendor) => Error::NoLicense(message),
        Some(Status::InvalidArgument) => Error::InvalidArgument(message),
        Some(Status::UnknownVersion) => Error::malformed("container response", message),
        Some(Status::Malformed) => Error::malformed("container request", message),
        _ => Error::Internal(format!("container error {status}: {message}")),
    }
}

/// The quantity a `NO_SEAT` message names: the message is the `Display` text of
/// [`Error::NoSeat`] on the side that refused (the wire carries a status and a message, not
/// the fields), so the quantity is read back from it; 0 when the message is not that text.
fn no_seat_quantity(message: &str) -> u32 {
    let shape = Error::NoSeat { quantity: 0 }.to_string();
    let Some((head, tail)) = shape.split_once('0') else {
        return 0;
    };
    message
        .strip_prefix(head)
        .and_then(|m| m.strip_suffix(tail))
        .filter(|q| !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|q| q.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_no_seat_keeps_its_quantity_across_an_error_answer() {
        for quantity in [1, 7, 10, u32::MAX] {
            let e = Error::NoSeat { quantity };
            let back = error_from_code(e.status().code(), e.to_string());
            assert!(
                matches!(back, Error::NoSeat { quantity: q } if q == quantity),
                "{back:?}"
            );
            assert_eq!(back.to_string(), e.to_string());
        }
        for junk in [
            "",
            "no seat",
            "no seat available: all x seat(s) of the license are in use",
            "no seat available: all -1 seat(s) of the license are in use",
            "no seat available: all 99999999999 seat(s) of the license are in use",
        ] {
            let back = error_from_code(Status::NoSeat.code(), junk.into());
            assert!(
                matches!(back, Error::NoSeat { quantity: 0 }),
                "{junk:?}: {back:?}"
            );
        }
    }

    #[test]
    fn numbers_names_and_texts_are_distinct_and_numbers_round_trip() {
        let mut codes = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        let mut texts = std::collections::HashSet::new();
        for s in Status::ALL {
            assert!(codes.insert(s.code()), "{s:?}: number used twice");
            assert!(names.insert(s.name()), "{s:?}: name used twice");
            assert!(texts.insert(s.text()), "{s:?}: text used twice");
            assert!(s.text().is_ascii() && !s.text().is_empty(), "{s:?}");
            assert_eq!(Status::from_code(s.code() as i64), Some(s));
        }
        assert!(Status::ALL.is_sorted_by_key(|s| s.code()));
        for bogus in [-1, 50, 99, 1234, i64::MAX] {
            assert_eq!(Status::from_code(bogus), None);
        }
    }

    #[test]
    fn an_error_answer_rebuilds_an_error_of_the_same_status() {
        let sent = Error::DongleShared("x".into());
        let back = error_from_code(sent.status().code(), sent.to_string());
        assert!(matches!(back, Error::DongleShared(_)));
        assert!(matches!(
            error_from_code(4242, "?".into()),
            Error::Internal(m) if m == "container error 4242: ?"
        ));
    }
}
