"""Guardrail decisions at the public API: a ``ModelFlags`` on a fake clock, simulated traffic
through real handles and ``record_outcome``, ``check_guardrails()`` every simulated second.

Identical versions stay quiet (false rollbacks within alpha, on a small seeded run; the benchmark
runs the large ones), a real regression is rolled back with its evidence, and the live state of
every rule is in ``guardrail_report()`` and ``status()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from openfeature import api
from traffic import ROW, Failures, Simulation, Split, chance_loaders, chance_registry

from modelflags import ModelFlags, RolledBack
from modelflags.client import ROLLED_BACK

from support import FakeClock, Workspace

MEANS = "normal-mixture confidence sequence on the mean ratio"
RULES: dict[str, Any] = {
    "max_outcome_drop": {"name": "click", "relative": 0.05},
    "max_error_rate_increase": {"relative": 0.5},
}


@pytest.fixture
def guarded(
    workspace: Workspace, clock: FakeClock
) -> Callable[..., tuple[ModelFlags, list[object]]]:
    """A ModelFlags for model ``m`` (v1 the LKG, v2 the candidate) split 50/50 by user, with
    the given guardrails and failure rates; checks are left to the test."""
    made: list[ModelFlags] = []

    def make(
        failures: Failures, guardrails: dict[str, Any] | None = None, share: int = 50
    ) -> tuple[ModelFlags, list[object]]:
        api.set_provider_and_wait(Split(share).provider())
        events: list[object] = []
        flags = ModelFlags(
            chance_registry(workspace, RULES if guardrails is None else guardrails),
            clock=clock,
            loaders=chance_loaders(failures),
            listeners=[events.append],
            guardrail_interval=3600,  # the simulation checks every simulated second
        )
        made.append(flags)
        return flags, events

    yield make
    for flags in made:
        flags.close()


@pytest.mark.slow
@pytest.mark.timeout(600)  # about 15 s alone; a loaded machine may take several times that
def test_identical_versions_checked_every_second_rarely_roll_back(
    workspace: Workspace,
) -> None:
    """Sixteen canaries of two versions with the same 5% click rate and 1% error rate, 40
    requests a second for five minutes, checked every second: at most one false rollback (the
    model's alpha is 0.05; the threshold rule of earlier releases rolled back nearly all)."""
    rollbacks = 0
    for seed in range(16):
        api.set_provider_and_wait(Split(50).provider())
        clock = FakeClock()
        folder = workspace.root / f"canary-{seed}"
        folder.mkdir()
        with ModelFlags(
            chance_registry(Workspace(folder), RULES),
            clock=clock,
            loaders=chance_loaders(Failures(seed, v1=0.01, v2=0.01)),
            guardrail_interval=3600,
        ) as flags:
            simulation = Simulation(
                flags, clock, rate=40, clicks={"v1": 0.05, "v2": 0.05}, seed=seed
            )
            fired = simulation.run(300, until_breach=True)
            rollbacks += bool(fired)
            assert min(simulation.served.values()) > 1000, simulation.served
        api.clear_providers()
    assert rollbacks <= 1


@pytest.mark.slow
def test_a_real_regression_is_rolled_back_with_its_evidence(
    guarded: Callable[..., tuple[ModelFlags, list[object]]], clock: FakeClock
) -> None:
    """A candidate whose click rate is half the LKG's is rolled back within a few minutes; the
    RolledBack event carries the estimate, the interval, alpha, the counts and the method, and
    the LKG answers the candidate's users from then on."""
    flags, events = guarded(Failures(1))
    simulation = Simulation(flags, clock, rate=40, clicks={"v1": 0.06, "v2": 0.03}, seed=1)

    [breach] = simulation.run(600, until_breach=True)

    assert (breach.rule, breach.version, breach.lkg) == ("max_outcome_drop", "v2", "v1")
    assert breach.fired_at - breach.since == 0.0  # no sustained_s: the test is the evidence
    evidence = breach.evidence
    assert evidence is not None
    assert evidence.lower <= evidence.estimate <= evidence.upper < -0.05
    assert evidence.alpha == pytest.approx(0.025)  # two rules share the model's 0.05
    assert evidence.candidate_count > 500 and evidence.baseline_count > 500
    assert MEANS in evidence.method
    assert breach.observed < breach.threshold < breach.lkg_observed  # type: ignore[operator]
    handles = [flags.get_model("m", user) for user in range(100)]
    assert {(h.requested_version, h.version, h.reason) for h in handles if h.fell_back} == {
        ("v2", "v1", ROLLED_BACK)
    }
    assert flags.flush(5)
    [rolled] = [event for event in events if isinstance(event, RolledBack)]
    assert rolled.breach == breach and rolled.evidence == evidence
    assert "max_outcome_drop" in rolled.reason and "[" in rolled.reason


@pytest.mark.slow
def test_the_live_state_of_every_rule_is_in_the_report_and_the_status(
    guarded: Callable[..., tuple[ModelFlags, list[object]]], clock: FakeClock
) -> None:
    """After a minute of healthy traffic each rule has an estimate and an interval around it,
    its share of alpha, its method and the counts on both sides; status() shows the same."""
    flags, _ = guarded(Failures(2, v1=0.02, v2=0.02))
    Simulation(flags, clock, rate=40, clicks={"v1": 0.1, "v2": 0.1}, seed=2).run(60)

    report = {state.rule: state for state in flags.guardrail_report("m")}

    assert set(report) == {"max_outcome_drop", "max_error_rate_increase"}
    for state in report.values():
        assert (state.version, state.lkg, state.verdict) == ("v2", "v1", "holding")
        assert state.lower is not None and state.upper is not None and state.estimate is not None
        assert state.lower <= state.estimate <= state.upper
        assert state.alpha == pytest.approx(0.025) and state.method
        assert state.candidate_n > 500 and state.baseline_n > 500
    assert report["max_outcome_drop"].metric == "click"
    assert report["max_outcome_drop"].lkg_estimate == pytest.approx(0.1, abs=0.03)
    assert report["max_error_rate_increase"].quantity == "relative change of the rate"
    assert flags.status()["m"].guardrails == tuple(flags.guardrail_report("m"))


@pytest.mark.slow
def test_a_candidate_whose_regression_is_not_yet_confirmed_is_not_promoted(
    guarded: Callable[..., tuple[ModelFlags, list[object]]], clock: FakeClock
) -> None:
    """Promotion waits while a rule's estimate is beyond its tolerance, so the regression is
    caught before the candidate could become the LKG; a healthy candidate is promoted."""
    rules = {**RULES, "promote_after_s": 20}
    flags, _ = guarded(Failures(3), rules)
    worse = Simulation(flags, clock, rate=40, clicks={"v1": 0.06, "v2": 0.04}, seed=3)
    fired = worse.run(600, until_breach=True)
    assert [breach.rule for breach in fired] == ["max_outcome_drop"]
    assert fired[0].fired_at - 1000.0 > 20  # longer than promote_after_s
    assert flags.status()["m"].lkg == "v1"

    flags.close()
    healthy_flags, _ = guarded(Failures(4), rules)
    healthy_flags.get_model("m", 99).predict(ROW)  # the LKG proves itself first, as in a canary
    Simulation(healthy_flags, clock, rate=40, clicks={"v1": 0.06, "v2": 0.06}, seed=4).run(60)
    assert healthy_flags.status()["m"].lkg == "v2"
