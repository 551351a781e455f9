"""What the guardrail statistics take and give: running sums of each arm, and the evidence.

The request path keeps, per version and since the comparison started, a few running sums (a
few additions per call); the tests of :mod:`modelflags.rollout.statistics` read them at check
time and answer with an :class:`Evidence`:

- :class:`Moments` (count, sum, sum of squares) for means: a click or a conversion (0/1), a
  revenue per request, a latency;
- :class:`Counts` (trials, events) for rates: errors among the calls a version ran;
- the bucket counts of a :class:`~modelflags.telemetry.histogram.LatencyHistogram` (a mapping
  from bucket index to count) for quantiles.

:class:`Evidence` is defined with the events that carry it
(:mod:`modelflags.telemetry.evidence`) and re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelflags.telemetry.evidence import Evidence

__all__ = ["Counts", "Evidence", "Moments", "check_alpha", "check_tolerance"]


@dataclass(frozen=True, slots=True)
class Moments:
    """Running sums of one arm's values: how many, their sum, and the sum of their squares.

    For 0/1 outcomes ``total_sq`` equals ``total``; :meth:`binary` builds that. Immutable:
    safe to share between threads.
    """

    count: int
    total: float
    total_sq: float

    @classmethod
    def binary(cls, count: int, events: int) -> Moments:
        """``events`` ones among ``count`` 0/1 values (clicks among impressions)."""
        return cls(count, float(events), float(events))

    def check(self, arm: str) -> None:
        """Raise ``ValueError`` naming ``arm`` unless these are sums a sample could have."""
        if not isinstance(self.count, int) or self.count < 0:
            raise ValueError(f"{arm}: count must be a non-negative integer, not {self.count!r}")
        if not math.isfinite(self.total) or not math.isfinite(self.total_sq):
            raise ValueError(
                f"{arm}: total and total_sq must be finite, not {self.total!r}, {self.total_sq!r}"
            )
        if self.total_sq < 0.0:
            raise ValueError(f"{arm}: total_sq must be non-negative, not {self.total_sq!r}")
        if self.count == 0 and (self.total != 0.0 or self.total_sq != 0.0):
            raise ValueError(f"{arm}: sums of no values must be zero, not {self!r}")

    @property
    def mean(self) -> float | None:
        """The mean, or ``None`` without values."""
        return self.total / self.count if self.count else None

    def variance(self) -> float:
        """The unbiased sample variance (0.0 with fewer than two values)."""
        if self.count < 2:
            return 0.0
        mean = self.total / self.count
        return max(0.0, (self.total_sq - mean * self.total) / (self.count - 1))


@dataclass(frozen=True, slots=True)
class Counts:
    """Running counts of one arm: ``events`` (errors) among ``trials`` (calls it ran).

    Immutable: safe to share between threads.
    """

    trials: int
    events: int

    def check(self, arm: str) -> None:
        """Raise ``ValueError`` naming ``arm`` unless ``0 <= events <= trials``."""
        for name, value in (("trials", self.trials), ("events", self.events)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{arm}: {name} must be a non-negative integer, not {value!r}")
        if self.events > self.trials:
            raise ValueError(f"{arm}: events ({self.events}) cannot exceed trials ({self.trials})")

    @property
    def rate(self) -> float | None:
        """``events / trials``, or ``None`` without trials."""
        return self.events / self.trials if self.trials else None


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, or ``ValueError`` unless ``0 < alpha < 1``."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be a number strictly between 0 and 1, not {alpha!r}")
    return float(alpha)


def check_tolerance(name: str, value: float, *, below_one: bool = False) -> float:
    """``value`` as a float, or ``ValueError`` unless finite and ``>= 0`` (``< 1`` if asked)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    if value < 0.0 or (below_one and value >= 1.0):
        bounds = "0 <= value < 1" if below_one else "value >= 0"
        raise ValueError(f"{name} must satisfy {bounds}, not {value!r}")
    return float(value)
