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
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from openfeature import api
from openfeature.client import OpenFeatureClient

from modelflags.artifacts import ArtifactStore, Loader, LoaderRegistry
from modelflags.catalog import Catalog
from modelflags.options import AuditOptions, Options, validate_input_default
from modelflags.overrides import OVERRIDES_ENV, overrides_layer
from modelflags.registry import ModelSpec, Registry
from modelflags.rollout.drift import DriftWatch
from modelflags.rollout.promotion import release_moved_rollbacks
from modelflags.rollout.supervision import Supervisor
from modelflags.serving.cache import ModelCache
from modelflags.serving.changes import ChangeFeed
from modelflags.serving.health import Backoff, Health
from modelflags.serving.inputs import InputGate
from modelflags.serving.policy import ModelEntry, ServingPolicy
from modelflags.serving.prewarm import ContextRing, Prewarmer
from modelflags.serving.resolution import OverrideSource, Resolver
from modelflags.serving.shadow import ShadowRunner
from modelflags.serving.stages import StageGate, allowed_stages
from modelflags.serving.versions import VersionKeeper
from modelflags.telemetry.decision_log import DecisionLog
from modelflags.telemetry.events import EventDispatcher, Listener
from modelflags.telemetry.status import ModelStatus, model_status

if TYPE_CHECKING:
    from modelflags.sources import VersionSources

__all__ = ["Catalog", "Parts", "assemble"]  # Catalog: re-exported from modelflags.catalog

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Parts:
    """The parts of one ModelFlags instance.

    Made before ``os.fork()`` (gunicorn ``--preload``, multiprocessing), they keep working in the
    child: :meth:`reset_after_fork` runs there, replacing every lock another thread may have held
    and restarting the background threads, which do not survive a fork.
    """

    registry: Registry
    events: EventDispatcher
    feed: ChangeFeed
    resolver: Resolver
    overrides: OverrideSource | None
    keeper: VersionKeeper
    shadow: ShadowRunner
    policy: ServingPolicy
    supervisor: Supervisor | None
    audit: DecisionLog | None
    drift: DriftWatch | None = None
    sources: VersionSources | None = None
    catalog: Catalog | None = None

    def current_registry(self) -> Registry:
        """The registry served now: models from MLflow as of their last refresh."""
        return self.registry if self.catalog is None else self.catalog.registry

    def status(self) -> dict[str, ModelStatus]:
        """Every model's status, from snapshots of the parts."""
        keeper, supervisor, drift = self.keeper, self.supervisor, self.drift
        cached = keeper.cache.snapshot()
        now = keeper.health.now()
        source = self.feed.source_status()
        extension_errors = {
            "listeners": self.events.listener_errors,
            "decision_log": 0 if self.audit is None else self.audit.dropped,
            **({} if supervisor is None else supervisor.extension_errors()),
            **({} if drift is None else {"drift_exporters": drift.exporter_errors}),
        }
        return {
            name: model_status(
                name,
                flag=model.flag_key,
                lkg=keeper.health.lkg(name),
                default_version=model.spec.default_version,
                cached=cached,
                quarantined=[
                    (q.version, q.cause, q.failures, q.until - now)
                    for q in keeper.health.quarantined(name)
                ],
                flag_errors=self.resolver.errors(name),
                rolled_back=() if supervisor is None else supervisor.rolled_back(name),
                guardrails=() if supervisor is None else supervisor.report(name),
                proposals=() if supervisor is None else supervisor.proposals.pending(name),
                flag_source=source,
                extension_errors=extension_errors,
                extra=self._extra(name),
            )
            for name, model in self.policy.models.items()
        }

    def _extra(self, name: str) -> dict[str, object] | None:
        drift, sources = self.drift, self.sources
        extra: dict[str, object] = {}
        if drift is not None and name in drift.models:
            extra.update(_drift(drift, name))
        source = None if sources is None else sources.status(name)
        if source is not None:
            extra["mlflow"] = source
        return extra or None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for shadow calls and sampled inputs (judged for drift), then events and
        decision-log lines; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if not self.shadow.flush(timeout):
            return False
        if self.drift is not None and not self.drift.flush(remaining()):
            return False
        if not self.events.flush(remaining()):
            return False
        return self.audit is None or self.audit.flush(remaining())

    def release(self, name: str, version: str | None, *, by: str, reason: str) -> list[str]:
        """Lift quarantines and rollbacks of ``version`` (every version without one) of model
        ``name``; each release is written to the decision log with who and why."""
        lifted = self.keeper.health.release(name, version)
        released: list[str] = []
        if self.supervisor is not None:
            versions = None if version is None else [version]
            released = self.supervisor.release(name, versions, by=by, reason=reason)
        if self.audit is not None:
            for each in sorted(set(lifted) - set(released)):
                self.audit.action("release", name, each, by=by, reason=reason)
        return sorted({*lifted, *released})

    def flags_changed(self, changed: frozenset[str] | None) -> None:
        """A provider reports changed flags (``None``: it did not say which): the serving
        policy lifts back-offs and prewarms; rollbacks the flag no longer selects are lifted."""
        affected = self.policy.flags_changed(changed)
        prewarmer = self.policy.prewarmer
        if self.supervisor is not None and prewarmer is not None:
            for name in affected:
                contexts = prewarmer.ring(name).snapshot()
                release_moved_rollbacks(self.supervisor, name, contexts, self.policy.selects)

    def reset_after_fork(self) -> None:
        """In a child process just forked: fresh locks, queues and background threads."""
        if self.sources is not None:
            self.sources.reset_after_fork()
        self.events.reset_after_fork()
        self.feed.reset_after_fork()
        self.resolver.reset_after_fork()
        self.keeper.health.reset_after_fork()
        self.keeper.cache.reset_after_fork()
        self.shadow.reset_after_fork()
        if self.policy.prewarmer is not None:
            self.policy.prewarmer.reset_after_fork()
        if self.supervisor is not None:
            self.supervisor.reset_after_fork()
        if self.audit is not None:
            self.audit.reset_after_fork()
        if self.drift is not None:
            self.drift.reset_after_fork()

    def close(self) -> None:
        """Stop every background part and release resources, the change feed first."""
        _LIVE.discard(self)
        if self.sources is not None:
            self.sources.close()
        self.feed.close()
        if self.policy.prewarmer is not None:
            self.policy.prewarmer.close()
        if self.supervisor is not None:
            self.supervisor.close()
        if self.drift is not None:
            self.drift.close()
        if self.audit is not None:
            self.audit.close()
        if self.overrides is not None:
            self.overrides.shutdown()
        self.resolver.close()
        self.shadow.close()
        self.events.close()
        self.keeper.artifacts.close()


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
    sources = None
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
    resolver = Resolver(feed.client, overrides=layer, timeout=evaluation_timeout)
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
            policy.selects, keeper.needs_load, keeper.prewarm, events.emit, sample=warm.sample
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


def _drift(drift: DriftWatch, name: str) -> dict[str, object]:
    return {"drift": drift.status(name)}


def _decision_log(options: AuditOptions) -> DecisionLog | None:
    chosen = options.decision_log
    if chosen is None or isinstance(chosen, DecisionLog):
        return chosen
    return DecisionLog(chosen, sample=options.sample)


_LIVE: weakref.WeakSet[Parts] = weakref.WeakSet()
"""The parts of every open ModelFlags of the process (weakly: they never keep one alive)."""


def _after_fork_in_child() -> None:
    for parts in list(_LIVE):
        try:
            parts.reset_after_fork()
        except Exception:  # one broken instance must not leave the others broken too
            logger.exception("modelflags: resetting %r after fork failed", parts)


if hasattr(os, "register_at_fork"):  # not on Windows, where there is no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
