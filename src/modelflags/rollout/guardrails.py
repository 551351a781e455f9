"""Guardrails: rules a candidate version must keep, judged by sequential tests against the LKG.

A model's rules come from its registry entry (see :mod:`modelflags.registry.guardrails`)::

    [models.recommender.guardrails]
    max_outcome_drop = { name = "click", relative = 0.05 }        # against the LKG
    max_error_rate_increase = { relative = 0.5, absolute = 0.001 }
    max_latency_increase = { relative = 0.2, quantile = 0.95 }
    max_error_rate = 0.02                                         # absolute limits (SLOs)
    max_p95_latency_ms = 100
    alpha = 0.05
    action = "rollback"

:class:`Guardrails` is the mechanism: at each check it reads, for every candidate version, both
versions' running totals since the comparison started (:meth:`Metrics.comparison
<modelflags.rollout.metrics.Metrics.comparison>`), asks each rule's sequential test
(:mod:`modelflags.rollout.judges`) for its evidence, and returns a :class:`Breach` when a test's
whole confidence interval lies beyond the rule's tolerance. Over a whole comparison, however
often it is checked, the chance that a version that keeps its rules is reported is at most the
model's ``alpha``. What to do about a breach (roll back, alert, propose) is the caller's policy;
``action`` is carried along so the caller knows what the registry asked for.

Two optional extra conditions hold a breach back: ``min_requests`` (the candidate, and for a
comparative rule the LKG too, must have been asked that many requests since the comparison
started) and ``sustained_s`` (the breach must hold at every check for that long; a check without
it starts the wait over). Both only
remove breaches, so neither raises the false-alarm rate; both are off by default.

The comparison of a candidate starts with its first recorded call (or when it was last released)
and ends when the candidate is reset; a new LKG starts a new comparison (it is a new baseline).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from modelflags.registry.guardrails import GuardrailRules, Rule
from modelflags.rollout.judges import Judges, Panel, Reading
from modelflags.rollout.metrics import Metrics
from modelflags.rollout.totals import Totals
from modelflags.telemetry.events import Breach
from modelflags.telemetry.status import RuleState

__all__ = ["Guardrails", "VersionVerdict"]


@dataclass(frozen=True, slots=True)
class VersionVerdict:
    """How a candidate version stood at the last check.

    ``breaching`` names the rules broken then (empty: holding, or no verdict yet; ``requests``
    tells how much traffic it has seen since the comparison started); ``since`` is when the
    oldest of those breaches started; ``fired`` is true once a breach was reported, until
    :meth:`Guardrails.reset`. ``active`` is false when the version was not among the
    candidates at the last check of its model (no recent traffic: the flag moved away).
    ``suspect`` names the rules whose estimate is beyond their tolerance while the interval
    still reaches it (no breach yet, but no candidate to promote either).
    """

    version: str
    breaching: tuple[Rule, ...]
    since: float | None
    fired: bool
    requests: int = 0
    checked_at: float | None = None
    active: bool = True
    suspect: tuple[Rule, ...] = ()


class _State:
    """One candidate's comparison: its panel of tests, its readings, and its breaches."""

    __slots__ = (
        "active",
        "baseline",
        "checked_at",
        "fired",
        "lkg",
        "panel",
        "readings",
        "requests",
        "since",
    )

    def __init__(self, panel: Panel, lkg: str) -> None:
        self.panel = panel
        self.lkg = lkg
        self.since: dict[Rule, float] = {}
        self.fired = False
        self.requests = 0
        self.checked_at: float | None = None
        self.readings: list[Reading] = []
        self.baseline: Totals | None = None
        self.active = True


class Guardrails:
    """Watches candidate versions against their model's :class:`GuardrailRules`.

    ``rules`` maps model names to their rules (models without any are never checked); each
    model's ``window_s`` must fit in the window ``metrics`` keeps. ``clock`` must be the clock
    ``metrics`` uses. Safe to share between threads: checks are serialised by one lock, held
    while the tests run (no I/O, no user code); a check costs a few hundred microseconds per
    candidate and rule.
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
        self._judges = {model: Judges(model_rules) for model, model_rules in rules.items()}
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, _State]] = {}

    @property
    def rules(self) -> Mapping[str, GuardrailRules]:
        """The rules by model name."""
        return self._rules

    def judges(self, model: str) -> Judges | None:
        """The tests of ``model``'s rules (``None`` without rules)."""
        return self._judges.get(model)

    def check(self, model: str, lkg: str, versions: Iterable[str]) -> list[Breach]:
        """Judge every version in ``versions`` but ``lkg``; return the breaches due now.

        A version fires once: the check at which one of its breaches is due (its test breached,
        the extra conditions hold) returns a :class:`Breach` for each rule due at that moment,
        and later checks return none for that version until :meth:`reset`.
        """
        rules = self._rules.get(model)
        judges = self._judges.get(model)
        if rules is None or judges is None:
            return []
        breaches: list[Breach] = []
        with self._lock:
            now = self._clock()
            states = self._states.setdefault(model, {})
            seen: set[str] = set()
            for version in versions:
                if version == lkg or version in seen:
                    continue
                seen.add(version)
                state = states.get(version)
                if state is None or state.lkg != lkg:
                    fired = state is not None and state.fired
                    state = states[version] = _State(judges.panel(), lkg)
                    state.fired = fired
                candidate, baseline = self._metrics.comparison(model, version, lkg)
                state.readings = state.panel.judge(candidate, baseline)
                state.baseline = baseline
                state.requests = candidate.requests
                state.checked_at = now
                state.active = True
                enough = candidate.requests >= rules.min_requests
                due_readings = self._due(
                    rules, state, now, enough, enough and baseline.requests >= rules.min_requests
                )
                if not due_readings or state.fired:
                    continue
                state.fired = True
                breaches.extend(
                    _breach(
                        model,
                        version,
                        lkg,
                        rules,
                        reading,
                        state.since[reading.rule],
                        now,
                        candidate,
                        baseline,
                    )
                    for reading in due_readings
                )
            for version, state in states.items():
                if version not in seen:  # not a candidate now: continuity is broken
                    state.since.clear()
                    state.active = False
        return breaches

    @staticmethod
    def _due(
        rules: GuardrailRules, state: _State, now: float, alone: bool, both: bool
    ) -> list[Reading]:
        """Update since when each rule has breached; the first breaching reading of each rule
        that is due now. ``alone``: the candidate has ``min_requests``; ``both``: the LKG too."""
        breaching: dict[Rule, Reading] = {}
        for reading in state.readings:
            if reading.evidence.breached and (both if reading.comparative else alone):
                breaching.setdefault(reading.rule, reading)
        for rule in [rule for rule in state.since if rule not in breaching]:
            del state.since[rule]
        for rule in breaching:
            state.since.setdefault(rule, now)
        return [
            reading
            for rule, reading in breaching.items()
            if now - state.since[rule] >= rules.sustained_s
        ]

    def state(self, model: str) -> dict[str, VersionVerdict]:
        """Each checked candidate version of ``model`` as the last check saw it."""
        rules = self._rules.get(model)
        order = () if rules is None else rules.rules()
        with self._lock:
            return {
                version: VersionVerdict(
                    version=version,
                    breaching=tuple(rule for rule in order if rule in state.since),
                    since=min(state.since.values()) if state.since else None,
                    fired=state.fired,
                    requests=state.requests,
                    checked_at=state.checked_at,
                    active=state.active,
                    suspect=tuple(
                        dict.fromkeys(
                            reading.rule for reading in state.readings if _suspect(reading)
                        )
                    ),
                )
                for version, state in self._states.get(model, {}).items()
            }

    def baseline(self, model: str, version: str) -> Totals | None:
        """The LKG's totals over ``version``'s comparison, as the last check read them."""
        with self._lock:
            state = self._states.get(model, {}).get(version)
            return None if state is None else state.baseline

    def report(self, model: str) -> list[RuleState]:
        """Every test of every checked candidate of ``model``, as the last check saw it: the
        estimate and confidence interval so far, the limit, alpha, the counts and the verdict."""
        judges = self._judges.get(model)
        if judges is None:
            return []
        states: list[RuleState] = []
        with self._lock:
            for version, state in sorted(self._states.get(model, {}).items()):
                readings = {reading.key: reading for reading in state.readings}
                for rule, metric in judges.tests():
                    got = readings.get((rule, metric))
                    states.append(_rule_state(rule, metric, version, state, got, judges))
        return states

    def reset(self, model: str, version: str | None = None) -> None:
        """Forget the comparison of ``version`` (of every version without one): its tests,
        breaches and error-rate monitor, so it is judged afresh and may fire again.

        Call it with the metrics' own reset, when a person releases a rollback or a canary
        starts: the totals start over, and so does the comparison.
        """
        with self._lock:
            states = self._states.get(model, {})
            if version is None:
                states.clear()
            else:
                states.pop(version, None)


def _suspect(reading: Reading) -> bool:
    """True when the estimate lies beyond the tolerance but the test has not breached."""
    evidence = reading.evidence
    estimate = evidence.estimate
    if not evidence.decided or evidence.breached or estimate is None:
        return False
    return estimate > evidence.limit if evidence.worse == "higher" else estimate < evidence.limit


def _breach(
    model: str,
    version: str,
    lkg: str,
    rules: GuardrailRules,
    reading: Reading,
    since: float,
    now: float,
    candidate: Totals,
    baseline: Totals,
) -> Breach:
    evidence = reading.evidence
    return Breach(
        model=model,
        version=version,
        lkg=lkg,
        rule=reading.rule,
        observed=_finite(reading.observed),
        threshold=_finite(reading.threshold),
        lkg_observed=reading.lkg_observed,
        window_s=max(0.0, now - candidate.started),
        since=since,
        fired_at=now,
        requests=candidate.requests,
        lkg_requests=baseline.requests,
        action=rules.action,
        evidence=evidence,
    )


def _finite(value: float | None) -> float:
    return float("nan") if value is None else value


def _rule_state(
    rule: Rule,
    metric: str | None,
    version: str,
    state: _State,
    got: Reading | None,
    judges: Judges,
) -> RuleState:
    if got is None or not got.evidence.decided:
        verdict = "waiting"
    elif state.fired and rule in state.since:
        verdict = "fired"
    else:
        verdict = "breaching" if rule in state.since else "holding"
    evidence = None if got is None else got.evidence
    return RuleState(
        rule=rule,
        version=version,
        lkg=state.lkg,
        verdict=verdict,
        estimate=None if evidence is None else evidence.estimate,
        lower=None if evidence is None else evidence.lower,
        upper=None if evidence is None else evidence.upper,
        limit=None if evidence is None else evidence.limit,
        lkg_estimate=None if got is None else got.lkg_observed,
        candidate_n=0 if evidence is None else evidence.candidate_count,
        baseline_n=0 if evidence is None else evidence.baseline_count,
        alpha=judges.split.shares[rule] if evidence is None else evidence.alpha,
        method="" if evidence is None else evidence.method,
        metric=metric,
        quantity="" if evidence is None else evidence.quantity,
        observed=None if got is None else got.observed,
        note="" if evidence is None else evidence.note,
    )
