"""How long a fetch may take and how its failures are retried: RetryPolicy and Deadline.

A fetch has one deadline, :attr:`RetryPolicy.max_total` seconds after its first request, and it
holds inside an attempt as well as between attempts: every wait of a request (connect, send,
pool, each read) is capped at the time left, the body is checked against the deadline as bytes
arrive, and no retry starts when its pause would end past it. A server trickling one byte every
half second therefore holds a fetch for ``max_total`` seconds, not for hours. The bound is exact
between reads; a read that started with time left ends by the deadline plus at most the time
left when its request was sent, capped by the read timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_RETRY", "Deadline", "Restart", "RetryPolicy", "Retryable"]


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried, and how long a whole fetch may take.

    ``attempts`` counts every try, the first included. The pause before retry ``n`` (0-based) is
    drawn uniformly from ``[0, min(max_delay, base_delay * 2**n))``; a ``Retry-After`` of a 429
    or 503 answer lengthens it, up to ``max_delay``. ``max_total`` is the deadline of a fetch,
    from its first request to the verified file, whatever the time goes to (connecting, waiting
    for headers, slow bytes, pauses): see :mod:`modelflags.artifacts.retry`. Raise it for
    artifacts that take longer to download. Immutable: safe to share between threads.
    """

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    max_total: float = 600.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.max_total) < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    def delay(self, retry: int, draw: float) -> float:
        """The pause before retry number ``retry`` (0 for the first), for a uniform ``draw``."""
        cap = min(self.max_delay, self.base_delay * 2.0**retry)
        return cap * draw


DEFAULT_RETRY: Final = RetryPolicy()
"""Four attempts, pauses drawn below 0.2, 0.4 and 0.8 s, at most 10 minutes a fetch in all."""


@dataclass(frozen=True)
class Deadline:
    """A point in time on ``clock`` by which a fetch must be done. Immutable: safe to share."""

    clock: Callable[[], float]
    started: float
    seconds: float

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float]) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(clock, clock(), seconds)

    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return self.clock() - self.started

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(self.seconds - self.elapsed(), 0.0)

    def passed(self) -> bool:
        """True once no time is left."""
        return self.remaining() <= 0.0

    def cap(self, seconds: float | None) -> float:
        """``seconds`` (None: unbounded) capped at the time left."""
        left = self.remaining()
        return left if seconds is None else min(seconds, left)


class Retryable(Exception):
    """A transient failure: the attempt may be repeated."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float = 0.0):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class Restart(Exception):
    """The partial file cannot be continued: drop it and download from the first byte."""
