"""Assembly: the parts one :class:`~modelflags.ModelFlags` is made of, wired together.

Every part gets what it needs through its constructor (narrow interfaces, bound methods of the
serving core's parts), never the facade. The order below is the order of dependence: events and
the change feed first, then resolution, health and the version keeper, then the serving policy
and what runs beside it (shadow, prewarm), then supervision (metrics and guardrails), then what
watches each call's input (input contracts, the drift watch).

Models whose versions come from MLflow (:mod:`modelflags.sources`) are read before anything
else, so every part is made with their versions; afterwards a
:class:`~modelflags.catalog.Catalog` swaps a refreshed model in (its spec, its stages, its
request-path entry), each by one reference assignment, on the sources' refresh thread. Models
without a source are never touched.
"""

from __future__ import annotations

import logging
import os
import random as _random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from openfeature import api
from openfeature.client import OpenFeatureClient

from modelflags.artifacts import ArtifactStore, Loader, LoaderRegistry
from modelflags.catalog import Catalog
from modelflags.errors import VersionLoadError
from modelflags.options import (
    AuditOptions,
    Options,
    ResolutionCacheOptions,
    validate_input_default,
)
from modelflags.overrides import OVERRIDES_ENV, overrides_layer
from modelflags.parts import _LIVE, Parts
from modelflags.registry import ModelSpec, Registry
from modelflags.rollout.drift import DriftWatch
from modelflags.rollout.supervision import Supervisor
from modelflags.serving.answers import AnswerCache
from modelflags.serving.cache import ModelCache
from modelflags.serving.changes import ChangeFeed
from modelflags.serving.comparison import require_comparisons
from modelflags.serving.health import Backoff, Health
from modelflags.serving.inputs import InputGate
from modelflags.serving.policy import ModelEntry, ServingPolicy
from modelflags.serving.prewarm import ContextRing, Prewarmer
from modelflags.serving.resolution import Resolver
from modelflags.serving.shadow import ShadowExecutor, ShadowRunner
from modelflags.serving.stages import StageGate, allowed_stages
from modelflags.serving.versions import VersionKeeper
from modelflags.telemetry.decision_log import DecisionLog
from modelflags.telemetry.events import EventDispatcher, Listener

if TYPE_CHECKING:
    from modelflags.sources import VersionSources

__all__ = ["assemble"]

logger = logging.getLogger(__name__)


def assemble(
    registry: Registry,
    options: Options,
    *,
    client: OpenFeatureClient | None = None,
    domain: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    listeners: Iterable[Listener] = (),
    loaders: Mapping[str, Loader] | None = None,
    overrides: str | os.PathLike[str] | None = None,
    random: Callable[[], float] = _random.random,
    evaluation_timeout: float | None = None,
) -> Parts:
    """Make and wire the parts (see the module docstring for the order)."""
    cached = options.cache
    store = cached.artifacts or ArtifactStore(
        cache_dir=cached.cache_dir, max_bytes=cached.max_artifact_bytes
    )
    sources: VersionSources | None = None
    if any(spec.mlflow is not None for spec in registry.models.values()):
        from modelflags.sources import version_sources  # HTTP and MLflow only for such models

        sources = version_sources(registry, folders=store.folder_fetcher(), state_dir=state_dir)
    if sources is not None:
        try:
            registry = sources.start(registry)
        except BaseException:
            sources.close()
            raise
    specs = dict(registry.models)  # the assembly's own: a Catalog swaps refreshed models in
    require_comparisons(name for name, spec in specs.items() if spec.shadow_flag is not None)
    governance = options.governance
    stages = StageGate(specs, allowed_stages(governance.allowed_stages, os.environ))
    events = EventDispatcher(listeners)
    assembled: list[Parts] = []  # change events arriving before assembly ends are not for us

    def on_change(changed: frozenset[str] | None) -> None:
        if assembled:
            assembled[0].flags_changed(changed)

    feed = ChangeFeed(client if client is not None else api.get_client(domain), on_change)
    env_path = os.environ.get(OVERRIDES_ENV) or None
    layer = overrides_layer(
        overrides if overrides is not None else env_path,
        feed.on_override_event,
        from_env=overrides is None and env_path is not None,
    )
    answers = _answer_cache(
        options.resolution, specs, feed, overrides=layer is not None, clock=clock
    )
    resolver = Resolver(feed.client, overrides=layer, timeout=evaluation_timeout, answers=answers)
    health = Health(
        {name: spec.default_version for name, spec in specs.items()},
        backoff=backoff,
        clock=clock,
        state_dir=state_dir,
        known_versions={name: frozenset(spec.versions) for name, spec in specs.items()},
    )
    stages.settle(health, specs)
    keeper = VersionKeeper(
        specs,
        health=health,
        cache=ModelCache(max_models=cached.max_models, max_bytes=cached.max_bytes),
        artifacts=store,
        loaders=LoaderRegistry(loaders),
        emit=events.emit,
    )
    warm = options.prewarm
    models = {
        name: ModelEntry.of(spec, ring=ContextRing(warm.sample) if warm.enabled else None)
        for name, spec in specs.items()
    }
    shadow = ShadowRunner(
        keeper.shadow_model,
        events.emit,
        workers=options.shadow.workers,
        max_pending=options.shadow.queue,
        executor=_shadow_executor(options, registry, keeper, loaders),
    )
    audit = _decision_log(options.audit)
    policy = ServingPolicy(
        models,
        resolver=resolver,
        keeper=keeper,
        shadow=shadow,
        decisions=audit,
        random=random,
        stages=stages,
    )
    policy.provider_set = feed.provider_set
    if warm.enabled:
        policy.prewarmer = Prewarmer(
            policy.selects,
            keeper.needs_load,
            keeper.prewarm,
            events.emit,
            sample=warm.sample,
            settled=keeper.settle,
        )
        for name, model in models.items():
            if model.ring is not None:
                policy.prewarmer.adopt(name, model.ring)
    rollout = options.rollout
    supervisor = Supervisor.for_models(
        specs,
        metrics=rollout.metrics or _drift_rolls_back(specs),
        exporters=rollout.exporters,
        actuator=rollout.actuator,
        check_interval=rollout.guardrail_interval,
        health=health,
        promote=keeper.promote,
        emit=events.emit,
        clock=clock,
    )
    keeper.oversight = supervisor
    if supervisor is not None:
        supervisor.actions = audit
    drift = DriftWatch.for_models(
        specs,
        emit=events.emit,
        clock=clock,
        lkg=health.lkg,
        rollback=None if supervisor is None else _drift_rollback(supervisor),
        exporters=rollout.exporters,
        max_pending=governance.drift_queue,
    )
    validate = governance.validate_input
    if validate is None:
        validate = validate_input_default()
    contracts = {name: spec.input for name, spec in specs.items() if validate and spec.input}
    gate = InputGate(
        contracts, sampler=drift, rates=None if drift is None else drift.rates, random=random
    )
    policy.guard.inputs = gate if gate else None
    catalog = None
    if sources is not None:
        catalog = Catalog(registry, specs, models, stages, health)
        sources.run(catalog.apply, keep=lambda name: (health.lkg(name),))
    parts = Parts(
        registry,
        events,
        feed,
        resolver,
        layer,
        keeper,
        shadow,
        policy,
        supervisor,
        audit,
        drift,
        sources,
        catalog,
    )
    assembled.append(parts)
    _LIVE.add(parts)
    return parts


def _drift_rolls_back(specs: Mapping[str, ModelSpec]) -> bool:
    """True when a model's drift rules roll back (which needs the supervisor's rollbacks)."""
    return any(
        spec.drift is not None and spec.drift.action == "rollback" for spec in specs.values()
    )


def _drift_rollback(supervisor: Supervisor) -> Callable[[str, str, str], None]:
    def rollback(model: str, version: str, reason: str) -> None:
        supervisor.rollback(model, version, reason=reason, by="drift")

    return rollback


def _answer_cache(
    options: ResolutionCacheOptions,
    specs: Mapping[str, ModelSpec],
    feed: ChangeFeed,
    *,
    overrides: bool,
    clock: Callable[[], float],
) -> AnswerCache | None:
    """The resolution cache, following the change feed (``None`` when it is turned off)."""
    if not options.enabled:
        return None
    answers = AnswerCache(
        {
            name: [spec.flag_key] + ([spec.shadow_flag] if spec.shadow_flag else [])
            for name, spec in specs.items()
        },
        feed.client,
        max_entries=options.max_entries,
        ttl=options.ttl,
        trusted=options.trusted,
        with_hooks=options.with_hooks,
        overrides=overrides,
        probe=feed.recover_if_quiet,
        clock=clock,
    )
    feed.watch(answers.source_changed)
    return answers


def _shadow_executor(
    options: Options,
    registry: Registry,
    keeper: VersionKeeper,
    loaders: Mapping[str, Loader] | None,
) -> ShadowExecutor | None:
    """Worker processes for ``executor="process"``; ``None`` runs shadows on their threads."""
    chosen = options.shadow.executor
    if chosen == "thread":
        return None
    if chosen != "process":
        raise ValueError(f"shadow executor must be 'thread' or 'process', not {chosen!r}")
    cached = options.cache
    if cached.artifacts is not None:
        raise ValueError(
            "the shadow executor 'process' builds its own artifact store in the worker from "
            "cache_dir and max_artifact_bytes; a configured artifacts= store cannot be sent there"
        )
    from modelflags.serving.shadow_process import ProcessShadow, WorkerSetup

    def load_failed(model: str, version: str, cause: str) -> None:
        error = VersionLoadError(cause, model=model, version=version)
        keeper.failed(model, version, error, stage="shadow load", served=None)

    setup = WorkerSetup(
        registry.models,
        cache_dir=None if cached.cache_dir is None else os.fspath(cached.cache_dir),
        max_artifact_bytes=cached.max_artifact_bytes,
        loaders=loaders,
    )
    return ProcessShadow(setup, load_failed=load_failed, timeout=options.shadow.timeout)


def _decision_log(options: AuditOptions) -> DecisionLog | None:
    chosen = options.decision_log
    if chosen is None or isinstance(chosen, DecisionLog):
        return chosen
    return DecisionLog(chosen, sample=options.sample)
