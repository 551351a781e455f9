"""The fleet rollout controller: one process decides a canary for every instance.

::

    controller = RolloutController(
        FlagdFileActuator("flags.json"), PrometheusSource("http://127.0.0.1:9090"),
        model="recommender", flag_key="recommender", candidate="v2", baseline="v1",
        rules=registry.model("recommender").guardrails,
        stages=(1, 10, 50, 100), stage_seconds=300, state_path=Path("rollout.json"),
    )
    result = controller.run()    # RolloutResult(outcome="completed" | "rolled_back" | ...)

Every ``poll_s`` seconds it reads the fleet's raw series from Prometheus
(:mod:`~modelflags.rollout.promql`), adds them to reset-safe totals since the rollout started
(:mod:`~modelflags.rollout.fleet_totals`), runs the model's guardrails as sequential tests on them
(:mod:`~modelflags.rollout.fleet_rules`) and decides:

- **advance** when the stage has lasted ``stage_seconds``, the last read succeeded, no rule
  breaches, every rule has a verdict and the candidate ran ``min_requests`` calls; after the last
  stage, **completed**;
- **hold** otherwise, saying why: Prometheus unreachable, a PromQL error, no series for a version,
  too little evidence, an actuator that failed (then also an ``ALERT`` line). Missing data never
  advances a stage;
- on a breach that lasted ``sustained_s``, what the table's ``action`` says: ``"rollback"`` rolls
  the flag back to the baseline through the actuator; ``"confirm"`` and ``"alert"`` hold the
  split and leave a **proposal** in the state file that ``modelflags rollout --confirm`` (roll
  back) or ``--dismiss`` (go on; the rule is not proposed again) answers
  (:func:`~modelflags.rollout.rollout_state.request_decision`); with ``confirm_timeout_s`` a
  proposal nobody answers follows ``on_timeout``.

Actuator calls are tried ``actuator_attempts`` times, ``retry_s`` apart; when all fail the
controller holds, alerts, and tries again at the next check. Every decision goes to the progress
output and, with its evidence, to the audit file.

**Restarts.** The state (stage, proposal, totals) is written atomically after every check. A
restarted controller resumes from it, writing its stage's split again (the controller may have
died between writing a split and saving the state: the recorded stage is the lower one). Without
a state file it reads the flag's split through the actuator: a split that serves the candidate
means a rollout lost its state, so the flag goes to the largest stage not above that split and a
fresh comparison starts there (the old totals are gone; a new comparison spends ``alpha`` anew);
a split it cannot read is rolled back to the baseline before the rollout starts. Either way it
says so.

Injected: ``clock`` (unix seconds), ``sleep``, ``progress`` (one line at a time). :meth:`stop`
may be called from any other thread; everything else runs on the thread of :meth:`run`.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelflags.errors import MetricsUnavailableError
from modelflags.registry.guardrails import GuardrailRules
from modelflags.rollout.actuators.base import Actuator
from modelflags.rollout.evidence import Evidence
from modelflags.rollout.flag_moves import FlagMoves
from modelflags.rollout.fleet_rules import FleetJudge
from modelflags.rollout.fleet_totals import FleetReader, FleetTotals, VersionTotals
from modelflags.rollout.promql import PrometheusSource
from modelflags.rollout.rollout_state import (
    TERMINAL,
    AuditLog,
    RolloutState,
    evidence_json,
    evidence_line,
    read_decision,
)

__all__ = ["RolloutController", "RolloutResult"]

logger = logging.getLogger(__name__)

Outcome = Literal["completed", "rolled_back", "stopped"]


@dataclass(frozen=True, slots=True)
class RolloutResult:
    """How :meth:`RolloutController.run` ended: ``outcome``, the candidate's share then, why."""

    outcome: Outcome
    percent: int
    reason: str


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class RolloutController:
    """Drives one candidate through stages on fleet evidence (see the module docs).

    Not safe to share between threads, except :meth:`stop`.
    """

    def __init__(
        self,
        actuator: Actuator,
        source: PrometheusSource,
        *,
        model: str,
        flag_key: str,
        candidate: str,
        baseline: str,
        rules: GuardrailRules,
        state_path: Path,
        audit_path: Path | None = None,
        stages: Sequence[int] = (1, 10, 50, 100),
        stage_seconds: float = 300.0,
        poll_s: float = 5.0,
        actuator_attempts: int = 3,
        retry_s: float = 1.0,
        lag_s: float = 30.0,
        max_window_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        progress: Callable[[str], None] = _stdout,
    ) -> None:
        if candidate == baseline:
            raise ValueError(f"candidate and baseline are both {candidate!r}")
        percents = list(stages)
        if not percents or any(
            isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 100 for p in percents
        ):
            raise ValueError(f"stages are percents in 1..100, not {percents!r}")
        if any(b <= a for a, b in itertools.pairwise(percents)):
            raise ValueError(f"stage percents must increase strictly, not {percents!r}")
        if not (stage_seconds >= 0 and poll_s > 0 and actuator_attempts >= 1 and retry_s >= 0):
            raise ValueError("stage_seconds, retry_s >= 0, poll_s > 0 and actuator_attempts >= 1")
        self.actuator = actuator
        self.source = source
        self.model, self.flag_key = model, flag_key
        self.candidate, self.baseline = candidate, baseline
        self.rules = rules
        self.judge = FleetJudge.for_rules(rules)
        self.stages, self.stage_seconds, self.poll_s = percents, float(stage_seconds), poll_s
        self.state_path = state_path
        self.audit = AuditLog(
            audit_path or state_path.with_name(state_path.name + ".audit.jsonl"), clock=clock
        )
        self.actuator_attempts = actuator_attempts
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._wait
        self._progress = progress
        self._reader = FleetReader(
            source, model, (candidate, baseline), self.judge.outcome,
            lag_s=lag_s, max_window_s=max_window_s,
        )  # fmt: skip
        self._start_stage = 0
        self._moves = FlagMoves(
            actuator, flag_key, baseline=baseline, candidate=candidate,
            attempts=actuator_attempts, retry_s=retry_s, sleep=self._sleep,
        )  # fmt: skip

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def stop(self) -> None:
        """Make :meth:`run` return after its current check, leaving the flag and the state as
        they are (a later run resumes). Safe from any thread."""
        self._stop.set()

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> RolloutResult:
        """Run the rollout until it completes, is rolled back, or :meth:`stop` is called."""
        state = self._begin()
        while state.phase not in TERMINAL and not self._stop.is_set():
            self.step(state)
            state.totals = self._reader.totals.to_json()
            state.save(self.state_path)
            if state.phase in TERMINAL or self._stop.is_set():
                break
            self._sleep(self.poll_s)
        if state.phase == "completed":
            return RolloutResult("completed", state.percent, f"{self.candidate} serves 100 %")
        if state.phase == "rolled_back":
            return RolloutResult("rolled_back", 0, f"everyone on {self.baseline}")
        self._say(state, "stopped", "stop() was called; the flag and the state stay as they are")
        return RolloutResult("stopped", state.percent, "stopped")

    def _begin(self) -> RolloutState:
        found = RolloutState.load(self.state_path)
        if found is not None:
            mine = (self.model, self.flag_key, self.candidate, self.baseline)
            theirs = (found.model, found.flag_key, found.candidate, found.baseline)
            if mine != theirs:
                raise ValueError(
                    f"{self.state_path} is the state of another rollout ({theirs[0]} "
                    f"{theirs[3]} -> {theirs[2]} on flag {theirs[1]!r}); pass another --state"
                )
            found.stages = self.stages  # the stages and their length may change on a restart
            found.stage_seconds = self.stage_seconds
            if found.totals is not None:
                self._reader.totals = FleetTotals.from_json(found.totals)
            if found.phase in TERMINAL:
                self._say(found, "finished", f"this rollout is already {found.phase}")
                return found
            self._say(found, "resume", f"resuming from {self.state_path} ({found.phase})")
            if found.stage >= 0 and not self._write_split(found, found.stage):
                self._say(found, "hold", "the stage's split could not be written again")
            return found
        now = self._clock()
        state = RolloutState(
            self.model, self.flag_key, self.candidate, self.baseline,
            self.stages, self.stage_seconds, started_at=now, stage_started_at=now,
        )  # fmt: skip
        self._adopt_split(state)
        return state

    def _adopt_split(self, state: RolloutState) -> None:
        """Without a state file: start from what the flag serves now (see the module docs)."""
        share, problem = self._moves.candidate_share()
        if share is None:
            self._say(state, "start", f"no state file and the flag's split is unknown ({problem})")
            if self._actuate(state, "rollback", self._moves.rollback):
                self._say(state, "rollback", f"flag set to {self.baseline} for everyone first")
        elif share >= 100:
            state.phase = "completed"
            self._say(state, "completed", f"the flag already serves {self.candidate} to everyone")
        elif share > 0:
            stage = max([i for i, p in enumerate(self.stages) if p <= share], default=0)
            self._start_stage = stage  # written after the first read, as a fresh start would
            self._say(
                state,
                "start",
                f"no state file, yet the flag serves {self.candidate} at {share} %: a rollout "
                f"lost its state; going on at the {self.stages[stage]} % stage with a fresh "
                "comparison",
            )
        else:
            self._say(state, "start", f"{self.baseline} -> {self.candidate} at {self.stages} %")

    def step(self, state: RolloutState) -> None:
        """One check: read, judge, decide (public so that tests can drive it check by check)."""
        now = self._clock()
        if state.phase == "starting":
            self._first_read(state, now)
            return
        self._take_decision(state, now)
        if state.phase == "proposed":
            self._expire(state, now)
        if state.phase in TERMINAL:
            return
        if state.stage < 0 and not self._write_split(state, self._start_stage):
            return  # the first split failed: again at every check until it is written
        read = self._read(state, now)
        if read is None:
            return
        candidate, baseline = read
        evidence = self.judge.evaluate(candidate, baseline)
        due = self._breaches(state, evidence, now)
        detail = {
            "evidence": [evidence_json(e) for e in evidence],
            "candidate_totals": candidate.to_json(),
            "baseline_totals": baseline.to_json(),
        }
        summary = "; ".join(evidence_line(e) for e in evidence)
        if state.phase == "proposed":
            self._say(state, "hold", f"waiting for --confirm or --dismiss; {summary}", **detail)
            return
        if due:
            self._breach(state, due, evidence, detail)
            return
        elapsed = now - state.stage_started_at
        if elapsed < self.stage_seconds:
            progress = f"{elapsed:.0f}/{self.stage_seconds:g} s"
            self._say(state, "check", f"{progress}; {summary}", **detail)
            return
        waiting = [e for e in evidence if not e.decided]
        if waiting or candidate.ran < self.rules.min_requests:
            why = ", ".join(f"{e.rule} ({e.note})" for e in waiting) or (
                f"{candidate.ran} of min_requests {self.rules.min_requests} calls"
            )
            self._say(state, "hold", f"stage time is up, but no verdict yet: {why}", **detail)
            return
        self._say(state, "advance", f"{self.stages[state.stage]} % held; {summary}", **detail)
        if state.stage + 1 == len(self.stages):
            state.phase = "completed"
            self._say(state, "completed", f"{self.candidate} serves {state.percent} %")
        else:
            self._write_split(state, state.stage + 1)

    # -- reading --------------------------------------------------------------------------------

    def _first_read(self, state: RolloutState, now: float) -> None:
        try:
            count = self._reader.start()
        except MetricsUnavailableError as exc:
            self._say(state, "hold", f"not starting: {exc} ({exc.reason})", cause=exc.reason)
            return
        state.last_read_at = now
        state.phase = "running"
        self._say(state, "baseline", f"totals start from {count} series")
        self._write_split(state, self._start_stage)

    def _read(self, state: RolloutState, now: float) -> tuple[VersionTotals, VersionTotals] | None:
        try:
            found = self._reader.read(state.last_read_at, now)
        except MetricsUnavailableError as exc:
            if exc.reason != "no_series":
                self._say(state, "hold", f"{exc} ({exc.reason})", cause=exc.reason)
                return None
            state.last_read_at = now
            self._say(state, "hold", str(exc), cause=exc.reason)
            return None
        state.last_read_at = now
        return found[self.candidate], found[self.baseline]

    # -- deciding -------------------------------------------------------------------------------

    def _breaches(self, state: RolloutState, evidence: list[Evidence], now: float) -> list[str]:
        """Rules breaching for ``sustained_s`` now (dismissed ones aside)."""
        breached = {e.rule for e in evidence if e.breached}
        state.breaching = {rule: state.breaching.get(rule, now) for rule in breached}
        return [
            rule
            for rule, since in state.breaching.items()
            if now - since >= self.rules.sustained_s and rule not in state.dismissed
        ]

    def _breach(
        self, state: RolloutState, due: list[str], evidence: list[Evidence], detail: dict[str, Any]
    ) -> None:
        text = "; ".join(e.summary() for e in evidence if e.rule in due)
        action = self.rules.action
        if action == "rollback":
            self._say(state, "breach", text, **detail)
            if self._actuate(state, "rollback", self._moves.rollback):
                state.phase = "rolled_back"
                self._say(state, "rollback", f"everyone on {self.baseline}: {', '.join(due)}")
            return
        timeout = self.rules.confirm_timeout_s if action == "confirm" else None
        now = self._clock()
        state.phase = "proposed"
        state.proposal = {
            "rules": due,
            "action": action,
            "proposed_at": now,
            "expires_at": None if timeout is None else now + timeout,
            "on_timeout": self.rules.on_timeout,
            "evidence": detail["evidence"],
        }
        self._say(
            state,
            "alert" if action == "alert" else "proposal",
            f"ALERT: {text}; holding at {state.percent} % until `modelflags rollout --confirm` "
            "(roll back) or `--dismiss` (go on)",
            **detail,
        )

    def _take_decision(self, state: RolloutState, now: float) -> None:
        try:
            decision = read_decision(self.state_path)
        except ValueError as exc:
            self._say(state, "ignored", str(exc))
            return
        if decision is None:
            return
        who = f"by {decision.by}" + (f": {decision.reason}" if decision.reason else "")
        if state.phase != "proposed" or decision.candidate != self.candidate:
            self._say(state, "ignored", f"{decision.action} {who}: no proposal waits for it")
            return
        self._resolve(state, decision.action, who)

    def _resolve(self, state: RolloutState, action: str, who: str) -> None:
        rules = list((state.proposal or {}).get("rules", []))
        if action == "confirm":
            self._say(state, "confirm", f"rollback confirmed {who}")
            if self._actuate(state, "rollback", self._moves.rollback):
                state.phase, state.proposal = "rolled_back", None
                self._say(state, "rollback", f"everyone on {self.baseline} ({who})")
            return
        state.dismissed = sorted({*state.dismissed, *rules})
        state.phase, state.proposal = "running", None
        self._say(state, "dismiss", f"{', '.join(rules)} dismissed {who}; going on")

    def _expire(self, state: RolloutState, now: float) -> None:
        expires = (state.proposal or {}).get("expires_at")
        if expires is None or now < expires:
            return
        timeout = self.rules.confirm_timeout_s or 0.0
        if (state.proposal or {}).get("on_timeout") == "rollback":
            self._resolve(state, "confirm", f"by timeout: nobody decided within {timeout:g} s")
        else:
            self._resolve(state, "dismiss", f"by timeout: nobody decided within {timeout:g} s")

    # -- acting ---------------------------------------------------------------------------------

    def _write_split(self, state: RolloutState, stage: int) -> bool:
        percent = self.stages[stage]
        if not self._actuate(state, "split", lambda: self._moves.split(percent)):
            return False
        if stage != state.stage:
            state.stage_started_at = self._clock()
        state.stage = stage
        text = f"{self.baseline} {100 - percent} %, {self.candidate} {percent} %"
        self._say(state, "split", text)
        return True

    def _actuate(self, state: RolloutState, what: str, move: Callable[[], str | None]) -> bool:
        """Make ``move``; False (after an ALERT) when every attempt failed."""
        error = move()
        if error is None:
            return True
        self._say(
            state,
            "actuator_failed",
            f"ALERT: {what} of flag {self.flag_key!r} failed {self.actuator_attempts} times "
            f"({error}); holding, will try again at the next check",
            error=error,
        )
        return False

    def _say(self, state: RolloutState, decision: str, reason: str, **detail: Any) -> None:
        elapsed = self._clock() - state.started_at if state.started_at else 0.0
        self._progress(f"[{elapsed:7.1f}s {state.percent:3d}%] {decision}: {reason}")
        self.audit.write(decision, state, reason, **detail)
