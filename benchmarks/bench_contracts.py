"""Request-path cost of input contracts and of drift sampling: ``get_model`` + ``predict`` with
per-call input validation, with drift sampling at 1%, and with both, against the same call without
either, in the same run.

Five ``ModelFlags`` read the same model, through the same in-memory OpenFeature provider, and
share one loaded model object (a loader hands each the same one), so they differ by the SDK's
path alone: "plain" (no contract checked, no drift rule), "validated" (``validate_input=True``
and a declared input), "drift 1%" (a drift rule sampling 1% of calls onto the drift watch's
queue, whose thread bins them), "both", and "plain (control)", a second plain instance whose
ratio shows how far this machine's noise alone moves a ratio. Calls run in interleaved rounds,
the order rotated each round, each call timed on its own.

Two inputs are measured: a one-row pandas DataFrame with 8 named features (the columns are
compared by name) and a one-row NumPy array (its width is compared), each predicted by a real
scikit-learn decision tree (depth 6) fitted on that kind of input. A last block repeats the
DataFrame measure with a model that does nothing, which shows the SDK's own cost per call and
what validation and sampling add to it in microseconds.

Printed per variant: p50 and mean of one call, their ratios to "plain" (target: the added cost
is under 3% of a ~200 us predict, i.e. a ratio of at most 1.03 where predict takes about that),
and the median of the per-round ratios (paired, less sensitive to drift).

Run: ``python benchmarks/bench_contracts.py`` (about a minute).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from sklearn.tree import DecisionTreeClassifier

from modelflags import ModelFlags
from modelflags.registry.reference import reference_statistics

ROUNDS = 120
CALLS_PER_ROUND = 50
WARMUP_CALLS = 1_000
REQUESTS = 500
FEATURES = [f"f{i}" for i in range(8)]
VARIANTS = ("plain", "validated", "drift 1%", "both", "plain (control)")


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


def train(frame: bool) -> tuple[DecisionTreeClassifier, list[Any], Any]:
    """A depth-6 tree on 8 features (a DataFrame or an array), requests of one row each (distinct
    objects, as an application makes one a request), and the training set."""
    rng = np.random.RandomState(0)
    X = rng.rand(2_000, 8)
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    data: Any = pd.DataFrame(X, columns=FEATURES) if frame else X
    model = DecisionTreeClassifier(max_depth=6, random_state=0).fit(data, y)
    rows = [
        pd.DataFrame(X[i : i + 1], columns=list(FEATURES)) if frame else X[i : i + 1].copy()
        for i in range(REQUESTS)
    ]
    return model, rows, data


def registry(artifact: Path, train_set: Any, *, contract: bool, drift: bool) -> dict[str, Any]:
    frame = hasattr(train_set, "columns")
    model: dict[str, Any] = {
        "default_version": "v1",
        "versions": {"v1": {"uri": str(artifact), "loader": "shared"}},
    }
    if contract:
        model["input"] = {"features": FEATURES} if frame else {"n_features": 8}
    if drift:
        stats = reference_statistics(train_set, features=FEATURES)
        model["versions"]["v1"]["reference"] = stats.model_dump()
        model["drift"] = {"max_feature_psi": 0.2, "sample": 0.01}
    return {"models": {"recommender": model}}


def timed_calls(call: Callable[[int], object], calls: int, offset: int) -> list[float]:
    """Seconds of each of ``calls`` calls of ``call(user)``."""
    clock = time.perf_counter
    durations = []
    for user in range(offset, offset + calls):
        started = clock()
        call(user)
        durations.append(clock() - started)
    return durations


def measure(
    folder: Path, model: Any, rows: list[Any], train_set: Any
) -> dict[str, list[list[float]]]:
    """Per variant, the durations of each call, round by round."""
    artifact = folder / "recommender-v1.joblib"
    joblib.dump(model, artifact)
    loaders = {"shared": Shared(model)}

    def flags(contract: bool, drift: bool) -> ModelFlags:
        source = registry(artifact, train_set, contract=contract, drift=drift)
        return ModelFlags(source, loaders=loaders, validate_input=contract)

    instances = {
        VARIANTS[0]: flags(False, False),
        VARIANTS[1]: flags(True, False),
        VARIANTS[2]: flags(False, True),
        VARIANTS[3]: flags(True, True),
        VARIANTS[4]: flags(False, False),
    }
    try:

        def call_of(flags: ModelFlags) -> Callable[[int], object]:
            return lambda user: flags.get_model("recommender", f"user-{user}").predict(
                rows[user % REQUESTS]
            )

        calls = {name: call_of(flags) for name, flags in instances.items()}
        for call in calls.values():
            timed_calls(call, WARMUP_CALLS, 0)
        rounds: dict[str, list[list[float]]] = {name: [] for name in calls}
        for index in range(ROUNDS):
            shift = index % len(VARIANTS)
            for name in VARIANTS[shift:] + VARIANTS[:shift]:
                rounds[name].append(timed_calls(calls[name], CALLS_PER_ROUND, index * 1000))
        for name in VARIANTS[2:4]:
            drift = instances[name].status()["recommender"].extra["drift"]
            assert drift["sampled"] > 0, f"{name}: nothing was sampled"
    finally:
        for each in instances.values():
            each.close()
    return rounds


def report(rounds: Mapping[str, list[list[float]]]) -> dict[str, tuple[float, float]]:
    """Print one line a variant; return the p50 and mean ratios of each to "plain"."""
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
            f"  {name:<16} p50 {p50 * 1e6:8.2f} us  mean {mean * 1e6:8.2f} us  |  ratio p50 "
            f"{p50 / base_p50:.3f}  mean {mean / base_mean:.3f}  paired rounds {paired:.3f}"
        )
    return ratios


def added_us(rounds: Mapping[str, list[list[float]]], name: str) -> float:
    """Microseconds ``name`` adds to "plain" (p50)."""
    p50 = statistics.median(d for calls in rounds[name] for d in calls)
    base = statistics.median(d for calls in rounds[VARIANTS[0]] for d in calls)
    return (p50 - base) * 1e6


def predict_alone(model: Any, rows: list[Any]) -> float:
    """p50 seconds of the model's own predict of one row."""
    for user in range(WARMUP_CALLS):
        model.predict(rows[user % REQUESTS])
    return statistics.median(
        timed_calls(lambda user: model.predict(rows[user % REQUESTS]), 3_000, 0)
    )


def main() -> None:
    api.set_provider_and_wait(InMemoryProvider({"recommender": InMemoryFlag("v1", {"v1": "v1"})}))
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for frame in (True, False):
                model, rows, train_set = train(frame)
                alone = predict_alone(model, rows)
                kind = "DataFrame" if frame else "array"
                print(f"{kind} input: tree predict of one row alone, p50 {alone * 1e6:.1f} us")
                print(f"get_model + predict, {ROUNDS} interleaved rounds of {CALLS_PER_ROUND}:")
                results[kind] = report(measure(Path(tmp), model, rows, train_set))
            _, rows, train_set = train(True)
            print("DataFrame input, a model that does nothing (the SDK alone):")
            nothing = measure(Path(tmp), Nothing(), rows, train_set)
            report(nothing)
    finally:
        api.shutdown()
        api.clear_providers()
    for name in VARIANTS[1:4]:
        print(f"  {name} adds {added_us(nothing, name):.2f} us a call (p50, SDK alone)")
    for kind, ratios in results.items():
        worst = max(ratios[name][0] for name in VARIANTS[1:4])
        verdict = "ok" if round(worst, 3) <= 1.03 else "ABOVE TARGET"
        print(f"{kind}: worst p50 ratio to plain {worst:.3f} (target <= 1.03: {verdict})")


if __name__ == "__main__":
    main()
