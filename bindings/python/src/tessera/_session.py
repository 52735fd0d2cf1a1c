"""Sessions and seats: the Pythonic face of the C API.

A :class:`Session` is the app's open handle to the runtime for one publisher; a
:class:`Seat` is one unit of a product's license quantity in use. Both are context
managers and have an idempotent ``close()``; a seat is also released when its session
closes (as in the C library) or when it is garbage-collected. Every failing call raises a
:class:`~tessera.errors.TesseraError`; nothing returns a status.
"""

from __future__ import annotations

import ctypes
import math
import threading
import weakref
from collections.abc import Callable, Iterable
from ctypes import POINTER, byref, c_size_t, c_uint8, c_uint64
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import IntFlag
from types import TracebackType
from typing import Any

from . import _ffi
from .errors import InvalidArgumentError, InvalidHandleError, OpenIntEnum, Status, error_class

__all__ = [
    "AcquireFlag",
    "ContainerKind",
    "CountingUnit",
    "LicenseFlag",
    "LicenseInfo",
    "Mode",
    "Seat",
    "SeatInfo",
    "Session",
    "Source",
    "Transport",
]

_U32_MAX = 0xFFFF_FFFF
#: How many times :meth:`Session.licenses` asks again when the list grew between its size
#: query and the call that fills the buffer.
_LIST_TRIES = 8


class Source(IntFlag):
    """License sources (``TESSERA_SOURCE_*``), a bit mask."""

    DONGLE = _ffi.TESSERA_SOURCE_DONGLE
    SOFTWARE = _ffi.TESSERA_SOURCE_SOFTWARE
    NETWORK = _ffi.TESSERA_SOURCE_NETWORK
    ALL = _ffi.TESSERA_SOURCE_ALL


class AcquireFlag(IntFlag):
    """Flags of :meth:`Session.acquire` (``TESSERA_ACQUIRE_*``)."""

    EXCLUSIVE = _ffi.TESSERA_ACQUIRE_EXCLUSIVE


class Mode(OpenIntEnum):
    """How :meth:`Seat.encrypt` encrypts (``TESSERA_CRYPT_*``)."""

    #: The container derives a per-message key; the data is encrypted in the app.
    DERIVED = _ffi.TESSERA_CRYPT_DERIVED
    #: The data is encrypted inside the container (small data; the key never leaves).
    DIRECT = _ffi.TESSERA_CRYPT_DIRECT


class CountingUnit(OpenIntEnum):
    """What one seat covers (``TESSERA_UNIT_*``)."""

    STATION = _ffi.TESSERA_UNIT_STATION
    SESSION = _ffi.TESSERA_UNIT_SESSION
    PROCESS = _ffi.TESSERA_UNIT_PROCESS
    HANDLE = _ffi.TESSERA_UNIT_HANDLE


class Transport(OpenIntEnum):
    """How a dongle is attached (``TESSERA_TRANSPORT_*``)."""

    NONE = _ffi.TESSERA_TRANSPORT_NONE
    HID = _ffi.TESSERA_TRANSPORT_HID
    MSD = _ffi.TESSERA_TRANSPORT_MSD
    USB = _ffi.TESSERA_TRANSPORT_USB


class ContainerKind(OpenIntEnum):
    """Where a license lives (``TESSERA_CONTAINER_*``)."""

    SOFTWARE = _ffi.TESSERA_CONTAINER_SOFTWARE
    DONGLE = _ffi.TESSERA_CONTAINER_DONGLE


class LicenseFlag(IntFlag):
    """Bits of :attr:`LicenseInfo.flags` (``TESSERA_LICENSE_*``)."""

    #: The license allows exclusive use (``AcquireFlag.EXCLUSIVE``).
    EXCLUSIVE_ALLOWED = _ffi.TESSERA_LICENSE_EXCLUSIVE_ALLOWED
    #: A seat borrowed from a license server (:meth:`Session.borrow`), kept on this machine.
    BORROWED = _ffi.TESSERA_LICENSE_BORROWED


@dataclass(frozen=True)
class SeatInfo:
    """What a seat is (``tessera_seat_details``), strings decoded."""

    vendor_id: int
    product_code: int
    #: Feature bits the license grants.
    features: int
    #: The license quantity.
    quantity: int
    #: Seats of the license in use now, this one included.
    seats_in_use: int
    #: Expiry in seconds since the Unix epoch; 0 when the license is perpetual.
    expiry: int
    #: Where the license is: one bit.
    source: Source
    counting_unit: CountingUnit
    container_kind: ContainerKind
    #: ``AcquireFlag.EXCLUSIVE`` when the seat is held exclusively.
    flags: AcquireFlag
    container_serial: str
    transport: Transport
    #: The license server's name for a network seat; "" otherwise.
    server: str

    @property
    def exclusive(self) -> bool:
        """Whether the seat is held exclusively."""
        return bool(self.flags & AcquireFlag.EXCLUSIVE)

    @property
    def borrowed(self) -> bool:
        """Whether it is a seat borrowed from a license server (``TESSERA_SEAT_BORROWED``);
        its :attr:`expiry` is then when the borrowing ends."""
        return bool(int(self.flags) & _ffi.TESSERA_SEAT_BORROWED)

    @property
    def expires_at(self) -> datetime | None:
        """The expiry as an aware UTC datetime; None when the license is perpetual."""
        if self.expiry == 0:
            return None
        return datetime.fromtimestamp(self.expiry, tz=timezone.utc)

    @classmethod
    def from_c(cls, d: _ffi.tessera_seat_details) -> SeatInfo:
        """Converts the C struct."""
        return cls(
            vendor_id=d.vendor_id,
            product_code=d.product_code,
            features=d.features,
            quantity=d.quantity,
            seats_in_use=d.seats_in_use,
            expiry=d.expiry,
            source=Source(d.source),
            counting_unit=CountingUnit(d.counting_unit),
            container_kind=ContainerKind(d.container_kind),
            flags=AcquireFlag(d.flags),
            container_serial=_decode(d.container_serial),
            transport=Transport(d.transport),
            server=_decode(d.server),
        )


@dataclass(frozen=True)
class LicenseInfo:
    """One license a session can see (``tessera_license_info``), listed by
    :meth:`Session.licenses` without taking a seat; strings decoded."""

    vendor_id: int
    product_code: int
    #: Feature bits the license grants.
    features: int
    #: The license quantity.
    quantity: int
    #: Seats of the license in use now: on this machine for a dongle or software
    #: container, on the server for a network license.
    seats_in_use: int
    #: Expiry in seconds since the Unix epoch; 0 when the license is perpetual.
    expiry: int
    #: Where the license is: one bit.
    source: Source
    counting_unit: CountingUnit
    container_kind: ContainerKind
    #: ``LicenseFlag.EXCLUSIVE_ALLOWED`` when the license allows exclusive use.
    flags: LicenseFlag
    #: What :meth:`Session.acquire` of this license would meet now, free seats aside:
    #: ``Status.OK``, or the verdict (``Status.EXPIRED``, ``Status.VM_NOT_ALLOWED``,
    #: ``Status.CLOCK_ROLLBACK``, ...).
    status: Status
    #: How a dongle is attached (``Transport.NONE`` for a software container).
    transport: Transport
    container_serial: str
    #: The license server's name for a network license (for a borrowed seat, the server
    #: it came from); "" otherwise.
    server: str
    #: For a borrowed seat (``LicenseFlag.BORROWED``): when it ends, in seconds since the
    #: Unix epoch; 0 otherwise.
    borrowed_until: int = 0

    @property
    def borrowed(self) -> bool:
        """Whether it is a seat borrowed from a license server, kept on this machine."""
        return bool(self.flags & LicenseFlag.BORROWED)

    @property
    def exclusive_allowed(self) -> bool:
        """Whether the license allows exclusive use."""
        return bool(self.flags & LicenseFlag.EXCLUSIVE_ALLOWED)

    @property
    def expires_at(self) -> datetime | None:
        """The expiry as an aware UTC datetime; None when the license is perpetual."""
        if self.expiry == 0:
            return None
        return datetime.fromtimestamp(self.expiry, tz=timezone.utc)

    @classmethod
    def from_c(cls, d: _ffi.tessera_license_info) -> LicenseInfo:
        """Converts the C struct."""
        return cls(
            vendor_id=d.vendor_id,
            product_code=d.product_code,
            features=d.features,
            quantity=d.quantity,
            seats_in_use=d.seats_in_use,
            expiry=d.expiry,
            source=Source(d.source),
            counting_unit=CountingUnit(d.counting_unit),
            container_kind=ContainerKind(d.container_kind),
            flags=LicenseFlag(d.flags),
            status=Status(d.status),
            transport=Transport(d.transport),
            container_serial=_decode(d.container_serial),
            server=_decode(d.server),
            # An entry the library filled only as far as the first struct leaves it 0.
            borrowed_until=d.borrowed_until
            if d.struct_size >= _ffi.tessera_license_info.borrowed_until.offset + 8
            else 0,
        )


def _decode(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


# --- calling the library -----------------------------------------------------------------------


def _check(status: int, function: str) -> None:
    """Raises the status's exception unless it is OK. Reads ``tessera_last_error`` at once,
    on this thread (it is thread-local, and ctypes calls run on the calling thread)."""
    if status != Status.OK:
        raise error_class(status)(status, _ffi.last_error(), function)


def _u32(name: str, value: int, function: str) -> int:
    """``value`` as a ``uint32_t`` argument; ctypes would silently truncate it."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _U32_MAX:
        raise InvalidArgumentError(
            Status.INVALID_ARGUMENT, f"{name} {value} is out of uint32_t range", function
        )
    return int(value)


def _wait_ms(wait: float | timedelta, function: str) -> int:
    """``wait`` (seconds, or a timedelta) as the ``timeout_ms`` of ``tessera_acquire_wait``,
    rounded up so that a short wait never becomes a single try."""
    if isinstance(wait, timedelta):
        seconds = wait.total_seconds()
    elif isinstance(wait, (int, float)) and not isinstance(wait, bool):
        seconds = float(wait)
    else:
        raise TypeError(f"wait must be seconds or a timedelta, not {type(wait).__name__}")
    if not (math.isfinite(seconds) and 0 <= seconds and math.ceil(seconds * 1000) <= _U32_MAX):
        raise InvalidArgumentError(
            Status.INVALID_ARGUMENT,
            f"wait {wait!r} is not between 0 and {_U32_MAX} milliseconds",
            function,
        )
    return math.ceil(seconds * 1000)


def _as_bytes(name: str, data: bytes | bytearray | memoryview) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{name} must be bytes-like, not {type(data).__name__}")


def _in_ptr(data: bytes) -> Any:
    """``(const uint8_t *)`` for ``data`` without a copy; NULL when it is empty."""
    if not data:
        return None
    return ctypes.cast(ctypes.c_char_p(data), POINTER(c_uint8))


def _sized(function: str, call: Callable[[Any, int, Any], int]) -> bytes:
    """Runs a call with the size-query convention: ``call(NULL, 0, &n)`` answers
    ``TESSERA_E_BUFFER_TOO_SMALL`` with the size in ``n``; then ``call(buf, n, &n)``.
    (When the size needed is 0 the query itself is the call and answers OK.)"""
    needed = c_size_t(0)
    status = call(None, 0, byref(needed))
    if status == Status.OK:
        if needed.value != 0:
            raise error_class(Status.INTERNAL)(
                Status.INTERNAL,
                f"a size query answered OK with {needed.value} bytes written to no buffer",
                function,
            )
        return b""
    if status != Status.BUFFER_TOO_SMALL:
        _check(status, function)
    cap = needed.value
    buf = (c_uint8 * cap)()
    written = c_size_t(0)
    _check(call(buf, cap, byref(written)), function)
    if written.value > cap:
        raise error_class(Status.INTERNAL)(
            Status.INTERNAL, f"{written.value} bytes written to a {cap}-byte buffer", function
        )
    return ctypes.string_at(buf, written.value)


def _release_quietly(handle: int) -> None:
    """Finalizer of a seat that was never released: releases it, ignoring the status (the
    session may have released it already)."""
    _ffi.lib.tessera_release(handle)


def _close_quietly(handle: int) -> None:
    """Finalizer of a session that was never closed."""
    _ffi.lib.tessera_close(handle)


# --- Session ---------------------------------------------------------------------------------


class Session:
    """An open session for one publisher (``tessera_open``).

    ``publisher_key`` is the publisher's Ed25519 public key (32 bytes) compiled into the
    app. ``sources`` limits where licenses are looked for (all by default: a dongle, then a
    software container, then a license server). ``timeout_ms`` bounds any one operation
    (None or 0: the library's default, 5 s). ``servers`` lists license servers
    (``host[:port]``); None means the ``TESSERA_SERVERS`` environment variable.

    Opening succeeds without a license (so the app can offer activation);
    :meth:`acquire` then says why there is none. Closing releases every seat the session
    still holds. All methods are thread-safe.
    """

    def __init__(
        self,
        vendor_id: int,
        publisher_key: bytes,
        *,
        sources: Source | int = Source.ALL,
        timeout_ms: int | None = None,
        servers: str | Iterable[str] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._handle = 0
        self._seats: weakref.WeakSet[Seat] = weakref.WeakSet()
        fn = "tessera_open"
        key = _as_bytes("publisher_key", publisher_key)
        # Zero and NULL fields mean the library's defaults (what tessera_open_options_init
        # writes); struct_size tells the library which version of the struct this binding knows.
        opts = _ffi.new_open_options()
        opts.vendor_id = _u32("vendor_id", vendor_id, fn)
        key_buf = (c_uint8 * len(key)).from_buffer_copy(key)
        opts.publisher_key = ctypes.cast(key_buf, POINTER(c_uint8))
        opts.publisher_key_len = len(key)
        opts.sources = _u32("sources", sources, fn)
        opts.timeout_ms = 0 if timeout_ms is None else _u32("timeout_ms", timeout_ms, fn)
        servers_c: bytes | None = None
        if servers is not None:
            text = servers if isinstance(servers, str) else ",".join(servers)
            if "\0" in text:
                raise InvalidArgumentError(
                    Status.INVALID_ARGUMENT, "servers contains a NUL character", fn
                )
            servers_c = text.encode("utf-8")
        opts.servers = servers_c
        handle = _ffi.tessera_session(0)
        _check(_ffi.lib.tessera_open(byref(opts), byref(handle)), fn)
        self._handle = handle.value
        self._finalizer = weakref.finalize(self, _close_quietly, self._handle)
        self.vendor_id: int = vendor_id

    @property
    def handle(self) -> int:
        """The C handle (``tessera_session``); 0 once closed. Still owned by this object."""
        return self._handle

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._handle == 0

    def _live(self, function: str) -> int:
        handle = self._handle
        if handle == 0:
            raise InvalidHandleError(Status.INVALID_HANDLE, "the session is closed", function)
        return handle

    def close(self) -> None:
        """Closes the session and releases every seat it still holds (their objects then
        raise :class:`InvalidHandleError`). Closing again does nothing."""
        with self._lock:
            handle, self._handle = self._handle, 0
            seats = list(self._seats)
        if handle == 0:
            return
        self._finalizer.detach()
        for seat in seats:
            seat._forget("the seat was released when its session was closed")
        _check(_ffi.lib.tessera_close(handle), "tessera_close")

    def acquire(
        self,
        product_code: int,
        features: int = 0,
        flags: AcquireFlag | int = 0,
        *,
        wait: float | timedelta | None = None,
    ) -> Seat:
        """Acquires a seat of ``product_code`` whose license grants at least the
        ``features`` bits. ``flags``: 0 or ``AcquireFlag.EXCLUSIVE``. Raises
        :class:`NoLicenseError`, :class:`NoSeatError`, :class:`FeatureMissingError`, ...
        when there is none. Release the seat with ``with`` or :meth:`Seat.release`.

        ``wait`` (seconds, or a ``timedelta``): while every seat is taken
        (:class:`NoSeatError`, or :class:`ExclusiveDeniedError` because another holder has
        the license), wait up to that long for one to come free (``tessera_acquire_wait``:
        the library tries again after pauses growing from 20 ms to 500 ms). When the time
        is up the last answer is raised; any other answer (:class:`NoLicenseError`, ...)
        ends the wait at once. ``wait=0`` tries once; ``None`` (the default) does not wait.
        The call blocks its thread, not the others (ctypes releases the GIL), and cannot be
        interrupted by Ctrl-C before the wait ends."""
        fn = "tessera_acquire" if wait is None else "tessera_acquire_wait"
        product = _u32("product_code", product_code, fn)
        feats = _u32("features", features, fn)
        flag_bits = _u32("flags", flags, fn)
        timeout_ms = None if wait is None else _wait_ms(wait, fn)
        out = _ffi.tessera_seat(0)
        handle = self._live(fn)
        if timeout_ms is None:
            status = _ffi.lib.tessera_acquire(handle, product, feats, flag_bits, byref(out))
        else:
            status = _ffi.lib.tessera_acquire_wait(
                handle, product, feats, flag_bits, timeout_ms, byref(out)
            )
        _check(status, fn)
        with self._lock:
            if self._handle != handle:
                # close() ran on another thread while the seat was being acquired: the
                # library may not have counted this seat among the session's, so release
                # it here rather than leave it held by a closed session.
                _ffi.lib.tessera_release(out.value)
                raise InvalidHandleError(
                    Status.INVALID_HANDLE, "the session was closed during the acquire", fn
                )
            seat = Seat(self, out.value, product)
            self._seats.add(seat)
        return seat

    def licenses(self) -> list[LicenseInfo]:
        """The licenses of the session's publisher that its sources hold (software
        containers, dongles, the license server), without taking a seat
        (``tessera_license_list``): product, features, expiry, quantity, seats in use, and
        what an acquire would meet (:attr:`LicenseInfo.status`). Licenses the publisher's
        key does not verify are not listed; no license at all is an empty list. Raises
        when a source cannot be read and no other source holds a license (the server is
        down, the home is unreadable)."""
        fn = "tessera_license_list"
        handle = self._live(fn)
        entry_size = ctypes.sizeof(_ffi.tessera_license_info)
        cap = 0
        buf: Any = None  # the size query: (NULL, 0)
        for _ in range(_LIST_TRIES):
            count = c_size_t(0)
            status = _ffi.lib.tessera_license_list(handle, buf, cap, entry_size, byref(count))
            if status == Status.OK:
                if count.value > cap:
                    raise error_class(Status.INTERNAL)(
                        Status.INTERNAL,
                        f"{count.value} licenses listed into room for {cap}",
                        fn,
                    )
                return [LicenseInfo.from_c(buf[i]) for i in range(count.value)]
            if status != Status.BUFFER_TOO_SMALL:
                _check(status, fn)
            if count.value <= cap:
                raise error_class(Status.INTERNAL)(
                    Status.INTERNAL,
                    f"room for {cap} licenses was too small for {count.value}",
                    fn,
                )
            # More licenses than room (the first time: the size query's answer; later: the
            # list grew between two calls, e.g. an activation was installed meanwhile).
            cap = count.value
            buf = (_ffi.tessera_license_info * cap)()
        raise error_class(Status.BUFFER_TOO_SMALL)(
            Status.BUFFER_TOO_SMALL,
            f"the license list grew between each of {_LIST_TRIES} tries to read it",
            fn,
        )

    def activation_request(self) -> bytes:
        """An offline activation request for this machine (step one of offline
        activation: send it to the publisher, who answers with an activation)."""
        fn = "tessera_activation_request"
        handle = self._live(fn)
        return _sized(
            fn, lambda out, cap, n: _ffi.lib.tessera_activation_request(handle, out, cap, n)
        )

    def activation_install(self, activation: bytes) -> None:
        """Installs an activation (step two), checked against the session's publisher
        key. On any failure the container is unchanged."""
        fn = "tessera_activation_install"
        data = _as_bytes("activation", activation)
        handle = self._live(fn)
        _check(_ffi.lib.tessera_activation_install(handle, _in_ptr(data), len(data)), fn)

    def borrow(self, product_code: int, days: int, features: int = 0) -> int:
        """Borrows a seat of ``product_code`` (with at least the ``features`` bits) from the
        session's license server for ``days`` days (``tessera_borrow``): it is kept in this
        machine's container, and :meth:`acquire` serves it from there with no server until
        it ends. Returns when it ends, in seconds since the Unix epoch. Raises
        :class:`InvalidArgumentError` for days beyond what the license allows,
        :class:`NoLicenseError` when the license does not lend (or there is no server),
        :class:`NoSeatError` when every seat is taken, a :class:`TransportError` when no
        server can be reached."""
        fn = "tessera_borrow"
        product = _u32("product_code", product_code, fn)
        n_days = _u32("days", days, fn)
        feats = _u32("features", features, fn)
        handle = self._live(fn)
        until = c_uint64(0)
        _check(_ffi.lib.tessera_borrow(handle, product, feats, n_days, byref(until)), fn)
        return until.value

    def return_borrowed(self, product_code: int) -> None:
        """Gives a seat of ``product_code`` borrowed into this machine back to the license
        server before it ends (``tessera_return_borrowed``); the server frees it at once.
        Raises :class:`NoLicenseError` when none is borrowed here, a
        :class:`TransportError` when no server can be reached (the seat is kept)."""
        fn = "tessera_return_borrowed"
        product = _u32("product_code", product_code, fn)
        handle = self._live(fn)
        _check(_ffi.lib.tessera_return_borrowed(handle, product), fn)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"handle={self._handle:#x}" if self._handle else "closed"
        return f"<tessera.Session vendor={self.vendor_id:#x} {state}>"


# --- Seat ------------------------------------------------------------------------------------


class Seat:
    """A held seat (``tessera_seat``), made by :meth:`Session.acquire`.

    Released by :meth:`release` (or ``close()``, or leaving a ``with`` block), when its
    session closes, or when it is garbage-collected. A released seat raises
    :class:`InvalidHandleError`. The seat keeps its session alive. Thread-safe.
    """

    def __init__(self, session: Session, handle: int, product_code: int) -> None:
        self._lock = threading.Lock()
        self._session = session
        self._handle = handle
        self._why_gone = "the seat was released"
        self.product_code: int = product_code
        self._finalizer = weakref.finalize(self, _release_quietly, handle)

    @property
    def handle(self) -> int:
        """The C handle (``tessera_seat``); 0 once released. Still owned by this object."""
        return self._handle

    @property
    def session(self) -> Session:
        """The session the seat was acquired in."""
        return self._session

    @property
    def released(self) -> bool:
        """Whether the seat was released (by this object or by closing its session)."""
        return self._handle == 0

    def _live(self, function: str) -> int:
        handle = self._handle
        if handle == 0:
            raise InvalidHandleError(Status.INVALID_HANDLE, self._why_gone, function)
        return handle

    def _forget(self, why: str) -> None:
        """The library released the seat (its session closed): only drop the handle."""
        with self._lock:
            if self._handle == 0:
                return
            self._handle = 0
            self._why_gone = why
        self._finalizer.detach()

    def release(self) -> None:
        """Releases the seat. Releasing again (or after the session closed) does nothing."""
        with self._lock:
            handle, self._handle = self._handle, 0
        if handle == 0:
            return
        self._finalizer.detach()
        status = _ffi.lib.tessera_release(handle)
        if status == Status.INVALID_HANDLE and self._session.closed:
            # The session closed on another thread at the same moment and released it.
            return
        _check(status, "tessera_release")

    close = release

    @property
    def info(self) -> SeatInfo:
        """What the seat is (``tessera_seat_info``), read now: ``seats_in_use`` changes."""
        fn = "tessera_seat_info"
        handle = self._live(fn)
        details = _ffi.new_seat_details()
        _check(_ffi.lib.tessera_seat_info(handle, byref(details)), fn)
        return SeatInfo.from_c(details)

    def encrypt(
        self, data: bytes | bytearray | memoryview, mode: Mode | int = Mode.DERIVED
    ) -> bytes:
        """Encrypts ``data`` with the product's key. The ciphertext is
        ``len(data) + CIPHERTEXT_OVERHEAD`` bytes, self-describing, and decrypts on any
        machine licensed for the product. A seat on a license server encrypts in the app
        (format 2, under its own seat key) and keeps working while its server is out of
        reach, for as long as its lease runs (see ``tessera_encrypt`` in tessera.h)."""
        fn = "tessera_encrypt"
        plain = _as_bytes("data", data)
        flags = _u32("mode", mode, fn)
        handle = self._live(fn)
        ptr = _in_ptr(plain)
        return _sized(
            fn,
            lambda out, cap, n: _ffi.lib.tessera_encrypt(
                handle, flags, ptr, len(plain), out, cap, n
            ),
        )

    def decrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """Decrypts a Tessera ciphertext (either mode, either format). Any modification of
        it raises :class:`TamperedError`. A seat on a license server opens what it wrote, and
        what it opened before, with its server out of reach; what it never opened needs the
        server (see ``tessera_decrypt`` in tessera.h)."""
        fn = "tessera_decrypt"
        cipher = _as_bytes("data", data)
        handle = self._live(fn)
        ptr = _in_ptr(cipher)
        return _sized(
            fn,
            lambda out, cap, n: _ffi.lib.tessera_decrypt(handle, 0, ptr, len(cipher), out, cap, n),
        )

    def __enter__(self) -> Seat:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = f"handle={self._handle:#x}" if self._handle else "released"
        return f"<tessera.Seat product={self.product_code} {state}>"
