"""Guardrails: rules parsed from the registry, breaches that must be sustained, and firing once."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from modelflags.errors import RegistryError
from modelflags.registry.guardrails import GuardrailRules, OutcomeDrop
from modelflags.rollout.guardrails import Guardrails, VersionVerdict
from modelflags.rollout.metrics import Metrics
from modelflags.telemetry.events import Breach

from support import FakeClock

REGISTRY = """\
[models.recommender]
default_version = "v1"
[models.recommender.versions.v1]
uri = "v1.joblib"
[models.recommender.guardrails]
max_error_rate = 0.02
max_p95_latency_ms = 100
max_outcome_drop = { name = "click", relative = 0.05 }
min_requests = 200
sustained_s = 60
action = "rollback"
"""


class Harness:
    """A model ``m`` with LKG ``v1`` and candidate ``v2``, driven one fake second at a time."""

    def __init__(self, **rules: Any) -> None:
        self.clock = FakeClock()
        self.metrics = Metrics(window_s=60.0, clock=self.clock)
        self.rules = GuardrailRules(**rules)
        self.guardrails = Guardrails({"m": self.rules}, self.metrics, clock=self.clock)

    def traffic(
        self,
        version: str,
        calls: int,
        *,
        errors: int = 0,
        latency_s: float = 0.01,
        clicks: int | None = None,
    ) -> None:
        """``calls`` calls of ``version``: the first ``errors`` raise; ``clicks`` of them click."""
        for index in range(calls):
            self.metrics.record_call("m", version, latency_s, index < errors, False)
            if clicks is not None:
                self.metrics.record_outcome("m", version, "click", float(index < clicks))

    def check(self) -> list[Breach]:
        return self.guardrails.check("m", "v1", ["v1", "v2"])

    def run(self, seconds: int, **candidate: Any) -> list[Breach]:
        """Each second: 100 healthy LKG calls, 100 candidate calls as given, then a check."""
        fired: list[Breach] = []
        for _ in range(seconds):
            self.clock.advance(1.0)
            self.traffic("v1", 100)
            self.traffic("v2", 100, **candidate)
            fired += self.check()
        return fired


# -- each rule -------------------------------------------------------------------------------


def test_error_rate_above_the_limit_breaches() -> None:
    """A candidate failing 5% of calls breaks a 2% limit; the breach says what was seen."""
    harness = Harness(max_error_rate=0.02, min_requests=100, sustained_s=0)
    harness.traffic("v1", 300)
    harness.traffic("v2", 300, errors=15)

    [breach] = harness.check()

    assert breach == Breach(
        model="m",
        version="v2",
        lkg="v1",
        rule="max_error_rate",
        observed=0.05,
        threshold=0.02,
        lkg_observed=0.0,
        window_s=60.0,
        since=harness.clock.now,
        fired_at=harness.clock.now,
        requests=300,
        lkg_requests=300,
        action="rollback",
    )


def test_error_rate_at_the_limit_holds() -> None:
    """Exactly the limit is not a breach."""
    harness = Harness(max_error_rate=0.02, min_requests=100, sustained_s=0)
    harness.traffic("v2", 300, errors=6)

    assert harness.check() == []
    assert harness.guardrails.state("m")["v2"].breaching == ()


def test_p95_latency_above_the_limit_breaches() -> None:
    """A slow candidate breaks the p95 limit (in milliseconds); the LKG's p95 is reported."""
    harness = Harness(max_p95_latency_ms=100, min_requests=100, sustained_s=0, action="alert")
    harness.traffic("v1", 200, latency_s=0.020)
    harness.traffic("v2", 200, latency_s=0.150)

    [breach] = harness.check()

    assert breach.rule == "max_p95_latency_ms"
    assert breach.observed == pytest.approx(150.0, rel=0.01)
    assert breach.threshold == 100.0
    assert breach.lkg_observed == pytest.approx(20.0, rel=0.01)
    assert breach.action == "alert"


def test_p95_latency_under_the_limit_holds() -> None:
    """Slow outliers below the 95th percentile do not move p95 past the limit."""
    harness = Harness(max_p95_latency_ms=100, min_requests=100, sustained_s=0)
    harness.traffic("v2", 190, latency_s=0.030)
    harness.traffic("v2", 8, latency_s=2.0)

    assert harness.check() == []


def test_outcome_mean_falling_more_than_allowed_below_the_lkg_breaches() -> None:
    """A click rate of 10% against the LKG's 12% is a drop of 17%, past a 5% allowance."""
    harness = Harness(
        max_outcome_drop=OutcomeDrop(name="click", relative=0.05), min_requests=100, sustained_s=0
    )
    harness.traffic("v1", 1000, clicks=120)
    harness.traffic("v2", 1000, clicks=100)

    [breach] = harness.check()

    assert breach.rule == "max_outcome_drop"
    assert breach.observed == pytest.approx(0.10)
    assert breach.lkg_observed == pytest.approx(0.12)
    assert breach.threshold == pytest.approx(0.12 * 0.95)


def test_outcome_mean_within_the_allowance_holds() -> None:
    """A drop from 12% to 11.5% (4%) stays within a 5% allowance, and a rise is always fine."""
    harness = Harness(max_outcome_drop={"name": "click", "relative": 0.05}, min_requests=100)
    harness.traffic("v1", 1000, clicks=120)
    harness.traffic("v2", 1000, clicks=115)
    assert harness.check() == []

    harness.traffic("v2", 1000, clicks=400)
    assert harness.check() == []


def test_outcome_drop_compares_with_the_lkg_not_an_absolute_value() -> None:
    """The same candidate mean breaches against a better LKG and holds against a worse one."""
    better = Harness(max_outcome_drop={"name": "click", "relative": 0.05}, sustained_s=0)
    better.traffic("v1", 1000, clicks=300)
    better.traffic("v2", 1000, clicks=200)
    worse = Harness(max_outcome_drop={"name": "click", "relative": 0.05}, sustained_s=0)
    worse.traffic("v1", 1000, clicks=150)
    worse.traffic("v2", 1000, clicks=200)

    assert [breach.rule for breach in better.check()] == ["max_outcome_drop"]
    assert worse.check() == []


def test_several_rules_due_at_once_are_all_reported() -> None:
    """When two rules become due at the same check, both come back in that one check."""
    harness = Harness(max_error_rate=0.01, max_p95_latency_ms=50, min_requests=10, sustained_s=0)
    harness.traffic("v2", 100, errors=50, latency_s=0.2)

    assert [breach.rule for breach in harness.check()] == ["max_error_rate", "max_p95_latency_ms"]


# -- traffic gates ---------------------------------------------------------------------------


def test_too_few_requests_give_no_verdict() -> None:
    """199 failing calls say nothing under ``min_requests = 200``; the 200th makes a verdict."""
    harness = Harness(max_error_rate=0.02, min_requests=200, sustained_s=0)
    harness.traffic("v2", 199, errors=199)
    assert harness.check() == []
    assert harness.guardrails.state("m")["v2"].requests == 199

    harness.traffic("v2", 1, errors=1)
    assert [breach.rule for breach in harness.check()] == ["max_error_rate"]


def test_outcome_drop_needs_enough_values_from_both_versions() -> None:
    """A comparative rule waits for ``min_requests`` outcome values from the LKG and the
    candidate alike."""
    few_lkg = Harness(max_outcome_drop={"name": "click", "relative": 0.05}, sustained_s=0)
    few_lkg.traffic("v1", 199, clicks=60)
    few_lkg.traffic("v2", 1000, clicks=0)
    assert few_lkg.check() == []
    few_lkg.traffic("v1", 1, clicks=0)
    assert [breach.rule for breach in few_lkg.check()] == ["max_outcome_drop"]

    few_candidate = Harness(max_outcome_drop={"name": "click", "relative": 0.05}, sustained_s=0)
    few_candidate.traffic("v1", 1000, clicks=300)
    few_candidate.traffic("v2", 1000)  # calls, but almost no outcome values recorded
    few_candidate.traffic("v2", 199, clicks=0)
    assert few_candidate.check() == []


def test_versions_without_traffic_and_the_lkg_are_not_judged() -> None:
    """The LKG is never a candidate, and a version without calls has no verdict."""
    harness = Harness(max_error_rate=0.0, min_requests=1, sustained_s=0)
    harness.traffic("v1", 100, errors=100)

    assert harness.guardrails.check("m", "v1", ["v1", "v2", "v3"]) == []
    state = harness.guardrails.state("m")
    assert set(state) == {"v2", "v3"}
    assert state["v3"] == VersionVerdict("v3", (), None, False, 0, harness.clock.now)


def test_models_without_rules_are_never_checked() -> None:
    """A model absent from the rules has no breaches and no state."""
    harness = Harness(max_error_rate=0.0, min_requests=1, sustained_s=0)
    harness.metrics.record_call("other", "v2", 0.01, True, False)

    assert harness.guardrails.check("other", "v1", ["v2"]) == []
    assert harness.guardrails.state("other") == {}


# -- sustained breaches ----------------------------------------------------------------------


def test_a_blip_shorter_than_sustained_s_never_fires() -> None:
    """Errors for 20 s, then health: the breach never lasts 30 s, so nothing fires."""
    harness = Harness(max_error_rate=0.02, min_requests=100, sustained_s=30, window_s=10)

    fired = harness.run(20, errors=10)
    assert harness.guardrails.state("m")["v2"].breaching == ("max_error_rate",)
    fired += harness.run(60)

    assert fired == []
    verdict = harness.guardrails.state("m")["v2"]
    assert (verdict.breaching, verdict.since, verdict.fired) == ((), None, False)


def test_a_sustained_breach_fires_exactly_once() -> None:
    """Errors for two minutes fire one breach, 30 s after it started, and never again."""
    harness = Harness(max_error_rate=0.02, min_requests=100, sustained_s=30, window_s=10)
    start = harness.clock.now + 1.0

    fired = harness.run(120, errors=10)

    [breach] = fired
    assert breach.since == start
    assert breach.fired_at == start + 30.0
    assert breach.observed == pytest.approx(0.1)
    verdict = harness.guardrails.state("m")["v2"]
    assert verdict == VersionVerdict(
        "v2", ("max_error_rate",), start, True, verdict.requests, harness.clock.now
    )


def test_a_recovery_resets_the_start_of_a_breach() -> None:
    """20 s bad, a recovery, 20 s bad again: no fire; it fires 30 s after the second start."""
    harness = Harness(max_error_rate=0.02, min_requests=100, sustained_s=30, window_s=10)

    fired = harness.run(20, errors=50)
    fired += harness.run(15)  # healthy: the window clears
    assert harness.guardrails.state("m")["v2"].since is None
    second_start = harness.clock.now + 1.0
    fired += harness.run(20, errors=50)
    assert fired == []
    assert harness.guardrails.state("m")["v2"].since == second_start

    [breach] = harness.run(11, errors=50)
    assert breach.since == second_start
    assert breach.fired_at == second_start + 30.0


def test_losing_traffic_breaks_the_continuity_of_a_breach() -> None:
    """A check without enough calls for a verdict starts the breach over, like a recovery."""
    harness = Harness(max_error_rate=0.02, min_requests=100, sustained_s=30, window_s=10)
    harness.run(20, errors=10)

    harness.clock.advance(15.0)  # no candidate traffic in the window
    assert harness.check() == []
    assert harness.guardrails.state("m")["v2"].since is None

    assert harness.run(30, errors=10) == []  # the breach restarts at the first of these
    assert len(harness.run(1, errors=10)) == 1


def test_reset_lets_a_version_fire_again() -> None:
    """After ``reset`` (a person released the rollback) a breach that holds fires once more."""
    harness = Harness(max_error_rate=0.02, min_requests=100, sustained_s=30, window_s=10)
    assert len(harness.run(40, errors=10)) == 1

    harness.guardrails.reset("m", "v2")
    assert "v2" not in harness.guardrails.state("m")
    fired = harness.run(40, errors=10)

    [breach] = fired
    assert breach.fired_at - breach.since == 30.0


def test_a_version_that_stops_being_a_candidate_starts_over() -> None:
    """Leaving the candidates (the flag moved away) breaks the breach's continuity."""
    harness = Harness(max_error_rate=0.02, min_requests=100, sustained_s=30, window_s=10)
    harness.run(20, errors=10)

    harness.guardrails.check("m", "v1", ["v1"])

    assert harness.guardrails.state("m")["v2"].since is None
    assert harness.run(20, errors=10) == []


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
        max_error_rate=0.02,
        max_p95_latency_ms=100.0,
        max_outcome_drop=OutcomeDrop(name="click", relative=0.05),
        min_requests=200,
        sustained_s=60.0,
        action="rollback",
        window_s=60.0,
    )
    with pytest.raises(ValueError, match="frozen"):
        rules.min_requests = 1


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ({"max_error_rate": 1.5}, "guardrails.max_error_rate", "less than or equal to 1"),
        ({"max_error_rate": 0.1, "min_requests": 0}, "guardrails.min_requests", "greater"),
        ({"max_error_rate": 0.1, "action": "panic"}, "guardrails.action", "'rollback'"),
        (
            {"max_error_rate": 0.1, "max_errors": 3},
            "guardrails.max_errors",
            "unknown field 'max_errors'",
        ),
        ({"max_outcome_drop": {"relative": 0.1}}, "guardrails.max_outcome_drop.name", "required"),
        ({"min_requests": 10}, "guardrails", "at least one rule"),
        ({"max_p95_latency_ms": -5}, "guardrails.max_p95_latency_ms", "greater than 0"),
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
