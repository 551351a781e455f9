"""Waiting in tests: on a condition, with a bounded timeout, never a fixed sleep.

``wait_until`` is for "this will happen": it returns as soon as the condition holds. ``settles``
is for "this will happen and stay so". ``holds_for`` is for "this does not happen": it is the one
place where a test watches the clock, and only where the code gives no point to synchronise on; it
fails as soon as the condition breaks.

Between two looks at the condition each waits at least :data:`POLL_S`, and at least as long as the
last look took: a condition that serves hundreds of requests to find its answer then takes at
most half of the interpreter, and the threads it waits for (a provider's poller, a prewarm pass)
get the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["POLL_S", "holds_for", "settles", "wait_until"]

POLL_S = 0.01
"""The shortest pause between two looks at a condition, in seconds."""


def _look(predicate: Callable[[], object]) -> tuple[bool, float]:
    """The condition's value and the seconds it took to compute it."""
    began = time.monotonic()
    held = bool(predicate())
    return held, time.monotonic() - began


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> float:
    """Wait until ``predicate()`` is true; return the seconds it took.

    Fails the test (``AssertionError`` naming ``what``) when it is still false after ``timeout``
    seconds.
    """
    started = time.monotonic()
    while True:
        held, took = _look(predicate)
        if held:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what or 'the condition'}: not seen within {timeout:.1f} s")
        time.sleep(max(POLL_S, took))


def settles(
    predicate: Callable[[], object], timeout: float, what: str = "", *, hold: float = 0.5
) -> float:
    """Wait until ``predicate()`` has been true for ``hold`` seconds in a row; return the seconds
    it took. Fails the test when that does not happen within ``timeout`` seconds."""
    started = time.monotonic()
    since: float | None = None
    while True:
        now = time.monotonic()
        held, took = _look(predicate)
        if held:
            since = now if since is None else since
            if now - since >= hold:
                return now - started
        else:
            since = None
        if now - started > timeout:
            raise AssertionError(f"{what or 'the condition'}: not settled within {timeout:.1f} s")
        time.sleep(max(POLL_S, took))


def holds_for(predicate: Callable[[], object], seconds: float, what: str = "") -> None:
    """Check that ``predicate()`` stays true for ``seconds``; fail as soon as it is false.

    For checks that something does *not* happen, where no event or flush can tell that it
    would have happened by now.
    """
    deadline = time.monotonic() + seconds
    while True:
        held, took = _look(predicate)
        if not held:
            raise AssertionError(f"{what or 'the condition'}: broken before {seconds:.1f} s")
        if time.monotonic() >= deadline:
            return
        time.sleep(max(POLL_S, took))
