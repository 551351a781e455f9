"""Shared fixtures: OpenFeature global state reset, thread-leak check, event recording."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent

# Threads that legitimately outlive a test: the SDK's shared event executor.
_LONG_LIVED_PREFIXES = ("openfeature-event-handler",)
LEAK_GRACE_SECONDS = 3.0


def _foreign_threads(baseline: set[threading.Thread]) -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread not in baseline
        and thread.is_alive()
        and not thread.name.startswith(_LONG_LIVED_PREFIXES)
    ]


@pytest.fixture(autouse=True)
def _isolated_openfeature() -> Iterator[None]:
    """Reset the global OpenFeature API after each test and fail on leaked threads."""
    baseline = set(threading.enumerate())
    yield
    api.clear_providers()  # shuts providers down and removes all event handlers
    api.clear_hooks()
    api.set_evaluation_context(EvaluationContext())
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    leaked = _foreign_threads(baseline)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.01)
        leaked = _foreign_threads(baseline)
    assert not leaked, f"threads still running after the test: {[t.name for t in leaked]}"


@dataclass
class EventRecorder:
    """Collects OpenFeature events delivered to handlers (from any thread)."""

    events: list[tuple[ProviderEvent, EventDetails]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _registered: list[tuple[ProviderEvent, Callable[[EventDetails], None]]] = field(
        default_factory=list
    )

    def handler_for(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        """Return a handler that records ``event`` occurrences."""

        def handle(details: EventDetails) -> None:
            with self._cond:
                self.events.append((event, details))
                self._cond.notify_all()

        return handle

    def listen_globally(self, *events: ProviderEvent) -> None:
        """Register handlers with ``api.add_handler`` (removed again at teardown)."""
        for event in events or tuple(ProviderEvent):
            handler = self.handler_for(event)
            api.add_handler(event, handler)
            self._registered.append((event, handler))

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        """Return the recorded details of one event type, in arrival order."""
        with self._cond:
            return [details for kind, details in self.events if kind is event]

    def wait_for(
        self,
        predicate: Callable[[list[tuple[ProviderEvent, EventDetails]]], bool],
        timeout: float = 2.0,
    ) -> bool:
        """Wait until ``predicate(events)`` holds or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_for_event(
        self,
        event: ProviderEvent,
        match: Callable[[EventDetails], bool] = lambda _details: True,
        timeout: float = 2.0,
    ) -> EventDetails:
        """Wait for a matching event and return its details, failing the test on timeout."""
        found: list[EventDetails] = []

        def predicate(events: list[tuple[ProviderEvent, EventDetails]]) -> bool:
            found[:] = [d for kind, d in events if kind is event and match(d)]
            return bool(found)

        assert self.wait_for(predicate, timeout), (
            f"no matching {event.value} within {timeout}s; got {self.events}"
        )
        return found[0]

    def remove_all(self) -> None:
        """Unregister every handler added through this recorder."""
        for event, handler in self._registered:
            with contextlib.suppress(ValueError):  # already gone after api.clear_providers()
                api.remove_handler(event, handler)
        self._registered.clear()


@pytest.fixture
def recorder() -> Iterator[EventRecorder]:
    """An :class:`EventRecorder` whose global handlers are removed after the test."""
    rec = EventRecorder()
    yield rec
    rec.remove_all()


def _wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _write_atomically(path: Path, content: str | Any) -> None:
    if not isinstance(content, str):
        content = json.dumps(content)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    try:
        previous = path.stat().st_mtime_ns
    except FileNotFoundError:
        previous = 0
    # strictly newer mtime, for watchers that compare modification times only
    mtime = max(time.time_ns(), previous + 10_000_000)
    os.utime(tmp, ns=(mtime, mtime))
    os.replace(tmp, path)


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    """``wait_until(condition, timeout=2.0)``: poll until true or the deadline passes."""
    return _wait_until


@pytest.fixture
def write_file() -> Callable[[Path, Any], None]:
    """``write_file(path, text_or_json_document)``: replace a file atomically."""
    return _write_atomically
