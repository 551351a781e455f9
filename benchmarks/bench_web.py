"""What an open status page costs the request path: ``get_model`` + ``predict`` of a cached
version, with the page served and refreshed every second, against no page at all.

One ModelFlags serves a real scikit-learn classifier (guardrails on, so every call is recorded in
the metrics, and a decision log, so the page reads the log's end). Three variants run in
interleaved rounds whose order rotates, so that drift hits every variant alike:

- "no status page": nothing but the calls;
- "page open, refreshed every 1 s": ``flags.serve_status(sample_s=1)`` on 127.0.0.1 and another
  process that loads the overview and the model page every second, as a browser left open would
  (the sampler reads the serving parts once a second whatever the number of viewers);
- "no status page (control)": the first variant again, to show how far noise moves a ratio.

Each round times single calls for ``ROUND_S`` seconds on one thread and the process's CPU time;
the report gives, per variant, the median over rounds of each round's p50, p99 and mean call time
and CPU time per call, their ratios to the first variant, and what the page itself costs: a
snapshot's duration, a page load's, and the process's CPU per second with the page open and no
traffic.

Run: ``python benchmarks/bench_web.py`` (about a minute).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import joblib
import numpy as np
import tomli_w
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from sklearn.linear_model import LogisticRegression

from modelflags import ModelFlags
from modelflags.web.server import StatusServer

ROUNDS = 10
ROUND_S = 2.0
REFRESH_S = 1.0
TOKEN = "benchmark-token-0123456789"
VARIANTS = ("no status page", "page open, refreshed every 1 s", "no status page (control)")


VIEWER = """
import sys, time, httpx
url, token, refresh = sys.argv[1], sys.argv[2], float(sys.argv[3])
took = []
with httpx.Client(base_url=url, headers={"Authorization": "Bearer " + token}, timeout=10) as c:
    while True:
        for path in ("/", "/models/churn"):
            started = time.perf_counter()
            try:
                c.get(path).raise_for_status()
            except httpx.HTTPError:
                print(" ".join(map(str, took)), flush=True)
                sys.exit(0)
            took.append(time.perf_counter() - started)
        time.sleep(refresh)
"""


class Viewer:
    """Another process loading the overview and the model page every ``REFRESH_S`` seconds, as a
    browser would: its own work is not the application's."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", VIEWER, url, TOKEN, str(REFRESH_S)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.render_s: list[float] = []

    def close(self) -> None:
        """Stop it (after the server closed) and collect its page load times."""
        out, _ = self.process.communicate(timeout=30)
        self.render_s = [float(x) for x in out.split()]


def make_flags(root: Path) -> ModelFlags:
    rng = np.random.RandomState(0)
    X = rng.rand(500, 3)
    model = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    joblib.dump(model, root / "m.joblib")
    registry = {
        "models": {
            "churn": {
                "default_version": "v1",
                "versions": {"v1": {"uri": "m.joblib"}, "v2": {"uri": "m.joblib"}},
                "guardrails": {"max_error_rate": 0.05, "min_requests": 100, "sustained_s": 30},
            }
        }
    }
    (root / "registry.toml").write_text(tomli_w.dumps(registry))
    api.set_provider_and_wait(InMemoryProvider({"churn": InMemoryFlag("v2", {"v2": "v2"})}))
    return ModelFlags(root / "registry.toml", decision_log=root / "decisions.jsonl")


def timed_round(flags: ModelFlags, rows: np.ndarray) -> Round:
    """Single calls for ``ROUND_S`` seconds: their durations, and the process's CPU time."""
    durations: list[float] = []
    clock = time.perf_counter
    cpu = time.process_time()
    deadline = clock() + ROUND_S
    i = 0
    while clock() < deadline:
        row = rows[i % len(rows) : i % len(rows) + 1]
        started = clock()
        flags.get_model("churn", f"user-{i % 1000}").predict(row)
        durations.append(clock() - started)
        i += 1
    return Round(durations, time.process_time() - cpu)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        flags = make_flags(Path(folder))
        rows = np.random.RandomState(1).rand(1000, 3)
        timed_round(flags, rows)  # warm: load, cache, first metrics
        rounds: dict[str, list[Round]] = {variant: [] for variant in VARIANTS}
        renders: list[float] = []
        for index in range(ROUNDS * len(VARIANTS)):
            variant = VARIANTS[(index + index // len(VARIANTS)) % len(VARIANTS)]
            if variant == VARIANTS[1]:
                server = flags.serve_status(token=TOKEN, sample_s=1.0)
                viewer = Viewer(server.url)
                try:
                    wait_for_first_view(server)
                    rounds[variant].append(timed_round(flags, rows))
                finally:
                    server.close()  # the viewer stops at its next failed load
                    viewer.close()
                renders.extend(viewer.render_s)
            else:
                rounds[variant].append(timed_round(flags, rows))
        snapshot_s = snapshot_cost(flags)
        idle_cpu = page_cpu_per_second(flags)
        flags.close()
    report(rounds, renders, snapshot_s, idle_cpu)


class Round:
    """One round's call durations (seconds) and the process's CPU seconds during it."""

    def __init__(self, durations: list[float], cpu_s: float) -> None:
        ordered = sorted(durations)
        self.calls = len(ordered)
        self.p50 = ordered[len(ordered) // 2]
        self.p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        self.mean = statistics.fmean(ordered)
        self.cpu_per_call = cpu_s / max(1, len(ordered))


def wait_for_first_view(server: StatusServer, timeout: float = 30.0) -> None:
    """Until the viewer process has loaded a page (its start is not part of a round)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not server.app.sampler.running and time.monotonic() < deadline:
        pause.wait(0.05)


def page_cpu_per_second(flags: ModelFlags, seconds: float = 5.0) -> float:
    """The process's CPU seconds per second with the page open and no request served: what
    serving and refreshing the page costs by itself."""
    with flags.serve_status(token=TOKEN, sample_s=1.0) as server:
        viewer = Viewer(server.url)
        wait_for_first_view(server)
        cpu = time.process_time()
        threading.Event().wait(seconds)
        used = time.process_time() - cpu
    viewer.close()
    return used / seconds


def snapshot_cost(flags: ModelFlags) -> list[float]:
    """How long one snapshot takes (the sampler's work each ``sample_s``)."""
    app = flags.web_app(token=TOKEN, sample_s=3600)
    app.sampler.latest()
    took = []
    for _ in range(50):
        started = time.perf_counter()
        app.sampler.sample_now()
        took.append(time.perf_counter() - started)
    app.close()
    return took


def report(
    rounds: dict[str, list[Round]], renders: list[float], snapshot_s: list[float], idle: float
) -> None:
    def median(variant: str, figure: str) -> float:
        return statistics.median(getattr(r, figure) for r in rounds[variant])

    print(f"get_model + predict of a cached version; {ROUNDS} rounds of {ROUND_S:g} s a variant")
    print("medians over rounds of each round's figure; ratios to the first variant")
    print(f"{'variant':<32} {'calls':>7} {'p50 us':>7} {'p99 us':>8} {'mean us':>8} {'CPU us':>7}")
    base = {f: median(VARIANTS[0], f) for f in ("p50", "p99", "mean", "cpu_per_call")}
    for variant in VARIANTS:
        figures = {f: median(variant, f) for f in base}
        calls = sum(r.calls for r in rounds[variant])
        print(
            f"{variant:<32} {calls:>7} {figures['p50'] * 1e6:>7.1f} {figures['p99'] * 1e6:>8.1f} "
            f"{figures['mean'] * 1e6:>8.1f} {figures['cpu_per_call'] * 1e6:>7.1f}"
        )
        print(
            f"{'':<32} ratios: p50 {figures['p50'] / base['p50']:.3f}  "
            f"p99 {figures['p99'] / base['p99']:.3f}  mean {figures['mean'] / base['mean']:.3f}"
            f"  CPU per call {figures['cpu_per_call'] / base['cpu_per_call']:.3f}"
        )
    if renders:
        print(
            f"page loads while open: {len(renders)}, median {statistics.median(renders) * 1e3:.1f}"
            f" ms, max {max(renders) * 1e3:.1f} ms (a viewer's wait, not the request path's)"
        )
    print(
        f"one snapshot (status, metrics, shadow, decision log end): median "
        f"{statistics.median(snapshot_s) * 1e3:.2f} ms, taken once per sample_s"
    )
    print(f"the page open with no traffic: {idle * 1e3:.1f} ms of CPU per second in the process")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
