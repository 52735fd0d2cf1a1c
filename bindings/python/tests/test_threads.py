"""Threads and processes: many acquiring, encrypting and releasing at once never hold more
seats than the license quantity, and closing under their feet never crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

import support
import tessera

THREADS = 24
ROUNDS = 15
PRODUCT_3_QUANTITY = 10


def run_threads(target: Callable[[int], None], n: int) -> list[BaseException]:
    """Runs ``target(i)`` on ``n`` threads; returns what they raised."""
    errors: list[BaseException] = []

    def wrapper(i: int) -> None:
        try:
            target(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=wrapper, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread hung"
    return errors


@pytest.mark.parametrize(
    "shared_session", [True, False], ids=["one session", "a session per thread"]
)
def test_concurrent_seats_never_exceed_the_quantity(shared_session: bool) -> None:
    lock = threading.Lock()
    held = 0
    peak = 0
    outcomes: Counter[str] = Counter()
    shared = tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY)
    start = threading.Barrier(THREADS)

    def worker(i: int) -> None:
        nonlocal held, peak
        session = (
            shared
            if shared_session
            else tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY)
        )
        start.wait()
        try:
            for r in range(ROUNDS):
                try:
                    seat = session.acquire(3, features=0x1)
                except tessera.NoSeatError:
                    with lock:
                        outcomes["no seat"] += 1
                    time.sleep(0.001)
                    continue
                with seat:
                    with lock:
                        held += 1
                        peak = max(peak, held)
                    info = seat.info
                    assert 1 <= info.seats_in_use <= PRODUCT_3_QUANTITY, info
                    message = f"thread {i} round {r}".encode()
                    mode = tessera.Mode.DIRECT if r % 2 else tessera.Mode.DERIVED
                    assert seat.decrypt(seat.encrypt(message, mode=mode)) == message
                    with lock:
                        held -= 1
                with lock:
                    outcomes["seat"] += 1
        finally:
            if not shared_session:
                session.close()

    try:
        errors = run_threads(worker, THREADS)
    finally:
        shared.close()
    assert not errors, errors[:3]
    assert 1 <= peak <= PRODUCT_3_QUANTITY, peak
    assert outcomes["seat"] + outcomes["no seat"] == THREADS * ROUNDS
    assert outcomes["seat"] >= THREADS, outcomes
    # All released: the whole quantity can be taken again, and not one more.
    with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as s:
        seats = [s.acquire(3) for _ in range(PRODUCT_3_QUANTITY)]
        with pytest.raises(tessera.NoSeatError):
            s.acquire(3)
        assert seats[-1].info.seats_in_use == PRODUCT_3_QUANTITY
        for seat in seats:
            seat.release()


def test_one_seat_contended_by_many_threads_is_held_by_one_at_a_time() -> None:
    lock = threading.Lock()
    holders = 0
    got = Counter[int]()
    session = tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY)

    def worker(i: int) -> None:
        nonlocal holders
        for _ in range(ROUNDS):
            try:
                with session.acquire(2) as seat:
                    with lock:
                        holders += 1
                        assert holders == 1, "two threads hold the single seat of product 2"
                    assert seat.info.seats_in_use == 1
                    seat.encrypt(b"x")
                    with lock:
                        holders -= 1
                    with lock:
                        got[i] += 1
            except tessera.NoSeatError:
                time.sleep(0.0005)

    try:
        errors = run_threads(worker, 16)
    finally:
        session.close()
    assert not errors, errors[:3]
    assert sum(got.values()) >= 1


def test_per_process_seats_are_shared_by_threads(session: tessera.Session) -> None:
    """Product 1 counts a seat per process: all threads of this process share one."""
    counts: list[int] = []

    def worker(i: int) -> None:
        with session.acquire(1) as seat:
            counts.append(seat.info.seats_in_use)

    assert not run_threads(worker, 16)
    assert len(counts) == 16 and set(counts) == {1}


HOLD_PRODUCT_1 = """
import sys, tessera
s = tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY)
try:
    seat = s.acquire(1)
except tessera.TesseraError as e:
    print("refused", e.status.name, flush=True)
    sys.exit(0)
print("held", seat.info.seats_in_use, flush=True)
sys.stdin.read()  # hold until the parent closes stdin
"""


def test_per_process_quantity_holds_across_processes(session: tessera.Session) -> None:
    """Product 1 has 2 seats per process: this process and one child hold them; a second
    child is refused NO_SEAT; when the first child exits its seat is free again."""
    mine = session.acquire(1)

    def child() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", HOLD_PRODUCT_1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=support.python_env(),
        )

    first = child()
    second = None
    try:
        assert first.stdout is not None and first.stdout.readline().split() == ["held", "2"]
        second = child()
        out, _ = second.communicate(timeout=60)
        assert out.split() == ["refused", "NO_SEAT"]
        first.communicate(timeout=60)  # closes stdin: the child exits, the kernel frees its seat
        third = child()
        assert third.stdout is not None and third.stdout.readline().split() == ["held", "2"]
        third.communicate(timeout=60)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        mine.release()


def test_closing_a_session_while_threads_use_it_never_crashes() -> None:
    session = tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY)
    seats = [session.acquire(3) for _ in range(4)]
    started = threading.Barrier(9)
    failures: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(i: int) -> None:
        started.wait()
        seat = seats[i % len(seats)]
        for _ in range(200):
            try:
                if i % 2:
                    seat.decrypt(seat.encrypt(os.urandom(64)))
                else:
                    session.acquire(3).release()
            except tessera.InvalidHandleError:
                with lock:
                    failures["invalid handle"] += 1
            except tessera.NoSeatError:
                pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.02)
    session.close()
    for t in threads:
        t.join(timeout=60)
    assert failures["invalid handle"] > 0, "closing did not invalidate anything"
    assert all(s.released for s in seats)
    # Nothing of the closed session still holds a seat of product 3.
    with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as s:
        with s.acquire(3) as seat:
            assert seat.info.seats_in_use == 1


def test_an_acquire_racing_a_close_leaves_no_seat_held() -> None:
    """tessera_acquire running while another thread calls tessera_close on the same session
    can return OK with a seat that the close did not release (the library inserts the seat
    after the close swept the session's seats). The binding releases such a seat and raises
    InvalidHandleError, so the single seat of product 2 is always free afterwards."""
    outcomes: Counter[str] = Counter()
    kept: list[tessera.Seat] = []  # kept alive: no garbage collector hiding a leak
    for trial in range(60):
        session = tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY)
        barrier = threading.Barrier(2)

        def acquire(session: tessera.Session, barrier: threading.Barrier) -> None:
            barrier.wait()
            try:
                kept.append(session.acquire(2))
                outcomes["acquired before the close"] += 1
            except tessera.InvalidHandleError:
                outcomes["refused: session closed"] += 1

        t = threading.Thread(target=acquire, args=(session, barrier))
        t.start()
        barrier.wait()
        time.sleep((trial % 6) * 0.0002)
        session.close()
        t.join(timeout=60)
        with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as check:
            with check.acquire(2) as seat:  # NoSeatError here would mean a leaked seat
                assert seat.info.seats_in_use == 1
    assert sum(outcomes.values()) == 60
    assert all(seat.released for seat in kept)
