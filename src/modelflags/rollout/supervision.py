"""Supervision: per-version metrics, guardrail checks, and what happens when a guardrail fires.

The request path records each inference call (version, latency, error, fallback) into
:class:`~modelflags.rollout.metrics.Metrics` (windows and running totals) and any extra recorders
(OpenTelemetry, Prometheus). A background thread checks every model's guardrails about once a
second (:class:`~modelflags.rollout.guardrails.Guardrails`: sequential tests against the LKG). A
breach whose rules say ``rollback`` pins the model away from the breaching version locally, at
once: the flag's choice of that version is ignored, and the last known good version serves, until
a person calls ``release`` or the flag stops selecting it. With an actuator, the rollback is also
made at the flag's source, off the request path; actuator failures are logged and reported as
events, never raised. A breach whose rules say ``alert`` is an event and an ERROR log line, and a
person may roll back by hand; ``confirm`` makes it a proposal a person confirms or dismisses
(:mod:`modelflags.rollout.proposals`). After a rollback, :mod:`modelflags.rollout.impact` judges
whether it helped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from modelflags.errors import InvalidActionError
from modelflags.registry import ModelSpec
from modelflags.registry.guardrails import GuardrailRules
from modelflags.rollout.actuation import Actuation
from modelflags.rollout.explain import ActionSink, describe, detail
from modelflags.rollout.fleet_mode import local_breaches
from modelflags.rollout.guardrails import Guardrails
from modelflags.rollout.impact import ImpactWatch
from modelflags.rollout.metrics import Metrics, MetricsRecorder, VersionMetrics
from modelflags.rollout.promotion import HealthView, Promoter
from modelflags.rollout.proposals import ProposalDecisions, Proposals
from modelflags.rollout.recording import Recording
from modelflags.telemetry.events import (
    Breach,
    Event,
    GuardrailAlert,
    RolledBack,
)
from modelflags.telemetry.status import RuleState

if TYPE_CHECKING:
    from modelflags.rollout.actuators import Actuator

__all__ = ["ActionSink", "Supervisor"]

logger = logging.getLogger(__name__)


class Supervisor:
    """Metrics, guardrails and rollbacks for one :class:`~modelflags.ModelFlags`.

    Safe to share between threads. ``rolled_back`` is a lock-free read for the request path.
    An exporter or actuator that raises is logged and counted (:meth:`extension_errors`), never
    raised into a request.
    """

    @classmethod
    def for_models(
        cls,
        specs: Mapping[str, ModelSpec],
        *,
        metrics: bool,
        exporters: Sequence[MetricsRecorder],
        actuator: Actuator | None,
        check_interval: float,
        health: HealthView,
        promote: Callable[[str, str], None],
        emit: Callable[[Event], None],
        clock: Callable[[], float],
    ) -> Supervisor | None:
        """The supervisor of a registry's models, or ``None`` when nothing needs one (no
        guardrails, no metrics asked for, no exporters)."""
        rules = {name: spec.guardrails for name, spec in specs.items() if spec.guardrails}
        if not (rules or metrics or exporters):
            return None
        return cls(
            rules,
            flag_keys={name: spec.flag_key for name, spec in specs.items()},
            lkg=health.lkg,
            emit=emit,
            clock=clock,
            recorders=tuple(exporters),
            actuator=actuator,
            check_interval=check_interval,
            promote=promote,
            proved_after=health.proved_after,
            fleet={name for name, spec in specs.items() if spec.decisions == "fleet"},
        )

    def __init__(
        self,
        rules: Mapping[str, GuardrailRules],
        *,
        flag_keys: Mapping[str, str],
        lkg: Callable[[str], str],
        emit: Callable[[Event], None],
        clock: Callable[[], float],
        recorders: Sequence[MetricsRecorder] = (),
        actuator: Actuator | None = None,
        check_interval: float = 1.0,
        window_s: float = 60.0,
        promote: Callable[[str, str], None] | None = None,
        proved_after: Callable[[str, str, str], bool] | None = None,
        fleet: Iterable[str] = (),
    ) -> None:
        window = max([window_s, *(rule.window_s for rule in rules.values())])
        self.metrics = Metrics(window_s=window, clock=clock)
        self.guardrails = Guardrails(rules, self.metrics, clock=clock)
        self.recording = Recording(self.metrics, recorders)
        self._lkg = lkg
        self._emit = emit
        self.actuation = Actuation(actuator, flag_keys, emit)
        self._interval = check_interval
        self._lock = threading.Lock()
        self._rolled_back: dict[str, frozenset[str]] = {}
        self._fired: dict[tuple[str, str], list[Breach]] = {}
        self.promoter = Promoter(promote, proved_after, clock)
        self._fleet = frozenset(fleet)
        self._clock = clock
        self.proposals = Proposals(emit, clock)
        self.decisions = ProposalDecisions(
            self.proposals,
            rollback=self.rollback,
            record=self._record,
            lkg=lkg,
            rules_of=self.guardrails.rules.get,
        )
        self.impact = ImpactWatch(self.metrics, emit, clock)
        self.actions: ActionSink | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if rules:
            self._start_watch()

    def _start_watch(self) -> None:
        self._thread = threading.Thread(
            target=self._watch, name="modelflags-guardrails", daemon=True
        )
        self._thread.start()

    def reset_after_fork(self) -> None:
        """In a child process just forked: fresh locks, and the background checks restarted
        (their thread stayed in the parent)."""
        self._lock = threading.Lock()
        self.metrics.reset_after_fork()
        # Guardrails keeps one lock of its own, which its checks may have held at the fork.
        self.guardrails._lock = threading.Lock()
        stopped = self._stop.is_set()
        self._stop = threading.Event()
        if self._thread is not None:
            if stopped:
                self._stop.set()
            else:
                self._start_watch()

    # -- request path ---------------------------------------------------------------------------

    def record_call(
        self, model: str, version: str, latency_s: float, error: bool, fell_back: bool
    ) -> None:
        """Record one inference call of ``version`` in the metrics and every exporter."""
        self.recording.record_call(model, version, latency_s, error, fell_back)

    def record_outcome(self, model: str, version: str, name: str, value: float) -> None:
        """Record an outcome the application reports for a call ``version`` answered."""
        self.recording.record_outcome(model, version, name, value)

    @property
    def exporters(self) -> tuple[MetricsRecorder, ...]:
        """The exporters every call and outcome is also sent to."""
        return self.recording.exporters

    def extension_errors(self) -> dict[str, int]:
        """How often an exporter or an actuator failed."""
        return {"exporters": self.recording.errors, "actuators": self.actuation.errors}

    def gates(self, model: str) -> bool:
        """True when promotion of ``model``'s versions waits for its guardrails."""
        return model in self.guardrails.rules

    def holding(self, model: str) -> contextlib.AbstractContextManager[None]:
        """Hold back promotions of ``model`` for a ``with`` block (while its canary runs)."""
        return self.promoter.holding(model)

    def rolled_back(self, model: str) -> frozenset[str]:
        """The versions of ``model`` pinned away (empty when none)."""
        return self._rolled_back.get(model, frozenset())

    # -- checks and actions ---------------------------------------------------------------------

    def check(self, models: Iterable[str] | None = None) -> list[Breach]:
        """Check guardrails now (the background thread does this every second)."""
        fired: list[Breach] = []
        for model in models if models is not None else list(self.guardrails.rules):
            if model not in self.guardrails.rules:
                continue
            lkg = self._lkg(model)
            versions = self.metrics.versions(model)
            by_version: dict[str, list[Breach]] = {}
            for breach in self.guardrails.check(model, lkg, versions):
                fired.append(breach)
                by_version.setdefault(breach.version, []).append(breach)
            for breaches in by_version.values():
                self._act(breaches)
            self.promoter.promote_healthy(model, lkg, self.guardrails, self.rolled_back(model))
        for proposal in self.proposals.expired():
            self.decisions.expire(proposal)
        self.impact.check(self.guardrails.judges)
        return fired

    def confirm(self, model: str, version: str, *, by: str, reason: str) -> None:
        """Carry out the proposed rollback of ``version`` (``InvalidActionError`` if none)."""
        self.decisions.confirm(model, version, by=by, reason=reason)

    def dismiss(self, model: str, version: str, *, by: str, reason: str) -> None:
        """Keep ``version`` serving and drop its proposal (``InvalidActionError`` if none)."""
        self.decisions.dismiss(model, version, by=by, reason=reason)

    def report(self, model: str) -> list[RuleState]:
        """The live state of every guardrail rule of ``model``'s candidates."""
        return self.guardrails.report(model)

    def _record(
        self,
        action: str,
        model: str,
        version: str | None,
        *,
        by: str,
        reason: str,
        breach: Breach | None = None,
    ) -> None:
        sink = self.actions
        if sink is None:
            return
        try:
            sink.action(action, model, version, by=by, reason=reason, **detail(breach))
        except Exception:
            logger.exception("recording the %s of model %r failed", action, model)

    def rollback_versions(
        self,
        model: str,
        version: str | None,
        *,
        reason: str,
        demote: Callable[[str, str], str],
        by: str = "operator",
    ) -> list[str]:
        """Roll back ``version`` (default: every non-LKG version with traffic) of ``model``.

        A rolled-back LKG is first demoted (``demote`` returns the LKG after it), so the
        previous proven version serves; an LKG with nothing proven before it cannot be rolled
        back (:class:`InvalidActionError`, a ``ValueError``).
        """
        lkg = self._lkg(model)
        versions = (
            [version]
            if version is not None
            else [served for served in self.snapshot(model) if served != lkg]
        )
        for chosen in versions:
            if chosen == self._lkg(model) and demote(model, chosen) == chosen:
                raise InvalidActionError(
                    f"model {model!r}: cannot roll back {chosen!r}: it is the last known good "
                    "version and no other version has proven itself",
                    model=model,
                    version=chosen,
                )
            self.rollback(model, chosen, reason=reason, by=by)
        return versions

    def breaches(self, model: str, version: str | None = None) -> list[Breach]:
        """Breaches that fired for ``model`` (and ``version``) and were not released."""
        with self._lock:
            return [
                breach
                for (owner, fired_version), fired in self._fired.items()
                if owner == model and (version is None or fired_version == version)
                for breach in fired
            ]

    def rollback(
        self,
        model: str,
        version: str,
        *,
        reason: str,
        breach: Breach | None = None,
        by: str = "guardrails",
    ) -> None:
        """Pin ``model`` away from ``version`` and, with an actuator, roll back at the source."""
        lkg = self._lkg(model)
        with self._lock:
            self._rolled_back[model] = self.rolled_back(model) | {version}
        self.proposals.take(model, version)
        logger.error("model %r: rolled back from %r to %r: %s", model, version, lkg, reason)
        self._record("rollback", model, version, by=by, reason=reason, breach=breach)
        self._emit(RolledBack(model, version, lkg, reason, breach))
        if breach is not None:
            self.impact.watch(breach, lkg, self.guardrails.baseline(model, version))
        self.actuation.rollback_soon(model, version, lkg)

    def release(
        self,
        model: str,
        versions: Iterable[str] | None = None,
        *,
        forget: bool = True,
        by: str = "operator",
        reason: str = "",
    ) -> list[str]:
        """Lift rollbacks of ``model`` (all, or ``versions``).

        With ``forget`` (a person's release) their breaches and metrics are forgotten too, so the
        version is judged afresh; without it (the flag moved away) the breaches stay on record.
        """
        with self._lock:
            current = self.rolled_back(model)
            chosen: frozenset[str]
            if forget and versions is None:
                chosen = current | {version for owner, version in self._fired if owner == model}
            elif forget:
                chosen = frozenset(versions or ())
            else:
                chosen = current & frozenset(versions or current)
            self._rolled_back[model] = current - chosen
            if forget:
                for version in chosen:
                    self._fired.pop((model, version), None)
        if forget:
            self.proposals.forget(model, None if versions is None else chosen)
            for version in chosen:
                self.guardrails.reset(model, version)
                self.metrics.reset(model, version)
        released = sorted(chosen & current)
        for version in released:
            why = reason if forget else "the flag no longer selects it"
            self._record("release", model, version, by=by if forget else "flag", reason=why)
        return released

    def snapshot(self, model: str) -> dict[str, VersionMetrics]:
        """Metrics of ``model`` per version, over the window."""
        return self.metrics.snapshot(model)

    def close(self) -> None:
        """Stop the background checks."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _act(self, breaches: list[Breach]) -> None:
        """Act once per version on the breaches that fired together (the first is the evidence)."""
        breaches = local_breaches(breaches, self._fleet, self._emit)
        if not breaches:
            return
        breach = breaches[0]
        with self._lock:
            self._fired[(breach.model, breach.version)] = list(breaches)
        rule_text = "; ".join(describe(each) for each in breaches)
        model_rules = self.guardrails.rules.get(breach.model)
        candidate = breach.version != self._lkg(breach.model)
        if breach.action == "rollback" and candidate:
            self.rollback(breach.model, breach.version, reason=rule_text, breach=breach)
        elif breach.action == "confirm" and candidate and model_rules is not None:
            if self.proposals.propose(breach, model_rules):
                logger.error(
                    "model %r version %r: guardrail fired (%s); rollback proposed, waiting for "
                    "confirm_rollback() or dismiss()",
                    breach.model,
                    breach.version,
                    rule_text,
                )
        else:
            logger.error(
                "model %r version %r: guardrail fired: %s", breach.model, breach.version, rule_text
            )
            for each in breaches:
                self._emit(GuardrailAlert(each.model, each.version, each))

    def trusts(self, model: str, version: str) -> bool:
        """True when nothing the guardrails know stands against ``version`` becoming the LKG:
        it is not rolled back, has no breach on record, and no canary of ``model`` runs."""
        if version in self.rolled_back(model) or self.promoter.held(model):
            return False
        with self._lock:
            return (model, version) not in self._fired

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:
                logger.exception("guardrail check failed")
