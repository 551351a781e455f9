"""Judges: the sequential test behind each guardrail rule, and what it reads of the totals.

A model's rules (:class:`~modelflags.registry.guardrails.GuardrailRules`) become tests of
:mod:`modelflags.rollout.statistics`, each with a share of the model's ``alpha``
(:func:`~modelflags.rollout.statistics.split_alpha`, equal shares), so the chance that a version
as good as its rules ask is rolled back, over a whole comparison however often it is checked, is
at most ``alpha`` for the model as a whole:

======================================  ===================================================
rule                                    test (on totals since the comparison started)
======================================  ===================================================
``max_outcome_drop``                    :class:`MeanComparison`, binary or continuous
``max_error_rate_increase``             :class:`RateComparison` (one monitor a comparison)
``max_latency_increase``                :class:`QuantileComparison` and/or
                                        :class:`MeanComparison` ("higher"), sharing the share
``max_error_rate`` (SLO)                :class:`RateLimit`
``max_p95_latency_ms`` (SLO)            :class:`QuantileLimit` (in milliseconds)
======================================  ===================================================

An outcome's ``kind`` chooses the mean test: ``"binary"`` for 0/1 values, ``"continuous"``
otherwise; without it the outcome is binary while every value either version recorded is 0 or
1. :class:`Judges` holds one model's tests (immutable); :class:`Panel` judges one candidate
against one baseline (it holds the error-rate monitor, so a new baseline needs a new panel).
:meth:`Judges.after_rollback` judges the same rule on a baseline that no longer grows: the
rollback-impact check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from modelflags.registry.guardrails import GuardrailRules, Rule
from modelflags.rollout.quantiles import latency_bucket_bounds
from modelflags.rollout.statistics import (
    Evidence,
    MeanComparison,
    Moments,
    QuantileComparison,
    QuantileLimit,
    RateComparison,
    RateLimit,
    RateMonitor,
    split_alpha,
)
from modelflags.rollout.totals import Totals

__all__ = ["Judges", "Panel", "Reading"]

_NO_VALUES = Moments(0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Reading:
    """One test's verdict at a check, with the figures a person reads.

    ``evidence`` is the test's (in its own units); ``observed``, ``threshold`` and
    ``lkg_observed`` are the candidate's figure, the figure it may not pass, and the LKG's, in
    the rule's natural units (error rate, milliseconds, outcome mean); ``None`` while undefined.
    ``metric`` names what the rule watches (an outcome, ``"p95"``, ``"mean"``). ``comparative``
    rules compare with the LKG; the others are absolute limits.
    """

    rule: Rule
    metric: str | None
    evidence: Evidence
    observed: float | None
    threshold: float | None
    lkg_observed: float | None
    comparative: bool

    @property
    def key(self) -> tuple[Rule, str | None]:
        """The rule and metric: one test of a rule."""
        return self.rule, self.metric


def _ms(index: int) -> tuple[float, float]:
    low, high = latency_bucket_bounds(index)
    return low * 1e3, high * 1e3


class Judges:
    """The tests of one model's rules, with its alpha shared among them.

    Immutable: safe to share between threads (a :class:`Panel` is not).
    """

    def __init__(self, rules: GuardrailRules) -> None:
        self.rules = rules
        self.split = split_alpha(rules.alpha, rules.rules())
        share = self.split.shares
        self.error_limit: RateLimit | None = None
        self.latency_limit: QuantileLimit | None = None
        self.drop_binary: MeanComparison | None = None
        self.drop_continuous: MeanComparison | None = None
        self.error_increase: RateComparison | None = None
        self.latency_quantile: QuantileComparison | None = None
        self.latency_mean: MeanComparison | None = None
        if rules.max_error_rate is not None:
            self.error_limit = RateLimit(
                "max_error_rate", rules.max_error_rate, share["max_error_rate"]
            )
        if rules.max_p95_latency_ms is not None:
            self.latency_limit = QuantileLimit(
                "max_p95_latency_ms",
                rules.max_p95_latency_ms,
                share["max_p95_latency_ms"],
                0.95,
                _ms,
            )
        drop = rules.max_outcome_drop
        if drop is not None:
            alpha = share["max_outcome_drop"]
            self.drop_binary = MeanComparison(
                "max_outcome_drop", drop.relative, alpha, "lower", binary=True
            )
            self.drop_continuous = MeanComparison("max_outcome_drop", drop.relative, alpha)
        increase = rules.max_error_rate_increase
        if increase is not None:
            self.error_increase = RateComparison(
                "max_error_rate_increase",
                share["max_error_rate_increase"],
                increase.relative,
                increase.absolute,
            )
        latency = rules.max_latency_increase
        if latency is not None:
            parts = ["quantile"] if latency.quantile is not None else []
            parts += ["mean"] if latency.mean else []
            # Either test breaching breaches the rule: they share its alpha.
            inner = split_alpha(share["max_latency_increase"], parts).shares
            if latency.quantile is not None:
                self.latency_quantile = QuantileComparison(
                    "max_latency_increase", latency.relative, inner["quantile"], latency.quantile
                )
            if latency.mean:
                self.latency_mean = MeanComparison(
                    "max_latency_increase", latency.relative, inner["mean"], "higher"
                )

    def panel(self) -> Panel:
        """A fresh judging of one candidate against one baseline."""
        return Panel(self)

    def after_rollback(
        self, rule: Rule, metric: str | None, after: Totals, before: Totals
    ) -> Reading | None:
        """``rule``'s test of the served version's totals since a rollback (``after``) against
        its totals over the comparison that breached (``before``, which no longer grows).

        Absolute rules judge ``after`` alone against their limit. The error-rate increase uses
        each arm's own confidence sequence (:meth:`RateComparison.evaluate_apart`), since a
        monitor learns nothing from a baseline that no longer runs. ``None`` when the model has
        no such rule.
        """
        if rule == "max_error_rate_increase":
            test = self.error_increase
            if test is None:
                return None
            evidence = test.evaluate_apart(after.errors_counts, before.errors_counts)
            return self._error_increase(evidence, after, before)
        return self.read(rule, metric, after, before)

    def read(
        self,
        rule: Rule,
        metric: str | None,
        candidate: Totals,
        baseline: Totals,
        monitor: RateMonitor | None = None,
    ) -> Reading | None:
        """One test's reading of the two versions' totals since the comparison started
        (``None`` when the model has no such test; the error-rate increase needs the
        comparison's ``monitor``)."""
        if rule == "max_error_rate" and self.error_limit is not None:
            evidence = self.error_limit.evaluate(candidate.errors_counts)
            return Reading(
                rule,
                None,
                evidence,
                candidate.errors_counts.rate,
                self.error_limit.limit,
                baseline.errors_counts.rate,
                comparative=False,
            )
        if rule == "max_p95_latency_ms" and self.latency_limit is not None:
            evidence = self.latency_limit.evaluate(candidate.latency)
            return Reading(
                rule,
                "p95",
                evidence,
                evidence.estimate,
                self.latency_limit.limit,
                _quantile_ms(baseline.latency, 0.95),
                comparative=False,
            )
        if rule == "max_outcome_drop" and self.rules.max_outcome_drop is not None:
            return self._drop(candidate, baseline)
        if rule == "max_error_rate_increase" and monitor is not None:
            evidence = monitor.update(
                candidate.errors_counts, baseline.alongside or baseline.errors_counts
            )
            return self._error_increase(evidence, candidate, baseline)
        if rule == "max_latency_increase":
            return self._latency(metric, candidate, baseline)
        return None

    def _error_increase(self, evidence: Evidence, candidate: Totals, baseline: Totals) -> Reading:
        increase = self.rules.max_error_rate_increase
        assert increase is not None
        rate_c, rate_b = candidate.errors_counts.rate, baseline.errors_counts.rate
        threshold = None
        if rate_b is not None:
            # With both tolerances a breach needs both excesses: the higher figure.
            threshold = max(
                rate_b * (1.0 + (increase.relative or 0.0)), rate_b + (increase.absolute or 0.0)
            )
        return Reading(
            "max_error_rate_increase", None, evidence, rate_c, threshold, rate_b, comparative=True
        )

    def _drop(self, candidate: Totals, baseline: Totals) -> Reading:
        drop = self.rules.max_outcome_drop
        assert drop is not None and self.drop_binary is not None
        assert self.drop_continuous is not None
        mine = candidate.outcomes.get(drop.name)
        theirs = baseline.outcomes.get(drop.name)
        sums_c = _NO_VALUES if mine is None else mine.moments
        sums_b = _NO_VALUES if theirs is None else theirs.moments
        binary = drop.kind == "binary" or (
            drop.kind is None
            and (mine is None or mine.binary)
            and (theirs is None or theirs.binary)
        )
        test = self.drop_binary if binary else self.drop_continuous
        evidence = test.evaluate(sums_c, sums_b)
        mean_b = sums_b.mean
        return Reading(
            "max_outcome_drop",
            drop.name,
            evidence,
            sums_c.mean,
            None if mean_b is None else mean_b - drop.relative * abs(mean_b),
            mean_b,
            comparative=True,
        )

    def _latency(self, metric: str | None, candidate: Totals, baseline: Totals) -> Reading | None:
        latency = self.rules.max_latency_increase
        if latency is None:
            return None
        grow = 1.0 + latency.relative
        if metric == "mean" and self.latency_mean is not None:
            sums_c, sums_b = candidate.latency_moments, baseline.latency_moments
            evidence = self.latency_mean.evaluate(sums_c, sums_b)
            mean_c, mean_b = sums_c.mean, sums_b.mean
            return Reading(
                "max_latency_increase",
                "mean",
                evidence,
                None if mean_c is None else mean_c * 1e3,
                None if mean_b is None else mean_b * 1e3 * grow,
                None if mean_b is None else mean_b * 1e3,
                comparative=True,
            )
        if metric != "mean" and self.latency_quantile is not None:
            q = self.latency_quantile.quantile
            evidence = self.latency_quantile.evaluate(candidate.latency, baseline.latency)
            figure_b = _quantile_ms(baseline.latency, q)
            return Reading(
                "max_latency_increase",
                _quantile_name(q),
                evidence,
                _quantile_ms(candidate.latency, q),
                None if figure_b is None else figure_b * grow,
                figure_b,
                comparative=True,
            )
        return None

    def tests(self) -> list[tuple[Rule, str | None]]:
        """Every (rule, metric) this model judges, in :data:`RULES` order."""
        found: list[tuple[Rule, str | None]] = []
        rules = self.rules
        if self.error_limit is not None:
            found.append(("max_error_rate", None))
        if self.latency_limit is not None:
            found.append(("max_p95_latency_ms", "p95"))
        if rules.max_outcome_drop is not None:
            found.append(("max_outcome_drop", rules.max_outcome_drop.name))
        if self.error_increase is not None:
            found.append(("max_error_rate_increase", None))
        if self.latency_quantile is not None:
            found.append(("max_latency_increase", _quantile_name(self.latency_quantile.quantile)))
        if self.latency_mean is not None:
            found.append(("max_latency_increase", "mean"))
        return found


class Panel:
    """The judging of one candidate against one baseline since their comparison started.

    Holds the error-rate monitor; feed it totals that only grow. Not safe to share between
    threads: the guardrails' lock serialises its use.
    """

    __slots__ = ("_judges", "_monitor")

    def __init__(self, judges: Judges) -> None:
        self._judges = judges
        test = judges.error_increase
        self._monitor = None if test is None else test.start()

    def judge(self, candidate: Totals, baseline: Totals) -> list[Reading]:
        """Every test's reading now, from both versions' totals since the comparison started.

        Totals that went down (a version's metrics were reset) start the error-rate comparison
        over, as a new comparison.
        """
        judges = self._judges
        readings = []
        for rule, metric in judges.tests():
            monitor = self._monitor
            if rule == "max_error_rate_increase" and monitor is not None:
                try:
                    reading = judges.read(rule, metric, candidate, baseline, monitor)
                except ValueError:
                    self._monitor = monitor = monitor.comparison.start()
                    reading = judges.read(rule, metric, candidate, baseline, monitor)
            else:
                reading = judges.read(rule, metric, candidate, baseline)
            if reading is not None:
                readings.append(reading)
        return readings


def _quantile_name(q: float) -> str:
    return f"p{100 * q:g}"


def _quantile_ms(counts: Mapping[int, int], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of bucket counts, at its bucket's geometric middle (ms)."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            low, high = _ms(index)
            return math.sqrt(low * high) if low > 0.0 else high
    return None  # pragma: no cover - the rank is reached above
