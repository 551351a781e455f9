"""The LKG follows a settled flag: a version rolled back at the flag's source is not left as the
last known good one, so switching the flag off does not bring it back.

Real flag files read by the flagd provider in FILE mode, a real ``ModelFlags`` with prewarming
(the pass after each change event sees what every recent context selects), and the same story
on Unleash when its stack is installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType

from modelflags import BecameLKG, ModelFlags
from modelflags.registry.guardrails import GuardrailRules
from modelflags.rollout.actuators import FlagdFileActuator, UnleashActuator
from modelflags.rollout.supervision import Supervisor
from modelflags.serving.health import Health

from models import Constant
from support import FakeClock, Workspace, wait_until
from support.unleash import CHANGE_BOUND, StackInfo, UnleashAdmin, create_rollout

if TYPE_CHECKING:  # imported by the fixtures when the tests run; collection stays light
    from openfeature.contrib.provider.unleash import UnleashProvider

X = np.zeros((1, 2))
USERS = 40


class Watcher:
    """Collects events; waits for one with a bounded timeout."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def __call__(self, event: object) -> None:
        self.seen.append(event)

    def lkg_changes(self) -> list[tuple[str, str]]:
        return [(e.version, e.previous) for e in self.seen if isinstance(e, BecameLKG)]


def served(flags: ModelFlags) -> set[str]:
    """The versions serving ``USERS`` users now; each call runs (and may prove its version)."""
    versions = set()
    for user in range(USERS):
        handle = flags.get_model("m", f"user-{user}")
        handle.predict(X)
        versions.add(handle.version)
    return versions


def settles_on(flags: ModelFlags, version: str, what: str) -> None:
    """Requests until every user is served ``version``."""
    wait_until(lambda: served(flags) == {version}, 10.0, what)


@pytest.fixture
def flag_file(tmp_path: Path) -> Iterator[Path]:
    """A flagd file whose flag ``m`` serves v1 to everyone, read in FILE mode."""
    path = tmp_path / "flags.json"
    flag = {
        "state": "ENABLED",
        "variants": {"v1": "v1", "v2": "v2"},
        "defaultVariant": "v1",
        "targeting": {},
    }
    path.write_text(json.dumps({"flags": {"m": flag}}))
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=20
        )
    )
    yield path
    api.shutdown()
    api.clear_providers()


def switch_off(path: Path) -> None:
    """Disable flag ``m``: flagd then answers with the caller's default, the LKG."""
    data = json.loads(path.read_text())
    data["flags"]["m"]["state"] = "DISABLED"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


def registry(workspace: Workspace, **guardrails: Any) -> Path:
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    if guardrails:
        workspace.set("m", guardrails=guardrails)
    return workspace.write()


def test_a_version_rolled_back_at_the_source_is_not_left_as_the_lkg(
    flag_file: Path, workspace: Workspace
) -> None:
    """v2 rolled out to everyone becomes the LKG; rolled back to v1 for everyone at the flag
    file, v1 is the LKG again; with the flag then switched off every request gets v1, not v2."""
    watcher = Watcher()
    actuator = FlagdFileActuator(flag_file)
    with ModelFlags(registry(workspace), listeners=[watcher]) as flags:
        assert served(flags) == {"v1"}
        actuator.set_split("m", {"v2": 100})
        settles_on(flags, "v2", "v2 for everyone")
        assert flags.status()["m"].lkg == "v2"

        actuator.rollback("m", to_version="v1", from_version="v2")
        settles_on(flags, "v1", "v1 for everyone")
        wait_until(lambda: flags.status()["m"].lkg == "v1", 10.0, "v1 as the LKG again")

        switch_off(flag_file)
        wait_until(
            lambda: flags.get_model("m", "user-0").reason == "DISABLED",
            10.0,
            "the flag switched off",
        )
        assert served(flags) == {"v1"}
        assert flags.flush(5)
    assert watcher.lkg_changes() == [("v2", "v1"), ("v1", "v2")]


@pytest.mark.slow
def test_with_guardrails_a_promoted_version_rolled_back_at_the_source_is_not_the_lkg(
    flag_file: Path, workspace: Workspace, clock: FakeClock
) -> None:
    """The same story for a model with guardrails: v2 becomes the LKG by holding its
    guardrails, and the rollback at the source still gives the LKG back to v1."""
    actuator = FlagdFileActuator(flag_file)
    with ModelFlags(
        registry(workspace, max_error_rate=0.05, promote_after_s=10),
        clock=clock,
        guardrail_interval=3600,
    ) as flags:
        assert served(flags) == {"v1"}
        actuator.set_split("m", {"v2": 100})
        settles_on(flags, "v2", "v2 for everyone")
        for _ in range(12):
            served(flags)
            flags.check_guardrails()
            clock.advance(1.0)
        assert flags.status()["m"].lkg == "v2"

        actuator.rollback("m", to_version="v1", from_version="v2")
        settles_on(flags, "v1", "v1 for everyone")
        wait_until(lambda: flags.status()["m"].lkg == "v1", 10.0, "v1 as the LKG again")
        for _ in range(70):  # v2's guardrail state outlives its traffic: it is not promoted back
            served(flags)
            flags.check_guardrails()
            clock.advance(1.0)
        assert flags.status()["m"].lkg == "v1"

        switch_off(flag_file)
        wait_until(
            lambda: flags.get_model("m", "user-0").reason == "DISABLED",
            10.0,
            "the flag switched off",
        )
        assert served(flags) == {"v1"}


def test_a_split_never_moves_the_lkg(flag_file: Path, workspace: Workspace) -> None:
    """With v2 the LKG, a 50/50 split of v1 and v2 leaves the LKG where it is, however often
    the flag file changes."""
    watcher = Watcher()
    actuator = FlagdFileActuator(flag_file)
    with ModelFlags(registry(workspace), listeners=[watcher]) as flags:
        served(flags)
        actuator.set_split("m", {"v2": 100})
        settles_on(flags, "v2", "v2 for everyone")

        for _ in range(3):
            actuator.set_split("m", {"v1": 50, "v2": 50})
            wait_until(lambda: served(flags) == {"v1", "v2"}, 10.0, "the split")
            actuator.set_split("m", {"v1": 49, "v2": 51})
            wait_until(lambda: served(flags) == {"v1", "v2"}, 10.0, "the split")

        assert flags.flush(5)
        assert flags.status()["m"].lkg == "v2"
    assert watcher.lkg_changes() == [("v2", "v1")]


def test_settling_needs_a_proven_version_that_was_the_lkg_and_was_not_demoted(
    clock: FakeClock,
) -> None:
    """The rule in ``Health``: a version the flag settled on becomes the LKG again only if it
    proved itself since its last failure and was the LKG before; a demoted version (rolled back
    by hand while it was the LKG) is not, and a version that never was the LKG is left to
    promotion."""
    health = Health({"m": "v1"}, clock=clock)
    assert health.settle("m", "v1") is None  # already the LKG
    health.mark_good("m", "v1")
    health.mark_good("m", "v2")
    assert health.lkg("m") == "v2"
    health.mark_good("m", "v3", promote=False)

    assert health.settle("m", "v3") is None  # proven, but never the LKG
    assert health.settle("m", "v1") == "v2"
    assert health.lkg("m") == "v1"
    assert health.proved_after("m", "v1", "v2")  # v2 is not promoted back over it

    health.quarantine("m", "v2", "failed")
    assert health.settle("m", "v2") is None  # not proven since its failure
    health.mark_good("m", "v2", promote=False)
    assert health.settle("m", "v2") == "v1"
    assert health.demote("m", "v2") == "v1"
    health.mark_good("m", "v2", promote=False)
    assert health.settle("m", "v2") is None  # demoted: it has to earn the LKG again


@pytest.mark.unleash
@pytest.mark.slow
def test_on_unleash_a_version_rolled_back_at_the_source_is_not_left_as_the_lkg(
    unleash_stack: StackInfo,
    unleash_admin: UnleashAdmin,
    flag_name: str,
    unleash_provider: Callable[[], UnleashProvider],
    workspace: Workspace,
) -> None:
    """The story of the issue, on a real Unleash: v2 rolled out to 100%, rolled back to v1 at
    100% through the admin API, then the flag turned off: every request gets v1."""
    create_rollout(unleash_admin, flag_name, {"v1": 100})
    registry(workspace)
    workspace.set("m", flag=flag_name)
    api.set_provider_and_wait(unleash_provider())
    actuator = UnleashActuator(unleash_stack.url, unleash_stack.admin_token)
    try:
        with ModelFlags(workspace.write()) as flags:
            wait_until(lambda: served(flags) == {"v1"}, CHANGE_BOUND, "v1 for everyone")
            actuator.set_split(flag_name, {"v2": 100})
            wait_until(lambda: served(flags) == {"v2"}, CHANGE_BOUND, "v2 for everyone")
            assert flags.status()["m"].lkg == "v2"

            actuator.rollback(flag_name, to_version="v1", from_version="v2")
            wait_until(lambda: served(flags) == {"v1"}, CHANGE_BOUND, "v1 for everyone again")
            wait_until(lambda: flags.status()["m"].lkg == "v1", 5.0, "v1 as the LKG again")

            unleash_admin.disable(flag_name)
            wait_until(
                lambda: str(flags.get_model("m", "user-0").reason) == "DEFAULT",
                CHANGE_BOUND,
                "the flag turned off",
            )
            assert served(flags) == {"v1"}
    finally:
        actuator.close()
        api.shutdown()
        api.clear_providers()


def test_the_guardrails_trust_a_version_only_without_rollback_breach_or_canary(
    clock: FakeClock,
) -> None:
    """``Supervisor.trusts`` (what the settling asks): not while the version is rolled back,
    has a breach on record, or a canary of the model runs."""
    supervisor = Supervisor(
        {"m": GuardrailRules(max_error_rate=0.05)},
        flag_keys={"m": "m"},
        lkg=lambda model: "v1",
        emit=lambda event: None,
        clock=clock,
        check_interval=3600,
    )
    try:
        assert supervisor.trusts("m", "v2")
        with supervisor.holding("m"):
            assert not supervisor.trusts("m", "v2")
        for _ in range(20):
            supervisor.record_call("m", "v2", 0.01, True, True)
        assert [breach.version for breach in supervisor.check()] == ["v2"]
        assert not supervisor.trusts("m", "v2")
        supervisor.release("m", ["v2"], forget=False)  # the flag moved away: still on record
        assert not supervisor.trusts("m", "v2")
        supervisor.release("m", ["v2"])  # a person released it
        assert supervisor.trusts("m", "v2")
    finally:
        supervisor.close()
