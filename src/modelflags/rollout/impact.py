"""Rollback impact: after a rollback, is the breached figure back at the LKG's level?

Rolling back removes the version; it does not prove the version was the cause. After each
rollback that a breach caused, the breached rule's figure is watched on the version now serving
(the LKG). Once a whole window of traffic has passed since the rollback (so the window holds only
post-rollback calls) with at least ``min_requests`` calls, the figure is judged against the same
rule: within it, ``RollbackVerified``; still beyond it, ``RollbackIneffective`` (the regression
persists on the LKG too, so the cause is likely infrastructure or data). A watch that sees too
little traffic for ten windows is dropped with a log line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from modelflags.registry.guardrails import GuardrailRules
from modelflags.rollout.metrics import Metrics, VersionMetrics
from modelflags.telemetry.events import (
    Breach,
    Event,
    RollbackIneffective,
    RollbackVerified,
)

__all__ = ["ImpactWatch"]

logger = logging.getLogger(__name__)

_PATIENCE_WINDOWS = 10


@dataclass(frozen=True, slots=True)
class _Watch:
    breach: Breach
    served: str
    since: float


class ImpactWatch:
    """Watches the rule that caused each rollback on the version serving afterwards.

    Safe to share between threads; :meth:`check` runs on the supervisor's thread.
    """

    def __init__(
        self, metrics: Metrics, emit: Callable[[Event], None], clock: Callable[[], float]
    ) -> None:
        self._metrics = metrics
        self._emit = emit
        self._clock = clock
        self._lock = threading.Lock()
        self._watches: list[_Watch] = []

    def watch(self, breach: Breach, served: str) -> None:
        """Start watching ``breach.rule`` on ``served`` (the LKG after the rollback)."""
        with self._lock:
            self._watches.append(_Watch(breach, served, self._clock()))

    def check(self, rules_of: Callable[[str], GuardrailRules | None]) -> None:
        """Judge every watch whose post-rollback window is complete."""
        now = self._clock()
        with self._lock:
            watches = list(self._watches)
        done: list[_Watch] = []
        for watch in watches:
            breach = watch.breach
            rules = rules_of(breach.model)
            if rules is None:
                done.append(watch)
                continue
            if now - watch.since < rules.window_s:
                continue
            figures = self._metrics.snapshot(breach.model, window_s=rules.window_s)
            current = figures.get(watch.served)
            reading = _figure(breach, rules, current)
            if reading is None:
                if now - watch.since >= _PATIENCE_WINDOWS * rules.window_s:
                    logger.info(
                        "model %r: too little traffic on %r to judge the rollback of %r; "
                        "stopped watching",
                        breach.model,
                        watch.served,
                        breach.version,
                    )
                    done.append(watch)
                continue
            after, within, requests = reading
            kind = RollbackVerified if within else RollbackIneffective
            event = kind(
                breach.model,
                breach.version,
                watch.served,
                breach.rule,
                breach.lkg_observed,
                after,
                requests,
            )
            level = logging.INFO if within else logging.ERROR
            logger.log(
                level,
                "model %r: after rolling back %r, %s on %r is %.4g (%s)",
                breach.model,
                breach.version,
                breach.rule,
                watch.served,
                after,
                "back at the LKG's level" if within else "still beyond the rule: not the version?",
            )
            self._emit(event)
            done.append(watch)
        if done:
            with self._lock:
                self._watches = [w for w in self._watches if w not in done]

    def forget(self, model: str) -> None:
        """Stop watching rollbacks of ``model``."""
        with self._lock:
            self._watches = [w for w in self._watches if w.breach.model != model]


def _figure(
    breach: Breach, rules: GuardrailRules, current: VersionMetrics | None
) -> tuple[float, bool, int] | None:
    """The served version's figure for the breached rule, whether it is within the rule, and
    the calls behind it; ``None`` with too little traffic."""
    if current is None or current.ran < rules.min_requests:
        return None
    if breach.rule == "max_error_rate" and rules.max_error_rate is not None:
        return current.error_rate, current.error_rate <= rules.max_error_rate, current.ran
    if breach.rule == "max_p95_latency_ms" and rules.max_p95_latency_ms is not None:
        if current.latency_p95 is None:
            return None
        p95_ms = current.latency_p95 * 1000.0
        return p95_ms, p95_ms <= rules.max_p95_latency_ms, current.ran
    drop = rules.max_outcome_drop
    if breach.rule == "max_outcome_drop" and drop is not None and breach.lkg_observed is not None:
        outcome = current.outcomes.get(drop.name)
        if outcome is None or outcome.count < rules.min_requests:
            return None
        lowest = breach.lkg_observed - drop.relative * abs(breach.lkg_observed)
        return outcome.mean, outcome.mean >= lowest, outcome.count
    return None
