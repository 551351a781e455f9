"""Quickstart: a canary, a targeted beta, a live flag edit and a broken version, in seconds.

Everything runs in a temporary folder with the embedded default flag source, flagd's provider in
FILE mode (no server):

1. three small scikit-learn models are trained and written with joblib, plus a registry;
2. a flagd flag file sends 10% of users to the canary ``v2`` and beta users to ``v3``;
3. the split over 1,000 users is counted; a beta user is served, first by the last known good
   version while ``v3`` loads in the background (no request waits for a load), then by ``v3``;
4. the flag file is edited live to 50/50, and the new split is seen;
5. a broken artifact is flagged to everyone: the last known good version answers every request.

Run: ``python examples/quickstart.py``
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from modelflags import Backoff, ModelFlags

USERS = [{"id": f"user-{i}", "plan": "free"} for i in range(1000)]


def train(folder: Path) -> dict[str, Path]:
    """Train three versions of a 'recommender' and write them, plus a broken artifact."""
    rng = np.random.RandomState(7)
    X = rng.rand(500, 4)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0.8).astype(int)
    models = {
        "v1": LogisticRegression().fit(X, y),
        "v2": LogisticRegression(C=0.1).fit(X, y),
        "v3": DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y),
    }
    paths = {}
    for version, model in models.items():
        paths[version] = folder / f"recommender-{version}.joblib"
        joblib.dump(model, paths[version])
    paths["v4"] = folder / "recommender-v4.joblib"
    paths["v4"].write_bytes(b"this upload was truncated")
    return paths


def write_registry(folder: Path, paths: dict[str, Path]) -> Path:
    lines = ["[models.recommender]", 'default_version = "v1"', ""]
    for version, path in paths.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines += [
            f"[models.recommender.versions.{version}]",
            f'uri = "{path.name}"',
            f'sha256 = "{digest}"',
            f"[models.recommender.versions.{version}.metadata]",
            'trained_by = "quickstart"',
            "",
        ]
    registry = folder / "registry.toml"
    registry.write_text("\n".join(lines))
    return registry


def write_flags(path: Path, targeting: dict[str, Any]) -> None:
    """Replace the flagd flag file atomically (write a temporary file, then rename)."""
    document = {
        "flags": {
            "recommender": {
                "state": "ENABLED",
                "variants": {v: v for v in ("v1", "v2", "v3", "v4")},
                "defaultVariant": "v1",
                "targeting": targeting,
            }
        }
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path)


def canary(split: int) -> dict[str, Any]:
    """Beta users get v3; everyone else is bucketed by user id between v1 and v2."""
    return {
        "if": [
            {"==": [{"var": "plan"}, "beta"]},
            "v3",
            {"fractional": [["v1", 100 - split], ["v2", split]]},
        ]
    }


def split(flags: ModelFlags) -> str:
    """The share of users the flag sends to each version."""
    counts = Counter(flags.get_model("recommender", user).requested_version for user in USERS)
    return ", ".join(f"{v}: {counts[v] / len(USERS):.1%}" for v in sorted(counts))


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def main() -> None:
    logging.basicConfig(format="   log: %(message)s", level=logging.WARNING)
    features = np.random.RandomState(0).rand(5, 4)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = train(folder)
        registry = write_registry(folder, paths)
        flag_file = folder / "flags.json"
        write_flags(flag_file, canary(10))
        api.set_provider_and_wait(
            FlagdProvider(
                resolver_type=ResolverType.FILE,
                offline_flag_source_path=str(flag_file),
                deadline_ms=100,
            )
        )
        started = time.perf_counter()
        with ModelFlags(registry) as flags:
            print("1. canary at 10% over 1,000 users ->", split(flags))

            ada = {"id": "ada", "plan": "beta"}
            first = flags.get_model("recommender", ada)
            wait_for(lambda: "v3" in flags.status()["recommender"].loaded)
            beta = flags.get_model("recommender", ada)
            print(
                f"2. beta user 'ada' -> {first.version} ({first.reason}) while "
                f"{first.requested_version} loads, then {beta.version} ({beta.reason}), "
                f"predicts {beta.predict(features).tolist()}"
            )

            write_flags(flag_file, canary(50))
            wait_for(lambda: 0.4 < _share(flags, "v2") < 0.6)
            print("3. flag file edited to 50/50    ->", split(flags))

            for user in USERS[:50]:  # v1 and v2 answer: each proves itself once
                flags.get_model("recommender", user).predict(features)
            lkg = flags.status()["recommender"].lkg
            print(
                f"   last known good version: {lkg} (of the versions that answered, the one that "
                "proved itself last; a split does not move it back and forth)"
            )

            write_flags(flag_file, {})  # everyone to the default variant...
            document = json.loads(flag_file.read_text())
            document["flags"]["recommender"]["defaultVariant"] = "v4"  # ...a broken upload
            flag_file.with_suffix(".tmp").write_text(json.dumps(document))
            os.replace(flag_file.with_suffix(".tmp"), flag_file)
            wait_for(lambda: flags.get_model("recommender", USERS[0]).requested_version == "v4")
            failed = 0
            served: Counter[str] = Counter()
            for user in USERS:
                try:
                    model = flags.get_model("recommender", user)
                    model.predict(features)
                    served[model.version] += 1
                except Exception:
                    failed += 1
            wait_for(lambda: flags.status()["recommender"].quarantined)  # loaded in the background
            status = flags.status()["recommender"]
            quarantined = status.quarantined[0]
            back_off = Backoff().delay(quarantined.failures)
            print(
                f"4. v4 flagged to everyone: {dict(served)} served, {failed} failed requests; "
                f"v4 quarantined (failure {quarantined.failures}, a {back_off:g} s back-off, "
                f"{quarantined.retry_in_s:.1f} s left): {quarantined.cause[:60]}..."
            )
        print(f"done in {time.perf_counter() - started:.2f} s")
        api.shutdown()


def _share(flags: ModelFlags, version: str) -> float:
    return sum(flags.get_model("recommender", u).version == version for u in USERS) / len(USERS)


if __name__ == "__main__":
    main()
