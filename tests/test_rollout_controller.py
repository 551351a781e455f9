"""The fleet rollout controller against a simulated fleet behind a real HTTP query API.

The flag is a real flagd file written by the real ``FlagdFileActuator``; the fleet's traffic
follows it. Time is the fleet's: the controller's clock and sleep are injected, so a canary of
minutes runs in well under a second.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from modelflags.errors import ActuatorError, InvalidActionError
from modelflags.registry.guardrails import GuardrailRules, OutcomeDrop
from modelflags.rollout.actuators.flagd import FlagdFileActuator
from modelflags.rollout.controller import RolloutController, RolloutResult
from modelflags.rollout.promql import PrometheusSource
from modelflags.rollout.rollout_state import RolloutState, request_decision

from fleet_fixtures import Behaviour, FakeFleet, flag_file

RULES = GuardrailRules(
    max_outcome_drop=OutcomeDrop(name="click", relative=0.05),
    max_error_rate=0.05,
    min_requests=200,
    sustained_s=0,
)


@pytest.fixture
def flags(tmp_path: Path) -> FlagdFileActuator:
    return FlagdFileActuator(flag_file(tmp_path / "flags.json"))


def make_fleet(flags: FlagdFileActuator, **candidate: float) -> Iterator[FakeFleet]:
    fleet = FakeFleet(flags, {"v1": Behaviour(), "v2": Behaviour(**candidate)})
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def fleet(flags: FlagdFileActuator) -> Iterator[FakeFleet]:
    yield from make_fleet(flags)


@pytest.fixture
def worse_fleet(flags: FlagdFileActuator) -> Iterator[FakeFleet]:
    yield from make_fleet(flags, click=0.07)


class Recorder:
    """Progress lines; stops the controller after ``limit`` sleeps or on a line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stop_on: str | None = None
        self.controller: RolloutController | None = None

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.stop_on and self.stop_on in line and self.controller is not None:
            self.controller.stop()

    def text(self) -> str:
        return "\n".join(self.lines)


def controller(
    actuator: Any,
    fleet: FakeFleet,
    tmp_path: Path,
    *,
    url: str | None = None,
    rules: GuardrailRules = RULES,
    max_sleeps: int = 10_000,
    **options: Any,
) -> tuple[RolloutController, Recorder]:
    progress = Recorder()
    sleeps = [0]

    def sleep(seconds: float) -> None:
        sleeps[0] += 1
        if sleeps[0] >= max_sleeps:
            made.stop()
        fleet.sleep(seconds)

    made = RolloutController(
        actuator,
        PrometheusSource(url or fleet.url),
        model="recommender",
        flag_key="recommender",
        candidate="v2",
        baseline="v1",
        rules=rules,
        state_path=tmp_path / "state.json",
        stages=options.pop("stages", (10, 50, 100)),
        stage_seconds=options.pop("stage_seconds", 60.0),
        poll_s=options.pop("poll_s", 5.0),
        retry_s=0.5,
        clock=fleet.clock,
        sleep=sleep,
        progress=progress,
        **options,
    )
    progress.controller = made
    return made, progress


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "state.json.audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def decisions(tmp_path: Path) -> list[str]:
    return [entry["decision"] for entry in audit(tmp_path)]


@pytest.mark.slow
def test_a_good_candidate_reaches_every_stage_and_completes(
    flags: FlagdFileActuator, fleet: FakeFleet, tmp_path: Path
) -> None:
    """Each stage lasts its time, then the split moves on; the last stage completes."""
    made, progress = controller(flags, fleet, tmp_path)
    result = made.run()
    assert result == RolloutResult("completed", 100, "v2 serves 100 %")
    assert flags.current_split("recommender") == {"v2": 100}
    splits = [e["percent"] for e in audit(tmp_path) if e["decision"] == "split"]
    assert splits == [10, 50, 100]
    assert decisions(tmp_path).count("advance") == 3
    checks = [e for e in audit(tmp_path) if e["decision"] == "check"]
    assert checks and all(e["evidence"] for e in checks)
    assert all(not ev["breached"] for e in checks for ev in e["evidence"])
    assert "split: v1 90 %, v2 10 %" in progress.text()
    assert RolloutState.load(tmp_path / "state.json").phase == "completed"  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_worse_candidate_is_rolled_back_with_its_evidence(
    flags: FlagdFileActuator, worse_fleet: FakeFleet, tmp_path: Path
) -> None:
    """A 30% lower click rate breaches the outcome rule: the flag goes back to the baseline."""
    made, progress = controller(flags, worse_fleet, tmp_path)
    result = made.run()
    assert result.outcome == "rolled_back"
    assert flags.current_split("recommender") == {"v1": 100}
    breach = next(e for e in audit(tmp_path) if e["decision"] == "breach")
    drop = next(ev for ev in breach["evidence"] if ev["rule"] == "max_outcome_drop")
    assert drop["breached"] and drop["upper"] < -0.05
    assert breach["candidate_totals"]["ran"] > 0
    assert "breach: max_outcome_drop" in progress.text()
    assert decisions(tmp_path)[-1] == "rollback"


@pytest.mark.slow
def test_a_restarted_controller_resumes_from_its_state_file(
    flags: FlagdFileActuator, fleet: FakeFleet, tmp_path: Path
) -> None:
    """Stopped at the 50% stage, a new controller resumes there with the totals it had."""
    first, progress = controller(flags, fleet, tmp_path)
    progress.stop_on = "split: v1 50 %"
    assert first.run().outcome == "stopped"
    ran_before = [e for e in audit(tmp_path) if "candidate_totals" in e][-1]["candidate_totals"]
    fleet.sleep(20)  # the controller is down for a while; traffic goes on
    second, again = controller(flags, fleet, tmp_path)
    assert second.run().outcome == "completed"
    assert "resume: resuming from" in again.lines[0]
    entries = audit(tmp_path)
    resumed_at = next(i for i, e in enumerate(entries) if e["decision"] == "resume")
    resumed = [e for e in entries[resumed_at:] if "candidate_totals" in e]
    assert resumed[0]["candidate_totals"]["ran"] > ran_before["ran"]
    splits = [e["percent"] for e in entries if e["decision"] == "split"]
    assert splits == [10, 50, 50, 100]  # the 50% split written again on resume


@pytest.mark.slow
def test_without_its_state_file_it_keeps_the_split_it_finds(
    flags: FlagdFileActuator, fleet: FakeFleet, tmp_path: Path
) -> None:
    """The state is gone, the flag serves v2 at 50%: it goes on at 50% and says why."""
    first, progress = controller(flags, fleet, tmp_path)
    progress.stop_on = "split: v1 50 %"
    first.run()
    (tmp_path / "state.json").unlink()
    second, again = controller(flags, fleet, tmp_path)
    assert second.run().outcome == "completed"
    assert "lost its state; going on at the 50 % stage" in again.text()
    later = [e["percent"] for e in audit(tmp_path) if e["decision"] == "split"][2:]
    assert later == [50, 100]


class Blind:
    """An actuator that cannot read splits (and may fail ``failures`` times first)."""

    def __init__(self, inner: FlagdFileActuator, failures: int = 0) -> None:
        self.inner = inner
        self.failures = failures
        self.calls: list[str] = []

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        self.calls.append(f"split {dict(weights)}")
        if self.failures > 0:
            self.failures -= 1
            raise ActuatorError("flags.json: disk full", flag_key=flag_key, actuator="test")
        self.inner.set_split(flag_key, weights)

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        self.calls.append(f"rollback to {to_version}")
        self.inner.rollback(flag_key, to_version=to_version, from_version=from_version)


@pytest.mark.slow
def test_without_state_and_an_unreadable_split_it_rolls_back_first(
    flags: FlagdFileActuator, fleet: FakeFleet, tmp_path: Path
) -> None:
    """An actuator that cannot read the split: the baseline for everyone, then stage one."""
    flags.set_split("recommender", {"v1": 50, "v2": 50})
    blind = Blind(flags)
    made, progress = controller(blind, fleet, tmp_path, max_sleeps=1)
    made.run()
    assert blind.calls[0] == "rollback to v1"
    assert blind.calls[1] == "split {'v1': 90, 'v2': 10}"
    assert "the flag's split is unknown (the actuator cannot read splits)" in progress.text()


@pytest.mark.slow
def test_an_actuator_failure_is_retried_then_alerted_and_held(
    flags: FlagdFileActuator, fleet: FakeFleet, tmp_path: Path
) -> None:
    """Three failed attempts: an ALERT and a hold; the next check's attempt succeeds."""
    blind = Blind(flags, failures=3)
    made, progress = controller(blind, fleet, tmp_path, actuator_attempts=3)
    flags.set_split("recommender", {"v1": 100})
    assert made.run().outcome == "completed"
    failed = [e for e in audit(tmp_path) if e["decision"] == "actuator_failed"]
    assert len(failed) == 1 and "disk full" in failed[0]["error"]
    assert "ALERT: split of flag 'recommender' failed 3 times" in progress.text()
    assert blind.calls[:4] == ["rollback to v1"] + ["split {'v1': 90, 'v2': 10}"] * 3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "cause", "words"),
    [
        ("down", "unreachable", "answered HTTP 503"),
        ("error", "query", "refused the query (bad_data: parse error at char 3)"),
        ("empty", "no_series", "no series for v2 and v1 of model 'recommender'"),
    ],
)
def test_missing_metrics_hold_the_stage_and_say_why(
    flags: FlagdFileActuator,
    fleet: FakeFleet,
    tmp_path: Path,
    mode: str,
    cause: str,
    words: str,
) -> None:
    """Prometheus down, a PromQL error, no series: the stage holds past its time, never
    advancing; each check says why, in the progress output and the audit file."""
    first, _ = controller(flags, fleet, tmp_path, max_sleeps=2)
    first.run()
    fleet.mode = mode
    made, progress = controller(flags, fleet, tmp_path, max_sleeps=40, stage_seconds=30)
    made.run()
    assert flags.current_split("recommender") == {"v1": 90, "v2": 10}
    holds = [e for e in audit(tmp_path) if e["decision"] == "hold"]
    assert len(holds) >= 30 and all(e["cause"] == cause for e in holds)
    assert words in holds[-1]["reason"] and words in progress.lines[-2]
    assert "advance" not in decisions(tmp_path)


def test_an_unreachable_prometheus_holds_before_the_first_split(
    flags: FlagdFileActuator, fleet: FakeFleet, tmp_path: Path
) -> None:
    """Nothing listens at the address: no split is written without a first read."""
    made, progress = controller(flags, fleet, tmp_path, url="http://127.0.0.1:9", max_sleeps=3)
    made.run()
    assert flags.current_split("recommender") == {"v1": 100}
    assert "not starting: Prometheus at http://127.0.0.1:9 did not answer" in progress.text()
    assert {e["cause"] for e in audit(tmp_path) if e["decision"] == "hold"} == {"unreachable"}


@pytest.mark.slow
def test_a_restarted_instance_does_not_corrupt_the_totals(
    flags: FlagdFileActuator, fleet: FakeFleet, tmp_path: Path
) -> None:
    """An instance restarts mid-canary: its counters drop to zero, the totals keep growing."""
    made, _ = controller(flags, fleet, tmp_path, max_sleeps=30)
    made.run()
    fleet.restart("10.0.0.1:8000")
    again, _ = controller(flags, fleet, tmp_path)
    assert again.run().outcome == "completed"
    ran = [e["candidate_totals"]["ran"] for e in audit(tmp_path) if "candidate_totals" in e]
    assert ran == sorted(ran) and ran[-1] > 0
    assert "hold" not in decisions(tmp_path)


CONFIRM = RULES.model_copy(update={"action": "confirm"})


@pytest.mark.slow
def test_a_confirmed_proposal_rolls_back(
    flags: FlagdFileActuator, worse_fleet: FakeFleet, tmp_path: Path
) -> None:
    """With action "confirm" a breach holds the split until a person confirms the rollback."""
    made, progress = controller(flags, worse_fleet, tmp_path, rules=CONFIRM, max_sleeps=60)
    progress.stop_on = "proposal: ALERT"
    assert made.run().outcome == "stopped"
    state = RolloutState.load(tmp_path / "state.json")
    assert state is not None and state.phase == "proposed"
    assert state.proposal is not None and state.proposal["rules"] == ["max_outcome_drop"]
    request_decision(tmp_path / "state.json", "confirm", by="ana", reason="clicks fell")
    again, said = controller(flags, worse_fleet, tmp_path, rules=CONFIRM)
    assert again.run().outcome == "rolled_back"
    assert "rollback confirmed by ana: clicks fell" in said.text()
    assert flags.current_split("recommender") == {"v1": 100}


@pytest.mark.slow
def test_a_dismissed_proposal_lets_the_rollout_go_on(
    flags: FlagdFileActuator, worse_fleet: FakeFleet, tmp_path: Path
) -> None:
    """Dismissed, the rule is not proposed again for this candidate and the stages go on."""
    made, progress = controller(flags, worse_fleet, tmp_path, rules=CONFIRM)
    progress.stop_on = "proposal: ALERT"
    made.run()
    request_decision(tmp_path / "state.json", "dismiss", by="ana")
    again, said = controller(flags, worse_fleet, tmp_path, rules=CONFIRM)
    assert again.run().outcome == "completed"
    assert "max_outcome_drop dismissed by ana; going on" in said.text()


@pytest.mark.slow
def test_a_proposal_nobody_answers_follows_on_timeout(
    flags: FlagdFileActuator, worse_fleet: FakeFleet, tmp_path: Path
) -> None:
    """``confirm_timeout_s`` with ``on_timeout = "rollback"``: rolled back after the wait."""
    rules = CONFIRM.model_copy(update={"confirm_timeout_s": 30.0, "on_timeout": "rollback"})
    made, progress = controller(flags, worse_fleet, tmp_path, rules=rules)
    assert made.run().outcome == "rolled_back"
    assert "by timeout: nobody decided within 30 s" in progress.text()


def test_a_decision_without_a_proposal_is_refused(tmp_path: Path) -> None:
    """Confirming when nothing waits names the state file and says why."""
    with pytest.raises(InvalidActionError, match="no state file"):
        request_decision(tmp_path / "state.json", "confirm", by="ana")


def test_a_state_file_of_another_rollout_is_refused(
    flags: FlagdFileActuator, fleet: FakeFleet, tmp_path: Path
) -> None:
    """Resuming with another candidate's state file is an error naming both."""
    made, _ = controller(flags, fleet, tmp_path, max_sleeps=2)
    made.run()
    state = RolloutState.load(tmp_path / "state.json")
    assert state is not None
    state.candidate = "v3"
    state.save(tmp_path / "state.json")
    again, _ = controller(flags, fleet, tmp_path)
    with pytest.raises(ValueError, match="state of another rollout"):
        again.run()
