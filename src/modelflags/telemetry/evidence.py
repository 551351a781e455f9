"""Evidence: where one guardrail rule stands, as the sequential tests report it.

Defined here, beside the events and status records that carry it (``GuardrailBreached``,
``RuleState``); the tests that produce it live in :mod:`modelflags.rollout.statistics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Evidence"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where one rule stands: the estimate, its confidence interval, and the verdict.

    ``quantity`` says what ``estimate``, ``lower`` and ``upper`` measure, in the rule's own
    units (``"relative change of the mean"``: -0.12 is 12% lower than the baseline). ``lower``
    and ``upper`` are each a one-sided confidence bound at level ``1 - alpha`` that holds at
    every check over the whole comparison (a confidence sequence), so together they cover the
    quantity with probability at least ``1 - 2 alpha``. A side the data cannot bound yet is
    infinite (-1 for a relative change of something that cannot go below zero), and
    ``estimate`` is ``None`` while it is undefined.

    The rule tolerates values up to ``limit`` on its ``worse`` side (``limit`` is ``tolerance``
    with the sign of that side for relative rules, the absolute limit for an SLO). ``breached``
    is true when the whole interval lies beyond it: ``upper < limit`` when lower is worse,
    ``lower > limit`` when higher is worse. While the rule holds, the chance that ``breached``
    is ever true during the comparison is at most ``alpha``, however often it is checked.

    ``decided`` is false while the test has too little data to give a verdict at all (then
    ``breached`` is false and the interval is infinite); ``note`` says why, or adds detail.
    ``method`` names the test and cites it. Immutable: safe to share between threads.
    """

    rule: str
    method: str
    quantity: str
    estimate: float | None
    lower: float
    upper: float
    tolerance: float
    limit: float
    worse: Literal["lower", "higher"]
    alpha: float
    candidate_count: int
    baseline_count: int
    decided: bool
    breached: bool
    note: str = ""

    def summary(self) -> str:
        """One line for a log or a status page."""
        estimate = "n/a" if self.estimate is None else f"{self.estimate:+.4g}"
        verdict = "breach" if self.breached else ("holds" if self.decided else "no verdict")
        text = (
            f"{self.rule}: {self.quantity} {estimate} in [{self.lower:+.4g}, {self.upper:+.4g}] "
            f"(limit {self.limit:+.4g}, {self.worse} is worse; alpha {self.alpha:.3g}; "
            f"{self.candidate_count} vs {self.baseline_count}): {verdict}"
        )
        return f"{text}; {self.note}" if self.note else text
