"""Rollback impact: after a rollback the breached rule is judged again on the version serving,
with the rule's own test: RollbackVerified when the regression is gone, RollbackIneffective
when it persists on the LKG too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from traffic import Failures, Simulation, Split, chance_loaders, chance_registry

from modelflags import ModelFlags, RolledBack
from modelflags.registry.guardrails import GuardrailRules
from modelflags.rollout.evidence import Moments
from modelflags.rollout.impact import ImpactWatch
from modelflags.rollout.judges import Judges
from modelflags.rollout.metrics import Metrics
from modelflags.rollout.totals import OutcomeTotals, Totals
from modelflags.telemetry.events import Breach, RollbackIneffective, RollbackVerified

from support import FakeClock, Workspace


class Case:
    """Model ``m`` split 50/50 between v1 (the LKG) and v2, failing as ``failures`` says, with
    an absolute error-rate limit of 5% that rolls back."""

    def __init__(self, workspace: Workspace, clock: FakeClock, failures: Failures) -> None:
        api.set_provider_and_wait(Split(50).provider())
        self.events: list[object] = []
        self.flags = ModelFlags(
            chance_registry(workspace, {"max_error_rate": 0.05, "window_s": 10}),
            clock=clock,
            loaders=chance_loaders(failures),
            listeners=[self.events.append],
            guardrail_interval=3600,
        )
        self.traffic = Simulation(self.flags, clock, rate=40, clicks={}, seed=0)

    def of(self, kind: type[Any]) -> list[Any]:
        assert self.flags.flush(5)
        return [event for event in self.events if isinstance(event, kind)]


@pytest.fixture
def cases(workspace: Workspace, clock: FakeClock) -> Iterator[list[Case]]:
    made: list[Case] = []
    yield made
    for case in made:
        case.flags.close()


def test_a_rollback_that_removed_the_regression_is_verified(
    workspace: Workspace, clock: FakeClock, cases: list[Case]
) -> None:
    """v2 fails 30% of its calls and is rolled back; the LKG, healthy, serves everyone, and
    within seconds its error rate since the rollback is confidently within the limit."""
    case = Case(workspace, clock, Failures(0, v2=0.3))
    cases.append(case)
    [breach] = case.traffic.run(60, until_breach=True)
    assert case.of(RollbackVerified) == []

    case.traffic.run(30)

    [verified] = case.of(RollbackVerified)
    assert (verified.model, verified.version, verified.lkg, verified.rule) == (
        "m",
        "v2",
        "v1",
        "max_error_rate",
    )
    assert verified.before == breach.lkg_observed == 0.0
    assert verified.after == 0.0 and verified.requests > 0
    evidence = verified.evidence
    assert evidence is not None and evidence.decided and not evidence.breached
    assert evidence.upper <= 0.05 and evidence.candidate_count == verified.requests
    assert case.of(RollbackIneffective) == []


def test_a_regression_that_persists_on_the_lkg_is_reported_ineffective(
    workspace: Workspace, clock: FakeClock, cases: list[Case]
) -> None:
    """An outage fails 30% of both versions' calls: v2 breaks the limit and is rolled back, and
    the LKG, now serving everyone, is confidently beyond the limit too: not the version."""
    case = Case(workspace, clock, Failures(0, v1=0.3, v2=0.3))
    cases.append(case)
    [breach] = case.traffic.run(60, until_breach=True)
    assert breach.version == "v2" and len(case.of(RolledBack)) == 1

    case.traffic.run(30)

    [ineffective] = case.of(RollbackIneffective)
    assert (ineffective.version, ineffective.lkg, ineffective.rule) == (
        "v2",
        "v1",
        "max_error_rate",
    )
    assert ineffective.after == pytest.approx(0.3, abs=0.1)
    assert ineffective.evidence is not None and ineffective.evidence.breached
    assert ineffective.evidence.lower > 0.05
    assert case.of(RollbackVerified) == []


# -- the comparative rules, judged against the LKG's own figures before ------------------------


def clicks(count: int, events: int) -> Totals:
    """Totals of ``count`` calls with ``events`` clicks among them."""
    return Totals(
        requests=count,
        outcomes={"click": OutcomeTotals(Moments.binary(count, events), binary=True)},
    )


def test_an_outcome_rule_compares_the_lkg_after_the_rollback_with_the_lkg_before() -> None:
    """The LKG's click rate after the rollback is judged against its own rate during the
    comparison: the same rate on enough data is within the tolerance, a halved one is beyond
    it, and too little data decides nothing yet."""
    judges = Judges(GuardrailRules(max_outcome_drop={"name": "click", "relative": 0.2}))
    before = clicks(100_000, 10_000)

    same = judges.after_rollback("max_outcome_drop", "click", clicks(100_000, 10_000), before)
    halved = judges.after_rollback("max_outcome_drop", "click", clicks(10_000, 500), before)
    early = judges.after_rollback("max_outcome_drop", "click", clicks(300, 30), before)

    assert same is not None and halved is not None and early is not None
    assert same.evidence.lower > -0.2 and not same.evidence.breached  # verified
    assert halved.evidence.breached  # ineffective
    assert early.evidence.lower < -0.2 < early.evidence.upper  # no verdict yet
    assert halved.lkg_observed == pytest.approx(0.1) and halved.observed == pytest.approx(0.05)


def test_an_error_rate_increase_after_a_rollback_uses_each_sides_own_bounds() -> None:
    """The monitor learns nothing from a baseline that no longer runs, so the LKG's errors
    after the rollback and before are bounded each on its own."""
    judges = Judges(GuardrailRules(max_error_rate_increase={"relative": 0.5}))
    before = Totals(requests=50_000, errors=500)

    doubled = judges.after_rollback(
        "max_error_rate_increase", None, Totals(requests=50_000, errors=1000), before
    )
    same = judges.after_rollback(
        "max_error_rate_increase", None, Totals(requests=50_000, errors=500), before
    )

    assert doubled is not None and doubled.evidence.breached
    assert "each arm on its own" in doubled.evidence.method
    assert same is not None and same.evidence.upper < 0.5
    assert judges.after_rollback("max_latency_increase", "p95", before, before) is None


def test_a_watch_without_a_verdict_is_dropped_after_ten_windows(clock: FakeClock) -> None:
    """With no traffic on the served version nothing is decided; after ten windows the watch
    is dropped, with no event."""
    metrics = Metrics(window_s=10.0, clock=clock)
    events: list[object] = []
    watch = ImpactWatch(metrics, events.append, clock)
    judges = Judges(GuardrailRules(max_error_rate=0.05, window_s=10))
    breach = Breach("m", "v2", "v1", "max_error_rate", 0.3, 0.05, 0.0, 10.0, 0.0, 0.0, 100, 100, "")
    watch.watch(breach, "v1", Totals())

    clock.advance(99.0)
    watch.check(lambda model: judges)
    assert watch.pending("m") == 1
    clock.advance(1.0)
    watch.check(lambda model: judges)

    assert watch.pending("m") == 0 and events == []
