"""Waiting in tests: on a condition, with a bounded timeout, never a fixed sleep.

``wait_until`` is for "this will happen": it returns as soon as the condition holds. ``settles``
is for "this will happen and stay so". ``holds_for`` is for "this does not happen": it is the one
place where a test watches the clock, and only where the code gives no point to synchronise on; it
fails as soon as the condition breaks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["POLL_S", "holds_for", "settles", "wait_until"]

POLL_S = 0.01
"""How often a condition is looked at again."""


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> float:
    """Wait until ``predicate()`` is true; return the seconds it took.

    Fails the test (``AssertionError`` naming ``what``) when it is still false after ``timeout``
    seconds.
    """
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what or 'the condition'}: not seen within {timeout:.1f} s")
        time.sleep(POLL_S)
    return time.monotonic() - started


def settles(
    predicate: Callable[[], bool], timeout: float, what: str = "", *, hold: float = 0.5
) -> float:
    """Wait until ``predicate()`` has been true for ``hold`` seconds in a row; return the seconds
    it took. Fails the test when that does not happen within ``timeout`` seconds."""
    started = time.monotonic()
    since: float | None = None
    while True:
        now = time.monotonic()
        if predicate():
            since = now if since is None else since
            if now - since >= hold:
                return now - started
        else:
            since = None
        if now - started > timeout:
            raise AssertionError(f"{what or 'the condition'}: not settled within {timeout:.1f} s")
        time.sleep(POLL_S)


def holds_for(predicate: Callable[[], bool], seconds: float, what: str = "") -> None:
    """Check that ``predicate()`` stays true for ``seconds``; fail as soon as it is false.

    For checks that something does *not* happen, where no event or flush can tell that it
    would have happened by now.
    """
    deadline = time.monotonic() + seconds
    while True:
        if not predicate():
            raise AssertionError(f"{what or 'the condition'}: broken before {seconds:.1f} s")
        if time.monotonic() >= deadline:
            return
        time.sleep(POLL_S)
