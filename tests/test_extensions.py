"""Extensions never break serving: exporters, listeners, actuators and the decision log that fail
are logged and counted in ``status()``, and never raise into a request."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from modelflags import (
    ActuatorError,
    ActuatorFailed,
    DecisionLog,
    ModelFlags,
    ServingReason,
)

from models import Constant
from support import Workspace, wait_until

X = np.zeros((3, 2))


class RaisingExporter:
    """A metrics exporter whose every call raises."""

    def __init__(self) -> None:
        self.calls = 0

    def record_call(
        self, model: str, version: str, latency_s: float, error: bool, fell_back: bool
    ) -> None:
        self.calls += 1
        raise RuntimeError("exporter backend is down")

    def record_outcome(self, model: str, version: str, name: str, value: float) -> None:
        self.calls += 1
        raise ConnectionError("exporter backend is down")


class RaisingActuator:
    """An actuator whose flag service refuses every change."""

    def __init__(self) -> None:
        self.calls = 0

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        self.calls += 1
        raise ActuatorError(
            "PUT http://127.0.0.1:9/flags: connection refused", flag_key=flag_key, actuator="test"
        )

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        self.calls += 1
        raise ActuatorError(
            "PUT http://127.0.0.1:9/flags: connection refused", flag_key=flag_key, actuator="test"
        )


def errors_logged(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


def test_an_exporter_that_raises_never_makes_predict_raise(
    workspace: Workspace, set_flags: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """Every call and outcome reaches the raising exporter; predict and record_outcome answer,
    the failures are counted and logged once."""
    workspace.add("m", "v1", Constant(1))
    set_flags(m="v1")
    exporter = RaisingExporter()
    with ModelFlags(workspace.write(), metrics_exporters=[exporter]) as flags:
        for _ in range(5):
            handle = flags.get_model("m", "u1")
            assert handle.predict(X).tolist() == [1, 1, 1]
            flags.record_outcome(handle, "click", 1.0)
        assert flags.metrics("m")["v1"].requests == 5
        status = flags.status()["m"]
    assert exporter.calls == 10
    assert status.extension_errors["exporters"] == 10
    assert len(errors_logged(caplog, "metrics exporter")) == 1


def test_a_load_failure_with_a_raising_exporter_still_serves_the_lkg(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The failed load is reported to the exporter, which raises; get_model serves the LKG."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"not a pickle", suffix=".pkl")
    set_flags(m="v2")
    exporter = RaisingExporter()
    with ModelFlags(workspace.write(), metrics_exporters=[exporter]) as flags:
        handle = flags.get_model("m", "u1")
        assert (handle.version, handle.requested_version, handle.reason) == (
            "v1",
            "v2",
            ServingReason.FALLBACK,
        )
        assert handle.predict(X).tolist() == [1, 1, 1]
        assert flags.status()["m"].extension_errors["exporters"] >= 1


def test_a_listener_that_raises_is_logged_counted_and_skipped(
    workspace: Workspace, set_flags: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """A raising listener does not keep the next listener from its events."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"not a pickle", suffix=".pkl")
    set_flags(m="v2")
    received: list[object] = []

    def raising(event: object) -> None:
        raise ValueError("listener bug")

    with ModelFlags(workspace.write(), listeners=[raising, received.append]) as flags:
        assert flags.get_model("m", "u1").predict(X).tolist() == [1, 1, 1]
        assert flags.flush(5)
        status = flags.status()["m"]
    assert received, "the second listener received nothing"
    assert status.extension_errors["listeners"] == len(received)
    assert errors_logged(caplog, "listener")


def test_an_actuator_that_raises_leaves_the_local_rollback_in_force(
    workspace: Workspace, set_flags: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """The rollback at the source fails off the request path: an event, a count, a log line;
    requests are served by the LKG."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    set_flags(m="v2")
    actuator = RaisingActuator()
    seen: list[object] = []
    with ModelFlags(
        workspace.write(), metrics=True, actuator=actuator, listeners=[seen.append]
    ) as flags:
        assert flags.get_model("m", "u1").predict(X).tolist() == [2, 2, 2]
        assert flags.rollback("m", "v2", reason="a person saw bad outcomes") == ["v2"]
        handle = flags.get_model("m", "u1")
        assert (handle.version, handle.reason) == ("v1", ServingReason.ROLLED_BACK)
        wait_until(
            lambda: flags.status()["m"].extension_errors["actuators"] == 1, 5, "actuator count"
        )
        assert flags.flush(5)
    failed = [event for event in seen if isinstance(event, ActuatorFailed)]
    assert [(e.model, e.version, e.flag_key) for e in failed] == [("m", "v2", "m")]
    assert "connection refused" in failed[0].error
    assert actuator.calls == 1
    assert errors_logged(caplog, "rolling back flag 'm' at its source failed")


def test_a_decision_log_whose_folder_is_removed_never_fails_a_request(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """Lines that cannot be written are dropped, logged and counted; requests go on."""
    workspace.add("m", "v1", Constant(1))
    set_flags(m="v1")
    folder = tmp_path / "audit"
    folder.mkdir()
    log = DecisionLog(folder / "decisions.jsonl", max_bytes=300, backups=1)
    with ModelFlags(workspace.write(), decision_log=log) as flags:
        flags.get_model("m", "u1")
        assert flags.flush(5) and log.written == 1
        shutil.rmtree(folder)
        for index in range(5):
            assert flags.get_model("m", f"u{index}").predict(X).tolist() == [1, 1, 1]
        assert flags.flush(5)
        status = flags.status()["m"]
    assert log.written == 1
    assert status.extension_errors["decision_log"] == 5


def test_extension_errors_are_zero_when_nothing_failed(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Each kind of extension has its count in status(), starting at zero."""
    workspace.add("m", "v1", Constant(1))
    set_flags(m="v1")
    with ModelFlags(workspace.write(), metrics=True) as flags:
        flags.get_model("m", "u1").predict(X)
        errors = dict(flags.status()["m"].extension_errors)
    assert errors == {"listeners": 0, "decision_log": 0, "exporters": 0, "actuators": 0}
