"""Watching the override file through a real OpenFeature API client."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.provider import ProviderStatus
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags_provider_overrides import OVERRIDE_REASON, OverridesProvider

FAST_POLL = 0.05
WriteFile = Callable[[Path, Any], None]
WaitUntil = Callable[..., bool]


def delegate() -> InMemoryProvider:
    return InMemoryProvider({"ranker": InMemoryFlag("a", {"a": "delegate-ranker"})})


@pytest.mark.slow
def test_override_file_edit_takes_effect_within_one_second(
    tmp_path: Path, write_file: WriteFile, wait_until: WaitUntil
) -> None:
    path = tmp_path / "overrides.toml"
    path.write_text('recommender = "v2"\nranker = "pinned"\n')
    provider = OverridesProvider(delegate(), path=path)  # default poll interval
    api.set_provider_and_wait(provider)
    client = api.get_client()
    changes: list[EventDetails] = []
    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, changes.append)
    assert client.get_string_details("recommender", "d").value == "v2"
    assert client.get_string_details("ranker", "d").value == "pinned"

    started = time.monotonic()
    write_file(path, 'recommender = "v3"\nlimit = 5\n')
    picked_up = wait_until(
        lambda: client.get_string_details("recommender", "d").value == "v3", timeout=1.0
    )
    elapsed = time.monotonic() - started

    assert picked_up, "edit not visible within 1 s"
    assert elapsed < 1.0
    details = client.get_string_details("recommender", "d")
    assert (details.value, details.reason) == ("v3", OVERRIDE_REASON)
    assert client.get_integer_details("limit", 0).value == 5
    assert client.get_string_details("ranker", "d").value == "delegate-ranker"
    assert wait_until(lambda: len(changes) >= 1, timeout=1.0)
    assert changes[0].flags_changed == ["limit", "ranker", "recommender"]
    assert changes[0].provider_name == "OverridesProvider(In-Memory Provider)"
    assert changes[0].metadata["source"] == "file"
    assert changes[0].metadata["path"] == str(path)


def test_configuration_changed_reaches_global_handlers_with_only_the_changed_keys(
    tmp_path: Path, write_file: WriteFile, recorder: Any
) -> None:
    path = tmp_path / "overrides.json"
    write_file(path, {"a": 1, "b": [{"value": "x", "when": {"c": "DE"}}], "c": True})
    api.set_provider_and_wait(OverridesProvider(path=path, poll_interval=FAST_POLL))
    recorder.listen_globally(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)

    write_file(path, {"a": 1, "b": [{"value": "x", "when": {"c": "AT"}}], "c": True, "d": 0})

    details = recorder.wait_for_event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert details.flags_changed == ["b", "d"]


@pytest.mark.slow
def test_rewriting_the_file_with_the_same_content_emits_no_event(
    tmp_path: Path, write_file: WriteFile, recorder: Any
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, "a = 1\n")
    api.set_provider_and_wait(OverridesProvider(path=path, poll_interval=FAST_POLL))
    recorder.listen_globally(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)

    write_file(path, "a = 1   # same value, new comment\n")
    time.sleep(4 * FAST_POLL)  # the watcher has seen the rewrite
    write_file(path, "a = 2\n")  # a real change to synchronise on

    recorder.wait_for_event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    time.sleep(2 * FAST_POLL)  # let any stray event arrive
    assert [d.flags_changed for d in recorder.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)] == [
        ["a"]
    ]


@pytest.mark.slow
def test_broken_edit_keeps_last_good_overrides_and_emits_error_then_recovers(
    tmp_path: Path, write_file: WriteFile, wait_until: WaitUntil, recorder: Any
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, 'recommender = "v2"\n')
    api.set_provider_and_wait(OverridesProvider(delegate(), path=path, poll_interval=FAST_POLL))
    client = api.get_client()
    recorder.listen_globally(
        ProviderEvent.PROVIDER_ERROR,
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        ProviderEvent.PROVIDER_READY,
    )
    recorder.wait_for_event(ProviderEvent.PROVIDER_READY)  # immediate: status is READY
    ready_before = len(recorder.of(ProviderEvent.PROVIDER_READY))

    write_file(path, 'recommender = "v3\n')  # unterminated string

    error = recorder.wait_for_event(ProviderEvent.PROVIDER_ERROR)
    assert error.message is not None
    assert str(path) in error.message and "invalid TOML" in error.message
    assert error.error_code == ErrorCode.PARSE_ERROR
    assert error.provider_name == "OverridesProvider(In-Memory Provider)"
    assert client.get_provider_status() == ProviderStatus.ERROR
    still = client.get_string_details("recommender", "d")
    assert (still.value, still.reason) == ("v2", OVERRIDE_REASON)

    # the same broken state again (new file, same problem): no second error event
    write_file(path, 'recommender = "v3\n')
    time.sleep(4 * FAST_POLL)
    assert len(recorder.of(ProviderEvent.PROVIDER_ERROR)) == 1

    # a different broken state: one more error event
    write_file(path, 'recommender = [{when = {country = "DE"}}]\n')
    second = recorder.wait_for_event(
        ProviderEvent.PROVIDER_ERROR, lambda d: "rules[0].value" in (d.message or "")
    )
    assert "flag 'recommender'" in (second.message or "")
    assert len(recorder.of(ProviderEvent.PROVIDER_ERROR)) == 2

    write_file(path, 'recommender = "v4"\n')

    changed = recorder.wait_for_event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert changed.flags_changed == ["recommender"]
    assert wait_until(lambda: client.get_provider_status() == ProviderStatus.READY)
    recorder.wait_for(lambda _events: len(recorder.of(ProviderEvent.PROVIDER_READY)) > ready_before)
    assert client.get_string_details("recommender", "d").value == "v4"
    assert len(recorder.of(ProviderEvent.PROVIDER_ERROR)) == 2


@pytest.mark.slow
def test_deleted_file_keeps_last_good_overrides_and_recovers_when_recreated(
    tmp_path: Path, write_file: WriteFile, recorder: Any
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, 'recommender = "v2"\n')
    provider = OverridesProvider(path=path, poll_interval=FAST_POLL)
    api.set_provider_and_wait(provider)
    recorder.listen_globally(
        ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED
    )

    path.unlink()

    error = recorder.wait_for_event(ProviderEvent.PROVIDER_ERROR)
    assert "does not exist" in (error.message or "") and str(path) in (error.message or "")
    assert api.get_client().get_string_details("recommender", "d").value == "v2"

    write_file(path, 'recommender = "v2"\n')  # the same overrides as before

    recovered = recorder.wait_for_event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert recovered.flags_changed == []
    assert provider.overrides == {"recommender": "v2"}


@pytest.mark.slow
def test_file_overrides_load_before_initialize_and_watching_starts_with_it(
    tmp_path: Path, write_file: WriteFile, wait_until: WaitUntil
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, 'recommender = "v2"\n')
    provider = OverridesProvider(path=path, poll_interval=FAST_POLL)

    write_file(path, 'recommender = "v3"\n')
    time.sleep(3 * FAST_POLL)
    assert provider.resolve_string_details("recommender", "d").value == "v2"  # not watching yet

    api.set_provider_and_wait(provider)

    assert wait_until(
        lambda: provider.resolve_string_details("recommender", "d").value == "v3", timeout=1.0
    )


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_both_formats_are_watched(
    tmp_path: Path, write_file: WriteFile, wait_until: WaitUntil, suffix: str
) -> None:
    path = tmp_path / f"overrides{suffix}"
    render = (lambda v: f'm = "{v}"\n') if suffix == ".toml" else (lambda v: {"m": v})
    write_file(path, render("one"))
    api.set_provider_and_wait(OverridesProvider(path=path, poll_interval=FAST_POLL))
    client = api.get_client()

    write_file(path, render("two"))

    assert wait_until(lambda: client.get_string_value("m", "d") == "two", timeout=1.0)
