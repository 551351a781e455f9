"""No request waits for a load while the last known good version is in memory.

A request whose version is not loaded yet is answered by the LKG (reason ``PREWARMING``) while the
version loads in the background, once however many requests meet it, whether or not a change event
announced the version. Only a process with nothing loaded loads in the request.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider import AbstractProvider, Metadata

from modelflags import Backoff, ModelFlags
from modelflags.client import FALLBACK, PREWARMING

from models import Constant
from support import Workspace

X = np.zeros((2, 2))


class SilentProvider(AbstractProvider):
    """A provider whose values change without any event (a polling-only flag service)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def get_metadata(self) -> Metadata:
        return Metadata(name="silent")

    def resolve_boolean_details(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def resolve_integer_details(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def resolve_float_details(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def resolve_object_details(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return FlagResolutionDetails(self.value, variant=self.value, reason="TARGETING_MATCH")


@dataclass
class GatedLoader:
    """A joblib loader that holds each load until ``gate`` opens (at most 10 s)."""

    gate: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    calls: int = 0

    def __call__(self, path: Path) -> Any:
        self.calls += 1
        self.started.set()
        self.gate.wait(10.0)
        return joblib.load(path)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:.1f} s")
        time.sleep(0.005)


def test_a_version_flagged_without_any_event_loads_in_the_background_while_the_lkg_answers(
    workspace: Workspace,
) -> None:
    """Eight threads meet an unloaded version: none waits, the LKG answers, one load runs."""
    loader = GatedLoader()
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2), loader="gated")
    provider = SilentProvider("v1")
    api.set_provider_and_wait(provider)
    with ModelFlags(workspace.write(), loaders={"gated": loader}) as flags:
        assert flags.get_model("m", "u").predict(X).tolist() == [1, 1]  # v1, the LKG, loaded
        provider.value = "v2"  # no event
        answers: Counter[tuple[str, str, str]] = Counter()
        waits: list[float] = []
        lock = threading.Lock()

        def ask(index: int) -> None:
            for i in range(50):
                asked = time.perf_counter()
                handle = flags.get_model("m", f"user-{index}-{i}")
                label = int(handle.predict(X)[0])
                with lock:
                    waits.append(time.perf_counter() - asked)
                    answers[(handle.version, handle.requested_version, str(handle.reason))] += 1
                    assert label == 1

        try:
            threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10.0)
            assert loader.started.is_set()  # the load runs meanwhile
        finally:
            loader.gate.set()
        assert answers == {("v1", "v2", PREWARMING): 400}
        assert max(waits) < 1.0  # nobody waited for the gated load (held up to 10 s)
        wait_until(lambda: "v2" in flags.status()["m"].loaded, 5.0, "v2 loaded")
        handle = flags.get_model("m", "u")
        assert (handle.version, handle.reason) == ("v2", "TARGETING_MATCH")
        assert loader.calls == 1


def test_a_version_failing_its_background_load_is_quarantined_then_reported_as_fallback(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The LKG answers while the load runs (PREWARMING), then because it failed (FALLBACK)."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"not a pickle", suffix=".pkl")
    set_flags(m="v1")
    with ModelFlags(workspace.write(), backoff=Backoff(initial=300.0)) as flags:
        flags.get_model("m", "u").predict(X)
        set_flags(m="v2")  # a new provider: flags that may name an unloaded version
        wait_until(lambda: flags.get_model("m", "u").requested_version == "v2", 5.0, "v2 asked")
        wait_until(lambda: bool(flags.status()["m"].quarantined), 5.0, "v2 quarantined")
        handle = flags.get_model("m", "u")
        assert (handle.version, handle.requested_version, handle.reason) == ("v1", "v2", FALLBACK)
        assert handle.predict(X).tolist() == [1, 1]


def test_a_process_with_nothing_loaded_loads_in_the_request(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Without an LKG in memory nothing could answer: the first request loads the version."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        handle = flags.get_model("m", "u")
        assert (handle.version, handle.fell_back) == ("v2", False)
        assert flags.status()["m"].loaded.keys() == {"v2"}
