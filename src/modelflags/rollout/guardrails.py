"""Guardrails: rules a candidate version must keep, and the watch that reports sustained breaches.

A model's rules come from its registry entry::

    [models.recommender.guardrails]
    max_error_rate = 0.02                             # share of calls that raise, 0..1
    max_p95_latency_ms = 100                          # 95th percentile of call latency
    max_outcome_drop = { name = "click", relative = 0.05 }  # mean 5% below the LKG's
    min_requests = 200                                # no verdict on less traffic than this
    sustained_s = 60                                  # a breach must last this long to fire
    action = "rollback"                               # or "alert"
    window_s = 60                                     # the sliding window the rules look at

:class:`Guardrails` is the mechanism: it reads :class:`~modelflags.metrics.Metrics`, tracks since
when each rule has been breached for each candidate version, and returns a :class:`Breach` once a
breach has held for ``sustained_s``. What to do about it (roll back, alert) is the caller's policy;
``action`` is carried along so the caller knows what the registry asked for.

Rules and their traffic gates:

- ``max_error_rate``: the candidate's error rate in the window is above it: its errors (failed
  loads included) over the calls it ran, leaving out those the last known good version answered
  while it was quarantined, rolled back or loading (absolute: needs ``min_requests`` calls asked
  of the candidate, at least one of which it ran).
- ``max_p95_latency_ms``: the candidate's p95 latency in the window is above it (absolute: needs
  ``min_requests`` calls the candidate ran).
- ``max_outcome_drop``: the candidate's mean of the outcome is lower than the last known good
  version's by more than ``relative`` of the latter's magnitude, over the same window
  (comparative: needs ``min_requests`` values of the outcome from both versions).

A check with too little traffic gives no verdict, and no verdict breaks a breach's continuity
just as a recovery does: the breach has to hold again for ``sustained_s`` from its next start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from modelflags.registry.guardrails import RULES, GuardrailRules, Rule
from modelflags.rollout.metrics import Metrics, VersionMetrics
from modelflags.telemetry.events import Breach
from modelflags.telemetry.status import RuleState

__all__ = ["Guardrails", "VersionVerdict"]


@dataclass(frozen=True, slots=True)
class VersionVerdict:
    """How a candidate version stood at the last check.

    ``breaching`` names the rules broken then (empty: holding, or no verdict for lack of traffic;
    ``requests`` tells which); ``since`` is when the oldest of those breaches started; ``fired``
    is true once a breach was reported, until :meth:`Guardrails.reset`.
    """

    version: str
    breaching: tuple[Rule, ...]
    since: float | None
    fired: bool
    requests: int = 0
    checked_at: float | None = None


class _State:
    __slots__ = ("checked_at", "fired", "lkg", "readings", "requests", "since")

    def __init__(self) -> None:
        self.since: dict[Rule, float] = {}
        self.fired = False
        self.requests = 0
        self.checked_at: float | None = None
        self.readings: dict[Rule, _Reading] = {}
        self.lkg = ""


@dataclass(frozen=True, slots=True)
class _Reading:
    observed: float
    threshold: float
    lkg_observed: float | None
    breached: bool = True
    candidate_n: int = 0
    baseline_n: int = 0


class Guardrails:
    """Watches candidate versions against their model's :class:`GuardrailRules`.

    ``rules`` maps model names to their rules (models without any are never checked); each rule's
    ``window_s`` must fit in the window ``metrics`` keeps. ``clock`` must be the clock ``metrics``
    uses. Safe to share between threads; a check merges a few histograms per version and is cheap
    enough for once a second per model.
    """

    def __init__(
        self,
        rules: Mapping[str, GuardrailRules],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for model, model_rules in rules.items():
            if model_rules.window_s > metrics.window_s * (1 + 1e-9):
                raise ValueError(
                    f"model {model!r}: guardrails window_s {model_rules.window_s:g} s is longer "
                    f"than the metrics window ({metrics.window_s:g} s)"
                )
        self._rules = dict(rules)
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, _State]] = {}

    @property
    def rules(self) -> Mapping[str, GuardrailRules]:
        """The rules by model name."""
        return self._rules

    def check(self, model: str, lkg: str, versions: Iterable[str]) -> list[Breach]:
        """Evaluate every version in ``versions`` but ``lkg``; return the breaches due now.

        A version fires once: the check at which one of its breaches has held for ``sustained_s``
        returns a :class:`Breach` for each rule due at that moment, and later checks return none
        for that version until :meth:`reset`.
        """
        rules = self._rules.get(model)
        if rules is None:
            return []
        now = self._clock()
        snapshot = self._metrics.snapshot(model, window_s=rules.window_s)
        baseline = snapshot.get(lkg)
        breaches: list[Breach] = []
        with self._lock:
            states = self._states.setdefault(model, {})
            seen: set[str] = set()
            for version in versions:
                if version == lkg or version in seen:
                    continue
                seen.add(version)
                current = snapshot.get(version)
                state = states.get(version)
                if state is None:
                    state = states[version] = _State()
                state.readings = _readings(rules, current, baseline)
                state.lkg = lkg
                readings = {rule: got for rule, got in state.readings.items() if got.breached}
                for rule in [rule for rule in state.since if rule not in readings]:
                    del state.since[rule]
                for rule in readings:
                    state.since.setdefault(rule, now)
                state.requests = 0 if current is None else current.requests
                state.checked_at = now
                due = [rule for rule in readings if now - state.since[rule] >= rules.sustained_s]
                if not due or state.fired:
                    continue
                state.fired = True
                breaches.extend(
                    Breach(
                        model=model,
                        version=version,
                        lkg=lkg,
                        rule=rule,
                        observed=readings[rule].observed,
                        threshold=readings[rule].threshold,
                        lkg_observed=readings[rule].lkg_observed,
                        window_s=(current.window_s if current is not None else rules.window_s),
                        since=state.since[rule],
                        fired_at=now,
                        requests=state.requests,
                        lkg_requests=0 if baseline is None else baseline.requests,
                        action=rules.action,
                    )
                    for rule in due
                )
            for version, state in states.items():
                if version not in seen:  # not a candidate now: continuity is broken
                    state.since.clear()
        return breaches

    def state(self, model: str) -> dict[str, VersionVerdict]:
        """Each checked candidate version of ``model`` as the last check saw it."""
        with self._lock:
            return {
                version: VersionVerdict(
                    version=version,
                    breaching=tuple(rule for rule in RULES if rule in state.since),
                    since=min(state.since.values()) if state.since else None,
                    fired=state.fired,
                    requests=state.requests,
                    checked_at=state.checked_at,
                )
                for version, state in self._states.get(model, {}).items()
            }

    def report(self, model: str) -> list[RuleState]:
        """Every rule of every checked candidate of ``model``, as the last check saw it."""
        rules = self._rules.get(model)
        if rules is None:
            return []
        states: list[RuleState] = []
        with self._lock:
            for version, state in sorted(self._states.get(model, {}).items()):
                for rule in RULES:
                    if getattr(rules, rule) is None or not state.lkg:
                        continue
                    got = state.readings.get(rule)
                    if got is None:
                        verdict = "waiting"
                    elif state.fired and got.breached:
                        verdict = "fired"
                    else:
                        verdict = "breaching" if got.breached else "holding"
                    drop = rules.max_outcome_drop
                    states.append(
                        RuleState(
                            rule=rule,
                            version=version,
                            lkg=state.lkg,
                            verdict=verdict,
                            estimate=None if got is None else got.observed,
                            lower=None,
                            upper=None,
                            limit=None if got is None else got.threshold,
                            lkg_estimate=None if got is None else got.lkg_observed,
                            candidate_n=0 if got is None else got.candidate_n,
                            baseline_n=0 if got is None else got.baseline_n,
                            method="threshold",
                            metric=drop.name if rule == "max_outcome_drop" and drop else None,
                        )
                    )
        return states

    def reset(self, model: str, version: str | None = None) -> None:
        """Forget the breaches of ``version`` (every version without one), so it may fire again.

        Call it when a person releases a rollback and lets the version serve again.
        """
        with self._lock:
            states = self._states.get(model, {})
            if version is None:
                states.clear()
            else:
                states.pop(version, None)


def _readings(
    rules: GuardrailRules, current: VersionMetrics | None, baseline: VersionMetrics | None
) -> dict[Rule, _Reading]:
    """What each rule reads for ``current`` against ``baseline``; rules without a verdict (too
    little traffic) are absent."""
    readings: dict[Rule, _Reading] = {}
    if current is None:
        return readings
    base = baseline if baseline is not None and baseline.requests > 0 else None
    base_n = 0 if base is None else base.requests
    limit = rules.max_error_rate
    if limit is not None and current.requests >= rules.min_requests and current.ran > 0:
        readings["max_error_rate"] = _Reading(
            current.error_rate,
            limit,
            None if base is None else base.error_rate,
            current.error_rate > limit,
            current.ran,
            base_n,
        )
    latency = rules.max_p95_latency_ms
    if (
        latency is not None
        and current.ran >= rules.min_requests
        and current.latency_p95 is not None
    ):
        p95_ms = current.latency_p95 * 1000.0
        base_ms = None if base is None or base.latency_p95 is None else base.latency_p95 * 1e3
        readings["max_p95_latency_ms"] = _Reading(
            p95_ms, latency, base_ms, p95_ms > latency, current.ran, base_n
        )
    drop = rules.max_outcome_drop
    if drop is not None and baseline is not None:
        mine = current.outcomes.get(drop.name)
        theirs = baseline.outcomes.get(drop.name)
        if (
            mine is not None
            and theirs is not None
            and mine.count >= rules.min_requests
            and theirs.count >= rules.min_requests
        ):
            lowest = theirs.mean - drop.relative * abs(theirs.mean)
            readings["max_outcome_drop"] = _Reading(
                mine.mean, lowest, theirs.mean, mine.mean < lowest, mine.count, theirs.count
            )
    return readings
