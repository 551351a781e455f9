"""Option groups of :class:`~modelflags.ModelFlags`, so a reader sees the parts it is made of.

``ModelFlags("registry.toml")`` is the whole set-up for the simple case. Each group below tunes
one part; the flat keyword options of earlier releases (``max_models=``, ``shadow_workers=``,
``decision_log=``, ...) still work and map onto these groups.

One process-wide default lives here: whether instances that were not told validate their
inputs (:func:`set_validate_input_default`; the pytest plugin turns it on for a test session).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from modelflags.artifacts import ArtifactStore

if TYPE_CHECKING:
    from modelflags.rollout.actuators import Actuator
    from modelflags.rollout.metrics import MetricsRecorder
    from modelflags.telemetry.decision_log import DecisionLog

__all__ = [
    "AuditOptions",
    "CacheOptions",
    "GovernanceOptions",
    "Options",
    "PrewarmOptions",
    "ResolutionCacheOptions",
    "RolloutOptions",
    "ShadowOptions",
    "gather",
    "set_validate_input_default",
    "validate_input_default",
]


@dataclass(frozen=True, kw_only=True)
class CacheOptions:
    """Loaded versions and artifacts.

    ``max_models`` / ``max_bytes`` bound the cache of loaded versions (each model's LKG is pinned
    beside it); ``cache_dir`` is where remote artifacts are downloaded (default
    ``MODELFLAGS_CACHE_DIR``, else the user cache folder); ``max_artifact_bytes`` refuses larger
    artifacts; or ``artifacts``, a configured :class:`~modelflags.artifacts.ArtifactStore`
    instead of both.
    """

    max_models: int = 8
    max_bytes: int | None = None
    cache_dir: str | os.PathLike[str] | None = None
    max_artifact_bytes: int | None = None
    artifacts: ArtifactStore | None = None


@dataclass(frozen=True, kw_only=True)
class ShadowOptions:
    """Shadow work: ``workers`` background threads, at most ``queue`` calls waiting.

    ``executor`` is where shadow inference runs: ``"thread"`` (the default) on those threads, in
    this interpreter; ``"process"``: in one worker process per thread (started with ``spawn``),
    so a CPU-heavy shadow does not compete with requests for the interpreter lock. The worker
    loads the shadow version itself through the same verified artifact path (sha256 checked);
    arguments and results are pickled across, so both must be picklable, and so must custom
    loaders. ``timeout`` is the seconds a call in a worker process may take before the process
    is replaced (the call counts as an error).
    """

    workers: int = 1
    queue: int = 256
    executor: Literal["thread", "process"] = "thread"
    timeout: float = 30.0


@dataclass(frozen=True, kw_only=True)
class ResolutionCacheOptions:
    """The resolution cache: recent flag answers per model, reused until the flags change.

    On by default, where modelflags can prove an answer reusable (see ``serving/cacheable.py``):
    flagd in FILE and in-process modes, OpenFeature's in-memory provider and the override layer,
    all of which announce every change. ``max_entries`` bounds each model's table. ``ttl`` is a
    staleness bound for providers that announce no changes (OFREP, flagd RPC, your own): their
    answers are then reused for at most ``ttl`` seconds, so a flag change (or a rule reading the
    time) reaches requests at most ``ttl`` late; ``None`` (the default) does not cache them.
    ``trusted`` names providers (by their metadata name, such as ``"Unleash Provider"``) whose
    answers are reused though modelflags cannot prove it safe: you vouch that the flags read
    use neither time nor randomness, and accept that the provider does not see cache hits
    (Unleash then stops counting them in its metrics). ``with_hooks`` keeps the cache on while
    OpenFeature API or client hooks are registered; they then do not run on a hit.
    """

    enabled: bool = True
    max_entries: int = 10_000
    ttl: float | None = None
    trusted: frozenset[str] = frozenset()
    with_hooks: bool = False


@dataclass(frozen=True, kw_only=True)
class PrewarmOptions:
    """Load what changed flags select before requests do, from ``sample`` recent contexts."""

    enabled: bool = True
    sample: int = 64


@dataclass(frozen=True, kw_only=True)
class RolloutOptions:
    """Metrics, guardrails and rollbacks.

    ``metrics`` keeps per-version metrics for every model (models with guardrails always have
    them); ``exporters`` receive every call and outcome too (OpenTelemetry, Prometheus);
    ``actuator`` rolls back at the flag's source; ``guardrail_interval`` is the seconds between
    background checks.
    """

    metrics: bool = False
    exporters: Sequence[MetricsRecorder] = ()
    actuator: Actuator | None = None
    guardrail_interval: float = 1.0


@dataclass(frozen=True, kw_only=True)
class AuditOptions:
    """The decision log: a JSON-lines file (or a configured ``DecisionLog``) and its sample."""

    decision_log: str | os.PathLike[str] | DecisionLog | None = None
    sample: float = 1.0


@dataclass(frozen=True, kw_only=True)
class GovernanceOptions:
    """Which versions may serve here, and what is checked of the input.

    ``allowed_stages``: the stages whose versions this process serves (a list, or a comma
    separated string); ``None`` reads ``MODELFLAGS_ALLOWED_STAGES``, else every stage but
    ``archived`` (which never serves). ``validate_input``: check each call's input against the
    model's declared input (``None``: the process default, off unless the pytest plugin turned it
    on). ``drift_queue``: sampled inputs waiting for the drift watch, beyond which they are dropped.
    """

    allowed_stages: Iterable[str] | str | None = None
    validate_input: bool | None = None
    drift_queue: int = 256


_validate_input_default = False


def validate_input_default() -> bool:
    """Whether instances made without ``validate_input=`` validate their inputs."""
    return _validate_input_default


def set_validate_input_default(value: bool) -> bool:
    """Set the process-wide default of ``validate_input``; returns the previous one. Instances
    read it when they are made."""
    global _validate_input_default
    previous, _validate_input_default = _validate_input_default, bool(value)
    return previous


@dataclass(frozen=True, kw_only=True)
class Options:
    """Every group, after the flat options of earlier releases were mapped onto them."""

    cache: CacheOptions = field(default_factory=CacheOptions)
    shadow: ShadowOptions = field(default_factory=ShadowOptions)
    prewarm: PrewarmOptions = field(default_factory=PrewarmOptions)
    rollout: RolloutOptions = field(default_factory=RolloutOptions)
    audit: AuditOptions = field(default_factory=AuditOptions)
    governance: GovernanceOptions = field(default_factory=GovernanceOptions)
    resolution: ResolutionCacheOptions = field(default_factory=ResolutionCacheOptions)


_FLAT: Mapping[str, tuple[str, str]] = {
    "max_models": ("cache", "max_models"),
    "max_bytes": ("cache", "max_bytes"),
    "cache_dir": ("cache", "cache_dir"),
    "max_artifact_bytes": ("cache", "max_artifact_bytes"),
    "artifacts": ("cache", "artifacts"),
    "shadow_workers": ("shadow", "workers"),
    "shadow_queue": ("shadow", "queue"),
    "shadow_executor": ("shadow", "executor"),
    "prewarm_sample": ("prewarm", "sample"),
    "metrics": ("rollout", "metrics"),
    "metrics_exporters": ("rollout", "exporters"),
    "actuator": ("rollout", "actuator"),
    "guardrail_interval": ("rollout", "guardrail_interval"),
    "decision_log": ("audit", "decision_log"),
    "decision_sample": ("audit", "sample"),
    "allowed_stages": ("governance", "allowed_stages"),
    "validate_input": ("governance", "validate_input"),
    "drift_queue": ("governance", "drift_queue"),
}


def gather(
    flat: Mapping[str, Any],
    *,
    cache: CacheOptions | None = None,
    shadow: ShadowOptions | None = None,
    prewarm: bool | PrewarmOptions = True,
    rollout: RolloutOptions | None = None,
    audit: AuditOptions | None = None,
    governance: GovernanceOptions | None = None,
    resolution_cache: bool | ResolutionCacheOptions = True,
) -> Options:
    """The option groups, with the flat options of earlier releases mapped onto them.

    ``resolution_cache`` is ``True``/``False`` or a :class:`ResolutionCacheOptions`. Raises
    ``TypeError`` for an unknown option, and when a flat option and its group are both given.
    """
    resolution = resolution_cache
    if isinstance(resolution, bool):
        resolution = ResolutionCacheOptions(enabled=resolution)
    elif not isinstance(resolution, ResolutionCacheOptions):
        raise TypeError(
            f"resolution_cache= takes True, False or ResolutionCacheOptions, not {resolution!r}"
        )
    groups: dict[str, Any] = {
        "cache": cache or CacheOptions(),
        "shadow": shadow or ShadowOptions(),
        "prewarm": prewarm
        if isinstance(prewarm, PrewarmOptions)
        else PrewarmOptions(enabled=bool(prewarm)),
        "rollout": rollout or RolloutOptions(),
        "audit": audit or AuditOptions(),
        "governance": governance or GovernanceOptions(),
        "resolution": resolution,
    }
    given = {
        "cache": cache,
        "shadow": shadow,
        "rollout": rollout,
        "audit": audit,
        "governance": governance,
    }
    changes: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        target = _FLAT.get(name)
        if target is None:
            known = ", ".join(sorted(_FLAT))
            raise TypeError(
                f"ModelFlags() got an unexpected option {name!r} (flat options: {known})"
            )
        group, attribute = target
        if given.get(group) is not None or (
            group == "prewarm" and isinstance(prewarm, PrewarmOptions)
        ):
            raise TypeError(f"pass {name}= or {group}=, not both")
        changes.setdefault(group, {})[attribute] = value
    cache_changes = changes.get("cache", {})
    if "artifacts" in cache_changes and (
        cache_changes.get("cache_dir") is not None
        or cache_changes.get("max_artifact_bytes") is not None
    ):
        raise ValueError("pass artifacts= or cache_dir=/max_artifact_bytes=, not both")
    for group, values in changes.items():
        groups[group] = replace(groups[group], **values)
    chosen = groups["cache"]
    if chosen.artifacts is not None and (
        chosen.cache_dir is not None or chosen.max_artifact_bytes is not None
    ):
        raise ValueError("pass artifacts= or cache_dir=/max_artifact_bytes=, not both")
    return Options(**groups)
