"""``modelflags rollout``: the command around the controller, and ``decisions = "fleet"``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelflags.cli import main
from modelflags.errors import RegistryError
from modelflags.registry import load_registry
from modelflags.rollout.actuators.flagd import FlagdFileActuator
from modelflags.rollout.rollout_state import RolloutState, decision_path

from fleet_fixtures import Behaviour, FakeFleet, flag_file
from support import Workspace

GUARDRAILS = {
    "max_outcome_drop": {"name": "click", "relative": 0.05},
    "min_requests": 100,
    "sustained_s": 0,
}


def registry(tmp_path: Path, guardrails: dict[str, object] | None = GUARDRAILS) -> Path:
    space = Workspace(tmp_path)
    for version in ("v1", "v2"):
        space.add("recommender", version, raw=version.encode(), suffix=".pkl")
    if guardrails is not None:
        space.set("recommender", guardrails=guardrails, decisions="fleet")
    return space.write()


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    return flag_file(tmp_path / "flags.json")


def running(fleet: FakeFleet) -> Iterator[None]:
    """Fleet time runs at about 200 simulated seconds a second while the command runs."""
    stop = threading.Event()

    def advance() -> None:
        while not stop.wait(0.005):
            fleet.sleep(1.0)

    thread = threading.Thread(target=advance, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        fleet.close()


@pytest.fixture
def good_fleet(flags: Path) -> Iterator[FakeFleet]:
    fleet = FakeFleet(FlagdFileActuator(flags), {"v1": Behaviour(), "v2": Behaviour()})
    for _ in running(fleet):
        yield fleet


@pytest.fixture
def worse_fleet(flags: Path) -> Iterator[FakeFleet]:
    fleet = FakeFleet(FlagdFileActuator(flags), {"v1": Behaviour(), "v2": Behaviour(click=0.05)})
    for _ in running(fleet):
        yield fleet


def command(tmp_path: Path, flags: Path, url: str, *more: str) -> list[str]:
    return [
        "rollout", str(registry(tmp_path)), "--model", "recommender", "--candidate", "v2",
        "--actuator", f"flagd:{flags}", "--prometheus", url, "--stages", "10,100",
        "--stage-seconds", "0.3", "--poll-seconds", "0.02", "--state",
        str(tmp_path / "state.json"), *more,
    ]  # fmt: skip


@pytest.mark.slow
def test_the_command_rolls_a_good_candidate_out(
    tmp_path: Path, flags: Path, good_fleet: FakeFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0; progress lines as it goes; the audit file next to the state file."""
    assert main(command(tmp_path, flags, good_fleet.url)) == 0
    out = capsys.readouterr().out
    assert "split: v1 90 %, v2 10 %" in out and out.endswith("completed: v2 serves 100 %\n")
    audit = (tmp_path / "state.json.audit.jsonl").read_text().splitlines()
    assert json.loads(audit[-1])["decision"] == "completed"


@pytest.mark.slow
def test_the_command_exits_1_when_it_rolls_back(
    tmp_path: Path, flags: Path, worse_fleet: FakeFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --json the result is one document on stdout and progress goes to stderr."""
    assert main(command(tmp_path, flags, worse_fleet.url, "--json")) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "outcome": "rolled_back",
        "percent": 0,
        "reason": "everyone on v1",
    }
    assert "breach: max_outcome_drop" in captured.err
    assert FlagdFileActuator(flags).current_split("recommender") == {"v1": 100}


def test_confirm_writes_a_decision_for_the_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--confirm needs a pending proposal; the decision waits in its own file."""
    state = tmp_path / "state.json"
    base = ["rollout", str(registry(tmp_path)), "--model", "recommender", "--candidate", "v2"]
    assert main([*base, "--state", str(state), "--confirm", "--by", "ana"]) == 2
    assert "no rollback proposal waits for a decision (no state file)" in capsys.readouterr().err
    RolloutState(
        "recommender", "recommender", "v2", "v1", [10, 100], 60.0, phase="proposed",
        stage=0, proposal={"rules": ["max_outcome_drop"]},
    ).save(state)  # fmt: skip
    assert main([*base, "--state", str(state), "--dismiss", "--by", "ana", "--reason", "ok"]) == 0
    written = json.loads(decision_path(state).read_text())
    assert written["action"] == "dismiss" and written["by"] == "ana"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--actuator", "unleash:http://127.0.0.1:9"], "set the admin token in"),
        (["--actuator", "consul:x"], "--actuator is flagd:PATH or unleash:URL"),
        (["--actuator", "flagd:/no/such/flags.json"], "no such flag file"),
        (["--stages", "10,ten"], "invalid literal"),
        ([], "--actuator and --prometheus are needed"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    tmp_path: Path,
    flags: Path,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Unleash token is read from the environment only; other mistakes are named."""
    monkeypatch.delenv("MODELFLAGS_UNLEASH_ADMIN_TOKEN", raising=False)
    args = ["rollout", str(registry(tmp_path)), "--model", "recommender", "--candidate", "v2"]
    if extra and extra[0] != "--actuator":
        extra = [*extra, "--actuator", f"flagd:{flags}"]
    if extra:
        extra = [*extra, "--prometheus", "http://127.0.0.1:9"]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_model_without_guardrails_or_an_unknown_candidate_is_refused(
    tmp_path: Path, flags: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing to judge on, or no such version: exit 2 naming the model."""
    plain = registry(tmp_path, guardrails=None)
    base = ["--actuator", f"flagd:{flags}", "--prometheus", "http://127.0.0.1:9"]
    assert main(["rollout", str(plain), "--model", "recommender", "--candidate", "v2", *base]) == 2
    assert "model 'recommender' has no guardrails table" in capsys.readouterr().err
    full = registry(tmp_path)
    assert main(["rollout", str(full), "--model", "recommender", "--candidate", "v9", *base]) == 2
    assert "model 'recommender' has no version 'v9' (v1, v2)" in capsys.readouterr().err


def test_decisions_is_process_by_default_and_fleet_when_asked(tmp_path: Path) -> None:
    """The model table's ``decisions`` takes "process" or "fleet", naming the field otherwise."""
    assert load_registry(registry(tmp_path)).model("recommender").decisions == "fleet"
    assert load_registry(registry(tmp_path, None)).model("recommender").decisions == "process"
    path = registry(tmp_path)
    path.write_text(path.read_text().replace('decisions = "fleet"', 'decisions = "fleets"'))
    with pytest.raises(RegistryError, match="field 'decisions'"):
        load_registry(path)
