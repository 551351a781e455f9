"""Hot-path cost of guardrail metrics, against a model call measured in the same run.

Prints:
- ``predict`` of a small scikit-learn model (a depth-6 decision tree, about 200 us a call here)
  alone, and the same call timed with a ``perf_counter`` pair and recorded with
  ``Metrics.record_call``, in interleaved rounds so drift affects both alike; the ratio of the
  two (target: at most 1.05), beside the ratio of ``predict`` to itself measured the same way,
  which shows how much of the difference this machine's noise alone makes;
- ``Metrics.record_call`` alone, in nanoseconds per call, and what it and the ``perf_counter``
  pair add to one ``predict`` (the overhead computed instead of measured);
- ``Guardrails.check`` on a model with three versions (two candidates) and three rules, each a
  sequential test on the running totals (and ``Metrics.snapshot`` of the window, for scale);
- ``DecisionLog.log`` and, when the OpenTelemetry SDK is installed, ``OpenTelemetryMetrics``.

Run: ``python benchmarks/bench_guardrails.py`` (about 30 seconds).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from modelflags.registry.guardrails import GuardrailRules, OutcomeDrop
from modelflags.rollout.guardrails import Guardrails
from modelflags.rollout.metrics import Metrics
from modelflags.telemetry.decision_log import DecisionLog

ROUNDS = 90
CALLS_PER_ROUND = 100


def round_us(fn: Callable[[], object], calls: int) -> float:
    """Mean time of one call over ``calls`` calls, in microseconds."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def per_call_ns(fn: Callable[[], object], calls: int = 200_000) -> float:
    """Median over 7 rounds of the mean time of one call, in nanoseconds (loop included)."""
    for _ in range(calls // 10):
        fn()
    return statistics.median(round_us(fn, calls) for _ in range(7)) * 1e3


def predict_overhead() -> None:
    rng = np.random.RandomState(0)
    X = rng.rand(2_000, 8)
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    model = DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, y)
    row = X[:1]
    metrics = Metrics()
    clock = time.perf_counter

    def bare() -> object:
        return model.predict(row)

    def recorded() -> object:
        start = clock()
        result = model.predict(row)
        metrics.record_call("recommender", "v2", clock() - start, False, False)
        return result

    for _ in range(500):
        bare()
        recorded()
    # "control" is the bare call again: its ratio to "bare" shows the noise of this machine.
    runs: dict[str, list[float]] = {"bare": [], "recorded": [], "control": []}
    order = [("bare", bare), ("recorded", recorded), ("control", bare)]
    for index in range(ROUNDS):
        # Rotate the order, so that no callable always runs first or after the same one.
        for name, fn in order[index % 3 :] + order[: index % 3]:
            runs[name].append(round_us(fn, CALLS_PER_ROUND))
    bare_us = statistics.median(runs["bare"])
    recorded_us = statistics.median(runs["recorded"])
    ratio = statistics.median(r / b for r, b in zip(runs["recorded"], runs["bare"], strict=True))
    noise = statistics.median(c / b for c, b in zip(runs["control"], runs["bare"], strict=True))
    verdict = "ok" if round(ratio, 3) <= 1.05 else "ABOVE TARGET"  # as printed
    print(
        f"predict alone {bare_us:7.1f} us | predict + perf_counter pair + record_call "
        f"{recorded_us:7.1f} us | ratio {ratio:.3f} (target <= 1.05: {verdict}; median of "
        f"{ROUNDS} rounds of {CALLS_PER_ROUND} calls, paired) | predict vs itself {noise:.3f}"
    )

    cost_ns = per_call_ns(lambda: metrics.record_call("recommender", "v2", 2e-4, False, False))
    pair_ns = per_call_ns(lambda: (clock(), clock()))
    print(
        f"record_call alone {cost_ns:6.0f} ns/call | perf_counter pair {pair_ns:5.0f} ns | "
        f"together {(cost_ns + pair_ns) / (bare_us * 1e3) * 100:.2f}% of one predict"
    )


def guardrails_check() -> None:
    now = [1000.0]
    metrics = Metrics(window_s=60.0, clock=lambda: now[0])
    rng = np.random.default_rng(0)
    for _second in range(60):
        for version, scale in (("v1", 2e-4), ("v2", 3e-4), ("v3", 2.5e-4)):
            latencies = rng.lognormal(np.log(scale), 0.6, size=200).tolist()
            clicks = (rng.random(200) < 0.1).tolist()
            for latency, click in zip(latencies, clicks, strict=True):
                metrics.record_call("recommender", version, latency, False, False)
                metrics.record_outcome("recommender", version, "click", float(click))
        now[0] += 1.0
    rules = GuardrailRules(
        max_error_rate=0.02,
        max_p95_latency_ms=100,
        max_outcome_drop=OutcomeDrop(name="click", relative=0.05),
    )
    guardrails = Guardrails({"recommender": rules}, metrics, clock=lambda: now[0])
    versions = ("v1", "v2", "v3")
    check_us = per_call_ns(lambda: guardrails.check("recommender", "v1", versions), 300) / 1e3
    snapshot_us = per_call_ns(lambda: metrics.snapshot("recommender"), 300) / 1e3
    print(
        f"Guardrails.check {check_us:7.1f} us (2 candidates x 3 rules on running totals of "
        f"36,000 calls) | Metrics.snapshot of the window {snapshot_us:.1f} us"
    )


def decision_log() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "decisions.jsonl"
        with DecisionLog(path, queue_size=1_000_000, salt="bench") as log:
            every = per_call_ns(
                lambda: log.log("recommender", "v2", "v2", "SPLIT", None, "user-42"), 20_000
            )
            log.flush(60.0)
            written, dropped = log.written, log.dropped
        with DecisionLog(path, sample=0.01, salt="bench") as log:
            sampled = per_call_ns(
                lambda: log.log("recommender", "v2", "v2", "SPLIT", None, "user-42"), 20_000
            )
    print(
        f"DecisionLog.log {every:6.0f} ns/call (sample 1.0; {written} written, {dropped} dropped)"
        f" | {sampled:5.0f} ns/call (sample 0.01)"
    )


def opentelemetry() -> None:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from modelflags.telemetry.otel import OpenTelemetryMetrics
    except ImportError:
        print("OpenTelemetryMetrics: skipped (pip install opentelemetry-sdk)")
        return
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    recorder = OpenTelemetryMetrics(provider.get_meter("bench"))
    cost = per_call_ns(
        lambda: recorder.record_call("recommender", "v2", 2e-4, False, False), 20_000
    )
    provider.shutdown()
    print(f"OpenTelemetryMetrics.record_call {cost:6.0f} ns/call (SDK, in-memory reader)")


def main() -> None:
    predict_overhead()
    guardrails_check()
    decision_log()
    opentelemetry()


if __name__ == "__main__":
    main()
