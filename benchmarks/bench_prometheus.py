"""What recording into Prometheus adds to a served call, against recording into ``Metrics`` alone.

The serving path hands each call to every recorder: ``Metrics`` always (guardrails read it), and
``PrometheusMetrics`` when it is among ``metrics_exporters``. Two levels are measured, in the
same run, in interleaved rounds whose order rotates so that drift hits every variant alike:

1. the recorders alone: ``record_call`` for a mix of calls (1% errors answered by the last known
   good version, latencies spread from 50 us to 50 ms) and ``record_outcome`` (clicks), in
   batches of 1,000; printed in ns per call;
2. the SDK: ``get_model`` + ``predict`` of a model that does nothing, through a ``ModelFlags``
   with ``metrics=True`` against one with ``metrics_exporters=[PrometheusMetrics(...)]``; the
   SDK's own cost per call is all there is to add to.

A second copy of ``Metrics`` alone ("control") shows how far from 1.000 noise moves a ratio.
Everything runs twice: in this process (values in memory) and in a child process with
``PROMETHEUS_MULTIPROC_DIR`` set (values in memory-mapped files, as under gunicorn).

Run: ``python benchmarks/bench_prometheus.py`` (about 5 seconds).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from prometheus_client import CollectorRegistry

from modelflags import ModelFlags
from modelflags.rollout.metrics import Metrics
from modelflags.telemetry.prometheus import PrometheusMetrics, multiprocess_mode

ROUNDS = 60
BATCH = 1_000
SDK_ROUNDS = 60
SDK_CALLS = 200
VARIANTS = ("Metrics alone", "Metrics + Prometheus", "Metrics alone (control)")
CHILD = "--child"


class Nothing:
    """A model whose predict returns its input: what is left to time is the SDK."""

    def predict(self, X: Any) -> Any:
        return X


class Shared:
    """A loader that hands every ModelFlags the same model object."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, path: Path) -> Any:
        return self.model


def call_mix(size: int) -> list[tuple[float, bool, bool]]:
    """``size`` calls: (latency_s, error, fell_back), 1% errors answered by the LKG."""
    rng = np.random.default_rng(0)
    latencies = np.exp(rng.uniform(np.log(50e-6), np.log(50e-3), size))
    errors = rng.random(size) < 0.01
    return [(float(s), bool(e), bool(e)) for s, e in zip(latencies, errors, strict=True)]


def recorders_of(variant: str) -> tuple[Any, ...]:
    metrics = Metrics(window_s=60.0)
    if variant == VARIANTS[1]:
        return (metrics, PrometheusMetrics(CollectorRegistry()))
    return (metrics,)


def batch_seconds(
    recorders: tuple[Any, ...], calls: list[tuple[float, bool, bool]]
) -> tuple[float, float]:
    """Seconds per call of recording ``calls``, and per outcome of a click outcome for each."""
    started = time.perf_counter()
    for latency, error, fell_back in calls:
        for recorder in recorders:  # as Supervisor.record_call does
            recorder.record_call("recommender", "v2", latency, error, fell_back)
    middle = time.perf_counter()
    for index in range(len(calls)):
        for recorder in recorders:
            recorder.record_outcome("recommender", "v2", "click", float(index % 20 == 0))
    ended = time.perf_counter()
    return (middle - started) / len(calls), (ended - middle) / len(calls)


def measure_recorders() -> dict[str, tuple[list[float], list[float]]]:
    calls = call_mix(BATCH)
    recorders = {name: recorders_of(name) for name in VARIANTS}
    for chosen in recorders.values():
        batch_seconds(chosen, calls)  # warm up, and make the series
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in VARIANTS}
    for index in range(ROUNDS):
        shift = index % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            per_call, per_outcome = batch_seconds(recorders[name], calls)
            results[name][0].append(per_call)
            results[name][1].append(per_outcome)
    return results


def write_registry(folder: Path) -> Path:
    artifact = folder / "recommender-v1.joblib"
    joblib.dump(Nothing(), artifact)
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    registry = folder / "registry.toml"
    registry.write_text(
        '[models.recommender]\ndefault_version = "v1"\n\n'
        "[models.recommender.versions.v1]\n"
        f'uri = "{artifact.name}"\nsha256 = "{digest}"\nloader = "shared"\n'
    )
    return registry


def measure_sdk(folder: Path) -> dict[str, list[float]]:
    """Per variant, the median seconds of one get_model + predict, round by round."""
    registry = write_registry(folder)
    loaders = {"shared": Shared(Nothing())}
    instances = {
        VARIANTS[0]: ModelFlags(registry, loaders=loaders, metrics=True),
        VARIANTS[1]: ModelFlags(
            registry, loaders=loaders, metrics_exporters=[PrometheusMetrics(CollectorRegistry())]
        ),
        VARIANTS[2]: ModelFlags(registry, loaders=loaders, metrics=True),
    }
    row = np.zeros((1, 4))
    clock = time.perf_counter

    def timed(flags: ModelFlags, offset: int) -> float:
        durations = []
        for user in range(offset, offset + SDK_CALLS):
            started = clock()
            flags.get_model("recommender", f"user-{user}").predict(row)
            durations.append(clock() - started)
        return statistics.median(durations)

    try:
        for flags in instances.values():
            timed(flags, 0)
        rounds: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for index in range(SDK_ROUNDS):
            shift = index % len(VARIANTS)
            for name in VARIANTS[shift:] + VARIANTS[:shift]:
                rounds[name].append(timed(instances[name], index * 1000))
    finally:
        for flags in instances.values():
            flags.close()
    return rounds


def report(title: str, rounds: dict[str, list[float]], unit: str, scale: float) -> float:
    """One line a variant: median over rounds, ratio to the first, and what it adds."""
    base = statistics.median(rounds[VARIANTS[0]])
    print(title)
    added = 0.0
    for name in VARIANTS:
        value = statistics.median(rounds[name])
        paired = statistics.median(
            mine / theirs for mine, theirs in zip(rounds[name], rounds[VARIANTS[0]], strict=True)
        )
        if name == VARIANTS[1]:
            added = value - base
        print(
            f"  {name:<24} {value * scale:8.1f} {unit}  ratio {value / base:.3f}  "
            f"paired rounds {paired:.3f}  adds {(value - base) * scale:+7.1f} {unit}"
        )
    return added


def run() -> None:
    mode = (
        "multi-process (PROMETHEUS_MULTIPROC_DIR, mmap files)"
        if multiprocess_mode()
        else ("single process (values in memory)")
    )
    print(f"== {mode}")
    results = measure_recorders()
    calls = {name: results[name][0] for name in VARIANTS}
    outcomes = {name: results[name][1] for name in VARIANTS}
    report(f"record_call, {ROUNDS} rounds of {BATCH} calls, per call:", calls, "ns", 1e9)
    report(f"record_outcome, {ROUNDS} rounds of {BATCH}, per outcome:", outcomes, "ns", 1e9)
    api.set_provider_and_wait(InMemoryProvider({"recommender": InMemoryFlag("v1", {"v1": "v1"})}))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sdk = measure_sdk(Path(tmp))
    finally:
        api.shutdown()
        api.clear_providers()
    report(
        f"get_model + predict of a do-nothing model, {SDK_ROUNDS} rounds of {SDK_CALLS} (p50):",
        sdk,
        "us",
        1e6,
    )


def main() -> None:
    if CHILD in sys.argv:
        run()
        return
    run()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}
        child = subprocess.run([sys.executable, __file__, CHILD], env=env, check=False, timeout=600)
    if child.returncode != 0:
        sys.exit(child.returncode)


if __name__ == "__main__":
    main()
