"""Snapshots for the status page, taken off the request path.

A page never asks the serving parts anything while it renders: a :class:`Sampler` thread takes a
:class:`Snapshot` every ``interval`` seconds (status, per-version metrics, shadow statistics and,
while someone looks at the page, the decision log's last lines), keeps the newest one, and adds
one :class:`Point` per version to a bounded history the charts draw. However many browsers keep
the page open, the serving parts are read once per interval.

The thread starts with the first page asked for (:meth:`Sampler.latest`) and stops with
:meth:`Sampler.close`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from modelflags.rollout.metrics import VersionMetrics
from modelflags.serving.shadow import ShadowStats
from modelflags.telemetry.status import ModelStatus

__all__ = ["Point", "Sampler", "Snapshot", "StatusSource", "answered_by"]

logger = logging.getLogger(__name__)

DECISIONS = 200
"""Decision log entries read per snapshot (a bounded read of the file's end, parsed from it)."""
ACTIONS_KEPT = 200
"""Actions from the decision log kept across snapshots."""
WATCHED_S = 60.0
"""The decision log is read while a page was asked for within this many seconds."""
_QUIET_S = 60.0  # at most one log line per this many seconds about failing samples


class StatusSource(Protocol):
    """What the sampler reads: the public methods of :class:`~modelflags.ModelFlags`."""

    def status(self) -> dict[str, ModelStatus]: ...

    def metrics(self, name: str) -> dict[str, VersionMetrics]: ...

    def shadow_report(self, name: str) -> dict[tuple[str, str], ShadowStats]: ...

    def recent_decisions(
        self, limit: int = 50, *, model: str | None = None, actions: bool = False
    ) -> list[dict[str, Any]] | None: ...


@dataclass(frozen=True, slots=True)
class Point:
    """One version at one snapshot, over the metrics window then.

    ``requests``: calls the flag sent to the version; ``answered``: calls the version itself
    answered (the LKG also counts those it answered for others); ``error_rate`` and latency
    quantiles (seconds) as in :class:`~modelflags.rollout.metrics.VersionMetrics`; ``outcomes``:
    the mean of each outcome.
    """

    requests: int
    answered: int
    error_rate: float
    p50: float | None
    p95: float | None
    outcomes: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Snapshot:
    """What the serving parts said at wall-clock time ``at``.

    ``decisions`` holds the decision log's last lines (``None``: no decision log);
    ``logged_actions`` the actions (rollbacks, releases, decisions on proposals) seen in the
    log's last lines by this or earlier snapshots, oldest first, so that the serving decisions
    written after an action do not push it off the page. ``error`` is the last sampling failure,
    when the newest attempt failed and this snapshot is older.
    """

    at: float
    status: Mapping[str, ModelStatus]
    metrics: Mapping[str, Mapping[str, VersionMetrics]]
    shadow: Mapping[str, Mapping[tuple[str, str], ShadowStats]]
    decisions: tuple[Mapping[str, Any], ...] | None
    logged_actions: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None


def answered_by(metrics: Mapping[str, VersionMetrics], lkg: str) -> dict[str, int]:
    """Calls each version answered itself: what the flag sent it, less what fell back; what fell
    back was answered by ``lkg`` (the LKG now stands for the LKG then)."""
    answered = {version: m.requests - m.fallbacks for version, m in metrics.items()}
    fell_back = sum(m.fallbacks for version, m in metrics.items() if version != lkg)
    if fell_back:
        answered[lkg] = answered.get(lkg, 0) + fell_back
    return {version: count for version, count in answered.items() if count > 0}


class Sampler:
    """Takes snapshots of ``source`` every ``interval`` seconds on a thread of its own.

    ``history_s``: how long points are kept (bounded: ``history_s / interval`` snapshots);
    ``clock``: wall-clock seconds. Safe to share between threads: readers get the newest
    snapshot and copies of the history; sampling runs outside the lock.
    """

    def __init__(
        self,
        source: StatusSource,
        *,
        interval: float = 2.0,
        history_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"sample_s must be positive, not {interval!r}")
        if not history_s >= interval:
            raise ValueError(f"history_s ({history_s!r}) must be at least sample_s ({interval!r})")
        self._source = source
        self.interval = float(interval)
        self._clock = clock
        self._lock = threading.Lock()
        # One snapshot at a time: one taken after an action must not be replaced by one the
        # thread began earlier and finished later (without the action's effect).
        self._sampling = threading.Lock()
        self._history: deque[tuple[float, Mapping[str, Mapping[str, Point]]]] = deque(
            maxlen=math.ceil(history_s / interval)
        )
        self._latest: Snapshot | None = None
        self._watched_until = 0.0
        self._last_complaint = -math.inf
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- readers --------------------------------------------------------------------------------

    def latest(self) -> Snapshot:
        """The newest snapshot; the first call takes one and starts the thread."""
        self._watched_until = self._clock() + WATCHED_S
        snapshot = self._latest
        if snapshot is None:
            snapshot = self.sample_now()
        self.start()
        return snapshot

    def history(self, model: str) -> list[tuple[float, Mapping[str, Point]]]:
        """``(time, {version: point})`` of ``model`` for every kept snapshot, oldest first."""
        with self._lock:
            kept = list(self._history)
        return [(at, points.get(model, {})) for at, points in kept]

    @property
    def running(self) -> bool:
        """True while the sampling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- sampling -------------------------------------------------------------------------------

    def sample_now(self) -> Snapshot:
        """Take a snapshot now (after an action, so the page shows its effect at once)."""
        with self._sampling:
            return self._sample()

    def _sample(self) -> Snapshot:
        try:
            snapshot = self._take()
        except Exception as exc:
            now = self._clock()
            if now - self._last_complaint >= _QUIET_S:
                self._last_complaint = now
                logger.exception("status page: taking a snapshot failed")
            previous = self._latest
            text = f"{type(exc).__name__}: {exc}"
            if previous is None:
                return Snapshot(now, {}, {}, {}, None, error=text)
            failed = dataclasses.replace(previous, error=text)
            self._latest = failed
            return failed
        points = {
            name: _points(snapshot.metrics.get(name, {}), status.lkg)
            for name, status in snapshot.status.items()
        }
        with self._lock:
            self._history.append((snapshot.at, points))
        self._latest = snapshot
        return snapshot

    def _take(self) -> Snapshot:
        source = self._source
        at = self._clock()
        status = source.status()
        metrics = {name: source.metrics(name) for name in status}
        shadow = {name: source.shadow_report(name) for name in status}
        previous = self._latest
        kept = () if previous is None else previous.logged_actions
        if previous is not None and at > self._watched_until:  # nobody looks: skip the file
            return Snapshot(at, status, metrics, shadow, previous.decisions, kept)
        found = source.recent_decisions(DECISIONS)
        if found is None:
            return Snapshot(at, status, metrics, shadow, None)
        # Actions read on their own: under heavy traffic a minute-old rollback is far behind
        # the last DECISIONS lines, but still within the bounded read of the file's end.
        acted = source.recent_decisions(ACTIONS_KEPT, actions=True) or []
        return Snapshot(at, status, metrics, shadow, tuple(found), _merge(kept, acted))

    def start(self) -> None:
        """Start the sampling thread (once; never after :meth:`close`)."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name="modelflags-status-sampler", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (at most ``timeout`` seconds). Idempotent."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_now()


def _merge(
    kept: tuple[Mapping[str, Any], ...], found: list[dict[str, Any]]
) -> tuple[Mapping[str, Any], ...]:
    """``kept`` and the actions among ``found`` not in it yet, the newest :data:`ACTIONS_KEPT`."""
    seen = {_key(entry) for entry in kept}
    new = [entry for entry in found if "action" in entry and _key(entry) not in seen]
    return (*kept, *new)[-ACTIONS_KEPT:] if new else kept


def _key(entry: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(entry.get(field)) for field in ("time", "action", "model", "version", "by"))


def _points(metrics: Mapping[str, VersionMetrics], lkg: str) -> Mapping[str, Point]:
    answered = answered_by(metrics, lkg)
    return MappingProxyType(
        {
            version: Point(
                requests=m.requests,
                answered=answered.get(version, 0),
                error_rate=m.error_rate,
                p50=m.latency_p50,
                p95=m.latency_p95,
                outcomes=MappingProxyType({name: s.mean for name, s in m.outcomes.items()}),
            )
            for version, m in sorted(metrics.items())
        }
    )
