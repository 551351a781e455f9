"""What an operator does on the status page: roll back, release, confirm or dismiss a proposed
rollback, each with a reason and the caller's identity.

Each action goes through the public methods of :class:`~modelflags.ModelFlags`, which write it to
the decision log when the instance has one. The page also keeps the last :data:`KEEP` actions
taken through it in memory (shown on the pages, and the only record besides the application's
log when there is no decision log), and logs each one at WARNING (refusals at INFO), so no action
is lost with the page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from modelflags.errors import InvalidActionError, ModelFlagsError, ModelUnavailableError, shown
from modelflags.web.views import stamp

if TYPE_CHECKING:
    from modelflags.client import ModelFlags

__all__ = ["ACTIONS", "KEEP", "MAX_REASON", "ActionRecord", "Actions", "Refused"]

logger = logging.getLogger(__name__)

ACTIONS = ("rollback", "release", "confirm", "dismiss")
"""The actions, by the name they have in URLs and forms."""
KEEP = 200
"""Actions kept in memory."""
MAX_REASON = 500
"""Characters a reason may have."""


class Refused(Exception):
    """An action that cannot be carried out: ``status`` is the HTTP status that says why (404 an
    unknown model, version or action, with ``known`` listing the known ones; 409 an action the
    version cannot take now; 422 a missing or too long reason)."""

    def __init__(self, status: int, message: str, known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.known = known


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One action asked for on the page: when (``at``, ISO UTC), by whom, on what, why, and what
    came of it (``result``: ``"done"`` or ``"refused"``; ``detail``: what it did or why not)."""

    at: str | None
    by: str
    action: str
    model: str
    version: str
    reason: str
    result: str
    detail: str


class Actions:
    """Carries out actions on ``flags`` and remembers the last :data:`KEEP` of them.

    ``clock``: wall-clock seconds. Safe to share between threads.
    """

    def __init__(self, flags: ModelFlags, *, clock: Callable[[], float] = time.time) -> None:
        self._flags = flags
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: deque[ActionRecord] = deque(maxlen=KEEP)

    def recent(self) -> list[dict[str, Any]]:
        """The actions taken here, newest first, as dicts."""
        with self._lock:
            kept = list(self._kept)
        return [asdict(record) for record in reversed(kept)]

    def check(self, action: str, model: str, version: str) -> None:
        """Raise :class:`Refused` (404) for an unknown action, model or version."""
        if action not in ACTIONS:
            raise Refused(404, f"unknown action {action!r}", ACTIONS)
        models: Mapping[str, Any] = self._flags.registry.models
        if model not in models:
            raise Refused(404, f"unknown model {model!r}", tuple(sorted(models)))
        versions = tuple(models[model].versions)
        if version not in versions:
            raise Refused(404, f"model {model!r} has no version {version!r}", versions)

    def run(self, action: str, model: str, version: str, *, by: str, reason: str | None) -> str:
        """Carry out ``action`` on ``version`` of ``model`` for ``by``; what it did, in words.

        Raises :class:`Refused`: 404 for an unknown action, model or version, 422 for a missing
        reason, 409 (with the reason given by modelflags) when the version cannot take it.
        """
        self.check(action, model, version)
        text = (reason or "").strip()
        if not text:
            raise Refused(422, f"{action} of {model!r} {version!r}: give a reason")
        if len(text) > MAX_REASON:
            raise Refused(422, f"the reason has {len(text)} characters; {MAX_REASON} at most")
        try:
            detail = self._carry_out(action, model, version, by=by, reason=text)
        except ModelUnavailableError as exc:
            self._keep(by, action, model, version, text, "refused", exc.message)
            raise Refused(404, exc.message) from exc
        except (InvalidActionError, ModelFlagsError) as exc:
            self._keep(by, action, model, version, text, "refused", str(exc))
            raise Refused(409, str(exc)) from exc
        self._keep(by, action, model, version, text, "done", detail)
        return detail

    def _carry_out(self, action: str, model: str, version: str, *, by: str, reason: str) -> str:
        flags = self._flags
        if action == "rollback":
            flags.rollback(model, version, reason=reason, by=by)
            return f"{version} rolled back: the last known good version serves instead"
        if action == "release":
            released = flags.release(model, version, by=by, reason=reason)
            if released:
                return f"{version} released: it serves again when its flag chooses it"
            return f"{version} was neither rolled back nor quarantined; its record is cleared"
        if action == "confirm":
            flags.confirm_rollback(model, version, by=by, reason=reason)
            return f"rollback of {version} confirmed: the last known good version serves instead"
        flags.dismiss(model, version, by=by, reason=reason)
        return f"rollback of {version} dismissed: it keeps serving"

    def _keep(
        self,
        by: str,
        action: str,
        model: str,
        version: str,
        reason: str,
        result: str,
        detail: str,
    ) -> None:
        record = ActionRecord(
            stamp(self._clock()), by, action, model, version, reason, result, detail
        )
        with self._lock:
            self._kept.append(record)
        logger.log(
            logging.WARNING if result == "done" else logging.INFO,
            "status page: %s of model %s version %s by %s (%s): %s",
            action,
            shown(model),
            shown(version),
            shown(by),
            result,
            shown(reason, limit=MAX_REASON),
        )
