"""Events for listeners, and the background dispatcher that delivers them.

Events are small frozen records. They are queued (bounded; when full, new events are dropped and
counted) and delivered on one daemon thread, so a slow or failing listener never delays or breaks a
request. A listener that raises is logged and skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "BecameLKG",
    "Event",
    "EventDispatcher",
    "FellBack",
    "Listener",
    "LoadFailed",
    "Loaded",
    "Quarantined",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A version was loaded (``seconds`` to fetch, verify and deserialize; artifact ``nbytes``)."""

    model: str
    version: str
    seconds: float
    nbytes: int


@dataclass(frozen=True, slots=True)
class LoadFailed:
    """A version failed to load; ``error`` is the message of the typed error."""

    model: str
    version: str
    error: str
    error_type: str


@dataclass(frozen=True, slots=True)
class FellBack:
    """A call was served by ``served`` instead of ``requested`` after a fresh failure.

    ``stage`` is ``"load"`` or ``"inference"``; ``method`` names the inference method, if any.
    """

    model: str
    requested: str
    served: str
    stage: str
    cause: str
    method: str | None = None


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A version is quarantined until ``retry_at`` (clock seconds) after ``failures`` in a row."""

    model: str
    version: str
    cause: str
    failures: int
    retry_at: float


@dataclass(frozen=True, slots=True)
class BecameLKG:
    """``version`` is now the last known good version of ``model`` (``previous`` was)."""

    model: str
    version: str
    previous: str


Event = object
Listener = Callable[[Event], None]

_STOP = object()


class _Marker:
    """Queued by flush(); set when every event before it was delivered."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class EventDispatcher:
    """Delivers events to listeners on a background thread.

    Safe to share between threads. The thread starts with the first event and stops on
    :meth:`close`; it is a daemon, so it never keeps the interpreter alive.
    """

    def __init__(self, listeners: Iterable[Listener] = (), *, maxsize: int = 10_000) -> None:
        self._listeners: tuple[Listener, ...] = tuple(listeners)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0

    def add(self, listener: Listener) -> None:
        """Add a listener; it receives events emitted from now on."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove(self, listener: Listener) -> None:
        """Remove a listener (no error if it is absent)."""
        with self._lock:
            self._listeners = tuple(item for item in self._listeners if item != listener)

    def emit(self, event: Event) -> None:
        """Queue ``event`` for the listeners; never blocks, never raises."""
        if not self._listeners or self._closed:
            return
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was delivered; False if ``timeout`` passed first."""
        if self._thread is None:
            return True
        marker = _Marker()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout``) and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="modelflags-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Marker):
                item.done.set()
                continue
            for listener in self._listeners:
                try:
                    listener(item)
                except Exception:
                    logger.exception("listener %r raised on %r; ignored", listener, item)
