"""Guarded canaries end to end: ``flags.canary`` driven by the SDK's own guardrails on flagd files
and on Unleash (marked), and the ``guarded_canary`` example telling its story.

Traffic runs on a background thread, bounded in time, while the canary runs on the real clock;
the tests of the guardrail policy around canaries play the background checks by hand on a fake
clock where they can.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags import Backoff, BecameLKG, ModelFlags, RolledBack
from modelflags.rollout.actuators import FlagdFileActuator, UnleashActuator
from modelflags.rollout.canary import CanaryResult

from models import Constant
from support import EventRecorder, FakeClock, Traffic, Workspace, settles, wait_until
from support.unleash import CHANGE_BOUND, StackInfo, UnleashAdmin

ROOT = Path(__file__).resolve().parents[1]

BAD_SHARE = 0.3
"""Share of inputs the flaky candidate raises on."""
GUARDRAILS: dict[str, Any] = {
    "max_error_rate": 0.05,
    "min_requests": 20,
    "sustained_s": 0.1,
    "window_s": 5,
    "action": "rollback",
}
ONE_PACED_THREAD: dict[str, Any] = {"threads": 1, "pause_s": 0.0005}
"""Traffic for these tests: one thread, a request about every half millisecond."""
NO_QUARANTINE = Backoff(initial=0.0, maximum=0.0)
"""Every call tries the candidate again, so the error rate the guardrail sees is the candidate's
own (about ``BAD_SHARE``), whatever the policy for calls answered during a quarantine."""


class Flaky(Constant):
    """Raises at inference for inputs whose first value is below ``BAD_SHARE`` (about that share
    of uniform random rows); answers like ``Constant`` otherwise."""

    def predict(self, X: Any) -> np.ndarray:
        if np.asarray(X)[0, 0] < BAD_SHARE:
            raise RuntimeError("feature store timeout")
        return super().predict(X)


def flaky_loader(path: Path) -> Flaky:
    """The registry's ``flaky`` loader (the artifact's bytes do not matter)."""
    return Flaky(2)


class Toggled(Constant):
    """Raises like ``Flaky`` until ``healthy`` is set (a dependency that recovers)."""

    def __init__(self, label: int, healthy: threading.Event) -> None:
        super().__init__(label)
        self.healthy = healthy

    def predict(self, X: Any) -> np.ndarray:
        if not self.healthy.is_set() and np.asarray(X)[0, 0] < BAD_SHARE:
            raise RuntimeError("feature store timeout")
        return super().predict(X)


class Once(Constant):
    """Raises at its first inference call only (one transient timeout)."""

    def __init__(self, label: int) -> None:
        super().__init__(label)
        self.failed = False

    def predict(self, X: Any) -> np.ndarray:
        if not self.failed:
            self.failed = True
            raise RuntimeError("one transient timeout")
        return super().predict(X)


def served(flags: ModelFlags, model: str = "m", users: int = 300) -> set[tuple[str, str]]:
    """(requested, serving) version pairs over ``users`` users now."""
    handles = [flags.get_model(model, f"user-{i}") for i in range(users)]
    return {(handle.requested_version, handle.version) for handle in handles}


def events(result: CanaryResult) -> list[tuple[str, int]]:
    """(event, percent) of each step of a canary's timeline."""
    return [(step.event, step.percent) for step in result.timeline]


@pytest.fixture(autouse=True)
def _reset_openfeature_providers() -> Iterator[None]:
    """Every test ends with OpenFeature's providers shut down and cleared."""
    yield
    api.shutdown()
    api.clear_providers()


@pytest.fixture
def registry(workspace: Workspace) -> Callable[..., Path]:
    """A registry of model "m": v1 good, v2 flaky or good, with guardrails."""

    def make(candidate: str, **guardrails: Any) -> Path:
        workspace.add("m", "v1", Constant(1))
        if candidate == "flaky":
            workspace.add("m", "v2", raw=b"flaky", suffix=".bin", loader="flaky", digest=False)
        else:
            workspace.add("m", "v2", Constant(2))
        workspace.set("m", guardrails={**GUARDRAILS, **guardrails})
        return workspace.write()

    return make


@pytest.fixture
def flag_file(tmp_path: Path) -> Iterator[Path]:
    """A flagd flag file serving v1 to everyone, read by the real flagd provider in FILE mode."""
    path = tmp_path / "flags.json"
    flag = {"state": "ENABLED", "variants": {"v1": "v1"}, "defaultVariant": "v1", "targeting": {}}
    path.write_text(json.dumps({"flags": {"m": flag}}))
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=20
        )
    )
    yield path
    api.shutdown()
    api.clear_providers()


def flag_in(path: Path) -> dict[str, Any]:
    """Flag "m" as the flag file holds it now."""
    flag: dict[str, Any] = json.loads(path.read_text())["flags"]["m"]
    return flag


# -- the example ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_example_rolls_back_its_slow_and_worse_candidate() -> None:
    """The example's timeline shows a stage, the guardrail firing with its evidence, the rollback
    of the flag file, and every user on v1 afterwards."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "guarded_canary.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    out = result.stdout
    assert "before the canary: v1 100% of 2000 users" in out
    assert re.search(r"stage 10 %: flag file split v1 90 %, v2 10 %", out)
    fired = re.findall(
        r"guardrail fired: (max_latency_increase|max_outcome_drop): v2 observed ([\d.]+)(?: ms)? "
        r"against a limit of ([\d.]+)(?: ms)? \(v1: [\d.]+(?: ms)?\); (\d+) requests of v2, "
        r"(\d+) of v1 in [\d.]+ s; relative change of (?:the mean|p95) [-+\d]+% in \[([-+\d]+)%, "
        r"([-+\d]+|\+inf)%\], tolerance ([-+\d]+)%, alpha 0\.0\d+",
        out,
    )
    assert fired, out
    for rule, observed, limit, v2_requests, v1_requests, lower, upper, tolerance in fired:
        if rule == "max_latency_increase":
            assert float(observed) > float(limit)
            assert float(lower) > float(tolerance)  # the whole interval above the tolerance
        else:
            assert float(observed) < float(limit)
            assert float(upper) < float(tolerance)  # the whole interval below it
        assert int(v2_requests) > 0 and int(v1_requests) > 0
    assert re.search(r"the canary sees the breach at (10|50|100) %", out)
    assert "the canary rolled the flag file back: everyone on v1" in out
    assert "flag file now: defaultVariant 'v1', targeting {}" in out
    assert re.search(r"after the canary: v1 100% of 2000 users; last known good v1; 0 failed", out)
    assert "canary outcome: rolled_back" in out


# -- end to end on flagd files --------------------------------------------------------------------


@pytest.mark.slow
def test_canary_on_flagd_rolls_back_a_flaky_candidate_on_its_error_rate(
    flag_file: Path, registry: Callable[..., Path]
) -> None:
    """A candidate raising on a share of inputs breaks max_error_rate at its first stage: the flag
    file is rolled back to v1, a RolledBack event carries the breach, and no caller saw an error."""
    seen = EventRecorder()
    with (
        ModelFlags(
            registry("flaky"),
            loaders={"flaky": flaky_loader},
            backoff=NO_QUARANTINE,
            guardrail_interval=0.05,
            listeners=[seen],
        ) as flags,
        Traffic(flags, "m", **ONE_PACED_THREAD) as traffic,
    ):
        canary = flags.canary(
            "m",
            "v2",
            FlagdFileActuator(flag_file),
            stages=[10, 50, 100],
            stage_seconds=0.5,
            poll_s=0.02,
        )
        result = canary.run()

        assert result.outcome == "rolled_back", result.timeline
        assert result.stages_reached[0] == 10 and 100 not in result.stages_reached
        assert events(result)[-2:] == [("breach", result.percent), ("rolled_back", 0)]
        flag = flag_in(flag_file)
        assert (flag["defaultVariant"], flag["targeting"]) == ("v1", {})

        _, rolled = seen.wait_for(RolledBack, 5)
        assert isinstance(rolled, RolledBack)
        assert (rolled.model, rolled.version, rolled.lkg) == ("m", "v2", "v1")
        breach = rolled.breach
        assert breach is not None and breach.rule == "max_error_rate"
        assert breach.observed > GUARDRAILS["max_error_rate"]
        assert breach.requests >= GUARDRAILS["min_requests"] and breach.lkg_requests > 0
        assert result.breach == breach

        wait_until(lambda: served(flags) == {("v1", "v1")}, 5, "everyone on v1")
        traffic.stop()
        assert traffic.raised == 0
        assert flags.status()["m"].lkg == "v1"
        assert seen.of(BecameLKG) == []


@pytest.mark.slow
def test_canary_on_flagd_rolls_back_a_candidate_that_cannot_load(
    flag_file: Path, workspace: Workspace
) -> None:
    """With the default quarantine back-off, a candidate whose artifact cannot be loaded breaks
    max_error_rate during its canary, which rolls the flag file back; callers never see it."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"truncated upload", suffix=".pkl")
    workspace.set("m", guardrails=GUARDRAILS)
    seen = EventRecorder()
    with (
        ModelFlags(workspace.write(), guardrail_interval=0.05, listeners=[seen]) as flags,
        Traffic(flags, "m", **ONE_PACED_THREAD) as traffic,
    ):
        result = flags.canary(
            "m",
            "v2",
            FlagdFileActuator(flag_file),
            stages=[10, 50, 100],
            stage_seconds=0.5,
            poll_s=0.02,
        ).run()

        assert result.outcome == "rolled_back", result.timeline
        assert 100 not in result.stages_reached
        assert flag_in(flag_file)["defaultVariant"] == "v1"
        _, rolled = seen.wait_for(RolledBack, 5)
        assert isinstance(rolled, RolledBack) and rolled.breach is not None
        assert (rolled.version, rolled.breach.rule) == ("v2", "max_error_rate")
        traffic.stop()
        assert traffic.raised == 0
        assert flags.status()["m"].lkg == "v1"


@pytest.mark.slow
def test_canary_on_flagd_promotes_a_good_candidate_after_all_stages(
    flag_file: Path, registry: Callable[..., Path]
) -> None:
    """A healthy candidate passes 10, 50 and 100 %, the flag file ends on v2 for everyone, and v2
    becomes the last known good version once it has held its guardrails."""
    seen = EventRecorder()
    with (
        ModelFlags(registry("good"), guardrail_interval=0.05, listeners=[seen]) as flags,
        Traffic(flags, "m", **ONE_PACED_THREAD) as traffic,
    ):
        result = flags.canary(
            "m",
            "v2",
            FlagdFileActuator(flag_file),
            stages=[10, 50, 100],
            stage_seconds=0.4,
            poll_s=0.02,
        ).run()

        assert result.outcome == "completed", result.timeline
        assert result.stages_reached == (10, 50, 100)
        assert (result.breach, result.error) == (None, None)
        flag = flag_in(flag_file)
        assert (flag["defaultVariant"], flag["targeting"]) == ("v2", {})

        _, promoted = seen.wait_for(BecameLKG, 5, where=lambda e: e.version == "v2")
        assert promoted == BecameLKG("m", "v2", "v1")
        wait_until(lambda: served(flags) == {("v2", "v2")}, 5, "everyone on v2")
        # v1's calls are still in the guardrail window for a while: v2 stays the LKG all the same.
        settles(lambda: flags.status()["m"].lkg == "v2", 10, "v2 as the LKG")
        traffic.stop()
        assert traffic.raised == 0
        assert seen.of(RolledBack) == []
        assert flags.breaches("m") == []


# -- end to end on Unleash ------------------------------------------------------------------------


@pytest.fixture
def unleash_flag(
    unleash_stack: StackInfo,
    unleash_admin: UnleashAdmin,
    flag_name: str,
    unleash_provider: Callable[..., Any],
) -> Iterator[tuple[str, UnleashAdmin]]:
    """A fresh Unleash flag serving v1 to everyone, read by the real Unleash provider; the model
    "m" of ``workspace`` uses it. The flag is deleted and OpenFeature reset afterwards."""
    unleash_admin.create_flag(flag_name)
    try:
        with UnleashActuator(unleash_stack.url, unleash_stack.admin_token) as actuator:
            actuator.set_split(flag_name, {"v1": 100})
        api.set_provider_and_wait(unleash_provider())
        client = api.get_client()
        probe = EvaluationContext(targeting_key="probe")
        wait_until(
            lambda: client.get_string_value(flag_name, "none", probe) == "v1",
            CHANGE_BOUND,
            "the new flag",
        )
        yield flag_name, unleash_admin
    finally:
        api.shutdown()
        api.clear_providers()


def unleash_variants(admin: Any, flag: str) -> list[list[tuple[str, int]]]:
    """The (variant, weight) lists of the flag's strategies in the development environment."""
    [env] = [e for e in admin.get_flag(flag)["environments"] if e["name"] == "development"]
    assert env["enabled"] is True
    return [[(v["name"], v["weight"]) for v in s["variants"]] for s in env["strategies"]]


@pytest.mark.unleash
@pytest.mark.slow
def test_canary_on_unleash_rolls_back_a_flaky_candidate_on_its_error_rate(
    unleash_stack: StackInfo,
    unleash_flag: tuple[str, UnleashAdmin],
    workspace: Workspace,
    registry: Callable[..., Path],
) -> None:
    """On a real Unleash, the flaky candidate breaks max_error_rate once the SDK sees the split;
    the canary rolls the flag back to v1 through the admin API and every user gets v1 again."""
    flag, admin = unleash_flag
    registry("flaky")
    workspace.set("m", flag=flag)
    seen = EventRecorder()
    with (
        ModelFlags(
            workspace.write(),
            loaders={"flaky": flaky_loader},
            backoff=NO_QUARANTINE,
            guardrail_interval=0.05,
            listeners=[seen],
        ) as flags,
        Traffic(flags, "m", limit_s=30, **ONE_PACED_THREAD) as traffic,
        UnleashActuator(unleash_stack.url, unleash_stack.admin_token) as actuator,
    ):
        result = flags.canary(
            "m", "v2", actuator, stages=[10, 50, 100], stage_seconds=CHANGE_BOUND, poll_s=0.05
        ).run()

        assert result.outcome == "rolled_back", result.timeline
        assert 100 not in result.stages_reached
        assert events(result)[-2:] == [("breach", result.percent), ("rolled_back", 0)]
        assert unleash_variants(admin, flag) == [[("v1", 1000)]]
        _, rolled = seen.wait_for(RolledBack, 5)
        assert isinstance(rolled, RolledBack) and rolled.breach is not None
        assert (rolled.version, rolled.breach.rule) == ("v2", "max_error_rate")
        assert rolled.breach.observed > GUARDRAILS["max_error_rate"]
        assert rolled.breach.requests >= GUARDRAILS["min_requests"]

        wait_until(lambda: served(flags) == {("v1", "v1")}, CHANGE_BOUND, "everyone on v1")
        traffic.stop()
        assert traffic.raised == 0
        assert flags.status()["m"].lkg == "v1"


@pytest.mark.unleash
@pytest.mark.slow
def test_canary_on_unleash_promotes_a_good_candidate_after_all_stages(
    unleash_stack: StackInfo,
    unleash_flag: tuple[str, UnleashAdmin],
    workspace: Workspace,
    registry: Callable[..., Path],
) -> None:
    """On a real Unleash, a healthy candidate passes every stage, the flag serves v2 alone, and
    v2 becomes the last known good version."""
    flag, admin = unleash_flag
    registry("good")
    workspace.set("m", flag=flag)
    seen = EventRecorder()
    with (
        ModelFlags(workspace.write(), guardrail_interval=0.05, listeners=[seen]) as flags,
        Traffic(flags, "m", limit_s=30, **ONE_PACED_THREAD) as traffic,
        UnleashActuator(unleash_stack.url, unleash_stack.admin_token) as actuator,
    ):
        result = flags.canary(
            "m", "v2", actuator, stages=[10, 50, 100], stage_seconds=1.5, poll_s=0.05
        ).run()

        assert result.outcome == "completed", result.timeline
        assert result.stages_reached == (10, 50, 100)
        assert unleash_variants(admin, flag) == [[("v2", 1000)]]
        wait_until(lambda: served(flags) == {("v2", "v2")}, CHANGE_BOUND, "everyone on v2")
        _, promoted = seen.wait_for(BecameLKG, 5, where=lambda e: e.version == "v2")
        assert promoted == BecameLKG("m", "v2", "v1")
        settles(lambda: flags.status()["m"].lkg == "v2", 10, "v2 as the LKG")
        traffic.stop()
        assert traffic.raised == 0
        assert seen.of(RolledBack) == []


# -- guardrail policy around canaries -------------------------------------------------------------


def split_provider() -> InMemoryProvider:
    """Flag "m" sends odd user ids to v2 and even ones to v1 (a steady 50/50 split)."""

    def by_parity(flag: InMemoryFlag[str], context: EvaluationContext | None) -> Any:
        key = int((context.targeting_key if context else None) or 0)
        version = "v2" if key % 2 else "v1"
        return FlagResolutionDetails(value=version, variant=version)

    return InMemoryProvider({"m": InMemoryFlag("v1", {"v1": "v1"}, context_evaluator=by_parity)})


@pytest.mark.slow
def test_quarantine_does_not_hide_a_flaky_candidate_from_the_error_rate_rule(
    registry: Callable[..., Path], set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """With the default back-off, a candidate failing 30% of the calls it runs still breaks
    max_error_rate, and never becomes the LKG whose errors reach callers."""
    set_flags(m="v2")
    rng = np.random.default_rng(1)
    breaches = []
    raised = 0
    with ModelFlags(
        registry("flaky", sustained_s=0, window_s=30),
        loaders={"flaky": flaky_loader},
        clock=clock,
        guardrail_interval=3600,  # checks run by hand below
    ) as flags:
        for _ in range(120):  # 60 s of the fake clock, 20 calls every half second
            for _ in range(20):
                try:
                    flags.get_model("m").predict(rng.random((1, 2)))
                except RuntimeError:
                    raised += 1
            flags.flush(5)  # the background loads requests started are done
            breaches += flags.check_guardrails()
            clock.advance(0.5)
        lkg = flags.status()["m"].lkg
    assert (raised, lkg) == (0, "v1")
    assert [breach.rule for breach in breaches] == ["max_error_rate"]


class ReleasingActuator:
    """A flag-file actuator that, after writing a split with the candidate in it, plays what the
    guardrail thread may do between two polls of the canary: traffic reaches the candidate, a
    check fires, the supervisor rolls the flag back at its source, and the flag moving away lifts
    the local rollback. It returns once that happened."""

    def __init__(self, flags: ModelFlags, path: Path) -> None:
        self.flags = flags
        self.inner = FlagdFileActuator(path)
        self.fired = 0

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        self.inner.set_split(flag_key, weights)
        if not weights.get("v2"):
            return
        users = iter(range(10**6))

        def candidate_served() -> bool:
            for _ in range(50):
                handle = self.flags.get_model("m", f"user-{next(users)}")
                handle.predict(np.zeros((1, 2)))
            self.flags.flush(5)  # the background loads requests started are done
            return any(breach.version == "v2" for breach in self.flags.check_guardrails())

        wait_until(candidate_served, 5, "a breach of v2")
        self.fired += 1
        wait_until(lambda: not self.flags.status()["m"].rolled_back, 5, "the rollback lifted")

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        self.inner.rollback(flag_key, to_version=to_version, from_version=from_version)


@pytest.mark.slow
def test_a_canary_sees_a_breach_the_supervisor_already_rolled_back_at_the_source(
    flag_file: Path, registry: Callable[..., Path]
) -> None:
    """With ModelFlags(actuator=...) as well, a breach fired by the background check still ends
    the canary as rolled back, instead of the canary writing the next stage."""
    with ModelFlags(
        registry("flaky", sustained_s=0),
        loaders={"flaky": flaky_loader},
        backoff=NO_QUARANTINE,
        actuator=FlagdFileActuator(flag_file),
        guardrail_interval=3600,  # the actuator below plays the background check
    ) as flags:
        actuator = ReleasingActuator(flags, flag_file)
        result = flags.canary(
            "m", "v2", actuator, stages=[10, 50, 100], stage_seconds=0, poll_s=0.01
        ).run()
    assert actuator.fired == 1
    assert result.outcome == "rolled_back", events(result)
    assert result.stages_reached == (10,)


def test_breaches_lists_every_rule_that_fired_for_a_version(
    registry: Callable[..., Path], clock: FakeClock
) -> None:
    """Two rules firing at one check for the same version are both reported by breaches()."""
    api.set_provider_and_wait(split_provider())
    rng = np.random.default_rng(2)
    with ModelFlags(
        registry(
            "flaky",
            sustained_s=0,
            max_outcome_drop={"name": "click", "relative": 0.1},
        ),
        loaders={"flaky": flaky_loader},
        backoff=NO_QUARANTINE,
        clock=clock,
        guardrail_interval=3600,
    ) as flags:
        flags.get_model("m", 0)
        flags.get_model("m", 1)  # v2 loads in the background while v1 answers
        assert flags.flush(5)
        for user in range(200):
            handle = flags.get_model("m", user)
            handle.predict(rng.random((1, 2)))
            flags.record_outcome(handle, "click", 1.0 if handle.version == "v1" else 0.0)
        fired = flags.check_guardrails()
        assert sorted(breach.rule for breach in fired) == ["max_error_rate", "max_outcome_drop"]
        assert sorted(breach.rule for breach in flags.breaches("m", "v2")) == [
            "max_error_rate",
            "max_outcome_drop",
        ]


def test_the_lkg_does_not_flip_back_and_forth_under_a_steady_split(
    registry: Callable[..., Path], clock: FakeClock
) -> None:
    """Under a steady 50/50 split of two healthy versions, v2 is promoted once and stays LKG."""
    api.set_provider_and_wait(split_provider())
    seen = EventRecorder()
    with ModelFlags(
        registry("good", promote_after_s=1, window_s=10),
        clock=clock,
        guardrail_interval=3600,
        listeners=[seen],
    ) as flags:
        for _ in range(10):
            for user in range(100):
                flags.get_model("m", user).predict(np.zeros((1, 2)))
            flags.flush(5)  # the background loads requests started are done
            flags.check_guardrails()
            clock.advance(0.5)
        assert flags.flush(5)
    assert [(e.version, e.previous) for e in seen.of(BecameLKG)] == [("v2", "v1")]


class ObservingActuator:
    """A flag-file actuator that, at each stage, sends the candidate healthy traffic for longer
    than ``promote_after_s`` of the fake clock, checking the guardrails as it goes, and records the
    LKG after each check while the canary is running."""

    def __init__(self, flags: ModelFlags, path: Path, clock: FakeClock) -> None:
        self.flags = flags
        self.inner = FlagdFileActuator(path)
        self.clock = clock
        self.lkg: list[str] = []
        self._users = iter(range(10**6))

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        self.inner.set_split(flag_key, weights)
        share = weights.get("v2", 0) / 100

        def split_seen() -> bool:
            handles = [self.flags.get_model("m", f"user-{i}") for i in range(200)]
            on_v2 = sum(handle.requested_version == "v2" for handle in handles) / len(handles)
            return abs(on_v2 - share) < 0.1

        wait_until(split_seen, 5, f"the split {dict(weights)}")
        for _ in range(4):
            for _ in range(100):
                self.flags.get_model("m", f"user-{next(self._users)}").predict(np.zeros((1, 2)))
            self.flags.flush(5)  # the background loads requests started are done
            self.flags.check_guardrails()
            self.lkg.append(self.flags.status()["m"].lkg)
            self.clock.advance(1.0)

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        self.inner.rollback(flag_key, to_version=to_version, from_version=from_version)


@pytest.mark.slow
def test_a_candidate_is_not_promoted_before_its_canary_completes(
    flag_file: Path, registry: Callable[..., Path], clock: FakeClock
) -> None:
    """During a canary the baseline stays the LKG at every check of every stage."""
    with ModelFlags(
        registry("good", promote_after_s=1, window_s=10), clock=clock, guardrail_interval=3600
    ) as flags:
        actuator = ObservingActuator(flags, flag_file, clock)
        result = flags.canary(
            "m", "v2", actuator, stages=[10, 50, 100], stage_seconds=0, poll_s=0.01
        ).run()
    assert result.outcome == "completed"
    assert set(actuator.lkg) == {"v1"}, actuator.lkg


# -- known defects --------------------------------------------------------------------------------


def test_a_single_transient_failure_does_not_roll_a_candidate_back(
    workspace: Workspace, set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """One exception in 5,000 calls of the candidate is not an error rate above 5%."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"once", suffix=".bin", loader="once", digest=False)
    workspace.set("m", guardrails={**GUARDRAILS, "sustained_s": 1, "window_s": 10})
    set_flags(m="v2")
    fired = []
    with ModelFlags(
        workspace.write(),
        loaders={"once": lambda path: Once(2)},
        clock=clock,
        guardrail_interval=3600,  # checks run by hand below
    ) as flags:
        for _ in range(50):  # 5 s of the fake clock, 100 calls every tenth of a second
            for _ in range(100):
                flags.get_model("m").predict(np.zeros((1, 2)))
            flags.flush(5)  # the background loads requests started are done
            fired += flags.check_guardrails()
            clock.advance(0.1)
        assert fired == []
        assert flags.get_model("m").version == "v2"


class InterruptedActuator:
    """A flag-file actuator interrupted (Ctrl-C) when asked for the stage at ``at`` percent."""

    def __init__(self, path: Path, at: int) -> None:
        self.inner = FlagdFileActuator(path)
        self.at = at

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        if weights.get("v2") == self.at:
            raise KeyboardInterrupt
        self.inner.set_split(flag_key, weights)

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        self.inner.rollback(flag_key, to_version=to_version, from_version=from_version)


def test_an_interrupted_canary_does_not_hold_promotions_back_forever(
    flag_file: Path, registry: Callable[..., Path], clock: FakeClock
) -> None:
    """After a canary interrupted by Ctrl-C, a version the flag then serves to everyone is
    promoted once it has held its guardrails."""
    with ModelFlags(
        registry("good", promote_after_s=1, window_s=10), clock=clock, guardrail_interval=3600
    ) as flags:
        canary = flags.canary(
            "m", "v2", InterruptedActuator(flag_file, 50), stages=[10, 50], stage_seconds=0
        )
        with pytest.raises(KeyboardInterrupt):
            canary.run()
        assert flag_in(flag_file)["defaultVariant"] == "v1"

        FlagdFileActuator(flag_file).set_split("m", {"v2": 100})  # a person moves the flag
        wait_until(lambda: served(flags, users=20) == {("v2", "v2")}, 5, "everyone on v2")
        for _ in range(3):
            for user in range(100):
                flags.get_model("m", f"user-{user}").predict(np.zeros((1, 2)))
            flags.flush(5)  # the background loads requests started are done
            flags.check_guardrails()
            clock.advance(1.0)
        assert flags.status()["m"].lkg == "v2"


@pytest.mark.slow
def test_a_second_canary_judges_its_candidate_afresh(flag_file: Path, workspace: Workspace) -> None:
    """A candidate rolled back while its feature store failed passes a second canary once the
    feature store recovered."""
    healthy = threading.Event()
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"toggled", suffix=".bin", loader="toggled", digest=False)
    workspace.set("m", guardrails=GUARDRAILS)
    with (
        ModelFlags(
            workspace.write(),
            loaders={"toggled": lambda path: Toggled(2, healthy)},
            backoff=NO_QUARANTINE,
            guardrail_interval=0.05,
        ) as flags,
        Traffic(flags, "m", **ONE_PACED_THREAD),
    ):

        def canary() -> CanaryResult:
            return flags.canary(
                "m",
                "v2",
                FlagdFileActuator(flag_file),
                stages=[10, 50, 100],
                stage_seconds=0.4,
                poll_s=0.02,
            ).run()

        first = canary()
        assert first.outcome == "rolled_back", first.timeline
        wait_until(lambda: served(flags) == {("v1", "v1")}, 5, "everyone on v1")
        healthy.set()
        second = canary()
        assert second.outcome == "completed", second.timeline
