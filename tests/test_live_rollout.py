"""Live rollout and rollback with flagd in FILE mode: prewarm, concurrency, async, change events.

No service is needed: the flag source is flagd's provider polling a real flag file every 50 ms,
edited atomically (write a temporary file, then rename) as an operator or a deploy job would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.flag_evaluation import FlagResolutionDetails

from modelflags import Backoff, Loaded, ModelFlags
from modelflags.client import FALLBACK, PREWARMING
from modelflags.telemetry.events import Prewarmed

from models import Constant
from support import EventRecorder, Traffic, Workspace, holds_for, wait_until

FLAG = "recommender"
#: flagd polls the file's modification time this often in the tests (milliseconds).
POLL_MS = 50
#: The issue's bound for "an edit of the flag file is followed".
SWITCH_BOUND = 1.0
X = np.zeros((3, 2))


def write_flag_file(
    path: Path, default: str = "v1", targeting: dict[str, Any] | None = None
) -> None:
    """Replace the flagd flag file atomically: a reader sees the old or the new file, never half."""
    document = {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {
            FLAG: {
                "state": "ENABLED",
                "variants": {version: version for version in ("v1", "v2", "v3")},
                "defaultVariant": default,
                "targeting": targeting or {},
            }
        },
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path)


@dataclass
class SlowLoader:
    """A loader that takes ``delay`` seconds, or waits for ``gate`` when one is given."""

    delay: float = 0.0
    gate: threading.Event | None = None
    started: threading.Event = field(default_factory=threading.Event)
    calls: int = 0

    def __call__(self, path: Path) -> Any:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10.0)
        elif self.delay:
            time.sleep(self.delay)
        return joblib.load(path)


@pytest.fixture
def flag_path(tmp_path: Path) -> Path:
    """A flag file where everyone gets v1."""
    path = tmp_path / "flags.json"
    write_flag_file(path, "v1")
    return path


def start_flagd(path: Path, provider_class: type[FlagdProvider] = FlagdProvider) -> FlagdProvider:
    """Set a flagd provider in FILE mode on ``path`` (polled every POLL_MS) and wait for it."""
    provider = provider_class(
        resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=POLL_MS
    )
    api.set_provider_and_wait(provider)
    return provider


@pytest.fixture
def flagd(flag_path: Path) -> Iterator[Path]:
    """flagd's provider in FILE mode on ``flag_path``, set as the default provider."""
    start_flagd(flag_path)
    yield flag_path
    api.shutdown()


def make_registry(workspace: Workspace, slow: tuple[str, ...] = ()) -> Path:
    """v1, v2 and v3 of ``recommender`` predicting 1, 2 and 3; ``slow`` ones use the slow loader."""
    for label, version in enumerate(("v1", "v2", "v3"), start=1):
        extra = {"loader": "slow"} if version in slow else {}
        workspace.add(FLAG, version, Constant(label), **extra)
    return workspace.write()


def serve_users(flags: ModelFlags, count: int, prefix: str = "user") -> Counter[str]:
    """Serve ``count`` users (so the prewarm sample has contexts); the versions served."""
    return Counter(flags.get_model(FLAG, f"{prefix}-{i}").version for i in range(count))


# -- prewarm after a flag change ---------------------------------------------------------------


def test_flag_file_edit_prewarms_the_new_version_before_anyone_asks(
    flagd: Path, workspace: Workspace
) -> None:
    """An edit is followed within 1 s, and the new version is already loaded when first asked."""
    recorder = EventRecorder()
    with ModelFlags(make_registry(workspace), listeners=[recorder]) as flags:
        assert serve_users(flags, 20) == {"v1": 20}
        edited = time.monotonic()
        write_flag_file(flagd, "v2")
        at, prewarmed = recorder.wait_for(Prewarmed, SWITCH_BOUND + 1.0, since=edited)
        assert at - edited < SWITCH_BOUND
        assert prewarmed == Prewarmed(FLAG, ("v2",), (), 20, prewarmed.seconds)
        assert "v2" in flags.status()[FLAG].loaded

        handle = flags.get_model(FLAG, "user-1")
        served_after = time.monotonic() - edited
        assert (handle.version, handle.requested_version) == ("v2", "v2")
        assert handle.reason != PREWARMING and not handle.fell_back
        assert handle.predict(X).tolist() == [2, 2, 2]
        assert served_after < SWITCH_BOUND + 0.5
        assert flags.flush(timeout=5)
        loaded_v2 = [event for event in recorder.of(Loaded) if event.version == "v2"]
        assert len(loaded_v2) == 1  # by the prewarm pass, not by the request


def test_requests_meeting_a_version_being_prewarmed_get_the_last_good_version_at_once(
    flagd: Path, workspace: Workspace
) -> None:
    """While a changed flag's version loads in the background, requests do not wait for it."""
    gate = threading.Event()
    loader = SlowLoader(gate=gate)
    recorder = EventRecorder()
    registry = make_registry(workspace, slow=("v2",))
    with ModelFlags(registry, loaders={"slow": loader}, listeners=[recorder]) as flags:
        serve_users(flags, 10)
        write_flag_file(flagd, "v2")
        try:
            assert loader.started.wait(SWITCH_BOUND + 1.0), "the prewarm pass did not start"
            asked = time.perf_counter()
            handle = flags.get_model(FLAG, "user-3")
            waited = time.perf_counter() - asked
            assert waited < 0.2, f"a request waited {waited:.3f} s for a prewarming version"
            assert handle.version == "v1" and handle.requested_version == "v2"
            assert handle.reason == PREWARMING and handle.fell_back
            assert handle.predict(X).tolist() == [1, 1, 1]
        finally:
            gate.set()
        _, prewarmed = recorder.wait_for(Prewarmed, 5.0)
        assert prewarmed.versions == ("v2",)
        handle = flags.get_model(FLAG, "user-3")
        assert (handle.version, handle.fell_back) == ("v2", False)
        assert handle.reason != PREWARMING
        assert loader.calls == 1


@pytest.mark.slow
def test_hot_traffic_racing_a_flag_change_never_waits_for_the_new_version(
    flagd: Path, workspace: Workspace
) -> None:
    """Requests meeting the new version before the change event arrives do not stall.

    The provider switches its flags before it tells anyone, and the prewarm pass marks what it
    loads only after it re-evaluated its sample: busy threads meet the new version in between.
    No request waits for it: while the last known good version is in memory it answers them,
    the one that started the load included. (A load of 1 s and a bar of 0.8 s tell a wait for
    the load from four threads sharing the interpreter lock on a busy machine, which can hold a
    request for a quarter of a second.)
    """
    loader = SlowLoader(delay=1.0)
    registry = make_registry(workspace, slow=("v2",))
    stalled: list[float] = []
    versions: Counter[str] = Counter()
    stop = threading.Event()
    lock = threading.Lock()
    with ModelFlags(registry, loaders={"slow": loader}) as flags:
        serve_users(flags, 64)

        def hammer(index: int) -> None:
            deadline = time.monotonic() + 5.0
            while not stop.is_set() and time.monotonic() < deadline:
                asked = time.perf_counter()
                handle = flags.get_model(FLAG, f"hot-{index}")
                waited = time.perf_counter() - asked
                with lock:
                    versions[handle.version] += 1
                    if waited > 0.8:
                        stalled.append(waited)

        def served(version: str | None = None) -> int:
            with lock:
                return versions[version] if version else versions.total()

        workers = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(4)]
        for worker in workers:
            worker.start()
        try:
            wait_until(lambda: served() >= 200, 5.0, "the threads serving v1")
            write_flag_file(flagd, "v2")
            wait_until(lambda: "v2" in flags.status()[FLAG].loaded, 3.0, "v2 loaded")
            wait_until(lambda: served("v2") >= 50, 5.0, "the threads serving v2")
        finally:
            stop.set()
            for worker in workers:
                worker.join(5.0)
    assert set(versions) == {"v1", "v2"} and loader.calls == 1
    assert not stalled, f"{len(stalled)} requests waited {max(stalled):.2f} s for the load"


class PausePrewarmLogs(logging.Handler):
    """Holds the prewarm thread inside its next warning log until resumed (at most 5 s)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.paused = threading.Event()
        self.resume = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread().name.startswith("modelflags-prewarm"):
            self.paused.set()
            self.resume.wait(5.0)


def test_a_version_that_failed_its_prewarm_is_reported_as_a_fallback_at_once(
    flagd: Path, workspace: Workspace
) -> None:
    """Once the prewarm pass quarantined a version, requests say FALLBACK, not PREWARMING.

    The pass quarantines a version that fails to load before it stops calling it "warming"; a
    request in between gets the right version (the LKG) with the wrong reason.
    """
    workspace.add(FLAG, "v1", Constant(1))
    workspace.add(FLAG, "v2", raw=b"not a pickle", suffix=".pkl")
    pause = PausePrewarmLogs()
    logger = logging.getLogger("modelflags")
    with ModelFlags(workspace.write(), backoff=Backoff(initial=300.0)) as flags:
        serve_users(flags, 5)
        logger.addHandler(pause)
        try:
            write_flag_file(flagd, "v2")
            assert pause.paused.wait(SWITCH_BOUND + 1.0), "the prewarm pass logged nothing"
            assert [q.version for q in flags.status()[FLAG].quarantined] == ["v2"]
            handle = flags.get_model(FLAG, "user-1")
        finally:
            pause.resume.set()
            logger.removeHandler(pause)
        assert (handle.version, handle.requested_version) == ("v1", "v2")
        assert handle.reason == FALLBACK


@pytest.mark.slow
def test_without_change_events_the_first_request_loads_the_version_itself(
    flag_path: Path, workspace: Workspace
) -> None:
    """A version flagged before the SDK started is loaded by the first request that meets it."""
    write_flag_file(flag_path, "v2")
    start_flagd(flag_path)
    loader = SlowLoader(delay=0.2)
    recorder = EventRecorder()
    registry = make_registry(workspace, slow=("v2",))
    try:
        with ModelFlags(registry, loaders={"slow": loader}, listeners=[recorder]) as flags:
            asked = time.perf_counter()
            handle = flags.get_model(FLAG, "user-1")
            waited = time.perf_counter() - asked
            assert handle.version == "v2" and handle.reason != PREWARMING
            assert not handle.fell_back
            assert waited >= 0.2  # the request loaded it
            assert loader.calls == 1
            assert flags.flush(timeout=5)
            assert [e.version for e in recorder.of(Loaded)] == ["v2"]
            assert recorder.of(Prewarmed) == []
    finally:
        api.shutdown()


@pytest.mark.slow
def test_prewarm_false_leaves_loading_to_the_first_request(
    flagd: Path, workspace: Workspace
) -> None:
    """With ``prewarm=False`` a change event loads nothing; the first request loads as before."""
    seen = threading.Event()

    def on_change(details: EventDetails) -> None:
        if FLAG in (details.flags_changed or []):
            seen.set()

    recorder = EventRecorder()
    with ModelFlags(make_registry(workspace), listeners=[recorder], prewarm=False) as flags:
        serve_users(flags, 10)
        api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)
        try:
            write_flag_file(flagd, "v2")
            assert seen.wait(SWITCH_BOUND + 1.0), "flagd reported no change"
            # No point to synchronise on says "the change was handled": watch for a while.
            holds_for(lambda: "v2" not in flags.status()[FLAG].loaded, 0.3, "nothing loads v2")
            handle = flags.get_model(FLAG, "user-1")
            assert (handle.version, handle.reason) == ("v2", "STATIC")
            assert flags.flush(timeout=5)
            assert [e.version for e in recorder.of(Loaded)] == ["v1", "v2"]
            assert recorder.of(Prewarmed) == []
        finally:
            api.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)


def test_prewarm_samples_only_the_most_recent_contexts(flagd: Path, workspace: Workspace) -> None:
    """The prewarm pass evaluates a bounded ring of recent contexts, not every user ever seen."""
    beta = {"if": [{"==": [{"var": "plan"}, "beta"]}, "v3", "v2"]}
    recorder = EventRecorder()
    with ModelFlags(make_registry(workspace), listeners=[recorder], prewarm_sample=4) as flags:
        flags.get_model(FLAG, {"id": "early-beta", "plan": "beta"})
        for i in range(30):
            flags.get_model(FLAG, {"id": f"user-{i}", "plan": "free"})
        edited = time.monotonic()
        write_flag_file(flagd, "v1", beta)
        _, prewarmed = recorder.wait_for(Prewarmed, SWITCH_BOUND + 1.0, since=edited)
        assert prewarmed.versions == ("v2",) and prewarmed.contexts == 4
        assert "v3" not in flags.status()[FLAG].loaded
        # v3 was not in the sample: the first request meeting it starts its load in the
        # background and is answered by the last known good version meanwhile.
        beta = {"id": "early-beta", "plan": "beta"}
        handle = flags.get_model(FLAG, beta)
        assert (handle.version, handle.requested_version, handle.reason) == ("v1", "v3", PREWARMING)
        wait_until(lambda: "v3" in flags.status()[FLAG].loaded, 5.0, "v3 loaded")
        handle = flags.get_model(FLAG, beta)
        assert (handle.version, handle.reason) == ("v3", "TARGETING_MATCH")


# -- change events reach the SDK -----------------------------------------------------------------


@pytest.mark.slow
def test_flagd_change_event_lifts_the_quarantine_of_the_flag_it_changed(
    flagd: Path, workspace: Workspace
) -> None:
    """A broken version stays quarantined for minutes, until its flag is changed at the source."""
    workspace.add(FLAG, "v1", Constant(1))
    workspace.add(FLAG, "v2", raw=b"not a pickle", suffix=".pkl")
    workspace.add(FLAG, "v3", Constant(3))
    recorder = EventRecorder()
    backoff = Backoff(initial=300.0)
    with ModelFlags(workspace.write(), listeners=[recorder], backoff=backoff) as flags:
        serve_users(flags, 5)
        write_flag_file(flagd, "v2")
        _, prewarmed = recorder.wait_for(Prewarmed, SWITCH_BOUND + 1.0)
        assert (prewarmed.versions, prewarmed.failed) == ((), ("v2",))
        (quarantine,) = flags.status()[FLAG].quarantined
        assert quarantine.version == "v2" and quarantine.retry_in_s > 200
        handle = flags.get_model(FLAG, "user-1")
        assert (handle.version, handle.requested_version) == ("v1", "v2")
        assert handle.reason == FALLBACK

        edited = time.monotonic()
        write_flag_file(flagd, "v3")  # pointed elsewhere: the SDK is told the flag changed
        _, prewarmed = recorder.wait_for(Prewarmed, SWITCH_BOUND + 1.0, since=edited)
        assert prewarmed.versions == ("v3",)
        (lifted,) = flags.status()[FLAG].quarantined  # may be tried now; its failures are kept
        assert (lifted.version, lifted.retry_in_s, lifted.failures) == ("v2", 0.0, 1)
        assert flags.get_model(FLAG, "user-1").version == "v3"


# -- a switch under concurrent load ----------------------------------------------------------------


@pytest.mark.slow
def test_eight_threads_follow_a_switch_and_a_rollback_without_a_failed_request(
    flagd: Path, workspace: Workspace
) -> None:
    """v1 -> v2 -> v1 under load: no exception, only v1 or v2, and the rollback needs no load."""
    recorder = EventRecorder()
    with (
        ModelFlags(make_registry(workspace), listeners=[recorder]) as flags,
        Traffic(flags, FLAG) as traffic,
    ):
        wait_until(lambda: traffic.all_on("v1"), 5.0, "every thread served by v1")
        write_flag_file(flagd, "v2")
        switch_s = wait_until(lambda: traffic.all_on("v2"), SWITCH_BOUND, "every thread on v2")
        assert "v1" in flags.status()[FLAG].loaded  # the previous version stays cached

        assert flags.flush(timeout=5)  # the switch's events have arrived
        rolled_back = time.monotonic()
        write_flag_file(flagd, "v1")
        rollback_s = wait_until(lambda: traffic.all_on("v1"), SWITCH_BOUND, "rollback to v1")
        after = traffic.calls
        wait_until(lambda: traffic.calls >= after + 400, 5.0, "traffic after the rollback")
    assert traffic.errors == []
    assert set(traffic.answers) <= {("v1", 1), ("v2", 2)}, traffic.answers
    assert {version for version, _ in traffic.answers} == {"v1", "v2"}
    assert [e.version for e in recorder.of(Loaded, since=rolled_back)] == []
    assert [e.version for e in recorder.of(Loaded)] == ["v1", "v2"]
    print(f"switch {switch_s:.3f} s, rollback {rollback_s:.3f} s, answers {dict(traffic.answers)}")


# -- async ----------------------------------------------------------------------------------------


class CountingFlagd(FlagdProvider):
    """flagd in FILE mode that counts string evaluations made through each API."""

    sync_calls = 0
    async_calls = 0

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        CountingFlagd.sync_calls += 1
        return super().resolve_string_details(flag_key, default_value, evaluation_context)

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        CountingFlagd.async_calls += 1
        return FlagdProvider.resolve_string_details(
            self, flag_key, default_value, evaluation_context
        )


@pytest.mark.slow
def test_async_serving_never_blocks_the_event_loop_while_a_version_loads(
    flag_path: Path, workspace: Workspace
) -> None:
    """A 0.5 s load under ``get_model_async`` leaves a 10 ms ticker ticking (gaps < 100 ms)."""
    write_flag_file(flag_path, "v2")
    start_flagd(flag_path, CountingFlagd)
    CountingFlagd.sync_calls = CountingFlagd.async_calls = 0
    loader = SlowLoader(delay=0.5)
    registry = make_registry(workspace, slow=("v2",))

    async def scenario(flags: ModelFlags) -> tuple[list[Any], list[float], float]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        gaps: list[float] = []

        async def ticker() -> None:
            last = loop.time()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = loop.time()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        started = loop.time()
        handles = await asyncio.gather(
            *(flags.get_model_async(FLAG, f"user-{i}") for i in range(4))
        )
        took = loop.time() - started
        stop.set()
        await ticking
        return handles, gaps, took

    try:
        with ModelFlags(registry, loaders={"slow": loader}) as flags:
            handles, gaps, took = asyncio.run(asyncio.wait_for(scenario(flags), 10.0))
    finally:
        api.shutdown()
    assert [handle.version for handle in handles] == ["v2"] * 4
    assert took >= 0.5 and loader.calls == 1
    assert len(gaps) >= 40, f"only {len(gaps)} ticks during a {took:.2f} s load"
    assert max(gaps) < 0.1, f"the event loop stalled for {max(gaps) * 1000:.0f} ms"
    assert CountingFlagd.async_calls == 4 and CountingFlagd.sync_calls == 0
