"""Offline activation through the binding (Session.activation_request/install) with the
real publisher tool, and the verdicts on activations and containers that are not right.

Each test works in a TESSERA_HOME of its own, so the licensed home of the other tests is
never changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import support
import tessera


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty TESSERA_HOME for the sessions this test opens (the library reads the
    variable at tessera_open)."""
    h = tmp_path / "home"
    monkeypatch.setenv("TESSERA_HOME", str(h))
    yield h


def demo_session() -> tessera.Session:
    return tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY)


def answer(tmp_path: Path, key: Path, request: bytes, product: int, *license_args: str) -> bytes:
    """The publisher's side: an activation answering ``request`` (tessera-vendor activate)."""
    req, act = tmp_path / "request.bin", tmp_path / "activation.bin"
    req.write_bytes(request)
    support.tool(
        "tessera-vendor", "activate", "--key", key, "--request", req, "--out", act,
        "--product", str(product), *license_args,
    )  # fmt: skip
    return act.read_bytes()


def test_offline_activation_through_the_binding(tmp_path: Path, home: Path) -> None:
    key, public = support.keygen(tmp_path)
    assert public == tessera.DEMO_PUBLISHER_KEY
    with demo_session() as session:
        with pytest.raises(tessera.NoLicenseError):
            session.acquire(7)
        request = session.activation_request()
        assert len(request) > 0
        assert session.activation_request() == request  # the same container asks again
        activation = answer(
            tmp_path, key, request, 7, "--features", "0x3", "--quantity", "1", "--unit", "handle"
        )
        session.activation_install(activation)
        # The session reloads its containers: the license is there at once.
        with session.acquire(7, features=0x3) as seat:
            info = seat.info
            assert (info.product_code, info.features, info.quantity) == (7, 0x3, 1)
            assert info.counting_unit is tessera.CountingUnit.HANDLE
            with pytest.raises(tessera.NoSeatError):
                session.acquire(7)
            assert seat.decrypt(seat.encrypt(b"activated")) == b"activated"
    # A new session (a new run of the app) finds it too.
    with demo_session() as session, session.acquire(7) as seat:
        assert seat.info.container_serial.startswith("SW-")


def test_an_activation_signed_by_another_publisher_is_refused(tmp_path: Path, home: Path) -> None:
    demo_key, _ = support.keygen(tmp_path)
    with tessera.Session(tessera.DEMO_VENDOR_ID, support.OTHER_PUBLISHER_KEY) as other:
        activation = answer(tmp_path, demo_key, other.activation_request(), 7)
        with pytest.raises(tessera.BadSignatureError) as e:
            other.activation_install(activation)
        assert e.value.status is tessera.Status.BAD_SIGNATURE
        assert e.value.function == "tessera_activation_install"
        with pytest.raises(tessera.NoLicenseError):
            other.acquire(7)


def test_damaged_activations_are_refused_and_change_nothing(tmp_path: Path, home: Path) -> None:
    key, _ = support.keygen(tmp_path)
    with demo_session() as session:
        activation = answer(tmp_path, key, session.activation_request(), 7)
        flipped = bytearray(activation)
        flipped[len(flipped) // 2] ^= 0x01
        with pytest.raises(tessera.BadSignatureError):
            session.activation_install(bytes(flipped))
        with pytest.raises(tessera.MalformedError, match="truncated"):
            session.activation_install(activation[:40])
        with pytest.raises(tessera.MalformedError):
            session.activation_install(b"")
        with pytest.raises(tessera.MalformedError, match="bad magic"):
            session.activation_install(b"garbage that is no Tessera document at all")
        with pytest.raises(tessera.NoLicenseError):
            session.acquire(7)
        session.activation_install(activation)
        with session.acquire(7):
            pass


def test_an_edited_container_file_is_tampered(tmp_path: Path, home: Path) -> None:
    key, _ = support.keygen(tmp_path)
    support.activate(home, key, tessera.DEMO_VENDOR_ID, 7)
    with demo_session() as session, session.acquire(7):
        pass
    (container,) = (home / "containers").glob("*.tsc")
    raw = bytearray(container.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    container.write_bytes(bytes(raw))
    with demo_session() as session:
        with pytest.raises(tessera.TamperedError) as e:
            session.acquire(7)
        assert container.name in e.value.message


def test_ciphertext_of_another_publisher(tmp_path: Path, home: Path) -> None:
    """Two publishers' licenses for the same product code on one machine: each one's
    ciphertext is refused by the other's seat."""
    demo_key, _ = support.keygen(tmp_path)
    other_key, other_public = support.keygen(tmp_path, vendor_id=0x1234)
    support.activate(home, demo_key, tessera.DEMO_VENDOR_ID, 1)
    support.activate(home, other_key, 0x1234, 1)
    with demo_session() as demo, tessera.Session(0x1234, other_public) as other:
        with demo.acquire(1) as a, other.acquire(1) as b:
            assert b.info.vendor_id == 0x1234
            from_other = b.encrypt(b"vendor 0x1234's data")
            with pytest.raises(tessera.WrongVendorError) as e:
                a.decrypt(from_other)
            assert "found 0x1234" in e.value.message
            assert b.decrypt(from_other) == b"vendor 0x1234's data"
