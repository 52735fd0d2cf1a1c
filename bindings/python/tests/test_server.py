"""Against a real license server (tessera-server on loopback), and the Python quickstart run
as a customer would: on a software container, on a license server, and with no license."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
import tessera

QUICKSTART = support.REPO_ROOT / "examples" / "python" / "quickstart.py"


class Server:
    """A tessera-server hosting a licensed home of its own; killed by stop()."""

    def __init__(self, tmp: Path) -> None:
        home = tmp / "server-home"
        subprocess.run(
            [
                str(support.REPO_ROOT / "scripts" / "licensed-home.sh"),
                str(support.BIN_DIR),
                str(home),
            ],
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            [
                str(support.BIN_DIR / "tessera-server"),
                "--name", "python-test-server", "--no-discovery", "--no-dongles",
                "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                "--state-dir", str(tmp / "server-state"),
                "--home", str(home), "--lease-ms", "1500", "--renew-ms", "300",
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
        # Keep draining stdout so the server never blocks on it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("server"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def client_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TESSERA_HOME for this process: every license comes from the server."""
    home = tmp_path / "client-home"
    monkeypatch.setenv("TESSERA_HOME", str(home))
    return home


def network_session(server: Server, **kwargs: object) -> tessera.Session:
    return tessera.Session(
        tessera.DEMO_VENDOR_ID,
        tessera.DEMO_PUBLISHER_KEY,
        sources=tessera.Source.NETWORK,
        servers=server.addr,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_seat_from_the_license_server(server: Server, client_home: Path) -> None:
    with network_session(server) as session, session.acquire(1, features=0x1) as seat:
        info = seat.info
        assert info.source is tessera.Source.NETWORK
        assert info.server != ""
        assert (info.product_code, info.quantity) == (1, 2)
        assert seat.decrypt(seat.encrypt(b"over the network")) == b"over the network"
        assert seat.decrypt(seat.encrypt(b"direct", mode=tessera.Mode.DIRECT)) == b"direct"


def test_the_server_counts_seats(server: Server, client_home: Path) -> None:
    with network_session(server, timeout_ms=3000) as session:
        with session.acquire(2) as seat:
            assert seat.info.source is tessera.Source.NETWORK
            with pytest.raises(tessera.NoSeatError):
                session.acquire(2)
        with session.acquire(2):
            pass
        with pytest.raises(tessera.FeatureMissingError):
            session.acquire(3, features=0x2)
        with pytest.raises(tessera.NoLicenseError):
            session.acquire(99)


def test_the_license_server_lists_its_licenses(server: Server, client_home: Path) -> None:
    with network_session(server, timeout_ms=3000) as session:
        listed = {info.product_code: info for info in session.licenses()}
        assert sorted(listed) == [1, 2, 3]
        for info in listed.values():
            assert info.source is tessera.Source.NETWORK
            assert info.server == "python-test-server"
            assert info.container_kind is tessera.ContainerKind.SOFTWARE
            assert info.container_serial.startswith("SW-")
            assert info.status is tessera.Status.OK
            assert info.vendor_id == tessera.DEMO_VENDOR_ID
        assert (listed[3].features, listed[3].quantity) == (0x01, 10)
        assert listed[1].exclusive_allowed and not listed[2].exclusive_allowed
        # Seats in use are the server's count.
        with session.acquire(2) as seat:
            assert seat.info.server == "python-test-server"
            in_use = {i.product_code: i.seats_in_use for i in session.licenses()}
            assert in_use[2] == 1
        in_use = {i.product_code: i.seats_in_use for i in session.licenses()}
        assert in_use[2] == 0


def test_waiting_for_a_seat_of_the_license_server(server: Server, client_home: Path) -> None:
    with network_session(server, timeout_ms=3000) as one, network_session(server) as two:
        held = one.acquire(2)  # product 2: one seat
        with pytest.raises(tessera.NoSeatError):
            two.acquire(2, wait=0.2)
        got: list[tessera.Seat] = []
        waiter = threading.Thread(target=lambda: got.append(two.acquire(2, wait=60)))
        waiter.start()
        held.release()
        waiter.join(timeout=120)
        assert not waiter.is_alive() and len(got) == 1
        with got[0] as seat:
            assert seat.info.source is tessera.Source.NETWORK


def test_servers_given_as_a_list(server: Server, client_home: Path) -> None:
    with (
        tessera.Session(
            tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY, servers=[server.addr]
        ) as session,
        session.acquire(1) as seat,
    ):
        # No software container in this home: the seat comes from the server.
        assert seat.info.source is tessera.Source.NETWORK


def test_no_server_listening(tmp_path: Path, client_home: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tessera.Session(
        tessera.DEMO_VENDOR_ID,
        tessera.DEMO_PUBLISHER_KEY,
        sources=tessera.Source.NETWORK,
        servers=f"127.0.0.1:{port}",
        timeout_ms=1000,
    ) as session:
        with pytest.raises(tessera.TransportIOError) as e:
            session.acquire(1)
        assert isinstance(e.value, tessera.TransportError)
        assert e.value.status is tessera.Status.IO
        assert f"127.0.0.1:{port}" in e.value.message
        # Listing needs the server too, and says so the same way.
        with pytest.raises(tessera.TransportIOError) as e:
            session.licenses()
        assert e.value.function == "tessera_license_list"


# --- the quickstart example ------------------------------------------------------------------


def run_quickstart(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(QUICKSTART)],
        capture_output=True,
        text=True,
        env=support.python_env(**env),
        timeout=120,
    )


def test_quickstart_on_a_software_container() -> None:
    out = run_quickstart()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "quickstart: all steps succeeded" in out.stdout
    assert out.stdout.count("flipped bit detected: yes") == 2
    assert "served by license server" not in out.stdout


def test_quickstart_on_a_license_server(server: Server, tmp_path: Path) -> None:
    out = run_quickstart(TESSERA_HOME=str(tmp_path / "empty-home"), TESSERA_SERVERS=server.addr)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "served by license server" in out.stdout
    assert "quickstart: all steps succeeded" in out.stdout


def test_quickstart_without_a_license_fails(tmp_path: Path) -> None:
    out = run_quickstart(TESSERA_HOME=str(tmp_path / "empty-home"))
    assert out.returncode != 0
    assert "no license (100)" in out.stdout
    assert "quickstart: FAILED" in out.stdout
    assert "all steps succeeded" not in out.stdout
