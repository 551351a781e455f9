"""Human confirmation (``action = "confirm"``): a breach becomes a proposal a person confirms or
dismisses, with an optional timeout; at the public API, on a fake clock, with the sequential
rules."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from traffic import Failures, Simulation, Split, chance_loaders, chance_registry

from modelflags import Backoff, ModelFlags, RolledBack
from modelflags.client import ROLLED_BACK
from modelflags.errors import InvalidActionError
from modelflags.telemetry.events import RollbackDismissed, RollbackProposed

from support import FakeClock, Workspace

RULES: dict[str, Any] = {
    "max_error_rate": 0.05,
    "max_error_rate_increase": {"relative": 0.5},
    "action": "confirm",
}


class Setup:
    """Model ``m`` split 50/50 between v1 (the LKG, healthy) and v2 (failing 30% of its calls,
    tried again on every call: no quarantine), with guardrails asking for confirmation, a
    decision log and every event collected."""

    def __init__(self, workspace: Workspace, clock: FakeClock, **rules: Any) -> None:
        api.set_provider_and_wait(Split(50).provider())
        self.log = workspace.root / "decisions.jsonl"
        self.events: list[object] = []
        self.clock = clock
        self.flags = ModelFlags(
            chance_registry(workspace, {**RULES, **rules}),
            clock=clock,
            loaders=chance_loaders(Failures(0, v2=0.3)),
            listeners=[self.events.append],
            backoff=Backoff(initial=0.0, maximum=0.0),
            decision_log=self.log,
            guardrail_interval=3600,
        )
        self.traffic = Simulation(self.flags, clock, rate=40, clicks={}, seed=0)

    def breach(self) -> None:
        """Traffic until v2's error rate breaches (a few seconds)."""
        assert self.traffic.run(60, until_breach=True), "v2 never breached"

    def of(self, kind: type[Any]) -> list[Any]:
        assert self.flags.flush(5)
        return [event for event in self.events if isinstance(event, kind)]

    def actions(self) -> list[dict[str, Any]]:
        assert self.flags.flush(5)
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [line for line in lines if "action" in line]

    def serving(self) -> set[tuple[str, str]]:
        """(requested, served) version pairs for 100 users now."""
        handles = [self.flags.get_model("m", user) for user in range(100)]
        return {(handle.requested_version, handle.version) for handle in handles}


@pytest.fixture
def setup(workspace: Workspace, clock: FakeClock) -> Iterator[Callable[..., Setup]]:
    made: list[Setup] = []

    def make(**rules: Any) -> Setup:
        made.append(Setup(workspace, clock, **rules))
        return made[-1]

    yield make
    for each in made:
        each.flags.close()


def test_a_breach_under_confirm_is_a_proposal_with_an_event_and_a_status_entry(
    setup: Callable[..., Setup],
) -> None:
    """Nothing is rolled back: a RollbackProposed event carries the breach and its evidence,
    status() lists the proposal, and v2 keeps serving its users."""
    case = setup()
    case.breach()

    [proposed] = case.of(RollbackProposed)
    assert (proposed.model, proposed.version, proposed.lkg) == ("m", "v2", "v1")
    assert proposed.breach.evidence is not None and proposed.breach.evidence.breached
    assert (proposed.expires_at, proposed.on_timeout) == (None, "keep")
    [entry] = case.flags.status()["m"].proposals
    assert (entry.version, entry.lkg, entry.rule) == ("v2", "v1", proposed.breach.rule)
    assert entry.evidence == proposed.breach.evidence and entry.expires_in_s is None
    assert case.of(RolledBack) == []
    assert ("v2", "v2") in case.serving()
    assert case.flags.status()["m"].rolled_back == ()


def test_confirming_rolls_back_to_the_lkg_and_logs_who_decided(
    setup: Callable[..., Setup],
) -> None:
    """confirm_rollback() pins v2 away: the LKG answers its users, the proposal is gone, and the
    decision log has an action line naming the person and the reason."""
    case = setup()
    case.breach()

    case.flags.confirm_rollback("m", "v2", by="alice", reason="errors confirmed in the logs")

    assert case.serving() == {("v1", "v1"), ("v2", "v1")}
    assert case.flags.get_model("m", 1).reason == ROLLED_BACK
    assert case.flags.status()["m"].proposals == ()
    [rolled] = case.of(RolledBack)
    assert rolled.version == "v2" and rolled.evidence is not None
    assert "confirmed by alice: errors confirmed in the logs" in rolled.reason
    [action] = [line for line in case.actions() if line["action"] == "rollback"]
    assert (action["model"], action["version"], action["by"]) == ("m", "v2", "alice")
    assert "confirmed by alice" in action["reason"]
    assert action["rule"] == rolled.breach.rule  # type: ignore[union-attr]
    assert action["lower"] == pytest.approx(rolled.evidence.lower)


def test_dismissing_keeps_the_version_serving_and_it_is_not_proposed_again_until_released(
    setup: Callable[..., Setup],
) -> None:
    """dismiss() keeps v2 serving; later breaches of it propose nothing; after release() the
    comparison starts afresh and a new breach is proposed again."""
    case = setup()
    case.breach()

    case.flags.dismiss("m", "v2", by="bob", reason="known noisy dependency")

    assert ("v2", "v2") in case.serving()
    [dismissed] = case.of(RollbackDismissed)
    assert (dismissed.version, dismissed.by, dismissed.reason) == (
        "v2",
        "bob",
        "known noisy dependency",
    )
    assert [line["action"] for line in case.actions()] == ["dismiss"]
    case.traffic.run(30)
    assert len(case.of(RollbackProposed)) == 1
    assert case.flags.status()["m"].proposals == ()

    case.flags.release("m", "v2")  # the person's decision is forgotten with the comparison
    assert case.flags.status()["m"].rolled_back == ()
    case.breach()
    assert len(case.of(RollbackProposed)) == 2
    assert ("v2", "v2") in case.serving()


def test_an_unanswered_proposal_rolls_back_when_the_timeout_says_so(
    setup: Callable[..., Setup],
) -> None:
    """With on_timeout = "rollback", nobody deciding within confirm_timeout_s rolls v2 back."""
    case = setup(confirm_timeout_s=30, on_timeout="rollback")
    case.breach()
    [proposed] = case.of(RollbackProposed)
    assert proposed.expires_at == proposed.proposed_at + 30.0
    [entry] = case.flags.status()["m"].proposals
    assert entry.on_timeout == "rollback"
    assert entry.expires_in_s == proposed.expires_at - case.clock.now

    case.clock.advance(proposed.expires_at - case.clock.now - 1.0)
    case.flags.check_guardrails()
    assert case.of(RolledBack) == []
    case.clock.advance(1.0)
    case.flags.check_guardrails()

    [rolled] = case.of(RolledBack)
    assert "nobody decided within 30 s" in rolled.reason
    assert case.serving() == {("v1", "v1"), ("v2", "v1")}
    assert [line["by"] for line in case.actions()] == ["guardrails"]


def test_an_unanswered_proposal_keeps_the_version_when_the_timeout_says_so(
    setup: Callable[..., Setup],
) -> None:
    """With on_timeout = "keep" (the default), the proposal expires as a dismissal by
    "timeout": v2 keeps serving and is not proposed again."""
    case = setup(confirm_timeout_s=30)
    case.breach()

    case.clock.advance(29)  # the breach's second already moved the clock one second on
    case.flags.check_guardrails()

    [dismissed] = case.of(RollbackDismissed)
    assert (dismissed.version, dismissed.by) == ("v2", "timeout")
    assert case.of(RolledBack) == []
    assert ("v2", "v2") in case.serving()
    case.traffic.run(10)
    assert len(case.of(RollbackProposed)) == 1


def test_confirming_or_dismissing_with_nothing_waiting_is_an_invalid_action(
    setup: Callable[..., Setup],
) -> None:
    """Before any breach, and after a decision, there is nothing to confirm or dismiss: the
    error names the model, the version and what is waiting."""
    case = setup()
    with pytest.raises(InvalidActionError, match="nothing to confirm") as caught:
        case.flags.confirm_rollback("m", "v2")
    assert (caught.value.model, caught.value.version) == ("m", "v2")
    assert "waiting: none" in str(caught.value)

    case.breach()
    with pytest.raises(InvalidActionError, match=r"nothing to dismiss.*waiting: v2"):
        case.flags.dismiss("m", "v1")
    case.flags.confirm_rollback("m", "v2")
    with pytest.raises(InvalidActionError, match="nothing to confirm"):
        case.flags.confirm_rollback("m", "v2")
    assert isinstance(caught.value, ValueError)


def test_a_proposal_decided_by_hand_never_fires_twice(
    setup: Callable[..., Setup], tmp_path: Path
) -> None:
    """A confirmed rollback is not proposed again while v2 stays rolled back."""
    case = setup()
    case.breach()
    case.flags.confirm_rollback("m", "v2")
    case.traffic.run(20)
    assert len(case.of(RollbackProposed)) == 1
    assert len(case.of(RolledBack)) == 1
