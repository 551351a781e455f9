"""How a guardrail decision reads: a breach in one line, and the fields of a decision-log action.

The supervisor writes rollbacks, releases and decisions on proposals to an :class:`ActionSink`
(the decision log fits); a breach's evidence goes with them, so the audit trail says not only
who acted and why, but on what statistics.
"""

from __future__ import annotations

import math
from typing import Protocol

from modelflags.telemetry.events import Breach

__all__ = ["ActionSink", "describe", "detail"]


class ActionSink(Protocol):
    """Where rollbacks, releases and decisions on proposals are recorded (the decision log)."""

    def action(
        self,
        action: str,
        model: str,
        version: str | None,
        *,
        by: str,
        reason: str,
        **detail: str | float | int | None,
    ) -> None:
        """Record one action; never blocks, never raises."""


def describe(breach: Breach) -> str:
    """One breach for a log line or a rollback reason: the evidence, or the figures."""
    evidence = breach.evidence
    if evidence is not None:
        return evidence.summary()
    return (
        f"{breach.rule} {breach.observed:.4g} against {breach.threshold:.4g} "
        f"({breach.requests} of {breach.version}, {breach.lkg_requests} of {breach.lkg})"
    )


def detail(breach: Breach | None) -> dict[str, str | float | int | None]:
    """The evidence of ``breach`` as decision-log fields (infinite bounds as ``None``)."""
    if breach is None:
        return {}
    evidence = breach.evidence
    detail: dict[str, str | float | int | None] = {"rule": breach.rule}
    if evidence is None:
        return {**detail, "observed": breach.observed, "threshold": breach.threshold}

    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None

    return {
        **detail,
        "quantity": evidence.quantity,
        "estimate": finite(evidence.estimate),
        "lower": finite(evidence.lower),
        "upper": finite(evidence.upper),
        "limit": evidence.limit,
        "alpha": evidence.alpha,
        "candidate_count": evidence.candidate_count,
        "baseline_count": evidence.baseline_count,
        "method": evidence.method,
    }
