"""Hot-path cost of guardrail metrics at the SDK level: ``get_model`` + ``predict`` with guardrails
configured against the same call without them.

Three ``ModelFlags`` read the same registry but for its guardrails table (two without it, one
with all three rules), through the same in-memory OpenFeature provider, and share one loaded
model object (a loader hands each the same one), so they differ by the SDK's path alone. The
model is a real scikit-learn decision tree whose ``predict`` of one row takes about 200 us (its
time here is printed). Calls run in interleaved rounds, the order rotated each round so that
drift hits every variant alike, and each call is timed on its own.

Printed per variant: p50 and mean of one call and their ratios to the first unguarded variant
(target: at most 1.05), and the median of the per-round ratios (paired, so less sensitive to
drift). The second unguarded variant ("control") shows how far from 1.000 this machine's noise
alone moves a ratio. A last block repeats the measure with a model that does nothing, which
shows the SDK's own cost per call and what guardrails add to it in microseconds.

Run: ``python benchmarks/bench_guarded.py`` (about 30 seconds).
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from sklearn.tree import DecisionTreeClassifier

from modelflags import ModelFlags

ROUNDS = 200
CALLS_PER_ROUND = 50
WARMUP_CALLS = 2_000
GUARDRAILS = """\
[models.recommender.guardrails]
max_error_rate = 0.02
max_p95_latency_ms = 100
max_outcome_drop = { name = "click", relative = 0.05 }
min_requests = 200
sustained_s = 60
window_s = 60
"""
VARIANTS = ("without guardrails", "with guardrails", "without (control)")


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


def train() -> tuple[DecisionTreeClassifier, np.ndarray]:
    """A depth-6 decision tree on 8 features, and one row to predict."""
    rng = np.random.RandomState(0)
    X = rng.rand(2_000, 8)
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    return DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, y), X[:1]


def write_registry(folder: Path, artifact: Path, *, guarded: bool) -> Path:
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    text = (
        '[models.recommender]\ndefault_version = "v1"\n\n'
        "[models.recommender.versions.v1]\n"
        f'uri = "{artifact.name}"\nsha256 = "{digest}"\nloader = "shared"\n\n'
    )
    if guarded:
        text += GUARDRAILS
    registry = folder / ("guarded.toml" if guarded else "plain.toml")
    registry.write_text(text)
    return registry


def timed_calls(call: Callable[[int], object], calls: int, offset: int) -> list[float]:
    """Seconds of each of ``calls`` calls of ``call(user)``."""
    clock = time.perf_counter
    durations = []
    for user in range(offset, offset + calls):
        started = clock()
        call(user)
        durations.append(clock() - started)
    return durations


def measure(folder: Path, model: Any, row: np.ndarray) -> dict[str, list[list[float]]]:
    """Per variant, the durations of each call, round by round."""
    artifact = folder / "recommender-v1.joblib"
    joblib.dump(model, artifact)
    loaders = {"shared": Shared(model)}
    plain = write_registry(folder, artifact, guarded=False)
    guarded = write_registry(folder, artifact, guarded=True)
    instances = {
        VARIANTS[0]: ModelFlags(plain, loaders=loaders),
        VARIANTS[1]: ModelFlags(guarded, loaders=loaders),
        VARIANTS[2]: ModelFlags(plain, loaders=loaders),
    }
    try:

        def call_of(flags: ModelFlags) -> Callable[[int], object]:
            return lambda user: flags.get_model("recommender", f"user-{user}").predict(row)

        calls = {name: call_of(flags) for name, flags in instances.items()}
        for call in calls.values():
            timed_calls(call, WARMUP_CALLS, 0)
        rounds: dict[str, list[list[float]]] = {name: [] for name in calls}
        for index in range(ROUNDS):
            shift = index % len(VARIANTS)
            for name in VARIANTS[shift:] + VARIANTS[:shift]:
                rounds[name].append(timed_calls(calls[name], CALLS_PER_ROUND, index * 1000))
        recorded = instances[VARIANTS[1]].metrics("recommender")["v1"].requests
        assert recorded >= ROUNDS * CALLS_PER_ROUND, "the guarded variant recorded no metrics"
    finally:
        for flags in instances.values():
            flags.close()
    return rounds


def report(rounds: dict[str, list[list[float]]]) -> tuple[float, float]:
    """Print one line a variant; return the p50 and mean ratios of the guarded variant."""
    base = [d for calls in rounds[VARIANTS[0]] for d in calls]
    base_p50, base_mean = statistics.median(base), statistics.fmean(base)
    base_rounds = [statistics.fmean(calls) for calls in rounds[VARIANTS[0]]]
    ratios: dict[str, tuple[float, float]] = {}
    for name in VARIANTS:
        values = [d for calls in rounds[name] for d in calls]
        p50, mean = statistics.median(values), statistics.fmean(values)
        paired = statistics.median(
            statistics.fmean(calls) / other
            for calls, other in zip(rounds[name], base_rounds, strict=True)
        )
        ratios[name] = (p50 / base_p50, mean / base_mean)
        print(
            f"  {name:<19} p50 {p50 * 1e6:7.2f} us  mean {mean * 1e6:7.2f} us  |  ratio p50 "
            f"{p50 / base_p50:.3f}  mean {mean / base_mean:.3f}  paired rounds {paired:.3f}"
        )
    return ratios[VARIANTS[1]]


def main() -> None:
    model, row = train()
    for _ in range(WARMUP_CALLS):
        model.predict(row)
    predict_alone = statistics.median(timed_calls(lambda user: model.predict(row), 5_000, 0))
    api.set_provider_and_wait(InMemoryProvider({"recommender": InMemoryFlag("v1", {"v1": "v1"})}))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tree = measure(Path(tmp), model, row)
            nothing = measure(Path(tmp), Nothing(), row)
    finally:
        api.shutdown()
        api.clear_providers()

    print(f"predict of one row by a depth-6 decision tree, alone: p50 {predict_alone * 1e6:.1f} us")
    print(f"get_model + predict, {ROUNDS} interleaved rounds of {CALLS_PER_ROUND} calls a variant:")
    p50_ratio, mean_ratio = report(tree)
    print("the same with a model that does nothing (the SDK alone):")
    report(nothing)
    added = statistics.median(
        d for calls in nothing[VARIANTS[1]] for d in calls
    ) - statistics.median(d for calls in nothing[VARIANTS[0]] for d in calls)
    verdict = "ok" if round(max(p50_ratio, mean_ratio), 3) <= 1.05 else "ABOVE TARGET"
    print(
        f"with guardrails / without, on the tree: p50 {p50_ratio:.3f}, mean {mean_ratio:.3f} "
        f"(target <= 1.05: {verdict}); guardrails add {added * 1e6:.2f} us a call (p50, SDK alone)"
    )


if __name__ == "__main__":
    main()
