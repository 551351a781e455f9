"""Drift watch: sampled inputs against the training sample, off the request thread; the PSI rule,
its false-alarm rate and power by simulation; events, status, exporters and the rollback action."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from scipy.stats import chi2

from modelflags import DriftDetected, ModelFlags, VersionRolledBack
from modelflags.registry import register
from modelflags.registry.reference import reference_statistics
from modelflags.rollout.population import bin_counts, false_alarm_rate, psi

from frames import TODAY, by_name, frame
from models import Constant
from support import FakeClock

TRAIN = frame(2000, seed=1)
WAIT = 10.0
RULES = """
[models.m.drift]
max_feature_psi = 0.2
sample = 1.0
min_samples = 500
window_s = 600
"""
GUARDED = """
[models.m.guardrails]
max_error_rate = 0.5
sustained_s = 3600
"""


def registered(folder: Path, *versions: str, rules: str = RULES) -> Path:
    """A registry of model ``m`` whose versions were registered with the training sample."""
    registry = folder / "registry.toml"
    for version in versions:
        estimator = by_name(TODAY, TRAIN)
        path = folder / f"{version}.joblib"
        joblib.dump(estimator, path)
        register(
            registry, "m", version, path, estimator=estimator, reference=TRAIN, source_dir=folder
        )
    registry.write_text(registry.read_text() + rules)
    return registry


def serve(flags: ModelFlags, calls: int, **shift: Any) -> None:
    """``calls`` requests of 50 customers each (500 rows for 10 calls)."""
    for seed in range(calls):
        flags.get_model("m", f"user-{seed}").predict(frame(50, seed=100 + seed, **shift))


def drift_events(events: list[object]) -> list[DriftDetected]:
    return [event for event in events if isinstance(event, DriftDetected)]


# -- the statistic ------------------------------------------------------------------------------


def test_psi_sums_each_share_difference_times_its_log_ratio() -> None:
    """The formula by hand; identical shares give 0; an empty bin is floored, not infinite."""
    expected = 0.1 * np.log(0.6 / 0.5) + -0.1 * np.log(0.4 / 0.5)
    assert psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(expected)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert psi([1.0, 0.0], [0.99, 0.01]) == pytest.approx(
        -0.01 * np.log(0.99) + (0.01 - 1e-4) * np.log(0.01 / 1e-4)
    )


def test_the_false_alarm_rate_follows_the_chi_squared_law() -> None:
    """The closed form matches scipy's chi-squared survival function."""
    for bins, rows, reference in ((10, 500, 1000), (4, 200, 400), (11, 1000, 5000)):
        statistic = 0.05 / (1 / rows + 1 / reference)
        assert false_alarm_rate(0.05, bins, rows, reference) == pytest.approx(
            chi2.sf(statistic, bins - 1), rel=1e-9
        )
    assert false_alarm_rate(0.2, 10, 500, 1000) < 1e-9


@pytest.mark.slow
def test_by_simulation_no_shift_rarely_fires_and_half_a_deviation_usually_does() -> None:
    """2000 trials of a fresh 1000-row reference and 500 serving rows: at the threshold the law
    puts at 5%, about 5% exceed it; none exceeds 0.2; a shift of half a standard deviation
    exceeds 0.2 in most trials (about 89%)."""
    rng = np.random.default_rng(7)
    rows, reference_rows, trials = 500, 1000, 2000
    at_five = chi2.ppf(0.95, 9) * (1 / rows + 1 / reference_rows)
    same, moved = [], []
    for _ in range(trials):
        reference = reference_statistics(rng.normal(size=(reference_rows, 1))).features["x0"]
        for values, into in ((rng.normal(size=rows), same), (rng.normal(0.5, 1, rows), moved)):
            counts, _ = bin_counts(reference, values)
            into.append(psi(reference.shares, counts / counts.sum()))
    assert 0.03 < np.mean(np.array(same) > at_five) < 0.07
    assert np.mean(np.array(same) > 0.2) == 0.0
    assert np.mean(np.array(moved) > 0.2) > 0.8


# -- served inputs ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_shifted_feature_raises_one_event_naming_it(
    tmp_path: Path, set_flags: Callable[..., None]
) -> None:
    """Customers 15 years older than in training: age drifts (PSI well above 0.2), the others
    do not; one DriftDetected with action alert, and the figures in status()."""
    events: list[object] = []
    clock = FakeClock()
    with ModelFlags(registered(tmp_path, "v1"), listeners=[events.append], clock=clock) as flags:
        serve(flags, 10, age_shift=15.0)
        assert flags.flush(WAIT)
        serve(flags, 10, age_shift=15.0)
        assert flags.flush(WAIT)
        drift = flags.status()["m"].extra["drift"]
    (event,) = drift_events(events)
    assert (event.model, event.version, event.action) == ("m", "v1", "alert")
    assert [name for name, _ in event.features] == ["age"]
    assert event.features[0][1] > 0.5
    assert (event.rows, event.window_s, event.max_feature_psi) == (500, 600.0, 0.2)
    figures = drift["versions"]["v1"]
    assert figures["rows"] == 1000
    assert figures["reference_rows"] == 2000
    assert figures["drifting"] is True
    assert figures["features"]["age"]["psi"] > 0.5
    assert figures["features"]["income"]["psi"] < 0.05
    assert (drift["sampled"], drift["dropped"], drift["sample"]) == (20, 0, 1.0)


@pytest.mark.slow
def test_inputs_like_the_training_sample_raise_nothing(tmp_path: Path) -> None:
    events: list[object] = []
    with ModelFlags(registered(tmp_path, "v1"), listeners=[events.append]) as flags:
        serve(flags, 12)
        assert flags.flush(WAIT)
        figures = flags.status()["m"].extra["drift"]["versions"]["v1"]
    assert drift_events(events) == []
    assert figures["drifting"] is False
    assert max(f["psi"] for f in figures["features"].values()) < 0.05


@pytest.mark.slow
def test_nothing_is_judged_before_min_samples_rows(tmp_path: Path) -> None:
    events: list[object] = []
    with ModelFlags(registered(tmp_path, "v1"), listeners=[events.append]) as flags:
        serve(flags, 9, age_shift=15.0)  # 450 rows
        assert flags.flush(WAIT)
        assert flags.status()["m"].extra["drift"]["versions"]["v1"]["drifting"] is False
    assert drift_events(events) == []


@pytest.mark.slow
def test_the_event_fires_again_only_after_the_input_came_back(tmp_path: Path) -> None:
    """A window that slides past the shifted traffic re-arms the rule."""
    events: list[object] = []
    clock = FakeClock()
    with ModelFlags(registered(tmp_path, "v1"), listeners=[events.append], clock=clock) as flags:
        serve(flags, 10, age_shift=15.0)
        assert flags.flush(WAIT)
        clock.advance(700)  # the shifted rows leave the 600 s window
        serve(flags, 10)
        assert flags.flush(WAIT)
        assert flags.status()["m"].extra["drift"]["versions"]["v1"]["drifting"] is False
        clock.advance(700)
        serve(flags, 10, age_shift=15.0)
        assert flags.flush(WAIT)
    assert len(drift_events(events)) == 2


@pytest.mark.slow
def test_a_rising_missing_share_is_drift_too(tmp_path: Path) -> None:
    """max_missing_increase: income missing in half the rows (none in training) fires. Inputs
    are sampled before the model sees them, so calls the model refuses count too."""
    rules = RULES.replace("max_feature_psi = 0.2", "max_missing_increase = 0.1")
    events: list[object] = []
    with ModelFlags(registered(tmp_path, "v1", rules=rules), listeners=[events.append]) as f:
        for seed in range(10):
            data = frame(50, seed=seed)
            data.loc[::2, "income"] = np.nan
            with pytest.raises(ValueError, match="Input X contains NaN"):
                f.get_model("m").predict(data)
        assert f.flush(WAIT)
    (event,) = drift_events(events)
    assert event.features == ()
    assert event.missing == (("income", 0.0, 0.5),)


@pytest.mark.slow
def test_only_the_sampled_share_is_looked_at(tmp_path: Path) -> None:
    """sample = 0.25 with a random source: a quarter of the calls are sampled."""
    rules = RULES.replace("sample = 1.0", "sample = 0.25")
    draws = iter([0.1, 0.9, 0.5, 0.2] * 10)
    with ModelFlags(registered(tmp_path, "v1", rules=rules), random=lambda: next(draws)) as f:
        serve(f, 20)
        assert f.flush(WAIT)
        assert f.status()["m"].extra["drift"]["sampled"] == 10


class Blocking:
    """An input whose columns the drift watch reads only once ``release`` is set."""

    def __init__(self, release: threading.Event, reading: threading.Event) -> None:
        self.release = release
        self.reading = reading

    def __len__(self) -> int:
        return 1

    @property
    def columns(self) -> list[str]:
        self.reading.set()
        self.release.wait(WAIT)
        return []


def test_a_full_queue_drops_and_counts_without_blocking_the_request(tmp_path: Path) -> None:
    """The watch is stuck on one input: with room for two more, later samples are dropped and
    counted while requests go on."""
    joblib.dump(Constant(1), tmp_path / "v1.joblib")
    stats = reference_statistics(TRAIN).model_dump()
    registry = {
        "models": {
            "m": {
                "default_version": "v1",
                "versions": {"v1": {"uri": str(tmp_path / "v1.joblib"), "reference": stats}},
                "drift": {"max_feature_psi": 0.2, "sample": 1.0},
            }
        }
    }
    release, reading = threading.Event(), threading.Event()
    with ModelFlags(registry, drift_queue=2, validate_input=False) as flags:
        model = flags.get_model("m")
        model.predict(Blocking(release, reading))
        assert reading.wait(WAIT)
        for _ in range(5):
            assert model.predict([0]).tolist() == [1]
        drift = flags.status()["m"].extra["drift"]
        release.set()
        assert flags.flush(WAIT)
    assert (drift["sampled"], drift["dropped"]) == (3, 3)


def test_unreadable_inputs_are_counted_and_the_watch_goes_on(tmp_path: Path) -> None:
    """Arrays of another width cannot be binned: counted as unreadable, nothing raised."""
    with ModelFlags(registered(tmp_path, "v1"), validate_input=False) as flags:
        flags._parts.drift.offer("m", "v1", np.zeros((3, 2)))  # type: ignore[union-attr]
        serve(flags, 10)
        assert flags.flush(WAIT)
        figures = flags.status()["m"].extra["drift"]["versions"]["v1"]
    assert (figures["unreadable"], figures["rows"]) == (1, 500)


# -- actions and exporters ----------------------------------------------------------------------


@pytest.mark.slow
def test_rollback_action_rolls_back_a_drifting_candidate(
    tmp_path: Path, set_flags: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """action = "rollback": v2, a candidate its guardrails have not promoted yet, is pinned away
    and the last known good version (v1) serves."""
    rules = RULES + 'action = "rollback"\n' + GUARDED
    events: list[object] = []
    set_flags(m="v2")
    registry = registered(tmp_path, "v1", "v2", rules=rules)
    with ModelFlags(registry, listeners=[events.append], clock=FakeClock()) as f:
        serve(f, 10, age_shift=15.0)
        assert f.flush(WAIT)
        model = f.get_model("m")
        assert (model.version, model.requested_version, model.reason) == ("v1", "v2", "ROLLED_BACK")
    (rolled,) = [event for event in events if isinstance(event, VersionRolledBack)]
    assert rolled.version == "v2"
    assert rolled.reason.startswith("input drift: age PSI")


def test_rollback_action_only_alerts_for_the_last_known_good_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = RULES + 'action = "rollback"\n'
    events: list[object] = []
    with (
        caplog.at_level(logging.ERROR),
        ModelFlags(registered(tmp_path, "v1", rules=rules), listeners=[events.append]) as flags,
    ):
        serve(flags, 10, age_shift=15.0)
        assert flags.flush(WAIT)
        assert flags.get_model("m").reason != "ROLLED_BACK"
    assert len(drift_events(events)) == 1
    assert "'v1' is the last known good version; alerting only" in caplog.text


class Recorder:
    """An exporter that records drift figures (and ignores calls)."""

    def __init__(self) -> None:
        self.figures: dict[tuple[str, str, str], tuple[float | None, float]] = {}

    def record_call(self, *args: object) -> None:
        pass

    def record_outcome(self, *args: object) -> None:
        pass

    def record_feature_drift(
        self, model: str, version: str, feature: str, psi: float | None, missing: float
    ) -> None:
        self.figures[(model, version, feature)] = (psi, missing)


def test_exporters_receive_each_feature_s_figures(tmp_path: Path) -> None:
    recorder = Recorder()
    with ModelFlags(registered(tmp_path, "v1"), metrics_exporters=[recorder]) as flags:
        serve(flags, 10, age_shift=15.0)
        assert flags.flush(WAIT)
    assert set(recorder.figures) == {("m", "v1", name) for name in TODAY}
    age_psi, age_missing = recorder.figures[("m", "v1", "age")]
    assert age_psi is not None and age_psi > 0.5
    assert age_missing == 0.0


@pytest.mark.slow
def test_prometheus_exposes_the_drift_gauges(tmp_path: Path) -> None:
    """The gauges appear where drift is watched, one series per feature."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from modelflags.telemetry.prometheus import PrometheusMetrics

    collector = CollectorRegistry()
    exporter = PrometheusMetrics(collector)
    assert "feature_psi" not in generate_latest(collector).decode()
    with ModelFlags(registered(tmp_path, "v1"), metrics_exporters=[exporter]) as flags:
        serve(flags, 10, age_shift=15.0)
        assert flags.flush(WAIT)
    text = generate_latest(collector).decode()
    assert 'modelflags_feature_psi{feature="age",model="m",version="v1"}' in text
    assert 'modelflags_feature_missing_share{feature="country",model="m",version="v1"} 0.0' in text


@pytest.mark.slow
def test_opentelemetry_records_the_drift_gauges(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from modelflags.telemetry.otel import OpenTelemetryMetrics

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    with ModelFlags(
        registered(tmp_path, "v1"), metrics_exporters=[OpenTelemetryMetrics(meter)]
    ) as flags:
        serve(flags, 10, age_shift=15.0)
        assert flags.flush(WAIT)
    data = reader.get_metrics_data()
    points = {
        (metric.name, point.attributes["feature"]): point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name.startswith("modelflags.feature")
        for point in metric.data.data_points
    }
    assert points[("modelflags.feature_psi", "age")] > 0.5
    assert points[("modelflags.feature_missing", "income")] == 0.0


@pytest.mark.slow
def test_versions_without_reference_statistics_are_not_watched(
    tmp_path: Path, set_flags: Callable[..., None]
) -> None:
    registry = registered(tmp_path, "v1")
    joblib.dump(by_name(TODAY, TRAIN), tmp_path / "v2.joblib")
    register(registry, "m", "v2", tmp_path / "v2.joblib", source_dir=tmp_path)
    set_flags(m="v2")
    with ModelFlags(registry) as flags:
        serve(flags, 10, age_shift=15.0)
        assert flags.flush(WAIT)
        drift = flags.status()["m"].extra["drift"]
    assert (drift["sampled"], drift["versions"]) == (0, {})
