"""OpenTelemetry metrics: instrument names, units and attributes, read back with the SDK."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.metrics import _internal as otel_globals
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from modelflags.rollout.metrics import MetricsRecorder
from modelflags.telemetry.otel import OpenTelemetryMetrics

Attributes = tuple[tuple[str, Any], ...]


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


@pytest.fixture
def recorder(provider: tuple[MeterProvider, InMemoryMetricReader]) -> OpenTelemetryMetrics:
    return OpenTelemetryMetrics(provider[0].get_meter("modelflags"))


@pytest.fixture
def reader(provider: tuple[MeterProvider, InMemoryMetricReader]) -> InMemoryMetricReader:
    return provider[1]


def collected(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Metric name -> the metric, from one collection."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def points(metric: Any) -> dict[Attributes, Any]:
    """The data points of ``metric`` by their sorted attributes."""
    return {tuple(sorted(point.attributes.items())): point for point in metric.data.data_points}


V1: Attributes = (("model", "recommender"), ("version", "v1"))
V2: Attributes = (("model", "recommender"), ("version", "v2"))


def test_calls_become_counters_and_a_latency_histogram_in_ms(
    recorder: OpenTelemetryMetrics, reader: InMemoryMetricReader
) -> None:
    """Requests, errors and fallbacks are counted per model and version; latency is in ms."""
    recorder.record_call("recommender", "v2", 0.004, error=True, fell_back=True)
    recorder.record_call("recommender", "v2", 0.002, error=False, fell_back=False)
    recorder.record_call("recommender", "v1", 0.001, error=False, fell_back=False)

    metrics = collected(reader)

    assert set(metrics) == {
        "modelflags.requests",
        "modelflags.inference_errors",
        "modelflags.fallbacks",
        "modelflags.latency",
    }
    requests = points(metrics["modelflags.requests"])
    assert {key: point.value for key, point in requests.items()} == {V1: 1, V2: 2}
    errors = points(metrics["modelflags.inference_errors"])
    assert {key: point.value for key, point in errors.items()} == {V2: 1}
    fallbacks = points(metrics["modelflags.fallbacks"])
    assert {key: point.value for key, point in fallbacks.items()} == {V2: 1}
    latency = metrics["modelflags.latency"]
    assert latency.unit == "ms"
    histogram = points(latency)[V2]
    assert histogram.count == 2
    assert histogram.sum == pytest.approx(6.0)
    assert histogram.max == pytest.approx(4.0)
    assert 1.0 in histogram.explicit_bounds  # sub-millisecond calls land in their own buckets


def test_outcomes_add_their_values_under_the_outcome_attribute(
    recorder: OpenTelemetryMetrics, reader: InMemoryMetricReader
) -> None:
    """Outcome values are summed per model, version and outcome name; negatives are skipped."""
    recorder.record_outcome("recommender", "v2", "click", 1.0)
    recorder.record_outcome("recommender", "v2", "click", 0.0)
    recorder.record_outcome("recommender", "v2", "click", 1.0)
    recorder.record_outcome("recommender", "v2", "revenue", 2.5)
    recorder.record_outcome("recommender", "v2", "revenue", -1.0)

    outcomes = points(collected(reader)["modelflags.outcomes"])

    assert {key: point.value for key, point in outcomes.items()} == {
        (("model", "recommender"), ("outcome", "click"), ("version", "v2")): 2.0,
        (("model", "recommender"), ("outcome", "revenue"), ("version", "v2")): 2.5,
    }


def test_a_prefix_renames_every_instrument(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """``prefix`` replaces ``modelflags`` at the start of each name."""
    recorder = OpenTelemetryMetrics(provider[0].get_meter("x"), prefix="shop.models")
    recorder.record_call("m", "v1", 0.01, error=True, fell_back=True)
    recorder.record_outcome("m", "v1", "click", 1.0)

    assert set(collected(provider[1])) == {
        "shop.models.requests",
        "shop.models.inference_errors",
        "shop.models.fallbacks",
        "shop.models.latency",
        "shop.models.outcomes",
    }


def test_uses_the_global_meter_provider_by_default(
    provider: tuple[MeterProvider, InMemoryMetricReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a meter it takes one from the global provider, and fits the recorder protocol."""
    # OpenTelemetry lets a process set its global provider once: set it for this test only.
    monkeypatch.setattr(otel_globals, "_METER_PROVIDER", provider[0])
    recorder: MetricsRecorder = OpenTelemetryMetrics()
    recorder.record_call("m", "v1", 0.01, error=False, fell_back=False)
    recorder.record_outcome("m", "v1", "click", 1.0)

    metrics = collected(provider[1])
    requests = points(metrics["modelflags.requests"])
    assert {key: point.value for key, point in requests.items()} == {
        (("model", "m"), ("version", "v1")): 1
    }
    outcomes = points(metrics["modelflags.outcomes"])
    assert [point.value for point in outcomes.values()] == [1.0]


def test_without_opentelemetry_the_import_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Importing the module without the API installed names the extra to install."""
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    monkeypatch.delitem(sys.modules, "modelflags.telemetry.otel")
    monkeypatch.delitem(sys.modules, "modelflags.otel", raising=False)

    with pytest.raises(ImportError, match=r"pip install 'modelflags\[otel\]'"):
        importlib.import_module("modelflags.telemetry.otel")
