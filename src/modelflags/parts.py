"""The parts of one :class:`~modelflags.ModelFlags`, and what is done to all of them at once.

:class:`Parts` holds what :func:`~modelflags.assembly.assemble` made and wired: its status, flush,
release, flag-change and close operations each reach every part that takes part, in the right
order. Open instances are kept weakly (:func:`live_parts`) so that a fork can reset them in the
child (``os.register_at_fork``) and test support can tell them of flag changes it makes.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelflags.catalog import Catalog
from modelflags.registry import Registry
from modelflags.rollout.drift import DriftWatch
from modelflags.rollout.promotion import release_moved_rollbacks
from modelflags.rollout.supervision import Supervisor
from modelflags.serving.changes import ChangeFeed
from modelflags.serving.policy import ServingPolicy
from modelflags.serving.resolution import OverrideSource, Resolver
from modelflags.serving.shadow import ShadowRunner
from modelflags.serving.versions import VersionKeeper
from modelflags.telemetry.decision_log import DecisionLog
from modelflags.telemetry.events import EventDispatcher
from modelflags.telemetry.status import ModelStatus, model_status

if TYPE_CHECKING:
    from modelflags.sources import VersionSources

__all__ = ["Parts", "live_parts"]

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
        answers = self.resolver.answers
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
                resolution_cache=None if answers is None else answers.report(name),
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
        """Wait for background loads, shadow calls and sampled inputs (judged for drift), then
        events and decision-log lines; False on timeout. (Actions are on disk already: the
        decision log writes them before they return.)"""
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        audit = self.audit
        prewarmer = self.policy.prewarmer
        if prewarmer is not None and not prewarmer.flush(remaining()):
            return False
        if not self.shadow.flush(remaining()):
            return False
        if self.drift is not None and not self.drift.flush(remaining()):
            return False
        if not self.events.flush(remaining()):
            return False
        return audit is None or audit.flush(remaining())

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


def _drift(drift: DriftWatch, name: str) -> dict[str, object]:
    return {"drift": drift.status(name)}


_LIVE: weakref.WeakSet[Parts] = weakref.WeakSet()
"""The parts of every open ModelFlags of the process (weakly: they never keep one alive)."""


def live_parts() -> list[Parts]:
    """The parts of every open ModelFlags of the process now (test support tells them of flag
    changes it makes)."""
    return list(_LIVE)


def _after_fork_in_child() -> None:
    for parts in list(_LIVE):
        try:
            parts.reset_after_fork()
        except Exception:  # one broken instance must not leave the others broken too
            logger.exception("modelflags: resetting %r after fork failed", parts)


if hasattr(os, "register_at_fork"):  # not on Windows, where there is no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
