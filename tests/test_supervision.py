"""Guardrails wired into serving: metrics per version, rollback and alert, outcomes, audit trail."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from openfeature.track import TrackingEventDetails

from modelflags import Backoff, ModelFlags, ModelFlagsError
from modelflags.client import ROLLED_BACK
from modelflags.rollout.actuators import FlagdFileActuator
from modelflags.telemetry.events import ActuatorFailed, GuardrailAlert, RolledBack

from models import Constant
from support import FakeClock, Workspace, holds_for, wait_until

X = np.zeros((2, 1))
NO_QUARANTINE = Backoff(initial=0.0, maximum=0.0)  # every call tries the candidate again


class FailsOnNegative(Constant):
    """Raises for inputs whose first value is negative; answers otherwise."""

    def predict(self, X: Any) -> np.ndarray:
        if np.asarray(X)[0, 0] < 0:
            raise ValueError("negative input")
        return super().predict(X)


class Fragile(Constant):
    """Raises for inputs whose first value is above 0.5 (the LKG answers those)."""

    def predict(self, X: Any) -> np.ndarray:
        if np.asarray(X)[0, 0] > 0.5:
            raise RuntimeError("fragile")
        return super().predict(X)


def fragile_loader(path: Path) -> Fragile:
    return Fragile(2)


GUARDRAILS = {
    "max_error_rate": 0.05,
    "min_requests": 20,
    "sustained_s": 10,
    "window_s": 60,
    "action": "rollback",
}


@pytest.fixture
def registry(workspace: Workspace) -> Callable[..., Path]:
    def make(**guardrails: Any) -> Path:
        workspace.add("m", "v1", Constant(1))
        workspace.add("m", "v2", raw=b"fragile", suffix=".bin", loader="fragile", digest=False)
        if guardrails:
            workspace.set("m", guardrails=guardrails)
        return workspace.write()

    return make


def serve(flags: ModelFlags, calls: int, bad_share: float, user: str = "u") -> None:
    bad = int(calls * bad_share)
    for i in range(calls):
        value = 0.9 if i < bad else 0.1
        flags.get_model("m", user).predict(np.array([[value]]))


@pytest.fixture
def quiet_flags() -> Iterator[None]:
    yield


def test_metrics_are_kept_per_version(
    registry: Callable[..., Path], set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """Requests, errors, fallbacks and latency quantiles are reported per version."""
    set_flags(m="v2")
    with ModelFlags(
        registry(),
        metrics=True,
        clock=clock,
        loaders={"fragile": fragile_loader},
        backoff=NO_QUARANTINE,
    ) as flags:
        serve(flags, 40, bad_share=0.25)
        metrics = flags.metrics("m")
    v2 = metrics["v2"]
    assert v2.requests >= 40
    assert v2.errors == 10 and v2.fallbacks >= 10
    assert v2.latency_p50 is not None and v2.latency_p95 is not None


def test_without_guardrails_or_metrics_nothing_is_recorded(
    registry: Callable[..., Path], set_flags: Callable[..., None]
) -> None:
    """Metrics cost nothing unless asked for."""
    set_flags(m="v1")
    with ModelFlags(registry()) as flags:
        serve(flags, 5, bad_share=0.0)
        assert flags.metrics("m") == {}
        with pytest.raises(ModelFlagsError, match="rollbacks need metrics"):
            flags.rollback("m", "v2", reason="manual")


def test_sustained_error_rate_rolls_back_once_and_release_restores(
    registry: Callable[..., Path], set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """A breach held for sustained_s pins the LKG (reason ROLLED_BACK) until released."""
    events: list[object] = []
    set_flags(m="v2")
    with ModelFlags(
        registry(**GUARDRAILS),
        clock=clock,
        listeners=[events.append],
        loaders={"fragile": fragile_loader},
        backoff=NO_QUARANTINE,
        guardrail_interval=3600,  # checks run by hand below
    ) as flags:
        serve(flags, 40, bad_share=0.2)
        assert flags.check_guardrails() == []  # breach starts now
        clock.advance(5)
        serve(flags, 10, bad_share=0.2)
        assert flags.check_guardrails() == []  # held 5 s: a blip so far
        clock.advance(6)
        (breach,) = flags.check_guardrails()
        assert (breach.rule, breach.version, breach.lkg) == ("max_error_rate", "v2", "v1")
        assert breach.observed > 0.05
        assert flags.check_guardrails() == []  # fires once
        model = flags.get_model("m")
        assert (model.version, model.requested_version, model.reason) == ("v1", "v2", ROLLED_BACK)
        assert flags.breaches("m") == [breach]
        assert flags.release("m") == ["v2"]
        assert flags.get_model("m").version == "v2"
        flags.flush(5)
    rolled = [e for e in events if isinstance(e, RolledBack)]
    assert len(rolled) == 1 and rolled[0].breach == breach and "max_error_rate" in rolled[0].reason


def test_a_blip_shorter_than_sustained_s_does_not_roll_back(
    registry: Callable[..., Path], set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """Errors that stop before sustained_s never fire: healthy calls afterwards bring the
    error rate's interval back under the limit before the breach has held that long."""
    set_flags(m="v2")
    with ModelFlags(
        registry(**{**GUARDRAILS, "window_s": 10, "sustained_s": 20}),
        clock=clock,
        loaders={"fragile": fragile_loader},
        backoff=NO_QUARANTINE,
        guardrail_interval=3600,
    ) as flags:
        serve(flags, 40, bad_share=0.25)
        assert flags.check_guardrails() == []  # the breach starts now
        assert flags.guardrail_report("m")[0].verdict == "breaching"
        clock.advance(12)
        serve(flags, 200, bad_share=0.0)
        assert flags.check_guardrails() == []
        assert flags.guardrail_report("m")[0].verdict == "holding"
        clock.advance(12)
        serve(flags, 40, bad_share=0.0)
        assert flags.check_guardrails() == []
        assert flags.get_model("m").version == "v2"


def test_alert_action_reports_without_pinning(
    registry: Callable[..., Path], set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """action = "alert" sends an event and logs; serving is unchanged until a person acts."""
    events: list[object] = []
    set_flags(m="v2")
    with ModelFlags(
        registry(**{**GUARDRAILS, "action": "alert", "sustained_s": 0}),
        clock=clock,
        listeners=[events.append],
        loaders={"fragile": fragile_loader},
        backoff=NO_QUARANTINE,
        guardrail_interval=3600,
    ) as flags:
        serve(flags, 40, bad_share=0.5)
        assert len(flags.check_guardrails()) == 1
        assert flags.get_model("m").version == "v2"
        assert flags.rollback("m", reason="confirmed by on-call") == ["v2"]
        assert flags.get_model("m").reason == ROLLED_BACK
        flags.flush(5)
    assert any(isinstance(e, GuardrailAlert) for e in events)
    manual = [e for e in events if isinstance(e, RolledBack)]
    assert manual[0].reason == "confirmed by on-call" and manual[0].breach is None


class TrackingProvider(InMemoryProvider):
    """An in-memory provider that records tracking events, as a flag service would collect them."""

    def __init__(self, flags: dict[str, InMemoryFlag]) -> None:
        super().__init__(flags)
        self.tracked: list[tuple[str, EvaluationContext | None, TrackingEventDetails | None]] = []

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        self.tracked.append((tracking_event_name, evaluation_context, tracking_event_details))


def test_outcomes_feed_metrics_and_reach_the_flag_service(
    registry: Callable[..., Path], clock: FakeClock
) -> None:
    """record_outcome with a handle counts per version and calls OpenFeature's tracking API."""
    provider = TrackingProvider({"m": InMemoryFlag("v1", {"v1": "v1"})})
    api.set_provider_and_wait(provider)
    with ModelFlags(registry(), metrics=True, clock=clock) as flags:
        model = flags.get_model("m", "user-7")
        flags.record_outcome(model, "click", 1)
        flags.record_outcome("m", "click", 0, version="v1")
        with pytest.raises(ValueError, match="pass the handle"):
            flags.record_outcome("m", "click", 1)
        outcome = flags.metrics("m")["v1"].outcomes["click"]
    assert (outcome.count, outcome.total) == (2, 1.0)
    name, context, details = provider.tracked[0]
    assert name == "click" and context is not None and context.targeting_key == "user-7"
    assert details is not None and details.value == 1.0
    assert details.attributes == {"model": "m", "version": "v1"}


def test_outcome_drop_against_the_lkg_rolls_back(workspace: Workspace, clock: FakeClock) -> None:
    """A candidate whose clicks fall more than 5% below the LKG's is rolled back."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    workspace.set(
        "m",
        guardrails={
            "max_outcome_drop": {"name": "click", "relative": 0.05},
            "min_requests": 50,
            "sustained_s": 0,
        },
    )

    def split(flag: InMemoryFlag, ctx: EvaluationContext | None) -> Any:
        from openfeature.flag_evaluation import FlagResolutionDetails

        key = int((ctx.targeting_key if ctx else "0") or 0)
        variant = "v2" if key % 2 else "v1"
        return FlagResolutionDetails(value=variant, variant=variant)

    api.set_provider_and_wait(
        InMemoryProvider({"m": InMemoryFlag("v1", {"v1": "v1"}, context_evaluator=split)})
    )
    # Without prewarm v2 loads in the first request that meets it: every odd user is served by it.
    with ModelFlags(
        workspace.write(), clock=clock, guardrail_interval=3600, prewarm=False
    ) as flags:
        for user in range(200):
            model = flags.get_model("m", user)
            model.predict(X)
            clicked = user % 10 < (5 if model.version == "v1" else 3)
            flags.record_outcome(model, "click", 1 if clicked else 0)
        (breach,) = flags.check_guardrails()
        assert breach.rule == "max_outcome_drop" and breach.version in {"v1", "v2"}


def test_decision_log_records_what_was_served_with_hashed_keys(
    registry: Callable[..., Path], set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """Every decision is written off the request thread; targeting keys appear only hashed."""
    log = tmp_path / "decisions.jsonl"
    set_flags(m="v2")
    workspace_registry = registry()
    with ModelFlags(
        workspace_registry, decision_log=log, loaders={"fragile": fragile_loader}
    ) as flags:
        flags.get_model("m", "alice@example.com")
        with flags.override(m="v1"):
            flags.get_model("m", "bob@example.com")
        assert flags.flush(5)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(d["model"], d["requested"], d["served"]) for d in lines] == [
        ("m", "v2", "v2"),
        ("m", "v1", "v1"),
    ]
    assert lines[1]["reason"] == "OVERRIDE"
    assert "alice" not in log.read_text() and "bob" not in log.read_text()
    assert all(len(d["key"]) == 32 for d in lines) and lines[0]["key"] != lines[1]["key"]


def test_decision_log_names_the_cause_of_a_fallback(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """A fallback's line says why: here the quarantine cause of the broken version."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"garbage", suffix=".pkl")
    log = tmp_path / "decisions.jsonl"
    set_flags(m="v2")
    with ModelFlags(workspace.write(), decision_log=log) as flags:
        flags.get_model("m", "u")
        assert flags.flush(5)
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert (line["requested"], line["served"], line["reason"]) == ("v2", "v1", "FALLBACK")
    assert "loader 'pickle' failed" in line["cause"]


def flagd_file(path: Path, default: str) -> None:
    path.write_text(
        json.dumps(
            {
                "flags": {
                    "m": {
                        "state": "ENABLED",
                        "variants": {"v1": "v1", "v2": "v2"},
                        "defaultVariant": default,
                    }
                }
            }
        )
    )


def test_rollback_is_also_made_at_the_source_through_an_actuator(
    registry: Callable[..., Path], tmp_path: Path, clock: FakeClock
) -> None:
    """With a flagd file actuator the flag file itself is rewritten to serve the LKG."""
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType

    flags_path = tmp_path / "flags.json"
    flagd_file(flags_path, "v2")
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE,
            offline_flag_source_path=str(flags_path),
            deadline_ms=50,
        )
    )
    try:
        with ModelFlags(
            registry(**{**GUARDRAILS, "sustained_s": 0}),
            clock=clock,
            loaders={"fragile": fragile_loader},
            backoff=NO_QUARANTINE,
            actuator=FlagdFileActuator(flags_path),
            guardrail_interval=3600,
        ) as flags:
            serve(flags, 40, bad_share=0.5)
            assert len(flags.check_guardrails()) == 1
            wait_until(
                lambda: json.loads(flags_path.read_text())["flags"]["m"]["defaultVariant"] == "v1",
                5.0,
                "the flag file rolled back",
            )
            wait_until(
                lambda: flags.get_model("m").requested_version == "v1",
                5.0,
                "flagd picking up the rollback",
            )
    finally:
        api.shutdown()


class BrokenActuator:
    def set_split(self, flag_key: str, weights: Any) -> None:
        raise RuntimeError("no route to flag service")

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        raise RuntimeError("no route to flag service")


def test_actuator_failure_is_reported_and_never_reaches_requests(
    registry: Callable[..., Path], set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """When the source cannot be changed, the local rollback stands and an event says so."""
    events: list[object] = []
    done = threading.Event()

    def listen(event: object) -> None:
        events.append(event)
        if isinstance(event, ActuatorFailed):
            done.set()

    set_flags(m="v2")
    with ModelFlags(
        registry(**{**GUARDRAILS, "sustained_s": 0}),
        clock=clock,
        loaders={"fragile": fragile_loader},
        backoff=NO_QUARANTINE,
        actuator=BrokenActuator(),  # type: ignore[arg-type]
        listeners=[listen],
        guardrail_interval=3600,
    ) as flags:
        serve(flags, 40, bad_share=0.5)
        flags.check_guardrails()
        assert done.wait(5)
        assert flags.get_model("m").version == "v1"
    failed = [e for e in events if isinstance(e, ActuatorFailed)]
    assert "no route to flag service" in failed[0].error


@pytest.mark.slow
def test_rollback_lifts_when_the_flag_moves_to_another_version(
    workspace: Workspace, set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """Once the flag no longer selects the rolled-back version for recent users, the pin lifts."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    workspace.add("m", "v3", Constant(3))
    set_flags(m="v2")
    with ModelFlags(workspace.write(), metrics=True, clock=clock) as flags:
        flags.get_model("m", "u").predict(X)
        flags.rollback("m", "v2", reason="bad answers")
        assert flags.get_model("m", "u").reason == ROLLED_BACK
        assert flags.status()["m"].rolled_back == ("v2",)
        provider = api.get_client().provider
        provider.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=["m"]))
        # Nothing tells when ModelFlags has handled the event: watch for a while.
        holds_for(lambda: flags.status()["m"].rolled_back == ("v2",), 0.2, "the pin stays")
        assert flags.get_model("m", "u").reason == ROLLED_BACK  # still selects v2: pin stays
        set_flags(m="v3")
        api.get_client().provider.emit_provider_configuration_changed(
            ProviderEventDetails(flags_changed=["m"])
        )
        wait_until(lambda: not flags.status()["m"].rolled_back, 5.0, "the rollback of v2 lifted")
        set_flags(m="v2")
        assert flags.get_model("m", "u").version == "v2"  # the pin on v2 was lifted


def test_rolling_back_the_lkg_is_refused(
    registry: Callable[..., Path], set_flags: Callable[..., None]
) -> None:
    """The last known good version cannot be rolled back: nothing would be left to serve."""
    set_flags(m="v1")
    with (
        ModelFlags(registry(), metrics=True) as flags,
        pytest.raises(ValueError, match="last known good"),
    ):
        flags.rollback("m", "v1", reason="oops")
