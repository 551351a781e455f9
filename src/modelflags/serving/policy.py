"""The serving policy: which loaded version answers each request and each call.

This is the one place where policy meets mechanism. :class:`ServingPolicy` receives its
mechanisms through its constructor (the :class:`~modelflags.serving.resolution.Resolver` that
evaluates flags, the :class:`~modelflags.serving.versions.VersionKeeper` that loads, caches,
quarantines and promotes versions, the shadow runner, the prewarmer, the decision sink) and
decides:

- which version a request gets: the flag's choice when it is known, allowed, loaded or loadable
  and not quarantined or rolled back; otherwise the last known good version (LKG), with a
  :class:`~modelflags.serving.handle.ServingReason` that says why (``POLICY`` for a version whose
  stage this process does not serve, see :mod:`~modelflags.serving.stages`);
- what happens when inference fails: the same call on the LKG, the failing version quarantined,
  and the original error raised only when the LKG fails too (bad input is the caller's to see);
- when a version has proved itself, and which calls are mirrored to a shadow.

The synchronous and asynchronous paths share every step but the flag evaluation (awaited on the
async path) and the load (run on a worker thread on the async path).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails

from modelflags.errors import ModelUnavailableError, VersionLoadError
from modelflags.registry import ModelSpec
from modelflags.serving.cache import CacheEntry
from modelflags.serving.guard import InferenceGuard
from modelflags.serving.handle import ServedModel, ServingReason
from modelflags.serving.prewarm import ContextRing, Prewarmer
from modelflags.serving.resolution import Resolution, Resolver
from modelflags.serving.shadow import ShadowRunner, sampled
from modelflags.serving.stages import StageGate
from modelflags.serving.versions import VersionKeeper

__all__ = ["DecisionSink", "ModelEntry", "ServingPolicy"]

logger = logging.getLogger(__name__)

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


class DecisionSink(Protocol):
    """Where each serving decision is recorded (the decision log fits)."""

    def log(
        self,
        model: str,
        requested: str,
        served: str,
        reason: str,
        cause: str | None,
        targeting_key: str | None,
    ) -> None:
        """Record one decision; never blocks, never raises."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """What the request path needs of one model, read without locks."""

    name: str
    spec: ModelSpec
    flag_key: str
    versions: frozenset[str]
    metadata: Mapping[str, Mapping[str, Any]]
    shadow_flag: str | None
    shadow_rate: float
    ring: ContextRing | None

    @classmethod
    def of(cls, spec: ModelSpec, *, ring: ContextRing | None) -> ModelEntry:
        """The entry of a registry model (``ring``: its recent contexts, for prewarming)."""
        return cls(
            spec.name,
            spec,
            spec.flag_key,
            frozenset(spec.versions),
            {version: item.metadata for version, item in spec.versions.items()},
            spec.shadow_flag,
            spec.shadow_rate,
            ring,
        )


class ServingPolicy:
    """Decides, for every request and call, which version answers and what a failure costs.

    Safe to share between threads. The hot path of a cached version takes no lock: one flag
    evaluation, a few dictionary reads and one small handle.
    """

    def __init__(
        self,
        models: Mapping[str, ModelEntry],
        *,
        resolver: Resolver,
        keeper: VersionKeeper,
        shadow: ShadowRunner,
        prewarmer: Prewarmer | None = None,
        decisions: DecisionSink | None = None,
        random: Callable[[], float],
        stages: StageGate | None = None,
    ) -> None:
        self.models = models
        self.resolver = resolver
        self.keeper = keeper
        self.shadow = shadow
        self.prewarmer = prewarmer
        self.decisions = decisions
        self.stages = stages
        self._random = random
        self._health = keeper.health
        self._cache = keeper.cache
        self.guard = InferenceGuard(keeper, shadow)
        self.provider_set: Callable[[], bool] | None = None
        self._unwarned = set(models)

    def model(self, name: str) -> ModelEntry:
        """The entry of model ``name``; :class:`ModelUnavailableError` when it is unknown."""
        model = self.models.get(name)
        if model is None:
            raise ModelUnavailableError(
                f"unknown model {name!r}; the registry has: {', '.join(sorted(self.models))}",
                model=name,
            )
        return model

    # -- one request ----------------------------------------------------------------------------

    def serve(
        self, name: str, context: EvaluationContext, *, timeout: float | None = None
    ) -> ServedModel:
        """The handle of the version serving ``name`` for ``context``, loaded and ready."""
        model = self.models.get(name) or self.model(name)
        if self._unwarned:
            self._check_source(model)
        if model.ring is not None:
            model.ring.add(context)
        lkg = self._health.lkg(name)
        details = self.resolver.evaluate(
            name, model.flag_key, lkg, context, model.versions, timeout=timeout
        )
        handle = self._cached_handle(model, details, lkg, context)
        if handle is None:
            handle = self._serve(model, self._interpret(model, details, lkg), lkg, context)
        return self._finish(model, handle, context)

    async def serve_async(
        self, name: str, context: EvaluationContext, *, timeout: float | None = None
    ) -> ServedModel:
        """Like :meth:`serve`, awaiting the flag; a load runs on a worker thread."""
        model = self.models.get(name) or self.model(name)
        if self._unwarned:
            self._check_source(model)
        if model.ring is not None:
            model.ring.add(context)
        lkg = self._health.lkg(name)
        details = await self.resolver.evaluate_async(
            name, model.flag_key, lkg, context, model.versions, timeout=timeout
        )
        handle = self._cached_handle(model, details, lkg, context)
        if handle is None:
            resolution = self._interpret(model, details, lkg)
            handle = await asyncio.to_thread(self._serve, model, resolution, lkg, context)
        return self._finish(model, handle, context)

    def _check_source(self, model: ModelEntry) -> None:
        """Warn once per model when no flag provider is set (every request serves the default)."""
        check = self.provider_set
        if check is None or check():
            self._unwarned.clear()
            return
        if model.name not in self._unwarned:
            return
        self._unwarned.discard(model.name)
        logger.warning(
            "model %r: no OpenFeature provider is set, so flag %r is never evaluated and every "
            "request serves %r; set one before serving, for example "
            "api.set_provider_and_wait(FlagdProvider(resolver_type=ResolverType.FILE, "
            "offline_flag_source_path='flags.json'))",
            model.name,
            model.flag_key,
            self._health.lkg(model.name),
        )

    def selects(self, name: str, context: EvaluationContext) -> str | None:
        """The version the flag of ``name`` selects for ``context`` now (prewarm asks this)."""
        model = self.models[name]
        lkg = self._health.lkg(name)
        details = self.resolver.evaluate(name, model.flag_key, lkg, context, model.versions)
        resolution = self._interpret(model, details, lkg)
        if resolution.error is not None:
            return None
        stages = self.stages
        if stages is not None and resolution.version in stages.refused(name):
            return None
        return resolution.version

    def _interpret(
        self, model: ModelEntry, details: FlagEvaluationDetails[str], lkg: str
    ) -> Resolution:
        return self.resolver.interpret(model.name, model.flag_key, lkg, details, model.versions)

    def _finish(
        self, model: ModelEntry, handle: ServedModel, context: EvaluationContext
    ) -> ServedModel:
        if model.shadow_flag is not None:
            handle.shadow_version = self._choose_shadow(model, handle.version, context)
        if self.decisions is not None:
            self.decisions.log(
                model.name,
                handle.requested_version,
                handle.version,
                str(handle.reason),
                self._cause(model.name, handle),
                context.targeting_key,
            )
        return handle

    def _cause(self, name: str, handle: ServedModel) -> str | None:
        """Why a handle is not what the flag asked (for the decision log)."""
        if not handle.fell_back:
            return None
        if handle.reason is ServingReason.ROLLED_BACK:
            return f"version {handle.requested_version!r} is rolled back"
        if handle.reason is ServingReason.PREWARMING:
            return f"version {handle.requested_version!r} is loading in the background"
        if handle.reason is ServingReason.POLICY and self.stages is not None:
            return self.stages.cause(name, handle.requested_version)
        for quarantine in self._health.quarantined(name):
            if quarantine.version == handle.requested_version:
                return quarantine.cause
        return self.resolver.errors(name)[1]

    def _choose_shadow(
        self, model: ModelEntry, serving: str, context: EvaluationContext
    ) -> str | None:
        assert model.shadow_flag is not None
        keyed = context.targeting_key is not None
        # With a targeting key, sampling is a pure function of the key: decide it before paying
        # for the shadow flag's evaluation.
        if keyed and not sampled(
            model.shadow_rate, model.name, context.targeting_key, self._random
        ):
            return None
        shadow = self.resolver.shadow(
            model.name, model.shadow_flag, serving, context, model.versions
        )
        if shadow is None or (
            not keyed and not sampled(model.shadow_rate, model.name, None, self._random)
        ):
            return None
        stages = self.stages
        if stages is not None and stages.refuses(model.name, shadow, role="shadow"):
            return None
        return shadow

    # -- building handles -----------------------------------------------------------------------

    def _cached_handle(
        self,
        model: ModelEntry,
        details: FlagEvaluationDetails[str],
        lkg: str,
        context: EvaluationContext,
    ) -> ServedModel | None:
        """The handle when the flag chose a known version that is cached and may serve now."""
        version = details.value
        if details.error_code is not None or version not in model.versions:
            return None
        name = model.name
        if version != lkg and self._health.blocked(name, version) is not None:
            return None
        oversight = self.keeper.oversight
        if oversight is not None and version in oversight.rolled_back(name):
            return None
        entry = self._cache.get((name, version))
        if entry is None:
            return None
        reason = details.reason
        return ServedModel(
            self.guard,
            name,
            version,
            version,
            entry.value,
            model.metadata[version],
            reason=ServingReason.of(reason),
            variant=details.variant,
            context=context,
            flag_reason=None if reason is None else str(reason),
            flag_metadata=details.flag_metadata,
        )

    def _serve(
        self, model: ModelEntry, resolution: Resolution, lkg: str, context: EvaluationContext
    ) -> ServedModel:
        """The handle for a resolution whose version is not cached or may not serve as is."""
        name = model.name
        version = resolution.version
        requested = resolution.requested if resolution.requested is not None else version
        if version == lkg:
            lkg, entry = self.keeper.lkg_entry(name)
            reason = resolution.reason if lkg == version else ServingReason.FALLBACK
            return self._handle(model, lkg, requested, entry, resolution, reason, context)
        stages = self.stages
        # A version this process may not serve is never loaded, so it never reaches the fast path.
        if stages is not None and stages.refuses(name, version):
            return self._lkg_handle(model, requested, resolution, context, ServingReason.POLICY)
        oversight = self.keeper.oversight
        if oversight is not None and version in oversight.rolled_back(name):
            return self._lkg_handle(
                model, requested, resolution, context, ServingReason.ROLLED_BACK
            )
        if self._health.blocked(name, version) is not None:
            return self._lkg_handle(model, requested, resolution, context, ServingReason.FALLBACK)
        # A pin or an override is a person's explicit choice (tests, a laptop): it loads in the
        # request, so what it names is what serves. A flag's answer may arrive before any change
        # event: the LKG answers while it loads.
        local = resolution.reason is ServingReason.OVERRIDE
        if not local and self._warming(name, version, lkg):
            return self._lkg_handle(model, requested, resolution, context, ServingReason.PREWARMING)
        try:
            entry = self.keeper.entry(name, version)
        except VersionLoadError as exc:
            self.keeper.failed(name, version, exc, stage="load", served=lkg)
            return self._lkg_handle(model, requested, resolution, context, ServingReason.FALLBACK)
        return self._handle(
            model, version, requested, entry, resolution, resolution.reason, context
        )

    def _warming(self, name: str, version: str, lkg: str) -> bool:
        """True when the LKG answers now while ``version`` loads in the background.

        With the LKG in memory no request waits for a load, whether or not a change event
        announced the version: the load starts in the background (once, however many requests
        meet it) and the LKG answers meanwhile. Only a process with nothing to answer with
        (the LKG not loaded yet) loads in the request; so does one without prewarming.
        """
        prewarmer = self.prewarmer
        if prewarmer is None or self._cache.get((name, version)) is not None:
            return False
        if prewarmer.warming(name, version):
            return True
        if self._cache.get((name, lkg)) is None:
            return False
        return prewarmer.load_soon(name, version)

    def _lkg_handle(
        self,
        model: ModelEntry,
        requested: str,
        resolution: Resolution,
        context: EvaluationContext,
        reason: ServingReason,
    ) -> ServedModel:
        """A handle served by the LKG in place of ``requested``, for ``reason``."""
        lkg, entry = self.keeper.lkg_entry(model.name)
        return self._handle(model, lkg, requested, entry, resolution, reason, context)

    def _handle(
        self,
        model: ModelEntry,
        version: str,
        requested: str,
        entry: CacheEntry,
        resolution: Resolution,
        reason: ServingReason,
        context: EvaluationContext,
    ) -> ServedModel:
        """The one handle builder off the fast path."""
        return ServedModel(
            self.guard,
            model.name,
            version,
            requested,
            entry.value,
            # a version refreshed away from its source may still be the LKG for a moment
            model.metadata.get(version, _NO_METADATA),
            reason=reason,
            variant=resolution.variant,
            fell_back=requested != version,
            context=context,
            flag_reason=resolution.flag_reason,
            flag_error_code=resolution.error_code,
            flag_metadata=resolution.flag_metadata,
        )

    # -- flag changes ---------------------------------------------------------------------------

    def flags_changed(self, changed: frozenset[str] | None) -> list[str]:
        """A provider reports changed flags (``None``: it did not say which).

        Drops the answers the resolution cache kept for the changed flags first, then lifts the
        back-off of the affected models' quarantined versions (their failure counts stay until
        they prove themselves) and schedules a prewarm pass. Returns the affected models.
        """
        answers = self.resolver.answers
        if answers is not None:
            answers.flags_changed(changed)
        affected = [
            name
            for name, model in self.models.items()
            if changed is None or model.flag_key in changed
        ]
        for name in affected:
            released = self._health.lift(name)
            if released:
                logger.info(
                    "model %r: flag %r changed; quarantine lifted for %s",
                    name,
                    self.models[name].flag_key,
                    ", ".join(released),
                )
        if self.prewarmer is not None:
            self.prewarmer.schedule(affected)
        return affected
