"""The delegate: event pass-through, lifecycle, hooks and tracking (InMemory and flagd)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.hook import Hook
from openfeature.provider import FeatureProvider, ProviderStatus
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from openfeature.track import TrackingEventDetails

from modelflags_provider_overrides import OVERRIDE_REASON, OverridesProvider

WaitUntil = Callable[..., bool]
WriteFile = Callable[[Path, Any], None]
NAME = "OverridesProvider(In-Memory Provider)"


class RecordingDelegate(InMemoryProvider):
    """An in-memory provider that records lifecycle calls and tracking."""

    def __init__(self, fail_initialize: bool = False) -> None:
        super().__init__({"ranker": InMemoryFlag("a", {"a": "delegate-ranker"})})
        self.fail_initialize = fail_initialize
        self.initialized_with: list[EvaluationContext] = []
        self.shutdowns = 0
        self.tracked: list[tuple[str, EvaluationContext | None, TrackingEventDetails | None]] = []
        self.hook = Hook()

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        self.initialized_with.append(evaluation_context)
        if self.fail_initialize:
            raise RuntimeError("delegate could not start")

    def shutdown(self) -> None:
        self.shutdowns += 1

    def get_provider_hooks(self) -> list[Hook]:
        return [self.hook]

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        self.tracked.append((tracking_event_name, evaluation_context, tracking_event_details))


def watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("OverridesProvider-watcher")]


def test_events_emitted_by_the_delegate_reach_api_handlers_as_this_providers_events(
    recorder: Any, wait_until: WaitUntil
) -> None:
    delegate = InMemoryProvider({})
    api.set_provider_and_wait(OverridesProvider(delegate))
    client = api.get_client()
    recorder.listen_globally(
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        ProviderEvent.PROVIDER_ERROR,
        ProviderEvent.PROVIDER_STALE,
    )

    delegate.emit_provider_configuration_changed(
        ProviderEventDetails(flags_changed=["x", "y"], message="new flags", metadata={"v": 2})
    )
    changed = recorder.wait_for_event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert (changed.flags_changed, changed.message, changed.metadata) == (
        ["x", "y"],
        "new flags",
        {"v": 2},
    )
    assert changed.provider_name == NAME

    delegate.emit_provider_stale(ProviderEventDetails(message="lost connection"))
    stale = recorder.wait_for_event(ProviderEvent.PROVIDER_STALE)
    assert stale.message == "lost connection"
    assert client.get_provider_status() == ProviderStatus.STALE

    delegate.emit_provider_error(
        ProviderEventDetails(message="boom", error_code=ErrorCode.PROVIDER_FATAL)
    )
    error = recorder.wait_for_event(ProviderEvent.PROVIDER_ERROR)
    assert (error.message, error.error_code, error.provider_name) == (
        "boom",
        ErrorCode.PROVIDER_FATAL,
        NAME,
    )
    assert client.get_provider_status() == ProviderStatus.FATAL


def test_delegate_ready_restores_the_status_after_a_delegate_error() -> None:
    delegate = InMemoryProvider({})
    api.set_provider_and_wait(OverridesProvider(delegate))
    client = api.get_client()

    delegate.emit_provider_error(ProviderEventDetails(message="down"))
    assert client.get_provider_status() == ProviderStatus.ERROR
    delegate.emit_provider_ready(ProviderEventDetails(message="back"))

    assert client.get_provider_status() == ProviderStatus.READY


@pytest.mark.slow
def test_file_recovery_does_not_claim_ready_while_the_delegate_is_in_error(
    tmp_path: Path, write_file: WriteFile, recorder: Any
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, "a = 1\n")
    delegate = InMemoryProvider({})
    api.set_provider_and_wait(OverridesProvider(delegate, path=path, poll_interval=0.05))
    client = api.get_client()
    recorder.listen_globally(
        ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED
    )
    delegate.emit_provider_error(ProviderEventDetails(message="delegate down"))

    write_file(path, "a = \n")
    recorder.wait_for_event(ProviderEvent.PROVIDER_ERROR, lambda d: "invalid TOML" in d.message)
    write_file(path, "a = 2\n")
    recorder.wait_for_event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    time.sleep(0.1)  # a READY would follow the change event immediately

    assert client.get_provider_status() == ProviderStatus.ERROR


def test_events_from_the_delegate_are_dropped_after_shutdown() -> None:
    delegate = InMemoryProvider({})
    provider = OverridesProvider(delegate)
    seen: list[ProviderEvent] = []

    def on_emit(p: FeatureProvider, event: ProviderEvent, d: ProviderEventDetails) -> None:
        seen.append(event)

    provider.attach(on_emit)
    provider.initialize(EvaluationContext())
    delegate.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=["a"]))
    provider.shutdown()
    delegate.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=["b"]))

    assert seen == [ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]


def test_detach_also_detaches_the_delegate() -> None:
    delegate = InMemoryProvider({})
    provider = OverridesProvider(delegate)
    seen: list[ProviderEvent] = []
    provider.attach(lambda p, event, d: seen.append(event))

    provider.detach()
    delegate.emit_provider_ready(ProviderEventDetails())

    assert seen == []
    assert not hasattr(delegate, "_on_emit")


def test_shutdown_stops_the_watcher_thread_and_shuts_down_the_delegate(
    tmp_path: Path, write_file: WriteFile
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, "a = 1\n")
    delegate = RecordingDelegate()
    provider = OverridesProvider(delegate, path=path, poll_interval=0.05)
    assert watcher_threads() == []  # constructing does not start watching
    context = EvaluationContext(targeting_key="app", attributes={"region": "eu"})
    api.set_evaluation_context(context)

    api.set_provider_and_wait(provider)

    assert delegate.initialized_with == [context]
    [thread] = watcher_threads()
    assert thread.daemon
    assert thread.name == "OverridesProvider-watcher[overrides.toml]"

    api.clear_providers()  # shuts the provider down synchronously

    assert not thread.is_alive()
    assert watcher_threads() == []
    assert delegate.shutdowns == 1


def test_provider_can_be_initialized_again_after_shutdown(
    tmp_path: Path, write_file: WriteFile, wait_until: WaitUntil
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, "a = 1\n")
    provider = OverridesProvider(path=path, poll_interval=0.05)
    provider.initialize(EvaluationContext())
    provider.shutdown()
    assert watcher_threads() == []

    provider.initialize(EvaluationContext())
    provider.initialize(EvaluationContext())  # idempotent: still one watcher
    try:
        assert len(watcher_threads()) == 1
        write_file(path, "a = 2\n")
        assert wait_until(lambda: provider.resolve_integer_details("a", 0).value == 2)
    finally:
        provider.shutdown()
    assert watcher_threads() == []


def test_failing_delegate_initialize_reaches_the_sdk_and_shutdown_still_cleans_up(
    tmp_path: Path, write_file: WriteFile
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, 'ranker = "pinned"\n')
    delegate = RecordingDelegate(fail_initialize=True)
    provider = OverridesProvider(delegate, path=path, poll_interval=0.05)

    with pytest.raises(RuntimeError, match="could not start"):
        api.set_provider_and_wait(provider)

    assert api.get_client().get_provider_status() == ProviderStatus.ERROR
    assert api.get_client().get_string_value("ranker", "d") == "pinned"
    api.clear_providers()
    assert watcher_threads() == []
    assert delegate.shutdowns == 1


def test_hooks_and_tracking_pass_through_to_the_delegate() -> None:
    delegate = RecordingDelegate()
    provider = OverridesProvider(delegate)
    api.set_provider_and_wait(provider)

    api.get_client().track("purchase", EvaluationContext(targeting_key="u1"))

    assert provider.get_provider_hooks() == [delegate.hook]
    assert [name for name, _, _ in delegate.tracked] == ["purchase"]
    assert delegate.tracked[0][1] is not None
    assert delegate.tracked[0][1].targeting_key == "u1"
    assert OverridesProvider().get_provider_hooks() == []


# --------------------------------------------------------------------------- flagd

FLAGD_FLAGS: dict[str, Any] = {
    "flags": {
        "ranker": {
            "state": "ENABLED",
            "variants": {"a": "ranker-a", "b": "ranker-b"},
            "defaultVariant": "a",
            "targeting": {"if": [{"==": [{"var": "country"}, "DE"]}, "b", "a"]},
        },
        "recommender": {
            "state": "ENABLED",
            "variants": {"v1": "rec-v1", "v2": "rec-v2"},
            "defaultVariant": "v1",
        },
    }
}


def flagd_over(flags_path: Path, overrides_path: Path) -> OverridesProvider:
    flagd = FlagdProvider(
        resolver_type=ResolverType.FILE, offline_flag_source_path=str(flags_path), deadline_ms=50
    )
    return OverridesProvider(flagd, path=overrides_path, poll_interval=0.05)


def test_non_overridden_flags_follow_flagd_targeting(tmp_path: Path, write_file: WriteFile) -> None:
    flags, overrides = tmp_path / "flags.json", tmp_path / "overrides.toml"
    write_file(flags, FLAGD_FLAGS)
    write_file(overrides, 'recommender = "rec-local"\n')
    provider = flagd_over(flags, overrides)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    german = EvaluationContext(targeting_key="u1", attributes={"country": "DE"})
    french = EvaluationContext(targeting_key="u2", attributes={"country": "FR"})

    de = client.get_string_details("ranker", "d", german)
    fr = client.get_string_details("ranker", "d", french)
    rec = client.get_string_details("recommender", "d", german)

    assert (de.value, de.variant, de.reason) == ("ranker-b", "b", Reason.TARGETING_MATCH)
    assert (fr.value, fr.variant) == ("ranker-a", "a")
    assert (rec.value, rec.reason) == ("rec-local", OVERRIDE_REASON)
    assert api.get_provider_metadata().name == "OverridesProvider(FlagdProvider)"


def test_rules_that_do_not_match_leave_the_flag_to_flagd_targeting(
    tmp_path: Path, write_file: WriteFile
) -> None:
    flags, overrides = tmp_path / "flags.json", tmp_path / "overrides.toml"
    write_file(flags, FLAGD_FLAGS)
    write_file(overrides, 'ranker = [{value = "ranker-qa", when = {targeting_key = "qa"}}]\n')
    api.set_provider_and_wait(flagd_over(flags, overrides))
    client = api.get_client()

    qa = client.get_string_details("ranker", "d", EvaluationContext("qa", {"country": "DE"}))
    user = client.get_string_details("ranker", "d", EvaluationContext("u1", {"country": "DE"}))

    assert (qa.value, qa.variant, qa.reason) == ("ranker-qa", "rule-0", OVERRIDE_REASON)
    assert (user.value, user.reason) == ("ranker-b", Reason.TARGETING_MATCH)


@pytest.mark.slow
def test_flagd_configuration_changes_pass_through_to_api_handlers(
    tmp_path: Path, write_file: WriteFile, wait_until: WaitUntil, recorder: Any
) -> None:
    flags, overrides = tmp_path / "flags.json", tmp_path / "overrides.toml"
    write_file(flags, FLAGD_FLAGS)
    write_file(overrides, 'recommender = "rec-local"\n')
    api.set_provider_and_wait(flagd_over(flags, overrides))
    client = api.get_client()
    recorder.listen_globally(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    updated = {"flags": dict(FLAGD_FLAGS["flags"])}
    updated["flags"]["ranker"] = {
        **FLAGD_FLAGS["flags"]["ranker"],
        "variants": {"a": "ranker-a2", "b": "ranker-b2"},
    }

    write_file(flags, updated)  # os.replace: atomic

    changed = recorder.wait_for_event(
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        lambda d: "ranker" in (d.flags_changed or []),
    )
    assert changed.provider_name == "OverridesProvider(FlagdProvider)"
    assert wait_until(lambda: client.get_string_value("ranker", "d") == "ranker-a2")
    assert client.get_string_value("recommender", "d") == "rec-local"

    write_file(overrides, 'recommender = "rec-local-2"\n')
    own = recorder.wait_for_event(
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        lambda d: d.flags_changed == ["recommender"],
    )
    assert own.metadata["source"] == "file"
