"""Hostile inputs get a clear error or a bounded, escaped form: deeply nested files, empty, huge
and strange flag values, huge failure messages, 2,000 distinct unknown ids, leftover state files."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags import (
    DecisionLog,
    ModelFlags,
    ModelFlagsError,
    ServingReason,
    VersionLoadFailed,
)
from modelflags.serving.health import STATE_FILE

from models import Constant
from support import Workspace

X = np.zeros((3, 2))

# -- 13: deeply nested files -------------------------------------------------------------------

DEPTH = 100_000


def test_a_deeply_nested_state_file_is_ignored_with_a_warning(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path, caplog: Any
) -> None:
    """The state file is ignored with a clear warning; serving starts from the default."""
    workspace.add("m", "v1", Constant(1))
    set_flags(m="v1")
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_text('{"lkg": ' + "[" * DEPTH + "]" * DEPTH + "}")
    with caplog.at_level(logging.WARNING), ModelFlags(workspace.write(), state_dir=state) as flags:
        assert flags.get_model("m", "u1").version == "v1"
    assert any("nested too deeply" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("suffix", "document"),
    [
        (".json", '{"m": ' + "[" * DEPTH + "]" * DEPTH + "}"),
        (".toml", "m = " + "[" * DEPTH + "]" * DEPTH + "\n"),
    ],
)
def test_a_deeply_nested_override_file_is_a_clear_error(
    workspace: Workspace, tmp_path: Path, suffix: str, document: str
) -> None:
    """ModelFlags() raises ModelFlagsError naming the file, never RecursionError."""
    workspace.add("m", "v1", Constant(1))
    overrides = tmp_path / f"overrides{suffix}"
    overrides.write_text(document)
    with pytest.raises(ModelFlagsError) as caught:
        ModelFlags(workspace.write(), overrides=overrides)
    assert str(overrides) in str(caught.value)
    assert "nested" in str(caught.value) or "deep" in str(caught.value)


def test_an_override_file_named_by_the_environment_says_so_when_missing(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error names the missing file and the MODELFLAGS_OVERRIDES variable it came from."""
    workspace.add("m", "v1", Constant(1))
    missing = tmp_path / "nowhere.toml"
    monkeypatch.setenv("MODELFLAGS_OVERRIDES", str(missing))
    with pytest.raises(ModelFlagsError) as caught:
        ModelFlags(workspace.write())
    message = str(caught.value)
    assert str(missing) in message and "MODELFLAGS_OVERRIDES" in message


# -- 14: foreign values: empty, huge, strange, many --------------------------------------------


def test_an_empty_flag_value_is_an_error_that_fell_back(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The flag asked for "" (no version): requested_version is "", fell_back, reason ERROR."""
    workspace.add("m", "v1", Constant(1))
    set_flags(m="")
    with ModelFlags(workspace.write()) as flags:
        handle = flags.get_model("m", "u1")
        assert (handle.version, handle.requested_version) == ("v1", "")
        assert handle.fell_back is True and handle.reason == ServingReason.ERROR
        assert flags.status()["m"].flag_errors == 1


HOSTILE = "v9\n" + '{"forged": "line"}\r\x1b[31m\x00' + "x" * 10_000_000


def test_a_10_mb_flag_value_is_bounded_and_escaped_everywhere(
    workspace: Workspace,
    set_flags: Callable[..., None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Logs, status(), the handle and the decision log show a short, escaped, one-line form."""
    workspace.add("m", "v1", Constant(1))
    set_flags(m=HOSTILE)
    audit = tmp_path / "decisions.jsonl"
    with (
        caplog.at_level(logging.DEBUG, logger="modelflags"),
        ModelFlags(workspace.write(), decision_log=audit) as flags,
    ):
        handle = flags.get_model("m", "u1")
        assert flags.flush(5)
        status = flags.status()["m"]
    assert handle.version == "v1" and handle.fell_back and handle.reason == ServingReason.ERROR
    for text in (handle.requested_version, status.last_flag_error or ""):
        assert 0 < len(text) < 400 and "\n" not in text and "\x1b" not in text
        assert f"{len(HOSTILE)} characters" in text
    for record in caplog.records:
        message = record.getMessage()
        assert len(message) < 1000 and "\n" not in message and "\x00" not in message
    lines = audit.read_bytes().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 2000
    decision = json.loads(lines[0])
    assert decision["served"] == "v1" and decision["requested"] == handle.requested_version


@pytest.mark.slow
def test_2000_distinct_unknown_ids_write_a_bounded_number_of_log_lines(
    workspace: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each distinct cause is logged once, up to 32 per model, then one line says the rest are
    counted; every error is counted in status()."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("other", "v1", Constant(2))

    def unknown_id(
        flag: InMemoryFlag[str], context: EvaluationContext
    ) -> FlagResolutionDetails[str]:
        return FlagResolutionDetails(
            f"ghost-{context.targeting_key}", reason=Reason.TARGETING_MATCH
        )

    api.set_provider_and_wait(
        InMemoryProvider(
            {
                key: InMemoryFlag("v1", {"v1": "v1"}, context_evaluator=unknown_id)
                for key in ("m", "other")
            }
        )
    )
    audit = tmp_path / "decisions.jsonl"
    with (
        caplog.at_level(logging.DEBUG, logger="modelflags"),
        ModelFlags(workspace.write(), decision_log=audit) as flags,
    ):
        for index in range(2000):
            assert flags.get_model("m", f"user-{index}").version == "v1"
            assert flags.get_model("other", f"user-{index}").version == "v1"
        assert flags.flush(10)
        status = flags.status()
    for name in ("m", "other"):
        lines = [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and f"model {name!r}" in r.getMessage()
        ]
        assert 30 <= len(lines) <= 33, (name, len(lines))
        assert status[name].flag_errors == 2000
    decisions = [json.loads(line) for line in audit.read_bytes().splitlines()]
    assert len(decisions) == 4000
    assert {d["requested"] for d in decisions if d["model"] == "m"} == {
        f"ghost-user-{index}" for index in range(2000)
    }


def test_an_inference_error_with_a_huge_message_is_bounded_in_status_and_events(
    workspace: Workspace, set_flags: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """A model that raises with a 1 MB message: the cause kept and logged is short."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Shouting(2))
    set_flags(m="v2")
    seen: list[object] = []
    with ModelFlags(workspace.write(), listeners=[seen.append]) as flags:
        assert flags.get_model("m", "u1").predict(X).tolist() == [1, 1, 1]
        assert flags.flush(5)
        cause = flags.status()["m"].quarantined[0].cause
    assert len(cause) < 600 and "\n" not in cause
    for event in seen:
        assert all(len(str(value)) < 600 for value in vars_of(event))
    assert all(len(record.getMessage()) < 1000 for record in caplog.records)


def vars_of(event: object) -> list[object]:
    return [getattr(event, name) for name in getattr(event, "__slots__", ())]


class Shouting(Constant):
    """Raises with a megabyte-long, multi-line message."""

    def predict(self, X: Any) -> np.ndarray:
        raise ValueError("bad\n" * 250_000)


def test_a_load_error_with_a_huge_message_is_bounded(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """A loader that raises with a huge message: the quarantine cause and the event are short."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"x", suffix=".bin", loader="shouting")

    def shouting(path: Path) -> Any:
        raise RuntimeError("no\n" * 250_000)

    set_flags(m="v2")
    seen: list[object] = []
    with ModelFlags(
        workspace.write(), loaders={"shouting": shouting}, listeners=[seen.append]
    ) as flags:
        assert flags.get_model("m", "u1").version == "v1"
        assert flags.flush(5)
        cause = flags.status()["m"].quarantined[0].cause
    assert len(cause) < 600 and "\n" not in cause
    failed = [event for event in seen if isinstance(event, VersionLoadFailed)]
    assert failed and len(failed[0].error) < 600


# -- 15: leftover temporary state files --------------------------------------------------------


def test_temporary_state_files_left_by_a_killed_writer_are_removed_at_start(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """Older than a minute: removed. Fresh (another process is writing): kept. Others: kept."""
    workspace.add("m", "v1", Constant(1))
    set_flags(m="v1")
    state = tmp_path / "state"
    state.mkdir()
    stale = state / ".modelflags-state-k1ll3d"
    fresh = state / ".modelflags-state-wr1t1ng"
    unrelated = state / "notes.txt"
    for path in (stale, fresh, unrelated):
        path.write_text("{")
    old = time.time() - 120
    os.utime(stale, (old, old))
    os.utime(unrelated, (old, old))
    with ModelFlags(workspace.write(), state_dir=state) as flags:
        assert flags.get_model("m", "u1").version == "v1"
    assert not stale.exists()
    assert fresh.exists() and unrelated.exists()


def test_a_decision_log_line_of_foreign_values_is_one_parseable_line(tmp_path: Path) -> None:
    """Newlines, quotes and control characters in a decision's values are escaped."""
    path = tmp_path / "d.jsonl"
    with DecisionLog(path) as log:
        log.log("m", 'v9"\n{"x":1}', "v1", "ERROR", "cause\r\n\x00\x1b", "user\n1")
        assert log.flush(5)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 1
    decision = json.loads(lines[0])
    assert decision["requested"] == 'v9"\n{"x":1}' and decision["cause"] == "cause\r\n\x00\x1b"
