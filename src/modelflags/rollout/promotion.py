"""Promotion: when a candidate that held its guardrails becomes the last known good version.

A proven candidate of a model with guardrails is promoted once it has held them (no rule
breaching, never fired, and no estimate beyond its tolerance: a regression the tests have not
confirmed yet must not be promoted past them) with traffic (at least ``min_requests`` calls, and
at least one) for ``promote_after_s`` seconds in a row, and only if it proved itself after the
current LKG (so a steady split never makes the LKG go back and forth). Promotions of a model wait
while a canary of it runs (:meth:`Promoter.holding`): its driver decides when the candidate is
done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from modelflags.rollout.guardrails import Guardrails

if TYPE_CHECKING:
    from modelflags.rollout.supervision import Supervisor

__all__ = ["HealthView", "Promoter", "release_moved_rollbacks"]

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


class Promoter:
    """Promotes candidates that held their guardrails. Safe to share between threads."""

    def __init__(
        self,
        promote: Callable[[str, str], None] | None,
        proved_after: Callable[[str, str, str], bool] | None,
        clock: Callable[[], float],
    ) -> None:
        self._promote = promote
        self._proved_after = proved_after
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._healthy_since: dict[tuple[str, str], float] = {}

    def hold(self, model: str) -> None:
        """Hold back promotions of ``model`` (while a canary of it runs)."""
        with self._lock:
            self._held[model] = self._held.get(model, 0) + 1

    def held(self, model: str) -> bool:
        """True while promotions of ``model`` are held back (a canary of it runs)."""
        return bool(self._held.get(model))

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

    def promote_healthy(
        self, model: str, lkg: str, guardrails: Guardrails, rolled_back: frozenset[str]
    ) -> None:
        """Promote a proven candidate that held its guardrails for ``promote_after_s`` with
        traffic."""
        rules = guardrails.rules[model]
        now = self._clock()
        if self._held.get(model):
            return  # a canary is running: its driver decides when the candidate is done
        for version, verdict in guardrails.state(model).items():
            key = (model, version)
            healthy = (
                version != lkg
                and verdict.active
                and not verdict.breaching
                and not verdict.suspect
                and not verdict.fired
                and verdict.requests >= max(1, rules.min_requests)
                and version not in rolled_back
            )
            if not healthy:
                self._healthy_since.pop(key, None)
                continue
            since = self._healthy_since.setdefault(key, now)
            # Only a version that proved itself after the LKG moves up: under a steady split the
            # LKG does not go back and forth.
            proven = self._proved_after is None or self._proved_after(model, version, lkg)
            if now - since >= rules.promote_after_s and proven and self._promote is not None:
                self._healthy_since.pop(key, None)
                logger.info(
                    "model %r: version %r held its guardrails for %.0f s; promoting it",
                    model,
                    version,
                    now - since,
                )
                self._promote(model, version)


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
