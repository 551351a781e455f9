"""The canary driver: stages advance while guardrails hold, and a breach rolls the flag back, with a
recording actuator and a fake clock, then end to end on flagd files and on Unleash (marked)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent

from modelflags import FellBack, ModelFlags
from modelflags.rollout.actuators import Actuator, ActuatorError, FlagdFileActuator, UnleashActuator
from modelflags.rollout.canary import CanaryDriver, CanaryResult, CanaryStep, Stage

from models import Broken, Constant
from support import FakeClock, Workspace, wait_until
from support.unleash import REFRESH_INTERVAL, StackInfo, UnleashAdmin


@dataclass(frozen=True)
class Breach:
    """What a guardrail reports: the rule that fired and the value it saw."""

    rule: str
    value: float = 0.0


class RecordingActuator:
    """Records every call; raises ``fail_split_at`` (a percent) or on rollback when asked."""

    def __init__(self, *, fail_split_at: int | None = None, fail_rollback: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_split_at = fail_split_at
        self.fail_rollback = fail_rollback

    @property
    def percent(self) -> int:
        """The candidate's share in the last split written (0 before any, or after a rollback)."""
        for call in reversed(self.calls):
            if call[0] == "rollback":
                return 0
            if call[0] == "set_split":
                return int(call[2]["v2"])
        return 0

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        self.calls.append(("set_split", flag_key, dict(weights)))
        if weights.get("v2") == self.fail_split_at:
            raise ActuatorError("HTTP 503: try later", flag_key=flag_key, actuator="fake")

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        self.calls.append(("rollback", flag_key, to_version, from_version))
        if self.fail_rollback:
            raise ActuatorError("HTTP 503: still down", flag_key=flag_key, actuator="fake")


def driver(
    actuator: Actuator,
    clock: FakeClock,
    check: Any = lambda: [],
    **options: Any,
) -> CanaryDriver:
    """A driver on flag "recommender", v1 -> v2, whose sleep moves the fake clock."""
    options.setdefault("stage_seconds", 10.0)
    options.setdefault("poll_s", 2.0)
    return CanaryDriver(
        actuator,
        flag_key="recommender",
        baseline="v1",
        candidate="v2",
        check=check,
        clock=clock,
        sleep=clock.advance,
        **options,
    )


def events(result: CanaryResult) -> list[tuple[str, int]]:
    return [(step.event, step.percent) for step in result.timeline]


# -- the driver, with a recording actuator ------------------------------------------------------


def test_completes_through_all_stages_when_healthy(clock: FakeClock) -> None:
    """With no breach the flag moves 1 -> 10 -> 50 -> 100 %, each stage held for its seconds."""
    actuator = RecordingActuator()
    checks: list[float] = []

    def check() -> list[Breach]:
        checks.append(clock())
        return []

    result = driver(actuator, clock, check).run()

    assert result.outcome == "completed"
    assert result.stages_reached == (1, 10, 50, 100)
    assert result.percent == 100
    assert (result.breach, result.error) == (None, None)
    assert actuator.calls == [
        ("set_split", "recommender", {"v1": 99, "v2": 1}),
        ("set_split", "recommender", {"v1": 90, "v2": 10}),
        ("set_split", "recommender", {"v1": 50, "v2": 50}),
        ("set_split", "recommender", {"v1": 0, "v2": 100}),
    ]
    assert events(result) == [
        ("start", 0),
        ("split", 1),
        ("healthy", 1),
        ("split", 10),
        ("healthy", 10),
        ("split", 50),
        ("healthy", 50),
        ("split", 100),
        ("healthy", 100),
        ("completed", 100),
    ]
    assert [step.time for step in result.timeline if step.event == "split"] == [0, 10, 20, 30]
    assert len(checks) == 4 * 6  # at 0, 2, 4, 6, 8 and 10 s of each stage
    assert result.timeline[-1].time == 40


def test_stage_objects_set_their_own_duration_and_the_last_poll_is_short(
    clock: FakeClock,
) -> None:
    """Stage(percent, seconds) sets each stage's length; a poll never overshoots a stage."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    canary = CanaryDriver(
        RecordingActuator(),
        flag_key="recommender",
        baseline="v1",
        candidate="v2",
        stages=[Stage(5, 2.5), Stage(100, 0)],
        check=lambda: [],
        poll_s=1.0,
        clock=clock,
        sleep=sleep,
    )
    result = canary.run()
    assert result.outcome == "completed"
    assert waits == [1.0, 1.0, 0.5]
    assert [step.time for step in result.timeline if step.event == "split"] == [0, 2.5]


def test_rolls_back_at_the_stage_where_a_breach_appears(clock: FakeClock) -> None:
    """A breach seen at 50 % rolls everyone back to the baseline and ends the canary there."""
    actuator = RecordingActuator()
    seen: list[CanaryStep] = []

    def check() -> list[Breach]:
        if actuator.percent >= 50 and clock() >= 1024:
            return [Breach("error_rate", 0.3), Breach("latency_p99", 0.9)]
        return []

    result = driver(actuator, clock, check, on_step=seen.append).run()

    assert result.outcome == "rolled_back"
    assert result.stages_reached == (1, 10, 50)
    assert result.breach == Breach("error_rate", 0.3)
    assert result.error is None
    assert actuator.calls[-1] == ("rollback", "recommender", "v1", "v2")
    assert [call[0] for call in actuator.calls].count("rollback") == 1
    assert events(result)[-3:] == [("split", 50), ("breach", 50), ("rolled_back", 0)]
    breach = result.timeline[-2]
    assert (breach.time, breach.detail) == (24, "error_rate; latency_p99")
    assert tuple(seen) == result.timeline


def test_fails_and_rolls_back_when_the_actuator_raises(clock: FakeClock) -> None:
    """An actuator error ends the canary as failed, with one rollback tried and the error kept."""
    actuator = RecordingActuator(fail_split_at=10)
    result = driver(actuator, clock).run()

    assert result.outcome == "failed"
    assert isinstance(result.error, ActuatorError)
    assert "503" in str(result.error)
    assert result.stages_reached == (1,)
    assert [call[0] for call in actuator.calls] == ["set_split", "set_split", "rollback"]
    assert events(result)[-2:] == [("error", 1), ("rolled_back", 0)]


def test_fails_without_raising_when_the_rollback_raises_too(clock: FakeClock) -> None:
    """When the rollback fails as well, the first error is kept and the rollback is not retried."""
    actuator = RecordingActuator(fail_split_at=50, fail_rollback=True)
    result = driver(actuator, clock).run()

    assert result.outcome == "failed"
    assert result.error is not None and "HTTP 503: try later" in str(result.error)
    assert [call[0] for call in actuator.calls].count("rollback") == 1
    assert events(result)[-2:] == [("error", 10), ("rollback_failed", 10)]
    assert "still down" in result.timeline[-1].detail


def test_a_breach_whose_rollback_fails_is_a_failure_that_keeps_the_breach(
    clock: FakeClock,
) -> None:
    """A breach followed by a failed rollback reports both the breach and the rollback error."""
    actuator = RecordingActuator(fail_rollback=True)
    result = driver(actuator, clock, check=lambda: [Breach("error_rate")]).run()
    assert result.outcome == "failed"
    assert result.breach == Breach("error_rate")
    assert isinstance(result.error, ActuatorError)
    assert events(result)[-2:] == [("breach", 1), ("rollback_failed", 1)]


def test_a_check_that_raises_fails_the_canary_and_rolls_back(clock: FakeClock) -> None:
    """A guardrail check that raises cannot vouch for the candidate: rollback, outcome failed."""

    def check() -> list[Breach]:
        raise KeyError("no metrics yet")

    actuator = RecordingActuator()
    result = driver(actuator, clock, check).run()
    assert result.outcome == "failed"
    assert isinstance(result.error, KeyError)
    assert actuator.calls[-1][0] == "rollback"
    assert events(result)[-2:] == [("error", 1), ("rolled_back", 0)]


def test_an_interrupt_rolls_back_once_and_propagates(clock: FakeClock) -> None:
    """Ctrl-C during a canary still leaves the flag on the baseline, then propagates."""
    actuator = RecordingActuator()

    def check() -> list[Breach]:
        if actuator.percent == 10:
            raise KeyboardInterrupt
        return []

    with pytest.raises(KeyboardInterrupt):
        driver(actuator, clock, check).run()
    assert [call[0] for call in actuator.calls] == ["set_split", "set_split", "rollback"]


def test_stop_from_another_thread_rolls_back_a_running_canary() -> None:
    """stop() interrupts the wait of a running canary at once, which rolls back and returns."""
    actuator = RecordingActuator()
    reached_10 = threading.Event()
    canary = CanaryDriver(
        actuator,
        flag_key="recommender",
        baseline="v1",
        candidate="v2",
        stages=[Stage(1, 0), Stage(10, 3600), Stage(100, 3600)],
        check=lambda: [],
        on_step=lambda step: reached_10.set() if step.percent == 10 else None,
    )
    results: list[CanaryResult] = []
    runner = threading.Thread(target=lambda: results.append(canary.run()))
    runner.start()
    assert reached_10.wait(5)
    started = time.monotonic()
    canary.stop()
    runner.join(5)

    assert not runner.is_alive()
    assert time.monotonic() - started < 2
    [result] = results
    assert result.outcome == "rolled_back"
    assert (result.breach, result.error) == (None, None)
    assert result.stages_reached == (1, 10)
    assert events(result)[-2:] == [("stopped", 10), ("rolled_back", 0)]
    assert actuator.calls[-1] == ("rollback", "recommender", "v1", "v2")


def test_stop_before_run_rolls_back_at_once(clock: FakeClock) -> None:
    """A canary stopped before it runs writes no split, only the rollback."""
    actuator = RecordingActuator()
    canary = driver(actuator, clock)
    canary.stop()
    result = canary.run()
    assert result.outcome == "rolled_back"
    assert actuator.calls == [("rollback", "recommender", "v1", "v2")]
    assert result.stages_reached == ()


def test_on_step_errors_are_ignored(clock: FakeClock) -> None:
    """A step callback that raises does not change the canary."""

    def explode(step: CanaryStep) -> None:
        raise RuntimeError("dashboard down")

    assert driver(RecordingActuator(), clock, on_step=explode).run().outcome == "completed"


def test_a_driver_runs_once(clock: FakeClock) -> None:
    """Running a finished driver again raises RuntimeError instead of repeating the canary."""
    canary = driver(RecordingActuator(), clock)
    canary.run()
    with pytest.raises(RuntimeError, match="once"):
        canary.run()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stages": []}, "at least one stage"),
        ({"stages": [10, 10]}, "increase"),
        ({"stages": [50, 10]}, "increase"),
        ({"stages": [0, 100]}, "1..100"),
        ({"stages": [101]}, "1..100"),
        ({"stages": [Stage(10, 1), 50]}, None),
        ({"stage_seconds": -1.0}, ">= 0"),
        ({"poll_s": 0.0}, "poll_s"),
        ({"candidate": "v1"}, "both"),
    ],
)
def test_options_are_validated(
    clock: FakeClock, options: dict[str, Any], message: str | None
) -> None:
    """Stages must increase strictly within 1..100; seconds and poll interval must make sense."""
    arguments: dict[str, Any] = {
        "flag_key": "recommender",
        "baseline": "v1",
        "candidate": "v2",
        "check": lambda: [],
        **options,
    }
    if message is None:
        assert CanaryDriver(RecordingActuator(), **arguments).stages == (
            Stage(10, 1),
            Stage(50, 60),
        )
        return
    with pytest.raises(ValueError, match=message):
        CanaryDriver(RecordingActuator(), **arguments)


# -- end to end: a deliberately bad version ------------------------------------------------------


class ErrorRate:
    """A tiny error-rate guardrail kept by the test.

    ``check()`` first sends a batch of requests from new users through ``flags`` (the traffic of
    one poll), then reports a breach when at least ``min_requests`` requests asked for the
    candidate and more than ``max_rate`` of them failed (the call fell back).
    """

    def __init__(
        self,
        model: str,
        candidate: str,
        *,
        batch: int = 200,
        min_requests: int = 10,
        max_rate: float = 0.5,
    ) -> None:
        self.model = model
        self.candidate = candidate
        self.batch = batch
        self.min_requests = min_requests
        self.max_rate = max_rate
        self.flags: ModelFlags | None = None
        self.requests = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._users = itertools.count()
        self._rows = np.zeros((3, 2))

    def listener(self, event: object) -> None:
        """Counts fresh inference failures of the candidate (ModelFlags events)."""
        if isinstance(event, FellBack) and event.requested == self.candidate:
            with self._lock:
                self.errors += 1

    def traffic(self) -> None:
        assert self.flags is not None
        for _ in range(self.batch):
            handle = self.flags.get_model(self.model, f"user-{next(self._users)}")
            handle.predict(self._rows)  # answered by v1 when the candidate fails
            if handle.requested_version == self.candidate:
                with self._lock:
                    self.requests += 1
                    # Fell back before the call (the candidate is quarantined): an error too.
                    self.errors += handle.fell_back

    def check(self) -> list[Breach]:
        assert self.flags is not None
        self.traffic()
        assert self.flags.flush(5)
        with self._lock:
            if self.requests < self.min_requests:
                return []
            rate = self.errors / self.requests
        return [Breach("error_rate", rate)] if rate > self.max_rate else []


@pytest.fixture
def bad_candidate(workspace: Workspace) -> Path:
    """A registry where v1 is good and v2 loads but raises at every inference call."""
    workspace.add("recommender", "v1", Constant(1))
    workspace.add("recommender", "v2", Broken(2))
    return workspace.write()


class ReloadedActuator:
    """Waits after each write until the flagd provider has reloaded the file."""

    def __init__(self, inner: FlagdFileActuator, reloads: Reloads) -> None:
        self.inner = inner
        self.reloads = reloads

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        before = self.reloads.count
        self.inner.set_split(flag_key, weights)
        self.reloads.wait_beyond(before)

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        before = self.reloads.count
        self.inner.rollback(flag_key, to_version=to_version, from_version=from_version)
        self.reloads.wait_beyond(before)


class Reloads:
    """Counts the provider's configuration-changed events: one per reload of the flag file."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def __call__(self, details: EventDetails) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    @property
    def count(self) -> int:
        with self._changed:
            return self._count

    def wait_beyond(self, count: int, timeout: float = 5.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._count > count, timeout):
                raise AssertionError(f"the flag file was not reloaded within {timeout} s")


@pytest.fixture
def flagd(tmp_path: Path) -> Iterator[tuple[Path, Reloads]]:
    """A flag file serving v1 to everyone, read by the real flagd provider in FILE mode."""
    path = tmp_path / "flags.json"
    flag = {"state": "ENABLED", "variants": {"v1": "v1"}, "defaultVariant": "v1", "targeting": {}}
    path.write_text(json.dumps({"flags": {"recommender": flag}}))
    reloads = Reloads()
    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, reloads)
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=20
        )
    )
    reloads.wait_beyond(0)
    yield path, reloads
    api.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, reloads)
    api.shutdown()
    api.clear_providers()


@pytest.mark.slow
def test_canary_on_flagd_rolls_back_a_bad_version(
    flagd: tuple[Path, Reloads], bad_candidate: Path, clock: FakeClock
) -> None:
    """A candidate that fails at inference breaches the error-rate guardrail during the canary,
    which rolls the flag file back: every user is then served v1."""
    path, reloads = flagd
    guardrail = ErrorRate("recommender", "v2")
    with ModelFlags(bad_candidate, listeners=[guardrail.listener]) as flags:
        guardrail.flags = flags
        canary = driver(
            ReloadedActuator(FlagdFileActuator(path), reloads),
            clock,
            guardrail.check,
            stages=(1, 10, 50, 100),
            stage_seconds=4.0,
            poll_s=1.0,
        )
        result = canary.run()

        assert result.outcome == "rolled_back", result.timeline
        assert isinstance(result.breach, Breach)
        assert result.breach.value > 0.5
        assert 0 < result.percent < 100
        assert guardrail.requests >= guardrail.min_requests
        flag = json.loads(path.read_text())["flags"]["recommender"]
        assert (flag["defaultVariant"], flag["targeting"]) == ("v1", {})

        handles = [flags.get_model("recommender", f"user-{i}") for i in range(500)]
        assert {(h.requested_version, h.version) for h in handles} == {("v1", "v1")}


# -- end to end on Unleash ------------------------------------------------------------------------


@pytest.mark.unleash
@pytest.mark.slow
def test_canary_on_unleash_rolls_back_a_bad_version(
    unleash_stack: StackInfo,
    unleash_admin: UnleashAdmin,
    flag_name: str,
    unleash_provider: Callable[..., Any],
    workspace: Workspace,
) -> None:
    """On a real Unleash read by its real provider, the canary passes 1 %, reaches 10 %, sees the
    candidate fail, and rolls back: every user gets v1 within refresh + 2 s.

    Real time: the provider polls Unleash, so the driver runs on the real clock here.
    """
    flag = flag_name
    workspace.add("recommender", "v1", Constant(1))
    workspace.add("recommender", "v2", Broken(2))
    workspace.set("recommender", flag=flag)
    registry = workspace.write()

    admin = unleash_admin
    with UnleashActuator(unleash_stack.url, unleash_stack.admin_token) as actuator:
        admin.create_flag(flag)
        try:
            actuator.set_split(flag, {"v1": 100})
            api.set_provider_and_wait(unleash_provider())
            client = api.get_client()
            probe = EvaluationContext(targeting_key="probe")
            wait_until(
                lambda: client.get_string_value(flag, "none", probe) == "v1",
                REFRESH_INTERVAL + 2,
                "the new flag",
            )

            guardrail = ErrorRate("recommender", "v2")
            steps: list[CanaryStep] = []
            with ModelFlags(registry, listeners=[guardrail.listener]) as flags:
                guardrail.flags = flags
                result = CanaryDriver(
                    actuator,
                    flag_key=flag,
                    baseline="v1",
                    candidate="v2",
                    stages=[Stage(1, 0), Stage(10, 10), Stage(50, 10), Stage(100, 10)],
                    check=guardrail.check,
                    poll_s=0.25,
                    on_step=steps.append,
                ).run()
                rolled_back = time.monotonic()

                assert result.outcome == "rolled_back", result.timeline
                assert result.stages_reached == (1, 10)
                assert isinstance(result.breach, Breach)
                assert [(s.event, s.percent) for s in result.timeline][-3:] == [
                    ("split", 10),
                    ("breach", 10),
                    ("rolled_back", 0),
                ]
                strategies = environment_strategies(admin, flag)
                assert [[(v["name"], v["weight"]) for v in s["variants"]] for s in strategies] == [
                    [("v1", 1000)]
                ]

                def everyone_on_v1() -> bool:
                    handles = [flags.get_model("recommender", f"user-{i}") for i in range(300)]
                    return {(h.requested_version, h.version) for h in handles} == {("v1", "v1")}

                wait_until(everyone_on_v1, REFRESH_INTERVAL + 2, "everyone on v1")
                assert time.monotonic() - rolled_back <= REFRESH_INTERVAL + 2
        finally:
            api.shutdown()
            api.clear_providers()


def environment_strategies(admin: Any, flag: str) -> Sequence[dict[str, Any]]:
    [env] = [e for e in admin.get_flag(flag)["environments"] if e["name"] == "development"]
    assert env["enabled"] is True
    strategies: list[dict[str, Any]] = env["strategies"]
    return strategies
