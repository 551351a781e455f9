"""Shadow inference in worker processes: same statistics as on threads, isolated from the primary.

Real worker processes (``spawn``), real scikit-learn models loaded in the worker through the same
verified artifact path (sha256 checked), real crashes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelflags import Backoff, ModelFlags
from modelflags.options import ShadowOptions
from modelflags.serving.shadow import ShadowStats
from modelflags.serving.shadow_process import ProcessShadow

from models import Constant, ExitsOnNegative
from support import Workspace

WAIT = 60.0  # a worker process starts (imports numpy and scikit-learn) within this, even loaded
PROCESS = ShadowOptions(executor="process")


def shadowed(
    workspace: Workspace, primary: Any, shadow: Any = None, *, raw: bytes | None = None
) -> Path:
    """Model ``m``: v1 primary, v2 candidate, every call mirrored (shadow flag ``m.shadow``)."""
    workspace.add("m", "v1", primary)
    if raw is None:
        workspace.add("m", "v2", shadow)
    else:
        workspace.add("m", "v2", raw=raw, suffix=".pkl")
    workspace.set("m", shadow_flag="m.shadow")
    return workspace.write()


def report(flags: ModelFlags) -> ShadowStats:
    assert flags.flush(timeout=WAIT), "the shadow queue did not drain"
    stats = flags.shadow_report("m")
    assert list(stats) == [("v1", "v2")]
    return stats[("v1", "v2")]


def workers(flags: ModelFlags) -> ProcessShadow:
    executor = flags._shadow._executor
    assert isinstance(executor, ProcessShadow)
    return executor


@pytest.mark.slow
def test_process_shadow_agrees_with_the_thread_shadow_on_real_models(
    workspace: Workspace,
    trained: dict[str, LogisticRegression],
    features: np.ndarray,
    set_flags: Callable[..., None],
) -> None:
    """Labels and probabilities compared in the parent give the same statistics either way."""
    registry = shadowed(workspace, trained["v1"], trained["v2"])
    set_flags(m="v1", **{"m.shadow": "v2"})
    stats: dict[str, ShadowStats] = {}
    for executor in ("thread", "process"):
        with ModelFlags(registry, shadow=ShadowOptions(executor=executor)) as flags:
            for start in range(0, 40, 8):
                model = flags.get_model("m", f"user-{start}")
                assert model.shadow_version == "v2"
                rows = features[start : start + 8]
                assert model.predict(rows).tolist() == trained["v1"].predict(rows).tolist()
                model.predict_proba(rows)
            stats[executor] = report(flags)
            if executor == "process":
                assert len(workers(flags).pids()) == 1
                assert "v2" not in flags.status()["m"].loaded  # loaded in the worker only
    thread, process = stats["thread"], stats["process"]
    assert (process.mirrored, process.compared, process.errors, process.dropped) == (10, 10, 0, 0)
    assert (thread.mirrored, thread.compared, thread.errors) == (10, 10, 0)
    assert process.agreement == thread.agreement and process.agreement is not None
    assert process.agreement < 1.0  # the two models disagree somewhere
    assert process.mean_abs_diff == pytest.approx(thread.mean_abs_diff)
    assert process.max_abs_diff == pytest.approx(thread.max_abs_diff)
    assert process.shadow_p50 is not None and process.shadow_p50 > 0


@pytest.mark.slow
def test_a_worker_that_dies_is_replaced_and_never_touches_the_primary(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """A crash in the worker is one shadow error; the next call runs in a new worker."""
    registry = shadowed(workspace, Constant(1), ExitsOnNegative(2))
    set_flags(m="v1", **{"m.shadow": "v2"})
    rows = np.ones((3, 2))
    with ModelFlags(registry, shadow=PROCESS) as flags:
        assert flags.get_model("m", "u").predict(rows).tolist() == [1, 1, 1]
        assert (report(flags).compared, report(flags).errors) == (1, 0)
        first = workers(flags).pids()

        assert flags.get_model("m", "u").predict(-rows).tolist() == [1, 1, 1]  # the worker dies
        assert (report(flags).compared, report(flags).errors) == (1, 1)

        assert flags.get_model("m", "u").predict(rows).tolist() == [1, 1, 1]
        assert (report(flags).compared, report(flags).errors) == (2, 1)
        second = workers(flags).pids()
        assert len(second) == 1 and second != first

        os.kill(second[0], signal.SIGKILL)  # killed while idle: replaced before the next call
        (worker,) = workers(flags)._workers
        deadline = time.monotonic() + WAIT
        while worker.process.is_alive():  # the kill lands asynchronously
            assert time.monotonic() < deadline, "SIGKILL did not end the worker"
            time.sleep(0.01)
        assert flags.get_model("m", "u").predict(rows).tolist() == [1, 1, 1]
        stats = report(flags)
        assert (stats.compared, stats.errors, stats.dropped) == (3, 1, 0)
        assert workers(flags).restarts == 2
    assert workers(flags).pids() == []


@pytest.mark.slow
def test_a_version_that_cannot_load_in_the_worker_is_quarantined(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The worker's load failure quarantines the shadow version in the parent; calls are dropped."""
    registry = shadowed(workspace, Constant(1), raw=b"not a pickle")
    set_flags(m="v1", **{"m.shadow": "v2"})
    rows = np.ones((3, 2))
    with ModelFlags(registry, shadow=PROCESS, backoff=Backoff(initial=300.0)) as flags:
        flags.get_model("m", "u").predict(rows)
        assert report(flags).errors == 1
        (quarantine,) = flags.status()["m"].quarantined
        assert quarantine.version == "v2" and "UnpicklingError" in quarantine.cause
        assert flags.get_model("m", "u").predict(rows).tolist() == [1, 1, 1]
        stats = report(flags)
        assert (stats.mirrored, stats.dropped, stats.errors) == (1, 1, 1)


@pytest.mark.slow
def test_arguments_that_cannot_be_pickled_are_a_shadow_error_only(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The primary answers; the shadow call fails to cross and counts as an error."""
    registry = shadowed(workspace, Constant(1), Constant(2))
    set_flags(m="v1", **{"m.shadow": "v2"})
    with ModelFlags(registry, shadow=PROCESS) as flags:
        assert flags.get_model("m", "u").predict([lambda: 0]).tolist() == [1]
        assert (report(flags).compared, report(flags).errors) == (0, 1)
        assert flags.get_model("m", "u").predict(np.ones((2, 2))).tolist() == [1, 1]
        assert (report(flags).compared, report(flags).errors) == (1, 1)


def test_loaders_that_cannot_be_pickled_are_refused_when_the_instance_is_made(
    workspace: Workspace,
) -> None:
    """A lambda loader could never reach the worker: say so at once, naming it."""
    registry = shadowed(workspace, Constant(1), Constant(2))
    with pytest.raises(ValueError, match="loader 'inline' cannot be pickled"):
        ModelFlags(registry, shadow=PROCESS, loaders={"inline": lambda path: None})


def test_an_unknown_shadow_executor_is_refused(workspace: Workspace) -> None:
    """Only "thread" and "process" exist."""
    registry = shadowed(workspace, Constant(1), Constant(2))
    with pytest.raises(ValueError, match="'thread' or 'process'"):
        ModelFlags(registry, shadow=ShadowOptions(executor="fork"))  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_after_shadow_calls_starts_its_own_worker(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """gunicorn --preload: a child forked from a process whose shadow worker runs neither reads
    the parent's pipe nor stops its worker; it starts one of its own and the parent's still
    answers the parent."""
    registry = shadowed(workspace, Constant(1), Constant(2))
    set_flags(m="v1", **{"m.shadow": "v2"})
    rows = np.ones((2, 2))
    with ModelFlags(registry, shadow=PROCESS) as flags:
        flags.get_model("m", "parent").predict(rows)
        assert report(flags).compared == 1
        (parent_worker,) = workers(flags).pids()
        report_file = tmp_path / "child.txt"
        pid = os.fork()
        if pid == 0:  # the child: checks, then leaves without returning into pytest
            status = 1
            try:
                flags.reset_shadow("m")
                flags.get_model("m", "child").predict(rows)
                stats = report(flags)
                pids = workers(flags).pids()
                assert (stats.compared, stats.errors) == (1, 0), stats
                assert len(pids) == 1 and pids[0] != parent_worker, pids
                flags.close()
                status = 0
            except BaseException as exc:  # reported to the parent
                report_file.write_text(repr(exc))
            finally:
                os._exit(status)
        deadline = time.monotonic() + WAIT
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the child did not finish")
            time.sleep(0.01)
        failure = report_file.read_text() if report_file.exists() else "(no report)"
        assert os.waitstatus_to_exitcode(status) == 0, failure
        flags.get_model("m", "parent-again").predict(rows)
        assert report(flags).compared == 2
        assert workers(flags).pids() == [parent_worker]
