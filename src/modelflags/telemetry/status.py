"""``ModelFlags.status()``: what an operator needs at 3 a.m., as frozen records.

The records are assembled from snapshots the serving core and the rollout layer hand over as plain
values; nothing here reads live state.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from modelflags.telemetry.evidence import Evidence

__all__ = [
    "FlagSourceStatus",
    "ModelStatus",
    "ProposalStatus",
    "QuarantineStatus",
    "ResolutionCacheStatus",
    "RuleState",
    "model_status",
]


@dataclass(frozen=True, slots=True)
class QuarantineStatus:
    """A quarantined version: why, how many failures in a row, and seconds until it is retried."""

    version: str
    cause: str
    failures: int
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class FlagSourceStatus:
    """The health of the flag source (the OpenFeature provider) as modelflags sees it.

    ``state`` is ``"ready"``, ``"error"``, ``"stale"`` or ``"not set"`` (no provider: every
    request serves the default); ``since`` is the wall-clock time (seconds since the epoch) it
    entered that state; ``errors`` counts the provider errors seen; ``last_error`` is the last
    one's message (bounded).
    """

    provider: str
    state: str
    since: float | None
    errors: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class RuleState:
    """The live state of one guardrail rule for one candidate version, against the LKG.

    ``rule`` names the rule (``"max_outcome_drop"``, ...; ``metric`` what it watches: the
    outcome's name, or ``"p95"`` / ``"mean"`` for latency). ``estimate``, ``lower`` and ``upper``
    are the sequential test's estimate and confidence interval so far, and ``limit`` the value
    the interval must pass wholly for a breach, all in the units ``quantity`` names (``"relative
    change of the mean"``: -0.12 is 12% below the LKG; ``"rate"`` or ``"p95"`` for the absolute
    limits); ``None`` while undefined. ``observed`` and ``lkg_estimate`` are the candidate's and
    the LKG's figures in the rule's natural units (error rate, milliseconds, outcome mean).
    ``alpha`` is the share of the model's false-alarm budget this rule has; ``method`` names the
    test. ``verdict`` is ``"holding"``, ``"breaching"``, ``"fired"`` or ``"waiting"`` (not
    enough data for a verdict yet; ``note`` says what it waits for); ``candidate_n`` and
    ``baseline_n`` count the observations on each side since the comparison started.
    """

    rule: str
    version: str
    lkg: str
    verdict: str
    estimate: float | None
    lower: float | None
    upper: float | None
    limit: float | None
    lkg_estimate: float | None
    candidate_n: int
    baseline_n: int
    alpha: float | None = None
    method: str = ""
    metric: str | None = None
    quantity: str = ""
    observed: float | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class ProposalStatus:
    """A rollback waiting for a person: which version, the rule that breached, and what happens
    if nobody decides (``expires_in_s`` is ``None`` without a timeout). ``evidence`` is the
    breach's statistics."""

    version: str
    lkg: str
    rule: str
    observed: float
    threshold: float
    expires_in_s: float | None
    on_timeout: str
    evidence: Evidence | None = None


@dataclass(frozen=True, slots=True)
class ResolutionCacheStatus:
    """One model's resolution cache (recent flag answers reused until the flags change).

    ``state``: ``"on"``, ``"paused"`` (the flag source is in error or stale: nothing is reused or
    kept until it is ready) or ``"bypassed"`` (an OpenFeature hook or a transaction context
    propagator is set). ``entries`` of at most ``max_entries``; ``hits`` and ``misses`` count
    lookups answered from the cache and those that asked the provider while reuse was possible
    (hits are counted without a lock: approximate under concurrency); ``uncached`` counts answers
    that could not be kept (errors, flags whose rules read the time, providers modelflags cannot
    trust); ``invalidations`` counts the times the table was emptied (change events, provider
    errors, pins); ``ttl_s`` is the staleness bound for providers without change events.
    """

    state: str
    entries: int
    max_entries: int
    hits: int
    misses: int
    uncached: int
    invalidations: int
    ttl_s: float | None

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups that could have hit (``None`` before any)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One model: its flag, LKG and default, what is loaded (bytes), pinned, quarantined, and
    rolled back by a guardrail or by hand; how its flag and flag source are doing; and how
    often an extension (listener, exporter, actuator, decision log) failed; the resolution
    cache's size and hit rate (``None`` when it is off)."""

    name: str
    flag: str
    lkg: str
    default_version: str
    loaded: Mapping[str, int]
    pinned: tuple[str, ...]
    quarantined: tuple[QuarantineStatus, ...]
    flag_errors: int
    last_flag_error: str | None
    rolled_back: tuple[str, ...] = ()
    guardrails: tuple[RuleState, ...] = ()
    proposals: tuple[ProposalStatus, ...] = ()
    flag_source: FlagSourceStatus | None = None
    extension_errors: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    resolution_cache: ResolutionCacheStatus | None = None


def model_status(
    name: str,
    *,
    flag: str,
    lkg: str,
    default_version: str,
    cached: Mapping[Hashable, tuple[int, bool]],
    quarantined: Iterable[tuple[str, str, int, float]],
    flag_errors: tuple[int, str | None],
    rolled_back: Iterable[str] = (),
    guardrails: Iterable[RuleState] = (),
    proposals: Iterable[ProposalStatus] = (),
    flag_source: FlagSourceStatus | None = None,
    extension_errors: Mapping[str, int] | None = None,
    extra: Mapping[str, Any] | None = None,
    resolution_cache: ResolutionCacheStatus | None = None,
) -> ModelStatus:
    """Assemble the status of model ``name`` from snapshots.

    ``cached`` maps cache keys ``(model, version)`` to ``(bytes, pinned)``; ``quarantined`` holds
    ``(version, cause, failures, seconds to retry)``.
    """
    loaded: dict[str, int] = {}
    pinned: list[str] = []
    for key, (nbytes, is_pinned) in cached.items():
        if isinstance(key, tuple) and len(key) == 2 and key[0] == name:
            loaded[str(key[1])] = nbytes
            if is_pinned:
                pinned.append(str(key[1]))
    return ModelStatus(
        name=name,
        flag=flag,
        lkg=lkg,
        default_version=default_version,
        loaded=dict(sorted(loaded.items())),
        pinned=tuple(sorted(pinned)),
        quarantined=tuple(
            QuarantineStatus(version, cause, failures, max(0.0, retry_in))
            for version, cause, failures, retry_in in quarantined
        ),
        flag_errors=flag_errors[0],
        last_flag_error=flag_errors[1],
        rolled_back=tuple(sorted(rolled_back)),
        guardrails=tuple(guardrails),
        proposals=tuple(proposals),
        flag_source=flag_source,
        extension_errors=MappingProxyType(dict(extension_errors or {})),
        extra=MappingProxyType(dict(extra or {})),
        resolution_cache=resolution_cache,
    )
