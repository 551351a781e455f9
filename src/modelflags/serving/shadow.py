"""Shadow mode: mirror inference calls to a candidate version in the background, and compare.

The request thread only decides whether to mirror (sampling) and hands the call to a bounded queue
served by background worker threads; when the queue is full the call is dropped and counted, never
waited for. Each worker thread runs its calls through a :class:`ShadowExecutor`: :class:`InThread`
(the default) loads the shadow version through the same cache and single flight as any version and
calls it on the shadow thread; :class:`~modelflags.serving.shadow_process.ProcessShadow` runs it in
a worker process. Either way the result is compared here, with the primary's, and folded into
per-pair statistics; nothing the shadow does can change, delay or fail the primary call.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from modelflags.errors import shown
from modelflags.serving.comparison import Comparison, compare
from modelflags.telemetry.events import Event, ShadowCompared
from modelflags.telemetry.histogram import LatencyHistogram

__all__ = ["InThread", "ShadowExecutor", "ShadowRunner", "ShadowStats", "compare", "sampled"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """What shadowing ``shadow`` beside ``primary`` has shown so far.

    ``mirrored``: calls handed to the shadow; ``compared``: shadow calls that completed and were
    compared; ``dropped``: calls not mirrored because the queue was full or the shadow version was
    quarantined; ``errors``: shadow calls that raised or could not load. ``agreement`` is the share
    of output elements equal in both (label outputs); ``mean_abs_diff`` and ``max_abs_diff`` are
    over numeric output elements. Latencies are seconds (quantiles within 1%).
    """

    primary: str
    shadow: str
    mirrored: int
    compared: int
    dropped: int
    errors: int
    agreement: float | None
    mean_abs_diff: float | None
    max_abs_diff: float | None
    primary_p50: float | None
    primary_p95: float | None
    shadow_p50: float | None
    shadow_p95: float | None


def sampled(
    rate: float, model: str, targeting_key: str | None, random: Callable[[], float]
) -> bool:
    """Whether a request is mirrored: fixed per targeting key, random without one."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    if targeting_key is None:
        return random() < rate
    digest = hashlib.blake2b(f"{model}\x00{targeting_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


class _PairStats:
    """Running sums for one (primary, shadow) pair; guarded by the runner's lock."""

    __slots__ = (
        "abs_diff_max",
        "abs_diff_sum",
        "compared",
        "dropped",
        "elements",
        "equal",
        "errors",
        "mirrored",
        "numeric",
        "primary_latency",
        "shadow_latency",
    )

    def __init__(self) -> None:
        self.mirrored = self.compared = self.dropped = self.errors = 0
        self.elements = self.equal = self.numeric = 0
        self.abs_diff_sum = 0.0
        self.abs_diff_max: float | None = None
        self.primary_latency = LatencyHistogram()
        self.shadow_latency = LatencyHistogram()

    def freeze(self, primary: str, shadow: str) -> ShadowStats:
        p, s = self.primary_latency, self.shadow_latency
        return ShadowStats(
            primary=primary,
            shadow=shadow,
            mirrored=self.mirrored,
            compared=self.compared,
            dropped=self.dropped,
            errors=self.errors,
            agreement=self.equal / self.elements if self.elements else None,
            mean_abs_diff=self.abs_diff_sum / self.numeric if self.numeric else None,
            max_abs_diff=self.abs_diff_max,
            primary_p50=p.quantile(0.5),
            primary_p95=p.quantile(0.95),
            shadow_p50=s.quantile(0.5),
            shadow_p95=s.quantile(0.95),
        )


ShadowModel = Callable[[str, str], Any]
"""Returns the loaded shadow model for (model, version), or raises; may load (single flight)."""


class ShadowExecutor(Protocol):
    """Where shadow inference runs."""

    def run(
        self, model: str, version: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, float]:
        """The output of ``method`` of the shadow version and its seconds; raises on failure."""
        ...

    def close(self) -> None:
        """Release what it holds (worker processes)."""

    def reset_after_fork(self) -> None:
        """In a child process just forked: forget what belongs to the parent (its workers)."""


class InThread:
    """Runs shadow calls on the calling shadow thread, in this interpreter. Safe to share."""

    def __init__(self, resolve_model: ShadowModel) -> None:
        self._resolve_model = resolve_model

    def run(
        self, model: str, version: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, float]:
        """Load the version (once, through the cache) and call ``method`` on it."""
        shadow_model = self._resolve_model(model, version)
        started = time.perf_counter()
        output = getattr(shadow_model, method)(*args, **kwargs)
        return output, time.perf_counter() - started

    def close(self) -> None:
        """Nothing to release."""

    def reset_after_fork(self) -> None:
        """Nothing belongs to the parent."""


class ShadowRunner:
    """Runs mirrored calls on a bounded pool of background threads and keeps their statistics.

    Safe to share between threads. ``workers`` threads run shadow calls; at most ``max_pending``
    calls wait or run at once, beyond which new ones are dropped (counted). :meth:`close` cancels
    what has not started and joins the threads (daemon threads, each waited for at most
    ``timeout`` seconds, so a shadow call that never returns cannot hold up shutdown).

    Outputs are compared by kind: labels (integers, booleans, strings) count towards agreement,
    floating-point outputs (probabilities, scores) towards the absolute differences. Calls run
    through ``executor`` (default: :class:`InThread` with ``resolve_model``).
    """

    def __init__(
        self,
        resolve_model: ShadowModel,
        emit: Callable[[Event], None],
        *,
        workers: int = 1,
        max_pending: int = 256,
        executor: ShadowExecutor | None = None,
    ) -> None:
        self._executor = executor if executor is not None else InThread(resolve_model)
        self._emit = emit
        self._workers = workers
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._stats: dict[tuple[str, str, str], _PairStats] = {}
        self._closed = False

    def submit(
        self,
        model: str,
        primary: str,
        shadow: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any,
        primary_latency: float,
    ) -> bool:
        """Mirror one completed primary call; False (and counted) when it had to be dropped."""
        key = (model, primary, shadow)
        with self._lock:
            pair = self._stats.get(key) or self._pair(key)
            if self._closed or self._in_flight >= self._max_pending:
                pair.dropped += 1
                return False
            pair.mirrored += 1
            self._in_flight += 1
            if len(self._threads) < self._workers:
                self._start_worker()
        self._queue.put((key, method, args, kwargs, result, primary_latency))
        return True

    def _start_worker(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"modelflags-shadow_{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._closed:
                self._finished()
                continue
            self._run(*item)

    def drop(self, model: str, primary: str, shadow: str) -> None:
        """Count a call that could not be mirrored (for example: the shadow is quarantined)."""
        with self._lock:
            self._pair((model, primary, shadow)).dropped += 1

    def report(self, model: str) -> dict[tuple[str, str], ShadowStats]:
        """Statistics per (primary, shadow) pair of ``model``."""
        with self._lock:
            return {
                (primary, shadow): pair.freeze(primary, shadow)
                for (owner, primary, shadow), pair in sorted(self._stats.items())
                if owner == model
            }

    def reset(self, model: str) -> None:
        """Forget the statistics of ``model``."""
        with self._lock:
            for key in [key for key in self._stats if key[0] == model]:
                del self._stats[key]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until no shadow call is queued or running; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def reset_after_fork(self) -> None:
        """In a child process just forked: a fresh lock and queue, no threads (the next mirrored
        call starts them), no worker process; calls queued before the fork are the parent's."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue = queue.SimpleQueue()
        self._threads = []
        self._in_flight = 0
        self._executor.reset_after_fork()

    def close(self, *, drain: bool = False, timeout: float = 5.0) -> None:
        """Stop: cancel queued calls (or run them, with ``drain``) and join the threads."""
        if drain:
            self.flush(timeout)
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout)  # a shadow call that never returns cannot hold up shutdown
        try:
            self._executor.close()
        except Exception:
            logger.exception("closing the shadow executor failed")
        with self._idle:
            self._in_flight = 0
            self._idle.notify_all()

    def _pair(self, key: tuple[str, str, str]) -> _PairStats:
        pair = self._stats.get(key)
        if pair is None:
            pair = self._stats[key] = _PairStats()
        return pair

    def _finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.notify_all()

    def _run(
        self,
        key: tuple[str, str, str],
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any,
        primary_latency: float,
    ) -> None:
        model, _, shadow = key
        try:
            error: str | None = None
            comparison: Comparison | None = None
            elapsed: float | None = None
            try:
                output, elapsed = self._executor.run(model, shadow, method, args, kwargs)
                comparison = compare(result, output)
            except Exception as exc:
                error = f"{type(exc).__name__}: {shown(str(exc), limit=500, quote=False)}"
                logger.debug("shadow %r of model %r failed: %s", shadow, model, error)
            with self._lock:
                pair = self._pair(key)
                pair.primary_latency.add(primary_latency)
                if comparison is None:
                    pair.errors += 1
                else:
                    assert elapsed is not None
                    pair.compared += 1
                    pair.shadow_latency.add(elapsed)
                    pair.elements += comparison.elements
                    pair.equal += comparison.equal
                    pair.numeric += comparison.numeric
                    pair.abs_diff_sum += comparison.abs_diff_sum
                    if comparison.abs_diff_max is not None:
                        pair.abs_diff_max = max(pair.abs_diff_max or 0.0, comparison.abs_diff_max)
            self._emit(_result(key, method, comparison, primary_latency, elapsed, error))
        except BaseException:  # pragma: no cover - a bug here must never surface anywhere else
            logger.exception("shadow bookkeeping failed")
        finally:
            self._finished()


def _result(
    key: tuple[str, str, str],
    method: str,
    comparison: Comparison | None,
    primary_latency: float,
    shadow_latency: float | None,
    error: str | None,
) -> ShadowCompared:
    agreed = mean = peak = None
    if comparison is not None:
        agreed = comparison.equal / comparison.elements if comparison.elements else None
        mean = comparison.abs_diff_sum / comparison.numeric if comparison.numeric else None
        peak = comparison.abs_diff_max
    return ShadowCompared(*key, method, agreed, mean, peak, primary_latency, shadow_latency, error)
