"""A canary rollout and a rollback driven from Unleash, served by modelflags.

The program starts no server: point it at a running Unleash (for example the local stack of
``services/unleash``)::

    python services/unleash/start.py --json > /tmp/stack.json
    python examples/unleash_rollout.py --stack-json /tmp/stack.json
    # or: --url http://127.0.0.1:4242 --admin-token '*:*.…' --client-token 'default:development.…'

What it does, in a temporary folder:

1. trains two small scikit-learn classifiers (``v1``, ``v2``) and writes them with joblib, plus a
   registry whose model ``churn`` reads the flag created in step 2;
2. creates a flag through Unleash's admin API: one ``flexibleRollout`` strategy whose variants are
   the versions (variant name and string payload = version id), 100% ``v1``;
3. reads it through ``openfeature-provider-unleash`` (polling every second) and walks a canary
   10% -> 50% -> 100% and a rollback to 0%, changing only the variant weights; after each change
   it waits (bounded) until the provider has fetched it and the new split is served, then prints
   that split over 1,000 users, every request answered by a model;
4. deletes the flag.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
from openfeature import api
from openfeature.contrib.provider.unleash import UnleashProvider
from openfeature.event import ProviderEvent
from sklearn.linear_model import LogisticRegression
from UnleashClient.cache import FileCache

from modelflags import ModelFlags
from modelflags.client import PREWARMING

MODEL = "churn"
PROJECT = "default"
ENVIRONMENT = "development"
STEPS = [("canary", 10), ("canary", 50), ("canary", 100), ("rollback", 0)]
TOLERANCE = 3.0
"""Percentage points between a step's target and the share of the sample served by ``v2``."""


class UnleashFlags:
    """Just enough of Unleash's admin API (``/api/admin``) to run a rollout of one flag."""

    def __init__(self, url: str, admin_token: str) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": admin_token}, timeout=10.0
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, path, json=body)
        if response.is_error:
            raise SystemExit(f"{method} {path}: HTTP {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def _feature(self, flag: str) -> str:
        return f"/api/admin/projects/{PROJECT}/features/{flag}"

    def create(self, flag: str) -> None:
        """Create ``flag`` in the project (off in every environment)."""
        self._call("POST", f"/api/admin/projects/{PROJECT}/features", {"name": flag})

    def set_canary(self, flag: str, percent: int) -> None:
        """``percent`` of users get v2, the others v1 (weights in per mille, exact shares)."""
        variants = [
            # "fix" keeps the weight as given; one "variable" variant takes the remainder.
            {"name": "v2", "weight": percent * 10, "weightType": "fix"},
            {"name": "v1", "weight": (100 - percent) * 10, "weightType": "variable"},
        ]
        strategy = {
            "name": "flexibleRollout",
            "parameters": {"rollout": "100", "stickiness": "default", "groupId": flag},
            "variants": [
                {
                    **variant,
                    "stickiness": "default",
                    "payload": {"type": "string", "value": variant["name"]},
                }
                for variant in variants
            ],
        }
        base = f"{self._feature(flag)}/environments/{ENVIRONMENT}/strategies"
        existing = self._call("GET", base) or []
        if existing:
            self._call("PUT", f"{base}/{existing[0]['id']}", strategy)
        else:
            self._call("POST", base, strategy)

    def turn_on(self, flag: str) -> None:
        """Turn ``flag`` on in the environment."""
        self._call("POST", f"{self._feature(flag)}/environments/{ENVIRONMENT}/on")

    def delete(self, flag: str) -> None:
        """Archive ``flag`` (it leaves the project; Unleash keeps it in its archive).

        Not deleted from the archive at once: unleash-server 8 records the archiving in the
        background, and deleting the flag before that makes the write fail and the server exit.
        """
        self._call("DELETE", self._feature(flag))


def train(folder: Path) -> dict[str, Path]:
    """Two versions of a churn classifier, written with joblib."""
    rng = np.random.RandomState(3)
    X = rng.rand(400, 4)
    y = (X[:, 0] + X[:, 2] > 1.0).astype(int)
    paths = {}
    for version, strength in (("v1", 1.0), ("v2", 0.05)):
        paths[version] = folder / f"churn-{version}.joblib"
        joblib.dump(LogisticRegression(C=strength).fit(X, y), paths[version])
    return paths


def write_registry(folder: Path, paths: dict[str, Path], flag: str) -> Path:
    """A registry of both versions (with their sha256) whose model reads ``flag``."""
    lines = [f"[models.{MODEL}]", f'flag = "{flag}"', 'default_version = "v1"', ""]
    for version, path in paths.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines += [
            f"[models.{MODEL}.versions.{version}]",
            f'uri = "{path.name}"',
            f'sha256 = "{digest}"',
            "",
        ]
    registry = folder / "registry.toml"
    registry.write_text("\n".join(lines))
    return registry


def observe(flags: ModelFlags, users: list[str], features: np.ndarray) -> Counter[str]:
    """The versions serving ``users`` once nothing is loading any more (each one predicts)."""
    deadline = time.monotonic() + 10.0
    while True:
        handles = [flags.get_model(MODEL, user) for user in users]
        if time.monotonic() > deadline or all(h.reason != PREWARMING for h in handles):
            break
        time.sleep(0.05)  # a version is being loaded in the background: look again
    for handle in handles:
        handle.predict(features)
    return Counter(handle.version for handle in handles)


def describe(counts: Counter[str], total: int) -> str:
    """The share of each version, e.g. ``v1 90.2%  v2 9.8%``."""
    return "  ".join(f"{version} {counts[version] / total:.1%}" for version in ("v1", "v2"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The Unleash address and tokens, from options or from a stack JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="Unleash base URL, e.g. http://127.0.0.1:4242")
    parser.add_argument("--admin-token", help="an admin API token (*:*.…)")
    parser.add_argument("--client-token", help="a backend token of the development environment")
    parser.add_argument(
        "--stack-json", type=Path, help="the JSON printed by services/unleash/start.py --json"
    )
    parser.add_argument("--flag", default=f"churn-model-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for each change to arrive"
    )
    args = parser.parse_args(argv)
    if args.stack_json is not None:
        stack = json.loads(args.stack_json.read_text())
        args.url = args.url or stack["url"]
        args.admin_token = args.admin_token or stack["admin_token"]
        args.client_token = args.client_token or stack["client_token"]
    if not (args.url and args.admin_token and args.client_token):
        parser.error("give --stack-json, or --url, --admin-token and --client-token")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the rollout; 0 when every step was seen in time."""
    args = parse_args(argv)
    users = [f"user-{i}" for i in range(args.users)]
    features = np.random.RandomState(0).rand(1, 4)
    unleash = UnleashFlags(args.url, args.admin_token)
    fetched = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry = write_registry(folder, train(folder), args.flag)
        unleash.create(args.flag)
        try:
            unleash.set_canary(args.flag, 0)
            unleash.turn_on(args.flag)
            provider = UnleashProvider(
                url=f"{args.url.rstrip('/')}/api",
                app_name="modelflags-unleash-rollout",
                api_token=args.client_token,
                cache=FileCache("modelflags-unleash-rollout", directory=str(folder / "cache")),
            )
            provider.client.unleash_refresh_interval = 1  # seconds; set before initializing
            # Unleash's provider tells its own handlers when a poll brought new flags.
            provider.add_handler(
                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, lambda details: fetched.set()
            )
            api.set_provider_and_wait(provider)
            with ModelFlags(registry) as flags:
                started = time.monotonic()
                while flags.get_model(MODEL, users[0]).variant != "v1":
                    if time.monotonic() - started > args.timeout:
                        print(f"flag {args.flag} not served within {args.timeout:.0f} s")
                        return 1
                    time.sleep(0.1)
                counts = observe(flags, users, features)
                print(f"flag {args.flag}: every user on v1 -> {describe(counts, len(users))}")
                for kind, percent in STEPS:
                    fetched.clear()
                    changed = time.monotonic()
                    unleash.set_canary(args.flag, percent)
                    # A fetch can still bring an earlier revision of the flag: wait for fetches
                    # until the split served is this step's.
                    while True:
                        remaining = changed + args.timeout - time.monotonic()
                        if not fetched.wait(max(remaining, 0.0)):
                            print(f"{kind} {percent}%: not served within {args.timeout:.0f} s")
                            return 1
                        fetched.clear()
                        counts = observe(flags, users, features)
                        if abs(100 * counts["v2"] / len(users) - percent) <= TOLERANCE:
                            break
                    took = time.monotonic() - changed
                    print(
                        f"{kind:<8} {percent:>3}% -> {describe(counts, len(users))}  "
                        f"(arrived after {took:.1f} s, {sum(counts.values())} requests served)"
                    )
                lkg = flags.status()[MODEL].lkg
                print(f"last known good version now: {lkg}")
        finally:
            api.shutdown()
            unleash.delete(args.flag)
            unleash.close()
            print(f"flag {args.flag} deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
