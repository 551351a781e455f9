"""MLflow's Model Registry as the catalogue: serving "the champion" per request, three ways.

Starts a real ``mlflow server`` (``services/mlflow/start.py``: SQLite store, local artifact root,
on 127.0.0.1; stopped at the end), logs and registers a scikit-learn random forest through
MLflow's own client (skops, MLflow 3's default format), sets the alias ``champion`` and pins the
version. Then, in this process, with the same model and machine, it measures per request:

* **modelflags**: ``flags.get_model("rec", user)`` on the MLflow-backed model (flag from flagd's
  provider in FILE mode, version already loaded): the baseline;
* **alias lookup**: ``MlflowClient().get_model_version_by_alias(name, "champion")`` per request,
  the model itself cached by the caller in a dict by version;
* **load per request**: ``mlflow.sklearn.load_model("models:/name@champion")`` per request, as
  MLflow's docs show it;

and the cold load of one version: modelflags' first ``get_model`` with an empty cache (download
from the artifact root into the verified cache, folder digest checked, skops load from the
verified bytes) and with the cache already filled (verify and load), against
``mlflow.sklearn.load_model("models:/name/1")``. Medians of interleaved rounds; ratios against
modelflags' figure of the same run.

Needs the full ``mlflow`` package (for the server). Run:
``python benchmarks/bench_mlflow.py [--rounds 5] [--requests 300] [--loads 10]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's own loader refuses to unpickle (skops included) without this; modelflags' loaders
# rely on the pinned digest instead and do not read it.
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"


def service(script: str) -> Any:
    name = f"modelflags_mlflow_{script}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "services" / "mlflow" / f"{script}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def log_model(url: str, name: str, X: np.ndarray) -> str:
    """Log and register a random forest with MLflow's own API; returns its version."""
    from sklearn.ensemble import RandomForestClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(url)
        forest = RandomForestClassifier(n_estimators=60, max_depth=8, random_state=0)
        forest.fit(X, (X[:, 0] + X[:, 1] > 1).astype(int))
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                forest,
                name="model",
                registered_model_name=name,
                skops_trusted_types=["sklearn.tree._tree.Tree"],
                signature=infer_signature(X, forest.predict(X)),
                pip_requirements=["scikit-learn"],
            )
        mlflow.MlflowClient().set_registered_model_alias(
            name, "champion", info.registered_model_version
        )
    return str(info.registered_model_version)


def per_call(fn: Callable[[int], Any], calls: int) -> float:
    """Mean seconds per call of ``fn(i)`` over ``calls`` calls."""
    started = time.perf_counter()
    for index in range(calls):
        fn(index)
    return (time.perf_counter() - started) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()

    start, stop = service("start"), service("stop")
    problem = start.missing_server()
    if problem is not None:
        print(f"skipped: {problem}")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-mlflow-"))
    info = start.ensure_mlflow(work / "server", timeout=300)
    try:
        return run(info["url"], work, args)
    finally:
        stop.stop_mlflow(work / "server", purge=True)


def run(url: str, work: Path, args: argparse.Namespace) -> int:
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType

    from modelflags import ModelFlags
    from modelflags.artifacts.folder_cache import FolderFetcher
    from modelflags.options import CacheOptions
    from modelflags.sources.mlflow_api import MlflowApi
    from modelflags.sources.mlflow_pin import pin_version

    X = np.random.default_rng(0).random((2_000, 8))
    name = "rec"
    version = log_model(url, name, X)
    api_client = MlflowApi(url)
    pinned = pin_version(api_client, name, version, folders=FolderFetcher(cache_dir=work / "pin"))
    api_client.close()
    registry = work / "registry.toml"
    registry.write_text(
        f'[models.rec]\nmlflow = {{ name = "{name}", tracking_uri = "{url}" }}\n'
        'default_version = "@champion"\n'
    )
    flags_file = work / "flags.json"
    flags_file.write_text(
        json.dumps(
            {
                "flags": {
                    "rec": {
                        "state": "ENABLED",
                        "variants": {version: version},
                        "defaultVariant": version,
                    }
                }
            }
        )
    )
    api.set_provider_and_wait(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(flags_file))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow

        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        client = mlflow.MlflowClient()
        load = mlflow.sklearn.load_model

    users = [f"user-{i}" for i in range(args.requests)]
    flags = ModelFlags(registry, cache=CacheOptions(cache_dir=work / "serve-cache"))
    flags.get_model(name, users[0]).predict(X[:1])  # loaded once, like the caller's cache below
    cached = {version: load(f"models:/{name}/{version}")}

    def modelflags_request(i: int) -> Any:
        return flags.get_model(name, users[i])

    def alias_request(i: int) -> Any:
        return cached[client.get_model_version_by_alias(name, "champion").version]

    def load_request(i: int) -> Any:
        return load(f"models:/{name}@champion")

    for fn in (modelflags_request, alias_request, load_request):  # warm every path
        per_call(fn, 3)
    requests: dict[str, list[float]] = {"modelflags": [], "alias": [], "load": []}
    loads = max(3, args.requests // 30)
    for _ in range(args.rounds):
        requests["modelflags"].append(per_call(modelflags_request, args.requests))
        requests["alias"].append(per_call(alias_request, max(20, args.requests // 3)))
        requests["load"].append(per_call(load_request, loads))
    flags.close()

    cold: dict[str, list[float]] = {"empty cache": [], "filled cache": [], "mlflow": []}
    filled = work / "filled-cache"
    for index in range(args.loads):
        for label, cache_dir in (("empty cache", work / f"cold-{index}"), ("filled cache", filled)):
            with ModelFlags(
                registry, cache=CacheOptions(cache_dir=cache_dir), prewarm=False
            ) as fresh:
                started = time.perf_counter()
                fresh.get_model(name, "cold")
                cold[label].append(time.perf_counter() - started)
        started = time.perf_counter()
        load(f"models:/{name}/{version}")
        cold["mlflow"].append(time.perf_counter() - started)
    api.shutdown()

    base = statistics.median(requests["modelflags"])
    print(
        f"model: random forest, 60 trees, folder {pinned.size / 1e6:.2f} MB ({pinned.files} files)"
    )
    print(f"per request (median of {args.rounds} rounds):")
    for label, key in (
        ("modelflags get_model (flagd FILE, MLflow-backed)", "modelflags"),
        ("MLflow alias lookup + cached model", "alias"),
        ("mlflow.sklearn.load_model(models:/rec@champion)", "load"),
    ):
        value = statistics.median(requests[key])
        print(f"  {label:<52} {value * 1e6:>10.1f} us   {value / base:>8.1f}x")
    reference = statistics.median(cold["mlflow"])
    print(f"cold load of one version (median of {args.loads}):")
    for label, key in (
        ("modelflags, empty cache (download, verify, load)", "empty cache"),
        ("modelflags, filled cache (verify, load)", "filled cache"),
        ("mlflow.sklearn.load_model(models:/rec/1)", "mlflow"),
    ):
        value = statistics.median(cold[key])
        print(f"  {label:<52} {value * 1e3:>10.1f} ms   {value / reference:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
