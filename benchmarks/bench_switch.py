"""How fast a flag change reaches requests, and what requests feel while the version switches.

Prints three tables:

1. flagd FILE mode: from an atomic edit of the flag file to the first request served by the new
   version, with flagd polling the file every 50 ms and every 500 ms (its default);
2. Unleash 8 (refresh interval 1 s): from a change of the variant weights through the admin API to
   the first request served by the new version. When the local stack of ``services/unleash``
   is not running, ``start.py`` starts it (and ``stop.py`` stops it at the end);
3. request latency (p50, p99, max) of ``get_model(...).predict`` from 4 threads in a loop, in a
   steady state and during a switch to a version not loaded yet, with and without prewarm
   (flagd FILE mode; the new version is a ~21 MB joblib artifact that takes ~0.2 s to load), and
   how many requests took over 50 ms. With prewarm no request waits for a load while the last
   known good version is in memory (it answers, ``PREWARMING``, while the load runs in the
   background); without prewarm the first requests meeting the new version load it.

Run: ``python benchmarks/bench_switch.py`` (about a minute; ``--no-unleash`` skips table 2,
``--latency-only`` runs table 3 alone).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from sklearn.linear_model import LogisticRegression

from modelflags import Loaded, ModelFlags

ROOT = Path(__file__).resolve().parents[1]
UNLEASH_DIR = ROOT / "services" / "unleash"
MODEL = "recommender"
ROW = np.zeros((1, 4))
THREADS = 4
SLOW_S = 0.050  # a request over 50 ms waited for something (a load)
JITTER = random.Random(7)  # changes land at varied points of the poll cycle, reproducibly


class LookupModel:
    """A model with a large vocabulary and embedding table: cheap to call, slow to load."""

    def __init__(self, seed: int, vocabulary: int = 60_000, rows: int = 80_000) -> None:
        rng = np.random.RandomState(seed)
        self.label = seed
        self.vocabulary = {f"token-{seed}-{i}": i for i in range(vocabulary)}
        self.embeddings = rng.rand(rows, 64).astype(np.float32)

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.label)


def write_flag_file(path: Path, default: str) -> None:
    """Point every user at ``default``; replace the file atomically (temporary file, rename)."""
    document = {
        "flags": {
            MODEL: {
                "state": "ENABLED",
                "variants": {"v1": "v1", "v2": "v2"},
                "defaultVariant": default,
                "targeting": {},
            }
        }
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


def write_registry(folder: Path, models: dict[str, Any], flag: str = MODEL) -> Path:
    """Write each version with joblib and a registry (with digests) reading ``flag``."""
    lines = [f"[models.{MODEL}]", f'flag = "{flag}"', 'default_version = "v1"', ""]
    for version, model in models.items():
        path = folder / f"{MODEL}-{version}.joblib"
        joblib.dump(model, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines += [f"[models.{MODEL}.versions.{version}]", f'uri = "{path.name}"']
        lines += [f'sha256 = "{digest}"', ""]
    registry = folder / "registry.toml"
    registry.write_text("\n".join(lines))
    return registry


def small_models() -> dict[str, Any]:
    """Two tiny classifiers: loading them costs next to nothing."""
    rng = np.random.RandomState(0)
    X = rng.rand(200, 4)
    y = (X[:, 0] > 0.5).astype(int)
    return {"v1": LogisticRegression().fit(X, y), "v2": LogisticRegression(C=0.1).fit(X, y)}


@contextmanager
def flagd(path: Path, poll_ms: int) -> Iterator[None]:
    """flagd's provider in FILE mode on ``path`` as the default provider, for the block."""
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=poll_ms
        )
    )
    try:
        yield
    finally:
        api.shutdown()
        time.sleep(poll_ms / 1000 * 1.5)  # its watcher looks at the file once more: let it


def first_served(flags: ModelFlags, version: str, timeout: float) -> float:
    """Request in a loop until ``version`` answers; the time it took (or ``inf``)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if flags.get_model(MODEL, "user-1").version == version:
            return time.perf_counter() - started
    return float("inf")


def summary(samples: list[float]) -> str:
    """Median, min and max of durations in seconds, printed in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    return (
        f"median {statistics.median(ms):7.1f} ms   min {ms[0]:7.1f} ms   max {ms[-1]:7.1f} ms"
        f"   ({len(ms)} switches)"
    )


# -- 1. flagd file edits -------------------------------------------------------------------------


def flagd_switches(poll_ms: int, switches: int) -> list[float]:
    """Seconds from each file edit (alternating v1/v2) to the first request served by it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry = write_registry(folder, small_models())
        path = folder / "flags.json"
        write_flag_file(path, "v1")
        took = []
        with flagd(path, poll_ms), ModelFlags(registry) as flags:
            assert first_served(flags, "v1", 5.0) < 5.0
            for index in range(switches):
                target = "v2" if index % 2 == 0 else "v1"
                time.sleep(JITTER.uniform(0.0, poll_ms / 1000))
                edited = time.perf_counter()
                write_flag_file(path, target)
                first_served(flags, target, 10.0)
                took.append(time.perf_counter() - edited)
        return took


# -- 2. Unleash admin API changes ------------------------------------------------------------------


def start_unleash() -> dict[str, Any] | None:
    """The running stack (started by services/unleash/start.py when needed), or None."""
    result = subprocess.run(
        [sys.executable, str(UNLEASH_DIR / "start.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"   skipped: the Unleash stack is not available ({last})")
        return None
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def unleash_switches(stack: dict[str, Any], switches: int) -> list[float]:
    """Seconds from each admin API weight change to the first request served by it."""
    sys.path.insert(0, str(UNLEASH_DIR))
    from openfeature.contrib.provider.unleash import UnleashProvider
    from unleash_stack import UnleashAdmin
    from UnleashClient.cache import FileCache

    flag = f"bench-switch-{os.getpid()}-{int(time.time())}"
    took = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        UnleashAdmin(stack["url"], stack["admin_token"]) as admin,
    ):
        folder = Path(tmp)
        registry = write_registry(folder, small_models(), flag=flag)
        admin.create_flag(flag)
        try:
            admin.set_variants_rollout(flag, {"v1": 100, "v2": 0})
            admin.enable(flag)
            provider = UnleashProvider(
                url=f"{stack['url']}/api",
                app_name="modelflags-bench-switch",
                api_token=stack["client_token"],
                cache=FileCache("modelflags-bench-switch", directory=str(folder / "cache")),
            )
            provider.client.unleash_refresh_interval = 1
            api.set_provider_and_wait(provider)
            with ModelFlags(registry) as flags:
                if first_served(flags, "v1", 10.0) == float("inf"):
                    raise RuntimeError(f"flag {flag} never served v1")
                for index in range(switches):
                    target = "v2" if index % 2 == 0 else "v1"
                    weights = {"v1": 0, "v2": 100} if target == "v2" else {"v1": 100, "v2": 0}
                    time.sleep(JITTER.uniform(0.0, 1.0))
                    changed = time.perf_counter()
                    admin.set_variants_rollout(flag, weights)
                    first_served(flags, target, 10.0)
                    took.append(time.perf_counter() - changed)
        finally:
            api.shutdown()
            admin.delete_flag(flag)
    return took


# -- 3. request latency during a switch ------------------------------------------------------------


def traffic_latencies(
    flags: ModelFlags,
    switch: Callable[[], None],
    before: float,
    after: float,
    done: Callable[[], bool] = lambda: True,
) -> tuple[list[float], list[float], Counter[str]]:
    """Latencies before and after ``switch()`` from THREADS threads, and the answers' reasons.

    "After" lasts ``after`` seconds, and at least until ``done()`` (at most 30 s more): a load
    in the background competes with the request threads for the interpreter lock, so it takes
    longer than alone.
    """
    stop = threading.Event()
    lock = threading.Lock()
    records: list[tuple[float, float]] = []
    reasons: Counter[str] = Counter()

    def run(index: int) -> None:
        mine: list[tuple[float, float]] = []
        seen: Counter[str] = Counter()
        i = 0
        deadline = time.perf_counter() + before + after + 40.0
        while not stop.is_set() and time.perf_counter() < deadline:
            started = time.perf_counter()
            handle = flags.get_model(MODEL, f"user-{index}-{i % 64}")
            handle.predict(ROW)
            mine.append((started, time.perf_counter() - started))
            seen[str(handle.reason)] += 1
            i += 1
        with lock:
            records.extend(mine)
            reasons.update(seen)

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(THREADS)]
    for worker in workers:
        worker.start()
    time.sleep(before)
    switched = time.perf_counter()
    switch()
    time.sleep(after)
    limit = time.perf_counter() + 30.0
    while not done() and time.perf_counter() < limit:
        time.sleep(0.01)
    ended = time.perf_counter()
    stop.set()
    for worker in workers:
        worker.join(15.0)
    steady = [took for at, took in records if switched - before * 0.8 <= at < switched - 0.1]
    during = [took for at, took in records if switched <= at < ended]
    return steady, during, reasons


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max of durations in seconds, in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return statistics.median(ms), p99, ms[-1]


def latency_during_switch(prewarm: bool, rounds: int) -> dict[str, Any]:
    """Request latencies before and after ``rounds`` switches to a cold, slow-loading v2."""
    steady: list[float] = []
    during: list[float] = []
    reasons: Counter[str] = Counter()
    stalls = 0
    slow = 0
    slow_steady = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry = write_registry(folder, {"v1": LookupModel(1), "v2": LookupModel(2)})
        load_s = min(_load_time(folder / f"{MODEL}-v2.joblib") for _ in range(2))
        path = folder / "flags.json"
        for _ in range(rounds):
            write_flag_file(path, "v1")
            loads: list[float] = []  # seconds of each load of v2 (it competes for the GIL)

            def note(event: object, loads: list[float] = loads) -> None:
                if isinstance(event, Loaded) and event.version == "v2":
                    loads.append(event.seconds)

            with (
                flagd(path, 50),
                ModelFlags(registry, prewarm=prewarm, listeners=[note]) as flags,
            ):
                first_served(flags, "v1", 10.0)
                calm, busy, seen = traffic_latencies(
                    flags,
                    lambda: write_flag_file(path, "v2"),
                    before=1.0,
                    after=1.5,
                    done=lambda: "v2" in flags.status()[MODEL].loaded,
                )
                assert "v2" in flags.status()[MODEL].loaded
                assert flags.flush(timeout=10)
            steady += calm
            during += busy
            reasons += seen
            # a request that took most of the load's own time waited for the load
            stalls += sum(1 for took in busy if took > 0.8 * loads[0])
            slow += sum(1 for took in busy if took > SLOW_S)
            slow_steady += sum(1 for took in calm if took > SLOW_S)
    return {
        "steady_s": steady,
        "steady": quantiles(steady),
        "during": quantiles(during),
        "stalls": stalls,
        "slow": slow,
        "slow_steady": slow_steady,
        "requests": len(during),
        "reasons": reasons,
        "load_s": load_s,
    }


def _load_time(path: Path) -> float:
    """Seconds to verify (sha256) and deserialize ``path``, as modelflags does."""
    started = time.perf_counter()
    hashlib.sha256(path.read_bytes()).hexdigest()
    joblib.load(path)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=10, help="switches per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="switches per latency measurement")
    parser.add_argument("--no-unleash", action="store_true", help="skip the Unleash table")
    parser.add_argument("--latency-only", action="store_true", help="run table 3 alone")
    parser.add_argument(
        "--keep-stack", action="store_true", help="leave a stack this run started running"
    )
    args = parser.parse_args(argv)

    if not args.latency_only:
        switch_tables(args)
    latency_table(args)
    return 0


def switch_tables(args: argparse.Namespace) -> None:
    """Tables 1 and 2: from a change at the source to the first request it reaches."""
    print("1. flagd FILE mode: file edit -> first request served by the new version")
    for poll_ms in (50, 500):
        print(f"   poll every {poll_ms:3d} ms: {summary(flagd_switches(poll_ms, args.switches))}")

    print("\n2. Unleash 8, refresh interval 1 s: admin API change -> first request served by it")
    if args.no_unleash:
        print("   skipped (--no-unleash)")
    else:
        stack = start_unleash()
        if stack is not None:
            try:
                print(f"   stack at {stack['url']} ({'reused' if stack['reused'] else 'started'})")
                took = unleash_switches(stack, max(4, args.switches // 2))
                print(f"   {summary(took)}")
            finally:
                if not stack["reused"] and not args.keep_stack:
                    subprocess.run(
                        [sys.executable, str(UNLEASH_DIR / "stop.py")],
                        capture_output=True,
                        timeout=120,
                        check=False,
                    )
                    print("   stack stopped (this run started it)")


def latency_table(args: argparse.Namespace) -> None:
    """Table 3: what requests feel while the version switches."""
    print(
        f"\n3. request latency, {THREADS} threads calling get_model(...).predict in a loop, "
        "flagd FILE mode"
    )
    header = f"   {'':14}{'steady p50/p99/max (ms)':>26}{'during a switch':>26}"
    print(header + f"{'p99 ratio':>11}{'stalled':>10}{'> 50 ms':>12}{'> 50 ms steady':>18}")
    results = {}
    for prewarm in (True, False):
        result = latency_during_switch(prewarm, args.rounds)
        results[prewarm] = result
        (s50, s99, smax), (d50, d99, dmax) = result["steady"], result["during"]
        name = "prewarm on" if prewarm else "prewarm off"
        print(
            f"   {name:14}{s50:10.3f} {s99:7.3f} {smax:7.1f}"
            f"{d50:12.3f} {d99:7.3f} {dmax:7.1f}{d99 / s99:10.1f}x"
            f"{result['stalls']:6d}/{result['requests']}{result['slow']:8d}/{result['requests']}"
            f"{result['slow_steady']:9d}/{len(result['steady_s'])}"
        )
    load_s = results[True]["load_s"]
    print(
        f"   the new version: a {(LookupModel(2).embeddings.nbytes / 1e6):.0f} MB embedding table "
        f"+ 60k-entry vocabulary, {load_s * 1000:.0f} ms to verify and load; 'during a switch' = "
        f"1.5 s after the edit (longer while v2 loads), {args.rounds} switches; 'stalled' = "
        "requests that took over 80% of that switch's load (they waited for it); '> 50 ms "
        "steady' = the same count before the edit (the machine's own noise)"
    )
    for prewarm, result in results.items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(result["reasons"].items()))
        print(f"   answers with prewarm {'on' if prewarm else 'off'}: {reasons}")


if __name__ == "__main__":
    sys.exit(main())
