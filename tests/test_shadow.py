"""Shadow mode: a second version answers the same calls in the background and is compared.

The primary answer is returned as if there were no shadow; the shadow's answers, failures, loads
and delays stay on background threads and only show in ``shadow_report`` and listener events.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openfeature import api
from openfeature.hook import Hook, HookContext, HookHints
from sklearn.linear_model import LogisticRegression

from modelflags import LoadFailed, ModelFlags, ModelFlagsError, ModelUnavailableError, Quarantined
from modelflags.serving.shadow import ShadowStats
from modelflags.telemetry.events import ShadowResult

from models import Broken, Constant
from support import FakeClock, Workspace

ROOT = Path(__file__).resolve().parents[1]
WAIT = 5.0  # upper bound of every wait; tests finish far sooner when the code is right

# 100 rows of one feature: 20 lie between the boundaries 0.5 and 0.7 of the two models below,
# 80 lie far from both. The versions disagree on exactly 20% of the rows.
ROWS = np.concatenate(
    [np.linspace(0.0, 0.4, 50), np.linspace(0.58, 0.62, 20), np.linspace(0.8, 1.0, 30)]
).reshape(-1, 1)


@pytest.fixture(scope="module")
def pair() -> dict[str, LogisticRegression]:
    """A primary and a candidate whose labels differ on exactly 20 of the 100 ROWS."""
    x = (np.arange(400) + 0.5) / 400
    X = x.reshape(-1, 1)
    models = {
        "v1": LogisticRegression(C=1000.0).fit(X, (x > 0.5).astype(int)),
        "v2": LogisticRegression(C=1000.0).fit(X, (x > 0.7).astype(int)),
    }
    assert int(np.sum(models["v1"].predict(ROWS) != models["v2"].predict(ROWS))) == 20
    return models


@pytest.fixture
def no_thread_left() -> Iterator[None]:
    """Fails the test when a shadow thread started during it is still alive at its end."""
    before = set(shadow_threads())
    yield
    assert set(shadow_threads()) - before == set()


def shadow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("modelflags-shadow")]


def shadowed(
    workspace: Workspace,
    primary: Any,
    shadow: Any = None,
    *,
    rate: float | None = None,
    shadow_loader: str | None = None,
) -> Path:
    """A registry of model ``m`` (v1 primary, v2 candidate) with shadow flag ``m.shadow``.

    A string ``primary`` names the loader of v1; ``shadow_loader`` names the loader of v2.
    """
    if isinstance(primary, str):
        workspace.add("m", "v1", raw=b"v1", suffix=".bin", loader=primary)
    else:
        workspace.add("m", "v1", primary)
    if shadow_loader is None:
        workspace.add("m", "v2", shadow)
    else:
        workspace.add("m", "v2", raw=b"v2", suffix=".bin", loader=shadow_loader)
    fields: dict[str, Any] = {"shadow_flag": "m.shadow"}
    if rate is not None:
        fields["shadow_rate"] = rate
    workspace.set("m", **fields)
    return workspace.write()


def only(report: dict[tuple[str, str], ShadowStats]) -> ShadowStats:
    assert list(report) == [("v1", "v2")]
    return report[("v1", "v2")]


class FlagKeys(Hook):
    """Records the key of every flag evaluated through the OpenFeature API."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def before(self, hook_context: HookContext, hints: HookHints) -> None:
        self.keys.append(hook_context.flag_key)


class Recording(Constant):
    """Answers like ``Constant`` and records each call: method, arguments and thread."""

    def __init__(self, label: int) -> None:
        super().__init__(label)
        self.calls: list[tuple[str, Any, dict[str, Any], str]] = []

    def _record(self, method: str, X: Any, **kwargs: Any) -> None:
        self.calls.append((method, X, kwargs, threading.current_thread().name))

    def predict(self, X: Any) -> np.ndarray:
        self._record("predict", X)
        return super().predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        self._record("predict_proba", X)
        return super().predict_proba(X)

    def rank(self, X: Any, *, top: int = 1) -> list[int]:
        self._record("rank", X, top=top)
        return [self.label] * top

    def __call__(self, X: Any) -> np.ndarray:
        self._record("__call__", X)
        return super().predict(X)


class Blocking(Constant):
    """Blocks in ``predict`` until released; counts the calls that started."""

    def __init__(self, label: int) -> None:
        super().__init__(label)
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs = 0

    def predict(self, X: Any) -> np.ndarray:
        self.runs += 1
        self.started.set()
        self.release.wait(WAIT)
        return super().predict(X)


# -- which calls are shadowed ---------------------------------------------------------------------


def test_model_without_shadow_flag_never_evaluates_a_shadow_flag(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Only a model with ``shadow_flag`` evaluates it; a model without one pays nothing."""
    workspace.add("plain", "v1", Constant(1))
    workspace.add("plain", "v2", Constant(0))
    workspace.add("shadowed", "v1", Constant(1))
    workspace.add("shadowed", "v2", Constant(0))
    workspace.set("shadowed", shadow_flag="shadowed.shadow")
    set_flags(**{"plain": "v1", "plain.shadow": "v2", "shadowed": "v1", "shadowed.shadow": "v2"})
    hook = FlagKeys()
    api.add_hooks([hook])
    with ModelFlags(workspace.write()) as flags:
        for user in ["a", "b", "c"]:
            model = flags.get_model("plain", user)
            assert model.shadow_version is None
            model.predict(ROWS)
        assert hook.keys == ["plain"] * 3
        hook.keys.clear()
        assert flags.get_model("shadowed", "a").shadow_version == "v2"
        assert hook.keys == ["shadowed", "shadowed.shadow"]
        assert flags.flush(WAIT)
        assert flags.shadow_report("plain") == {}


@pytest.mark.parametrize("value", ["", "v1"], ids=["empty", "the serving version"])
def test_shadow_value_that_names_no_other_version_means_no_shadow(
    workspace: Workspace, set_flags: Callable[..., None], value: str
) -> None:
    """An empty shadow value, or the version already serving, mirrors nothing."""
    shadow = Recording(0)
    registry = shadowed(workspace, Constant(1), shadow_loader="rec")
    set_flags(**{"m": "v1", "m.shadow": value})
    with ModelFlags(registry, loaders={"rec": lambda path: shadow}) as flags:
        model = flags.get_model("m", "u1")
        assert model.shadow_version is None
        assert model.predict(ROWS).tolist() == [1] * len(ROWS)
        assert flags.flush(WAIT)
        assert flags.shadow_report("m") == {}
    assert shadow.calls == []


def test_unknown_shadow_version_means_no_shadow_and_is_logged_once(
    workspace: Workspace, set_flags: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """A shadow value the registry does not know mirrors nothing and warns once, naming it."""
    registry = shadowed(workspace, Constant(1), Constant(0))
    set_flags(**{"m": "v1", "m.shadow": "v9"})
    with caplog.at_level(logging.WARNING), ModelFlags(registry) as flags:
        for user in ["a", "b", "c", "d"]:
            model = flags.get_model("m", user)
            assert (model.version, model.shadow_version) == ("v1", None)
            model.predict(ROWS)
        assert flags.flush(WAIT)
        assert flags.shadow_report("m") == {}
    warnings = [r.getMessage() for r in caplog.records if "'v9'" in r.getMessage()]
    assert len(warnings) == 1
    assert "m.shadow" in warnings[0]


def test_sampling_is_fixed_per_targeting_key_and_near_the_rate(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """At rate 0.25 about a quarter of 2,000 users are mirrored, the same ones every time."""

    def no_random() -> float:
        raise AssertionError("the random source is not used for users with a targeting key")

    registry = shadowed(workspace, Constant(1), Constant(0), rate=0.25)
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    users = [f"user-{i}" for i in range(2000)]
    with ModelFlags(registry, random=no_random) as flags:
        first = {u for u in users if flags.get_model("m", u).shadow_version == "v2"}
        again = {u for u in users if flags.get_model("m", {"id": u}).shadow_version == "v2"}
    with ModelFlags(registry, random=no_random) as other:
        third = {u for u in users if other.get_model("m", u).shadow_version == "v2"}
    assert 0.22 <= len(first) / len(users) <= 0.28
    assert first == again == third


def test_sampling_without_targeting_key_draws_from_the_random_source(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Anonymous requests are mirrored when the injected random draw falls below the rate."""
    draws = iter([0.10, 0.90, 0.24, 0.26, 0.0])
    registry = shadowed(workspace, Constant(1), Constant(0), rate=0.25)
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(registry, random=lambda: next(draws)) as flags:
        chosen = [flags.get_model("m").shadow_version for _ in range(5)]
    assert chosen == ["v2", None, "v2", None, "v2"]


def test_rate_zero_mirrors_nobody_and_rate_one_everybody(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The bounds of shadow_rate are exact: 0.0 mirrors no call, 1.0 (the default) all."""
    workspace.add("none", "v1", Constant(1))
    workspace.add("none", "v2", Constant(0))
    workspace.set("none", shadow_flag="none.shadow", shadow_rate=0.0)
    workspace.add("all", "v1", Constant(1))
    workspace.add("all", "v2", Constant(0))
    workspace.set("all", shadow_flag="all.shadow")
    set_flags(**{"none": "v1", "none.shadow": "v2", "all": "v1", "all.shadow": "v2"})
    with ModelFlags(workspace.write()) as flags:
        users = [f"user-{i}" for i in range(200)] + [None] * 20
        assert {flags.get_model("none", u).shadow_version for u in users} == {None}
        assert {flags.get_model("all", u).shadow_version for u in users} == {"v2"}


async def _async_choice(flags: ModelFlags) -> tuple[str, str | None]:
    model = await flags.get_model_async("m", "u1")
    return model.version, model.shadow_version


def test_async_get_model_chooses_the_shadow_too(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """``get_model_async`` names the same shadow version as ``get_model``."""
    registry = shadowed(workspace, Constant(1), Constant(0))
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(registry) as flags:
        assert asyncio.run(_async_choice(flags)) == ("v1", "v2")


# -- what the caller sees -------------------------------------------------------------------------


def test_every_inference_method_is_mirrored_with_the_same_arguments(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """predict, predict_proba, a custom method with keywords and the call itself all mirror."""
    primary, shadow = Recording(1), Recording(0)
    registry = shadowed(workspace, "primary", shadow_loader="shadow")
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    X = ROWS[:4]
    loaders = {"primary": lambda path: primary, "shadow": lambda path: shadow}
    with ModelFlags(registry, loaders=loaders) as flags:
        model = flags.get_model("m", "u1")
        assert model.predict(X).tolist() == [1, 1, 1, 1]
        assert model.predict_proba(X).tolist() == [[0.0, 1.0]] * 4
        assert model.rank(X, top=2) == [1, 1]
        assert model(X).tolist() == [1, 1, 1, 1]
        assert flags.flush(WAIT)
        stats = only(flags.shadow_report("m"))
    assert [(method, kwargs) for method, _, kwargs, _ in shadow.calls] == [
        ("predict", {}),
        ("predict_proba", {}),
        ("rank", {"top": 2}),
        ("__call__", {}),
    ]
    assert all(np.array_equal(args, X) for _, args, _, _ in shadow.calls)
    assert all(thread.startswith("modelflags-shadow") for _, _, _, thread in shadow.calls)
    assert [(m, kw) for m, _, kw, _ in primary.calls] == [(m, kw) for m, _, kw, _ in shadow.calls]
    assert (stats.mirrored, stats.compared, stats.dropped, stats.errors) == (4, 4, 0, 0)


def test_shadow_exception_never_reaches_the_caller(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """A shadow that raises leaves the primary answer as it is and counts an error."""
    events: list[object] = []
    registry = shadowed(workspace, Constant(1), Broken(0))
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(registry, listeners=[events.append]) as flags:
        model = flags.get_model("m", "u1")
        assert model.predict(ROWS[:3]).tolist() == [1, 1, 1]
        assert model.predict_proba(ROWS[:3]).tolist() == [[0.0, 1.0]] * 3
        assert flags.flush(WAIT)
        stats = only(flags.shadow_report("m"))
        assert flags.status()["m"].quarantined == ()
    assert (stats.mirrored, stats.compared, stats.errors) == (2, 0, 2)
    assert stats.agreement is None and stats.mean_abs_diff is None
    results = [e for e in events if isinstance(e, ShadowResult)]
    assert [(r.method, r.error) for r in results] == [
        ("predict", "RuntimeError: broken model"),
        ("predict_proba", "RuntimeError: broken model"),
    ]


def test_shadow_load_failure_never_reaches_the_caller_and_quarantines_the_shadow(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """A shadow that cannot load is quarantined like any version; later calls are dropped."""

    def explodes(path: Path) -> object:
        raise MemoryError("loader ran out of memory")

    events: list[object] = []
    registry = shadowed(workspace, Constant(1), shadow_loader="explodes")
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(registry, loaders={"explodes": explodes}, listeners=[events.append]) as flags:
        model = flags.get_model("m", "u1")
        assert model.predict(ROWS[:2]).tolist() == [1, 1]
        assert flags.flush(WAIT)
        quarantined = flags.status()["m"].quarantined
        assert [q.version for q in quarantined] == ["v2"]
        assert "MemoryError" in quarantined[0].cause
        assert flags.get_model("m", "u2").predict(ROWS[:2]).tolist() == [1, 1]
        assert flags.flush(WAIT)
        stats = only(flags.shadow_report("m"))
        assert flags.status()["m"].lkg == "v1"
    assert (stats.mirrored, stats.compared, stats.errors, stats.dropped) == (1, 0, 1, 1)
    kinds = {type(e) for e in events}
    assert {LoadFailed, Quarantined, ShadowResult} <= kinds
    failed = [e for e in events if isinstance(e, ShadowResult)]
    assert failed[0].error is not None and "MemoryError" in failed[0].error


def test_quarantined_shadow_is_tried_again_after_its_back_off(
    workspace: Workspace, set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """A shadow that failed to load is skipped until its back-off ends, then loads and compares."""
    attempts: list[float] = []

    def flaky(path: Path) -> Constant:
        attempts.append(clock.now)
        if len(attempts) == 1:
            raise OSError("artifact store unreachable")
        return Constant(1)

    registry = shadowed(workspace, Constant(1), shadow_loader="flaky")
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(registry, loaders={"flaky": flaky}, clock=clock) as flags:
        for step in (0.0, 0.5, 0.5):
            clock.advance(step)
            assert flags.get_model("m", "u1").predict(ROWS[:2]).tolist() == [1, 1]
            assert flags.flush(WAIT)
        stats = only(flags.shadow_report("m"))
    assert attempts == [1000.0, 1001.0]
    assert (stats.mirrored, stats.errors, stats.dropped, stats.compared) == (2, 1, 1, 1)
    assert stats.agreement == 1.0


@pytest.mark.parametrize("where", ["model", "loader"])
def test_slow_shadow_never_delays_the_primary(
    workspace: Workspace, set_flags: Callable[..., None], where: str
) -> None:
    """A shadow blocked in its loader or its model leaves the primary call immediate."""
    blocking = Blocking(0)
    release = threading.Event()

    def slow_loader(path: Path) -> Constant:
        release.wait(WAIT)
        return Constant(0)

    loader = (lambda path: blocking) if where == "model" else slow_loader
    registry = shadowed(workspace, Constant(1), shadow_loader="slow")
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(registry, loaders={"slow": loader}) as flags:
        model = flags.get_model("m", "u1")
        began = time.perf_counter()
        answers = [model.predict(ROWS[:2]).tolist() for _ in range(3)]
        elapsed = time.perf_counter() - began
        release.set()
        blocking.release.set()
        assert flags.flush(WAIT)
        stats = only(flags.shadow_report("m"))
    assert answers == [[1, 1]] * 3
    assert elapsed < 0.5, f"primary calls took {elapsed:.3f} s behind a blocked shadow"
    assert (stats.mirrored, stats.compared) == (3, 3)


def test_full_queue_drops_shadow_calls_without_blocking(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """With one worker and a queue of one, a blocked shadow makes further calls drop, not wait."""
    blocking = Blocking(0)
    registry = shadowed(workspace, Constant(1), shadow_loader="blocking")
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(
        registry, loaders={"blocking": lambda path: blocking}, shadow_queue=1, shadow_workers=1
    ) as flags:
        model = flags.get_model("m", "u1")
        model.predict(ROWS[:1])
        assert blocking.started.wait(WAIT)
        began = time.perf_counter()
        for _ in range(20):
            assert model.predict(ROWS[:1]).tolist() == [1]
        elapsed = time.perf_counter() - began
        during = only(flags.shadow_report("m"))
        blocking.release.set()
        assert flags.flush(WAIT)
        after = only(flags.shadow_report("m"))
    assert elapsed < 0.5, f"20 calls took {elapsed:.3f} s behind a full shadow queue"
    assert (during.mirrored, during.dropped, during.compared) == (1, 20, 0)
    assert (after.mirrored, after.dropped, after.compared) == (1, 20, 1)
    assert blocking.runs == 1


# -- loading the shadow ---------------------------------------------------------------------------


def test_shadow_loads_lazily_on_a_shadow_thread_through_the_shared_cache(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The shadow loads once, off the request thread, into the cache primaries use too."""
    loads: list[str] = []
    gate = threading.Event()

    def recorded(path: Path) -> Constant:
        loads.append(threading.current_thread().name)
        gate.wait(WAIT)
        return Constant(0)

    registry = shadowed(workspace, Constant(1), shadow_loader="recorded")
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(registry, loaders={"recorded": recorded}, shadow_workers=4) as flags:
        model = flags.get_model("m", "u1")
        assert list(flags.status()["m"].loaded) == ["v1"]  # nothing loads before a call
        for _ in range(6):
            model.predict(ROWS[:2])
        gate.set()
        assert flags.flush(WAIT)
        assert list(flags.status()["m"].loaded) == ["v1", "v2"]
        stats = only(flags.shadow_report("m"))
        set_flags(**{"m": "v2", "m.shadow": ""})
        promoted = flags.get_model("m", "u1")
        assert (promoted.version, promoted.predict(ROWS[:2]).tolist()) == ("v2", [0, 0])
    assert len(loads) == 1, loads
    assert loads[0].startswith("modelflags-shadow")
    assert (stats.mirrored, stats.compared, stats.errors) == (6, 6, 0)


def test_a_shadow_that_answers_never_becomes_the_last_known_good_version(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Only the primary proves itself; a successful shadow leaves the LKG alone."""
    workspace.add("m", "v0", Constant(1), default=True)
    registry = shadowed(workspace, Constant(1), Constant(0))
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(registry) as flags:
        assert flags.status()["m"].lkg == "v0"
        flags.get_model("m", "u1").predict(ROWS[:2])
        assert flags.flush(WAIT)
        assert only(flags.shadow_report("m")).compared == 1
        assert flags.status()["m"].lkg == "v1"


# -- statistics and events ------------------------------------------------------------------------


def test_report_counts_agreement_differences_and_latencies(
    workspace: Workspace, set_flags: Callable[..., None], pair: dict[str, LogisticRegression]
) -> None:
    """Label agreement, probability differences and latencies match the models' own outputs."""
    registry = shadowed(workspace, pair["v1"], pair["v2"])
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    probas = np.abs(pair["v1"].predict_proba(ROWS) - pair["v2"].predict_proba(ROWS))
    with ModelFlags(registry) as flags:
        model = flags.get_model("m", "u1")
        for start in range(0, 100, 10):
            assert np.array_equal(
                model.predict(ROWS[start : start + 10]),
                pair["v1"].predict(ROWS[start : start + 10]),
            )
        assert flags.flush(WAIT)
        labels = only(flags.shadow_report("m"))
        flags.reset_shadow("m")
        assert flags.shadow_report("m") == {}
        model.predict_proba(ROWS)
        assert flags.flush(WAIT)
        numbers = only(flags.shadow_report("m"))
    assert (labels.primary, labels.shadow) == ("v1", "v2")
    assert (labels.mirrored, labels.compared, labels.dropped, labels.errors) == (10, 10, 0, 0)
    assert labels.agreement == 0.8
    assert numbers.mean_abs_diff == pytest.approx(float(probas.mean()), rel=1e-9)
    assert numbers.max_abs_diff == pytest.approx(float(probas.max()), rel=1e-9)
    for stats in (labels, numbers):
        assert stats.primary_p50 is not None and stats.primary_p95 is not None
        assert stats.shadow_p50 is not None and stats.shadow_p95 is not None
        assert 0 < stats.primary_p50 <= stats.primary_p95 < WAIT
        assert 0 < stats.shadow_p50 <= stats.shadow_p95 < WAIT


def test_agreement_counts_labels_and_differences_count_probabilities(
    workspace: Workspace, set_flags: Callable[..., None], pair: dict[str, LogisticRegression]
) -> None:
    """Mirroring predict and predict_proba together keeps each statistic to its own outputs."""
    events: list[object] = []
    registry = shadowed(workspace, pair["v1"], pair["v2"])
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    probas = np.abs(pair["v1"].predict_proba(ROWS) - pair["v2"].predict_proba(ROWS))
    with ModelFlags(registry, listeners=[events.append]) as flags:
        model = flags.get_model("m", "u1")
        model.predict(ROWS)
        model.predict_proba(ROWS)
        assert flags.flush(WAIT)
        stats = only(flags.shadow_report("m"))
    by_method = {e.method: e for e in events if isinstance(e, ShadowResult)}
    assert by_method["predict"].agreed == 0.8
    assert by_method["predict_proba"].agreed is None  # probabilities are not labels
    assert stats.agreement == 0.8
    assert stats.mean_abs_diff == pytest.approx(float(probas.mean()), rel=1e-9)
    assert stats.max_abs_diff == pytest.approx(float(probas.max()), rel=1e-9)


def test_each_comparison_reaches_listeners_as_a_shadow_result(
    workspace: Workspace, set_flags: Callable[..., None], pair: dict[str, LogisticRegression]
) -> None:
    """Listeners get one ShadowResult per mirrored call, with outcome and both latencies."""
    events: list[object] = []
    registry = shadowed(workspace, pair["v1"], pair["v2"])
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    probas = np.abs(pair["v1"].predict_proba(ROWS) - pair["v2"].predict_proba(ROWS))
    with ModelFlags(registry, listeners=[events.append]) as flags:
        model = flags.get_model("m", "u1")
        model.predict(ROWS)
        model.predict_proba(ROWS)
        assert flags.flush(WAIT)
    results = [e for e in events if isinstance(e, ShadowResult)]
    assert [(r.model, r.primary, r.shadow, r.method, r.error) for r in results] == [
        ("m", "v1", "v2", "predict", None),
        ("m", "v1", "v2", "predict_proba", None),
    ]
    labels, numbers = results
    assert labels.agreed == 0.8
    assert numbers.mean_abs_diff == pytest.approx(float(probas.mean()), rel=1e-9)
    assert numbers.max_abs_diff == pytest.approx(float(probas.max()), rel=1e-9)
    for result in results:
        assert 0 < result.primary_latency < WAIT
        assert result.shadow_latency is not None and 0 < result.shadow_latency < WAIT


@pytest.mark.slow
def test_statistics_stay_exact_under_eight_hammering_threads(
    workspace: Workspace, set_flags: Callable[..., None], pair: dict[str, LogisticRegression]
) -> None:
    """8 threads x 100 calls, reports read meanwhile: every count and the agreement are exact."""
    registry = shadowed(workspace, pair["v1"], pair["v2"])
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    errors: list[BaseException] = []
    start = threading.Barrier(9)

    def hammer(flags: ModelFlags, thread: int) -> None:
        start.wait(WAIT)
        try:
            for i in range(100):
                row = (thread + i) % len(ROWS)
                flags.get_model("m", f"user-{thread}").predict(ROWS[row : row + 1])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with ModelFlags(registry, shadow_queue=1000, shadow_workers=2) as flags:
        threads = [threading.Thread(target=hammer, args=(flags, t)) for t in range(8)]
        for thread in threads:
            thread.start()
        start.wait(WAIT)
        while any(t.is_alive() for t in threads):
            flags.shadow_report("m")  # reading while others write
        for thread in threads:
            thread.join(WAIT)
        assert flags.flush(WAIT)
        stats = only(flags.shadow_report("m"))
    assert errors == []
    assert (stats.mirrored, stats.compared, stats.dropped, stats.errors) == (800, 800, 0, 0)
    assert stats.agreement == 0.8  # each thread covers every row once


def test_drops_and_mirrors_add_up_under_contention(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """With a tiny queue, every call is either mirrored or dropped, and every mirror compared."""
    registry = shadowed(workspace, Constant(1), Constant(0))
    set_flags(**{"m": "v1", "m.shadow": "v2"})

    def hammer(flags: ModelFlags) -> None:
        model = flags.get_model("m", "u1")
        for _ in range(100):
            model.predict(ROWS[:1])

    with ModelFlags(registry, shadow_queue=2, shadow_workers=1) as flags:
        threads = [threading.Thread(target=hammer, args=(flags,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert flags.flush(WAIT)
        stats = only(flags.shadow_report("m"))
    assert stats.mirrored + stats.dropped == 800
    assert stats.compared == stats.mirrored and stats.errors == 0
    assert stats.agreement == 0.0


def test_reset_shadow_forgets_one_model_only(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """reset_shadow clears the statistics of the model named and leaves the others alone."""
    for name in ("a", "b"):
        workspace.add(name, "v1", Constant(1))
        workspace.add(name, "v2", Constant(1))
        workspace.set(name, shadow_flag=f"{name}.shadow")
    set_flags(**{"a": "v1", "a.shadow": "v2", "b": "v1", "b.shadow": "v2"})
    with ModelFlags(workspace.write()) as flags:
        for name in ("a", "b"):
            flags.get_model(name, "u1").predict(ROWS[:2])
        assert flags.flush(WAIT)
        flags.reset_shadow("a")
        assert flags.shadow_report("a") == {}
        assert only(flags.shadow_report("b")).agreement == 1.0
        flags.get_model("a", "u1").predict(ROWS[:2])
        assert flags.flush(WAIT)
        assert only(flags.shadow_report("a")).mirrored == 1
        with pytest.raises(ModelUnavailableError):
            flags.reset_shadow("nope")
        with pytest.raises(ModelUnavailableError):
            flags.shadow_report("nope")


# -- shutting down --------------------------------------------------------------------------------


def test_close_cancels_queued_shadow_work_and_stops_its_threads(
    workspace: Workspace, set_flags: Callable[..., None], no_thread_left: None
) -> None:
    """Closing cancels calls still queued, waits for the running one, and leaves no thread."""
    blocking = Blocking(0)
    registry = shadowed(workspace, Constant(1), shadow_loader="blocking")
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    flags = ModelFlags(registry, loaders={"blocking": lambda path: blocking}, shadow_workers=1)
    closer = threading.Thread(target=flags.close)
    try:
        model = flags.get_model("m", "u1")
        for _ in range(6):
            model.predict(ROWS[:1])
        assert blocking.started.wait(WAIT)
        assert shadow_threads()
        closer.start()
        deadline = time.monotonic() + WAIT
        while only(flags.shadow_report("m")).dropped == 0 and time.monotonic() < deadline:
            model.predict(ROWS[:1])  # dropped once the runner is closed
    finally:
        blocking.release.set()
        if not closer.is_alive():
            flags.close()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert model.predict(ROWS[:1]).tolist() == [1]  # a handle still answers after close
    assert blocking.runs <= 2, f"{blocking.runs} of 6 queued shadow calls ran after close"


def test_leaving_the_context_manager_leaves_no_shadow_thread(
    workspace: Workspace, set_flags: Callable[..., None], no_thread_left: None
) -> None:
    """After the with-block every shadow thread has ended."""
    registry = shadowed(workspace, Constant(1), Constant(0))
    set_flags(**{"m": "v1", "m.shadow": "v2"})
    with ModelFlags(registry, shadow_workers=3) as flags:
        model = flags.get_model("m", "u1")
        for _ in range(10):
            model.predict(ROWS[:1])
        assert shadow_threads()
    assert not shadow_threads()


# -- the example ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_shadow_example_reports_the_known_agreement() -> None:
    """examples/shadow.py mirrors every call and reports 80% agreement, as constructed."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "shadow.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert "primary answers changed: 0" in out
    assert re.search(r"mirrored 1000, compared 1000, dropped 0, errors 0", out)
    agreement = re.search(r"agreement ([\d.]+)% \(known by construction: 80.0%\)", out)
    assert agreement is not None and float(agreement.group(1)) == 80.0, out
    assert result.returncode == 0, result.stderr
    assert "agreement matches the known share: OK" in out


def test_a_shadow_flag_without_numpy_is_refused_at_start(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comparisons need numpy: without it, a model with a shadow_flag is an error naming the
    model and the fix, not a silent error count on every mirrored call."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    workspace.set("m", shadow_flag="m.shadow")
    registry = workspace.write()
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(ModelFlagsError, match=r"'m' have a shadow_flag.*pip install numpy"):
        ModelFlags(registry)
