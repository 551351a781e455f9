"""A flag provider that hangs: bounded evaluations answer with the last known good version, and
the async path never makes a synchronous evaluation that could block the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags import ModelFlags, ServingReason
from modelflags.testing import pinned

from models import Constant
from support import Workspace, wait_until

X = np.zeros((3, 2))
BOUND = 0.2
#: How late a bounded answer may be (thread start-up and scheduling on a busy machine); a hung
#: evaluation would hold the request for 30 s.
SLACK = 2.0
#: The longest pause of a 10 ms ticker that still means "the event loop was not blocked" on a busy
#: machine; a synchronous evaluation of the hanging provider would block it for 30 s.
STALL = 0.5


class HangingProvider(InMemoryProvider):
    """A real in-memory provider whose evaluations can hang until ``release`` is set.

    ``hang_sync`` / ``hang_async`` choose which API hangs; every evaluation is counted by API.
    """

    def __init__(
        self, flags: dict[str, str], *, hang_sync: bool = True, hang_async: bool = True
    ) -> None:
        super().__init__({key: InMemoryFlag(value, {value: value}) for key, value in flags.items()})
        self.release = threading.Event()
        self.hang_sync = hang_sync
        self.hang_async = hang_async
        self.sync_calls = 0
        self.async_calls = 0

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        self.sync_calls += 1
        if self.hang_sync:
            self.release.wait(30)
        return super().resolve_string_details(flag_key, default_value, evaluation_context)

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        self.async_calls += 1
        deadline = time.monotonic() + 30
        while self.hang_async and not self.release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return super().resolve_string_details(flag_key, default_value, evaluation_context)


@pytest.fixture
def registry(workspace: Workspace) -> Path:
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    workspace.add("other", "v1", Constant(5))
    return workspace.write()


@pytest.fixture
def hanging() -> Iterator[HangingProvider]:
    """A hanging provider set as the default; released when the test ends."""
    provider = HangingProvider({"m": "v2", "other": "v1"})
    api.set_provider_and_wait(provider)
    yield provider
    provider.release.set()


def assert_lkg_answered(handle: Any, took: float) -> None:
    assert took < BOUND + SLACK, f"answered after {took:.2f} s"
    assert (handle.version, handle.reason) == ("v1", ServingReason.ERROR)
    assert handle.flag_error_code == "GENERAL"
    assert handle.predict(X).tolist() == [1, 1, 1]


@pytest.mark.slow
def test_get_model_with_a_timeout_answers_with_the_lkg_when_the_provider_hangs(
    registry: Path, hanging: HangingProvider
) -> None:
    """``get_model(..., timeout=0.2)`` returns the LKG (reason ERROR) instead of waiting."""
    with ModelFlags(registry) as flags:
        for _ in range(6):  # more hung evaluations than the worker threads
            started = time.monotonic()
            handle = flags.get_model("m", "u1", timeout=BOUND)
            assert_lkg_answered(handle, time.monotonic() - started)
        status = flags.status()["m"]
    assert status.flag_errors == 6
    assert status.last_flag_error is not None and "did not answer within 0.2 s" in (
        status.last_flag_error
    )


@pytest.mark.slow
def test_a_provider_that_never_answers_is_not_asked_without_end(
    registry: Path, hanging: HangingProvider
) -> None:
    """With every worker stuck and a few evaluations queued behind them, later requests are
    answered by the LKG at once instead of queueing more evaluations; once the provider answers
    again, bounded evaluations serve the flag."""
    with ModelFlags(registry, evaluation_timeout=BOUND) as flags:
        took = []
        for _ in range(20):
            started = time.monotonic()
            handle = flags.get_model("m", "u1")
            took.append(time.monotonic() - started)
            assert (handle.version, handle.reason) == ("v1", ServingReason.ERROR)
        assert max(took) < BOUND + SLACK
        assert sum(t < BOUND / 2 for t in took) >= 10, took  # answered without waiting
        last = flags.status()["m"].last_flag_error or ""
        assert "has not answered 8 evaluations" in last
        assert hanging.sync_calls <= 4
        hanging.release.set()
        wait_until(lambda: flags.get_model("m", "u1").version == "v2", 10, "the flag served")


@pytest.mark.slow
def test_an_evaluation_timeout_bounds_every_get_model(
    registry: Path, hanging: HangingProvider
) -> None:
    """``ModelFlags(evaluation_timeout=0.2)`` bounds calls that pass no timeout."""
    with ModelFlags(registry, evaluation_timeout=BOUND) as flags:
        started = time.monotonic()
        handle = flags.get_model("m", "u1")
        assert_lkg_answered(handle, time.monotonic() - started)


def test_a_bounded_evaluation_that_answers_in_time_serves_the_flag(registry: Path) -> None:
    """With a provider that answers, a bound changes nothing."""
    api.set_provider_and_wait(HangingProvider({"m": "v2"}, hang_sync=False, hang_async=False))
    with ModelFlags(registry, evaluation_timeout=5.0) as flags:
        handle = flags.get_model("m", "u1")
        assert (handle.version, handle.reason) == ("v2", ServingReason.STATIC)
        assert flags.get_model("m", "u1", timeout=5.0).version == "v2"


def run_with_ticker(
    scenario: Callable[[], Awaitable[Any]], timeout: float = 10.0
) -> tuple[Any, float]:
    """Run ``scenario`` while a 10 ms ticker runs; the result and the ticker's longest gap."""

    async def main() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = loop.time()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = loop.time()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.03)
        try:
            result = await scenario()
        finally:
            stop.set()
            await ticking
        return result, max(gaps)

    return asyncio.run(asyncio.wait_for(main(), timeout))


@pytest.mark.slow
def test_get_model_async_with_a_timeout_answers_with_the_lkg_and_never_blocks_the_loop(
    registry: Path, hanging: HangingProvider
) -> None:
    """``get_model_async(..., timeout=0.2)`` awaits at most the bound; the loop keeps ticking."""
    with ModelFlags(registry) as flags:
        flags.get_model("m", "u1", timeout=BOUND)  # load the LKG first
        hanging.sync_calls = hanging.async_calls = 0

        async def scenario() -> tuple[Any, float]:
            started = time.monotonic()
            handle = await flags.get_model_async("m", "u1", timeout=BOUND)
            return handle, time.monotonic() - started

        (handle, took), gap = run_with_ticker(scenario)
    assert_lkg_answered(handle, took)
    assert gap < STALL, f"the event loop stalled for {gap * 1000:.0f} ms"
    assert (hanging.sync_calls, hanging.async_calls) == (0, 1)


@pytest.mark.slow
def test_an_evaluation_timeout_bounds_get_model_async(
    registry: Path, hanging: HangingProvider
) -> None:
    """``ModelFlags(evaluation_timeout=...)`` bounds the async path too."""
    with ModelFlags(registry, evaluation_timeout=BOUND) as flags:

        async def scenario() -> tuple[Any, float]:
            started = time.monotonic()
            handle = await flags.get_model_async("m", "u1")
            return handle, time.monotonic() - started

        (handle, took), _ = run_with_ticker(scenario)
    assert_lkg_answered(handle, took)


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["plain", "override file", "pins of another model"])
def test_the_async_path_never_calls_a_synchronous_evaluation(
    registry: Path, tmp_path: Path, layer: str
) -> None:
    """With an override file or pins in force, ``get_model_async`` still evaluates the flag with
    the async API only: a provider whose synchronous API hangs never stalls the loop."""
    provider = HangingProvider({"m": "v2", "other": "v1"}, hang_sync=True, hang_async=False)
    api.set_provider_and_wait(provider)
    overrides = None
    if layer == "override file":
        overrides = tmp_path / "overrides.toml"
        overrides.write_text('unrelated = "x"\n')
    try:
        with ModelFlags(registry, overrides=overrides) as flags:

            async def scenario() -> list[Any]:
                return [await flags.get_model_async("m", f"u{index}") for index in range(3)]

            if layer == "pins of another model":
                with pinned(other="v1"):
                    handles, gap = run_with_ticker(scenario)
            else:
                handles, gap = run_with_ticker(scenario)
    finally:
        provider.release.set()
    assert [(h.version, h.reason) for h in handles] == [("v2", ServingReason.STATIC)] * 3
    assert provider.sync_calls == 0 and provider.async_calls == 3
    assert gap < STALL, f"the event loop stalled for {gap * 1000:.0f} ms"


def test_a_pinned_model_is_served_asynchronously_without_asking_the_provider(
    registry: Path, hanging: HangingProvider
) -> None:
    """A pin answers on the async path without any evaluation, sync or async."""
    with ModelFlags(registry) as flags, pinned(m="v2"):

        async def scenario() -> Any:
            return await flags.get_model_async("m", "u1")

        handle, gap = run_with_ticker(scenario)
    assert (handle.version, handle.reason) == ("v2", ServingReason.OVERRIDE)
    assert hanging.sync_calls == hanging.async_calls == 0
    assert gap < STALL
