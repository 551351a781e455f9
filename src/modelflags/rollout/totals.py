"""Running totals: everything one version recorded since a point in time, for the sequential tests.

The guardrails' tests (:mod:`modelflags.rollout.statistics`) need, per version, sums kept since
the comparison started, never windowed: how many calls it ran and how many raised
(:class:`~modelflags.rollout.evidence.Counts`), the latency histogram's bucket counts and the
latencies' sum and sum of squares, and each outcome's count, sum and sum of squares
(:class:`~modelflags.rollout.evidence.Moments`). :class:`RunningTotals` is what the request path
adds to (under its series' lock, a few additions a call); :class:`Totals` is an immutable
snapshot of it, and :meth:`Totals.since` the difference between two snapshots (what happened in
between).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from modelflags.rollout.evidence import Counts, Moments

__all__ = ["OutcomeTotals", "RunningTotals", "Totals"]

_NONE = Moments(0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class OutcomeTotals:
    """One outcome's values: their moments, and whether every one of them was 0 or 1."""

    moments: Moments
    binary: bool


@dataclass(frozen=True, slots=True)
class Totals:
    """What one version recorded over a period: calls, errors, latencies and outcomes.

    ``requests`` counts the calls asked of the version, ``skipped`` those the LKG answered
    without the version running (quarantined, rolled back, loading); ``errors`` those that raised
    or failed to load. ``latency`` maps histogram buckets (the layout of
    :class:`~modelflags.telemetry.histogram.LatencyHistogram`) to counts of the calls it ran, and
    ``latency_moments`` sums their seconds. ``started`` is the clock time the period began.
    ``alongside``, on the baseline side of a comparison, counts the calls it ran and their
    errors while the candidate's last call ran (``None`` elsewhere). Immutable: safe to share
    between threads.
    """

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    skipped: int = 0
    latency: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    latency_moments: Moments = _NONE
    outcomes: Mapping[str, OutcomeTotals] = field(default_factory=lambda: MappingProxyType({}))
    started: float = 0.0
    alongside: Counts | None = None

    @property
    def ran(self) -> int:
        """Calls the version itself ran or tried to load: ``requests - skipped``."""
        return self.requests - self.skipped

    @property
    def errors_counts(self) -> Counts:
        """Errors among the calls the version ran, for the rate tests."""
        return Counts(self.ran, self.errors)

    def since(self, earlier: Totals) -> Totals:
        """What was recorded after ``earlier``, a snapshot of the same running totals."""
        latency = dict(self.latency)
        for index, count in earlier.latency.items():
            left = latency.get(index, 0) - count
            if left:
                latency[index] = left
            else:
                latency.pop(index, None)
        outcomes = {}
        for name, now in self.outcomes.items():
            before = earlier.outcomes.get(name)
            if before is None:
                outcomes[name] = now
                continue
            outcomes[name] = OutcomeTotals(_minus(now.moments, before.moments), now.binary)
        return Totals(
            requests=self.requests - earlier.requests,
            errors=self.errors - earlier.errors,
            fallbacks=self.fallbacks - earlier.fallbacks,
            skipped=self.skipped - earlier.skipped,
            latency=MappingProxyType(latency),
            latency_moments=_minus(self.latency_moments, earlier.latency_moments),
            outcomes=MappingProxyType(outcomes),
            started=max(self.started, earlier.started),
        )


def _minus(now: Moments, before: Moments) -> Moments:
    count = now.count - before.count
    if count <= 0:
        return _NONE
    # Sums of squares lose a little to rounding when subtracted: never let them go negative.
    return Moments(count, now.total - before.total, max(0.0, now.total_sq - before.total_sq))


class RunningTotals:
    """The running sums of one version since its series started.

    Not safe to share between threads on its own: the metrics' series lock serialises every
    update and snapshot.
    """

    __slots__ = (
        "alongside",
        "errors",
        "fallbacks",
        "latency",
        "latency_count",
        "latency_sq",
        "latency_sum",
        "outcomes",
        "requests",
        "skipped",
        "started",
    )

    def __init__(self, started: float) -> None:
        self.started = started
        self.requests = 0
        self.errors = 0
        self.fallbacks = 0
        self.skipped = 0
        # histogram bucket (the layout of LatencyHistogram) -> count, and the seconds' sums
        self.latency: dict[int, int] = {}
        self.latency_count = 0
        self.latency_sum = 0.0
        self.latency_sq = 0.0
        # name -> [count, total, total of squares, 1.0 while every value was 0 or 1]
        self.outcomes: dict[str, list[float]] = {}
        # another version's series -> [calls, errors] this one ran while that one was running
        self.alongside: dict[object, list[int]] = {}

    def snapshot(self, alongside: object = None) -> Totals:
        """An immutable copy of the sums now, with what ran alongside ``alongside`` (another
        version's series) when given."""
        paired = None
        if alongside is not None:
            calls, errors = self.alongside.get(alongside, (0, 0))
            paired = Counts(calls, errors)
        return Totals(
            requests=self.requests,
            errors=self.errors,
            fallbacks=self.fallbacks,
            skipped=self.skipped,
            latency=MappingProxyType(dict(self.latency)),
            latency_moments=Moments(self.latency_count, self.latency_sum, self.latency_sq),
            outcomes=MappingProxyType(
                {
                    name: OutcomeTotals(Moments(int(count), total, total_sq), binary == 1.0)
                    for name, (count, total, total_sq, binary) in self.outcomes.items()
                }
            ),
            started=self.started,
            alongside=paired,
        )
