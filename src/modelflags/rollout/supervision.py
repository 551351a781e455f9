"""Supervision: per-version metrics, guardrail checks, and what happens when a guardrail fires.

The request path records each inference call (version, latency, error, fallback) into
:class:`~modelflags.metrics.Metrics` and any extra recorders (OpenTelemetry). A background thread
checks every model's guardrails about once a second. A breach whose rule says ``rollback`` pins the
model away from the breaching version locally, at once: the flag's choice of that version is
ignored, and the last known good version serves, until a person calls ``release`` or the flag
stops selecting it. With an actuator, the rollback is also made at the flag's source, off the
request path; actuator failures are logged and reported as events, never raised. A breach whose
rule says ``alert`` is an event and an ERROR log line, and a person may roll back by hand.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from modelflags.errors import shown
from modelflags.registry import ModelSpec
from modelflags.registry.guardrails import GuardrailRules
from modelflags.rollout.guardrails import Guardrails
from modelflags.rollout.metrics import Metrics, MetricsRecorder, VersionMetrics
from modelflags.telemetry.events import (
    ActuatorFailed,
    Breach,
    Event,
    GuardrailAlert,
    RolledBack,
)

if TYPE_CHECKING:
    from modelflags.rollout.actuators import Actuator

__all__ = ["HealthView", "Supervisor", "release_moved_rollbacks"]

logger = logging.getLogger(__name__)


class HealthView(Protocol):
    """What supervision reads of the serving core's health (the LKG and proofs)."""

    def lkg(self, model: str) -> str:
        """The last known good version of ``model``."""
        ...

    def proved_after(self, model: str, version: str, other: str) -> bool:
        """True when ``version`` proved itself after ``other`` did."""
        ...

    def is_proven(self, model: str, version: str) -> bool:
        """True once ``version`` completed a call since its last failure."""
        ...


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
    ) -> None:
        window = max([window_s, *(rule.window_s for rule in rules.values())])
        self.metrics = Metrics(window_s=window, clock=clock)
        self.guardrails = Guardrails(rules, self.metrics, clock=clock)
        self._exporters: tuple[MetricsRecorder, ...] = tuple(recorders)
        self._exporter_errors = 0
        self._actuator_errors = 0
        self._flag_keys = dict(flag_keys)
        self._lkg = lkg
        self._emit = emit
        self._actuator = actuator
        self._interval = check_interval
        self._lock = threading.Lock()
        self._rolled_back: dict[str, frozenset[str]] = {}
        self._fired: dict[tuple[str, str], list[Breach]] = {}
        self._held: dict[str, int] = {}
        self._promote = promote
        self._proved_after = proved_after
        self._healthy_since: dict[tuple[str, str], float] = {}
        self._clock = clock
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
        self.metrics.record_call(model, version, latency_s, error, fell_back)
        for exporter in self._exporters:
            try:
                exporter.record_call(model, version, latency_s, error, fell_back)
            except Exception:
                self._exporter_failed(exporter)

    def record_outcome(self, model: str, version: str, name: str, value: float) -> None:
        """Record an outcome the application reports for a call ``version`` answered."""
        self.metrics.record_outcome(model, version, name, value)
        for exporter in self._exporters:
            try:
                exporter.record_outcome(model, version, name, value)
            except Exception:
                self._exporter_failed(exporter)

    def _exporter_failed(self, exporter: MetricsRecorder) -> None:
        self._exporter_errors += 1
        if self._exporter_errors == 1 or self._exporter_errors % 1000 == 0:
            logger.exception(
                "metrics exporter %r raised (%d times so far); serving goes on",
                exporter,
                self._exporter_errors,
            )

    @property
    def exporters(self) -> tuple[MetricsRecorder, ...]:
        """The exporters every call and outcome is also sent to."""
        return self._exporters

    def extension_errors(self) -> dict[str, int]:
        """How often an exporter or an actuator failed."""
        return {"exporters": self._exporter_errors, "actuators": self._actuator_errors}

    def gates(self, model: str) -> bool:
        """True when promotion of ``model``'s versions waits for its guardrails."""
        return model in self.guardrails.rules

    def hold(self, model: str) -> None:
        """Hold back promotions of ``model`` (while a canary of it runs)."""
        with self._lock:
            self._held[model] = self._held.get(model, 0) + 1

    def unhold(self, model: str) -> None:
        """Undo one :meth:`hold`."""
        with self._lock:
            self._held[model] = max(0, self._held.get(model, 0) - 1)

    @contextlib.contextmanager
    def holding(self, model: str) -> Iterator[None]:
        """Hold back promotions of ``model`` for the duration of a ``with`` block."""
        self.hold(model)
        try:
            yield
        finally:
            self.unhold(model)

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
            versions = list(self.metrics.snapshot(model))
            by_version: dict[str, list[Breach]] = {}
            for breach in self.guardrails.check(model, lkg, versions):
                fired.append(breach)
                by_version.setdefault(breach.version, []).append(breach)
            for breaches in by_version.values():
                self._act(breaches)
            self._promote_healthy(model, lkg)
        return fired

    def _promote_healthy(self, model: str, lkg: str) -> None:
        """Promote a proven candidate that held its guardrails for ``sustained_s`` with traffic."""
        rules = self.guardrails.rules[model]
        now = self._clock()
        rolled_back = self.rolled_back(model)
        if self._held.get(model):
            return  # a canary is running: its driver decides when the candidate is done
        for version, verdict in self.guardrails.state(model).items():
            key = (model, version)
            healthy = (
                version != lkg
                and not verdict.breaching
                and not verdict.fired
                and verdict.requests >= rules.min_requests
                and version not in rolled_back
            )
            if not healthy:
                self._healthy_since.pop(key, None)
                continue
            since = self._healthy_since.setdefault(key, now)
            # Only a version that proved itself after the LKG moves up: under a steady split the
            # LKG does not go back and forth.
            proven = self._proved_after is None or self._proved_after(model, version, lkg)
            if now - since >= rules.sustained_s and proven and self._promote is not None:
                self._healthy_since.pop(key, None)
                logger.info(
                    "model %r: version %r held its guardrails for %.0f s; promoting it",
                    model,
                    version,
                    now - since,
                )
                self._promote(model, version)

    def rollback_versions(
        self,
        model: str,
        version: str | None,
        *,
        reason: str,
        demote: Callable[[str, str], str],
    ) -> list[str]:
        """Roll back ``version`` (default: every non-LKG version with traffic) of ``model``.

        A rolled-back LKG is first demoted (``demote`` returns the LKG after it), so the
        previous proven version serves; an LKG with nothing proven before it cannot be rolled
        back (``ValueError``).
        """
        lkg = self._lkg(model)
        versions = (
            [version]
            if version is not None
            else [served for served in self.snapshot(model) if served != lkg]
        )
        for chosen in versions:
            if chosen == self._lkg(model) and demote(model, chosen) == chosen:
                raise ValueError(
                    f"model {model!r}: cannot roll back {chosen!r}: it is the last known good "
                    "version and no other version has proven itself"
                )
            self.rollback(model, chosen, reason=reason)
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
        self, model: str, version: str, *, reason: str, breach: Breach | None = None
    ) -> None:
        """Pin ``model`` away from ``version`` and, with an actuator, roll back at the source."""
        lkg = self._lkg(model)
        with self._lock:
            self._rolled_back[model] = self.rolled_back(model) | {version}
        logger.error("model %r: rolled back from %r to %r: %s", model, version, lkg, reason)
        self._emit(RolledBack(model, version, lkg, reason, breach))
        if self._actuator is not None:
            threading.Thread(
                target=self._actuate,
                args=(model, version, lkg),
                name="modelflags-actuator",
                daemon=True,
            ).start()

    def release(
        self, model: str, versions: Iterable[str] | None = None, *, forget: bool = True
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
            for version in chosen:
                self.guardrails.reset(model, version)
                self.metrics.reset(model, version)
        return sorted(chosen & current)

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
        breach = breaches[0]
        with self._lock:
            self._fired[(breach.model, breach.version)] = list(breaches)
        rules = "; ".join(f"{b.rule} {b.observed:.4g} > {b.threshold:.4g}" for b in breaches)
        rule_text = (
            f"{rules} over {breach.window_s:g} s ({breach.requests} requests; "
            f"{breach.lkg} had {breach.lkg_requests})"
        )
        if breach.action == "rollback" and breach.version != self._lkg(breach.model):
            self.rollback(breach.model, breach.version, reason=rule_text, breach=breach)
        else:
            logger.error(
                "model %r version %r: guardrail fired: %s", breach.model, breach.version, rule_text
            )
            for each in breaches:
                self._emit(GuardrailAlert(each.model, each.version, each))

    def _actuate(self, model: str, version: str, lkg: str) -> None:
        assert self._actuator is not None
        flag_key = self._flag_keys[model]
        try:
            self._actuator.rollback(flag_key, to_version=lkg, from_version=version)
        except Exception as exc:
            self._actuator_errors += 1
            message = shown(str(exc), limit=500, quote=False)
            logger.error(
                "model %r: rolling back flag %r at its source failed: %s", model, flag_key, message
            )
            self._emit(ActuatorFailed(model, version, flag_key, message))
        else:
            logger.info("model %r: flag %r now serves %r at its source", model, flag_key, lkg)

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:
                logger.exception("guardrail check failed")


def release_moved_rollbacks(
    supervisor: Supervisor,
    model: str,
    contexts: Iterable[object],
    selects: Callable[[str, Any], str | None],
) -> list[str]:
    """Lift rollbacks of versions the flag no longer selects for any of ``contexts``.

    Called after a flag change with the model's recent evaluation contexts; ``selects`` answers
    which version the flag picks for one of them now.
    """
    rolled_back = supervisor.rolled_back(model)
    if not rolled_back:
        return []
    selected = {selects(model, context) for context in contexts}
    moved = [version for version in rolled_back if version not in selected]
    if not moved:
        return []
    released = supervisor.release(model, moved, forget=False)
    if released:
        logger.info("model %r: flag no longer selects %s; rollback lifted", model, released)
    return released
