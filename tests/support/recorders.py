"""Recorders tests wait on: the events a ``ModelFlags`` sends its listeners, and log records.

Both are safe to share between threads: events and records arrive on background threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["EventRecorder", "LogRecorder", "recording_logs"]

E = TypeVar("E")


class EventRecorder:
    """A ``ModelFlags`` listener that keeps every event with its arrival time.

    ``ModelFlags(..., listeners=[recorder])``; then :meth:`of` and :meth:`wait_for` look at what
    arrived. Safe to share between threads.
    """

    def __init__(self) -> None:
        self.events: list[tuple[float, object]] = []
        self._changed = threading.Condition()

    def __call__(self, event: object) -> None:
        with self._changed:
            self.events.append((time.monotonic(), event))
            self._changed.notify_all()

    @property
    def seen(self) -> list[object]:
        """Every event so far, in arrival order."""
        with self._changed:
            return [event for _, event in self.events]

    def of(self, kind: type[E], since: float = 0.0) -> list[E]:
        """The events of type ``kind`` that arrived at or after ``since`` (``time.monotonic``)."""
        with self._changed:
            return [event for at, event in self.events if isinstance(event, kind) and at >= since]

    def wait_for(
        self,
        kind: type[E],
        timeout: float,
        since: float = 0.0,
        where: Callable[[E], bool] = lambda event: True,
    ) -> tuple[float, E]:
        """The first event of type ``kind`` at or after ``since`` matching ``where``, with its
        arrival time; fails the test when none arrives within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for at, event in self.events:
                    if isinstance(event, kind) and at >= since and where(event):
                        return at, event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    recent = [event for _, event in self.events[-5:]]
                    raise AssertionError(
                        f"no matching {kind.__name__} event within {timeout:.1f} s; "
                        f"the last ones: {recent}"
                    )
                self._changed.wait(remaining)


class LogRecorder(logging.Handler):
    """A logging handler that keeps the records it sees; tests wait for one.

    Use :func:`recording_logs` to attach it to a logger for the length of a block. Safe to share
    between threads.
    """

    def __init__(self, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def messages(self, level: int = logging.NOTSET) -> list[str]:
        """The formatted messages at ``level`` or above, in arrival order."""
        with self._changed:
            return [r.getMessage() for r in self.records if r.levelno >= level]

    def wait_for(
        self, match: Callable[[logging.LogRecord], bool], timeout: float = 5.0
    ) -> logging.LogRecord:
        """The first record matching ``match``; fails the test when none arrives in time."""
        with self._changed:
            found: list[logging.LogRecord] = []

            def matched() -> bool:
                found[:] = [record for record in self.records if match(record)][:1]
                return bool(found)

            if not self._changed.wait_for(matched, timeout):
                raise AssertionError(
                    f"no matching log record within {timeout:.1f} s; got {self.messages()[-5:]}"
                )
            return found[0]


@contextmanager
def recording_logs(logger: str = "", level: int = logging.DEBUG) -> Iterator[LogRecorder]:
    """Record what ``logger`` (and its children) logs at ``level`` or above inside the block."""
    recorder = LogRecorder(level)
    target = logging.getLogger(logger)
    previous = target.level
    if target.getEffectiveLevel() > level:
        target.setLevel(level)
    target.addHandler(recorder)
    try:
        yield recorder
    finally:
        target.removeHandler(recorder)
        target.setLevel(previous)
