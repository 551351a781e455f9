"""Guarded canary: a slower, worse candidate is rolled back by the SDK's own guardrails.

Everything runs in a temporary folder, with flagd's provider in FILE mode (no server):

1. two scikit-learn models are trained: ``v1`` on today's labels, and a candidate ``v2`` on
   last quarter's labels, so it is wrong more often. ``v2`` is also slower: the registry loads it
   through a loader that puts a 3 ms feature lookup in front of it;
2. the registry gives the model guardrails against the last known good version: its p95
   latency may be at most 50% higher, and its "click" rate at most 10% lower. Each rule is a
   sequential test: it fires when the whole confidence interval lies beyond the tolerance, and
   the chance of a false rollback over the whole canary is at most ``alpha``;
3. a background thread sends traffic: ``get_model``, ``predict``, then ``record_outcome`` with a
   click when the recommendation was right;
4. ``flags.canary(...)`` moves the flag file through 10 %, 50 % and 100 % with a
   ``FlagdFileActuator``. A guardrail fires, the canary rolls the flag file back to ``v1``, and
   the timeline shows the evidence: the rule, what was observed against the limit, how many
   requests each version had, and the test's estimate and confidence interval.

Run: ``python examples/guarded_canary.py`` (a few seconds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from sklearn.linear_model import LogisticRegression

from modelflags import BecameLKG, Breach, ModelFlags, RolledBack
from modelflags.rollout.actuators import FlagdFileActuator
from modelflags.rollout.canary import CanaryResult

MODEL = "recommender"
USERS = 2000
LOOKUP_S = 0.003
"""The candidate's extra latency per call: a slow feature lookup."""
GUARDRAILS = """\
max_latency_increase = { relative = 0.5, quantile = 0.95 }
max_outcome_drop = { name = "click", relative = 0.1, kind = "binary" }
alpha = 0.05
window_s = 10.0
action = "rollback"
"""
STAGES = [10, 50, 100]
STAGE_SECONDS = 1.5
PACE_S = 0.0005
"""Pause between two requests of the traffic thread (about 1,000 requests a second)."""
TRAFFIC_LIMIT_S = 15.0
"""The traffic thread stops by itself after this long, whatever happens to the canary."""


class WithLookup:
    """A model whose every call first waits ``delay_s`` seconds for a slow feature lookup.

    Safe to share between threads when the wrapped model is.
    """

    def __init__(self, model: Any, delay_s: float) -> None:
        self.model = model
        self.delay_s = delay_s

    def predict(self, X: Any) -> Any:
        """The wrapped model's prediction, after the lookup."""
        time.sleep(self.delay_s)
        return self.model.predict(X)


def load_with_lookup(path: Path) -> WithLookup:
    """The ``slow-lookup`` loader of the registry: a joblib artifact behind a slow lookup."""
    return WithLookup(joblib.load(path), LOOKUP_S)


def today(X: np.ndarray) -> np.ndarray:
    """What users like today: the target v1 learns and clicks are scored against."""
    return (X[:, 0] + 0.5 * X[:, 1] > 0.8).astype(int)


def train(folder: Path) -> dict[str, Path]:
    """v1 learns today's target; v2 learned last quarter's, which agrees with it less often."""
    X = np.random.RandomState(7).rand(1000, 4)
    last_quarter = (X[:, 1] + 0.3 * X[:, 2] > 0.6).astype(int)
    paths = {}
    for version, labels in (("v1", today(X)), ("v2", last_quarter)):
        paths[version] = folder / f"{MODEL}-{version}.joblib"
        joblib.dump(LogisticRegression().fit(X, labels), paths[version])
    return paths


def write_registry(folder: Path, paths: dict[str, Path]) -> Path:
    """Both versions (v2 through the slow-lookup loader) and the model's guardrails."""
    lines = [f"[models.{MODEL}]", 'default_version = "v1"', ""]
    lines += [f"[models.{MODEL}.guardrails]", GUARDRAILS]
    for version, path in paths.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines += [
            f"[models.{MODEL}.versions.{version}]",
            f'uri = "{path.name}"',
            f'sha256 = "{digest}"',
            *(['loader = "slow-lookup"'] if version == "v2" else []),
            "",
        ]
    registry = folder / "registry.toml"
    registry.write_text("\n".join(lines))
    return registry


def write_flags(path: Path) -> None:
    """A flagd flag file serving v1 to everyone (the canary adds v2 to its variants)."""
    flag = {"state": "ENABLED", "variants": {"v1": "v1"}, "defaultVariant": "v1", "targeting": {}}
    path.write_text(json.dumps({"flags": {MODEL: flag}}, indent=2))


class Traffic:
    """Users asking for recommendations on a background thread, and clicking when it is right.

    Counts which version served in each tenth of a second of the monotonic clock. Stops on
    :meth:`stop`, or by itself after ``limit_s`` seconds. Used from two threads (the traffic
    thread and the one reading the counts); a lock guards the counts.
    """

    TICK_S = 0.1

    def __init__(self, flags: ModelFlags, *, limit_s: float) -> None:
        self.flags = flags
        self.limit_s = limit_s
        self.X = np.random.RandomState(11).rand(USERS, 4)
        self.truth = today(self.X)
        self.errors = 0
        self._ticks: dict[int, Counter[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        """Start sending requests."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sending requests and wait for the thread (a few milliseconds)."""
        self._stop.set()
        self._thread.join(5)

    def served(self, start: float, end: float) -> Counter[str]:
        """Versions served between the monotonic times ``start`` and ``end``."""
        total: Counter[str] = Counter()
        with self._lock:
            for tick, counts in self._ticks.items():
                if start <= tick * self.TICK_S < end:
                    total.update(counts)
        return total

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        user = 0
        while not self._stop.wait(PACE_S) and time.monotonic() < deadline:
            user = (user + 1) % USERS
            try:
                handle = self.flags.get_model(MODEL, {"id": f"user-{user}"})
                label = int(handle.predict(self.X[user : user + 1])[0])
                self.flags.record_outcome(handle, "click", float(label == self.truth[user]))
            except Exception:
                with self._lock:
                    self.errors += 1
                continue
            tick = int(time.monotonic() / self.TICK_S)
            with self._lock:
                self._ticks.setdefault(tick, Counter())[handle.version] += 1


def share(counts: Counter[str]) -> str:
    """``v1 90%, v2 10%``."""
    total = sum(counts.values())
    if not total:
        return "no traffic"
    return ", ".join(f"{version} {counts[version] / total:.0%}" for version in sorted(counts))


def served_now(flags: ModelFlags) -> Counter[str]:
    """Which version each user is served now."""
    return Counter(flags.get_model(MODEL, {"id": f"user-{u}"}).version for u in range(USERS))


def percent(value: float | None) -> str:
    """``+12%``, or ``n/a``."""
    return "n/a" if value is None else f"{value:+.0%}"


def evidence(breach: Breach) -> str:
    """A breach in words: the rule, observed against limit, the traffic on both sides, and the
    sequential test's estimate and confidence interval against the tolerance."""
    unit = " ms" if "latency" in breach.rule else ""
    lkg = "no traffic" if breach.lkg_observed is None else f"{breach.lkg_observed:.3g}{unit}"
    text = (
        f"{breach.rule}: {breach.version} observed {breach.observed:.3g}{unit} against a limit "
        f"of {breach.threshold:.3g}{unit} ({breach.lkg}: {lkg}); {breach.requests} requests of "
        f"{breach.version}, {breach.lkg_requests} of {breach.lkg} in {breach.window_s:.1f} s"
    )
    stats = breach.evidence
    if stats is not None:
        text += (
            f"; {stats.quantity} {percent(stats.estimate)} in [{percent(stats.lower)}, "
            f"{percent(stats.upper)}], tolerance {percent(stats.limit)}, alpha {stats.alpha:g}"
        )
    return text


def timeline(
    result: CanaryResult,
    events: list[tuple[float, object]],
    breaches: list[Breach],
    t0: float,
    traffic: Traffic,
) -> list[str]:
    """The canary's steps, the guardrails' evidence and what the traffic got, in time order.

    Times are seconds since ``t0``, taken just before the canary started. ``events`` are the
    ModelFlags events with the monotonic time they arrived; ``breaches`` those on record after
    the canary (each rule that fired appears once, from either source).
    """
    lines: list[tuple[float, str]] = []
    words = {
        "start": "canary start: {detail}",
        "split": "stage {percent} %: flag file split {detail}",
        "healthy": "stage {percent} % held: {detail}",
        "breach": "the canary sees the breach at {percent} %: {detail}",
        "rolled_back": "the canary rolled the flag file back: {detail}",
        "completed": "canary completed: {detail}",
    }
    steps = result.timeline
    for index, step in enumerate(steps):
        text = words.get(step.event, step.event + " at {percent} %: {detail}")
        lines.append((step.time, text.format(percent=step.percent, detail=step.detail)))
        if step.event == "split":
            later = [other.time for other in steps[index + 1 :] if other.event == "split"]
            end = later[0] if later else steps[-1].time
            served = share(traffic.served(t0 + step.time, t0 + end))
            lines.append((step.time, f"          served during the stage: {served}"))
    fired = {(b.rule, b.fired_at): b for b in breaches}
    for at, event in events:
        if isinstance(event, RolledBack) and event.breach is not None:
            breach = event.breach
            fired.setdefault((breach.rule, breach.fired_at), breach)
            lines.append(
                (
                    breach.fired_at - t0,
                    f"{event.version} rolled back in-process: {event.lkg} serves",
                )
            )
        elif isinstance(event, BecameLKG):
            lines.append((at - t0, f"{event.version} became the last known good version"))
    for breach in fired.values():
        lines.append((breach.fired_at - t0, f"guardrail fired: {evidence(breach)}"))
    # A stable sort: within a millisecond, evidence first, then the rest in the order recorded.
    lines.sort(key=lambda line: (round(line[0], 3), not line[1].startswith("guardrail fired")))
    return [f"  {at:5.2f} s  {text}" for at, text in lines]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def main() -> None:
    logging.basicConfig(stream=sys.stdout, format="   log: %(message)s", level=logging.ERROR)
    started = time.monotonic()
    events: list[tuple[float, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry = write_registry(folder, train(folder))
        flag_file = folder / "flags.json"
        write_flags(flag_file)
        api.set_provider_and_wait(
            FlagdProvider(
                resolver_type=ResolverType.FILE,
                offline_flag_source_path=str(flag_file),
                deadline_ms=50,
            )
        )
        try:
            with ModelFlags(
                registry,
                loaders={"slow-lookup": load_with_lookup},
                guardrail_interval=0.1,
                listeners=[lambda event: events.append((time.monotonic(), event))],
            ) as flags:
                print(f"before the canary: {share(served_now(flags))} of {USERS} users")
                canary = flags.canary(
                    MODEL,
                    "v2",
                    FlagdFileActuator(flag_file),
                    stages=STAGES,
                    stage_seconds=STAGE_SECONDS,
                    poll_s=0.1,
                )
                traffic = Traffic(flags, limit_s=TRAFFIC_LIMIT_S)
                traffic.start()
                t0 = time.monotonic()
                result = canary.run()  # blocks: at most STAGE_SECONDS a stage
                traffic.stop()
                flags.flush(5)
                print("timeline:")
                breaches = flags.breaches(MODEL, "v2")
                print("\n".join(timeline(result, events, breaches, t0, traffic)))
                flag = json.loads(flag_file.read_text())["flags"][MODEL]
                print(
                    f"flag file now: defaultVariant {flag['defaultVariant']!r}, "
                    f"targeting {json.dumps(flag['targeting'])}"
                )
                wait_for(lambda: served_now(flags)["v1"] == USERS)
                print(
                    f"after the canary: {share(served_now(flags))} of {USERS} users; last known "
                    f"good {flags.status()[MODEL].lkg}; {traffic.errors} failed requests"
                )
        finally:
            api.shutdown()
            api.clear_providers()
    print(f"canary outcome: {result.outcome}, in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
