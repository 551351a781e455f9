"""Prewarming: load the versions a changed flag now selects before requests ask for them.

Each model keeps a small ring of the evaluation contexts it saw most recently (bounded memory; a
write is one list store, so the request thread pays almost nothing). When a provider reports that
flags changed, a background thread re-evaluates the model's flag for that sample and loads every
version it now selects that is not cached yet. Versions being prewarmed are known, so a request
meeting one can be served by the last known good version instead of waiting for the load. A
request that meets a version nobody loads yet (no change event came, or not yet) starts its load
here too (:meth:`Prewarmer.load_soon`), on the same small pool of background threads. When every
context of the sample selects one version, the pass reports it (``settled``): the flag has settled
on that version for all recent traffic, which may make it the LKG again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from openfeature.evaluation_context import EvaluationContext

from modelflags.errors import shown
from modelflags.telemetry.events import Event, PrewarmCompleted

__all__ = ["ContextRing", "Prewarmer"]

logger = logging.getLogger(__name__)


class ContextRing:
    """The last ``size`` contexts offered. Safe to share between threads.

    A bounded deque: :meth:`add` is its ``append`` (one C call on the request path, atomic), and
    :meth:`snapshot` copies it in one C call, so it never sees a half-made write.
    """

    __slots__ = ("_items", "add")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a context ring needs room for at least one context")
        self._items: collections.deque[EvaluationContext] = collections.deque(maxlen=size)
        self.add: Callable[[EvaluationContext], None] = self._items.append
        """Remember a context, forgetting the oldest one when full."""

    def snapshot(self) -> list[EvaluationContext]:
        """The contexts remembered now (at most ``size``)."""
        return list(self._items.copy())


Select = Callable[[str, EvaluationContext], str | None]
"""(model, context) -> the version the model's flag selects now, or None."""
Needs = Callable[[str, str], bool]
"""(model, version) -> True when the version is neither cached nor quarantined."""
Load = Callable[[str, str], None]
"""(model, version) -> load it into the cache (raises on failure)."""
_THREADS = 2  # a prewarm pass and a load a request started can run side by side

Settled = Callable[[str, str], None]
"""(model, version) -> every recent context selects that version now."""


class Prewarmer:
    """Runs prewarm passes and background loads on a small pool of background threads.

    Safe to share between threads. :meth:`warming` is a lock-free read for the request path.
    """

    def __init__(
        self,
        select: Select,
        needs: Needs,
        load: Load,
        emit: Callable[[Event], None],
        *,
        sample: int = 64,
        settled: Settled | None = None,
    ) -> None:
        self.sample = sample
        self._settled = settled
        self._select = select
        self._needs = needs
        self._load = load
        self._emit = emit
        self._rings: dict[str, ContextRing] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._warming: frozenset[tuple[str, str]] = frozenset()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def ring(self, model: str) -> ContextRing:
        """The context ring of ``model`` (made on first use)."""
        ring = self._rings.get(model)
        if ring is None:
            with self._lock:
                ring = self._rings.setdefault(model, ContextRing(self.sample))
        return ring

    def adopt(self, model: str, ring: ContextRing) -> None:
        """Use ``ring`` (filled by the request path) as the context ring of ``model``."""
        with self._lock:
            self._rings[model] = ring

    def warming(self, model: str, version: str) -> bool:
        """True while a prewarm pass is loading ``version`` of ``model``."""
        return (model, version) in self._warming

    def schedule(self, models: Iterable[str]) -> None:
        """Start a prewarm pass for ``models`` in the background."""
        models = [model for model in models if model in self._rings]
        if not models:
            return
        with self._lock:
            if self._closed:
                return
            executor = self._pool()
        for model in models:
            self._submit(executor, self._pass, model)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until no prewarm pass or background load is queued or running; False if
        ``timeout`` passed first. A synchronisation point for tests and shutdown."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _submit(self, executor: ThreadPoolExecutor, task: Callable[..., None], *args: str) -> bool:
        with self._lock:
            self._busy += 1

        def run() -> None:
            try:
                task(*args)
            finally:
                with self._idle:
                    self._busy -= 1
                    if not self._busy:
                        self._idle.notify_all()

        try:
            executor.submit(run)
        except RuntimeError:  # closed meanwhile
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
            return False
        return True

    def reset_after_fork(self) -> None:
        """In a child process just forked: a fresh lock, no thread (the next pass starts one)
        and no pass in flight (those stayed in the parent)."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._executor = None
        self._warming = frozenset()

    def load_soon(self, model: str, version: str) -> bool:
        """Load ``version`` of ``model`` in the background unless it is loading already.

        True when it is (or now will be) loading; False once closed. A failure quarantines the
        version (through ``load``) and is logged.
        """
        key = (model, version)
        with self._lock:
            if key in self._warming:
                return True
            if self._closed:
                return False
            self._warming = self._warming | {key}
            executor = self._pool()
        if not self._submit(executor, self._load_one, model, version):
            self._done({key})
            return False
        return True

    def _pool(self) -> ThreadPoolExecutor:
        """The background threads (made on first use; called under the lock)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(_THREADS, thread_name_prefix="modelflags-prewarm")
        return self._executor

    def _done(self, keys: set[tuple[str, str]]) -> None:
        with self._lock:
            self._warming = self._warming - keys

    def _load_one(self, model: str, version: str) -> None:
        started = time.perf_counter()
        try:
            self._load(model, version)
        except Exception as exc:
            # The version's quarantine was logged where it failed (VersionKeeper.failed).
            logger.debug("background load of model %r version %r failed: %s", model, version, exc)
        else:
            logger.info(
                "model %r: version %r loaded in the background in %.3f s (the last known good "
                "version answered meanwhile)",
                model,
                version,
                time.perf_counter() - started,
            )
        finally:
            self._done({(model, version)})

    def close(self) -> None:
        """Cancel pending passes and loads, and join the threads."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._idle:  # cancelled tasks never ran: nothing is left to wait for
            self._busy = 0
            self._idle.notify_all()

    def _pass(self, model: str) -> None:
        started = time.perf_counter()
        contexts = self.ring(model).snapshot()
        wanted: list[str] = []
        selected: set[str | None] = set()
        for context in contexts:
            try:
                version = self._select(model, context)
            except Exception:
                logger.exception("prewarm of model %r: flag evaluation failed", model)
                return
            selected.add(version)
            if version is not None and version not in wanted and self._needs(model, version):
                wanted.append(version)
        if not wanted:
            self._settle(model, selected)
            return
        keys = {(model, version) for version in wanted}
        with self._lock:
            self._warming = self._warming | keys
        loaded: list[str] = []
        failed: list[str] = []
        try:
            for version in wanted:
                try:
                    self._load(model, version)
                    loaded.append(version)
                except Exception as exc:
                    failed.append(version)
                    logger.debug(  # its quarantine was logged where it failed
                        "prewarm of model %r version %r failed: %s",
                        model,
                        version,
                        shown(str(exc), limit=500, quote=False),
                    )
        finally:
            self._done(keys)
        self._settle(model, selected)
        seconds = time.perf_counter() - started
        logger.info(
            "model %r: prewarmed %s from %d recent contexts in %.3f s",
            model,
            ", ".join(loaded) or "nothing",
            len(contexts),
            seconds,
        )
        self._emit(PrewarmCompleted(model, tuple(loaded), tuple(failed), len(contexts), seconds))

    def _settle(self, model: str, selected: set[str | None]) -> None:
        """Report a flag that selects one version for every recent context."""
        if self._settled is None or len(selected) != 1:
            return
        (version,) = selected
        if version is None:
            return
        try:
            self._settled(model, version)
        except Exception:
            logger.exception("model %r: settling on %r failed", model, version)
