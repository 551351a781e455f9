"""The canary driver: move a flag from a baseline to a candidate version in stages.

::

    driver = CanaryDriver(
        FlagdFileActuator("flags.json"),
        flag_key="recommender",
        baseline="v1",
        candidate="v2",
        stages=(1, 10, 50, 100),     # percent of users on the candidate
        stage_seconds=300,
        check=lambda: breaches_of("recommender", "v2"),
    )
    result = driver.run()            # CanaryResult(outcome="completed" | "rolled_back" | "failed")

At each stage the actuator writes the split ``{baseline: 100 - p, candidate: p}``; then, for the
stage's seconds, ``check()`` is called every ``poll_s`` seconds. It returns the guardrail breaches
of the candidate seen now: an empty sequence means healthy, and any item is a breach (its ``rule``
attribute, when it has one, names it in the timeline). The first breach rolls the flag back to the
baseline for everyone and ends the canary. Nothing raises out of :meth:`CanaryDriver.run`: an
actuator or ``check()`` failure is recorded, the rollback is tried once, and the outcome is
``"failed"``.

Timeline events, in :class:`CanaryStep`: ``start``, ``split`` (a stage's split was written),
``healthy`` (a stage passed), ``breach``, ``stopped``, ``error``, ``rolled_back``,
``rollback_failed``, ``completed``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from modelflags.rollout.actuators import Actuator
from modelflags.telemetry.events import Breach

__all__ = [
    "CanaryDriver",
    "CanaryOutcome",
    "CanaryResult",
    "CanaryStep",
    "Stage",
    "guarded_canary",
]

logger = logging.getLogger(__name__)

CanaryOutcome = Literal["completed", "rolled_back", "failed"]


@dataclass(frozen=True)
class Stage:
    """Serve the candidate to ``percent`` of users (1..100) for ``seconds`` while healthy."""

    percent: int
    seconds: float

    def __post_init__(self) -> None:
        percent = self.percent
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
            raise ValueError(f"a stage's percent must be an integer in 1..100, got {percent!r}")
        if not self.seconds >= 0:
            raise ValueError(f"a stage's seconds must be >= 0, got {self.seconds!r}")


@dataclass(frozen=True)
class CanaryStep:
    """One entry of a canary's timeline.

    ``time`` is seconds since :meth:`CanaryDriver.run` started (by the driver's clock);
    ``percent`` is the candidate's share at that moment (0 after a rollback).
    """

    time: float
    percent: int
    event: str
    detail: str = ""


@dataclass(frozen=True)
class CanaryResult:
    """How a canary ended.

    ``stages_reached`` lists the percents whose split was written, in order. ``breach`` is the
    first breach that fired (or None); ``error`` the first actuator or ``check()`` failure (or
    None); ``timeline`` every step.
    """

    outcome: CanaryOutcome
    stages_reached: tuple[int, ...]
    breach: object | None
    error: Exception | None
    timeline: tuple[CanaryStep, ...]

    @property
    def percent(self) -> int:
        """The highest share the candidate reached (0 if no split was written)."""
        return self.stages_reached[-1] if self.stages_reached else 0


class CanaryDriver:
    """Moves ``flag_key`` from ``baseline`` to ``candidate`` through ``stages`` via ``actuator``.

    ``stages`` are :class:`Stage` objects, or plain percents that last ``stage_seconds`` each,
    strictly increasing. ``clock`` and ``sleep`` are injectable (tests move a fake clock). With
    the default ``sleep``, :meth:`stop` interrupts a wait at once; an injected ``sleep`` is called
    as given and a stop is seen when it returns. ``on_step`` receives each :class:`CanaryStep` as
    it happens, on the thread of :meth:`run`; if it raises, the error is logged and ignored.
    ``hold``, when given, makes a context manager that :meth:`run` stays inside from start to end,
    however the run ends (an interrupt included).

    Thread safety: :meth:`run` is called once, on one thread, and blocks until the canary ends;
    :meth:`stop` may be called from any thread, any time.
    """

    def __init__(
        self,
        actuator: Actuator,
        *,
        flag_key: str,
        baseline: str,
        candidate: str,
        stages: Sequence[Stage] | Sequence[int] = (1, 10, 50, 100),
        stage_seconds: float = 60.0,
        check: Callable[[], Sequence[object]],
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_step: Callable[[CanaryStep], None] | None = None,
        hold: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        if baseline == candidate:
            raise ValueError(f"baseline and candidate are both {baseline!r}")
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s!r}")
        self.actuator = actuator
        self.flag_key = flag_key
        self.baseline = baseline
        self.candidate = candidate
        self.stages = _stages(stages, stage_seconds)
        self.poll_s = poll_s
        self._check = check
        self._clock = clock
        self._sleep = sleep
        self._on_step = on_step
        self._hold = hold
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._t0 = 0.0
        self._timeline: list[CanaryStep] = []
        self._reached: list[int] = []

    def __repr__(self) -> str:
        percents = ", ".join(str(stage.percent) for stage in self.stages)
        return (
            f"CanaryDriver({self.flag_key!r}: {self.baseline} -> {self.candidate} "
            f"at {percents} %, via {self.actuator!r})"
        )

    def stop(self) -> None:
        """End the canary: a running :meth:`run` rolls back to the baseline and returns.

        Called before :meth:`run`, it makes ``run`` roll back at once. Safe from any thread.
        """
        self._stop.set()

    def run(self) -> CanaryResult:
        """Run the canary to its end and return how it ended; never raises for actuator trouble.

        Raises ``RuntimeError`` when called a second time (a driver runs once). An interrupt
        (``KeyboardInterrupt``, ``SystemExit``) during the run tries the rollback once, then
        propagates.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("a CanaryDriver runs once; make a new one")
            self._started = True
        try:
            with self._hold() if self._hold is not None else contextlib.nullcontext():
                return self._run()
        except BaseException:
            logger.warning(
                "canary of %r interrupted; rolling back to %r", self.flag_key, self.baseline
            )
            try:
                self.actuator.rollback(
                    self.flag_key, to_version=self.baseline, from_version=self.candidate
                )
            except Exception as exc:
                logger.error(
                    "canary of %r: rollback after interrupt failed: %s", self.flag_key, exc
                )
            raise

    # -- internals ------------------------------------------------------------------------------

    def _run(self) -> CanaryResult:
        self._t0 = self._clock()
        percents = ", ".join(str(stage.percent) for stage in self.stages)
        self._record(0, "start", f"{self.baseline} -> {self.candidate} at {percents} %")
        percent = 0
        for stage in self.stages:
            if self._stop.is_set():
                self._record(percent, "stopped", "stop() was called")
                return self._roll_back(percent)
            split = {self.baseline: 100 - stage.percent, self.candidate: stage.percent}
            try:
                self.actuator.set_split(self.flag_key, split)
            except Exception as exc:
                self._record(percent, "error", f"set_split {split}: {exc}")
                return self._roll_back(percent, error=exc)
            percent = stage.percent
            self._reached.append(percent)
            self._record(
                percent, "split", f"{self.baseline} {100 - percent} %, {self.candidate} {percent} %"
            )
            started = self._clock()
            while True:
                if self._stop.is_set():
                    self._record(percent, "stopped", "stop() was called")
                    return self._roll_back(percent)
                try:
                    breaches = list(self._check())
                except Exception as exc:
                    self._record(percent, "error", f"check(): {type(exc).__name__}: {exc}")
                    return self._roll_back(percent, error=exc)
                if breaches:
                    self._record(percent, "breach", "; ".join(_describe(b) for b in breaches))
                    return self._roll_back(percent, breach=breaches[0])
                elapsed = self._clock() - started
                if elapsed >= stage.seconds:
                    break
                self._wait(min(self.poll_s, stage.seconds - elapsed))
            self._record(percent, "healthy", f"{stage.seconds:g} s without a breach")
        self._record(percent, "completed", f"{self.candidate} at {percent} %")
        return self._result("completed")

    def _wait(self, seconds: float) -> None:
        if self._sleep is time.sleep:
            self._stop.wait(seconds)
        else:
            self._sleep(seconds)

    def _roll_back(
        self, percent: int, *, breach: object | None = None, error: Exception | None = None
    ) -> CanaryResult:
        try:
            self.actuator.rollback(
                self.flag_key, to_version=self.baseline, from_version=self.candidate
            )
        except Exception as exc:
            self._record(percent, "rollback_failed", f"{type(exc).__name__}: {exc}")
            logger.error(
                "canary of %r: rollback to %r failed: %s", self.flag_key, self.baseline, exc
            )
            return self._result("failed", breach=breach, error=error or exc)
        self._record(0, "rolled_back", f"everyone on {self.baseline}")
        return self._result("failed" if error is not None else "rolled_back", breach, error)

    def _result(
        self,
        outcome: CanaryOutcome,
        breach: object | None = None,
        error: Exception | None = None,
    ) -> CanaryResult:
        return CanaryResult(
            outcome=outcome,
            stages_reached=tuple(self._reached),
            breach=breach,
            error=error,
            timeline=tuple(self._timeline),
        )

    def _record(self, percent: int, event: str, detail: str) -> None:
        step = CanaryStep(self._clock() - self._t0, percent, event, detail)
        self._timeline.append(step)
        level = logging.WARNING if event in _ALARMS else logging.INFO
        logger.log(level, "canary of %r: %s at %d %%: %s", self.flag_key, event, percent, detail)
        if self._on_step is not None:
            try:
                self._on_step(step)
            except Exception:
                logger.exception("canary of %r: on_step raised on %r; ignored", self.flag_key, step)


_ALARMS = frozenset({"breach", "stopped", "error", "rolled_back", "rollback_failed"})


def _stages(stages: Sequence[Stage] | Sequence[int], stage_seconds: float) -> tuple[Stage, ...]:
    result = tuple(
        item if isinstance(item, Stage) else Stage(item, stage_seconds) for item in stages
    )
    if not result:
        raise ValueError("a canary needs at least one stage")
    percents = [stage.percent for stage in result]
    if any(later <= earlier for earlier, later in itertools.pairwise(percents)):
        raise ValueError(f"stage percents must increase strictly, got {percents}")
    return result


def _describe(breach: object) -> str:
    rule = getattr(breach, "rule", None)
    return str(rule) if rule is not None else repr(breach)


class _Supervision(Protocol):
    """What a guarded canary needs of the guardrail supervisor."""

    def check(self, models: Iterable[str] | None = None) -> list[Breach]: ...

    def breaches(self, model: str, version: str | None = None) -> list[Breach]: ...

    def release(
        self, model: str, versions: Iterable[str] | None = None, *, forget: bool = True
    ) -> list[str]: ...

    def holding(self, model: str) -> contextlib.AbstractContextManager[None]: ...


def guarded_canary(
    supervision: _Supervision,
    actuator: Actuator,
    *,
    model: str,
    flag_key: str,
    baseline: str,
    candidate: str,
    stages: Sequence[int] | Sequence[Stage],
    stage_seconds: float,
    poll_s: float,
    promote: Callable[[str, str], None],
) -> CanaryDriver:
    """A canary of ``candidate`` judged by ``model``'s guardrails.

    At its start the candidate's earlier breaches and metrics are forgotten (they are not
    evidence about this canary); promotions of the model wait while it runs; on completion the
    candidate is promoted if it proved itself (``promote``).
    """

    def check() -> list[Breach]:
        supervision.check()
        return supervision.breaches(model, candidate)

    def on_step(step: CanaryStep) -> None:
        if step.event == "start":
            supervision.release(model, [candidate])
        elif step.event == "completed":
            promote(model, candidate)

    return CanaryDriver(
        actuator,
        flag_key=flag_key,
        baseline=baseline,
        candidate=candidate,
        stages=stages,
        stage_seconds=stage_seconds,
        check=check,
        poll_s=poll_s,
        on_step=on_step,
        hold=lambda: supervision.holding(model),
    )
