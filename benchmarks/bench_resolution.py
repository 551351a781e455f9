"""The resolution cache: a cached ``get_model`` against a bare flag evaluation, in one run.

For three providers (flagd FILE mode with a ``fractional`` rule, OpenFeature's in-memory provider,
and the Unleash provider reading a features document from a small HTTP server on 127.0.0.1) and
two request mixes, prints the time of one ``get_model`` (resolution cache on, version loaded)
over the time of one bare ``client.get_string_details`` with the same provider and the same
contexts, and the cache's hit rate:

- ``repeat``: 90% of requests come from 10,000 recent users (already seen), 10% from new ones;
  targets: <= 0.25x the bare evaluation;
- ``all-new``: every request comes from a user never seen; target <= 1.10x.

The recent users are each seen twice before timing (an answer is kept the second time its
question is asked, so users seen once never push out those who come back). The repeat mix runs
with the default table size (10,000 answers per model, exactly the recent users) and with 20,000.
Contexts carry a targeting key and one attribute and are built before timing. Times are the CPU
time of the calling thread (``time.thread_time``), so other processes on a shared machine do not
inflate them; rounds of both callables alternate so drift affects both alike; each figure is the
median over rounds.

Unleash counts every evaluation, so its answers are cached only when trusted
(``ResolutionCacheOptions(trusted=frozenset({"Unleash Provider"}))``, as here); its client's
metrics and registration are off because the small server does not take them.

Run: ``python benchmarks/bench_resolution.py`` (a minute or two).
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import joblib
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider import FeatureProvider
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from sklearn.linear_model import LogisticRegression

from modelflags import ModelFlags
from modelflags.options import ResolutionCacheOptions

FLAG = "recommender"
RECENT = 10_000
CALLS = 4_000  # requests per round
ROUNDS = 7
REPEAT_TARGET = 0.25
NEW_TARGET = 1.10
UNLEASH = frozenset({"Unleash Provider"})


def write_flag_file(path: Path) -> None:
    """A flagd file splitting users 90/10 between v1 and v2 by targeting key."""
    document = {
        "flags": {
            FLAG: {
                "state": "ENABLED",
                "variants": {"v1": "v1", "v2": "v2"},
                "defaultVariant": "v1",
                "targeting": {"fractional": [["v1", 90], ["v2", 10]]},
            }
        }
    }
    path.write_text(json.dumps(document))


FEATURES = {
    "version": 2,
    "features": [
        {
            "name": FLAG,
            "type": "release",
            "enabled": True,
            "project": "default",
            "stale": False,
            "impressionData": False,
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "constraints": [],
                    "parameters": {"rollout": "100", "stickiness": "default", "groupId": FLAG},
                    "variants": [
                        {
                            "name": version,
                            "weight": weight,
                            "weightType": kind,
                            "stickiness": "default",
                            "payload": {"type": "string", "value": version},
                        }
                        for version, weight, kind in (("v1", 900, "fix"), ("v2", 100, "variable"))
                    ],
                }
            ],
            "variants": [],
        }
    ],
}


class FeaturesHandler(BaseHTTPRequestHandler):
    """Serves the features document to every GET (304 when unchanged, as Unleash does, so the
    client's polls are not changes); accepts every POST."""

    body = json.dumps(FEATURES).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'

    def do_GET(self) -> None:
        if self.headers.get("If-None-Match") == self.etag:
            self.send_response(304)
            self.send_header("ETag", self.etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", self.etag)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextmanager
def unleash_provider(folder: Path) -> Iterator[FeatureProvider]:
    """The Unleash provider reading FEATURES from a small server on 127.0.0.1."""
    from openfeature.contrib.provider.unleash import UnleashProvider
    from UnleashClient.cache import FileCache

    server = ThreadingHTTPServer(("127.0.0.1", 0), FeaturesHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        provider = UnleashProvider(
            url=f"http://127.0.0.1:{server.server_port}/api",
            app_name="modelflags-bench-resolution",
            api_token="bench",
            cache=FileCache("modelflags-bench-resolution", directory=str(folder / "unleash")),
        )
        provider.client.unleash_disable_metrics = True
        provider.client.unleash_disable_registration = True
        yield provider
    finally:
        server.shutdown()
        server.server_close()


def write_registry(folder: Path) -> Path:
    """Two small classifiers, v1 and v2, with their digests."""
    rng = random.Random(0)
    X = [[rng.random() for _ in range(4)] for _ in range(200)]
    y = [int(row[0] > 0.5) for row in X]
    lines = [f"[models.{FLAG}]", 'default_version = "v1"', ""]
    for version, c in (("v1", 1.0), ("v2", 0.1)):
        path = folder / f"{version}.joblib"
        joblib.dump(LogisticRegression(C=c).fit(X, y), path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines += [f"[models.{FLAG}.versions.{version}]", f'uri = "{path.name}"']
        lines += [f'sha256 = "{digest}"', ""]
    registry = folder / "registry.toml"
    registry.write_text("\n".join(lines))
    return registry


def user(key: str) -> EvaluationContext:
    return EvaluationContext(key, {"plan": "free"})


RECENT_USERS = [user(f"recent-{i}") for i in range(RECENT)]


def repeat_mix(rng: random.Random, round_: int) -> list[EvaluationContext]:
    """CALLS requests: 90% from the recent users, 10% from users new in this round."""
    return [
        rng.choice(RECENT_USERS) if rng.random() < 0.9 else user(f"new-{round_}-{i}")
        for i in range(CALLS)
    ]


def all_new(round_: int, tag: str) -> list[EvaluationContext]:
    return [user(f"fresh-{tag}-{round_}-{i}") for i in range(CALLS)]


def per_call_us(
    fn: Callable[[EvaluationContext], object], requests: list[EvaluationContext]
) -> float:
    """CPU microseconds of the calling thread per request (other processes do not count)."""
    started = time.thread_time()
    for context in requests:
        fn(context)
    return (time.thread_time() - started) / len(requests) * 1e6


def measure(
    flags: ModelFlags, mix: Callable[[int, str], list[EvaluationContext]]
) -> tuple[float, float, float | None]:
    """Median bare and get_model microseconds per call over alternating rounds; the hit rate."""
    client = api.get_client()
    bare_samples, ours_samples = [], []
    report = flags.status()[FLAG].resolution_cache
    assert report is not None
    hits, misses = report.hits, report.misses
    for round_ in range(ROUNDS):
        bare_requests = mix(round_, "bare")
        ours_requests = mix(round_, "ours")
        bare_samples.append(
            per_call_us(lambda c: client.get_string_details(FLAG, "v1", c), bare_requests)
        )
        ours_samples.append(per_call_us(lambda c: flags.get_model(FLAG, c), ours_requests))
    report = flags.status()[FLAG].resolution_cache
    assert report is not None
    lookups = report.hits - hits + report.misses - misses
    rate = (report.hits - hits) / lookups if lookups else None
    return statistics.median(bare_samples), statistics.median(ours_samples), rate


def warm(flags: ModelFlags) -> None:
    """See every recent user twice (the cache keeps an answer the second time its question is
    asked) and wait until the versions they get are loaded."""
    for context in RECENT_USERS * 2:
        flags.get_model(FLAG, context)
    deadline = time.monotonic() + 30
    while any(flags.get_model(FLAG, c).reason == "PREWARMING" for c in RECENT_USERS[:500]):
        if time.monotonic() > deadline:  # versions load in the background meanwhile
            raise SystemExit("the flagged versions did not load within 30 s")
        time.sleep(0.01)


def run(name: str, registry: Path, options: ResolutionCacheOptions) -> list[tuple[str, float]]:
    """Print the rows of one provider; returns (label, ratio) pairs."""
    rng = random.Random(7)
    results = []
    for label, size, mix in (
        ("repeat", None, lambda r, tag: repeat_mix(rng, r)),
        ("repeat", 20_000, lambda r, tag: repeat_mix(rng, r)),
        ("all-new", None, all_new),
    ):
        chosen = (
            options
            if size is None
            else ResolutionCacheOptions(max_entries=size, trusted=options.trusted)
        )
        with ModelFlags(registry, resolution_cache=chosen) as flags:
            warm(flags)
            bare, ours, rate = measure(flags, mix)
        ratio = ours / bare
        target = REPEAT_TARGET if label == "repeat" else NEW_TARGET
        verdict = "meets" if ratio <= target else "MISSES"
        hit = "-" if rate is None else f"{rate:.3f}"
        print(
            f"{name:<12} {label:<8} {chosen.max_entries:>7} | bare {bare:8.2f} us | get_model "
            f"{ours:8.2f} us | ratio {ratio:6.3f} ({verdict} <= {target:.2f}) | hit rate {hit}"
        )
        results.append((f"{name} {label} {chosen.max_entries}", ratio))
    return results


def main() -> int:
    print(
        f"python {sys.version.split()[0]}, {ROUNDS} rounds x {CALLS} requests per mix, median; "
        "columns: provider, mix, max_entries"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry = write_registry(folder)
        flag_file = folder / "flags.json"
        write_flag_file(flag_file)
        api.set_provider_and_wait(
            FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(flag_file))
        )
        run("flagd file", registry, ResolutionCacheOptions())
        api.shutdown()
        api.set_provider_and_wait(
            InMemoryProvider({FLAG: InMemoryFlag("v1", {"v1": "v1", "v2": "v2"})})
        )
        run("in-memory", registry, ResolutionCacheOptions())
        api.shutdown()
        try:
            with unleash_provider(folder) as provider:
                api.set_provider_and_wait(provider)
                run("unleash", registry, ResolutionCacheOptions(trusted=UNLEASH))
                api.shutdown()
        except ImportError:
            print("unleash      skipped: pip install 'modelflags[unleash]'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
