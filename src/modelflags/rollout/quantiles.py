"""A quantile of latency (p95) against the baseline's, from histogram bucket counts.

:class:`QuantileComparison` takes each arm's bucket counts since the comparison started (in the
layout of :class:`~modelflags.telemetry.histogram.LatencyHistogram`: 1%-wide logarithmic
buckets, see :func:`latency_bucket_bounds`), so recording stays one dictionary increment.

The confidence sequence for a quantile follows Howard & Ramdas, "Sequential estimation of
quantiles with applications to A/B-testing and best-arm identification" (Bernoulli 2022): for
any value ``y``, the number of samples above ``y`` is binomial, so a time-uniform bound on a
binomial count becomes a bound on the rank of an order statistic. With ``p0 = 1 - q`` (0.05
for p95):

- lower bound of the q-quantile: if the quantile were at most ``y``, each sample would exceed
  ``y`` with probability at most ``p0``; the exact binomial e-process of
  :func:`~modelflags.rollout.sequential.exceedance_threshold` rejects that once ``e`` samples
  exceed ``y``, so the quantile is above the ``e``-th largest sample (rounded down to its
  bucket's lower edge);
- upper bound: symmetrically, below the value with at most the downward threshold of samples at
  or above it (rounded up to its bucket's upper edge).

Each arm's bounds take half the rule's alpha, so with probability ``1 - alpha`` they hold
together at every check; then ``lower_c / upper_b - 1`` bounds the relative change of the
quantile from below, and a breach (that bound above the tolerance) never happens while the
candidate's quantile is within the tolerance. Exact at every count: no minimum is needed.

:class:`QuantileLimit` is the absolute form (an SLO such as "p95 at most 100 ms"): the
candidate's lower bound alone, with the whole alpha, against the limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from modelflags.rollout.evidence import Evidence, check_alpha, check_tolerance
from modelflags.rollout.sequential import exceedance_threshold
from modelflags.telemetry.histogram import bucket_bounds, bucket_index

__all__ = [
    "QuantileComparison",
    "QuantileLimit",
    "latency_bucket_bounds",
    "latency_bucket_index",
]

_METHOD = (
    "quantile confidence sequences per arm, alpha/2 each (order statistics, Howard & Ramdas "
    "2022; exact binomial mixture)"
)
_LIMIT_METHOD = "quantile confidence sequence (order statistics, Howard & Ramdas 2022)"
_EDGE = 1e-9  # bucket edges are widened by this (relative) against rounding at the boundary


def latency_bucket_index(seconds: float) -> int:
    """The bucket of :class:`~modelflags.telemetry.histogram.LatencyHistogram` for a duration."""
    return bucket_index(seconds)


def latency_bucket_bounds(index: int) -> tuple[float, float]:
    """The durations (seconds) bucket ``index`` of a ``LatencyHistogram`` may hold, widened by
    a hair so that every value recorded there lies inside."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"a latency bucket index is a non-negative integer, not {index!r}")
    low, high = bucket_bounds(index)
    return low * (1.0 - _EDGE), high * (1.0 + _EDGE)


@dataclass(frozen=True, slots=True)
class _Arm:
    """One arm's non-empty buckets, highest first, with their bounds."""

    total: int
    buckets: tuple[tuple[float, float, int], ...]  # (low, high, count), highest first

    def lower(self, p0: float, alpha: float) -> float:
        """A lower confidence bound of the (1 - p0)-quantile (0.0 when there is none yet)."""
        needed = exceedance_threshold(self.total, p0, alpha, upward=True)
        if needed > self.total:
            return 0.0
        seen = 0
        for low, _, count in self.buckets:
            seen += count
            if seen >= needed:
                return low
        return 0.0  # pragma: no cover - needed <= total is reached above

    def upper(self, p0: float, alpha: float) -> float:
        """An upper confidence bound of the (1 - p0)-quantile (``inf`` when there is none)."""
        allowed = exceedance_threshold(self.total, p0, alpha, upward=False)
        if allowed < 0:
            return math.inf
        seen = 0
        for _, high, count in self.buckets:
            seen += count
            if seen > allowed:
                return high
        return math.inf  # pragma: no cover - allowed < total always

    def estimate(self, q: float) -> float | None:
        """The nearest-rank q-quantile, at its bucket's geometric middle."""
        if not self.total:
            return None
        from_top = self.total - max(1, math.ceil(q * self.total)) + 1
        seen = 0
        for low, high, count in self.buckets:
            seen += count
            if seen >= from_top:
                return math.sqrt(low * high) if low > 0.0 else high
        return None  # pragma: no cover


@dataclass(frozen=True, slots=True)
class QuantileComparison:
    """The candidate's ``quantile`` may be higher than the baseline's by at most ``tolerance``.

    ``tolerance`` is relative (0.2: the candidate's p95 may be up to 20% higher). The inputs map
    bucket indices to counts; ``bounds`` gives the values a bucket holds (by default the layout
    of ``LatencyHistogram``). ``alpha`` is this rule's share of the model's false-alarm budget.

    Immutable: safe to share between threads.
    """

    rule: str
    tolerance: float
    alpha: float = 0.05
    quantile: float = 0.95
    bounds: Callable[[int], tuple[float, float]] = latency_bucket_bounds

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        check_tolerance(f"{self.rule}: tolerance", self.tolerance)
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(
                f"{self.rule}: quantile must be between 0 and 1, not {self.quantile!r}"
            )

    def evaluate(self, candidate: Mapping[int, int], baseline: Mapping[int, int]) -> Evidence:
        """The evidence after ``candidate`` and ``baseline``, each arm's bucket counts since the
        start. Raises ``ValueError`` on negative counts or bucket indices ``bounds`` refuses."""
        arm_c = self._arm(candidate, "candidate")
        arm_b = self._arm(baseline, "baseline")
        p0, half = 1.0 - self.quantile, self.alpha / 2.0
        decided = arm_c.total > 0 and arm_b.total > 0
        estimate = None
        mid_c, mid_b = arm_c.estimate(self.quantile), arm_b.estimate(self.quantile)
        if mid_c is not None and mid_b:
            estimate = mid_c / mid_b - 1.0
        lower, upper = -math.inf, math.inf
        if decided:
            high_b = arm_b.upper(p0, half)
            low_b = arm_b.lower(p0, half)
            lower = arm_c.lower(p0, half) / high_b - 1.0 if high_b > 0.0 else math.inf
            upper = arm_c.upper(p0, half) / low_b - 1.0 if low_b > 0.0 else math.inf
        return Evidence(
            rule=self.rule,
            method=_METHOD,
            quantity=f"relative change of p{100 * self.quantile:g}",
            estimate=estimate,
            lower=lower,
            upper=upper,
            tolerance=self.tolerance,
            limit=self.tolerance,
            worse="higher",
            alpha=self.alpha,
            candidate_count=arm_c.total,
            baseline_count=arm_b.total,
            decided=decided,
            breached=decided and lower > self.tolerance,
            note="" if decided else "no latencies on one side yet",
        )

    def _arm(self, counts: Mapping[int, int], arm: str) -> _Arm:
        return _arm_of(counts, f"{self.rule}: {arm}", self.bounds)


@dataclass(frozen=True, slots=True)
class QuantileLimit:
    """The candidate's ``quantile`` may not be confidently above ``limit`` (an absolute SLO).

    ``limit`` is in the units of ``bounds`` (seconds for latency). A breach when the quantile's
    lower confidence bound (the whole ``alpha``, one arm: the lower bound of the module docs)
    passes ``limit``: while the quantile is at most ``limit``, the chance of a breach over the
    whole comparison is at most ``alpha``. Exact at every count. Immutable: safe to share
    between threads.
    """

    rule: str
    limit: float
    alpha: float = 0.05
    quantile: float = 0.95
    bounds: Callable[[int], tuple[float, float]] = latency_bucket_bounds

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        check_tolerance(f"{self.rule}: limit", self.limit)
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(
                f"{self.rule}: quantile must be between 0 and 1, not {self.quantile!r}"
            )

    def evaluate(self, candidate: Mapping[int, int]) -> Evidence:
        """The evidence after ``candidate``'s bucket counts since the start."""
        arm = _arm_of(candidate, f"{self.rule}: candidate", self.bounds)
        p0 = 1.0 - self.quantile
        decided = arm.total > 0
        lower = arm.lower(p0, self.alpha) if decided else -math.inf
        upper = arm.upper(p0, self.alpha) if decided else math.inf
        return Evidence(
            rule=self.rule,
            method=_LIMIT_METHOD,
            quantity=f"p{100 * self.quantile:g}",
            estimate=arm.estimate(self.quantile),
            lower=lower,
            upper=upper,
            tolerance=self.limit,
            limit=self.limit,
            worse="higher",
            alpha=self.alpha,
            candidate_count=arm.total,
            baseline_count=0,
            decided=decided,
            breached=decided and lower > self.limit,
            note="" if decided else "no latencies yet",
        )


def _arm_of(
    counts: Mapping[int, int], where: str, bounds: Callable[[int], tuple[float, float]]
) -> _Arm:
    buckets = []
    total = 0
    for index, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"{where} bucket {index!r} has count {count!r}, not a non-negative integer"
            )
        if count:
            low, high = bounds(index)
            buckets.append((low, high, count))
            total += count
    buckets.sort(key=lambda bucket: bucket[0], reverse=True)
    return _Arm(total, tuple(buckets))
