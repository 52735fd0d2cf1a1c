"""Sessions and seats against the real library: the quickstart flow, seat info, encryption
in both modes, and the lifetime rules (with, close, release, garbage collection)."""

from __future__ import annotations

import gc
import os

import pytest

import tessera
from tessera import Mode, Status


def test_library_is_the_one_asked_for() -> None:
    assert tessera.library_path == os.environ["TESSERA_LIBRARY"]
    assert tessera.library_abi_version() == tessera.ABI_VERSION == 1
    assert tessera.library_version() == "0.1.0"


def test_quickstart_flow() -> None:
    with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as session:
        assert not session.closed and session.handle != 0
        with session.acquire(tessera.DEMO_PRODUCT_CODE, features=0x1) as seat:
            info = seat.info
            assert info.product_code == 1 and info.vendor_id == 0x7E55
            for mode, message in [
                (Mode.DERIVED, b"Hello from a protected app"),
                (Mode.DIRECT, b"Keys never leave the container"),
            ]:
                ciphertext = seat.encrypt(message, mode=mode)
                assert len(ciphertext) == len(message) + tessera.CIPHERTEXT_OVERHEAD
                assert message not in ciphertext
                assert seat.decrypt(ciphertext) == message
                flipped = bytearray(ciphertext)
                flipped[len(flipped) // 2] ^= 0x01
                with pytest.raises(tessera.TamperedError) as e:
                    seat.decrypt(bytes(flipped))
                assert e.value.status == Status.TAMPERED
        assert seat.released
        with pytest.raises(tessera.InvalidHandleError):
            seat.encrypt(b"x")
    assert session.closed and session.handle == 0


def test_seat_info_describes_the_licenses(session: tessera.Session) -> None:
    with session.acquire(1) as seat:
        info = seat.info
    assert isinstance(info, tessera.SeatInfo)
    assert (info.vendor_id, info.product_code, info.features) == (0x7E55, 1, 0xFF)
    assert (info.quantity, info.seats_in_use) == (2, 1)
    assert info.counting_unit is tessera.CountingUnit.PROCESS
    assert info.source is tessera.Source.SOFTWARE
    assert info.container_kind is tessera.ContainerKind.SOFTWARE
    assert info.transport is tessera.Transport.NONE
    assert info.expiry == 0 and info.expires_at is None
    assert info.flags == tessera.AcquireFlag(0) and not info.exclusive
    assert isinstance(info.container_serial, str) and info.container_serial.startswith("SW-")
    assert info.server == ""

    with session.acquire(3, features=0x1) as seat:
        info = seat.info
    assert (info.product_code, info.features, info.quantity) == (3, 0x01, 10)
    assert info.counting_unit is tessera.CountingUnit.HANDLE


def test_seats_in_use_counts_handles(session: tessera.Session) -> None:
    seats = [session.acquire(3) for _ in range(3)]
    try:
        assert [s.info.seats_in_use for s in seats] == [3, 3, 3]
        seats[0].release()
        assert seats[1].info.seats_in_use == 2
    finally:
        for s in seats:
            s.release()


def test_exclusive_seat(session: tessera.Session) -> None:
    with session.acquire(1, flags=tessera.AcquireFlag.EXCLUSIVE) as seat:
        assert seat.info.exclusive
        assert seat.info.flags == tessera.AcquireFlag.EXCLUSIVE
        # Nobody else gets a seat of the license while it is held exclusively.
        with pytest.raises(tessera.ExclusiveDeniedError):
            session.acquire(1)
    with session.acquire(1) as seat:
        assert not seat.info.exclusive


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("size", [0, 1, 55, 56, 57, 4096, 1 << 20])
def test_round_trip_of_every_size(session: tessera.Session, mode: Mode, size: int) -> None:
    if mode is Mode.DIRECT and size > 4096:
        size = 4096  # direct mode is for small data
    data = os.urandom(size)
    with session.acquire(1) as seat:
        ciphertext = seat.encrypt(data, mode=mode)
        assert len(ciphertext) == size + tessera.CIPHERTEXT_OVERHEAD
        assert seat.decrypt(ciphertext) == data


def test_bytes_like_inputs_and_fresh_nonces(session: tessera.Session) -> None:
    with session.acquire(1) as seat:
        a = seat.encrypt(bytearray(b"same"))
        b = seat.encrypt(memoryview(b"same"))
        assert a != b, "two encryptions of the same data must differ (fresh nonce)"
        assert seat.decrypt(bytearray(a)) == seat.decrypt(memoryview(b)) == b"same"
        with pytest.raises(TypeError):
            seat.encrypt("text is not bytes")  # type: ignore[arg-type]


def test_ciphertext_is_portable_across_sessions_and_modes() -> None:
    key = tessera.DEMO_PUBLISHER_KEY
    with tessera.Session(0x7E55, key) as one, tessera.Session(0x7E55, key) as two:
        with one.acquire(1) as a, two.acquire(1) as b:
            direct = a.encrypt(b"direct", mode=Mode.DIRECT)
            derived = a.encrypt(b"derived")
            assert b.decrypt(direct) == b"direct"
            assert b.decrypt(derived) == b"derived"


def test_every_modification_of_a_ciphertext_is_caught(session: tessera.Session) -> None:
    with session.acquire(1) as seat:
        for mode in Mode:
            ciphertext = seat.encrypt(b"0123456789abcdef", mode=mode)
            for i in range(len(ciphertext)):
                bad = bytearray(ciphertext)
                bad[i] ^= 0x80
                with pytest.raises(tessera.LicenseError) as e:
                    seat.decrypt(bytes(bad))
                if i >= 16:
                    # Past the 16-byte header (magic, version, vendor, product) every
                    # change is TAMPERED. A changed header field is refused for what it now
                    # says instead: UNKNOWN_VERSION (byte 3), NO_LICENSE (vendor/product,
                    # bytes 8-15), although tessera.h promises TAMPERED for any change.
                    assert e.value.status == Status.TAMPERED, (mode, i, e.value)
            with pytest.raises(tessera.TamperedError):
                seat.decrypt(ciphertext[:-1])
            with pytest.raises(tessera.TamperedError):
                seat.decrypt(ciphertext + b"\0")
        with pytest.raises(tessera.TamperedError):
            seat.decrypt(b"")
        with pytest.raises(tessera.TamperedError):
            seat.decrypt(b"not a ciphertext at all, long enough to have a header" * 2)


def test_another_products_key_does_not_decrypt(session: tessera.Session) -> None:
    with session.acquire(1) as one, session.acquire(3) as three:
        ciphertext = one.encrypt(b"for product 1 only")
        with pytest.raises(tessera.NoLicenseError) as e:
            three.decrypt(ciphertext)
        assert "product 1" in e.value.message


# --- lifetimes -------------------------------------------------------------------------------


def test_close_and_release_are_idempotent(session: tessera.Session) -> None:
    seat = session.acquire(2)
    seat.release()
    seat.release()
    seat.close()
    assert seat.released and seat.handle == 0
    session.close()
    session.close()
    assert session.closed


def test_closed_session_raises_invalid_handle(session: tessera.Session) -> None:
    session.close()
    for call in (
        lambda: session.acquire(1),
        lambda: session.activation_request(),
        lambda: session.activation_install(b"x"),
    ):
        with pytest.raises(tessera.InvalidHandleError) as e:
            call()
        assert e.value.status == Status.INVALID_HANDLE
        assert "closed" in e.value.message
        assert isinstance(e.value, tessera.ArgumentError)


def test_released_seat_raises_invalid_handle(session: tessera.Session) -> None:
    seat = session.acquire(1)
    seat.release()
    for call in (lambda: seat.info, lambda: seat.encrypt(b"x"), lambda: seat.decrypt(b"x" * 60)):
        with pytest.raises(tessera.InvalidHandleError) as e:
            call()
        assert e.value.status == Status.INVALID_HANDLE
        assert "released" in e.value.message


def test_closing_the_session_releases_its_seats(session: tessera.Session) -> None:
    """As in the C library (tessera_close releases every seat of the session): the seat
    objects raise INVALID_HANDLE afterwards, releasing them does nothing, and the seat is
    free for others."""
    seat = session.acquire(2)
    handle = seat.handle
    session.close()
    assert seat.released
    with pytest.raises(tessera.InvalidHandleError) as e:
        seat.encrypt(b"x")
    assert "session was closed" in e.value.message
    seat.release()  # nothing to do, no error
    # The C library agrees the handle is dead.
    assert tessera._ffi.lib.tessera_release(handle) == Status.INVALID_HANDLE
    with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as other:
        with other.acquire(2) as again:
            assert again.info.seats_in_use == 1


def test_a_seat_keeps_its_session_alive() -> None:
    seat = tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY).acquire(2)
    gc.collect()
    assert not seat.session.closed
    assert seat.decrypt(seat.encrypt(b"still here")) == b"still here"
    seat.session.close()
    assert seat.released


def test_seat_released_when_a_with_block_raises(session: tessera.Session) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with session.acquire(2) as seat:
            assert seat.info.seats_in_use == 1
            raise RuntimeError("boom")
    assert seat.released
    # The single seat of product 2 is free again.
    with session.acquire(2) as again:
        assert again.info.seats_in_use == 1


def test_session_with_block_that_raises_releases_everything() -> None:
    with pytest.raises(KeyError):
        with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as s:
            seat = s.acquire(2)
            raise KeyError("boom")
    assert s.closed and seat.released
    with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as s2:
        with s2.acquire(2) as again:
            assert again.info.seats_in_use == 1


def test_a_forgotten_seat_is_released_by_the_garbage_collector(session: tessera.Session) -> None:
    def hold() -> int:
        seat = session.acquire(2)
        return seat.handle

    handle = hold()
    gc.collect()
    assert tessera._ffi.lib.tessera_release(handle) == Status.INVALID_HANDLE
    with session.acquire(2) as again:
        assert again.info.seats_in_use == 1


def test_a_forgotten_session_is_closed_by_the_garbage_collector() -> None:
    s = tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY)
    handle = s.handle
    del s
    gc.collect()
    assert tessera._ffi.lib.tessera_close(handle) == Status.INVALID_HANDLE


def test_repr_says_the_state(session: tessera.Session) -> None:
    seat = session.acquire(1)
    assert "product=1" in repr(seat) and "handle=0x" in repr(seat)
    seat.release()
    assert "released" in repr(seat)
    assert "vendor=0x7e55" in repr(session)
    session.close()
    assert "closed" in repr(session)
