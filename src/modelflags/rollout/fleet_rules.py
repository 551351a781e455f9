"""A model's guardrails table as sequential tests on fleet totals.

The rules are the registry's (:class:`~modelflags.registry.guardrails.GuardrailRules`), judged by
the tests of :mod:`modelflags.rollout.statistics` on the fleet's totals since the rollout started
(:class:`~modelflags.rollout.fleet_totals.VersionTotals`), with the model's ``alpha`` shared
among its rules by :func:`~modelflags.rollout.statistics.split_alpha`:

==========================  ================================================================
rule                        test
==========================  ================================================================
``max_outcome_drop``        :class:`MeanComparison`, ``worse="lower"``, tolerance ``relative``,
                            candidate against baseline; ``binary`` while every value so far
                            was 0 or 1 (both arms' sums of squares equal their sums)
``max_error_rate``          :class:`RateLimit` of errors among the calls the candidate ran
                            (the absolute SLO, sequential)
``max_p95_latency_ms``      :class:`RateLimit` at 5% of the calls surely slower than the limit
                            (those in histogram buckets wholly above it): the p95 is above the
                            limit exactly when more than 5% of calls are
==========================  ================================================================

``min_requests`` stays an extra condition: no breach before the candidate has that many values
(outcome) or calls (the others). Each verdict is an :class:`Evidence`; whether a breach must also
last ``sustained_s`` is the controller's business.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from modelflags.registry.guardrails import GuardrailRules
from modelflags.rollout.evidence import Evidence, Moments
from modelflags.rollout.fleet_totals import VersionTotals
from modelflags.rollout.statistics import (
    AlphaSplit,
    Counts,
    MeanComparison,
    RateLimit,
    split_alpha,
)

__all__ = ["FleetJudge"]

_P95_EXCEEDANCE = 0.05


@dataclass(frozen=True, slots=True)
class FleetJudge:
    """The tests of one model's guardrails on fleet totals. Immutable: safe to share between
    threads (:meth:`evaluate` only reads)."""

    rules: GuardrailRules
    alphas: AlphaSplit

    @classmethod
    def for_rules(cls, rules: GuardrailRules) -> FleetJudge:
        """The judge of ``rules``, with their ``alpha`` shared among the rules present."""
        names = [
            name
            for name in ("max_outcome_drop", "max_error_rate", "max_p95_latency_ms")
            if getattr(rules, name) is not None
        ]
        return cls(rules, split_alpha(rules.alpha, names))

    @property
    def outcome(self) -> str | None:
        """The outcome the rules compare, if any."""
        drop = self.rules.max_outcome_drop
        return None if drop is None else drop.name

    def evaluate(self, candidate: VersionTotals, baseline: VersionTotals) -> list[Evidence]:
        """Every rule's evidence now, in the order of the table."""
        rules, shares = self.rules, self.alphas.shares
        found: list[Evidence] = []
        drop = rules.max_outcome_drop
        if drop is not None:
            mine = candidate.outcome or Moments(0, 0.0, 0.0)
            theirs = baseline.outcome or Moments(0, 0.0, 0.0)
            test = MeanComparison(
                "max_outcome_drop",
                drop.relative,
                alpha=shares["max_outcome_drop"],
                worse="lower",
                binary=_binary(mine) and _binary(theirs),
            )
            evidence = test.evaluate(mine, theirs)
            found.append(self._gate(evidence, mine.count, f"outcome {drop.name!r}"))
        if rules.max_error_rate is not None:
            limit = RateLimit("max_error_rate", rules.max_error_rate, shares["max_error_rate"])
            evidence = limit.evaluate(candidate.calls)
            found.append(self._gate(evidence, candidate.ran, "share of calls that raised"))
        if rules.max_p95_latency_ms is not None:
            limit_s = rules.max_p95_latency_ms / 1000.0
            slow = RateLimit("max_p95_latency_ms", _P95_EXCEEDANCE, shares["max_p95_latency_ms"])
            slower = min(candidate.slower_than(limit_s), candidate.ran)
            evidence = slow.evaluate(Counts(candidate.ran, slower))
            note = f"share of calls slower than {rules.max_p95_latency_ms:g} ms (p95 above it)"
            if not any(bound >= limit_s for bound, _ in candidate.buckets[:-1]):
                note += "; no histogram bucket bound at or above the limit: cannot be judged"
            found.append(self._gate(evidence, candidate.ran, note))
        return found

    def _gate(self, evidence: Evidence, count: int, what: str) -> Evidence:
        """``evidence`` with ``min_requests`` applied and ``what`` it measures in its note."""
        note = "; ".join(part for part in (what, evidence.note) if part)
        if evidence.breached and count < self.rules.min_requests:
            note += f"; waiting for min_requests {self.rules.min_requests} (have {count})"
            return dataclasses.replace(evidence, breached=False, decided=False, note=note)
        return dataclasses.replace(evidence, note=note)


def _binary(sums: Moments) -> bool:
    """True when the sums can only come from 0/1 values: for values in [0, 1] the sum of
    squares equals the sum exactly when each value is 0 or 1."""
    return 0.0 <= sums.total <= sums.count and math.isclose(
        sums.total_sq, sums.total, rel_tol=1e-9, abs_tol=1e-9
    )
