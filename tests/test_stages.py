"""Stages at serving time: which versions a process serves, answered by the LKG with POLICY."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelflags import (
    GovernanceOptions,
    ModelFlags,
    ModelUnavailableError,
    PrewarmCompleted,
    RegistryError,
)
from modelflags.serving.health import STATE_FILE
from modelflags.serving.stages import ALLOWED_STAGES_ENV, allowed_stages
from modelflags.telemetry.decision_log import DecisionLog
from modelflags.testing import InMemoryFlags

from models import Constant
from support import Workspace

X = np.zeros((3, 2))
WAIT = 10.0


@pytest.fixture
def staged(workspace: Workspace) -> Path:
    """v1 in production (the default), v2 in staging, v3 a candidate, v4 archived."""
    workspace.add("m", "v1", Constant(1), stage="production", default=True)
    workspace.add("m", "v2", Constant(2), stage="staging")
    workspace.add("m", "v3", Constant(3))
    workspace.add("m", "v4", Constant(4), stage="archived")
    return workspace.write()


def served(flags: ModelFlags, flag: Callable[..., None], version: str) -> tuple[str, str, str]:
    flag(m=version)
    model = flags.get_model("m", "user-1")
    return model.version, str(model.reason), str(model.predict(X)[0])


def test_by_default_every_stage_but_archived_serves(
    staged: Path, set_flags: Callable[..., None]
) -> None:
    """Candidate, staging and production versions serve as flagged; archived ones never: the
    last known good version (v2 by then) answers."""
    with ModelFlags(staged, prewarm=False) as flags:  # each version loads in the request
        assert served(flags, set_flags, "v3") == ("v3", "STATIC", "3")
        assert served(flags, set_flags, "v2") == ("v2", "STATIC", "2")
        assert served(flags, set_flags, "v4") == ("v2", "POLICY", "2")
        assert "v4" not in flags.status()["m"].loaded  # never loaded


def test_a_version_of_a_stage_not_allowed_is_answered_by_the_lkg_with_policy(
    staged: Path, set_flags: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """allowed_stages=["production"]: a flagged candidate gets the LKG, reason POLICY, and one
    log line per cause naming model, version and stage."""
    with caplog.at_level(logging.WARNING), ModelFlags(staged, allowed_stages=["production"]) as f:
        for _ in range(3):
            set_flags(m="v3")
            model = f.get_model("m", "u")
            assert (model.version, model.requested_version) == ("v1", "v3")
            assert (model.reason, model.fell_back) == ("POLICY", True)
            assert model.predict(X).tolist() == [1, 1, 1]
        assert served(f, set_flags, "v2") == ("v1", "POLICY", "1")
        assert f.status()["m"].lkg == "v1"
        assert f.status()["m"].quarantined == ()  # a policy answer is not a failure
    lines = [r.getMessage() for r in caplog.records if "does not serve" in r.getMessage()]
    assert len(lines) == 2
    assert "model 'm': flagged version 'v3' is in stage 'candidate'" in lines[0]
    assert "(allowed: production)" in lines[0]
    assert "'v2' is in stage 'staging'" in lines[1]


def test_the_async_path_applies_the_same_policy(
    staged: Path, set_flags: Callable[..., None]
) -> None:
    """get_model_async answers a refused version with the LKG too."""
    set_flags(m="v2")
    with ModelFlags(staged, allowed_stages="production") as flags:
        model = asyncio.run(flags.get_model_async("m"))
        assert (model.version, model.reason) == ("v1", "POLICY")


def test_allowed_stages_come_from_the_environment_read_once(
    staged: Path, set_flags: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODELFLAGS_ALLOWED_STAGES (comma separated) applies when allowed_stages is not given, and
    is read when the instance is made."""
    monkeypatch.setenv(ALLOWED_STAGES_ENV, " production , staging ")
    with ModelFlags(staged, prewarm=False) as flags:  # each version loads in the request
        monkeypatch.setenv(ALLOWED_STAGES_ENV, "candidate,staging,production")
        assert served(flags, set_flags, "v3") == ("v1", "POLICY", "1")
        assert served(flags, set_flags, "v2") == ("v2", "STATIC", "2")
    with ModelFlags(staged, governance=GovernanceOptions(allowed_stages=["production"])) as f:
        assert served(f, set_flags, "v2") == ("v1", "POLICY", "1")  # the argument wins


def test_unknown_stages_are_errors_naming_the_stage_and_where_it_came_from(
    staged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt stage is a ValueError with a suggestion; from the environment, it names the
    variable; nothing left to serve is an error too."""
    with pytest.raises(
        ValueError, match=r"allowed_stages: unknown stage 'prodution'.*'production'"
    ):
        ModelFlags(staged, allowed_stages=["prodution"])
    monkeypatch.setenv(ALLOWED_STAGES_ENV, "production,stagin")
    with pytest.raises(ValueError, match=rf"{ALLOWED_STAGES_ENV}: unknown stage 'stagin'"):
        ModelFlags(staged)
    with pytest.raises(ValueError, match="no stage that may serve is allowed"):
        allowed_stages(["archived"], {})
    with pytest.raises(ValueError, match="no stage that may serve"):
        allowed_stages([], {})


def test_archived_never_serves_even_when_named(caplog: pytest.LogCaptureFixture) -> None:
    """Naming archived is allowed but changes nothing, and says so."""
    with caplog.at_level(logging.WARNING):
        assert allowed_stages("archived,production", {}) == {"production"}
    assert "archived versions never serve" in caplog.text
    assert allowed_stages(None, {}) == {"candidate", "staging", "production"}


def test_a_default_version_that_may_not_serve_here_is_an_error_at_construction(
    staged: Path,
) -> None:
    """The process has nothing to serve before a version proves itself: the error names the
    model, the version and its stage."""
    with pytest.raises(ModelUnavailableError) as caught:
        ModelFlags(staged, allowed_stages=["staging"])
    message = str(caught.value)
    assert "model 'm' cannot be served here: its default_version 'v1' is in stage 'production'" in (
        message
    )
    assert "this process serves staging" in message
    assert (caught.value.model, caught.value.version) == ("m", "v1")


def test_an_archived_default_version_makes_the_registry_invalid(workspace: Workspace) -> None:
    """Archived versions never serve, so one cannot be the default."""
    workspace.add("m", "v1", Constant(1), stage="archived")
    with pytest.raises(RegistryError, match="default_version 'v1' is archived"):
        ModelFlags(workspace.write())


def test_a_saved_lkg_of_a_stage_not_allowed_gives_way_to_the_default(
    staged: Path, set_flags: Callable[..., None], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file from a process that served staging does not make production serve it."""
    state = tmp_path / "state"
    set_flags(m="v2")
    with ModelFlags(staged, state_dir=state) as flags:
        flags.get_model("m").predict(X)
    assert json.loads((state / STATE_FILE).read_text())["lkg"] == {"m": "v2"}
    set_flags()
    with (
        caplog.at_level(logging.WARNING),
        ModelFlags(staged, state_dir=state, allowed_stages=["production"]) as flags,
    ):
        assert flags.status()["m"].lkg == "v1"
        assert flags.get_model("m").version == "v1"
    assert "saved last known good version 'v2' is in stage 'staging'" in caplog.text


def test_shadow_versions_outside_the_allowed_stages_are_not_mirrored(
    workspace: Workspace, set_flags: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """The shadow flag may name a candidate; a production-only process never loads it."""
    workspace.add("m", "v1", Constant(1), stage="production")
    workspace.add("m", "v2", Constant(2), stage="staging")
    workspace.add("m", "v3", Constant(3))
    workspace.set("m", shadow_flag="m.shadow")
    registry = workspace.write()
    set_flags(**{"m": "v1", "m.shadow": "v3"})
    with (
        caplog.at_level(logging.WARNING),
        ModelFlags(registry, allowed_stages=["production", "staging"]) as flags,
    ):
        for user in ("a", "b"):
            model = flags.get_model("m", user)
            assert model.shadow_version is None
            model.predict(X)
        assert flags.flush(WAIT)
        assert flags.shadow_report("m") == {}
        assert "v3" not in flags.status()["m"].loaded
        set_flags(**{"m": "v1", "m.shadow": "v2"})
        assert flags.get_model("m", "a").shadow_version == "v2"
    lines = [r.getMessage() for r in caplog.records if "not mirrored" in r.getMessage()]
    assert len(lines) == 1
    assert "shadow version 'v3' is in stage 'candidate'" in lines[0]


def test_the_decision_log_says_why_policy_answered(
    staged: Path, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """A POLICY decision is logged with its cause: the version's stage and what is served."""
    path = tmp_path / "decisions.jsonl"
    set_flags(m="v3")
    with ModelFlags(staged, allowed_stages=["production"], decision_log=DecisionLog(path)) as f:
        f.get_model("m", "user-1")
        assert f.flush(WAIT)
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert (line["requested"], line["served"], line["reason"]) == ("v3", "v1", "POLICY")
    assert line["cause"] == "version 'v3' is candidate; this process serves production"


def test_prewarming_never_loads_a_version_that_may_not_serve(staged: Path) -> None:
    """After a flag change, what the flag now selects is loaded only when it may serve."""
    passes: queue.Queue[PrewarmCompleted] = queue.Queue()
    source = InMemoryFlags(m="v1").install()
    with ModelFlags(
        staged, allowed_stages=["production", "staging"], listeners=[passes.put]
    ) as flags:
        flags.get_model("m", "a").predict(X)
        source.set(m="v3")  # passes run one after another: this one finds nothing to load
        source.set(m="v2")
        assert next_pass(passes).versions == ("v2",)
        assert set(flags.status()["m"].loaded) == {"v1", "v2"}


def next_pass(events: queue.Queue[PrewarmCompleted]) -> PrewarmCompleted:
    """The next prewarm pass reported (other events skipped), waiting at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        event = events.get(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(event, PrewarmCompleted):
            return event
