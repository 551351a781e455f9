"""Fleet mode: a model judged by the rollout controller keeps local safety but does not act on
comparative rules in one process."""

from __future__ import annotations

from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags import GuardrailAlerted, ModelFlags, VersionRolledBack
from modelflags.errors import RegistryError

from models import Constant
from support import FakeClock, Workspace

X = [[0.0, 0.0, 0.0]] * 3


def split_by_user(flag: InMemoryFlag[Any], ctx: EvaluationContext | None) -> Any:
    """Odd users get v2, even ones v1."""
    key = int((ctx.targeting_key if ctx else "0") or 0)
    variant = "v2" if key % 2 else "v1"
    return FlagResolutionDetails(value=variant, variant=variant)


def serve_clicks(
    workspace: Workspace, clock: FakeClock, decisions: str
) -> tuple[ModelFlags, list[Any]]:
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    workspace.set(
        "m",
        decisions=decisions,
        guardrails={"max_outcome_drop": {"name": "click", "relative": 0.05}, "min_requests": 50},
    )
    api.set_provider_and_wait(
        InMemoryProvider({"m": InMemoryFlag("v1", {"v1": "v1"}, context_evaluator=split_by_user)})
    )
    events: list[Any] = []
    flags = ModelFlags(
        workspace.write(), clock=clock, guardrail_interval=3600, prewarm=False,
        listeners=[events.append],
    )  # fmt: skip
    for user in range(400):
        model = flags.get_model("m", user)
        model.predict(X)
        clicked = user % 10 < (5 if model.version == "v1" else 2)
        flags.record_outcome(model, "click", 1 if clicked else 0)
    return flags, events


@pytest.mark.parametrize("decisions", ["process", "fleet"])
def test_a_fleet_model_alerts_where_a_process_model_rolls_back(
    workspace: Workspace, clock: FakeClock, decisions: str
) -> None:
    """The same breach of a comparative rule rolls back a "process" model in this process, and
    only alerts for a "fleet" model, whose candidate keeps serving until the controller acts."""
    flags, events = serve_clicks(workspace, clock, decisions)
    with flags:
        (breach,) = flags.check_guardrails()
        assert breach.rule == "max_outcome_drop" and breach.version == "v2"
        assert flags.flush(5)
        kinds = [type(e) for e in events if isinstance(e, GuardrailAlerted | VersionRolledBack)]
        if decisions == "fleet":
            assert kinds == [GuardrailAlerted]
            assert flags.get_model("m", 1).version == "v2"
        else:
            assert kinds == [VersionRolledBack]
            assert flags.get_model("m", 1).version == "v1"


def test_decisions_takes_process_or_fleet_only(workspace: Workspace) -> None:
    """Another value is a registry error naming the field."""
    workspace.add("m", "v1", Constant(1))
    workspace.set("m", decisions="everyone")
    with pytest.raises(RegistryError, match="decisions"):
        ModelFlags(workspace.write())
