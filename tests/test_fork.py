"""A ModelFlags made before ``os.fork()`` (gunicorn ``--preload``, multiprocessing) keeps working
in the child: its background threads start again there and no lock is inherited held.

Each test forks for real. The child runs its checks, writes what went wrong to a file and leaves
with ``os._exit`` (status 0 when every check held); the parent waits for it, bounded.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelflags import DecisionLog, FallbackServed, ModelFlags, VersionLoaded
from modelflags.testing import InMemoryFlags, RegistryBuilder

from models import Broken, Constant

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns that forking a threaded process may deadlock: that is what this tests.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

X = np.zeros((3, 2))
CHILD_BOUND = 30.0


def run_in_child(checks: Callable[[], None], report: Path) -> None:
    """Fork; run ``checks`` in the child; fail the test with the child's report if they fail."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 0
        try:
            checks()
        except BaseException:
            report.write_text(traceback.format_exc())
            status = 1
        finally:
            os._exit(status)
    deadline = time.monotonic() + CHILD_BOUND
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child did not finish within {CHILD_BOUND:.0f} s (deadlocked?)")
        time.sleep(0.01)
    code = os.waitstatus_to_exitcode(status)
    details = report.read_text() if report.exists() else "(no report)"
    assert code == 0, f"the child failed with status {code}:\n{details}"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.005)


class Recorder:
    """A listener keeping events, per process (the child gets its own copy)."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def __call__(self, event: object) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    builder.add("m", "v2", Constant(2))
    builder.add("m", "v3", Broken(3))
    builder.add("m", "slow", Constant(4), loader="slow")
    builder.set("m", guardrails={"max_error_rate": 0.5, "min_requests": 1000})
    return builder.write()


@pytest.fixture
def source() -> InMemoryFlags:
    return InMemoryFlags(m="v1").install()


def modelflags_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("modelflags"))


def test_a_modelflags_made_before_fork_serves_in_the_child(
    registry: Path, source: InMemoryFlags, tmp_path: Path
) -> None:
    """The child serves, loads, falls back, delivers events to its listeners, writes its
    decisions and checks guardrails on threads of its own; the parent is unaffected."""
    recorder = Recorder()
    audit = DecisionLog(tmp_path / "decisions.jsonl", salt="s")
    # prewarm=False: the child loads v3 in its request, as the assertions below expect.
    with ModelFlags(registry, listeners=[recorder], decision_log=audit, prewarm=False) as flags:
        for index in range(20):  # the parent's threads run: events, decision log, guardrails
            assert flags.get_model("m", f"parent-{index}").predict(X).tolist() == [1, 1, 1]
        assert flags.flush(5)
        assert "modelflags-events" in modelflags_threads()

        parts = flags._parts
        assert parts.audit is not None and parts.supervisor is not None
        parent_threads = (parts.audit._thread, parts.supervisor._thread)

        def child() -> None:
            # This instance's writer and guardrail threads run again, as new threads.
            for thread in (parts.audit._thread, parts.supervisor._thread):
                assert thread is not None and thread.is_alive(), thread
                assert all(thread is not parent for parent in parent_threads)
            assert {"modelflags-decision-log", "modelflags-guardrails"} <= set(modelflags_threads())
            recorder.events.clear()
            source.set(m="v3")
            handle = flags.get_model("m", "child-user")  # v3 loads here, then fails inference
            assert handle.version == "v3"
            assert handle.predict(X).tolist() == [1, 1, 1]
            assert flags.flush(5), "events or decision lines not delivered in the child"
            assert [e.requested for e in recorder.of(FallbackServed)] == ["v3"]
            assert [e.version for e in recorder.of(VersionLoaded)] == ["v3"]
            assert "modelflags-events" in modelflags_threads()
            assert flags.status()["m"].quarantined[0].version == "v3"
            assert flags.metrics("m")["v3"].errors == 1
            assert flags.check_guardrails() == []
            key = audit.hash_key("child-user")
            assert key in (tmp_path / "decisions.jsonl").read_text()
            flags.close()
            assert not parts.audit._thread.is_alive()
            assert parts.supervisor._thread is not None
            assert not parts.supervisor._thread.is_alive()

        run_in_child(child, tmp_path / "child-report.txt")
        # The parent never saw the child's version.
        assert flags.get_model("m", "parent-0").version == "v1"
        assert flags.status()["m"].quarantined == ()
        assert audit.hash_key("child-user") in (tmp_path / "decisions.jsonl").read_text()


def test_the_child_works_when_the_fork_happens_while_other_threads_hold_locks(
    registry: Path, source: InMemoryFlags, tmp_path: Path
) -> None:
    """A slow load is in flight and another thread holds every lock of the instance at the
    moment of the fork: the child neither waits for the parent's load nor for those locks."""
    gate = threading.Event()
    loading = threading.Event()

    def slow(path: Path) -> Any:
        loading.set()
        gate.wait(20)
        import joblib

        return joblib.load(path)

    recorder = Recorder()
    audit = DecisionLog(tmp_path / "decisions.jsonl", salt="s")
    flags = ModelFlags(
        registry, listeners=[recorder], decision_log=audit, loaders={"slow": slow}, prewarm=False
    )
    parts = flags._parts
    locks = [
        parts.keeper.cache._lock,
        parts.keeper.health._lock,
        parts.keeper.health._write_lock,
        parts.resolver._lock,
        parts.resolver._pins_lock,
        parts.events._lock,
        parts.feed._lock,
        parts.shadow._lock,
        parts.supervisor._lock,
        parts.supervisor.metrics._lock,
        parts.supervisor.guardrails._lock,
        parts.audit._counts_lock,
        parts.audit._close_lock,
    ]
    if parts.policy.prewarmer is not None:
        locks.append(parts.policy.prewarmer._lock)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            holding.set()
            release.wait(20)

    with flags:
        assert flags.get_model("m", "u0").predict(X).tolist() == [1, 1, 1]
        source.set(m="slow")
        loader_thread = threading.Thread(target=flags.get_model, args=("m", "u1"))
        loader_thread.start()
        assert loading.wait(10), "the slow load did not start"
        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(10)

        def child() -> None:
            gate.set()  # the child's own loads of "slow" must not wait
            handle = flags.get_model("m", "child-user")
            assert (handle.version, handle.fell_back) == ("slow", False)
            assert handle.predict(X).tolist() == [4, 4, 4]
            assert flags.flush(5)
            assert [e.version for e in recorder.of(VersionLoaded)][-1:] == ["slow"]
            assert flags.status()["m"].loaded["slow"] > 0
            with flags.override(m="v2"):
                assert flags.get_model("m", "child-user").version == "v2"
            assert audit.hash_key("child-user") in (tmp_path / "decisions.jsonl").read_text()

        try:
            run_in_child(child, tmp_path / "child-report.txt")
        finally:
            release.set()
            gate.set()
            holder.join(10)
            loader_thread.join(10)
        wait_for(lambda: flags.get_model("m", "u2").version == "slow", 10, "the parent's load")


def test_a_closed_modelflags_stays_closed_in_the_child(
    registry: Path, source: InMemoryFlags, tmp_path: Path
) -> None:
    """Nothing restarts in the child for an instance closed before the fork."""
    audit = DecisionLog(tmp_path / "decisions.jsonl")
    flags = ModelFlags(registry, decision_log=audit)
    flags.get_model("m", "u1")
    flags.close()

    parts = flags._parts
    from modelflags import parts as assembly

    def child() -> None:
        assert parts.audit is not None and not parts.audit._thread.is_alive()
        assert parts.supervisor is not None and parts.supervisor._thread is not None
        assert not parts.supervisor._thread.is_alive()
        assert parts not in assembly._LIVE

    run_in_child(child, tmp_path / "child-report.txt")


@pytest.mark.slow
def test_the_fork_hook_keeps_no_instance_alive(registry: Path, source: InMemoryFlags) -> None:
    """The hook holds the parts of open instances weakly; closed ones are forgotten."""
    from modelflags import parts as assembly

    refs = []
    for _ in range(3):
        flags = ModelFlags(registry)
        assert flags._parts in assembly._LIVE
        refs.append(weakref.ref(flags._parts))
        flags.close()
        assert flags._parts not in assembly._LIVE
        del flags
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
