"""The versions of every model as the serving core sees them: loaded, failing, proven.

:class:`VersionKeeper` owns the mechanisms behind one version's life in a process: it loads a
version once however many threads ask (the cache's single flight), verifies and deserializes it
through the artifact store and the loaders, quarantines it when it fails, and moves the last known
good version (LKG) when another version proves itself. Every background part that needs a loaded
version (prewarm, shadow) or the LKG (guardrails) gets one of its bound methods, never the facade.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from modelflags.artifacts import ArtifactStore, LoaderRegistry
from modelflags.errors import ModelFlagsError, ModelUnavailableError, VersionLoadError, shown
from modelflags.registry import ModelSpec
from modelflags.serving.admission import Admission
from modelflags.serving.cache import CacheEntry, ModelCache
from modelflags.serving.health import Health
from modelflags.telemetry.events import (
    Event,
    FallbackServed,
    LastKnownGoodChanged,
    VersionLoaded,
    VersionLoadFailed,
    VersionQuarantined,
)

__all__ = ["Oversight", "VersionKeeper", "bounded"]

logger = logging.getLogger(__name__)

_CAUSE_LIMIT = 500
"""Characters of a failure's message kept in causes, events and log lines."""


class Oversight(Protocol):
    """What the serving core reports to, and asks of, whatever watches versions (guardrails).

    Implemented by :class:`modelflags.rollout.supervision.Supervisor`; the serving core never
    imports it.
    """

    def record_call(
        self, model: str, version: str, latency_s: float, error: bool, fell_back: bool
    ) -> None:
        """One inference call (or failed load) asked of ``version``."""

    def rolled_back(self, model: str) -> frozenset[str]:
        """The versions of ``model`` pinned away (a lock-free read)."""
        ...

    def gates(self, model: str) -> bool:
        """True when promotion of ``model``'s versions waits for its guardrails."""
        ...

    def trusts(self, model: str, version: str) -> bool:
        """True when nothing the guardrails know stands against ``version`` becoming the LKG
        (not rolled back, no breach on record, no canary of the model running)."""
        ...


class VersionKeeper:
    """Loads, caches, quarantines and promotes the versions of every model.

    Safe to share between threads: loads run once per version outside any lock (single flight),
    and health transitions are guarded by :class:`~modelflags.serving.health.Health`'s lock.
    ``admission`` checks each version before, while and after it loads (default: digests first
    seen, environment compatibility, input contracts; see :mod:`modelflags.serving.admission`).
    """

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        *,
        health: Health,
        cache: ModelCache,
        artifacts: ArtifactStore,
        loaders: LoaderRegistry,
        emit: Callable[[Event], None],
        admission: Admission | None = None,
    ) -> None:
        self.specs = specs
        self.health = health
        self.cache = cache
        self.artifacts = artifacts
        self.loaders = loaders
        self.admission = admission or Admission(specs, health)
        self._emit = emit
        self.oversight: Oversight | None = None
        for name in specs:
            cache.pin((name, health.lkg(name)))

    # -- loading --------------------------------------------------------------------------------

    def entry(self, name: str, version: str) -> CacheEntry:
        """The loaded version, loading it once if no thread has it yet (raises VersionLoadError)."""
        return self.cache.get_or_load((name, version), lambda: self._load(name, version))

    def needs_load(self, name: str, version: str) -> bool:
        """True when ``version`` is neither loaded nor quarantined (prewarm asks this)."""
        return (
            self.cache.get((name, version)) is None and self.health.blocked(name, version) is None
        )

    def prewarm(self, name: str, version: str) -> None:
        """Load ``version`` in the background after a flag change; a failure quarantines it."""
        try:
            self.entry(name, version)
        except VersionLoadError as exc:
            self.failed(name, version, exc, stage="prewarm", served=None)
            raise

    def shadow_model(self, name: str, version: str) -> Any:
        """The loaded shadow version (on a shadow thread); a load failure quarantines it."""
        try:
            return self.entry(name, version).value
        except VersionLoadError as exc:
            self.failed(name, version, exc, stage="shadow load", served=None)
            raise

    def lkg_entry(self, name: str) -> tuple[str, CacheEntry]:
        """The last known good version and its loaded model; falls back to ``default_version``.

        Raises :class:`ModelUnavailableError` when neither can be loaded.
        """
        health = self.health
        lkg = health.lkg(name)
        blocked = health.blocked(name, lkg)
        if blocked is None:
            try:
                return lkg, self.entry(name, lkg)
            except VersionLoadError as exc:
                self.failed(name, lkg, exc, stage="load", served=None)
                error: Exception = exc
        else:
            error = ModelFlagsError(blocked.cause)
        default = self.specs[name].default_version
        if default != lkg and health.blocked(name, default) is None:
            try:
                entry = self.entry(name, default)
            except VersionLoadError as exc:
                self.failed(name, default, exc, stage="load", served=None)
            else:
                logger.error(
                    "model %r: last known good version %r cannot load (%s); serving default %r",
                    name,
                    lkg,
                    bounded(str(error)),
                    default,
                )
                self.set_lkg(name, default)
                return default, entry
        raise ModelUnavailableError(
            f"model {name!r}: its last known good version {lkg!r} cannot be served: "
            f"{bounded(str(error))}",
            model=name,
            version=lkg,
        ) from error

    def _load(self, name: str, version: str) -> CacheEntry:
        spec = self.specs[name].versions[version]
        started = time.perf_counter()
        admission = self.admission
        try:
            admission.before(name, version, spec)
            with admission.loading(name, version):
                loaded = self.artifacts.load(name, version, spec, self.loaders)
            value, nbytes = loaded.value, loaded.nbytes
            admission.after(name, version, spec, value)
        except VersionLoadError as exc:
            self._emit(VersionLoadFailed(name, version, bounded(str(exc)), type(exc).__name__))
            raise
        except Exception as exc:
            error = VersionLoadError(
                f"model {name!r} version {version!r}: cannot load: {type(exc).__name__}: "
                f"{bounded(str(exc))}",
                model=name,
                version=version,
            )
            self._emit(VersionLoadFailed(name, version, str(error), type(exc).__name__))
            raise error from exc
        seconds = time.perf_counter() - started
        logger.info(
            "model %r version %r loaded in %.3f s (%d bytes)", name, version, seconds, nbytes
        )
        self._emit(VersionLoaded(name, version, seconds, nbytes))
        return CacheEntry(value, nbytes)

    # -- health transitions ---------------------------------------------------------------------

    def failed(
        self,
        name: str,
        version: str,
        error: BaseException,
        *,
        stage: str,
        served: str | None,
        method: str | None = None,
        cause: str | None = None,
    ) -> None:
        """Quarantine ``version`` after a failure at ``stage``; log and report it once."""
        cause = bounded(cause or str(error))
        oversight = self.oversight
        if oversight is not None and stage != "inference":
            # A failed load is a call the version could not answer (inference errors are
            # counted with their latency by the guard).
            oversight.record_call(name, version, 0.0, True, True)
        entry = self.health.quarantine(name, version, cause)
        logger.warning(
            "model %r version %r failed at %s (%s); quarantined for %.0f s (failure %d)%s",
            name,
            version,
            stage,
            cause,
            entry.until - entry.since,
            entry.failures,
            f"; served {served!r}" if served else "",
        )
        if served is not None:
            self._emit(FallbackServed(name, version, served, stage, cause, method))
        self._emit(VersionQuarantined(name, version, cause, entry.failures, entry.until))

    def proved(self, name: str, version: str) -> None:
        """``version`` completed an inference call: it may become the LKG.

        With guardrails one good call is not enough: the supervisor promotes the version once it
        has carried enough healthy traffic for long enough.
        """
        oversight = self.oversight
        gated = oversight is not None and oversight.gates(name)
        previous = self.health.mark_good(name, version, promote=not gated)
        if previous is not None:
            self._lkg_changed(name, version, previous)

    def promote(self, name: str, version: str) -> None:
        """Make a proven ``version`` the LKG (guardrails held, or its canary completed)."""
        previous = self.health.promote(name, version)
        if previous is not None:
            self._lkg_changed(name, version, previous)

    def promote_proven(self, name: str, version: str) -> None:
        """Promote ``version`` if it has proved itself (a completed canary asks this)."""
        if self.health.is_proven(name, version):
            self.promote(name, version)

    def settle(self, name: str, version: str) -> None:
        """Every recent request of ``name`` selects ``version`` now (a prewarm pass found it
        after a flag change): it becomes the LKG again if it proved itself, was the LKG before,
        and the guardrails do not stand against it. Under a split this is never called."""
        if version == self.health.lkg(name):
            return
        oversight = self.oversight
        if oversight is not None and not oversight.trusts(name, version):
            return
        previous = self.health.settle(name, version)
        if previous is not None:
            logger.info(
                "model %r: the flag settled on %r for all recent requests; it is the LKG again",
                name,
                version,
            )
            self._lkg_changed(name, version, previous)

    def demote(self, name: str, version: str) -> str:
        """Forget that ``version`` proved itself; returns the LKG afterwards."""
        before = self.health.lkg(name)
        after = self.health.demote(name, version)
        if after != before:
            self._lkg_changed(name, after, before)
        return after

    def set_lkg(self, name: str, version: str) -> None:
        """Make ``version`` the LKG by decision (not by proof)."""
        previous = self.health.set_lkg(name, version)
        if previous != version:
            self._lkg_changed(name, version, previous)

    def _lkg_changed(self, name: str, version: str, previous: str) -> None:
        self.cache.pin((name, version))
        self.cache.unpin((name, previous))
        logger.info("model %r: version %r is now last known good (was %r)", name, version, previous)
        self._emit(LastKnownGoodChanged(name, version, previous))


def bounded(text: str) -> str:
    """A failure's message fit for a log line, an event or ``status()``: ``text`` itself when
    short and printable, else escaped and cut (a model or loader may raise with anything)."""
    if len(text) <= _CAUSE_LIMIT and text.isprintable():
        return text
    return shown(text, limit=_CAUSE_LIMIT, quote=False)
