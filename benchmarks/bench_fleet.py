"""Fleet decisions by simulation: one decision on the pooled traffic against one per process.

The seed's incident: a 15% drop of a 5% conversion rate on a 10% canary, 10,000 requests a
minute for the whole fleet, the rule ``max_outcome_drop = {relative = 0.05}`` judged by
:class:`~modelflags.rollout.statistics.MeanComparison` (binary). The fleet has four processes,
each seeing a quarter of the traffic (Poisson, independent):

- **pooled**: one decision on the sum of the four processes' counts, as the rollout controller
  makes it from Prometheus (``modelflags rollout``);
- **per process**: each process judges its own quarter, and the first to fire rolls the whole
  fleet back at the flag source (what in-process guardrails with an actuator do).

Both are judged on the same simulated traffic (the pooled series is the sum of the four
per-process series: ``Series.__add__`` of ``bench_guardrail_stats``), checked every second.
Printed: the median and 90th percentile time to detect the incident, and the A/A false-rollback
rate (two identical versions) on a staged canary (1/10/50/100% x 10 min) and on a fixed 10%
canary (60 min), with the 5% tolerance and with none (any drop; equal rates are then exactly at
the limit the guarantee covers), and the rate when the candidate is exactly 5% worse with a 5%
tolerance, at alpha 0.05 and 0.01. The pooled rate stays within alpha; per process, any of
four can fire, so up to ``1 - (1 - alpha)**4``, about four times alpha.

The controller reads Prometheus every ``poll_s`` (5 s by default) and Prometheus scrapes every
second or so: its decisions come up to about 6 s after the times printed for "pooled".

Run: ``python benchmarks/bench_fleet.py [--seed N] [--canaries N]`` (about a minute of CPU at
1,000 canaries a row).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from functools import reduce
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_guardrail_stats as harness

from modelflags.rollout.statistics import MeanComparison

PROCESSES = 4
ALPHAS = (0.05, 0.01)
ROWS = (
    ("detect: conversion 5% -> -15%, tol 5%", harness.Binary(0.05, 0.85), harness.FIXED, 0.05),
    ("A/A conversion 5%, tol 5%", harness.Binary(0.05), harness.STAGED, 0.05),
    ("A/A conversion 5%, any drop (tol 0)", harness.Binary(0.05), harness.STAGED, 0.0),
    ("A/A conversion 5%, any drop (tol 0)", harness.Binary(0.05), harness.FIXED, 0.0),
    ("at the limit: conversion -5%, tol 5%", harness.Binary(0.05, 0.95), harness.STAGED, 0.05),
)


def fleet_times(
    metric: harness.Metric,
    shape: harness.Shape,
    canaries: int,
    alpha: float,
    tolerance: float,
    rng: np.random.Generator,
    *,
    chunk: int = 250,
) -> tuple[np.ndarray, np.ndarray]:
    """Fire times of the pooled decision and of the first of the per-process decisions."""
    pooled_parts, each_parts = [], []
    test = MeanComparison("click", tolerance, alpha=alpha, binary=True)
    rate = harness.REQUESTS_PER_S / PROCESSES
    done = 0
    while done < canaries:
        size = min(chunk, canaries - done)
        parts = [
            harness.simulate(metric, shape, size, rng, requests_per_s=rate)
            for _ in range(PROCESSES)
        ]
        pooled = reduce(lambda a, b: a + b, parts)
        pooled_parts.append(harness.fire_times(pooled, test))
        each = np.stack([harness.fire_times(part, test) for part in parts])
        each_parts.append(each.min(axis=0))
        done += size
    return np.concatenate(pooled_parts), np.concatenate(each_parts)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seed", type=int, default=20240614)
    parser.add_argument("--canaries", type=int, default=1000)
    args = parser.parse_args(None if argv is None else list(argv))
    started, cpu = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(args.seed)
    print(
        f"seed {args.seed}; {args.canaries} canaries a row; {harness.REQUESTS_PER_S * 60:,.0f} "
        f"requests/min for the fleet, {PROCESSES} processes of a quarter each; a check a second"
    )
    rows = []
    for label, metric, shape, tolerance in ROWS:
        detect = label.startswith("detect")
        cells = []
        for alpha in ALPHAS:
            pooled, each = fleet_times(metric, shape, args.canaries, alpha, tolerance, rng)
            for times in (pooled, each):
                cells.append(harness.describe(times, detect, shape.seconds))
            if not detect:
                bound = 1 - (1 - alpha) ** PROCESSES
                cells[-1] += f" (<= {bound:.3f})"
        rows.append((label, shape.name, *cells))
        print(f"  {label} ({shape.name}): done at {time.perf_counter() - started:.0f} s")
    print()
    header = " | ".join(
        f"{kind}, alpha {alpha:g}"
        for alpha in ALPHAS
        for kind in ("pooled", f"{PROCESSES} processes")
    )
    print(f"| scenario | canary | {header} |")
    print("|---|---|" + "---|" * (2 * len(ALPHAS)))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("detect: median / 90th percentile time to the rollback, and the share that fired.")
    print("A/A: share of canaries rolled back (target: pooled <= alpha; per process, any of")
    print(f"{PROCESSES} may fire: up to 1 - (1 - alpha)^{PROCESSES}).")
    print(f"total {time.perf_counter() - started:.1f} s, {time.process_time() - cpu:.1f} s of CPU")


if __name__ == "__main__":
    main()
