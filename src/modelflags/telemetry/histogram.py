"""Streaming statistics in bounded memory: a latency histogram and running sums.

``LatencyHistogram`` counts durations in logarithmic buckets 1% wide (like HdrHistogram), so its
memory is bounded whatever the traffic (at most a few thousand buckets between 1 microsecond and
1 hour) and any quantile it reports is within 1% of the true value. Counts, sums and maxima are
exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LatencyHistogram", "LatencySummary"]

_GROWTH = math.log(1.01)
_FLOOR = 1e-6  # durations below one microsecond share the first bucket


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
        index = 0 if seconds <= _FLOOR else int(math.log(seconds / _FLOOR) / _GROWTH) + 1
        self._buckets[index] = self._buckets.get(index, 0) + 1
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
                    return _FLOOR
                # The bucket's geometric middle, never above the largest sample.
                upper = _FLOOR * math.exp(index * _GROWTH)
                return min(self.max, upper / math.sqrt(1.01))
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

    @property
    def buckets(self) -> int:
        """How many buckets are in use (memory is proportional to this)."""
        return len(self._buckets)
