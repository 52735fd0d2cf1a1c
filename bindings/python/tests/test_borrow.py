"""Borrowing against a real license server (tessera-server on loopback): a seat taken to
this machine for some days (``Session.borrow``), used with the server gone, and given back
(``Session.return_borrowed``)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
import tessera

DAY = 86_400


class LendingServer:
    """A tessera-server whose home holds product 1 of the demo publisher, one seat by
    station, borrowable for 3 days."""

    def __init__(self, tmp: Path) -> None:
        home = tmp / "server-home"
        env = dict(os.environ, TESSERA_HOME=str(home))
        key, req, act = tmp / "demo.key", tmp / "request.bin", tmp / "activation.bin"
        support.tool("tessera-vendor", "keygen", "--demo", "--out", key, env=env)
        support.tool(
            "tessera", "activate", "request", "--vendor-id", str(tessera.DEMO_VENDOR_ID),
            "--out", req, env=env,
        )  # fmt: skip
        support.tool(
            "tessera-vendor", "activate", "--key", key, "--request", req, "--out", act,
            "--product", "1", "--quantity", "1", "--unit", "station", "--borrow-days", "3",
            env=env,
        )  # fmt: skip
        support.tool("tessera", "activate", "install", act, env=env)
        self.proc = subprocess.Popen(
            [
                str(support.BIN_DIR / "tessera-server"),
                "--name", "python-lender", "--no-discovery", "--no-dongles",
                "--listen", "127.0.0.1:0", "--no-admin",
                "--state-dir", str(tmp / "server-state"), "--home", str(home),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ, TESSERA_LOG="warn"),
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), f"tessera-server said {line!r}"
        self.addr = line.removeprefix("listening on ")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def lender(tmp_path: Path) -> Iterator[LendingServer]:
    s = LendingServer(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def laptop(lender: LendingServer) -> tessera.Session:
    return tessera.Session(
        tessera.DEMO_VENDOR_ID,
        tessera.DEMO_PUBLISHER_KEY,
        sources=tessera.Source.SOFTWARE | tessera.Source.NETWORK,
        servers=lender.addr,
        timeout_ms=2000,
    )


def test_borrow_use_without_the_server_and_return(
    lender: LendingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "laptop-home"))
    with laptop(lender) as session:
        with pytest.raises(tessera.InvalidArgumentError):
            session.borrow(1, days=4)
        before = int(time.time())
        until = session.borrow(1, days=2)
        assert before + 2 * DAY <= until <= int(time.time()) + 2 * DAY
        borrowed = [i for i in session.licenses() if i.borrowed]
        assert len(borrowed) == 1
        assert (borrowed[0].borrowed_until, borrowed[0].quantity) == (until, 1)
        assert borrowed[0].source is tessera.Source.SOFTWARE
        with session.acquire(1) as seat:
            info = seat.info
            assert info.borrowed and info.expiry == until
            assert info.source is tessera.Source.SOFTWARE
            assert seat.decrypt(seat.encrypt(b"on the road")) == b"on the road"
        # Given back: the server frees it, nothing is left to give back here.
        session.return_borrowed(1)
        assert not [i for i in session.licenses() if i.borrowed]
        with pytest.raises(tessera.NoLicenseError):
            session.return_borrowed(1)
        # Borrowed again, then the server goes away: the seat still works; a return cannot
        # reach the server and keeps it.
        session.borrow(1, days=1, features=0x1)
    lender.stop()
    with laptop(lender) as session:
        with session.acquire(1) as seat:
            assert seat.info.borrowed
            assert seat.decrypt(seat.encrypt(b"offline")) == b"offline"
        with pytest.raises(tessera.TransportError):
            session.return_borrowed(1)
        assert [i for i in session.licenses() if i.borrowed]


def test_borrow_argument_checks(session: tessera.Session) -> None:
    with pytest.raises(tessera.InvalidArgumentError):
        session.borrow(1, days=0)
    with pytest.raises(tessera.InvalidArgumentError):
        session.borrow(-1, days=1)
    session.close()
    with pytest.raises(tessera.InvalidHandleError):
        session.borrow(1, days=1)
    with pytest.raises(tessera.InvalidHandleError):
        session.return_borrowed(1)
