"""Refreshing models' version sets off the request path.

:class:`VersionSources` holds the :class:`VersionSource` of each model whose versions come from
outside the registry file (MLflow). At start, :meth:`VersionSources.start` reads each one and
returns the registry with their versions filled in. Then one background thread calls each
source's ``refresh`` every ``interval`` seconds and hands a changed
:class:`~modelflags.registry.ModelSpec` to ``apply``, which the assembly provides: it swaps the
model's spec and request-path entry in, each by one reference assignment, so a request reads
either the old version set or the new one and never waits for a refresh. Models without a source
are never touched and pay nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from modelflags.registry.schema import ModelSpec, Registry

__all__ = ["VersionSource", "VersionSources"]

logger = logging.getLogger(__name__)


class VersionSource(Protocol):
    """Where one model's versions come from (implemented by
    :class:`~modelflags.sources.mlflow.MlflowVersionSource`)."""

    name: str
    """The model's name in the registry."""
    interval: float
    """Seconds between refreshes."""

    def start(self) -> ModelSpec:
        """The model with its versions, read at start (raises when it cannot serve)."""
        ...

    def refresh(self, keep: Collection[str] = ()) -> ModelSpec | None:
        """The model again when its versions changed, else None; never raises. ``keep``: versions
        that must stay even when the source no longer lists them (the last known good one)."""
        ...

    def status(self) -> Any:
        """A record with ``as_dict()`` for ``ModelStatus.extra``."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def reset_after_fork(self) -> None:
        """In a child process just forked: connections of its own."""
        ...


class VersionSources:
    """The version sources of one ModelFlags instance and the thread that refreshes them.

    ``clock`` is monotonic seconds (injectable). Safe to share between threads: the refresh
    thread is the only caller of the sources' ``refresh``; :meth:`refresh_now` asks it and waits
    (no lock is held while a source reads).
    """

    def __init__(
        self, sources: Mapping[str, VersionSource], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sources = dict(sources)
        self._clock = clock
        self._apply: Callable[[ModelSpec], None] | None = None
        self._keep: Callable[[str], Collection[str]] = lambda name: ()
        self._reset_sync()
        self._thread: threading.Thread | None = None

    def _reset_sync(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._asked = 0  # refresh_now calls so far
        self._served = 0  # the asks the last finished pass had seen when it began
        self.apply_errors = 0

    # -- start --------------------------------------------------------------------------------

    def start(self, registry: Registry) -> Registry:
        """``registry`` with each sourced model's versions read (:meth:`VersionSource.start`)."""
        models = dict(registry.models)
        for name, source in self.sources.items():
            models[name] = source.start()
        return registry.model_copy(update={"models": models})

    def run(
        self, apply: Callable[[ModelSpec], None], keep: Callable[[str], Collection[str]]
    ) -> None:
        """Start refreshing on a background thread: changed models go to ``apply``."""
        self._apply, self._keep = apply, keep
        self._start_thread()

    def _start_thread(self) -> None:
        if not self.sources:
            return
        thread = threading.Thread(target=self._loop, name="modelflags-versions", daemon=True)
        self._thread = thread
        thread.start()

    # -- the thread -----------------------------------------------------------------------------

    def _loop(self) -> None:
        due = {name: self._clock() + source.interval for name, source in self.sources.items()}
        while not self._stop.is_set():
            now = self._clock()
            self._wake.clear()
            with self._done:
                seen = self._asked
            asked = seen > self._served
            for name, source in self.sources.items():
                if asked or now >= due[name]:
                    self._refresh(source)
                    due[name] = self._clock() + source.interval
            with self._done:
                self._served = seen
                self._done.notify_all()
            wait = max(0.0, min(due.values()) - self._clock())
            self._wake.wait(wait)

    def _refresh(self, source: VersionSource) -> None:
        try:
            spec = source.refresh(self._keep(source.name))
        except Exception:  # a source never raises; if one does, the others go on
            logger.exception("model %r: refreshing its versions raised", source.name)
            return
        if spec is None or self._apply is None:
            return
        try:
            self._apply(spec)
        except Exception:
            self.apply_errors += 1
            logger.exception("model %r: applying its new versions failed", source.name)

    def refresh_now(self, timeout: float = 60.0) -> bool:
        """Refresh every source now, on the refresh thread; True once a full pass is done."""
        if self._thread is None or not self._thread.is_alive():
            return False
        with self._done:
            self._asked += 1
            ask = self._asked
            self._wake.set()
            return self._done.wait_for(lambda: self._served >= ask or self._stop.is_set(), timeout)

    # -- status and life ------------------------------------------------------------------------

    def status(self, name: str) -> dict[str, Any] | None:
        """The ``status().extra`` entry of model ``name`` (None for a model without a source)."""
        source = self.sources.get(name)
        if source is None:
            return None
        record: dict[str, Any] = source.status().as_dict()
        return record

    def close(self) -> None:
        """Stop the thread and close the sources."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        for source in self.sources.values():
            source.close()

    def reset_after_fork(self) -> None:
        """In a child process just forked: fresh events, the thread running again."""
        stopped = self._stop.is_set()
        self._reset_sync()
        for source in self.sources.values():
            source.reset_after_fork()
        if self._thread is not None and not stopped:
            self._start_thread()
