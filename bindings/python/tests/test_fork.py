"""os.fork: handles are per process (tessera.h, "fork"). A child cannot use or release the
parent's session and seat (ForkedError); it opens a session of its own."""

from __future__ import annotations

import os
from collections.abc import Callable

import tessera


def _in_child(check: Callable[[], int]) -> int:
    """Forks; the child runs ``check`` and leaves with its result through os._exit (no
    finalizers, no pytest); returns the child's exit code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = check()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_gets_forked_error_and_opens_its_own_session(
    session: tessera.Session,
) -> None:
    seat = session.acquire(2)  # the only seat of product 2 (one per handle)

    def child() -> int:
        bad = 0
        try:
            session.acquire(2)
            bad |= 1
        except tessera.ForkedError:
            pass
        try:
            seat.encrypt(b"the parent's seat")
            bad |= 2
        except tessera.ForkedError as e:
            if "open a new session" not in e.message:
                bad |= 4
        try:
            seat.release()
            bad |= 8
        except tessera.ForkedError:
            pass
        with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as own:
            try:
                own.acquire(2)
                bad |= 16  # the parent's seat was given away
            except tessera.NoSeatError:
                pass
            with own.acquire(1) as mine:  # another product: a seat of its own
                if mine.decrypt(mine.encrypt(b"child")) != b"child":
                    bad |= 32
        return bad

    assert _in_child(child) == 0
    # The parent's seat was neither used up nor released by the child.
    assert seat.decrypt(seat.encrypt(b"still mine")) == b"still mine"
    assert seat.info.seats_in_use == 1
    seat.release()
