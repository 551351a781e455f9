"""Sequential tests for guardrails: compare a candidate with the last known good version.

A canary is checked about once a second for as long as it runs, while its share of traffic
changes by stage. A test that compares two window means against a threshold fires on noise, and
checking often multiplies its chances. These tests are *anytime-valid*: each keeps a confidence
sequence, an interval that holds at every check at once, and declares a breach only when the
whole interval lies beyond the rule's tolerance (a 5% drop is tolerated; being confident the
drop exceeds 5% is a breach). While a rule holds, the chance of a breach over the whole
comparison is at most the rule's ``alpha``, however often it is checked and however long.

Which test for which rule:

=========================  ============================  ===================================
rule                       input per arm                 test
=========================  ============================  ===================================
outcome drop, 0/1          :class:`Moments` (binary)     :class:`MeanComparison`, ``binary``
outcome drop, continuous   :class:`Moments`              :class:`MeanComparison`
error rate increase        :class:`Counts`               :class:`RateComparison` (monitor)
latency p95 increase       histogram bucket counts       :class:`QuantileComparison`
latency mean increase      :class:`Moments`              :class:`MeanComparison`, "higher"
error rate SLO             :class:`Counts`               :class:`RateLimit`
latency p95 SLO            histogram bucket counts       :class:`QuantileLimit`
=========================  ============================  ===================================

Each test is an immutable object with ``evaluate(candidate, baseline) -> Evidence`` (the SLO
tests :class:`RateLimit` and :class:`QuantileLimit` take the candidate only), except
:class:`RateComparison`, which needs what happened between checks: its ``start()`` gives a
:class:`RateMonitor` (one per candidate and rule, kept by the check) whose
``update(candidate, baseline) -> Evidence`` takes the same totals. Inputs are running sums
kept per version *since the comparison started* (recording a call is a few additions); do not
restart them at a new stage: the guarantee is for one sequence of checks, and restarting spends
``alpha`` again. The tests assume the metric is stable while the comparison runs: a drift both
versions share (the time of day) biases them when the traffic share changes meanwhile, because
the candidate's sums then weigh the later minutes more than the baseline's do.

:func:`split_alpha` shares a model's ``alpha`` among its rules so that the model as a whole
keeps it. Methods and citations are in the test modules: :mod:`~modelflags.rollout.means`,
:mod:`~modelflags.rollout.rates`, :mod:`~modelflags.rollout.quantiles`, and the boundaries in
:mod:`~modelflags.rollout.sequential`. Their false-alarm rates and detection times are measured
by ``benchmarks/bench_guardrail_stats.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from modelflags.rollout.evidence import Counts, Evidence, Moments, check_alpha
from modelflags.rollout.means import MeanComparison
from modelflags.rollout.quantiles import (
    QuantileComparison,
    QuantileLimit,
    latency_bucket_bounds,
    latency_bucket_index,
)
from modelflags.rollout.rates import RateComparison, RateLimit, RateMonitor

__all__ = [
    "AlphaSplit",
    "Counts",
    "Evidence",
    "MeanComparison",
    "Moments",
    "QuantileComparison",
    "QuantileLimit",
    "RateComparison",
    "RateLimit",
    "RateMonitor",
    "latency_bucket_bounds",
    "latency_bucket_index",
    "split_alpha",
]


@dataclass(frozen=True, slots=True)
class AlphaSplit:
    """A model's false-alarm budget ``total`` shared among its rules (``shares`` by name).

    Immutable: safe to share between threads.
    """

    total: float
    shares: Mapping[str, float]

    def explain(self) -> str:
        """How the budget was shared and why the model keeps it, in one paragraph."""
        parts = ", ".join(f"{rule} {share:.4g}" for rule, share in self.shares.items())
        return (
            f"alpha {self.total:g} shared among {len(self.shares)} rule(s): {parts}. "
            "A false rollback happens when at least one rule breaches while all hold; by the "
            "union bound (Bonferroni) its chance is at most the sum of the shares, which is "
            f"{sum(self.shares.values()):.4g}. Each rule's own chance is at most its share over "
            "the whole comparison, however often it is checked."
        )


def split_alpha(alpha: float, rules: Sequence[str] | Mapping[str, float]) -> AlphaSplit:
    """Share ``alpha`` among ``rules`` so that the model as a whole keeps it.

    ``rules`` lists rule names (equal shares) or maps them to positive weights (shares in
    proportion: give the rule that must detect fastest a larger weight). A false rollback needs
    at least one rule to breach while every rule holds, so by the union bound its probability is
    at most the sum of the shares, ``alpha``. Rules are tested on the same traffic and are
    usually positively dependent, so the model's real rate is lower than that.

    Inside one rule: two tests of which *either* breaches (the p95 and the mean of latency)
    split the rule's share again; two conditions that must *both* hold for a breach (a relative
    and an absolute tolerance) keep it whole (an intersection-union test). Each candidate
    version compared with the baseline is a comparison of its own with the whole ``alpha``.

    Raises ``ValueError`` unless ``0 < alpha < 1`` and the rules are named, unique and weighted
    by positive finite numbers.
    """
    total = check_alpha(alpha)
    if isinstance(rules, str):
        raise ValueError(f"rules must be a sequence of rule names, not the string {rules!r}")
    weights = dict(rules) if isinstance(rules, Mapping) else {}
    if not isinstance(rules, Mapping):
        for rule in rules:
            if rule in weights:
                raise ValueError(f"rule {rule!r} is listed twice")
            weights[rule] = 1.0
    if not weights:
        raise ValueError("there must be at least one rule to share alpha among")
    for rule, weight in weights.items():
        if not isinstance(rule, str) or not rule:
            raise ValueError(f"rule names must be non-empty strings, not {rule!r}")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"rule {rule!r}: weight must be a number, not {weight!r}")
        if not (math.isfinite(weight) and weight > 0.0):
            raise ValueError(f"rule {rule!r}: weight must be positive and finite, not {weight!r}")
    whole = math.fsum(weights.values())
    shares = {rule: total * weight / whole for rule, weight in weights.items()}
    return AlphaSplit(total, MappingProxyType(shares))
