"""``ModelFlags``: wires registry, flags, artifacts, loaders, cache and health together.

This is the one place where policy meets mechanism: which version serves a request, what happens
when it cannot load or fails at inference, and when a version becomes the last known good one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random as _random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.track import TrackingEventDetails

from modelflags.artifacts.loaders import Loader, LoaderRegistry
from modelflags.artifacts.store import ArtifactStore
from modelflags.errors import ModelFlagsError, ModelUnavailableError, VersionLoadError
from modelflags.registry import ModelSpec, Registry, load_registry
from modelflags.rollout.metrics import MetricsRecorder, VersionMetrics
from modelflags.rollout.supervision import Supervisor
from modelflags.serving import pins
from modelflags.serving.cache import CacheEntry, ModelCache
from modelflags.serving.changes import ChangeFeed, overrides_provider
from modelflags.serving.context import to_context
from modelflags.serving.handle import ServedModel
from modelflags.serving.health import Backoff, Health
from modelflags.serving.prewarm import ContextRing, Prewarmer
from modelflags.serving.resolution import OVERRIDE, Resolution, Resolver
from modelflags.serving.shadow import ShadowRunner, ShadowStats, sampled
from modelflags.telemetry.decision_log import DecisionLog
from modelflags.telemetry.events import (
    BecameLKG,
    Breach,
    EventDispatcher,
    FellBack,
    Listener,
    Loaded,
    LoadFailed,
    Quarantined,
)
from modelflags.telemetry.status import ModelStatus, QuarantineStatus, model_status

if TYPE_CHECKING:
    from modelflags.rollout.actuators import Actuator
    from modelflags.rollout.canary import CanaryDriver, CanaryStep, Stage

__all__ = ["FALLBACK", "ModelFlags", "ModelStatus", "QuarantineStatus"]

logger = logging.getLogger(__name__)

OVERRIDES_ENV = "MODELFLAGS_OVERRIDES"
"""Environment variable naming an override file; read once, when a ModelFlags is made."""

FALLBACK = "FALLBACK"
"""The ``reason`` of a handle served by the last known good version after a failure."""

ROLLED_BACK = "ROLLED_BACK"
"""The ``reason`` of a handle served by the LKG because the flagged version was rolled back."""

PREWARMING = "PREWARMING"
"""The ``reason`` of a handle served by the LKG while the chosen version loads after a change."""


@dataclass(frozen=True, slots=True)
class _Model:
    spec: ModelSpec
    flag_key: str
    versions: frozenset[str]
    metadata: Mapping[str, Mapping[str, Any]]
    shadow_flag: str | None
    shadow_rate: float
    ring: ContextRing | None


class ModelFlags:
    """Serves model versions chosen by OpenFeature flags.

    ``registry`` is a path to a registry file, a :class:`Registry`, or a mapping of the same shape.
    Flags are evaluated with ``client``, or the OpenFeature client of ``domain``, or the default
    client. Options are keyword-only:

    - ``state_dir``: persist each model's last known good version there (default: memory only).
    - ``max_models`` / ``max_bytes``: bounds of the cache of loaded versions (LKGs are pinned).
    - ``backoff``: quarantine back-off; ``clock``: monotonic seconds (injectable for tests).
    - ``listeners``: callables receiving events (:mod:`modelflags.events`) on a background thread.
    - ``loaders``: extra loaders by name (``{"onnx": fn}``, ``fn(path) -> model``).
    - ``cache_dir``: where remote artifacts are downloaded (default ``MODELFLAGS_CACHE_DIR``, else
      the user cache folder); ``max_artifact_bytes``: refuse larger artifacts; or ``artifacts``:
      a configured :class:`ArtifactStore` instead of both.
    - ``overrides``: an override file layered over the flags (default ``MODELFLAGS_OVERRIDES``).
    - ``shadow_workers`` / ``shadow_queue``: threads and bound of shadow work; ``random``: the
      sampling source for requests without a targeting key.
    - ``prewarm`` / ``prewarm_sample``: load what changed flags select before requests do, from a
      ring of that many recent contexts per model.

    Safe to share between threads; one instance per process is the usual set-up. Use it as a
    context manager, or call :meth:`close`, to stop its background work.
    """

    def __init__(
        self,
        registry: str | os.PathLike[str] | Registry | Mapping[str, Any],
        *,
        client: OpenFeatureClient | None = None,
        domain: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        max_models: int = 8,
        max_bytes: int | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        listeners: Iterable[Listener] = (),
        loaders: Mapping[str, Loader] | None = None,
        artifacts: ArtifactStore | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        max_artifact_bytes: int | None = None,
        shadow_workers: int = 1,
        shadow_queue: int = 256,
        random: Callable[[], float] = _random.random,
        overrides: str | os.PathLike[str] | None = None,
        prewarm: bool = True,
        prewarm_sample: int = 64,
        metrics: bool = False,
        metrics_exporters: Sequence[MetricsRecorder] = (),
        actuator: Actuator | None = None,
        guardrail_interval: float = 1.0,
        decision_log: str | os.PathLike[str] | DecisionLog | None = None,
        decision_sample: float = 1.0,
    ) -> None:
        if client is not None and domain is not None:
            raise ValueError("pass client= or domain=, not both")
        self.registry = _as_registry(registry)
        self._models = {
            name: _Model(
                spec,
                spec.flag_key,
                frozenset(spec.versions),
                {version: item.metadata for version, item in spec.versions.items()},
                spec.shadow_flag,
                spec.shadow_rate,
                ContextRing(prewarm_sample) if prewarm else None,
            )
            for name, spec in self.registry.models.items()
        }
        self._client = client if client is not None else api.get_client(domain)
        if overrides is None:
            overrides = os.environ.get(OVERRIDES_ENV) or None
        self._feed = ChangeFeed(self._client, self._on_change)
        self._overrides = overrides_provider(overrides, self._feed.on_override_event)
        self._resolver = Resolver(self._client, overrides=self._overrides)
        self._pins: Mapping[str, str] = {}
        self._pins_lock = threading.Lock()
        self._loaders = LoaderRegistry(loaders)
        if artifacts is not None and (cache_dir is not None or max_artifact_bytes is not None):
            raise ValueError("pass artifacts= or cache_dir=/max_artifact_bytes=, not both")
        self._artifacts = (
            artifacts
            if artifacts is not None
            else ArtifactStore(cache_dir=cache_dir, max_bytes=max_artifact_bytes)
        )
        self._cache = ModelCache(max_models=max_models, max_bytes=max_bytes)
        self._events = EventDispatcher(listeners)
        self._random = random
        self._shadow = ShadowRunner(
            self._shadow_model, self._events.emit, workers=shadow_workers, max_pending=shadow_queue
        )
        self._health = Health(
            {name: spec.default_version for name, spec in self.registry.models.items()},
            backoff=backoff,
            clock=clock,
            state_dir=state_dir,
            known_versions={name: model.versions for name, model in self._models.items()},
        )
        for name in self._models:
            self._cache.pin((name, self._health.lkg(name)))
        self._prewarmer = (
            Prewarmer(
                self._selects,
                self._needs_load,
                self._load_for_prewarm,
                self._events.emit,
                sample=prewarm_sample,
            )
            if prewarm
            else None
        )
        if self._prewarmer is not None:
            for name, model in self._models.items():
                if model.ring is not None:
                    self._prewarmer.adopt(name, model.ring)
        rules = {
            name: spec.guardrails
            for name, spec in self.registry.models.items()
            if spec.guardrails is not None
        }
        self._supervisor = (
            Supervisor(
                rules,
                flag_keys={name: model.flag_key for name, model in self._models.items()},
                lkg=self._health.lkg,
                emit=self._events.emit,
                clock=clock,
                recorders=tuple(metrics_exporters),
                actuator=actuator,
                check_interval=guardrail_interval,
                promote=self._promote,
                proved_after=self._health.proved_after,
            )
            if rules or metrics or metrics_exporters
            else None
        )
        self._audit = (
            decision_log
            if isinstance(decision_log, DecisionLog) or decision_log is None
            else DecisionLog(decision_log, sample=decision_sample)
        )
        self._closed = False

    # -- serving --------------------------------------------------------------------------------

    def get_model(self, name: str, user: object = None) -> ServedModel:
        """The version the flag of ``name`` chooses for ``user``, loaded and ready.

        Never raises for flag or version trouble: those serve the last known good version.
        Raises :class:`ModelUnavailableError` for an unknown model, or when the last known good
        version itself cannot be loaded.
        """
        model = self._models.get(name)
        if model is None:
            raise ModelUnavailableError(
                f"unknown model {name!r}; the registry has: {', '.join(sorted(self._models))}",
                model=name,
            )
        context = user if type(user) is EvaluationContext else to_context(user)
        ring = model.ring
        if ring is not None:
            ring.add(context)
        lkg = self._health.lkg(name)
        if self._overrides is None and not self._pins and not pins.ACTIVE:
            details = self._client.get_string_details(model.flag_key, lkg, context)
        else:
            details = self._evaluate(model, lkg, context)
        version = details.value
        handle: ServedModel | None = None
        if details.error_code is None and version in model.versions:
            # Fast path: a valid choice whose model is cached; no lock taken.
            entry = self._cached_choice(name, version, lkg)
            if entry is not None:
                handle = ServedModel(
                    self,
                    name,
                    version,
                    version,
                    entry.value,
                    model.metadata[version],
                    reason=details.reason,
                    variant=details.variant,
                    context=context,
                )
        if handle is None:
            resolution = self._resolver.interpret(
                name, model.flag_key, lkg, details, model.versions
            )
            handle = self._serve(model, resolution, lkg, context)
        if model.shadow_flag is not None:
            handle.shadow_version = self._choose_shadow(model, handle.version, context)
        if self._audit is not None:
            self._audit.log(
                name,
                handle.requested_version,
                handle.version,
                str(handle.reason),
                self._cause(name, handle),
                context.targeting_key,
            )
        return handle

    def _cause(self, name: str, handle: ServedModel) -> str | None:
        """Why a handle is not what the flag asked (for the decision log)."""
        if not handle.fell_back:
            return None
        if handle.reason == ROLLED_BACK:
            return f"version {handle.requested_version!r} is rolled back"
        if handle.reason == PREWARMING:
            return f"version {handle.requested_version!r} is loading after a flag change"
        for quarantine in self._health.quarantined(name):
            if quarantine.version == handle.requested_version:
                return quarantine.cause
        return self._resolver.errors(name)[1]

    async def get_model_async(self, name: str, user: object = None) -> ServedModel:
        """Like :meth:`get_model`: evaluates with OpenFeature's async API, loads on a thread."""
        import asyncio

        model = self._models.get(name)
        if model is None:
            raise ModelUnavailableError(f"unknown model {name!r}", model=name)
        context = user if type(user) is EvaluationContext else to_context(user)
        if model.ring is not None:
            model.ring.add(context)
        lkg = self._health.lkg(name)
        if self._pins or pins.ACTIVE:
            details = self._evaluate(model, lkg, context)
            resolution = self._resolver.interpret(
                name, model.flag_key, lkg, details, model.versions
            )
        else:
            resolution = await self._resolver.resolve_async(
                name, model.flag_key, lkg, context, model.versions
            )
        handle = self._serve_cached(model, resolution, lkg, context)
        if handle is None:  # a load (or a fallback that may load): off the event loop
            handle = await asyncio.to_thread(self._serve, model, resolution, lkg, context)
        if model.shadow_flag is not None:
            handle.shadow_version = self._choose_shadow(model, handle.version, context)
        return handle

    def _evaluate(
        self, model: _Model, default: str, context: EvaluationContext
    ) -> FlagEvaluationDetails[str]:
        """Pins first (this instance's, then process-wide), then override files, then flags."""
        name = model.spec.name
        pinned = self._pins.get(name) or pins.ACTIVE.get(name)
        if pinned is None:
            return self._resolver.evaluate(model.flag_key, default, context)
        if pinned not in model.versions:
            raise ModelUnavailableError(
                f"model {name!r} is pinned to version {pinned!r}, which the registry does not "
                f"have (known: {', '.join(sorted(model.versions))})",
                model=name,
                version=pinned,
            )
        return FlagEvaluationDetails(model.flag_key, pinned, variant=pinned, reason=OVERRIDE)

    @contextlib.contextmanager
    def override(self, **versions: str) -> Iterator[None]:
        """Pin models to versions for the block: ``with flags.override(recommender="v2"):``.

        Pins are by model name and win over flags and override files. Blocks nest: leaving one
        restores the pins that were in force when it was entered. Unknown models or versions
        raise :class:`ModelUnavailableError` at once.
        """
        for name, version in versions.items():
            model = self._model(name)
            if version not in model.versions:
                raise ModelUnavailableError(
                    f"cannot pin model {name!r} to {version!r}: the registry has "
                    f"{', '.join(sorted(model.versions))}",
                    model=name,
                    version=version,
                )
        with self._pins_lock:
            previous = self._pins
            self._pins = {**previous, **versions}
        try:
            yield
        finally:
            with self._pins_lock:
                self._pins = previous

    def _choose_shadow(self, model: _Model, serving: str, context: EvaluationContext) -> str | None:
        assert model.shadow_flag is not None
        name = model.spec.name
        keyed = context.targeting_key is not None
        # With a targeting key, sampling is a pure function of the key: decide it before paying
        # for the shadow flag's evaluation.
        if keyed and not sampled(model.shadow_rate, name, context.targeting_key, self._random):
            return None
        shadow = self._resolver.shadow(name, model.shadow_flag, serving, context, model.versions)
        if shadow is None or (
            not keyed and not sampled(model.shadow_rate, name, None, self._random)
        ):
            return None
        return shadow

    def _cached_choice(self, name: str, version: str, lkg: str) -> CacheEntry | None:
        """The cached model of a known version the flag chose, if it may serve now (no I/O)."""
        if version != lkg and self._health.blocked(name, version) is not None:
            return None
        if self._supervisor is not None and version in self._supervisor.rolled_back(name):
            return None
        return self._cache.get((name, version))

    def _serve_cached(
        self, model: _Model, resolution: Resolution, lkg: str, context: EvaluationContext
    ) -> ServedModel | None:
        """The handle when the chosen version is valid and cached (no I/O), else None."""
        name = model.spec.name
        version = resolution.version
        entry = None if resolution.error is not None else self._cached_choice(name, version, lkg)
        if entry is None:
            return None
        return ServedModel(
            self,
            name,
            version,
            version,
            entry.value,
            model.metadata[version],
            reason=resolution.reason,
            variant=resolution.variant,
            context=context,
        )

    def _serve(
        self, model: _Model, resolution: Resolution, lkg: str, context: EvaluationContext
    ) -> ServedModel:
        name = model.spec.name
        version = resolution.version
        requested = resolution.requested or version
        if (
            version != lkg
            and self._supervisor is not None
            and version in self._supervisor.rolled_back(name)
        ):
            return self._lkg_handle(model, requested, resolution, context, ROLLED_BACK)
        if version != lkg:
            prewarmer = self._prewarmer
            key = (name, version)
            if (
                prewarmer is not None
                and self._cache.get(key) is None
                and self._health.blocked(name, version) is None
                and (
                    prewarmer.warming(name, version)
                    # Met before the change event arrived and already loading in another
                    # thread: in a warm process, answer with the LKG instead of queueing.
                    or (self._cache.loading(key) and self._cache.get((name, lkg)) is not None)
                )
            ):
                # Loading in the background after a flag change: answer now with the LKG.
                return self._lkg_handle(model, requested, resolution, context, PREWARMING)
            if self._health.blocked(name, version) is None:
                try:
                    entry = self._entry(name, version)
                except VersionLoadError as exc:
                    self._failed(name, version, exc, stage="load", served=lkg)
                else:
                    return ServedModel(
                        self,
                        name,
                        version,
                        requested,
                        entry.value,
                        model.metadata[version],
                        reason=resolution.reason,
                        variant=resolution.variant,
                        fell_back=requested != version,
                        context=context,
                    )
            return self._lkg_handle(model, requested, resolution, context, FALLBACK)
        lkg, entry = self._lkg_entry(name)
        return ServedModel(
            self,
            name,
            lkg,
            requested,
            entry.value,
            model.metadata[lkg],
            reason=resolution.reason if lkg == version else FALLBACK,
            variant=resolution.variant,
            fell_back=requested != lkg,
            context=context,
        )

    def _lkg_handle(
        self,
        model: _Model,
        requested: str,
        resolution: Resolution,
        context: EvaluationContext,
        reason: str,
    ) -> ServedModel:
        """A handle served by the LKG in place of ``requested``, for ``reason``."""
        name = model.spec.name
        lkg, entry = self._lkg_entry(name)
        return ServedModel(
            self,
            name,
            lkg,
            requested,
            entry.value,
            model.metadata[lkg],
            reason=reason,
            variant=resolution.variant,
            fell_back=True,
            context=context,
        )

    def invoke(
        self, handle: ServedModel, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``method`` on the handle's model; on failure, on the last known good version.

        Used by :class:`ServedModel`; applications call the handle's methods instead.
        """
        health = self._health
        if health.blocked(handle.name, handle.version) is not None:
            # Quarantined since this handle was made: do not fail (and be penalised) again.
            lkg, entry = self._lkg_entry(handle.name)
            if lkg != handle.version:
                return getattr(entry.value, method)(*args, **kwargs)
        shadow = handle.shadow_version
        supervisor = self._supervisor
        timed = shadow is not None or supervisor is not None
        started = time.perf_counter() if timed else 0.0
        try:
            result = getattr(handle.model, method)(*args, **kwargs)
        except Exception as exc:
            return self._recover(handle, method, args, kwargs, exc, started)
        elapsed = time.perf_counter() - started if timed else 0.0
        if supervisor is not None:
            # A handle that fell back counts as a call of the version the flag asked for that
            # this version never ran (quarantined, rolled back or loading): the failure that
            # quarantined it was counted when it happened (_recover, _failed).
            supervisor.record_call(
                handle.name, handle.requested_version, elapsed, False, handle.fell_back
            )
        if shadow is not None:
            if health.blocked(handle.name, shadow) is None:
                self._shadow.submit(
                    handle.name, handle.version, shadow, method, args, kwargs, result, elapsed
                )
            else:
                self._shadow.drop(handle.name, handle.version, shadow)
        if not health.is_proven(handle.name, handle.version):
            self._proved(handle.name, handle.version)
        return result

    def _recover(
        self,
        handle: ServedModel,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: Exception,
        started: float,
    ) -> Any:
        name, version = handle.name, handle.version
        supervisor = self._supervisor
        if version == self._health.lkg(name):
            if supervisor is not None:
                elapsed = time.perf_counter() - started
                supervisor.record_call(name, handle.requested_version, elapsed, True, False)
            raise error
        try:
            lkg, entry = self._lkg_entry(name)
        except ModelFlagsError:
            raise error from None
        lkg_failed = False
        try:
            result = getattr(entry.value, method)(*args, **kwargs)
        except Exception:
            lkg_failed = True
        if supervisor is not None and not lkg_failed:  # both failing: bad input, not the version
            elapsed = time.perf_counter() - started
            supervisor.record_call(name, handle.requested_version, elapsed, True, True)
        if lkg_failed:
            # Both versions reject this call: the input is the caller's to see, nobody is penalised.
            raise error
        cause = f"{method} raised {type(error).__name__}: {error}"
        self._failed(
            name, version, error, stage="inference", served=lkg, method=method, cause=cause
        )
        if not self._health.is_proven(name, lkg):
            self._proved(name, lkg)
        return result

    # -- mechanism glue -------------------------------------------------------------------------

    def _entry(self, name: str, version: str) -> CacheEntry:
        return self._cache.get_or_load((name, version), lambda: self._load(name, version))

    def _load(self, name: str, version: str) -> CacheEntry:
        spec = self.registry.models[name].versions[version]
        started = time.perf_counter()
        try:
            path = self._artifacts.fetch(name, version, spec)
            nbytes = Path(path).stat().st_size
            value = self._loaders.load(name, version, spec, path)
        except VersionLoadError as exc:
            self._events.emit(LoadFailed(name, version, str(exc), type(exc).__name__))
            raise
        except Exception as exc:
            error = VersionLoadError(
                f"model {name!r} version {version!r}: cannot load: {type(exc).__name__}: {exc}",
                model=name,
                version=version,
            )
            self._events.emit(LoadFailed(name, version, str(error), type(exc).__name__))
            raise error from exc
        seconds = time.perf_counter() - started
        logger.info(
            "model %r version %r loaded in %.3f s (%d bytes)", name, version, seconds, nbytes
        )
        self._events.emit(Loaded(name, version, seconds, nbytes))
        return CacheEntry(value, nbytes)

    def _selects(self, name: str, context: EvaluationContext) -> str | None:
        """The version the flag of ``name`` selects for ``context`` now (prewarm)."""
        model = self._models[name]
        lkg = self._health.lkg(name)
        details = self._evaluate(model, lkg, context)
        resolution = self._resolver.interpret(name, model.flag_key, lkg, details, model.versions)
        return resolution.version if resolution.error is None else None

    def _needs_load(self, name: str, version: str) -> bool:
        return (
            self._cache.get((name, version)) is None and self._health.blocked(name, version) is None
        )

    def _load_for_prewarm(self, name: str, version: str) -> None:
        try:
            self._entry(name, version)
        except VersionLoadError as exc:
            self._failed(name, version, exc, stage="prewarm", served=None)
            raise

    def _shadow_model(self, name: str, version: str) -> Any:
        """The loaded shadow version (on a shadow thread); a load failure quarantines it."""
        try:
            return self._entry(name, version).value
        except VersionLoadError as exc:
            self._failed(name, version, exc, stage="shadow load", served=None)
            raise

    def _lkg_entry(self, name: str) -> tuple[str, CacheEntry]:
        """The last known good version and its loaded model; falls back to default_version."""
        health = self._health
        lkg = health.lkg(name)
        blocked = health.blocked(name, lkg)
        if blocked is None:
            try:
                return lkg, self._entry(name, lkg)
            except VersionLoadError as exc:
                self._failed(name, lkg, exc, stage="load", served=None)
                error: Exception = exc
        else:
            error = ModelFlagsError(blocked.cause)
        default = self.registry.models[name].default_version
        if default != lkg and health.blocked(name, default) is None:
            try:
                entry = self._entry(name, default)
            except VersionLoadError as exc:
                self._failed(name, default, exc, stage="load", served=None)
            else:
                logger.error(
                    "model %r: last known good version %r cannot load (%s); serving default %r",
                    name,
                    lkg,
                    error,
                    default,
                )
                self._set_lkg(name, default)
                return default, entry
        raise ModelUnavailableError(
            f"model {name!r}: its last known good version {lkg!r} cannot be served: {error}",
            model=name,
            version=lkg,
        ) from error

    def _failed(
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
        cause = cause or str(error)
        if self._supervisor is not None and stage != "inference":
            # A failed load is a call the version could not answer (inference errors are
            # counted by _recover with their latency).
            self._supervisor.record_call(name, version, 0.0, True, True)
        entry = self._health.quarantine(name, version, cause)
        retry_in = entry.until - entry.since
        logger.warning(
            "model %r version %r failed at %s (%s); quarantined for %.0f s (failure %d)%s",
            name,
            version,
            stage,
            cause,
            retry_in,
            entry.failures,
            f"; served {served!r}" if served else "",
        )
        if served is not None:
            self._events.emit(FellBack(name, version, served, stage, cause, method))
        self._events.emit(Quarantined(name, version, cause, entry.failures, entry.until))

    def _proved(self, name: str, version: str) -> None:
        # With guardrails, one good call is not enough: the supervisor promotes the version
        # once it has carried enough healthy traffic for long enough.
        supervisor = self._supervisor
        gated = supervisor is not None and supervisor.gates(name)
        previous = self._health.mark_good(name, version, promote=not gated)
        if previous is not None:
            self._lkg_changed(name, version, previous)

    def _promote(self, name: str, version: str) -> None:
        previous = self._health.promote(name, version)
        if previous is not None:
            self._lkg_changed(name, version, previous)

    def _lkg_changed(self, name: str, version: str, previous: str) -> None:
        self._cache.pin((name, version))
        self._cache.unpin((name, previous))
        logger.info("model %r: version %r is now last known good (was %r)", name, version, previous)
        self._events.emit(BecameLKG(name, version, previous))

    def _set_lkg(self, name: str, version: str) -> None:
        previous = self._health.set_lkg(name, version)
        if previous != version:
            self._lkg_changed(name, version, previous)

    def _on_change(self, changed: frozenset[str] | None) -> None:
        """A provider reports changed flags (``None``: it did not say which)."""
        affected = [
            name
            for name, model in self._models.items()
            if changed is None or model.flag_key in changed
        ]
        for name in affected:
            released = self._health.release(name)
            if released:
                logger.info(
                    "model %r: flag %r changed; quarantine lifted for %s",
                    name,
                    self._models[name].flag_key,
                    ", ".join(released),
                )
        if self._prewarmer is not None and not self._closed:
            self._prewarmer.schedule(affected)
            if self._supervisor is not None:
                for name in affected:
                    self._release_moved_rollbacks(name)

    def _release_moved_rollbacks(self, name: str) -> None:
        """Lift rollbacks of versions the flag no longer selects for any recent context."""
        assert self._supervisor is not None and self._prewarmer is not None
        rolled_back = self._supervisor.rolled_back(name)
        if not rolled_back:
            return
        selected = {
            self._selects(name, context) for context in self._prewarmer.ring(name).snapshot()
        }
        moved = [version for version in rolled_back if version not in selected]
        if moved and self._supervisor.release(name, moved, forget=False):
            logger.info("model %r: flag no longer selects %s; rollback lifted", name, moved)

    # -- operations -----------------------------------------------------------------------------

    # -- metrics, outcomes, guardrails ---------------------------------------------------------

    def metrics(self, name: str) -> dict[str, VersionMetrics]:
        """Per-version metrics of model ``name`` over the sliding window.

        Metrics are kept when the model has guardrails, or with ``ModelFlags(metrics=True)``;
        otherwise this is empty.
        """
        self._model(name)
        return {} if self._supervisor is None else self._supervisor.snapshot(name)

    def record_outcome(
        self, model: ServedModel | str, name: str, value: float = 1.0, *, version: str | None = None
    ) -> None:
        """Report a business outcome (a click, a conversion) of a served decision.

        Pass the handle that answered (its version and context are used), or the model name with
        ``version=``. The outcome feeds the per-version metrics and guardrails, and goes to
        OpenFeature's tracking API (``client.track``) so flag services that collect it see it.
        """
        if isinstance(model, ServedModel):
            model_name, served, context = model.name, model.version, model.context
        else:
            if version is None:
                raise ValueError(
                    f"record_outcome({model!r}, {name!r}, ...): pass the handle get_model "
                    "returned, or version= with a model name"
                )
            model_name, served, context = model, version, None
        spec = self._model(model_name)
        if served not in spec.versions:
            raise ModelUnavailableError(
                f"model {model_name!r} has no version {served!r}", model=model_name, version=served
            )
        if self._supervisor is not None:
            self._supervisor.record_outcome(model_name, served, name, float(value))
        try:
            self._client.track(
                name,
                context,
                TrackingEventDetails(
                    value=float(value), attributes={"model": model_name, "version": served}
                ),
            )
        except Exception:
            logger.debug("tracking %r failed", name, exc_info=True)

    def rollback(self, name: str, version: str | None = None, *, reason: str) -> list[str]:
        """Pin model ``name`` away from ``version`` (default: every non-LKG version with traffic).

        The LKG serves instead (reason ``ROLLED_BACK``) until :meth:`release`, or until the flag
        stops selecting the version. With an actuator, the flag is also rolled back at its source.
        """
        model = self._model(name)
        supervisor = self._require_supervisor()
        lkg = self._health.lkg(name)
        if version is not None and version not in model.versions:
            raise ModelUnavailableError(
                f"model {name!r} has no version {version!r}", model=name, version=version
            )
        versions = (
            [version]
            if version is not None
            else [served for served in supervisor.snapshot(name) if served != lkg]
        )
        for chosen in versions:
            if chosen == self._health.lkg(name):
                replacement = self._health.demote(name, chosen)
                if replacement == chosen:
                    raise ValueError(
                        f"model {name!r}: cannot roll back {chosen!r}: it is the last known good "
                        "version and no other version has proven itself"
                    )
                self._lkg_changed(name, replacement, chosen)
            supervisor.rollback(name, chosen, reason=reason)
        return versions

    def check_guardrails(self) -> list[Breach]:
        """Check every model's guardrails now (a background thread does it every second)."""
        return [] if self._supervisor is None else self._supervisor.check()

    def breaches(self, name: str, version: str | None = None) -> list[Breach]:
        """Guardrail breaches of model ``name`` that fired and were not released."""
        self._model(name)
        return [] if self._supervisor is None else self._supervisor.breaches(name, version)

    def canary(
        self,
        name: str,
        candidate: str,
        actuator: Actuator,
        *,
        stages: Sequence[int] | Sequence[Stage] = (1, 10, 50, 100),
        stage_seconds: float = 60.0,
        poll_s: float = 1.0,
    ) -> CanaryDriver:
        """A canary of ``candidate`` against the LKG, driven through ``actuator`` stage by stage.

        It advances while the model's guardrails hold and rolls back when one fires; call
        ``run()`` on the result (it blocks until the canary ends).
        """
        from modelflags.rollout.canary import CanaryDriver

        model = self._model(name)
        if candidate not in model.versions:
            raise ModelUnavailableError(
                f"model {name!r} has no version {candidate!r}", model=name, version=candidate
            )
        if model.spec.guardrails is None:
            raise ModelFlagsError(f"model {name!r} has no guardrails: a canary needs them")
        baseline = self._health.lkg(name)
        supervisor = self._require_supervisor()

        def check() -> list[Breach]:
            self.check_guardrails()
            return self.breaches(name, candidate)

        def on_step(step: CanaryStep) -> None:
            if step.event == "start":
                # Judge the candidate afresh: breaches and metrics of an earlier canary (kept on
                # record when the flag moved away) are not evidence about this one.
                supervisor.release(name, [candidate])
            elif step.event == "completed" and self._health.is_proven(name, candidate):
                self._promote(name, candidate)

        return CanaryDriver(
            actuator,
            flag_key=model.flag_key,
            baseline=baseline,
            candidate=candidate,
            stages=stages,
            stage_seconds=stage_seconds,
            check=check,
            poll_s=poll_s,
            on_step=on_step,
            # The candidate is not promoted while its canary runs, however the run ends.
            hold=lambda: supervisor.holding(name),
        )

    def _require_supervisor(self) -> Supervisor:
        if self._supervisor is None:
            raise ModelFlagsError(
                "rollbacks need metrics: give the model guardrails, or ModelFlags(metrics=True)"
            )
        return self._supervisor

    def status(self) -> dict[str, ModelStatus]:
        """Per model: LKG, loaded versions with bytes, quarantined versions with cause and retry."""
        cached = self._cache.snapshot()
        now = self._health.now()
        return {
            name: model_status(
                name,
                flag=model.flag_key,
                lkg=self._health.lkg(name),
                default_version=model.spec.default_version,
                cached=cached,
                quarantined=self._health.quarantined(name),
                now=now,
                flag_errors=self._resolver.errors(name),
                rolled_back=(
                    frozenset() if self._supervisor is None else self._supervisor.rolled_back(name)
                ),
            )
            for name, model in self._models.items()
        }

    def release(self, name: str, version: str | None = None) -> list[str]:
        """Lift the quarantine and rollback of ``version`` (or of every version) of ``name`` now."""
        self._model(name)
        released = self._health.release(name, version)
        if self._supervisor is not None:
            versions = None if version is None else [version]
            released = sorted({*released, *self._supervisor.release(name, versions)})
        return released

    def add_listener(self, listener: Listener) -> None:
        """Receive events (loaded, load failed, fell back, quarantined, became LKG)."""
        self._events.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop sending events to ``listener``."""
        self._events.remove(listener)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for shadow calls, then events and decision log lines; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if not self._shadow.flush(timeout) or not self._events.flush(remaining()):
            return False
        return self._audit is None or self._audit.flush(remaining())

    def shadow_report(self, name: str) -> dict[tuple[str, str], ShadowStats]:
        """Shadow statistics of model ``name`` per (primary, shadow) version pair."""
        self._model(name)
        return self._shadow.report(name)

    def reset_shadow(self, name: str) -> None:
        """Forget the shadow statistics of model ``name``."""
        self._model(name)
        self._shadow.reset(name)

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            raise ModelUnavailableError(f"unknown model {name!r}", model=name)
        return model

    def close(self) -> None:
        """Stop background work and release resources. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._feed.close()
        if self._prewarmer is not None:
            self._prewarmer.close()
        if self._supervisor is not None:
            self._supervisor.close()
        if self._audit is not None:
            self._audit.close()
        if self._overrides is not None:
            self._overrides.shutdown()
        self._shadow.close()
        self._events.close()
        self._artifacts.close()

    def __enter__(self) -> ModelFlags:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _as_registry(registry: str | os.PathLike[str] | Registry | Mapping[str, Any]) -> Registry:
    if isinstance(registry, Registry):
        return registry
    if isinstance(registry, Mapping):
        return Registry.from_mapping(registry, source="<mapping>")
    return load_registry(registry)
