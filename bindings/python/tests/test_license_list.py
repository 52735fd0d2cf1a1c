"""Session.licenses(): what a session can see without taking a seat (tessera_license_list),
against the licensed home and homes made for one test, and the binding's size-query loop.

Sessions here look at software containers only (``software()``): the lists are exact, and a
dongle of another publisher that happens to be plugged into the machine would otherwise be
listed, or be the failure an empty home answers."""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import support
import tessera
from tessera import ContainerKind, CountingUnit, LicenseFlag, Source, Status, Transport, _ffi


def software(
    vendor_id: int = tessera.DEMO_VENDOR_ID, key: bytes = tessera.DEMO_PUBLISHER_KEY
) -> tessera.Session:
    """A session of the demo publisher (by default) on this machine's software containers."""
    return tessera.Session(vendor_id, key, sources=Source.SOFTWARE)


@pytest.fixture
def session() -> Iterator[tessera.Session]:
    """A software-only session on the licensed home (overrides conftest's)."""
    with software() as s:
        yield s


def by_product(session: tessera.Session) -> dict[int, tessera.LicenseInfo]:
    listed = session.licenses()
    products = [info.product_code for info in listed]
    assert len(products) == len(set(products)), f"a product listed twice: {listed}"
    return {info.product_code: info for info in listed}


@pytest.fixture
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TESSERA_HOME for this test's sessions."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TESSERA_HOME", str(home))
    return home


def test_the_licensed_home_lists_its_three_licenses(session: tessera.Session) -> None:
    listed = by_product(session)
    assert sorted(listed) == [1, 2, 3]
    one, two, three = listed[1], listed[2], listed[3]
    assert all(isinstance(i, tessera.LicenseInfo) for i in listed.values())

    # scripts/licensed-home.sh: product 1, features 0xff, 2 seats per process, exclusive.
    assert (one.vendor_id, one.features, one.quantity) == (0x7E55, 0xFF, 2)
    assert one.counting_unit is CountingUnit.PROCESS
    assert one.exclusive_allowed and one.flags == LicenseFlag.EXCLUSIVE_ALLOWED
    # Product 2: 1 seat per handle; product 3: features 0x01, 10 seats per handle.
    assert (two.features, two.quantity, two.counting_unit) == (0xFF, 1, CountingUnit.HANDLE)
    assert (three.features, three.quantity, three.counting_unit) == (0x01, 10, CountingUnit.HANDLE)
    for info in (two, three):
        assert not info.exclusive_allowed and info.flags == LicenseFlag(0)

    for info in listed.values():
        assert info.vendor_id == tessera.DEMO_VENDOR_ID
        assert info.seats_in_use == 0
        assert info.expiry == 0 and info.expires_at is None
        assert info.source is Source.SOFTWARE
        assert info.container_kind is ContainerKind.SOFTWARE
        assert info.transport is Transport.NONE
        assert info.status is Status.OK
        assert info.server == ""
        assert info.container_serial.startswith("SW-")
    # All three live in the one software container a seat reports.
    with session.acquire(3) as seat:
        assert {i.container_serial for i in listed.values()} == {seat.info.container_serial}

    with pytest.raises(dataclasses.FrozenInstanceError):
        one.quantity = 5  # type: ignore[misc]


def test_seats_in_use_follow_the_seats_held(session: tessera.Session) -> None:
    threes = [session.acquire(3) for _ in range(3)]
    two = session.acquire(2)
    ones = [session.acquire(1), session.acquire(1)]  # per process: one seat for both
    try:
        listed = by_product(session)
        assert {p: i.seats_in_use for p, i in listed.items()} == {1: 1, 2: 1, 3: 3}
        # A full license is still listed as usable: status says nothing of free seats.
        assert listed[2].seats_in_use == listed[2].quantity and listed[2].status is Status.OK
        threes[0].release()
        two.release()
        assert {p: i.seats_in_use for p, i in by_product(session).items()} == {1: 1, 2: 0, 3: 2}
    finally:
        for seat in [*threes, two, *ones]:
            seat.release()
    assert {p: i.seats_in_use for p, i in by_product(session).items()} == {1: 0, 2: 0, 3: 0}


def test_listing_takes_no_seat(session: tessera.Session) -> None:
    for _ in range(3):
        session.licenses()
    # Product 2 has one seat: a listing that took one would leave none.
    with session.acquire(2) as seat:
        assert seat.info.seats_in_use == 1


def test_an_empty_home_lists_nothing(own_home: Path) -> None:
    with software() as session:
        assert session.licenses() == []


def test_licenses_another_key_does_not_verify_are_not_listed() -> None:
    # The licensed home's container, opened with the demo vendor id but another key.
    with software(key=support.OTHER_PUBLISHER_KEY) as session:
        assert session.licenses() == []
    with software(0x1234, support.OTHER_PUBLISHER_KEY) as session:
        assert session.licenses() == []


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found, "libfaketime is missing (scripts/install-deps.sh installs faketime)"
    return found[0]


def test_an_expired_and_a_time_limited_license(tmp_path: Path, own_home: Path) -> None:
    """The status is the verdict an acquire would meet. The expired license is issued by a
    tessera-vendor whose clock runs ten days behind (libfaketime), for two days; the other
    one for 30 days from now. Nothing here depends on the date the test runs."""
    key, _ = support.keygen(tmp_path)
    env = dict(os.environ)
    request, activation = tmp_path / "request.bin", tmp_path / "activation.bin"
    support.tool("tessera", "activate", "request", "--vendor-id", str(tessera.DEMO_VENDOR_ID),
                 "--out", request, env=env)  # fmt: skip
    behind = dict(env, LD_PRELOAD=_libfaketime(), FAKETIME="-10d")
    behind["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    support.tool("tessera-vendor", "activate", "--key", key, "--request", request,
                 "--out", activation, "--product", "5", "--days", "2", env=behind)  # fmt: skip
    support.tool("tessera", "activate", "install", activation, env=env)
    before = datetime.now(timezone.utc)
    support.activate(own_home, key, tessera.DEMO_VENDOR_ID, 6, "--days", "30", "--quantity", "3")
    after = datetime.now(timezone.utc)

    with software() as session:
        listed = by_product(session)
        assert sorted(listed) == [5, 6]
        expired, limited = listed[5], listed[6]
        assert expired.status is Status.EXPIRED
        assert expired.expires_at is not None and expired.expires_at < before
        assert expired.expiry == int(expired.expires_at.timestamp())
        # What the list said is what an acquire meets.
        with pytest.raises(tessera.ExpiredError):
            session.acquire(5)

        assert limited.status is Status.OK and limited.quantity == 3
        assert limited.counting_unit is CountingUnit.STATION  # the vendor tool's default
        assert limited.expires_at is not None
        second = timedelta(seconds=1)
        assert before + timedelta(days=30) - second <= limited.expires_at
        assert limited.expires_at <= after + timedelta(days=30) + second
        assert limited.expires_at.tzinfo is timezone.utc
        with session.acquire(6) as seat:
            assert seat.info.expiry == limited.expiry


def test_closed_session_cannot_list(session: tessera.Session) -> None:
    session.close()
    with pytest.raises(tessera.InvalidHandleError) as e:
        session.licenses()
    assert e.value.function == "tessera_license_list"


# --- the size-query loop ---------------------------------------------------------------------


class Recorder:
    """Stands in for tessera_license_list: records each call's out_cap, calls the real
    function, then runs ``after(call_number)``."""

    def __init__(self, real: Any, after: Any = None) -> None:
        self.real = real
        self.after = after
        self.caps: list[int] = []
        self.statuses: list[int] = []

    def __call__(self, handle: int, out: Any, cap: int, entry: int, count: Any) -> int:
        self.caps.append(cap)
        status = int(self.real(handle, out, cap, entry, count))
        self.statuses.append(status)
        if self.after is not None:
            self.after(len(self.caps))
        return status


def test_the_list_grew_between_the_size_query_and_the_call(
    tmp_path: Path, own_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An activation installed right after the size query: the second call finds room for
    one license too few, and the binding asks again with room for two."""
    key, _ = support.keygen(tmp_path)

    def activation_for(session: tessera.Session, product: int) -> bytes:
        request, activation = tmp_path / "request.bin", tmp_path / f"activation-{product}.bin"
        request.write_bytes(session.activation_request())
        support.tool("tessera-vendor", "activate", "--key", key, "--request", request,
                     "--out", activation, "--product", str(product))  # fmt: skip
        return activation.read_bytes()

    with software() as session:
        session.activation_install(activation_for(session, 7))
        second = activation_for(session, 8)
        assert [i.product_code for i in session.licenses()] == [7]

        def install_after_the_size_query(call: int) -> None:
            if call == 1:
                session.activation_install(second)

        recorder = Recorder(_ffi.lib.tessera_license_list, install_after_the_size_query)
        monkeypatch.setattr(_ffi.lib, "tessera_license_list", recorder)
        listed = session.licenses()
    too_small = Status.BUFFER_TOO_SMALL
    assert recorder.caps == [0, 1, 2]
    assert recorder.statuses == [too_small, too_small, Status.OK]
    assert sorted(i.product_code for i in listed) == [7, 8]


def test_a_list_that_keeps_growing_is_given_up(
    session: tessera.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library that answers 'one more' on every call: the binding stops after a bounded
    number of tries with BufferTooSmallError instead of looping for ever."""
    calls: list[int] = []

    def always_one_more(handle: int, out: Any, cap: int, entry: int, count: Any) -> int:
        calls.append(cap)
        ctypes.cast(count, ctypes.POINTER(ctypes.c_size_t)).contents.value = cap + 1
        return int(Status.BUFFER_TOO_SMALL)

    monkeypatch.setattr(_ffi.lib, "tessera_license_list", always_one_more)
    with pytest.raises(tessera.BufferTooSmallError) as e:
        session.licenses()
    assert "grew" in e.value.message
    assert calls == list(range(len(calls))) and 2 <= len(calls) <= 16


def test_a_library_that_lists_past_the_room_given_is_an_internal_error(
    session: tessera.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def too_many(handle: int, out: Any, cap: int, entry: int, count: Any) -> int:
        ctypes.cast(count, ctypes.POINTER(ctypes.c_size_t)).contents.value = cap + 5
        return int(Status.OK)

    monkeypatch.setattr(_ffi.lib, "tessera_license_list", too_many)
    with pytest.raises(tessera.InternalError) as e:
        session.licenses()
    assert e.value.status is Status.INTERNAL


def test_a_failed_call_raises_its_status(own_home: Path) -> None:
    """A home that cannot be read is the answer when no source holds a license. (A file
    where the home should be: a directory without permissions would not stop root.)"""
    own_home.rmdir()
    own_home.write_text("not a directory")
    with software() as session:
        with pytest.raises(tessera.TesseraError) as e:
            session.licenses()
    assert e.value.function == "tessera_license_list"
    assert e.value.status is Status.IO, e.value
    assert e.value.message
