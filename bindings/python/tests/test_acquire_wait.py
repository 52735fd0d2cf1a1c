"""Session.acquire(..., wait=...): waiting for a seat (tessera_acquire_wait) that other
processes, or other threads of this one, hold.

Durations are only ever checked from below: a wait that ends with NO_SEAT lasted at least
its timeout, and a seat freed at a moment cannot be had before it. Nothing asserts that
anything is fast."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

import support
import tessera
from tessera import AcquireFlag, Status

# A child that holds a seat of PRODUCT (with FLAGS) until its stdin closes, then exits: the
# kernel drops its seat-slot locks, so the seat is free again.
HOLDER = """
import sys, tessera
product, flags = int(sys.argv[1]), int(sys.argv[2])
s = tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY)
try:
    seat = s.acquire(product, flags=flags)
except tessera.TesseraError as e:
    print("refused", e.status.name, flush=True)
    sys.exit(0)
print("held", seat.info.seats_in_use, flush=True)
sys.stdin.read()
"""


class Holder:
    """A child process holding a seat; :meth:`let_go` ends it and waits for it."""

    def __init__(self, product: int, flags: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(product), str(flags)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=support.python_env(),
        )
        assert self.proc.stdout is not None
        self.said = self.proc.stdout.readline().split()

    def let_go(self) -> None:
        if self.proc.poll() is None:
            self.proc.communicate(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holders() -> Iterator[Callable[..., Holder]]:
    """Starts holders; every one still running is killed after the test, failed or not."""
    started: list[Holder] = []

    def start(product: int, flags: int = 0) -> Holder:
        h = Holder(product, flags)
        started.append(h)
        return h

    try:
        yield start
    finally:
        for h in started:
            h.kill()


def test_a_wait_for_a_seat_another_process_holds_times_out(
    session: tessera.Session, holders: Callable[..., Holder]
) -> None:
    holder = holders(2)  # product 2: one seat per handle
    assert holder.said == ["held", "1"]
    with pytest.raises(tessera.NoSeatError):
        session.acquire(2)
    with pytest.raises(tessera.NoSeatError) as once:
        session.acquire(2, wait=0)  # tries once
    assert once.value.function == "tessera_acquire_wait"

    for wait in (0.3, timedelta(milliseconds=250)):
        seconds = wait.total_seconds() if isinstance(wait, timedelta) else wait
        start = time.monotonic()
        with pytest.raises(tessera.NoSeatError) as e:
            session.acquire(2, wait=wait)
        waited = time.monotonic() - start
        assert waited >= seconds, f"gave up after {waited:.3f} s of a {seconds} s wait"
        assert e.value.status is Status.NO_SEAT
        assert e.value.function == "tessera_acquire_wait"
        assert e.value.message  # the library's detail of the last try
    # The holder still has its seat; no wait took one.
    assert holder.proc.poll() is None
    holder.let_go()
    with session.acquire(2) as seat:
        assert seat.info.seats_in_use == 1


def test_a_wait_ends_with_the_seat_when_a_holder_lets_go(
    session: tessera.Session, holders: Callable[..., Holder]
) -> None:
    """Product 1 has 2 seats per process: two children hold both. A wait times out; then
    one child lets go 0.2 s into a wait of a minute, and the waiter gets its seat."""
    first, second = holders(1), holders(1)
    assert first.said == ["held", "1"]
    assert second.said == ["held", "2"]
    with pytest.raises(tessera.NoSeatError):
        session.acquire(1, wait=0.1)

    got: list[tessera.Seat] = []
    failed: list[BaseException] = []

    def wait_for_a_seat() -> None:
        try:
            got.append(session.acquire(1, wait=60))
        except BaseException as e:
            failed.append(e)

    start = time.monotonic()
    waiter = threading.Thread(target=wait_for_a_seat)
    waiter.start()
    time.sleep(0.2)
    freed_at = time.monotonic() - start
    first.let_go()  # the child exits; the kernel frees its seat
    waiter.join(timeout=120)
    assert not waiter.is_alive(), "the wait did not end when a seat came free"
    waited = time.monotonic() - start
    assert not failed, failed
    assert len(got) == 1
    with got[0] as seat:
        assert waited >= freed_at  # it cannot have had the seat before it was free
        info = seat.info
        assert (info.product_code, info.seats_in_use, info.quantity) == (1, 2, 2)
        assert seat.decrypt(seat.encrypt(b"waited for")) == b"waited for"


def test_a_wait_for_a_license_held_exclusively(
    session: tessera.Session, holders: Callable[..., Holder]
) -> None:
    holder = holders(1, int(AcquireFlag.EXCLUSIVE))
    assert holder.said == ["held", "1"]
    start = time.monotonic()
    with pytest.raises(tessera.ExclusiveDeniedError):
        session.acquire(1, wait=0.2)
    assert time.monotonic() - start >= 0.2
    holder.let_go()
    with session.acquire(1, flags=AcquireFlag.EXCLUSIVE, wait=30) as seat:
        assert seat.info.exclusive


def test_any_other_answer_ends_the_wait_at_once() -> None:
    """Product 99 is not licensed, product 3 lacks feature 0x2: waiting cannot help, so the
    wait of an hour ends with the first answer (a thread, so that a wait that does not end
    fails the test instead of hanging the suite). Software containers only: a dongle of
    another publisher plugged into the machine would answer WRONG_VENDOR."""
    answers: list[BaseException] = []
    session = tessera.Session(
        tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY, sources=tessera.Source.SOFTWARE
    )

    def ask() -> None:
        for product, features in ((99, 0), (3, 0x2)):
            try:
                session.acquire(product, features, wait=3600)
            except tessera.TesseraError as e:
                answers.append(e)

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "a wait for an unlicensed product did not end"
    session.close()
    assert [type(e) for e in answers] == [tessera.NoLicenseError, tessera.FeatureMissingError], [
        str(e) for e in answers
    ]


def test_other_threads_use_the_session_while_one_waits(session: tessera.Session) -> None:
    """The single seat of product 2 is held by this session; another thread waits for one.
    Meanwhile this thread encrypts with another seat of the same session (the waiting call
    holds neither the GIL nor the session), then lets go of product 2: the waiter gets it."""
    held = session.acquire(2)
    got: list[tessera.Seat] = []

    def waiter() -> None:
        got.append(session.acquire(2, wait=60))

    t = threading.Thread(target=waiter)
    t.start()
    with session.acquire(3) as other:
        for i in range(20):
            message = f"while waiting {i}".encode()
            assert other.decrypt(other.encrypt(message)) == message
    assert not got, "the waiter got the single seat while it was held"
    held.release()
    t.join(timeout=120)
    assert not t.is_alive()
    assert len(got) == 1
    with got[0] as seat:
        assert seat.info.seats_in_use == 1


@pytest.mark.parametrize(
    "wait, error",
    [
        (-1, tessera.InvalidArgumentError),
        (-0.001, tessera.InvalidArgumentError),
        (float("nan"), tessera.InvalidArgumentError),
        (float("inf"), tessera.InvalidArgumentError),
        (0x1_0000_0000 / 1000, tessera.InvalidArgumentError),  # 2^32 ms
        (timedelta(days=-1), tessera.InvalidArgumentError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_a_wait_that_is_no_duration_is_refused(
    session: tessera.Session, wait: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        session.acquire(3, wait=wait)  # type: ignore[arg-type]


def test_the_longest_and_the_shortest_waits_are_taken(session: tessera.Session) -> None:
    # A seat is free: any wait returns it at once. 0.0001 s rounds up to 1 ms.
    for wait in (0, 0.0001, 0xFFFF_FFFF / 1000, timedelta(seconds=1)):
        with session.acquire(3, wait=wait) as seat:
            assert seat.info.product_code == 3


def test_unknown_flags_are_refused_by_the_library(session: tessera.Session) -> None:
    with pytest.raises(tessera.InvalidArgumentError) as e:
        session.acquire(3, flags=0x80, wait=1)
    assert e.value.function == "tessera_acquire_wait"
    assert "flags" in e.value.message


def test_a_closed_session_cannot_wait(session: tessera.Session) -> None:
    session.close()
    with pytest.raises(tessera.InvalidHandleError) as e:
        session.acquire(3, wait=1)
    assert e.value.function == "tessera_acquire_wait"
