"""Live rollout and rollback from a real Unleash 8 server, read by openfeature-provider-unleash.

Flags are created and changed through Unleash's admin API; the SDK polls every second
(``REFRESH_INTERVAL``). A change must be followed within ``CHANGE_BOUND``: one refresh interval,
plus the server's one-second revision tick (the issue's "refresh interval + 1 s"), plus 1 s of
slack for a busy machine, which the services/unleash tests found necessary as well.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from openfeature import api

from modelflags import Backoff, Loaded, ModelFlags
from modelflags.client import FALLBACK, PREWARMING
from modelflags.telemetry.events import Prewarmed

from models import Constant
from support import EventRecorder, Traffic, Workspace, wait_until
from support.unleash import CHANGE_BOUND, StackInfo, UnleashAdmin, create_rollout

if TYPE_CHECKING:  # imported by the fixtures when the tests run; collection stays light
    from openfeature.contrib.provider.unleash import UnleashProvider

pytestmark = [pytest.mark.unleash, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
MODEL = "churn"
X = np.zeros((3, 2))
SAMPLE = [f"user-{i}" for i in range(200)]


@pytest.fixture
def registry(workspace: Workspace, flag_name: str) -> Path:
    """``churn`` read from the test's flag: v0 is the registry default, v1 and v2 are flagged."""
    for label, version in enumerate(("v0", "v1", "v2")):
        workspace.add(MODEL, version, Constant(label))
    workspace.set(MODEL, flag=flag_name, default_version="v0")
    return workspace.write()


def serve(flags: ModelFlags, users: list[str]) -> Counter[str]:
    """The versions serving ``users`` now."""
    return Counter(flags.get_model(MODEL, user).version for user in users)


def requested(flags: ModelFlags, users: list[str]) -> Counter[str]:
    """The versions the flag asks for ``users`` (served or being prewarmed)."""
    return Counter(flags.get_model(MODEL, user).requested_version or "" for user in users)


def test_model_follows_weights_and_toggle_changed_through_the_admin_api(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    registry: Path,
    unleash_provider: Callable[[], UnleashProvider],
) -> None:
    """100/0 -> 90/10 -> 0/100 -> off: each step followed in time, the split within 2 points."""
    create_rollout(unleash_admin, flag_name, {"v1": 100, "v2": 0})
    api.set_provider_and_wait(unleash_provider())
    seen: dict[str, float] = {}
    try:
        with ModelFlags(registry) as flags:
            wait_until(
                lambda: flags.get_model(MODEL, "user-1").version == "v1",
                CHANGE_BOUND,
                "the new flag serving v1",
            )
            first = flags.get_model(MODEL, "user-1")
            assert (first.variant, str(first.reason)) == ("v1", "TARGETING_MATCH")
            assert first.predict(X).tolist() == [1, 1, 1]  # v1 proves itself: the new LKG
            assert flags.status()[MODEL].lkg == "v1"

            unleash_admin.set_variants_rollout(flag_name, {"v1": 90, "v2": 10})
            seen["90/10"] = wait_until(
                lambda: "v2" in requested(flags, SAMPLE), CHANGE_BOUND, "the 90/10 split"
            )
            wait_until(lambda: "v2" in flags.status()[MODEL].loaded, 5.0, "v2 loaded")
            served = Counter(flags.get_model(MODEL, f"user-{i}").version for i in range(2000))
            assert set(served) == {"v1", "v2"}
            assert abs(served["v2"] / 2000 - 0.10) <= 0.02, served

            unleash_admin.set_variants_rollout(flag_name, {"v1": 0, "v2": 100})
            seen["0/100"] = wait_until(
                lambda: requested(flags, SAMPLE) == {"v2": len(SAMPLE)},
                CHANGE_BOUND,
                "everyone on v2",
            )
            assert {flags.get_model(MODEL, user).version for user in SAMPLE} == {"v2"}

            unleash_admin.disable(flag_name)
            seen["off"] = wait_until(
                lambda: str(flags.get_model(MODEL, "user-1").reason) == "DEFAULT",
                CHANGE_BOUND,
                "the flag turned off",
            )
            off = flags.get_model(MODEL, "user-1")
            assert off.version == flags.status()[MODEL].lkg == "v1"  # the LKG, not v0
            assert off.variant is None and not off.fell_back
            assert {flags.get_model(MODEL, user).version for user in SAMPLE} == {"v1"}
    finally:
        api.shutdown()
    print("changes followed after", {step: f"{took:.2f} s" for step, took in seen.items()})
    assert max(seen.values()) < CHANGE_BOUND


def test_unleash_change_event_prewarms_the_version_the_flag_now_selects(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    registry: Path,
    unleash_provider: Callable[[], UnleashProvider],
) -> None:
    """The provider's own event reaches the SDK: v2 is loaded before a request asks for it."""
    create_rollout(unleash_admin, flag_name, {"v1": 100, "v2": 0})
    api.set_provider_and_wait(unleash_provider())
    recorder = EventRecorder()
    try:
        with ModelFlags(registry, listeners=[recorder]) as flags:
            wait_until(
                lambda: serve(flags, SAMPLE[:30]) == {"v1": 30},
                CHANGE_BOUND,
                "the new flag serving v1",
            )
            assert flags.flush(timeout=5.0)
            changed = time.monotonic()
            unleash_admin.set_variants_rollout(flag_name, {"v1": 0, "v2": 100})
            at, prewarmed = recorder.wait_for(
                Prewarmed,
                CHANGE_BOUND + 1.0,
                since=changed,
                where=lambda event: "v2" in event.versions,
            )
            assert prewarmed.model == MODEL and prewarmed.versions == ("v2",)
            assert at - changed < CHANGE_BOUND
            assert "v2" in flags.status()[MODEL].loaded
            handle = flags.get_model(MODEL, "user-1")
            assert (handle.version, str(handle.reason)) == ("v2", "TARGETING_MATCH")
            assert handle.reason != PREWARMING
        loaded_v2 = [event for event in recorder.of(Loaded) if event.version == "v2"]
        assert len(loaded_v2) == 1  # by the prewarm pass
    finally:
        api.shutdown()


def test_unleash_change_event_lifts_the_quarantine_of_a_broken_version(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    workspace: Workspace,
    unleash_provider: Callable[[], UnleashProvider],
) -> None:
    """A version quarantined for minutes gets another chance once its flag changes in Unleash."""
    workspace.add(MODEL, "v1", Constant(1))
    workspace.add(MODEL, "v2", raw=b"not a pickle", suffix=".pkl")
    workspace.set(MODEL, flag=flag_name, default_version="v1")
    create_rollout(unleash_admin, flag_name, {"v1": 0, "v2": 100})
    api.set_provider_and_wait(unleash_provider())
    try:
        with ModelFlags(workspace.write(), backoff=Backoff(initial=300.0)) as flags:
            wait_until(
                lambda: flags.get_model(MODEL, "user-1").requested_version == "v2",
                CHANGE_BOUND,
                "the new flag asking for v2",
            )
            # v2 loads in the background (the LKG answers meanwhile), fails and is quarantined.
            wait_until(
                lambda: flags.get_model(MODEL, "user-1").reason == FALLBACK,
                CHANGE_BOUND,
                "v2 quarantined after its load failed",
            )
            handle = flags.get_model(MODEL, "user-1")
            assert (handle.version, handle.requested_version) == ("v1", "v2")
            (quarantine,) = flags.status()[MODEL].quarantined
            assert quarantine.version == "v2" and quarantine.retry_in_s > 200

            changed = time.monotonic()
            unleash_admin.set_variants_rollout(flag_name, {"v1": 100, "v2": 0})
            # Lifted: v2 may be tried at once; its record (and failure count) stays until then.
            wait_until(
                lambda: all(q.retry_in_s == 0 for q in flags.status()[MODEL].quarantined),
                CHANGE_BOUND,
                "the quarantine lifted by the change event",
            )
            (lifted,) = flags.status()[MODEL].quarantined
            assert lifted.version == "v2" and lifted.failures >= 1
            assert time.monotonic() - changed < CHANGE_BOUND + 0.1
            handle = flags.get_model(MODEL, "user-1")
            assert (handle.version, str(handle.reason)) == ("v1", "TARGETING_MATCH")
    finally:
        api.shutdown()


def test_eight_threads_follow_an_unleash_switch_and_rollback_without_a_failed_request(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    registry: Path,
    unleash_provider: Callable[[], UnleashProvider],
) -> None:
    """v1 -> v2 -> v1 from the admin API under load: no exception, only v1 or v2, no reload."""
    create_rollout(unleash_admin, flag_name, {"v1": 100, "v2": 0})
    api.set_provider_and_wait(unleash_provider())
    recorder = EventRecorder()
    try:
        with ModelFlags(registry, listeners=[recorder]) as flags:
            wait_until(
                lambda: serve(flags, SAMPLE[:20]) == {"v1": 20},
                CHANGE_BOUND,
                "the new flag serving v1",
            )
            with Traffic(flags, MODEL, limit_s=20.0) as traffic:
                wait_until(lambda: traffic.all_on("v1"), 5.0, "every thread on v1")
                unleash_admin.set_variants_rollout(flag_name, {"v1": 0, "v2": 100})
                switch_s = wait_until(lambda: traffic.all_on("v2"), CHANGE_BOUND, "all on v2")
                assert "v1" in flags.status()[MODEL].loaded

                assert flags.flush(timeout=5)  # the switch's events have arrived
                rolled_back = time.monotonic()
                unleash_admin.set_variants_rollout(flag_name, {"v1": 100, "v2": 0})
                rollback_s = wait_until(lambda: traffic.all_on("v1"), CHANGE_BOUND, "rollback")
                after = traffic.calls
                wait_until(lambda: traffic.calls >= after + 400, 5.0, "traffic after the rollback")
    finally:
        api.shutdown()
    assert traffic.errors == []
    assert set(traffic.answers) <= {("v1", 1), ("v2", 2)}, traffic.answers
    assert {version for version, _ in traffic.answers} == {"v1", "v2"}
    assert recorder.of(Loaded, since=rolled_back) == []
    loads = Counter(event.version for event in recorder.of(Loaded))
    assert (loads["v1"], loads["v2"]) == (1, 1), loads
    print(f"switch {switch_s:.2f} s, rollback {rollback_s:.2f} s, answers {dict(traffic.answers)}")


def test_unleash_rollout_example_walks_a_canary_and_a_rollback(
    unleash_stack: StackInfo, tmp_path: Path
) -> None:
    """The rollout example prints each step's split near its target, then rolls back."""
    stack_json = tmp_path / "stack.json"
    stack_json.write_text(
        json.dumps(
            {
                "url": unleash_stack.url,
                "admin_token": unleash_stack.admin_token,
                "client_token": unleash_stack.client_token,
            }
        )
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "unleash_rollout.py"), "--stack-json", stack_json],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    steps = re.findall(r"^(canary|rollback)\s+(\d+)% .*?v2 ([\d.]+)%", result.stdout, re.M)
    assert [(kind, int(target)) for kind, target, _ in steps] == [
        ("canary", 10),
        ("canary", 50),
        ("canary", 100),
        ("rollback", 0),
    ], result.stdout
    for _, target, share in steps:
        assert abs(float(share) - int(target)) <= 3.0, result.stdout
    assert re.search(r"^flag \S+ deleted$", result.stdout, re.M), result.stdout
