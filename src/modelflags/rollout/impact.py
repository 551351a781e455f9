"""Rollback impact: after a rollback, is the breached figure back at the LKG's level?

Rolling back removes the version; it does not prove the version was the cause. After each
rollback that a breach caused, the breached rule is judged again on the version now serving (the
LKG), with the rule's own test (:meth:`Judges.after_rollback
<modelflags.rollout.judges.Judges.after_rollback>`): the LKG's totals since the rollback
("after") against its totals over the comparison that breached ("before", which no longer
grows), or against the absolute limit for an SLO rule:

- the whole confidence interval within the rule's tolerance (the served version is confidently
  no worse than the LKG was, or confidently within the limit): ``RollbackVerified``;
- the whole interval beyond it (the LKG itself is now confidently worse than it was, or beyond
  the limit): ``RollbackIneffective``, the regression persists on the LKG too, so the cause is
  likely infrastructure or data, not the version.

Each verdict has the rule's share of alpha as its error rate, however often it is checked. A
watch still undecided after ten ``window_s`` is dropped with a log line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from modelflags.rollout.judges import Judges
from modelflags.rollout.metrics import Metrics
from modelflags.rollout.statistics import Evidence
from modelflags.rollout.totals import Totals
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
    before: Totals
    start: Totals | None


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

    def watch(self, breach: Breach, served: str, before: Totals | None) -> None:
        """Start watching ``breach.rule`` on ``served`` (the LKG after the rollback);
        ``before`` is its totals over the comparison that breached."""
        start = self._metrics.totals(breach.model, served)
        watch = _Watch(breach, served, self._clock(), before or Totals(), start)
        with self._lock:
            self._watches.append(watch)

    def pending(self, model: str) -> int:
        """How many rollbacks of ``model`` are still being watched."""
        with self._lock:
            return sum(1 for watch in self._watches if watch.breach.model == model)

    def check(self, judges_of: Callable[[str], Judges | None]) -> None:
        """Judge every watch; emit and drop those with a verdict."""
        now = self._clock()
        with self._lock:
            watches = list(self._watches)
        done: list[_Watch] = []
        for watch in watches:
            breach = watch.breach
            judges = judges_of(breach.model)
            if judges is None:
                done.append(watch)
                continue
            after = self._after(watch)
            metric = _metric(breach, judges)
            reading = judges.after_rollback(breach.rule, metric, after, watch.before)
            evidence = None if reading is None else reading.evidence
            verified = evidence is not None and evidence.decided and _within(evidence)
            if evidence is None or not (evidence.breached or verified):
                if now - watch.since >= _PATIENCE_WINDOWS * judges.rules.window_s:
                    logger.info(
                        "model %r: no verdict on the rollback of %r after %.0f s (%s); "
                        "stopped watching",
                        breach.model,
                        breach.version,
                        now - watch.since,
                        "no such rule" if evidence is None else evidence.summary(),
                    )
                    done.append(watch)
                continue
            assert reading is not None
            kind = RollbackVerified if verified else RollbackIneffective
            event = kind(
                breach.model,
                breach.version,
                watch.served,
                breach.rule,
                breach.lkg_observed,
                reading.observed,
                evidence.candidate_count,
                evidence,
            )
            logger.log(
                logging.INFO if verified else logging.ERROR,
                "model %r: after rolling back %r, %s on %r: %s (%s)",
                breach.model,
                breach.version,
                breach.rule,
                watch.served,
                evidence.summary(),
                "back at the LKG's level" if verified else "persists on the LKG: not the version?",
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

    def _after(self, watch: _Watch) -> Totals:
        now = self._metrics.totals(watch.breach.model, watch.served)
        if now is None:
            return Totals()
        start = watch.start
        if start is None or now.requests < start.requests:  # its series started over
            return now
        return now.since(start)


def _within(evidence: Evidence) -> bool:
    """True when the whole interval is on the good side of the limit."""
    if evidence.worse == "higher":
        return evidence.upper <= evidence.limit
    return evidence.lower >= evidence.limit


def _metric(breach: Breach, judges: Judges) -> str | None:
    """The metric of the test that breached (the latency rule has two)."""
    evidence = breach.evidence
    for rule, metric in judges.tests():
        if rule != breach.rule:
            continue
        if evidence is None or rule != "max_latency_increase":
            return metric
        if (metric == "mean") == ("mean" in evidence.quantity):
            return metric
    return None
