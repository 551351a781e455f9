"""Bad days: non-finite numbers, cache bounds under churn, noisy change events, mutating methods
(hostile inputs are in ``test_hostile_inputs.py``)."""

from __future__ import annotations

import copy
import gc
import math
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.preprocessing import Normalizer, StandardScaler

from modelflags import Backoff, ModelFlags
from modelflags.rollout.metrics import Metrics
from modelflags.testing import FakeClock, InMemoryFlags, RegistryBuilder

from models import Constant
from support import Workspace

X = np.zeros((3, 2))


# -- 8: non-finite numbers ---------------------------------------------------------------------


@pytest.fixture
def outcome_flags(workspace: Workspace, set_flags: Callable[..., None]) -> Any:
    workspace.add("m", "v1", Constant(1))
    set_flags(m="v1")
    with ModelFlags(workspace.write(), metrics=True) as flags:
        yield flags


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("-inf"), "nan", "1.0", None],
    ids=repr,
)
def test_record_outcome_rejects_what_is_not_a_finite_number(outcome_flags: Any, value: Any) -> None:
    """NaN, infinities, numeric strings and None raise ValueError and record nothing."""
    handle = outcome_flags.get_model("m", "u1")
    with pytest.raises(ValueError, match="click"):
        outcome_flags.record_outcome(handle, "click", value)
    with pytest.raises(ValueError):
        outcome_flags.record_outcome("m", "click", value, version="v1")
    assert "v1" not in outcome_flags.metrics("m")


def test_a_rejected_outcome_value_is_shown_bounded_in_the_error(outcome_flags: Any) -> None:
    """A 1 MB string passed as the value gives a short error message."""
    handle = outcome_flags.get_model("m", "u1")
    with pytest.raises(ValueError) as caught:
        outcome_flags.record_outcome(handle, "click", "9" * 1_000_000)
    assert len(str(caught.value)) < 300


def test_record_outcome_takes_numpy_numbers(outcome_flags: Any) -> None:
    """numpy floats and integers are numbers like any other."""
    handle = outcome_flags.get_model("m", "u1")
    for value in (np.float64(0.25), np.float32(0.5), np.int64(1), np.int8(0), 2):
        outcome_flags.record_outcome(handle, "click", value)
    stats = outcome_flags.metrics("m")["v1"].outcomes["click"]
    assert (stats.count, stats.total) == (5, 3.75)


@pytest.mark.parametrize("latency", [math.nan, math.inf, -math.inf, -1.0])
def test_a_call_with_an_impossible_latency_is_counted_without_its_latency(latency: float) -> None:
    """The call counts; its latency is left out, so quantiles stay finite."""
    metrics = Metrics(window_s=60, clock=FakeClock())
    metrics.record_call("m", "v1", 0.010, False, False)
    metrics.record_call("m", "v1", latency, True, False)
    snapshot = metrics.snapshot("m")["v1"]
    assert (snapshot.requests, snapshot.errors) == (2, 1)
    for quantile in (snapshot.latency_p50, snapshot.latency_p95, snapshot.latency_p99):
        assert quantile is not None and math.isfinite(quantile) and quantile > 0.009


def test_only_impossible_latencies_leave_the_quantiles_empty() -> None:
    """A version whose every latency was impossible has no quantiles, not NaN ones."""
    metrics = Metrics(window_s=60, clock=FakeClock())
    metrics.record_call("m", "v1", math.nan, False, False)
    snapshot = metrics.snapshot("m")["v1"]
    assert snapshot.requests == 1 and snapshot.latency_p95 is None


# -- 9: cache bounds ---------------------------------------------------------------------------


def churn_registry(folder: Path, versions: int, seed: int = 0) -> tuple[RegistryBuilder, int]:
    """``versions`` real classifiers (one fit, copies with distinct coefficients); returns the
    builder and the largest artifact's size."""
    builder = RegistryBuilder(folder)
    rng = np.random.RandomState(seed)
    features = rng.rand(60, 2)
    fitted = LogisticRegression().fit(features, (features[:, 0] > 0.5).astype(int))
    largest = 0
    for index in range(1, versions + 1):
        model = copy.deepcopy(fitted)
        model.coef_ = model.coef_ * index
        largest = max(largest, builder.add("m", f"v{index}", model).stat().st_size)
    return builder, largest


@pytest.mark.slow
def test_an_lkg_larger_than_max_bytes_is_released_once_it_stops_being_lkg(tmp_path: Path) -> None:
    """The former LKG is neither kept in the cache nor referenced anywhere after gc."""
    builder, size = churn_registry(tmp_path, 2)
    source = InMemoryFlags(m="v1").install()
    with ModelFlags(builder.write(), max_bytes=size // 2, prewarm=False) as flags:
        handle = flags.get_model("m", "u1")
        handle.predict(X)
        first = weakref.ref(handle.model)
        del handle
        source.set(m="v2")
        handle = flags.get_model("m", "u1")
        assert handle.version == "v2"
        handle.predict(X)  # v2 proves itself and becomes the LKG
        del handle
        status = flags.status()["m"]
        assert status.lkg == "v2"
        assert "v1" not in status.loaded
        gc.collect()
        assert first() is None, "the former LKG is still referenced"
        source.set(m="v1")
        assert flags.get_model("m", "u1").version == "v1"  # reloaded, not served stale


def test_zero_sized_artifacts_respect_max_models(tmp_path: Path) -> None:
    """Entries of zero bytes still count against ``max_models``."""
    builder = RegistryBuilder(tmp_path)
    for index in range(1, 7):
        builder.add("m", f"v{index}", raw=b"", suffix=".empty", loader="empty")
    source = InMemoryFlags(m="v1").install()
    loaders = {"empty": lambda path: Constant(1)}
    with ModelFlags(
        builder.write(), loaders=loaders, max_models=2, max_bytes=1000, prewarm=False
    ) as flags:
        for index in range(1, 7):
            source.set(m=f"v{index}")
            assert flags.get_model("m", "u1").version == f"v{index}"
            status = flags.status()["m"]
            unpinned = [version for version in status.loaded if version not in status.pinned]
            assert len(unpinned) <= 2, status.loaded
    assert sorted(status.loaded) == ["v1", "v5", "v6"]


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> tuple[RegistryBuilder, int]:
    """30 versions, written once for the tests that only read them."""
    return churn_registry(tmp_path_factory.mktemp("churn"), 30)


@pytest.mark.slow
@pytest.mark.parametrize("room", [2.5, 0.5], ids=["room for 2.5 versions", "versions too big"])
def test_the_cache_stays_within_its_bounds_while_30_versions_churn(
    churn: tuple[RegistryBuilder, int], room: float
) -> None:
    """Each version in turn is flagged, served and becomes the LKG: at every step the cache
    holds at most ``max_models`` entries and ``max_bytes`` bytes besides the pinned LKG, and
    no more model objects than that stay alive, also when every version is larger than
    ``max_bytes``."""
    builder, size = churn
    max_models, max_bytes = 3, int(size * room)
    source = InMemoryFlags(m="v1").install()
    alive: list[weakref.ref[Any]] = []
    peak_loaded = 0
    with ModelFlags(
        builder.write(), max_models=max_models, max_bytes=max_bytes, prewarm=False
    ) as flags:
        for index in range(1, 31):
            version = f"v{index}"
            source.set(m=version)
            handle = flags.get_model("m", "u1")
            assert handle.version == version
            handle.predict(X)  # proves it: it becomes the LKG
            alive.append(weakref.ref(handle.model))
            handle = flags.get_model("m", "u2")  # served as the LKG (pinned, loaded if evicted)
            handle.predict(X)
            alive.append(weakref.ref(handle.model))
            del handle
            status = flags.status()["m"]
            assert status.lkg == version and set(status.pinned) <= {version}
            unpinned = {v: n for v, n in status.loaded.items() if v not in status.pinned}
            assert len(unpinned) <= max_models and sum(unpinned.values()) <= max_bytes
            peak_loaded = max(peak_loaded, len(status.loaded))
        gc.collect()
        living = len({id(ref()) for ref in alive if ref() is not None})
    assert peak_loaded <= max_models + 1
    assert living <= max_models + 1, f"{living} model objects of 30 versions are still alive"


# -- 10: quarantine under noisy change events --------------------------------------------------


def announce_change(flags: ModelFlags, flag: str) -> None:
    """Deliver a change event naming ``flag`` as the change feed does, in this thread.

    The OpenFeature SDK runs provider event handlers on a thread pool, in no set order; the
    back-off arithmetic below needs each event handled before the next request.
    """
    flags._parts.flags_changed(frozenset({flag}))


class FailingLoader:
    """A loader that always fails; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> Any:
        self.calls += 1
        raise OSError("artifact store unreachable")


def test_a_change_event_every_200_ms_does_not_defeat_the_quarantine_back_off(
    tmp_path: Path,
) -> None:
    """With a 1 s back-off doubling, events every 200 ms for 5 s and a request after each, a
    failing version is tried 4 times (the back-off alone allows 3; each back-off may be cut
    short once by an event), not once per event."""
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    builder.add("m", "v2", Constant(2), loader="failing")
    InMemoryFlags(m="v2").install()
    clock = FakeClock()
    loader = FailingLoader()
    with ModelFlags(
        builder.write(),
        clock=clock,
        backoff=Backoff(initial=1.0, factor=2.0),
        loaders={"failing": loader},
        prewarm=False,
    ) as flags:
        for step in range(26):  # t = 0.0 ... 5.0
            if step:
                clock.advance(0.2)
                announce_change(flags, "m")  # the provider says the flag changed; it did not
            assert flags.get_model("m", "u1").version == "v1"
        failures = flags.status()["m"].quarantined[0].failures
    assert loader.calls == failures == 4


def test_a_change_event_lifts_a_fresh_quarantine_once(tmp_path: Path) -> None:
    """An event after a first failure lets the next request try the version again at once."""
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    builder.add("m", "v2", Constant(2), loader="flaky")
    InMemoryFlags(m="v2").install()
    calls: list[float] = []
    clock = FakeClock()

    def flaky(path: Path) -> Any:
        calls.append(clock())
        if len(calls) == 1:
            raise OSError("transient")
        import joblib

        return joblib.load(path)

    with ModelFlags(builder.write(), clock=clock, loaders={"flaky": flaky}, prewarm=False) as flags:
        assert flags.get_model("m", "u1").version == "v1"
        assert flags.get_model("m", "u1").version == "v1"  # quarantined: not tried
        announce_change(flags, "m")
        handle = flags.get_model("m", "u1")
        assert handle.version == "v2" and len(calls) == 2
        handle.predict(X)
        assert flags.status()["m"].quarantined == ()


def test_the_failure_count_resets_only_when_the_version_proves_itself(tmp_path: Path) -> None:
    """Failures accumulate across events; a success forgets them."""
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    builder.add("m", "v2", Constant(2), loader="switch")
    InMemoryFlags(m="v2").install()
    clock = FakeClock()
    failing = [True]

    def switch(path: Path) -> Any:
        if failing[0]:
            raise OSError("down")
        import joblib

        return joblib.load(path)

    with ModelFlags(
        builder.write(), clock=clock, loaders={"switch": switch}, prewarm=False
    ) as flags:
        for _ in range(3):
            flags.get_model("m", "u1")
            announce_change(flags, "m")
            clock.advance(100)
        assert flags.status()["m"].quarantined[0].failures == 3
        failing[0] = False
        handle = flags.get_model("m", "u1")
        handle.predict(X)
        assert handle.version == "v2" and flags.status()["m"].quarantined == ()


# -- 11: mutating methods ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_feature_sets() -> dict[str, Any]:
    rng = np.random.RandomState(5)
    X3, X4 = rng.rand(50, 3), rng.rand(50, 4)
    y = (rng.rand(50) > 0.5).astype(int)
    return {"X3": X3, "X4": X4, "y": y}


def serve_candidate(
    workspace: Workspace, set_flags: Callable[..., None], lkg: Any, candidate: Any
) -> tuple[ModelFlags, Any, Any]:
    """A ModelFlags whose LKG (v1, loaded and proven) is ``lkg`` and whose flag chooses v2."""
    workspace.add("m", "v1", lkg)
    workspace.add("m", "v2", candidate)
    set_flags(m="v1")
    flags = ModelFlags(workspace.write(), prewarm=False)
    lkg_handle = flags.get_model("m", "u1")
    set_flags(m="v2")
    handle = flags.get_model("m", "u1")
    assert handle.version == "v2"
    return flags, handle, lkg_handle.model


def snapshot(model: Any) -> dict[str, Any]:
    return {
        key: value.copy() if isinstance(value, np.ndarray) else value
        for key, value in vars(model).items()
    }


def assert_unchanged(before: dict[str, Any], model: Any) -> None:
    after = snapshot(model)
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, after[key]), key
        else:
            assert value == after[key], key


def test_a_failing_partial_fit_is_not_rerun_on_the_lkg(
    workspace: Workspace, set_flags: Callable[..., None], two_feature_sets: dict[str, Any]
) -> None:
    """partial_fit on a 3-feature candidate with 4-feature data raises; the 4-feature LKG, which
    would have accepted it, is untouched, and the candidate is not quarantined."""
    data = two_feature_sets
    lkg = SGDClassifier(random_state=0).fit(data["X4"], data["y"])
    candidate = SGDClassifier(random_state=0).fit(data["X3"], data["y"])
    flags, handle, served_lkg = serve_candidate(workspace, set_flags, lkg, candidate)
    with flags:
        before = snapshot(served_lkg)
        with pytest.raises(ValueError, match="features"):
            handle.partial_fit(data["X4"], data["y"])
        assert_unchanged(before, served_lkg)
        assert flags.status()["m"].quarantined == ()


def test_a_failing_fit_is_not_rerun_on_the_lkg(
    workspace: Workspace, set_flags: Callable[..., None], two_feature_sets: dict[str, Any]
) -> None:
    """fit on a candidate with an invalid parameter raises; the LKG is not refitted."""
    data = two_feature_sets
    lkg = SGDClassifier(random_state=0).fit(data["X3"], data["y"])
    candidate = LogisticRegression(C=1.0).fit(data["X3"], data["y"])
    candidate.C = -1.0  # invalid: fit refuses it
    flags, handle, served_lkg = serve_candidate(workspace, set_flags, lkg, candidate)
    with flags:
        before = snapshot(served_lkg)
        with pytest.raises(ValueError, match="C"):
            handle.fit(data["X4"], data["y"])
        assert_unchanged(before, served_lkg)


def test_a_failing_set_params_is_not_rerun_on_the_lkg(
    workspace: Workspace, set_flags: Callable[..., None], two_feature_sets: dict[str, Any]
) -> None:
    """``set_params(alpha=...)`` fails on a LogisticRegression candidate (no such parameter); the
    SGD LKG, which has one, is not changed."""
    data = two_feature_sets
    lkg = SGDClassifier(random_state=0).fit(data["X3"], data["y"])
    candidate = LogisticRegression().fit(data["X3"], data["y"])
    flags, handle, served_lkg = serve_candidate(workspace, set_flags, lkg, candidate)
    with flags:
        before = snapshot(served_lkg)
        with pytest.raises(ValueError, match="alpha"):
            handle.set_params(alpha=0.5)
        assert_unchanged(before, served_lkg)


def test_a_failing_fit_transform_is_not_rerun_on_the_lkg(
    workspace: Workspace, set_flags: Callable[..., None], two_feature_sets: dict[str, Any]
) -> None:
    """Any ``fit*`` name changes the model: a Normalizer candidate with an invalid norm fails
    ``fit_transform``; the StandardScaler LKG is not refitted to the 4-feature data."""
    data = two_feature_sets
    lkg = StandardScaler().fit(data["X3"])
    candidate = Normalizer().fit(data["X3"])
    candidate.norm = "bogus"
    flags, handle, served_lkg = serve_candidate(workspace, set_flags, lkg, candidate)
    with flags:
        before = snapshot(served_lkg)
        with pytest.raises(ValueError, match="norm"):
            handle.fit_transform(data["X4"])
        assert_unchanged(before, served_lkg)
        assert served_lkg.n_features_in_ == 3


def test_a_mutating_method_runs_on_the_handles_model(
    workspace: Workspace, set_flags: Callable[..., None], two_feature_sets: dict[str, Any]
) -> None:
    """A successful partial_fit changes the candidate it was asked of, not the LKG."""
    data = two_feature_sets
    lkg = SGDClassifier(random_state=0).fit(data["X3"], data["y"])
    candidate = SGDClassifier(random_state=0).fit(data["X3"], data["y"])
    flags, handle, served_lkg = serve_candidate(workspace, set_flags, lkg, candidate)
    with flags:
        before = snapshot(served_lkg)
        steps = handle.model.t_
        handle.partial_fit(data["X3"], data["y"])
        assert handle.model.t_ > steps
        assert_unchanged(before, served_lkg)
