"""Guardrail statistics end to end: the package's own ``Guardrails`` on simulated traffic.

``bench_guardrail_stats.py`` measures each sequential test alone, with numpy replicas checked
against the tests. This benchmark runs what a model actually gets: a guardrails table parsed into
:class:`~modelflags.registry.guardrails.GuardrailRules`, its alpha split among the rules, the
judges, the error-rate monitor kept per candidate, the breach logic of
:class:`~modelflags.rollout.guardrails.Guardrails`, checked every second of a fake clock. The
traffic is the same simulation (per-second counts drawn directly), served to ``Guardrails``
through :class:`SeriesMetrics`, which answers ``Metrics.comparison`` from the simulated running
totals instead of recording every call (a million calls a canary would take minutes).

Printed:

- equivalence: for a model with one rule (click drop, error-rate increase, p95 increase),
  ``Guardrails`` fires at exactly the second the replica of ``bench_guardrail_stats`` says, on
  every canary simulated (so that benchmark's table is what the package does);
- a model with three rules sharing alpha 0.05 (click drop 5%, error-rate increase 50%, p95
  increase 10%; each metric simulated independently): the A/A false-rollback rate on the staged
  canary, and the time to detect a 15% drop of a 5% conversion rate on a fixed 10% canary (the
  rules' alpha shares are a third of a single rule's, which costs some speed).

Run: ``python benchmarks/bench_guardrails_end_to_end.py [--seed N] [--canaries N]`` (a few
minutes: every check of every rule runs the package's code).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import numpy as np
from bench_guardrail_stats import (
    FIXED,
    LATENCY,
    STAGED,
    Binary,
    Latency,
    Series,
    Shape,
    describe,
    errors,
    fire_times,
    p95,
    simulate,
)

from modelflags.registry.guardrails import GuardrailRules
from modelflags.rollout.guardrails import Guardrails
from modelflags.rollout.statistics import MeanComparison, Moments
from modelflags.rollout.totals import OutcomeTotals, Totals

CLICK = {"name": "click", "relative": 0.05, "kind": "binary"}
ERRORS = {"relative": 0.5}
P95 = {"relative": 0.1, "quantile": 0.95}


class SeriesMetrics:
    """What ``Guardrails`` reads of ``Metrics`` (``window_s`` and ``comparison``), answered
    from one canary of simulated series at the current ``second``: the candidate's and the
    baseline's running totals since the start. Used by one thread."""

    window_s = 60.0

    def __init__(self, series: Mapping[str, Series], canary: int) -> None:
        self.series = series
        self.canary = canary
        self.second = 0
        latency = series.get("latency")
        self.cells = (
            latency.metric.cells()
            if latency is not None and isinstance(latency.metric, Latency)
            else None
        )

    def now(self) -> float:
        """The fake clock: a check at the end of the current second."""
        return self.second + 1.0

    def comparison(self, model: str, candidate: str, baseline: str) -> tuple[Totals, Totals]:
        return self._totals("c"), self._totals("b")

    def _totals(self, arm: str) -> Totals:
        canary, second = self.canary, self.second
        requests = errors = 0
        outcomes: dict[str, OutcomeTotals] = {}
        latency: dict[int, int] = {}

        def sums(name: str) -> dict[str, np.ndarray]:
            series = self.series[name]
            return series.candidate if arm == "c" else series.baseline

        if "errors" in self.series:
            requests = int(sums("errors")["n"][canary, second])
            errors = int(sums("errors")["x"][canary, second])
        if "click" in self.series:
            held = sums("click")
            clicks = Moments.binary(int(held["n"][canary, second]), int(held["x"][canary, second]))
            outcomes["click"] = OutcomeTotals(clicks, binary=True)
        if self.cells is not None:
            counts = sums("latency")["cells"][canary, second]
            latency = {int(i): int(k) for i, k in zip(self.cells, counts, strict=True) if k}
            requests = requests or sum(latency.values())
        return Totals(
            requests=requests,
            errors=errors,
            latency=MappingProxyType(latency),
            outcomes=MappingProxyType(outcomes),
        )


def guardrail_fire_times(
    rules: GuardrailRules, series: Mapping[str, Series], canaries: int
) -> np.ndarray:
    """When ``Guardrails`` with ``rules`` first fires on each canary (seconds; ``inf``: never),
    checked at the end of every simulated second."""
    seconds = next(iter(series.values())).seconds
    fired = np.full(canaries, np.inf)
    for canary in range(canaries):
        metrics = SeriesMetrics(series, canary)
        guardrails = Guardrails(
            {"m": rules},
            metrics,  # type: ignore[arg-type]
            clock=metrics.now,
        )
        for second in range(seconds):
            metrics.second = second
            if guardrails.check("m", "v1", ["v2"]):
                fired[canary] = second + 1.0
                break
    return fired


def check_equivalence(canaries: int, rng: np.random.Generator) -> list[str]:
    """A one-rule model fires when the replica of its test does, on every canary."""
    lines = []
    cases = [
        ("click drop 5%", Binary(0.05, 0.85), "click", {"max_outcome_drop": CLICK}),
        ("error increase 50%", Binary(0.001, 3.0), "errors", {"max_error_rate_increase": ERRORS}),
        ("p95 increase 10%", Latency(effect=1.2), "latency", {"max_latency_increase": P95}),
    ]
    tests = {
        "click": MeanComparison("click", 0.05, alpha=0.05, binary=True),
        "errors": errors(0.5)(0.05),
        "latency": p95(0.05),
    }
    for label, metric, name, table in cases:
        begun = time.perf_counter()
        shape = Shape("fixed 10% x 30 min", ((0.10, 1800),))
        series = simulate(metric, shape, canaries, rng)
        expected = fire_times(series, tests[name])
        got = guardrail_fire_times(GuardrailRules(alpha=0.05, **table), {name: series}, canaries)
        same = np.array_equal(expected, got)
        assert same, (label, expected, got)
        lines.append(
            f"  {label}: Guardrails = replica on {canaries}/{canaries} canaries "
            f"({np.isfinite(got).sum()} fired; {time.perf_counter() - begun:.0f} s)"
        )
    return lines


def three_rules(series_of: Mapping[str, Series], canaries: int) -> np.ndarray:
    rules = GuardrailRules(
        max_outcome_drop=CLICK,
        max_error_rate_increase=ERRORS,
        max_latency_increase=P95,
        alpha=0.05,
    )
    return guardrail_fire_times(rules, series_of, canaries)


def model_series(
    shape: Shape, canaries: int, rng: np.random.Generator, conversion_effect: float
) -> dict[str, Series]:
    """Independent series of the three metrics of one model's canaries."""
    return {
        "click": simulate(Binary(0.05, conversion_effect), shape, canaries, rng),
        "errors": simulate(Binary(0.001), shape, canaries, rng),
        "latency": simulate(LATENCY, shape, canaries, rng),
    }


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=20240614)
    parser.add_argument("--canaries", type=int, default=200)
    parser.add_argument("--equivalence", type=int, default=20, help="canaries per rule")
    args = parser.parse_args(None if argv is None else list(argv))
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(f"seed {args.seed}; the package's Guardrails checked every simulated second")
    print("equivalence with bench_guardrail_stats' replicas (one-rule models, alpha 0.05):")
    for line in check_equivalence(args.equivalence, rng):
        print(line)
    rows = []
    for label, shape, effect, detect in (
        ("A/A, three rules sharing alpha 0.05", STAGED, 1.0, False),
        ("detect: conversion 5% -> -15%, three rules sharing alpha 0.05", FIXED, 0.85, True),
    ):
        begun = time.perf_counter()
        times = three_rules(model_series(shape, args.canaries, rng, effect), args.canaries)
        rows.append((label, shape.name, describe(times, detect, shape.seconds)))
        print(f"  {label}: {time.perf_counter() - begun:.0f} s")
    print()
    print("| scenario (Guardrails end to end) | canary | result |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        "rules: max_outcome_drop click 5% (binary), max_error_rate_increase 50% (0.1% errors), "
        f"max_latency_increase p95 10% (lognormal, p95 {LATENCY.p95_s * 1e3:.1f} ms); "
        f"{args.canaries} canaries a row"
    )
    print("A/A: share of canaries with a rollback (target <= 0.05); detect: median / 90th pct.")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
