//! The library's one error type. Every variant maps to exactly one row of the status table
//! beside it ([`Status`](crate::status::Status), `src/status.rs`), whose numbers travel on
//! the wire and whose C face is `tessera_status`; binaries print it with `Display`.

use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside the runtime, grouped as the C status codes are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- arguments --------------------------------------------------------------------
    /// An argument is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A session or seat handle is stale, released, forged or of the wrong kind.
    #[error("invalid handle: {0}")]
    InvalidHandle(String),
    /// The output buffer is too small; `needed` bytes are required.
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
    },
    /// The request is well formed but not supported by this build or this source.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A session or seat used in a process forked from the one that opened it: handles
    /// are per process (`tessera.h`, "fork").
    #[error("handle belongs to the parent process: {0}")]
    Forked(String),

    // --- licensing verdicts -----------------------------------------------------------
    /// No license for this product was found in any allowed source.
    #[error("no license: {0}")]
    NoLicense(String),
    /// A license exists but every seat of it is in use.
    #[error("no seat available: all {quantity} seat(s) of the license are in use")]
    NoSeat {
        /// The license quantity.
        quantity: u32,
    },
    /// The license exists but has expired.
    #[error("license expired at {expiry} (unix time)")]
    Expired {
        /// Expiry, seconds since the Unix epoch.
        expiry: u64,
    },
    /// The license lacks one or more requested feature bits.
    #[error("license lacks requested features: requested {requested:#x}, licensed {licensed:#x}")]
    FeatureMissing {
        /// The feature mask asked for.
        requested: u32,
        /// The feature mask the license grants.
        licensed: u32,
    },
    /// The license forbids virtual machines and this is one.
    #[error("license does not allow virtual machines, and this is a {0}")]
    VmNotAllowed(String),
    /// An exclusive seat was refused (not allowed by the license, or others hold seats), or an
    /// exclusive holder blocks this acquire.
    #[error("exclusive use refused: {0}")]
    ExclusiveDenied(String),
    /// A container or license is bound to another machine or container.
    #[error("binding mismatch: {0}")]
    BindingMismatch(String),
    /// Data failed its integrity check (file edited, ciphertext modified).
    #[error("tampered: {0}")]
    Tampered(String),
    /// The clock runs behind the container's high-water mark.
    #[error(
        "clock rollback: system time {now} is behind the container's high-water mark {high_water}"
    )]
    ClockRollback {
        /// Now, seconds since the Unix epoch.
        now: u64,
        /// The container's high-water mark.
        high_water: u64,
    },
    /// The dongle is used by several hosts at once and refuses license operations.
    #[error("dongle shared: {0}")]
    DongleShared(String),
    /// A seat could not be kept: a network seat's lease (the server was lost past the grace
    /// period, or it no longer knows the seat), or a local seat whose slot file was deleted
    /// or replaced while another process took the seat.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// A signature does not verify against the publisher key.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Data belongs to another publisher (vendor id).
    #[error("wrong vendor: expected {expected:#x}, found {found:#x}")]
    WrongVendor {
        /// The vendor id the session was opened for.
        expected: u32,
        /// The vendor id in the data.
        found: u32,
    },
    /// A file or message has a format version this build does not know.
    #[error("unknown format version {found} of {what} (this build reads version {supported})")]
    UnknownVersion {
        /// What was being read.
        what: &'static str,
        /// The version found.
        found: u16,
        /// The version supported.
        supported: u16,
    },
    /// A file or message is truncated or not of the expected kind.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },

    // --- transport ----------------------------------------------------------------------
    /// An I/O operation failed.
    #[error("i/o error on {path}: {error}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error. Its text is in this error's message, so it is not also
        /// this error's `source()`: a chain printer (`{:#}`) would say it twice.
        error: std::io::Error,
    },
    /// An operation did not finish within its timeout.
    #[error("timed out: {0}")]
    Timeout(String),

    // --- internal -----------------------------------------------------------------------
    /// A bug: an invariant of the library does not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// A malformed-input error.
    pub fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            detail: detail.into(),
        }
    }

    /// The precedence of this error when several sources fail: the most specific verdict
    /// wins, so that a user sees "expired" rather than "no license".
    pub fn specificity(&self) -> u8 {
        match self {
            Error::NoLicense(_) => 0,
            Error::Io { .. } | Error::Timeout(_) => 1,
            Error::WrongVendor { .. } | Error::BadSignature(_) => 2,
            Error::FeatureMissing { .. } => 3,
            Error::Malformed { .. } | Error::UnknownVersion { .. } => 4,
            Error::BindingMismatch(_) | Error::Tampered(_) => 5,
            Error::VmNotAllowed(_) | Error::Expired { .. } | Error::ClockRollback { .. } => 6,
            Error::ExclusiveDenied(_)
            | Error::NoSeat { .. }
            | Error::DongleShared(_)
            | Error::LeaseLost(_) => 7,
            _ => 8,
        }
    }
}
