"""Every error path reachable from Python raises the right class with the library's message."""

from __future__ import annotations

import threading

import pytest

import support
import tessera
from tessera import Status, _ffi


def demo_session(**kwargs: object) -> tessera.Session:
    return tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY, **kwargs)  # type: ignore[arg-type]


# --- licensing verdicts ----------------------------------------------------------------------


def test_no_license_for_an_unknown_product(session: tessera.Session) -> None:
    with pytest.raises(tessera.NoLicenseError) as e:
        session.acquire(99)
    err = e.value
    assert err.status is Status.NO_LICENSE and int(err.status) == 100
    assert isinstance(err, tessera.LicenseError) and isinstance(err, tessera.TesseraError)
    assert "product 99" in err.message
    assert err.function == "tessera_acquire"
    assert str(err) == f"tessera_acquire: NO_LICENSE (100): {err.message}"


def test_no_seat_when_the_single_seat_is_held(session: tessera.Session) -> None:
    with session.acquire(2):
        with pytest.raises(tessera.NoSeatError) as e:
            session.acquire(2)
        assert e.value.status is Status.NO_SEAT
        assert "1 seat" in e.value.message
        # Another session (same process) gets no seat either: it is counted per handle.
        with demo_session() as other, pytest.raises(tessera.NoSeatError):
            other.acquire(2)


def test_feature_missing(session: tessera.Session) -> None:
    with pytest.raises(tessera.FeatureMissingError) as e:
        session.acquire(3, features=0x2)
    assert e.value.status is Status.FEATURE_MISSING
    assert "0x2" in e.value.message
    with pytest.raises(tessera.FeatureMissingError):
        session.acquire(1, features=0x100)
    with session.acquire(3, features=0x1):
        pass


def test_exclusive_denied(session: tessera.Session) -> None:
    with pytest.raises(tessera.ExclusiveDeniedError, match="does not allow exclusive"):
        session.acquire(3, flags=tessera.AcquireFlag.EXCLUSIVE)
    with session.acquire(1):
        with pytest.raises(tessera.ExclusiveDeniedError) as e:
            session.acquire(1, flags=tessera.AcquireFlag.EXCLUSIVE)
        assert e.value.status is Status.EXCLUSIVE_DENIED


def test_another_publisher_key_finds_no_license() -> None:
    """A valid key that is not the one the licenses were signed with: the container's
    licenses do not verify, and the library reports NO_LICENSE (not BAD_SIGNATURE)."""
    with tessera.Session(tessera.DEMO_VENDOR_ID, support.OTHER_PUBLISHER_KEY) as s:
        with pytest.raises(tessera.NoLicenseError):
            s.acquire(1)


def test_another_vendor_finds_no_license() -> None:
    with tessera.Session(0x1234, tessera.DEMO_PUBLISHER_KEY) as s:
        with pytest.raises(tessera.NoLicenseError, match="vendor 0x1234"):
            s.acquire(1)


# --- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, fragment",
    [
        (tessera.DEMO_PUBLISHER_KEY[:31], "must be 32 bytes, not 31"),
        (tessera.DEMO_PUBLISHER_KEY + b"\0", "must be 32 bytes, not 33"),
        (b"", "must be 32 bytes, not 0"),
        (
            bytes([tessera.DEMO_PUBLISHER_KEY[0] ^ 1]) + tessera.DEMO_PUBLISHER_KEY[1:],
            "not an Ed25519 public key",
        ),
    ],
)
def test_bad_publisher_key(key: bytes, fragment: str) -> None:
    with pytest.raises(tessera.InvalidArgumentError) as e:
        tessera.Session(tessera.DEMO_VENDOR_ID, key)
    assert e.value.status is Status.INVALID_ARGUMENT
    assert e.value.function == "tessera_open"
    assert fragment in e.value.message
    assert isinstance(e.value, ValueError)


def test_bad_open_options() -> None:
    with pytest.raises(tessera.InvalidArgumentError, match="vendor_id is 0"):
        tessera.Session(0, tessera.DEMO_PUBLISHER_KEY)
    with pytest.raises(tessera.InvalidArgumentError, match="unknown bits 0x8"):
        demo_session(sources=8)
    with pytest.raises(tessera.InvalidArgumentError, match="NUL"):
        demo_session(servers="a\0b")
    with pytest.raises(tessera.InvalidArgumentError, match="uint32_t"):
        tessera.Session(-1, tessera.DEMO_PUBLISHER_KEY)
    with pytest.raises(TypeError):
        tessera.Session(tessera.DEMO_VENDOR_ID, "not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        demo_session(sources="7")
    with pytest.raises(TypeError):
        demo_session(timeout_ms=1.5)


def test_bad_acquire_and_crypt_arguments(session: tessera.Session) -> None:
    # Rejected by the library.
    with pytest.raises(tessera.InvalidArgumentError, match="unknown acquire flags 0x2"):
        session.acquire(1, flags=2)
    with session.acquire(1) as seat:
        with pytest.raises(tessera.InvalidArgumentError, match="unknown encrypt flags 0x2"):
            seat.encrypt(b"x", mode=2)
        with pytest.raises(TypeError):
            session.acquire("1")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            seat.encrypt(b"x", mode="direct")  # type: ignore[arg-type]
        # Rejected by the binding: ctypes would silently truncate these to 32 bits.
        for call in (
            lambda: session.acquire(2**32 + 1),
            lambda: session.acquire(1, features=-1),
            lambda: session.acquire(1, flags=2**32),
            lambda: seat.encrypt(b"x", mode=2**32 + 1),
        ):
            with pytest.raises(tessera.InvalidArgumentError, match="uint32_t range"):
                call()


def test_sources_limit_where_licenses_are_found() -> None:
    with demo_session(sources=tessera.Source.DONGLE) as s:
        with pytest.raises(tessera.NoLicenseError) as e:
            s.acquire(1)
        assert "dongle" in e.value.message and "software container" not in e.value.message
    with demo_session(sources=tessera.Source.SOFTWARE, timeout_ms=2000, servers=[]) as s:
        with s.acquire(1) as seat:
            assert seat.info.source is tessera.Source.SOFTWARE


# --- statuses and classes --------------------------------------------------------------------


def test_every_status_has_a_class_in_its_group() -> None:
    groups = {
        range(1, 100): tessera.ArgumentError,
        range(100, 200): tessera.LicenseError,
        range(200, 300): tessera.TransportError,
        range(900, 1000): tessera.InternalError,
    }
    seen_classes = set()
    for status in Status:
        if status is Status.OK:
            continue
        cls = tessera.errors.error_class(status)
        (group,) = [g for r, g in groups.items() if int(status) in r]
        assert issubclass(cls, group) and cls is not group, (status, cls)
        assert cls.__name__.endswith("Error") and cls.__doc__ and status.name in cls.__doc__
        seen_classes.add(cls)
        err = cls(status, "detail", "tessera_x")
        assert err.status is status and err.message == "detail"
    assert len(seen_classes) == len(Status) - 1, "one class per status"


def test_unknown_statuses_fall_back_to_their_group() -> None:
    assert tessera.errors.error_class(150) is tessera.LicenseError
    assert tessera.errors.error_class(42) is tessera.ArgumentError
    assert tessera.errors.error_class(250) is tessera.TransportError
    assert tessera.errors.error_class(999) is tessera.InternalError
    assert tessera.errors.error_class(5000) is tessera.TesseraError
    err = tessera.errors.error_class(150)(150, "newer library")
    assert err.status == 150 and err.status.name == "UNKNOWN_150"


def test_status_strings_come_from_the_library() -> None:
    assert tessera.status_str(Status.NO_SEAT) == "no seat available"
    assert tessera.status_str(12345) == "unknown status"
    for status in Status:
        assert tessera.status_str(status) not in ("", "unknown status"), status


def test_last_error_is_read_on_the_failing_thread(session: tessera.Session) -> None:
    """tessera_last_error is thread-local: each thread's exception carries its own failure,
    even when other threads fail differently at the same time."""
    barrier = threading.Barrier(8)
    results: dict[int, str] = {}

    def fail(i: int) -> None:
        barrier.wait()
        for _ in range(50):
            try:
                session.acquire(1000 + i)
            except tessera.NoLicenseError as e:
                results[i] = e.message
                assert f"product {1000 + i}" in e.message, e.message

    threads = [threading.Thread(target=fail, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(8))
    for i, message in results.items():
        assert f"product {1000 + i}:" in message


def test_raw_c_api_statuses_behind_the_classes() -> None:
    """The C calls the classes stand on, with their statuses (no exceptions at this level)."""
    lib = _ffi.lib
    assert lib.tessera_close(0) == Status.INVALID_HANDLE
    assert lib.tessera_release(0) == Status.INVALID_HANDLE
    assert lib.tessera_release(0xDEAD_BEEF) == Status.INVALID_HANDLE
    assert "not a live seat handle" in _ffi.last_error()
    assert lib.tessera_open_options_init(None, 40) == Status.INVALID_ARGUMENT
    assert lib.tessera_open(None, None) == Status.INVALID_ARGUMENT
    details = _ffi.new_seat_details()
    assert lib.tessera_seat_info(0, details) == Status.INVALID_HANDLE
    details.struct_size = 4
    assert lib.tessera_seat_info(0, details) == Status.INVALID_ARGUMENT
