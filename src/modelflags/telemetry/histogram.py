"""Streaming statistics in bounded memory: a latency histogram and its bucket layout.

``LatencyHistogram`` counts durations in logarithmic buckets 1% wide (like HdrHistogram), so its
memory is bounded whatever the traffic (at most a few thousand buckets between 1 microsecond and
1 hour) and any quantile it reports is within 1% of the true value. Counts, sums and maxima are
exact.

The layout is public, so code that reads bucket counts (the guardrails' quantile tests) never
repeats it: bucket 0 holds durations up to :data:`FLOOR_S` (one microsecond), and bucket ``i > 0``
holds ``(FLOOR_S * GROWTH**(i - 1), FLOOR_S * GROWTH**i]`` (:func:`bucket_index`,
:func:`bucket_bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "FLOOR_S",
    "GROWTH",
    "LatencyHistogram",
    "LatencySummary",
    "bucket_bounds",
    "bucket_index",
]

GROWTH = 1.01
"""Each bucket's upper edge is this many times its lower edge (buckets are 1% wide)."""
FLOOR_S = 1e-6
"""Durations of at most one microsecond share the first bucket (index 0)."""
_LOG_GROWTH = math.log(GROWTH)


def bucket_index(seconds: float) -> int:
    """The bucket a duration of ``seconds`` is counted in."""
    return 0 if seconds <= FLOOR_S else int(math.log(seconds / FLOOR_S) / _LOG_GROWTH) + 1


def bucket_bounds(index: int) -> tuple[float, float]:
    """The durations (seconds) bucket ``index`` holds, ``(lower, upper]``, as computed in
    floating point (a value rounded onto an edge may land in the next bucket: widen these by a
    hair where that matters)."""
    if index <= 0:
        return 0.0, FLOOR_S
    return FLOOR_S * math.exp((index - 1) * _LOG_GROWTH), FLOOR_S * math.exp(index * _LOG_GROWTH)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency quantiles in seconds (``None`` before any sample)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


class LatencyHistogram:
    """Durations in 1%-wide logarithmic buckets.

    Not safe to share between threads on its own: its owner serialises updates.
    """

    __slots__ = ("_buckets", "count", "max", "total")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration."""
        self.add_at(bucket_index(seconds), seconds)

    def add_at(self, index: int, seconds: float) -> None:
        """Record one duration whose bucket is already known (``bucket_index(seconds)``), so a
        caller filling two histograms computes the logarithm once."""
        buckets = self._buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), within 1%; ``None`` when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                if index == 0:
                    return FLOOR_S
                # The bucket's geometric middle, never above the largest sample.
                upper = FLOOR_S * math.exp(index * _LOG_GROWTH)
                return min(self.max, upper / math.sqrt(GROWTH))
        return self.max

    def summary(self) -> LatencySummary:
        """Count, p50, p95, p99 and maximum."""
        if not self.count:
            return LatencySummary(0, None, None, None, None)
        return LatencySummary(
            self.count, self.quantile(0.5), self.quantile(0.95), self.quantile(0.99), self.max
        )

    def merge(self, other: LatencyHistogram) -> None:
        """Add every sample of ``other`` to this histogram."""
        for index, count in other._buckets.items():
            self._buckets[index] = self._buckets.get(index, 0) + count
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def counts(self) -> Mapping[int, int]:
        """A read-only copy of the bucket counts: bucket index to count (non-empty buckets
        only; see :func:`bucket_bounds` for what each holds)."""
        return MappingProxyType(dict(self._buckets))

    @property
    def buckets(self) -> int:
        """How many buckets are in use (memory is proportional to this)."""
        return len(self._buckets)
