"""Assembly: the parts one :class:`~modelflags.ModelFlags` is made of, wired together.

Every part gets what it needs through its constructor (narrow interfaces, bound methods of the
serving core's parts), never the facade. The order below is the order of dependence: events and
the change feed first, then resolution, health and the version keeper, then the serving policy
and what runs beside it (shadow, prewarm), then supervision (metrics and guardrails).
"""

from __future__ import annotations

import os
import random as _random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from openfeature import api
from openfeature.client import OpenFeatureClient

from modelflags.artifacts import ArtifactStore, Loader, LoaderRegistry
from modelflags.options import AuditOptions, Options
from modelflags.overrides import OVERRIDES_ENV, overrides_layer
from modelflags.registry import Registry
from modelflags.rollout.supervision import Supervisor
from modelflags.serving.cache import ModelCache
from modelflags.serving.changes import ChangeFeed
from modelflags.serving.health import Backoff, Health
from modelflags.serving.policy import ModelEntry, ServingPolicy
from modelflags.serving.prewarm import ContextRing, Prewarmer
from modelflags.serving.resolution import OverrideSource, Resolver
from modelflags.serving.shadow import ShadowRunner
from modelflags.serving.versions import VersionKeeper
from modelflags.telemetry.decision_log import DecisionLog
from modelflags.telemetry.events import EventDispatcher, Listener
from modelflags.telemetry.status import ModelStatus, model_status

__all__ = ["Parts", "assemble"]


@dataclass(frozen=True)
class Parts:
    """The parts of one ModelFlags instance."""

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

    def status(self) -> dict[str, ModelStatus]:
        """Every model's status, from snapshots of the parts."""
        keeper, supervisor = self.keeper, self.supervisor
        cached = keeper.cache.snapshot()
        now = keeper.health.now()
        source = self.feed.source_status()
        extension_errors = {
            "listeners": self.events.listener_errors,
            "decision_log": 0 if self.audit is None else self.audit.dropped,
            **({} if supervisor is None else supervisor.extension_errors()),
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
            )
            for name, model in self.policy.models.items()
        }

    def close(self) -> None:
        """Stop every background part and release resources, the change feed first."""
        self.feed.close()
        if self.policy.prewarmer is not None:
            self.policy.prewarmer.close()
        if self.supervisor is not None:
            self.supervisor.close()
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
    on_change: Callable[[frozenset[str] | None], None],
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
    specs = registry.models
    events = EventDispatcher(listeners)
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
    cached = options.cache
    keeper = VersionKeeper(
        specs,
        health=health,
        cache=ModelCache(max_models=cached.max_models, max_bytes=cached.max_bytes),
        artifacts=cached.artifacts
        or ArtifactStore(cache_dir=cached.cache_dir, max_bytes=cached.max_artifact_bytes),
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
        models, resolver=resolver, keeper=keeper, shadow=shadow, decisions=audit, random=random
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
        metrics=rollout.metrics,
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
    return Parts(registry, events, feed, resolver, layer, keeper, shadow, policy, supervisor, audit)


def _decision_log(options: AuditOptions) -> DecisionLog | None:
    chosen = options.decision_log
    if chosen is None or isinstance(chosen, DecisionLog):
        return chosen
    return DecisionLog(chosen, sample=options.sample)
