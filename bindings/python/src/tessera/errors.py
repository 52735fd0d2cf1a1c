"""Statuses and exceptions of the Tessera binding.

Every status of the C API (``tessera_status`` in ``include/tessera.h``) is a member of
:class:`Status`. Every call that does not return ``TESSERA_OK`` raises a
:class:`TesseraError`: one subclass per status group (arguments and handles, licensing
verdicts, transport, internal), and below each group one subclass per status, so an app can
catch as broadly or as narrowly as it likes::

    try:
        seat = session.acquire(1)
    except tessera.NoSeatError:          # one status
        ...
    except tessera.LicenseError as e:    # any licensing verdict
        print(e.status, e.message)

Loading the library fails with an :class:`ImportError` subclass (:class:`LibraryLoadError`).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

__all__ = [
    "AbiMismatchError",
    "ArgumentError",
    "BadSignatureError",
    "BindingMismatchError",
    "BufferTooSmallError",
    "ClockRollbackError",
    "DongleSharedError",
    "ExclusiveDeniedError",
    "ExpiredError",
    "FeatureMissingError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidHandleError",
    "ForkedError",
    "InvariantError",
    "LeaseLostError",
    "LibraryLoadError",
    "LibraryNotFoundError",
    "LicenseError",
    "MalformedError",
    "NoLicenseError",
    "NoSeatError",
    "PanicError",
    "Status",
    "TamperedError",
    "TesseraError",
    "TransportError",
    "TransportIOError",
    "TransportTimeoutError",
    "UnknownVersionError",
    "UnsupportedError",
    "VmNotAllowedError",
    "WrongVendorError",
    "error_class",
]


class OpenIntEnum(IntEnum):
    """An IntEnum that also represents numbers it does not know (``UNKNOWN_<n>``), so a
    newer library's value never makes the binding fail while it reports it."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value}"
        member._value_ = value
        return member


class Status(OpenIntEnum):
    """``tessera_status``: the result of every fallible C call. The numbers are the header's
    (``TESSERA_OK`` is ``Status.OK``, ``TESSERA_E_NO_SEAT`` is ``Status.NO_SEAT``, ...);
    they are stable and never reused."""

    OK = 0
    # 1-99: arguments and handles.
    INVALID_ARGUMENT = 1
    INVALID_HANDLE = 2
    BUFFER_TOO_SMALL = 3
    UNSUPPORTED = 4
    FORKED = 5
    # 100-199: licensing verdicts.
    NO_LICENSE = 100
    NO_SEAT = 101
    EXPIRED = 102
    FEATURE_MISSING = 103
    VM_NOT_ALLOWED = 104
    EXCLUSIVE_DENIED = 105
    BINDING_MISMATCH = 106
    TAMPERED = 107
    CLOCK_ROLLBACK = 108
    BAD_SIGNATURE = 109
    WRONG_VENDOR = 110
    UNKNOWN_VERSION = 111
    MALFORMED = 112
    DONGLE_SHARED = 113
    LEASE_LOST = 114
    # 200-299: transport.
    IO = 200
    TIMEOUT = 201
    # 900-999: internal.
    INTERNAL = 900
    PANIC = 901


class TesseraError(Exception):
    """A Tessera call failed.

    ``status`` is the :class:`Status` the C API returned, ``message`` the library's detail
    (``tessera_last_error()``, read on the failing thread right after the call) and
    ``function`` the C function that failed. Errors the binding detects itself before
    calling the library (an integer out of ``uint32_t`` range, a use of a closed object)
    carry the status the library would have given, a message of the binding's, and the
    function that was not called.
    """

    #: The status numbers this class stands for (``range(0)`` for the root class).
    statuses: range = range(0)

    def __init__(self, status: int, message: str = "", function: str = "") -> None:
        self.status: Status = Status(status)
        self.message: str = message
        self.function: str = function
        super().__init__(status, message, function)

    def __str__(self) -> str:
        where = f"{self.function}: " if self.function else ""
        detail = self.message or "(no detail)"
        return f"{where}{self.status.name} ({int(self.status)}): {detail}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status.name}, message={self.message!r},"
            f" function={self.function!r})"
        )


# --- the groups ---------------------------------------------------------------------------


class ArgumentError(TesseraError):
    """Statuses 1-99: an argument or a handle is wrong (a bug in the calling code)."""

    statuses = range(1, 100)


class LicenseError(TesseraError):
    """Statuses 100-199: a licensing verdict (no license, no seat, tampered data, ...)."""

    statuses = range(100, 200)


class TransportError(TesseraError):
    """Statuses 200-299: I/O with a file, a device or the network failed or timed out."""

    statuses = range(200, 300)


class InternalError(TesseraError):
    """Statuses 900-999: a bug in the library."""

    statuses = range(900, 1000)


# --- one class per status -----------------------------------------------------------------


class InvalidArgumentError(ArgumentError, ValueError):
    """``TESSERA_E_INVALID_ARGUMENT``: an argument is NULL, out of range or malformed."""


class InvalidHandleError(ArgumentError):
    """``TESSERA_E_INVALID_HANDLE``: the session or seat is closed, released or unknown."""


class ForkedError(ArgumentError):
    """``TESSERA_E_FORKED``: the session or seat was opened by the parent of this process
    (``os.fork``); handles are per process, so open a new session in the child."""


class BufferTooSmallError(ArgumentError):
    """``TESSERA_E_BUFFER_TOO_SMALL``: an output buffer is too small (the binding sizes
    its buffers itself, so an app does not see this)."""


class UnsupportedError(ArgumentError):
    """``TESSERA_E_UNSUPPORTED``: well formed but not supported by this library or source."""


class NoLicenseError(LicenseError):
    """``TESSERA_E_NO_LICENSE``: no license for the product in any allowed source."""


class NoSeatError(LicenseError):
    """``TESSERA_E_NO_SEAT``: a license exists but all of its seats are in use."""


class ExpiredError(LicenseError):
    """``TESSERA_E_EXPIRED``: the license has expired."""


class FeatureMissingError(LicenseError):
    """``TESSERA_E_FEATURE_MISSING``: the license lacks requested feature bits."""


class VmNotAllowedError(LicenseError):
    """``TESSERA_E_VM_NOT_ALLOWED``: the license forbids virtual machines, and this is one."""


class ExclusiveDeniedError(LicenseError):
    """``TESSERA_E_EXCLUSIVE_DENIED``: exclusive use refused, or someone holds it exclusively."""


class BindingMismatchError(LicenseError):
    """``TESSERA_E_BINDING_MISMATCH``: bound to another machine or container."""


class TamperedError(LicenseError):
    """``TESSERA_E_TAMPERED``: data failed its integrity check (e.g. a modified ciphertext)."""


class ClockRollbackError(LicenseError):
    """``TESSERA_E_CLOCK_ROLLBACK``: the clock runs behind the container's high-water mark."""


class BadSignatureError(LicenseError):
    """``TESSERA_E_BAD_SIGNATURE``: a signature does not verify against the publisher key."""


class WrongVendorError(LicenseError):
    """``TESSERA_E_WRONG_VENDOR``: the data belongs to another publisher."""


class UnknownVersionError(LicenseError):
    """``TESSERA_E_UNKNOWN_VERSION``: a format version this library does not know."""


class MalformedError(LicenseError):
    """``TESSERA_E_MALFORMED``: a file or message is truncated or of the wrong kind."""


class DongleSharedError(LicenseError):
    """``TESSERA_E_DONGLE_SHARED``: a dongle is used by more than one host and locked out."""


class LeaseLostError(LicenseError):
    """``TESSERA_E_LEASE_LOST``: a network seat's lease was lost; acquire again."""


class TransportIOError(TransportError):
    """``TESSERA_E_IO``: an I/O operation failed (file, device, network)."""


class TransportTimeoutError(TransportError):
    """``TESSERA_E_TIMEOUT``: an operation did not finish within its timeout."""


class InvariantError(InternalError):
    """``TESSERA_E_INTERNAL``: a bug in the library; an invariant does not hold."""


class PanicError(InternalError):
    """``TESSERA_E_PANIC``: a panic was caught at the library's API boundary."""


_BY_STATUS: dict[Status, type[TesseraError]] = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.INVALID_HANDLE: InvalidHandleError,
    Status.BUFFER_TOO_SMALL: BufferTooSmallError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.FORKED: ForkedError,
    Status.NO_LICENSE: NoLicenseError,
    Status.NO_SEAT: NoSeatError,
    Status.EXPIRED: ExpiredError,
    Status.FEATURE_MISSING: FeatureMissingError,
    Status.VM_NOT_ALLOWED: VmNotAllowedError,
    Status.EXCLUSIVE_DENIED: ExclusiveDeniedError,
    Status.BINDING_MISMATCH: BindingMismatchError,
    Status.TAMPERED: TamperedError,
    Status.CLOCK_ROLLBACK: ClockRollbackError,
    Status.BAD_SIGNATURE: BadSignatureError,
    Status.WRONG_VENDOR: WrongVendorError,
    Status.UNKNOWN_VERSION: UnknownVersionError,
    Status.MALFORMED: MalformedError,
    Status.DONGLE_SHARED: DongleSharedError,
    Status.LEASE_LOST: LeaseLostError,
    Status.IO: TransportIOError,
    Status.TIMEOUT: TransportTimeoutError,
    Status.INTERNAL: InvariantError,
    Status.PANIC: PanicError,
}

_GROUPS: tuple[type[TesseraError], ...] = (
    ArgumentError,
    LicenseError,
    TransportError,
    InternalError,
)


def error_class(status: int) -> type[TesseraError]:
    """The exception class for a non-OK ``status``: the status's own class, else (for a
    number this binding does not know) its group's, else :class:`TesseraError`."""
    cls = _BY_STATUS.get(Status(status))
    if cls is not None:
        return cls
    for group in _GROUPS:
        if status in group.statuses:
            return group
    return TesseraError


# --- loading the library ------------------------------------------------------------------


class LibraryLoadError(ImportError):
    """libtessera could not be used: not found, not a Tessera library, or of another ABI."""


class LibraryNotFoundError(LibraryLoadError):
    """No libtessera loaded from any place looked at. ``attempts`` lists each place
    (``(place, why it did not load)``), in the order they were tried."""

    def __init__(self, message: str, attempts: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.attempts: list[tuple[str, str]] = attempts


class AbiMismatchError(LibraryLoadError):
    """The library loaded speaks another ABI than this binding was written for."""

    def __init__(self, path: str, library_abi: int, binding_abi: int) -> None:
        super().__init__(
            f"{path} has Tessera ABI version {library_abi}, but this binding was written for"
            f" ABI version {binding_abi} (TESSERA_ABI_VERSION); use a libtessera of ABI"
            f" {binding_abi} or a binding made for ABI {library_abi}",
            path=path,
        )
        self.library_abi: int = library_abi
        self.binding_abi: int = binding_abi
