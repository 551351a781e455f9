"""Guardrails: rules parsed from the registry, judged by sequential tests on running totals, the
optional extra conditions (min_requests, sustained_s), firing once, and the live report."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelflags.errors import RegistryError
from modelflags.registry.guardrails import (
    ErrorRateIncrease,
    GuardrailRules,
    LatencyIncrease,
    OutcomeDrop,
)
from modelflags.rollout.guardrails import Guardrails, VersionVerdict
from modelflags.rollout.metrics import Metrics
from modelflags.telemetry.events import Breach
from modelflags.telemetry.status import RuleState

from support import FakeClock

REGISTRY = """\
[models.recommender]
default_version = "v1"
[models.recommender.versions.v1]
uri = "v1.joblib"
[models.recommender.guardrails]
max_outcome_drop = { name = "click", relative = 0.05, kind = "binary" }
max_error_rate_increase = { relative = 0.5, absolute = 0.001 }
max_latency_increase = { relative = 0.2, quantile = 0.95, mean = true }
max_error_rate = 0.02
max_p95_latency_ms = 100
alpha = 0.01
action = "confirm"
confirm_timeout_s = 600
on_timeout = "rollback"
promote_after_s = 120
"""

MEANS = "normal-mixture confidence sequence on the mean ratio"


class Harness:
    """A model ``m`` with LKG ``v1`` and candidate ``v2``, driven one fake second at a time."""

    def __init__(self, **rules: Any) -> None:
        self.clock = FakeClock()
        self.metrics = Metrics(window_s=60.0, clock=self.clock)
        self.rules = GuardrailRules(**rules)
        self.guardrails = Guardrails({"m": self.rules}, self.metrics, clock=self.clock)

    def traffic(
        self, calls: int, *, v1: dict[str, Any] | None = None, v2: dict[str, Any] | None = None
    ) -> None:
        """``calls`` calls of each version given, interleaved (the candidate's first, so both
        versions' totals cover the same period). Per version: ``errors`` (the first that many
        raise), ``latency_s`` (one value, or a sequence to cycle through), ``clicks`` (the
        first that many click; no outcome without it)."""
        loads = [(version, load) for version, load in (("v2", v2), ("v1", v1)) if load is not None]
        for index in range(calls):
            for version, load in loads:
                latency = load.get("latency_s", 0.01)
                if not isinstance(latency, float):
                    latency = float(latency[index % len(latency)])
                error = index < load.get("errors", 0)
                self.metrics.record_call("m", version, latency, error, False)
                clicks = load.get("clicks")
                if clicks is not None:
                    self.metrics.record_outcome("m", version, "click", float(index < clicks))

    def check(self, lkg: str = "v1") -> list[Breach]:
        return self.guardrails.check("m", lkg, ["v1", "v2", "v3"])

    def run(
        self, seconds: int, lkg: dict[str, Any] | None = None, **candidate: Any
    ) -> list[Breach]:
        """Each second: 100 LKG calls (healthy unless given), 100 candidate calls as given,
        then a check."""
        fired: list[Breach] = []
        for _ in range(seconds):
            self.clock.advance(1.0)
            self.traffic(100, v1=lkg or {}, v2=candidate)
            fired += self.check()
        return fired

    def report(self, version: str = "v2") -> dict[tuple[str, str | None], RuleState]:
        """The report's states of ``version``, by rule and metric."""
        states = self.guardrails.report("m")
        return {(s.rule, s.metric): s for s in states if s.version == version}


# -- the absolute limits (SLOs) ----------------------------------------------------------------


def test_an_error_rate_confidently_above_the_limit_breaches_with_its_evidence() -> None:
    """30 errors in 300 calls against a 2% limit: the rate's whole confidence interval lies
    above the limit, and the breach carries the figures and the evidence."""
    harness = Harness(max_error_rate=0.02)
    harness.traffic(300, v1={}, v2={"errors": 30})

    [breach] = harness.check()

    assert breach == Breach(
        model="m",
        version="v2",
        lkg="v1",
        rule="max_error_rate",
        observed=0.1,
        threshold=0.02,
        lkg_observed=0.0,
        window_s=0.0,
        since=harness.clock.now,
        fired_at=harness.clock.now,
        requests=300,
        lkg_requests=300,
        action="rollback",
        evidence=breach.evidence,
    )
    evidence = breach.evidence
    assert evidence is not None and evidence.breached and evidence.decided
    assert 0.02 < evidence.lower < 0.1 < evidence.upper
    assert (evidence.quantity, evidence.alpha, evidence.candidate_count) == ("rate", 0.05, 300)
    assert "binomial" in evidence.method


def test_an_error_rate_at_the_limit_or_barely_above_it_holds() -> None:
    """Exactly the limit is no breach, and neither is a point estimate above it that the
    interval does not confirm (15 errors in 300: 5% against 2%, but too few calls to be sure
    at alpha 0.05 over all checks)."""
    at_limit = Harness(max_error_rate=0.02)
    at_limit.traffic(300, v2={"errors": 6})
    barely = Harness(max_error_rate=0.02)
    barely.traffic(300, v2={"errors": 15})

    assert at_limit.check() == [] and barely.check() == []
    state = barely.report()[("max_error_rate", None)]
    assert state.verdict == "holding"
    assert state.observed == pytest.approx(0.05) and state.lower is not None
    assert state.lower < 0.02 < state.observed


def test_a_single_failing_call_is_no_evidence_and_a_failing_version_is_caught_in_a_few() -> None:
    """One error in one call says little; four in four are enough against a 5% limit."""
    harness = Harness(max_error_rate=0.05)
    harness.traffic(1, v2={"errors": 1})
    assert harness.check() == []

    harness.traffic(3, v2={"errors": 3})
    assert [breach.rule for breach in harness.check()] == ["max_error_rate"]


def test_p95_latency_confidently_above_the_limit_breaches() -> None:
    """A slow candidate breaks the p95 limit (in milliseconds); the LKG's p95 is reported."""
    harness = Harness(max_p95_latency_ms=100, action="alert")
    harness.traffic(200, v1={"latency_s": 0.020}, v2={"latency_s": 0.150})

    [breach] = harness.check()

    assert breach.rule == "max_p95_latency_ms"
    assert breach.observed == pytest.approx(150.0, rel=0.01)
    assert breach.threshold == 100.0
    assert breach.lkg_observed == pytest.approx(20.0, rel=0.01)
    assert breach.action == "alert"
    assert breach.evidence is not None and breach.evidence.lower > 100.0
    assert breach.evidence.quantity == "p95"


def test_slow_outliers_below_the_95th_percentile_do_not_breach_the_p95_limit() -> None:
    """Eight slow calls in 198 do not move p95 past the limit."""
    harness = Harness(max_p95_latency_ms=100)
    harness.traffic(190, v2={"latency_s": 0.030})
    harness.traffic(8, v2={"latency_s": 2.0})

    assert harness.check() == []


# -- comparative rules: outcomes -----------------------------------------------------------------


def test_an_outcome_confidently_more_than_the_tolerance_below_the_lkgs_breaches() -> None:
    """A click rate of 6% against the LKG's 12% over 2,000 calls each: the interval of the
    relative change lies wholly below -5%."""
    harness = Harness(max_outcome_drop=OutcomeDrop(name="click", relative=0.05))
    harness.traffic(2000, v1={"clicks": 240}, v2={"clicks": 120})

    [breach] = harness.check()

    assert breach.rule == "max_outcome_drop"
    assert breach.observed == pytest.approx(0.06)
    assert breach.lkg_observed == pytest.approx(0.12)
    assert breach.threshold == pytest.approx(0.12 * 0.95)
    evidence = breach.evidence
    assert evidence is not None and evidence.quantity == "relative change of the mean"
    assert evidence.estimate == pytest.approx(-0.5)
    assert evidence.lower < evidence.estimate < evidence.upper < -0.05
    assert (evidence.candidate_count, evidence.baseline_count) == (2000, 2000)
    assert MEANS in evidence.method


def test_a_point_estimate_beyond_the_tolerance_is_no_breach_until_the_interval_says_so() -> None:
    """10% against 12% is a 17% drop, past a 5% tolerance; on 1,000 calls each the interval
    still reaches the tolerance, so the rule holds; on 10,000 it no longer does."""
    small = Harness(max_outcome_drop={"name": "click", "relative": 0.05})
    small.traffic(1000, v1={"clicks": 120}, v2={"clicks": 100})
    assert small.check() == []
    state = small.report()[("max_outcome_drop", "click")]
    assert state.verdict == "holding"
    assert state.upper is not None and state.upper > -0.05

    large = Harness(max_outcome_drop={"name": "click", "relative": 0.05})
    large.traffic(10_000, v1={"clicks": 1200}, v2={"clicks": 1000})
    assert [breach.rule for breach in large.check()] == ["max_outcome_drop"]


def test_an_outcome_within_the_tolerance_or_higher_holds() -> None:
    """A drop from 12% to 11.5% (4%) stays within a 5% tolerance, and a rise is always fine."""
    harness = Harness(max_outcome_drop={"name": "click", "relative": 0.05})
    harness.traffic(1000, v1={"clicks": 120}, v2={"clicks": 115})
    assert harness.check() == []

    harness.traffic(1000, v1={"clicks": 120}, v2={"clicks": 400})
    assert harness.check() == []


def test_an_outcome_drop_compares_with_the_lkg_not_an_absolute_value() -> None:
    """The same candidate mean breaches against a better LKG and holds against a worse one."""
    better = Harness(max_outcome_drop={"name": "click", "relative": 0.05})
    better.traffic(1000, v1={"clicks": 300}, v2={"clicks": 200})
    worse = Harness(max_outcome_drop={"name": "click", "relative": 0.05})
    worse.traffic(1000, v1={"clicks": 150}, v2={"clicks": 200})

    assert [breach.rule for breach in better.check()] == ["max_outcome_drop"]
    assert worse.check() == []


def test_an_outcome_is_binary_while_every_value_is_zero_or_one() -> None:
    """Without ``kind``, 0/1 values get the binary test (which waits for ten expected clicks a
    side); one other value makes the outcome continuous (which waits for 50 values a side);
    ``kind = "continuous"`` decides it up front."""
    inferred = Harness(max_outcome_drop={"name": "click", "relative": 0.05})
    inferred.traffic(100, v1={"clicks": 5}, v2={"clicks": 5})
    inferred.check()
    assert "expected events" in inferred.report()[("max_outcome_drop", "click")].note

    inferred.metrics.record_outcome("m", "v2", "click", 0.5)
    inferred.check()
    state = inferred.report()[("max_outcome_drop", "click")]
    assert (state.verdict, state.note) == ("holding", "")

    declared = Harness(max_outcome_drop={"name": "click", "relative": 0.05, "kind": "continuous"})
    declared.traffic(100, v1={"clicks": 5}, v2={"clicks": 5})
    declared.check()
    assert declared.report()[("max_outcome_drop", "click")].verdict == "holding"


def test_a_continuous_outcome_drop_is_judged_on_heavy_tailed_values() -> None:
    """Revenue: mostly zeros, a few large lognormal amounts; the candidate's amounts are 40%
    smaller. The continuous test sees the drop on 20,000 requests a side."""
    rng = np.random.default_rng(5)
    harness = Harness(max_outcome_drop={"name": "revenue", "relative": 0.05})
    for version, scale in (("v2", 0.6), ("v1", 1.0)):
        paid = rng.random(20_000) < 0.1
        amounts = np.where(paid, scale * rng.lognormal(np.log(20.0), 1.0, 20_000), 0.0)
        for amount in amounts.tolist():
            harness.metrics.record_outcome("m", version, "revenue", amount)

    [breach] = harness.check()
    assert breach.evidence is not None and breach.evidence.upper < -0.05
    assert breach.observed < breach.threshold < breach.lkg_observed  # type: ignore[operator]


# -- comparative rules: errors and latency --------------------------------------------------------


def test_a_tripled_error_rate_against_the_lkgs_breaches_and_an_equal_one_holds() -> None:
    """Errors at 3% against the LKG's 1% for a minute pass a 50% tolerance; equal rates do not."""
    tripled = Harness(max_error_rate_increase={"relative": 0.5})
    fired = tripled.run(60, lkg={"errors": 1}, errors=3)
    [breach] = fired
    assert breach.rule == "max_error_rate_increase"
    assert breach.observed == pytest.approx(0.03, rel=0.05)
    assert breach.lkg_observed == pytest.approx(0.01, rel=0.05)
    assert breach.threshold == pytest.approx(1.5 * breach.lkg_observed)  # type: ignore[operator]
    assert breach.evidence is not None and breach.evidence.lower > 0.5
    assert "Lindon" in breach.evidence.method

    equal = Harness(max_error_rate_increase={"relative": 0.5})
    assert equal.run(60, lkg={"errors": 1}, errors=1) == []
    state = equal.report()[("max_error_rate_increase", None)]
    assert state.lower is not None and state.upper is not None
    assert state.lower < 0.0 < state.upper


@pytest.mark.slow
def test_an_absolute_error_tolerance_needs_the_difference_to_pass_it() -> None:
    """4% against 1% is 3 points more: past a 1-point tolerance, within a 5-point one."""
    tight = Harness(max_error_rate_increase=ErrorRateIncrease(absolute=0.01))
    assert [b.rule for b in tight.run(60, lkg={"errors": 1}, errors=4)] == [
        "max_error_rate_increase"
    ]
    loose = Harness(max_error_rate_increase=ErrorRateIncrease(absolute=0.05))
    assert loose.run(60, lkg={"errors": 1}, errors=4) == []
    assert loose.report()[("max_error_rate_increase", None)].quantity == "difference of rates"


def test_latency_whose_p95_is_confidently_higher_than_the_lkgs_breaches() -> None:
    """A candidate twice as slow as the LKG passes a 20% tolerance on p95."""
    harness = Harness(max_latency_increase=LatencyIncrease(relative=0.2))
    harness.traffic(200, v1={"latency_s": 0.020}, v2={"latency_s": 0.040})

    [breach] = harness.check()

    assert breach.rule == "max_latency_increase"
    assert breach.observed == pytest.approx(40.0, rel=0.01)
    assert breach.threshold == pytest.approx(24.0, rel=0.01)
    assert breach.evidence is not None and breach.evidence.quantity == "relative change of p95"
    assert breach.evidence.lower > 0.2


def test_the_latency_mean_is_judged_when_asked_for() -> None:
    """With ``mean = true`` and no quantile, a mean 50% higher breaches; 10% higher holds."""
    rng = np.random.default_rng(3)
    base = rng.lognormal(np.log(0.02), 0.3, 500)
    for factor, breaches in ((1.5, 1), (1.1, 0)):
        harness = Harness(max_latency_increase={"relative": 0.2, "quantile": None, "mean": True})
        harness.traffic(500, v1={"latency_s": base}, v2={"latency_s": base * factor})
        fired = harness.check()
        assert len(fired) == breaches, factor
        state = harness.report()[("max_latency_increase", "mean")]
        assert state.quantity == "relative change of the mean"
        assert state.estimate == pytest.approx(factor - 1.0, rel=0.01)


def test_several_rules_due_at_once_are_all_reported() -> None:
    """When two rules become due at the same check, both come back in that one check."""
    harness = Harness(max_error_rate=0.01, max_p95_latency_ms=50)
    harness.traffic(100, v2={"errors": 50, "latency_s": 0.2})

    assert [breach.rule for breach in harness.check()] == ["max_error_rate", "max_p95_latency_ms"]


# -- alpha ------------------------------------------------------------------------------------


def test_the_models_alpha_is_shared_among_its_rules_and_tests() -> None:
    """Four rules share alpha 0.04 equally; the latency rule's two tests share its part."""
    harness = Harness(
        alpha=0.04,
        max_error_rate=0.1,
        max_outcome_drop={"name": "click", "relative": 0.05},
        max_error_rate_increase={"relative": 0.5},
        max_latency_increase={"relative": 0.2, "mean": True},
    )
    harness.traffic(10, v1={"clicks": 1}, v2={"clicks": 1})
    harness.check()

    alphas = {key: state.alpha for key, state in harness.report().items()}
    assert alphas == {
        ("max_error_rate", None): pytest.approx(0.01),
        ("max_outcome_drop", "click"): pytest.approx(0.01),
        ("max_error_rate_increase", None): pytest.approx(0.01),
        ("max_latency_increase", "p95"): pytest.approx(0.005),
        ("max_latency_increase", "mean"): pytest.approx(0.005),
    }
    assert math.fsum(alphas.values()) == pytest.approx(0.04)


# -- the live report -------------------------------------------------------------------------------


def test_the_report_gives_each_tests_estimate_interval_and_verdict_as_it_goes() -> None:
    """Waiting before data, holding with an interval around the estimate, fired once it
    breaches; the counts on both sides and the LKG's figure are there all along."""
    harness = Harness(max_error_rate_increase={"relative": 0.5})
    assert harness.report() == {}  # not checked yet

    harness.guardrails.check("m", "v1", ["v2"])
    assert harness.report()[("max_error_rate_increase", None)].verdict == "waiting"

    harness.run(30, lkg={"errors": 1}, errors=1)
    holding = harness.report()[("max_error_rate_increase", None)]
    assert holding.verdict == "holding"
    assert holding.lower is not None and holding.upper is not None and holding.estimate is not None
    assert holding.lower < holding.estimate < holding.upper
    assert (holding.candidate_n, holding.baseline_n) == (3000, 3000)
    assert holding.lkg_estimate == pytest.approx(0.01)
    assert (holding.limit, holding.alpha, holding.lkg) == (0.5, 0.05, "v1")

    harness.run(60, lkg={"errors": 1}, errors=5)
    assert harness.report()[("max_error_rate_increase", None)].verdict == "fired"


# -- the extra conditions ------------------------------------------------------------------------


def test_min_requests_holds_a_breach_back_until_the_candidate_has_that_many() -> None:
    """199 failing calls are evidence enough, but ``min_requests = 200`` waits for the 200th."""
    harness = Harness(max_error_rate=0.02, min_requests=200)
    harness.traffic(199, v2={"errors": 199})
    assert harness.check() == []
    assert harness.guardrails.state("m")["v2"].requests == 199

    harness.traffic(1, v2={"errors": 1})
    assert [breach.rule for breach in harness.check()] == ["max_error_rate"]


def test_a_comparative_rule_waits_for_min_requests_on_the_lkg_too() -> None:
    """A candidate that clicks far less breaches only once the LKG has ``min_requests`` too."""
    harness = Harness(max_outcome_drop={"name": "click", "relative": 0.05}, min_requests=1500)
    harness.traffic(2000, v2={"clicks": 0})
    harness.traffic(1000, v1={"clicks": 300}, v2={"clicks": 0})
    assert harness.check() == []

    harness.traffic(500, v1={"clicks": 150})
    assert [breach.rule for breach in harness.check()] == ["max_outcome_drop"]


def test_versions_without_traffic_and_the_lkg_are_not_judged() -> None:
    """The LKG is never a candidate, and a version without calls has no verdict."""
    harness = Harness(max_error_rate=0.0)
    harness.traffic(100, v1={"errors": 100})

    assert harness.check() == []
    state = harness.guardrails.state("m")
    assert set(state) == {"v2", "v3"}
    assert state["v3"] == VersionVerdict("v3", (), None, False, 0, harness.clock.now)


def test_models_without_rules_are_never_checked() -> None:
    """A model absent from the rules has no breaches and no state."""
    harness = Harness(max_error_rate=0.0)
    harness.metrics.record_call("other", "v2", 0.01, True, False)

    assert harness.guardrails.check("other", "v1", ["v2"]) == []
    assert harness.guardrails.state("other") == {}
    assert harness.guardrails.report("other") == []


def test_a_breach_shorter_than_sustained_s_never_fires() -> None:
    """10 s of 10% errors is a breach, but healthy calls afterwards bring the interval back
    under the limit within half a minute: with ``sustained_s = 60`` nothing fires."""
    harness = Harness(max_error_rate=0.02, sustained_s=60)

    fired = harness.run(10, errors=10)
    assert harness.guardrails.state("m")["v2"].breaching == ("max_error_rate",)
    fired += harness.run(110)

    assert fired == []
    verdict = harness.guardrails.state("m")["v2"]
    assert (verdict.breaching, verdict.since, verdict.fired) == ((), None, False)


def test_a_sustained_breach_fires_exactly_once() -> None:
    """Errors for two minutes fire one breach, 30 s after it started, and never again."""
    harness = Harness(max_error_rate=0.02, sustained_s=30)
    start = harness.clock.now + 1.0

    fired = harness.run(120, errors=10)

    [breach] = fired
    assert breach.since == start
    assert breach.fired_at == start + 30.0
    assert breach.observed == pytest.approx(0.1)
    assert breach.window_s == 30.0  # the comparison started with the first calls, at the start
    verdict = harness.guardrails.state("m")["v2"]
    assert verdict == VersionVerdict(
        "v2", ("max_error_rate",), start, True, 12_000, harness.clock.now
    )


def test_a_breach_that_stops_holding_starts_its_wait_over() -> None:
    """A breach that ends before ``sustained_s`` (the evidence faded under healthy calls) and
    comes back fires ``sustained_s`` after its second start."""
    harness = Harness(max_error_rate=0.02, sustained_s=60)

    fired = harness.run(10, errors=10)
    fired += harness.run(40)
    assert harness.guardrails.state("m")["v2"].since is None
    second_start = harness.clock.now + 2.0  # errors at 20% need two seconds to tip it again
    fired += harness.run(20, errors=20)
    assert fired == []
    assert harness.guardrails.state("m")["v2"].since == second_start

    [breach] = harness.run(60, errors=20)
    assert breach.since == second_start
    assert breach.fired_at == second_start + 60.0


def test_reset_lets_a_version_fire_again_on_fresh_totals() -> None:
    """After a reset (a person released the rollback) the comparison starts over."""
    harness = Harness(max_error_rate=0.02, sustained_s=30)
    assert len(harness.run(40, errors=10)) == 1

    harness.metrics.reset("m", "v2")
    harness.guardrails.reset("m", "v2")
    assert "v2" not in harness.guardrails.state("m")
    assert harness.run(5) == []
    assert harness.guardrails.state("m")["v2"].requests == 500

    harness.guardrails.reset("m")
    [breach] = harness.run(60, errors=20)
    assert breach.fired_at - breach.since == 30.0


def test_a_version_that_stops_being_a_candidate_starts_its_wait_over() -> None:
    """Leaving the candidates (the flag moved away) breaks the breach's continuity."""
    harness = Harness(max_error_rate=0.02, sustained_s=30)
    harness.run(20, errors=10)

    harness.guardrails.check("m", "v1", ["v1"])

    verdict = harness.guardrails.state("m")["v2"]
    assert (verdict.since, verdict.active) == (None, False)
    assert harness.run(20, errors=10) == []


def test_a_new_lkg_starts_a_new_comparison() -> None:
    """A candidate judged against v1 is judged afresh against v3 once v3 is the LKG, with v3's
    totals over the candidate's lifetime."""
    harness = Harness(max_error_rate_increase={"relative": 0.5})
    harness.run(10, lkg={"errors": 1}, errors=1)
    for _ in range(300):
        harness.metrics.record_call("m", "v3", 0.01, False, False)

    harness.guardrails.check("m", "v3", ["v2", "v3"])

    state = harness.report()[("max_error_rate_increase", None)]
    assert (state.lkg, state.candidate_n, state.baseline_n) == ("v3", 1000, 300)


def test_rules_must_fit_in_the_metrics_window() -> None:
    """A rule window longer than the metrics keep is refused when the guardrails are made."""
    clock = FakeClock()
    rules = GuardrailRules(max_error_rate=0.1, window_s=120)
    with pytest.raises(ValueError, match="model 'm'"):
        Guardrails({"m": rules}, Metrics(window_s=60, clock=clock), clock=clock)


# -- parsing ---------------------------------------------------------------------------------


def test_parses_the_rules_of_a_registry_file(tmp_path: Path) -> None:
    """The guardrails table of a TOML registry becomes frozen rules with its values."""
    path = tmp_path / "registry.toml"
    path.write_text(REGISTRY)
    table = tomllib.loads(path.read_text())["models"]["recommender"]["guardrails"]

    rules = GuardrailRules.parse(table, model="recommender", source=str(path))

    assert rules == GuardrailRules(
        max_outcome_drop=OutcomeDrop(name="click", relative=0.05, kind="binary"),
        max_error_rate_increase=ErrorRateIncrease(relative=0.5, absolute=0.001),
        max_latency_increase=LatencyIncrease(relative=0.2, quantile=0.95, mean=True),
        max_error_rate=0.02,
        max_p95_latency_ms=100.0,
        alpha=0.01,
        action="confirm",
        confirm_timeout_s=600,
        on_timeout="rollback",
        promote_after_s=120,
    )
    assert rules.rules() == (
        "max_error_rate",
        "max_p95_latency_ms",
        "max_outcome_drop",
        "max_error_rate_increase",
        "max_latency_increase",
    )
    with pytest.raises(ValueError, match="frozen"):
        rules.min_requests = 1


def test_a_table_of_an_earlier_release_keeps_its_meaning() -> None:
    """The keys of earlier tables parse as before; left out, the extra conditions are off
    (the tests carry the evidence) and promotion waits a minute, as it used to."""
    written = GuardrailRules.parse(
        {
            "max_error_rate": 0.02,
            "max_outcome_drop": {"name": "click", "relative": 0.05},
            "min_requests": 200,
            "sustained_s": 60,
            "window_s": 60,
        },
        model="m",
    )
    assert (written.min_requests, written.sustained_s) == (200, 60.0)
    assert written.max_outcome_drop == OutcomeDrop(name="click", relative=0.05, kind=None)

    defaults = GuardrailRules(max_error_rate=0.02)
    assert (defaults.min_requests, defaults.sustained_s, defaults.promote_after_s) == (0, 0.0, 60.0)
    assert (defaults.alpha, defaults.action) == (0.05, "rollback")


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ({"max_error_rate": 1.0}, "guardrails.max_error_rate", "less than 1"),
        ({"max_error_rate": 0.1, "min_requests": -1}, "guardrails.min_requests", "greater"),
        ({"max_error_rate": 0.1, "action": "panic"}, "guardrails.action", "'rollback'"),
        (
            {"max_error_rate": 0.1, "max_errors": 3},
            "guardrails.max_errors",
            "unknown field 'max_errors'",
        ),
        ({"max_outcome_drop": {"relative": 0.1}}, "guardrails.max_outcome_drop.name", "required"),
        (
            {"max_outcome_drop": {"name": "click", "relative": 1.0}},
            "guardrails.max_outcome_drop.relative",
            "less than 1",
        ),
        (
            {"max_outcome_drop": {"name": "click", "relative": 0.1, "kind": "count"}},
            "guardrails.max_outcome_drop.kind",
            "'binary'",
        ),
        (
            {"max_error_rate_increase": {}},
            "guardrails.max_error_rate_increase",
            "give relative, absolute, or both",
        ),
        (
            {"max_latency_increase": {"relative": 0.2, "quantile": None}},
            "guardrails.max_latency_increase",
            "judge a quantile",
        ),
        (
            {"max_latency_increase": {"relative": 0.2, "quantile": 1.5}},
            "guardrails.max_latency_increase.quantile",
            "less than 1",
        ),
        ({"min_requests": 10}, "guardrails", "at least one rule"),
        ({"max_p95_latency_ms": -5}, "guardrails.max_p95_latency_ms", "greater than 0"),
        ({"max_error_rate": 0.1, "alpha": 0}, "guardrails.alpha", "greater than 0"),
    ],
)
def test_invalid_rules_name_the_file_model_and_field(
    table: dict[str, Any], field: str, words: str
) -> None:
    """Each invalid table raises a ``RegistryError`` saying where and what."""
    with pytest.raises(RegistryError) as caught:
        GuardrailRules.parse(table, model="recommender", source="models/registry.toml")

    error = caught.value
    assert (error.file, error.model, error.field) == ("models/registry.toml", "recommender", field)
    assert str(error).startswith("models/registry.toml: ")
    assert "model 'recommender'" in str(error)
    assert f"field '{field}'" in str(error)
    assert words in str(error)


def test_a_guardrails_value_that_is_not_a_table_is_an_error() -> None:
    """``guardrails = 5`` is reported against the guardrails field."""
    with pytest.raises(RegistryError, match="field 'guardrails'"):
        GuardrailRules.parse(5, model="m", source=None)  # type: ignore[arg-type]
