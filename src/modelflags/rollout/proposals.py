"""Proposed rollbacks: a breach that waits for a person instead of acting alone.

A model whose guardrails say ``action = "confirm"`` does not roll back on a breach: the breach
becomes a pending proposal (a ``RollbackProposed`` event, and an entry in ``status()``), acted on
by ``ModelFlags.confirm_rollback(model, version)`` or dropped by ``ModelFlags.dismiss(model,
version)``. With ``confirm_timeout_s``, a proposal nobody decides on in time follows
``on_timeout``: ``"rollback"``, or ``"keep"`` (the version keeps serving; the default, because an
automatic decision after a delay is still an automatic decision). A dismissed version is not
proposed again until a person releases it, so one decision holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from modelflags.errors import InvalidActionError
from modelflags.registry.guardrails import GuardrailRules
from modelflags.telemetry.events import Breach, Event, RollbackDismissed, RollbackProposed
from modelflags.telemetry.status import ProposalStatus

__all__ = ["Proposal", "ProposalDecisions", "Proposals"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Proposal:
    """One rollback waiting for a person (clock seconds)."""

    breach: Breach
    proposed_at: float
    expires_at: float | None
    on_timeout: str

    @property
    def model(self) -> str:
        """The model of the breaching version."""
        return self.breach.model

    @property
    def version(self) -> str:
        """The breaching version."""
        return self.breach.version


class Proposals:
    """Pending proposals and dismissed versions, per model. Safe to share between threads."""

    def __init__(self, emit: Callable[[Event], None], clock: Callable[[], float]) -> None:
        self._emit = emit
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Proposal] = {}
        self._dismissed: set[tuple[str, str]] = set()

    def propose(self, breach: Breach, rules: GuardrailRules) -> bool:
        """Make ``breach`` a pending proposal; False when its version was dismissed or is
        already proposed."""
        key = (breach.model, breach.version)
        now = self._clock()
        expires = None if rules.confirm_timeout_s is None else now + rules.confirm_timeout_s
        proposal = Proposal(breach, now, expires, rules.on_timeout)
        with self._lock:
            if key in self._dismissed or key in self._pending:
                return False
            self._pending[key] = proposal
        self._emit(
            RollbackProposed(
                breach.model, breach.version, breach.lkg, breach, now, expires, rules.on_timeout
            )
        )
        return True

    def take(self, model: str, version: str) -> Proposal | None:
        """Remove and return the pending proposal of ``version``, if any."""
        with self._lock:
            return self._pending.pop((model, version), None)

    def dismiss(self, proposal: Proposal, *, by: str, reason: str) -> None:
        """Keep the proposal's version serving and remember the decision."""
        with self._lock:
            self._dismissed.add((proposal.model, proposal.version))
        self._emit(RollbackDismissed(proposal.model, proposal.version, by, reason))

    def expired(self) -> list[Proposal]:
        """Remove and return the proposals whose confirmation time has run out."""
        now = self._clock()
        with self._lock:
            due = [
                key
                for key, proposal in self._pending.items()
                if proposal.expires_at is not None and now >= proposal.expires_at
            ]
            return [self._pending.pop(key) for key in due]

    def forget(self, model: str, versions: frozenset[str] | None = None) -> None:
        """Drop proposals and dismissals of ``versions`` (all of ``model``'s without)."""
        with self._lock:
            for store in (self._pending, self._dismissed):
                for key in [k for k in store if k[0] == model]:
                    if versions is None or key[1] in versions:
                        if isinstance(store, dict):
                            del store[key]
                        else:
                            store.discard(key)

    def pending(self, model: str) -> list[ProposalStatus]:
        """The pending proposals of ``model``, for ``status()``."""
        now = self._clock()
        with self._lock:
            chosen = [p for (owner, _), p in sorted(self._pending.items()) if owner == model]
        return [
            ProposalStatus(
                version=p.version,
                lkg=p.breach.lkg,
                rule=p.breach.rule,
                observed=p.breach.observed,
                threshold=p.breach.threshold,
                expires_in_s=None if p.expires_at is None else max(0.0, p.expires_at - now),
                on_timeout=p.on_timeout,
                evidence=p.breach.evidence,
            )
            for p in chosen
        ]


class ProposalDecisions:
    """What a person (or the confirmation timeout) decides about a proposal: confirm it (the
    rollback happens), dismiss it (the version keeps serving), or let it expire (``on_timeout``).

    Gets the supervisor's ``rollback`` and ``record`` (the decision log) and reads the LKG and the
    rules through callables. Safe to share between threads.
    """

    def __init__(
        self,
        proposals: Proposals,
        *,
        rollback: Callable[..., None],
        record: Callable[..., None],
        lkg: Callable[[str], str],
        rules_of: Callable[[str], GuardrailRules | None],
    ) -> None:
        self.proposals = proposals
        self._rollback = rollback
        self._record = record
        self._lkg = lkg
        self._rules_of = rules_of

    def confirm(self, model: str, version: str, *, by: str, reason: str) -> None:
        """Carry out the proposed rollback of ``version`` (``InvalidActionError`` if none)."""
        proposal = self.proposals.take(model, version)
        if proposal is None:
            raise self._no_proposal(model, version, "confirm")
        text = f"confirmed by {by}: {reason}" if reason else f"confirmed by {by}"
        self._rollback(model, version, reason=text, breach=proposal.breach, by=by)

    def dismiss(self, model: str, version: str, *, by: str, reason: str) -> None:
        """Keep ``version`` serving and drop its proposal (``InvalidActionError`` if none)."""
        proposal = self.proposals.take(model, version)
        if proposal is None:
            raise self._no_proposal(model, version, "dismiss")
        self.proposals.dismiss(proposal, by=by, reason=reason)
        logger.warning("model %r: rollback of %r dismissed by %s: %s", model, version, by, reason)
        self._record("dismiss", model, version, by=by, reason=reason, breach=proposal.breach)

    def expire(self, proposal: Proposal) -> None:
        """Follow ``on_timeout`` for a proposal nobody decided on in time."""
        rules = self._rules_of(proposal.model)
        timeout = (
            0.0 if rules is None or rules.confirm_timeout_s is None else rules.confirm_timeout_s
        )
        reason = f"nobody decided within {timeout:g} s"
        if proposal.on_timeout == "rollback" and proposal.version != self._lkg(proposal.model):
            self._rollback(proposal.model, proposal.version, reason=reason, breach=proposal.breach)
            return
        self.proposals.dismiss(proposal, by="timeout", reason=reason)
        logger.warning(
            "model %r: rollback of %r not confirmed within %g s; it keeps serving",
            proposal.model,
            proposal.version,
            timeout,
        )
        self._record(
            "dismiss",
            proposal.model,
            proposal.version,
            by="timeout",
            reason=reason,
            breach=proposal.breach,
        )

    def _no_proposal(self, model: str, version: str, verb: str) -> InvalidActionError:
        waiting = [p.version for p in self.proposals.pending(model)]
        return InvalidActionError(
            f"model {model!r}: no rollback of {version!r} is waiting for a decision, so there is "
            f"nothing to {verb} (waiting: {', '.join(waiting) or 'none'})",
            model=model,
            version=version,
        )
