"""Per-version serving metrics: a sliding time window, and running totals for the guardrails.

:class:`Metrics` keeps, for every (model, version) pair, a ring of ``buckets`` time slices of
``window_s / buckets`` seconds each. A call or an outcome is added to the slice of the current
time; a slice whose time has passed is reset the next time its place in the ring is used, so
nothing runs in the background and memory does not grow with traffic. A query merges the slices
still inside the window: the current one (partly filled) and the ``buckets - 1`` before it, so the
window spans between ``window_s - window_s / buckets`` and ``window_s`` seconds.

Beside the window, every series keeps :class:`~modelflags.rollout.totals.RunningTotals`: sums
since the series started (its version's first call in this process, or since it was reset),
which the guardrails' sequential tests read (:meth:`Metrics.comparison`). When a series starts it
notes the totals every other version of the model has then, so a comparison gives both versions'
sums over the same period, the candidate's lifetime, however long the baseline served before.

Latency quantiles come from :class:`~modelflags.telemetry.histogram.LatencyHistogram` (within
1%); counts, sums and means are exact. Recording is O(1) and takes one short lock per (model,
version); the bucket of a latency is computed once for the window and the totals.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol

from modelflags.rollout.totals import RunningTotals, Totals
from modelflags.telemetry.histogram import FLOOR_S, GROWTH, LatencyHistogram

_log = math.log
_LOG_GROWTH = math.log(GROWTH)  # the same float as the histogram's, so buckets agree

__all__ = ["Metrics", "MetricsRecorder", "OutcomeStats", "VersionMetrics"]


class MetricsRecorder(Protocol):
    """What the serving path calls after each inference call and for each observed outcome.

    :class:`Metrics` and :class:`modelflags.otel.OpenTelemetryMetrics` both fit.
    """

    def record_call(
        self, model: str, version: str, latency_s: float, error: bool, fell_back: bool
    ) -> None:
        """One inference call asked of ``version``: its duration, whether it raised, and
        whether the last known good version answered in its place."""

    def record_outcome(self, model: str, version: str, name: str, value: float) -> None:
        """One observed business outcome (``name``, e.g. ``"click"``) of a call ``version``
        served."""


@dataclass(frozen=True, slots=True)
class OutcomeStats:
    """The values of one outcome in the window: how many, their sum and mean."""

    count: int
    total: float
    mean: float


@dataclass(frozen=True, slots=True)
class VersionMetrics:
    """One version's calls and outcomes in the window of ``window_s`` seconds.

    ``skipped`` counts the requests the version never ran: the last known good version answered
    them because the version was quarantined, rolled back or still loading (they are part of
    ``requests`` and ``fallbacks``); ``ran`` is the rest. ``error_rate`` is ``errors / ran``
    (0.0 when it ran none). Latency quantiles are in seconds, within 1%, over the calls the
    version ran, and ``None`` without any. ``outcomes`` maps outcome names to their statistics.
    """

    version: str
    window_s: float
    requests: int
    errors: int
    fallbacks: int
    error_rate: float
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    outcomes: Mapping[str, OutcomeStats] = field(default_factory=lambda: MappingProxyType({}))
    skipped: int = 0

    @property
    def ran(self) -> int:
        """Requests the version itself ran or tried to load: ``requests - skipped``."""
        return self.requests - self.skipped


class _Slice:
    """What happened during one time slice (``epoch`` numbers the slice since clock zero)."""

    __slots__ = ("epoch", "errors", "fallbacks", "latency", "outcomes", "requests", "skipped")

    def __init__(self) -> None:
        self.epoch = -1
        self.requests = 0
        self.errors = 0
        self.fallbacks = 0
        self.skipped = 0
        self.latency = LatencyHistogram()
        self.outcomes: dict[str, list[float]] = {}  # name -> [count, total]

    def restart(self, epoch: int) -> None:
        self.epoch = epoch
        self.requests = 0
        self.errors = 0
        self.fallbacks = 0
        self.skipped = 0
        if self.latency.count:
            self.latency = LatencyHistogram()
        if self.outcomes:
            self.outcomes = {}


class _Series:
    """The ring of slices of one (model, version) pair, its running totals, and the lock that
    guards both. ``offsets`` holds, for every other version of the model that had a series when
    this one started, that series and its totals then; ``peers`` the other series of the model
    (replaced whole when one is added or removed); ``running`` whether this version's last call
    ran (false while the LKG answers its calls: quarantined, rolled back, loading)."""

    __slots__ = ("lock", "offsets", "peers", "running", "slices", "totals")

    def __init__(self, buckets: int, started: float) -> None:
        self.lock = threading.Lock()
        self.slices = [_Slice() for _ in range(buckets)]
        self.totals = RunningTotals(started)
        self.offsets: dict[str, tuple[_Series, Totals]] = {}
        self.peers: tuple[_Series, ...] = ()
        self.running = True

    def snapshot(self, alongside: object = None) -> Totals:
        """The totals now; with ``alongside`` (another series), what ran while it was running."""
        with self.lock:
            return self.totals.snapshot(alongside)


class Metrics:
    """Request counts, errors, fallbacks, latency and outcomes per version, over a sliding window.

    ``clock`` gives monotonic seconds (inject a fake one in tests). Safe to share between threads:
    each (model, version) pair has its own lock, held only for a few additions.
    """

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        buckets: int = 12,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, not {window_s!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, not {buckets!r}")
        self.window_s = float(window_s)
        self.buckets = buckets
        self.slice_s = self.window_s / buckets
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._by_model: dict[str, dict[str, _Series]] = {}

    # -- recording (the hot path) ---------------------------------------------------------------

    def record_call(
        self, model: str, version: str, latency_s: float, error: bool, fell_back: bool
    ) -> None:
        """Count one inference call asked of ``version`` (``latency_s`` seconds).

        ``error``: the version raised; ``fell_back``: the last known good version answered.
        A call that fell back without an error never ran on ``version``: it counts as skipped,
        and its latency (the last known good version's) is left out. A latency that is not a
        finite, non-negative number (NaN, an infinity) is left out too; the call still counts.
        """
        series = self._series.get((model, version))
        if series is None:
            series = self._add_series(model, version)
        epoch = int(self._clock() // self.slice_s)
        with series.lock:
            piece = series.slices[epoch % self.buckets]
            if piece.epoch < epoch:
                piece.restart(epoch)
            totals = series.totals
            piece.requests += 1
            totals.requests += 1
            if error:
                piece.errors += 1
                totals.errors += 1
            if fell_back:
                piece.fallbacks += 1
                totals.fallbacks += 1
                if not error:
                    piece.skipped += 1
                    totals.skipped += 1
                    series.running = False
                    return
            series.running = True
            if 0.0 <= latency_s < math.inf:  # False for NaN too: the call counts, not its time
                # bucket_index(latency_s), inlined: this is the hot path
                index = (
                    0 if latency_s <= FLOOR_S else int(_log(latency_s / FLOOR_S) / _LOG_GROWTH) + 1
                )
                piece.latency.add_at(index, latency_s)
                buckets = totals.latency
                buckets[index] = buckets.get(index, 0) + 1
                totals.latency_count += 1
                totals.latency_sum += latency_s
                totals.latency_sq += latency_s * latency_s
            # What this version ran while each other version was running too: the error-rate
            # comparison weighs errors only over time both could err (see Metrics.comparison).
            for peer in series.peers:
                if peer.running:
                    counts = totals.alongside.get(peer)
                    if counts is None:
                        totals.alongside[peer] = [1, int(error)]
                    else:
                        counts[0] += 1
                        counts[1] += error

    def record_outcome(self, model: str, version: str, name: str, value: float) -> None:
        """Add one value of outcome ``name`` (e.g. 1.0 for a click, 0.0 for none) to ``version``.

        Comparing means needs one value per served call, zeros included.
        """
        series = self._series.get((model, version))
        if series is None:
            series = self._add_series(model, version)
        epoch = int(self._clock() // self.slice_s)
        with series.lock:
            piece = series.slices[epoch % self.buckets]
            if piece.epoch < epoch:
                piece.restart(epoch)
            sums = piece.outcomes.get(name)
            if sums is None:
                piece.outcomes[name] = [1, float(value)]
            else:
                sums[0] += 1
                sums[1] += value
            running = series.totals.outcomes.get(name)
            if running is None:
                running = series.totals.outcomes[name] = [0, 0.0, 0.0, 1.0]
            running[0] += 1
            running[1] += value
            running[2] += value * value
            if value != 0.0 and value != 1.0:
                running[3] = 0.0

    def reset_after_fork(self) -> None:
        """In a child process just forked: fresh locks (a recording thread may have held one)."""
        self._lock = threading.Lock()
        for series in self._series.values():
            series.lock = threading.Lock()

    def _add_series(self, model: str, version: str) -> _Series:
        with self._lock:
            series = self._series.get((model, version))
            if series is None:
                series = _Series(self.buckets, self._clock())
                others = self._by_model.setdefault(model, {})
                # Once per version: what the others had when this one started (each under its
                # own lock, never while recording holds one).
                series.offsets = {other: (held, held.snapshot()) for other, held in others.items()}
                self._series[(model, version)] = series
                others[version] = series
                self._link(others)
            return series

    @staticmethod
    def _link(series: Mapping[str, _Series]) -> None:
        """Give each series of one model the tuple of the others (the global lock is held)."""
        every = tuple(series.values())
        for held in every:
            held.peers = tuple(other for other in every if other is not held)

    # -- queries --------------------------------------------------------------------------------

    def snapshot(self, model: str, *, window_s: float | None = None) -> dict[str, VersionMetrics]:
        """The metrics of each version of ``model`` with calls or outcomes in the window.

        ``window_s`` (at most the window this instance keeps) looks at the most recent part of it
        only, rounded up to whole slices; the result's ``window_s`` says what was covered.
        """
        slices = self.buckets if window_s is None else self._slices_for(window_s)
        newest = int(self._clock() // self.slice_s)
        oldest = newest - slices + 1
        with self._lock:
            versions = list(self._by_model.get(model, {}).items())
        result: dict[str, VersionMetrics] = {}
        for version, series in versions:
            merged = self._merge(version, series, oldest, newest, slices * self.slice_s)
            if merged is not None:
                result[version] = merged
        return result

    def versions(self, model: str, *, window_s: float | None = None) -> list[str]:
        """The versions of ``model`` with calls or outcomes in the window (cheap: no merging)."""
        slices = self.buckets if window_s is None else self._slices_for(window_s)
        newest = int(self._clock() // self.slice_s)
        oldest = newest - slices + 1
        with self._lock:
            versions = list(self._by_model.get(model, {}).items())
        return [
            version
            for version, series in versions
            if any(
                oldest <= piece.epoch <= newest and (piece.requests or piece.outcomes)
                for piece in series.slices
            )
        ]

    def totals(self, model: str, version: str) -> Totals | None:
        """Everything ``version`` recorded since its series started (``None``: nothing yet)."""
        series = self._series.get((model, version))
        return None if series is None else series.snapshot()

    def comparison(self, model: str, candidate: str, baseline: str) -> tuple[Totals, Totals]:
        """``candidate``'s totals since its series started, and ``baseline``'s over the same
        period (empty totals for a version with nothing recorded).

        The baseline's sums are its totals now less those it had when the candidate's series
        started, when it is still the same series (a baseline reset since then counts whole).
        Its ``alongside`` counts are the calls it ran, and their errors, while the candidate's
        last call ran: time in which both could err. The error-rate comparison needs them: a
        quarantine right after a candidate's error skips its next calls, and comparing its
        errors with the baseline's over the whole time would read that gap as evidence.
        """
        held = self._series.get((model, candidate))
        mine = Totals() if held is None else held.snapshot()
        theirs_series = self._series.get((model, baseline))
        if theirs_series is None:
            return mine, Totals(started=mine.started)
        theirs = theirs_series.snapshot(held)
        offset = None if held is None else held.offsets.get(baseline)
        if offset is not None and offset[0] is theirs_series:
            theirs = replace(theirs.since(offset[1]), alongside=theirs.alongside)
        return mine, theirs

    def reset(self, model: str, version: str | None = None) -> None:
        """Forget what was recorded for ``version`` of ``model`` (every version without one)."""
        with self._lock:
            versions = self._by_model.get(model, {})
            names = list(versions) if version is None else [version]
            for name in names:
                series = versions.pop(name, None)
                self._series.pop((model, name), None)
                self._link(versions)
                if series is None:
                    continue
                with series.lock:
                    for piece in series.slices:
                        piece.restart(-1)
                for other in versions.values():  # let the forgotten series go
                    with other.lock:
                        other.totals.alongside.pop(series, None)
                        if other.offsets.get(name, (None,))[0] is series:
                            del other.offsets[name]

    def _slices_for(self, window_s: float) -> int:
        if not window_s > 0 or window_s > self.window_s * (1 + 1e-9):
            raise ValueError(
                f"window_s must be positive and at most {self.window_s:g} s (the window kept), "
                f"not {window_s!r}"
            )
        return max(1, min(self.buckets, math.ceil(window_s / self.slice_s - 1e-9)))

    @staticmethod
    def _merge(
        version: str, series: _Series, oldest: int, newest: int, window_s: float
    ) -> VersionMetrics | None:
        requests = errors = fallbacks = skipped = 0
        latency = LatencyHistogram()
        outcomes: dict[str, list[float]] = {}
        for piece in series.slices:
            # One slice at a time, so a recording thread never waits for a whole merge.
            with series.lock:
                if not oldest <= piece.epoch <= newest:
                    continue
                requests += piece.requests
                errors += piece.errors
                fallbacks += piece.fallbacks
                skipped += piece.skipped
                latency.merge(piece.latency)
                for name, (count, total) in piece.outcomes.items():
                    sums = outcomes.setdefault(name, [0, 0.0])
                    sums[0] += count
                    sums[1] += total
        if not requests and not outcomes:
            return None
        return VersionMetrics(
            version=version,
            window_s=window_s,
            requests=requests,
            errors=errors,
            fallbacks=fallbacks,
            error_rate=errors / (requests - skipped) if requests > skipped else 0.0,
            latency_p50=latency.quantile(0.5),
            latency_p95=latency.quantile(0.95),
            latency_p99=latency.quantile(0.99),
            outcomes=MappingProxyType(
                {
                    name: OutcomeStats(int(count), total, total / count)
                    for name, (count, total) in sorted(outcomes.items())
                }
            ),
            skipped=skipped,
        )
