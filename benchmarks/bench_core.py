"""Hot path and cold load of ``get_model`` against bare baselines measured in the same run.

Prints, per provider (OpenFeature in-memory, flagd FILE mode):
- ``client.get_string_details`` alone (the baseline) and ``ModelFlags.get_model`` on a cached
  version, each the median of several timed rounds, and their ratio;
- ``get_model`` without a timeout and with one (a worker thread per evaluation), flagd FILE mode;
- the first ``get_model`` of a version (fetch, sha256, joblib.load) against a bare ``joblib.load``.

Run: ``python benchmarks/bench_core.py`` (about 20 seconds).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from sklearn.ensemble import RandomForestClassifier

from modelflags import ModelFlags

ROUNDS = 9
CALLS = 5_000


def per_call_us(fn: Callable[[], object], calls: int = CALLS) -> float:
    """Median over ROUNDS of the mean time of one call, in microseconds."""
    for _ in range(calls // 5):
        fn()
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def interleaved(a: Callable[[], object], b: Callable[[], object]) -> tuple[float, float]:
    """Time two callables in alternating rounds so drift affects both alike."""
    first, second = [], []
    for _ in range(ROUNDS):
        first.append(per_call_us(a, CALLS // 5))
        second.append(per_call_us(b, CALLS // 5))
    return statistics.median(first), statistics.median(second)


def build(folder: Path) -> Path:
    rng = np.random.RandomState(0)
    X = rng.rand(2_000, 8)
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    model = RandomForestClassifier(n_estimators=60, random_state=0).fit(X, y)
    path = folder / "v1.joblib"
    joblib.dump(model, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    registry = folder / "registry.toml"
    registry.write_text(
        "[models.recommender]\ndefault_version = 'v1'\n"
        f"[models.recommender.versions.v1]\nuri = 'v1.joblib'\nsha256 = '{digest}'\n"
    )
    flags = {
        "flags": {
            "recommender": {
                "state": "ENABLED",
                "variants": {"v1": "v1"},
                "defaultVariant": "v1",
                "targeting": {"fractional": [["v1", 100]]},
            }
        }
    }
    (folder / "flags.json").write_text(json.dumps(flags))
    return registry


def hot_path(name: str, registry: Path) -> float:
    client = api.get_client()
    context = EvaluationContext("user-42", {"country": "DE"})
    with ModelFlags(registry) as flags:
        flags.get_model("recommender", context)
        bare, ours = interleaved(
            lambda: client.get_string_details("recommender", "v1", context),
            lambda: flags.get_model("recommender", context),
        )
        user = {"id": "user-42", "country": "DE"}
        mapping = per_call_us(lambda: flags.get_model("recommender", user))
    ratio = ours / bare
    print(
        f"{name:<10} bare evaluation {bare:7.2f} us | get_model {ours:7.2f} us | "
        f"ratio {ratio:.3f} | get_model(dict user) {mapping:7.2f} us"
    )
    return ratio


def timeouts(registry: Path) -> None:
    """The hot path without a timeout (unchanged: no thread, no extra call) against one with a
    bound, which runs each evaluation on a worker thread."""
    client = api.get_client()
    context = EvaluationContext("user-42", {"country": "DE"})
    with ModelFlags(registry) as flags:
        flags.get_model("recommender", context)
        bare, ours = interleaved(
            lambda: client.get_string_details("recommender", "v1", context),
            lambda: flags.get_model("recommender", context),
        )
        bounded = per_call_us(lambda: flags.get_model("recommender", context, timeout=1.0))
    print(
        f"{'timeouts':<10} bare evaluation {bare:7.2f} us | get_model, no timeout {ours:7.2f} us "
        f"(ratio {ours / bare:.3f}) | get_model(timeout=1.0) {bounded:7.2f} us "
        f"(ratio {bounded / bare:.3f})"
    )


def cold_load(registry: Path) -> float:
    artifact = registry.parent / "v1.joblib"
    bare_samples, ours_samples = [], []
    for _ in range(7):
        start = time.perf_counter()
        joblib.load(artifact)
        bare_samples.append(time.perf_counter() - start)
        with ModelFlags(registry) as flags:
            start = time.perf_counter()
            flags.get_model("recommender")
            ours_samples.append(time.perf_counter() - start)
    bare, ours = statistics.median(bare_samples), statistics.median(ours_samples)
    size = artifact.stat().st_size / 1e6
    print(
        f"cold load ({size:.1f} MB): joblib.load {bare * 1e3:.2f} ms | first get_model "
        f"{ours * 1e3:.2f} ms (fresh instance: sha256 + load) | ratio {ours / bare:.3f}"
    )
    return ours / bare


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry = build(folder)
        print(f"python {sys.version.split()[0]}, {CALLS} calls x {ROUNDS} rounds, median")
        api.set_provider_and_wait(
            InMemoryProvider({"recommender": InMemoryFlag("v1", {"v1": "v1"})})
        )
        hot_path("in-memory", registry)
        api.set_provider_and_wait(
            FlagdProvider(
                resolver_type=ResolverType.FILE,
                offline_flag_source_path=str(folder / "flags.json"),
                deadline_ms=500,
            )
        )
        hot_path("flagd file", registry)
        timeouts(registry)
        cold_load(registry)
        api.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
