"""Prometheus exposition: names, labels and totals of real served calls, read back over HTTP,
from several processes, and by a real Prometheus through its query API."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import math
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from modelflags import ModelFlags
from modelflags.rollout.metrics import MetricsRecorder
from modelflags.telemetry.prometheus import (
    LATENCY_BUCKETS_S,
    PrometheusMetrics,
    exposition_registry,
    metrics_app,
    multiprocess_mode,
)

from prometheus_fixtures import (  # noqa: F401  (the fixture, registered as "prometheus")
    Exposition,
    PrometheusServer,
    prometheus_fixture,
)
from support import FakeClock, Workspace

HERE = Path(__file__).resolve().parent
WORKER = HERE / "prometheus_worker.py"

Labels = frozenset[tuple[str, str]]


def samples(text: str, prefix: str = "modelflags_") -> dict[tuple[str, Labels], float]:
    """Every sample of the exposition ``text`` whose name starts with ``prefix``."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix)
    }


def exposed(registry: CollectorRegistry) -> dict[tuple[str, Labels], float]:
    return samples(generate_latest(registry).decode())


def labels(**pairs: str) -> Labels:
    return frozenset(pairs.items())


def unique(stem: str) -> str:
    """A model name no other test uses (the default registry and Prometheus outlive tests)."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


# -- the recorder -------------------------------------------------------------------------------


def test_each_call_counts_per_model_and_version_with_latency_in_seconds(
    registry: CollectorRegistry,
) -> None:
    """Requests, errors and fallbacks are ``_total`` counters; latency is a histogram in s."""
    recorder = PrometheusMetrics(registry)
    recorder.record_call("ranker", "v2", 0.004, error=True, fell_back=True)
    recorder.record_call("ranker", "v2", 0.0002, error=False, fell_back=False)
    recorder.record_call("ranker", "v1", 0.03, error=False, fell_back=False)

    values = exposed(registry)
    v1, v2 = labels(model="ranker", version="v1"), labels(model="ranker", version="v2")
    assert values[("modelflags_requests_total", v1)] == 1
    assert values[("modelflags_requests_total", v2)] == 2
    assert values[("modelflags_inference_errors_total", v2)] == 1
    assert values[("modelflags_fallbacks_total", v2)] == 1
    assert values[("modelflags_skipped_total", v2)] == 0
    assert values[("modelflags_latency_seconds_count", v2)] == 2
    assert values[("modelflags_latency_seconds_sum", v2)] == pytest.approx(0.0042)
    assert values[("modelflags_latency_seconds_bucket", v2 | {("le", "0.00025")})] == 1
    assert values[("modelflags_latency_seconds_bucket", v2 | {("le", "0.005")})] == 2
    assert values[("modelflags_latency_seconds_bucket", v1 | {("le", "0.025")})] == 0
    assert values[("modelflags_latency_seconds_bucket", v1 | {("le", "+Inf")})] == 1


def test_a_call_the_version_never_ran_counts_as_skipped_without_latency(
    registry: CollectorRegistry,
) -> None:
    """A fallback without an error (quarantined, rolled back, loading) adds no latency."""
    recorder = PrometheusMetrics(registry)
    recorder.record_call("ranker", "v2", 0.5, error=False, fell_back=True)

    values = exposed(registry)
    v2 = labels(model="ranker", version="v2")
    assert values[("modelflags_requests_total", v2)] == 1
    assert values[("modelflags_fallbacks_total", v2)] == 1
    assert values[("modelflags_skipped_total", v2)] == 1
    assert values[("modelflags_inference_errors_total", v2)] == 0
    assert values[("modelflags_latency_seconds_count", v2)] == 0


def test_every_series_of_a_version_exists_at_zero_from_its_first_call(
    registry: CollectorRegistry,
) -> None:
    """A query never finds one of a version's series missing while another exists."""
    PrometheusMetrics(registry).record_call("ranker", "v1", 0.001, error=False, fell_back=False)

    v1 = labels(model="ranker", version="v1")
    names = {name for name, series in exposed(registry) if series == v1}
    assert names == {
        "modelflags_requests_total",
        "modelflags_requests_created",
        "modelflags_inference_errors_total",
        "modelflags_inference_errors_created",
        "modelflags_fallbacks_total",
        "modelflags_fallbacks_created",
        "modelflags_skipped_total",
        "modelflags_skipped_created",
        "modelflags_latency_seconds_count",
        "modelflags_latency_seconds_sum",
        "modelflags_latency_seconds_created",
    }


def test_outcomes_give_count_sum_and_sum_of_squares_per_outcome(
    registry: CollectorRegistry,
) -> None:
    """Count, sum and squares give the mean and the variance; non-finite values are dropped."""
    recorder = PrometheusMetrics(registry)
    revenue = [0.0, 12.5, -3.0, 40.0, 7.25]
    for value in revenue:
        recorder.record_outcome("ranker", "v2", "revenue", value)
    for value in (1.0, 0.0, 0.0, 1.0):
        recorder.record_outcome("ranker", "v2", "click", value)
    for value in (math.nan, math.inf, -math.inf):
        recorder.record_outcome("ranker", "v2", "revenue", value)

    values = exposed(registry)
    series = labels(model="ranker", version="v2", outcome="revenue")
    count = values[("modelflags_outcome_count", series)]
    total = values[("modelflags_outcome_sum", series)]
    squares = values[("modelflags_outcome_squares_total", series)]
    assert (count, total) == (5, pytest.approx(sum(revenue)))
    variance = (squares - total**2 / count) / (count - 1)
    assert variance == pytest.approx(float(np.var(revenue, ddof=1)))
    clicks = labels(model="ranker", version="v2", outcome="click")
    assert values[("modelflags_outcome_count", clicks)] == 4
    assert values[("modelflags_outcome_sum", clicks)] == 2


def test_recording_from_eight_threads_loses_nothing(registry: CollectorRegistry) -> None:
    """Series made concurrently for the same version are one series; every call counts."""
    recorder = PrometheusMetrics(registry)
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(500):
            recorder.record_call("ranker", "v1", 0.001, error=False, fell_back=False)
            recorder.record_outcome("ranker", "v1", "click", 1.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    values = exposed(registry)
    assert values[("modelflags_requests_total", labels(model="ranker", version="v1"))] == 4000
    click = labels(model="ranker", version="v1", outcome="click")
    assert values[("modelflags_outcome_count", click)] == 4000


def test_fits_the_recorder_protocol(registry: CollectorRegistry) -> None:
    """It can stand wherever a MetricsRecorder is expected."""
    recorder: MetricsRecorder = PrometheusMetrics(registry)
    recorder.record_call("m", "v1", 0.01, False, False)
    recorder.record_outcome("m", "v1", "click", 1.0)


# -- registries ---------------------------------------------------------------------------------


def test_two_instances_for_one_registry_share_one_set_of_metrics(
    registry: CollectorRegistry,
) -> None:
    """A second recorder for the same registry adds to the same series instead of failing."""
    first, second = PrometheusMetrics(registry), PrometheusMetrics(registry)
    first.record_call("ranker", "v1", 0.001, error=False, fell_back=False)
    second.record_call("ranker", "v1", 0.001, error=False, fell_back=False)

    assert (
        exposed(registry)[("modelflags_requests_total", labels(model="ranker", version="v1"))] == 2
    )


def test_two_flags_instances_in_one_process_share_the_default_registry(
    workspace: Workspace,
    set_flags: Callable[..., None],
    trained: dict[str, LogisticRegression],
    features: np.ndarray,
) -> None:
    """Two ModelFlags with ``PrometheusMetrics()`` in one process both count, in one series."""
    model = unique("shared")
    workspace.add(model, "v1", trained["v1"])
    path = workspace.write()
    set_flags(**{model: "v1"})
    with (
        ModelFlags(path, metrics_exporters=[PrometheusMetrics()]) as one,
        ModelFlags(path, metrics_exporters=[PrometheusMetrics()]) as other,
    ):
        one.get_model(model, "a").predict(features)
        other.get_model(model, "b").predict(features)
        other.get_model(model, "c").predict(features)

    assert (
        REGISTRY.get_sample_value("modelflags_requests_total", {"model": model, "version": "v1"})
        == 3
    )


def test_other_latency_buckets_for_the_same_names_are_refused(
    registry: CollectorRegistry,
) -> None:
    """The buckets of a registered histogram cannot change; the error says what to do."""
    PrometheusMetrics(registry)
    with pytest.raises(ValueError, match=r"already registered .* latency buckets .*prefix="):
        PrometheusMetrics(registry, buckets=(0.1, 1.0))


def test_names_taken_by_another_collector_are_reported(registry: CollectorRegistry) -> None:
    """Names registered by something else fail with the prefix and what to pass instead."""
    Counter("modelflags_requests", "someone else's", registry=registry)
    with pytest.raises(ValueError, match=r"cannot register the modelflags_\* metrics.*prefix="):
        PrometheusMetrics(registry)


def test_a_prefix_renames_every_metric(registry: CollectorRegistry) -> None:
    """``prefix`` replaces ``modelflags`` at the start of each name, beside the default set."""
    PrometheusMetrics(registry, prefix="shop").record_call("m", "v1", 0.01, True, True)
    PrometheusMetrics(registry, prefix="shop").record_outcome("m", "v1", "click", 1.0)

    names = {name for name, _ in samples(generate_latest(registry).decode(), prefix="")}
    assert {
        "shop_requests_total",
        "shop_inference_errors_total",
        "shop_fallbacks_total",
        "shop_skipped_total",
        "shop_latency_seconds_count",
        "shop_outcome_count",
        "shop_outcome_sum",
        "shop_outcome_squares_total",
    } <= names
    assert not any(name.startswith("modelflags_") for name in names)


def test_the_exposition_registry_is_the_given_the_multiprocess_or_the_global_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    """Given registry first; else one summing a multi-process folder; else ``REGISTRY``."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert exposition_registry(registry) is registry
    assert exposition_registry() is REGISTRY

    from_folder = exposition_registry(multiprocess_dir=tmp_path)
    assert from_folder is not REGISTRY
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from_env = exposition_registry()
    assert from_env is not REGISTRY and from_env is not from_folder
    assert exposition_registry(registry) is registry


def test_a_multiprocess_folder_that_does_not_exist_is_refused(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    """A missing folder, or both a registry and a folder, are errors that say which."""
    with pytest.raises(ValueError, match="is not a folder"):
        metrics_app(multiprocess_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="not both"):
        metrics_app(registry, multiprocess_dir=tmp_path)


def test_a_multiprocess_folder_set_after_import_is_warned_about(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    registry: CollectorRegistry,
) -> None:
    """The variable must be set before prometheus_client is imported; later, a warning says so."""
    assert not multiprocess_mode()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="modelflags.telemetry.prometheus"):
        PrometheusMetrics(registry)
    assert "imported before" in caplog.text


def test_without_prometheus_client_the_import_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Importing the module without the package installed names the extra to install."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "modelflags.telemetry.prometheus")

    with pytest.raises(ImportError, match=r"pip install 'modelflags\[prometheus\]'"):
        importlib.import_module("modelflags.telemetry.prometheus")


# -- real served calls --------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """A registry with a good v1 and a v2 that fails on the input the application sends."""

    model: str
    path: Path


@pytest.fixture
def served(
    workspace: Workspace, trained: dict[str, LogisticRegression], request: pytest.FixtureRequest
) -> Served:
    model = unique(request.node.name[5:25].replace("_", "-"))
    rng = np.random.RandomState(2)
    X = rng.rand(100, 4)
    four_features = LogisticRegression().fit(X, (X[:, 3] > 0.5).astype(int))
    workspace.add(model, "v1", trained["v1"])
    workspace.add(model, "v2", four_features)  # the application sends 3 features: it raises
    return Served(model, workspace.write())


def serve(
    flags: ModelFlags, set_flags: Callable[..., None], model: str, features: np.ndarray
) -> None:
    """12 calls of v1 with click and revenue outcomes, then 5 calls asked of v2.

    v2 raises on the first (v1 answers) and is quarantined, so v1 answers the other 4 without
    v2 running (the clock does not move).
    """
    set_flags(**{model: "v1"})
    for i in range(12):
        handle = flags.get_model(model, f"user-{i}")
        handle.predict(features)
        flags.record_outcome(handle, "click", 1.0 if i % 3 == 0 else 0.0)
        flags.record_outcome(handle, "revenue", 2.5 * (i % 4))
    set_flags(**{model: "v2"})
    for i in range(5):
        handle = flags.get_model(model, f"user-{i}")
        handle.predict(features)


V1_EXPECTED = {
    "modelflags_requests_total": 12,
    "modelflags_inference_errors_total": 0,
    "modelflags_fallbacks_total": 0,
    "modelflags_skipped_total": 0,
    "modelflags_latency_seconds_count": 12,
}
V2_EXPECTED = {
    "modelflags_requests_total": 5,
    "modelflags_inference_errors_total": 1,
    "modelflags_fallbacks_total": 5,
    "modelflags_skipped_total": 4,
    "modelflags_latency_seconds_count": 1,
}


@pytest.fixture
def flags(served: Served, clock: FakeClock, registry: CollectorRegistry) -> Iterator[ModelFlags]:
    with ModelFlags(
        served.path, clock=clock, prewarm=False, metrics_exporters=[PrometheusMetrics(registry)]
    ) as flags:
        yield flags


def test_totals_match_the_in_process_metrics_of_the_same_calls(
    flags: ModelFlags,
    served: Served,
    set_flags: Callable[..., None],
    features: np.ndarray,
    registry: CollectorRegistry,
) -> None:
    """Through a real ModelFlags, each counter agrees with the SDK's own per-version metrics."""
    serve(flags, set_flags, served.model, features)

    values = exposed(registry)
    in_process = flags.metrics(served.model)
    for version, expected in (("v1", V1_EXPECTED), ("v2", V2_EXPECTED)):
        series = labels(model=served.model, version=version)
        got = {name: values[(name, series)] for name in expected}
        assert got == expected
        mine = in_process[version]
        assert got["modelflags_requests_total"] == mine.requests
        assert got["modelflags_inference_errors_total"] == mine.errors
        assert got["modelflags_fallbacks_total"] == mine.fallbacks
        assert got["modelflags_skipped_total"] == mine.skipped
        assert got["modelflags_latency_seconds_count"] == mine.ran
    for outcome, stats in in_process["v1"].outcomes.items():
        series = labels(model=served.model, version="v1", outcome=outcome)
        assert values[("modelflags_outcome_count", series)] == stats.count
        assert values[("modelflags_outcome_sum", series)] == pytest.approx(stats.total)


@pytest.mark.slow
def test_the_exposition_over_http_follows_prometheus_conventions(
    flags: ModelFlags,
    served: Served,
    set_flags: Callable[..., None],
    features: np.ndarray,
    registry: CollectorRegistry,
) -> None:
    """Served over real HTTP: ``_total`` counters, a ``_seconds`` histogram, model/version
    (and outcome) labels, HELP and TYPE lines; OpenMetrics when Prometheus asks for it."""
    serve(flags, set_flags, served.model, features)

    with Exposition() as server:
        server.app = metrics_app(registry)
        response = httpx.get(f"http://{server.address}/metrics", timeout=5)
        openmetrics = httpx.get(
            f"http://{server.address}/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            timeout=5,
        )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    kinds = {name: family.type for name, family in families.items() if "created" not in name}
    assert kinds == {
        "modelflags_requests": "counter",
        "modelflags_inference_errors": "counter",
        "modelflags_fallbacks": "counter",
        "modelflags_skipped": "counter",
        "modelflags_latency_seconds": "histogram",
        "modelflags_outcome": "summary",
        "modelflags_outcome_squares": "counter",
    }
    for name, family in families.items():
        assert family.documentation, name
        for sample in family.samples:
            keys = set(sample.labels) - {"le"}
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
            if name.startswith("modelflags_outcome"):
                assert keys == {"model", "version", "outcome"}, sample
            else:
                assert keys == {"model", "version"}, sample
    bounds = {
        float(sample.labels["le"])
        for sample in families["modelflags_latency_seconds"].samples
        if sample.name.endswith("_bucket")
    }
    assert bounds == {*LATENCY_BUCKETS_S, math.inf}
    assert "# TYPE modelflags_requests_total counter" in response.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


@pytest.mark.slow
def test_the_asgi_app_serves_the_same_metrics(registry: CollectorRegistry) -> None:
    """``metrics_app(asgi=True)`` answers an ASGI request with the same samples."""
    PrometheusMetrics(registry).record_call("ranker", "v1", 0.002, False, False)
    app = metrics_app(registry, asgi=True)

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/metrics")

    response = asyncio.run(fetch())

    assert response.status_code == 200
    assert samples(response.text) == exposed(registry)


def test_the_recorder_app_serves_its_own_registry(registry: CollectorRegistry) -> None:
    """``PrometheusMetrics.app()`` serves the registry it records into (WSGI and ASGI)."""
    recorder = PrometheusMetrics(registry)
    recorder.record_call("ranker", "v1", 0.002, False, False)
    captured: list[str] = []
    body = recorder.app()(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""},
        lambda status, headers: captured.append(status),
    )
    assert captured == ["200 OK"]
    assert samples(b"".join(body).decode()) == exposed(registry)
    assert inspect.iscoroutinefunction(recorder.app(asgi=True))


# -- several processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """Two finished worker processes that recorded into one multi-process folder."""

    model: str
    folder: Path
    pids: tuple[int, ...]


FLEET_PLANS = (("v1:30:6", "v2:10:1"), ("v1:20:5", "v2:15:3"))
FLEET_TOTALS = {"v1": (50, 11), "v2": (25, 4)}  # requests, clicks


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, trained: dict[str, LogisticRegression]
) -> Fleet:
    """Runs two real processes at once, each serving real models through its own ModelFlags."""
    root = tmp_path_factory.mktemp("fleet")
    model = unique("fleet")
    workspace = Workspace(root)
    workspace.add(model, "v1", trained["v1"])
    workspace.add(model, "v2", trained["v2"])
    path = workspace.write()
    folder = root / "multiproc"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(path), model, *plans],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for plans in FLEET_PLANS
    ]
    pids = []
    for worker in workers:
        out, err = worker.communicate(timeout=90)
        assert worker.returncode == 0, err
        pids.append(int(out.split()[-1]))
    return Fleet(model, folder, tuple(pids))


@pytest.mark.slow
def test_two_processes_recording_into_one_folder_are_summed_in_one_exposition(
    fleet: Fleet,
) -> None:
    """Each process writes its own files; the multi-process exposition serves their sums."""
    assert len(set(fleet.pids)) == 2
    for pid in fleet.pids:
        assert (fleet.folder / f"counter_{pid}.db").exists()

    with Exposition() as server:
        server.app = metrics_app(multiprocess_dir=fleet.folder)
        text = httpx.get(f"http://{server.address}/metrics", timeout=5).text

    values = samples(text)
    for version, (requests, clicks) in FLEET_TOTALS.items():
        series = labels(model=fleet.model, version=version)
        assert values[("modelflags_requests_total", series)] == requests
        assert values[("modelflags_latency_seconds_count", series)] == requests
        assert values[("modelflags_inference_errors_total", series)] == 0
        click = labels(model=fleet.model, version=version, outcome="click")
        assert values[("modelflags_outcome_count", click)] == requests
        assert values[("modelflags_outcome_sum", click)] == clicks


# -- a real Prometheus --------------------------------------------------------------------------


@pytest.mark.slow
def test_prometheus_scrapes_per_version_totals_of_real_served_calls(
    prometheus: PrometheusServer,
    flags: ModelFlags,
    served: Served,
    set_flags: Callable[..., None],
    features: np.ndarray,
    registry: CollectorRegistry,
) -> None:
    """A real Prometheus reads each version's totals as a controller would, with PromQL."""
    serve(flags, set_flags, served.model, features)
    selector = f'{{model="{served.model}"}}'

    with prometheus.scraping(metrics_app(registry)):
        for name in V1_EXPECTED:
            prometheus.wait_for(
                f"sum by (version) ({name}{selector})",
                "version",
                {"v1": V1_EXPECTED[name], "v2": V2_EXPECTED[name]},
            )
        error_rate = prometheus.values(
            f"sum by (version) (modelflags_inference_errors_total{selector})"
            f" / (sum by (version) (modelflags_requests_total{selector})"
            f" - sum by (version) (modelflags_skipped_total{selector}))",
            "version",
        )
        click = f'{{model="{served.model}", outcome="click"}}'
        click_rate = prometheus.values(
            f"sum by (version) (modelflags_outcome_sum{click})"
            f" / sum by (version) (modelflags_outcome_count{click})",
            "version",
        )
        p95 = prometheus.values(
            "histogram_quantile(0.95, sum by (version, le) "
            f"(modelflags_latency_seconds_bucket{selector}))",
            "version",
        )

    assert error_rate == {"v1": 0.0, "v2": 1.0}
    assert click_rate == {"v1": pytest.approx(4 / 12)}
    assert 0 < p95["v1"] <= 10.0


@pytest.mark.slow
def test_prometheus_sums_the_processes_of_a_multiprocess_folder(
    prometheus: PrometheusServer, fleet: Fleet
) -> None:
    """Scraping the multi-process exposition gives the fleet's totals per version."""
    with prometheus.scraping(metrics_app(multiprocess_dir=fleet.folder)):
        prometheus.wait_for(
            f'sum by (version) (modelflags_requests_total{{model="{fleet.model}"}})',
            "version",
            {version: requests for version, (requests, _) in FLEET_TOTALS.items()},
        )
        prometheus.wait_for(
            f'sum by (version) (modelflags_outcome_sum{{model="{fleet.model}"}})',
            "version",
            {version: clicks for version, (_, clicks) in FLEET_TOTALS.items()},
        )
