"""Prewarming: load the versions a changed flag now selects before requests ask for them.

Each model keeps a small ring of the evaluation contexts it saw most recently (bounded memory; a
write is one list store, so the request thread pays almost nothing). When a provider reports that
flags changed, a background thread re-evaluates the model's flag for that sample and loads every
version it now selects that is not cached yet. Versions being prewarmed are known, so a request
meeting one can be served by the last known good version instead of waiting for the load. When
every context of the sample selects one version, the pass reports it (``settled``): the flag has
settled on that version for all recent traffic, which may make it the LKG again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from openfeature.evaluation_context import EvaluationContext

from modelflags.telemetry.events import Event, PrewarmCompleted

__all__ = ["ContextRing", "Prewarmer"]

logger = logging.getLogger(__name__)


class ContextRing:
    """The last ``size`` contexts offered. Writes race benignly (a lost write loses one sample)."""

    __slots__ = ("_items", "_next")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a context ring needs room for at least one context")
        self._items: list[EvaluationContext | None] = [None] * size
        self._next = 0

    def add(self, context: EvaluationContext) -> None:
        """Remember ``context``, forgetting the oldest one when full."""
        position = self._next
        self._items[position % len(self._items)] = context
        self._next = position + 1

    def snapshot(self) -> list[EvaluationContext]:
        """The contexts remembered now (at most ``size``)."""
        return [item for item in list(self._items) if item is not None]


Select = Callable[[str, EvaluationContext], str | None]
"""(model, context) -> the version the model's flag selects now, or None."""
Needs = Callable[[str, str], bool]
"""(model, version) -> True when the version is neither cached nor quarantined."""
Load = Callable[[str, str], None]
"""(model, version) -> load it into the cache (raises on failure)."""
Settled = Callable[[str, str], None]
"""(model, version) -> every recent context selects that version now."""


class Prewarmer:
    """Runs prewarm passes on one background thread.

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
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="modelflags-prewarm")
            executor = self._executor
        for model in models:
            try:
                executor.submit(self._pass, model)
            except RuntimeError:  # closed meanwhile
                return

    def close(self) -> None:
        """Cancel pending passes and join the thread."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

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
                    logger.warning("prewarm of model %r version %r failed: %s", model, version, exc)
        finally:
            with self._lock:
                self._warming = self._warming - keys
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
