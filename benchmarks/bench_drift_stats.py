"""The drift rule's error rates by simulation: how often PSI exceeds a threshold when nothing
moved (false alarms), and when a feature's mean moved (power), against the chi-squared
approximation of ``modelflags.rollout.population.false_alarm_rate``.

Each trial draws a fresh reference sample of ``N`` rows from a standard normal, summarises it as
registration does (10 quantile bins), then draws ``n`` serving rows, from the same law or with
the mean moved by ``shift`` standard deviations, bins them with the reference's edges, and
computes the PSI. Printed: per (n, N), the share of trials above the 5% point of the law (should
be near 0.05), above 0.1 and above 0.2 (the default rule) with the law's figures beside them, and
the power of the 0.2 rule for shifts of 0.25, 0.5 and 1 standard deviation.

Run: ``python benchmarks/bench_drift_stats.py`` (about 20 seconds).
"""

from __future__ import annotations

import numpy as np

from modelflags.registry.reference import reference_statistics
from modelflags.rollout.population import bin_counts, false_alarm_rate, psi

TRIALS = 2_000
SIZES = ((200, 1_000), (500, 1_000), (500, 5_000), (2_000, 5_000))
SHIFTS = (0.25, 0.5, 1.0)
BINS = 10


def trial_psi(rng: np.random.Generator, rows: int, reference_rows: int, shift: float) -> float:
    reference = reference_statistics(rng.normal(size=(reference_rows, 1))).features["x0"]
    counts, _ = bin_counts(reference, rng.normal(shift, 1.0, rows))
    return psi(reference.shares, counts / counts.sum())


def five_percent_point(rows: int, reference_rows: int) -> float:
    """The threshold the law exceeds with probability 0.05 (bisection on false_alarm_rate)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if false_alarm_rate(middle, BINS, rows, reference_rows) > 0.05:
            low = middle
        else:
            high = middle
    return high


def main() -> None:
    rng = np.random.default_rng(2024)
    print(f"{TRIALS} trials each; PSI over {BINS} quantile bins of a fresh reference sample")
    print("    n      N | > 5% point (law 0.050) | > 0.1 (law)            | > 0.2 (law)")
    for rows, reference_rows in SIZES:
        same = np.array([trial_psi(rng, rows, reference_rows, 0.0) for _ in range(TRIALS)])
        point = five_percent_point(rows, reference_rows)
        cells = [f"{np.mean(same > point):.3f}"]
        for threshold in (0.1, 0.2):
            law = false_alarm_rate(threshold, BINS, rows, reference_rows)
            cells.append(f"{np.mean(same > threshold):.4f} ({law:.1e})")
        print(f"{rows:5d} {reference_rows:6d} | {cells[0]:<22} | {cells[1]:<22} | {cells[2]}")
    print("power of max_feature_psi = 0.2 (share of trials above it):")
    for rows, reference_rows in SIZES:
        powers = []
        for shift in SHIFTS:
            moved = [trial_psi(rng, rows, reference_rows, shift) for _ in range(TRIALS // 2)]
            powers.append(f"shift {shift:g} sd: {np.mean(np.array(moved) > 0.2):.3f}")
        print(f"  n={rows:5d} N={reference_rows:6d}  " + "   ".join(powers))


if __name__ == "__main__":
    main()
