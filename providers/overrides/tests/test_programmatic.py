"""Programmatic overrides: set(), clear(), precedence, events and thread safety."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.provider import FeatureProvider
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags_provider_overrides import OverridesError, OverridesProvider

WaitUntil = Callable[..., bool]
WriteFile = Callable[[Path, Any], None]


class SyncEvents:
    """Stands in for the SDK's dispatcher: records events synchronously."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[ProviderEvent, ProviderEventDetails]] = []

    def __call__(
        self, provider: FeatureProvider, event: ProviderEvent, details: ProviderEventDetails
    ) -> None:
        with self.lock:
            self.events.append((event, details))

    def changed(self) -> list[list[str] | None]:
        with self.lock:
            return [
                d.flags_changed
                for e, d in self.events
                if e is ProviderEvent.PROVIDER_CONFIGURATION_CHANGED
            ]


def test_set_overrides_a_delegate_flag_and_clear_restores_it() -> None:
    delegate = InMemoryProvider({"ranker": InMemoryFlag("a", {"a": "delegate"})})
    provider = OverridesProvider(delegate)

    provider.set("ranker", "pinned")
    assert provider.resolve_string_details("ranker", "d").value == "pinned"

    provider.clear("ranker")
    assert provider.resolve_string_details("ranker", "d").value == "delegate"


def test_set_accepts_rule_lists() -> None:
    provider = OverridesProvider()

    provider.set("f", [{"value": 1, "when": {"tier": "gold"}}, {"value": 0}])

    assert provider.overrides == {"f": [{"value": 1, "when": {"tier": "gold"}}, {"value": 0}]}


def test_programmatic_overrides_take_precedence_over_the_file(
    tmp_path: Path, write_file: WriteFile
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, 'ranker = "from-file"\nother = "file-only"\n')
    provider = OverridesProvider(path=path, flags={"other": "from-flags"})

    provider.set("ranker", "from-code")

    assert provider.resolve_string_details("ranker", "d").value == "from-code"
    assert provider.resolve_string_details("other", "d").value == "from-flags"
    assert provider.resolve_string_details("ranker", "d").flag_metadata == {
        "override_source": "programmatic"
    }
    provider.clear()
    assert provider.resolve_string_details("ranker", "d").value == "from-file"
    assert provider.resolve_string_details("other", "d").value == "file-only"


def test_programmatic_precedence_survives_file_reloads(
    tmp_path: Path, write_file: WriteFile, wait_until: WaitUntil
) -> None:
    path = tmp_path / "overrides.toml"
    write_file(path, 'ranker = "file-1"\nother = "o-1"\n')
    provider = OverridesProvider(path=path, poll_interval=0.05)
    provider.set("ranker", "code")
    api.set_provider_and_wait(provider)

    write_file(path, 'ranker = "file-2"\nother = "o-2"\n')

    assert wait_until(lambda: provider.resolve_string_details("other", "d").value == "o-2")
    assert provider.resolve_string_details("ranker", "d").value == "code"
    provider.clear("ranker")
    assert provider.resolve_string_details("ranker", "d").value == "file-2"


def test_set_and_clear_emit_configuration_changed_with_the_keys(recorder: Any) -> None:
    provider = OverridesProvider()
    api.set_provider_and_wait(provider)
    recorder.listen_globally(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)

    provider.set("a", 1)
    recorder.wait_for(lambda events: len(events) == 1)
    provider.set("b", 2)
    recorder.wait_for(lambda events: len(events) == 2)
    provider.clear()

    assert recorder.wait_for(lambda events: len(events) == 3)
    changed = [d.flags_changed for d in recorder.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)]
    assert changed == [["a"], ["b"], ["a", "b"]]
    assert all(
        d.metadata == {"source": "programmatic"}
        for d in recorder.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    )


def test_no_event_when_the_effective_override_does_not_change() -> None:
    provider = OverridesProvider()
    events = SyncEvents()
    provider.attach(events)

    provider.set("a", 1)
    provider.set("a", 1)  # same value
    provider.clear("missing")  # nothing to clear
    provider.set("a", 1.0)  # a float is a different value than an integer
    provider.clear("a")
    provider.clear()  # nothing left

    assert events.changed() == [["a"], ["a"], ["a"]]


def test_invalid_set_raises_and_leaves_overrides_unchanged() -> None:
    provider = OverridesProvider(flags={"a": 1})

    with pytest.raises(OverridesError, match=r"flag 'b': field 'value\.x'"):
        provider.set("b", {"x": object()})
    with pytest.raises(TypeError):
        provider.set(1, "x")  # type: ignore[arg-type]

    assert provider.overrides == {"a": 1}


def test_overrides_snapshot_is_a_copy() -> None:
    provider = OverridesProvider(flags={"cfg": {"depth": 1}})

    snapshot = provider.overrides
    snapshot["cfg"]["depth"] = 99  # type: ignore[index]
    snapshot["new"] = 1

    assert provider.overrides == {"cfg": {"depth": 1}}
    assert provider.resolve_object_details("cfg", {}).value == {"depth": 1}


def test_value_passed_to_set_is_copied() -> None:
    provider = OverridesProvider()
    value = {"layers": [1]}

    provider.set("cfg", value)
    value["layers"].append(2)

    assert provider.resolve_object_details("cfg", {}).value == {"layers": [1]}


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Make the interpreter switch threads very often, to provoke races."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.slow
@pytest.mark.usefixtures("frequent_thread_switches")
def test_set_and_clear_from_many_threads_lose_no_updates() -> None:
    provider = OverridesProvider(InMemoryProvider({}))
    events = SyncEvents()
    provider.attach(events)
    writers, rounds = 8, 150
    barrier = threading.Barrier(writers + 2)
    stop_readers = threading.Event()
    failures: list[BaseException] = []

    def write(index: int) -> None:
        key = f"k{index}"
        try:
            barrier.wait(timeout=5)
            for n in range(rounds):
                provider.set(key, n)
                if n % 3 == 0:
                    provider.clear(key)
            provider.set(key, f"final-{index}")
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    def read() -> None:
        try:
            barrier.wait(timeout=5)
            while not stop_readers.is_set():
                for index in range(writers):
                    details = provider.resolve_integer_details(f"k{index}", -1)
                    assert details.error_code in (
                        None,
                        ErrorCode.FLAG_NOT_FOUND,
                        ErrorCode.TYPE_MISMATCH,
                    )
                    assert isinstance(provider.overrides, dict)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads[:writers]:
        thread.join(timeout=30)
    stop_readers.set()
    for thread in threads[writers:]:
        thread.join(timeout=30)

    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)
    assert provider.overrides == {f"k{i}": f"final-{i}" for i in range(writers)}
    clears = len(range(0, rounds, 3))
    expected_per_key = rounds + clears + 1
    changed = events.changed()
    assert len(changed) == writers * expected_per_key
    for index in range(writers):
        assert changed.count([f"k{index}"]) == expected_per_key
