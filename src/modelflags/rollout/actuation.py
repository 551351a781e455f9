"""Actuation: a local rollback repeated at the flag's source, off the request path.

After the supervisor pins a version away in this process, an actuator (a flagd file, Unleash's
admin API) rolls the flag back where every instance reads it. That runs on a thread of its own,
so a slow or failing flag service never delays the rollback here; a failure is logged, counted
and reported as an ``ActuatorFailed`` event, and the local rollback stands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from modelflags.errors import shown
from modelflags.telemetry.events import ActuatorFailed, Event

if TYPE_CHECKING:
    from modelflags.rollout.actuators import Actuator

__all__ = ["Actuation"]

logger = logging.getLogger(__name__)


class Actuation:
    """Rolls flags back at their source through ``actuator`` (``None``: nothing to do).

    Safe to share between threads; ``errors`` counts the failed rollbacks (a racing increment may
    be missed).
    """

    def __init__(
        self,
        actuator: Actuator | None,
        flag_keys: Mapping[str, str],
        emit: Callable[[Event], None],
    ) -> None:
        self.actuator = actuator
        self._flag_keys = dict(flag_keys)
        self._emit = emit
        self.errors = 0

    def rollback_soon(self, model: str, version: str, lkg: str) -> None:
        """Serve ``lkg`` instead of ``version`` at the flag's source, on a thread of its own."""
        if self.actuator is None:
            return
        threading.Thread(
            target=self._rollback,
            args=(model, version, lkg),
            name="modelflags-actuator",
            daemon=True,
        ).start()

    def _rollback(self, model: str, version: str, lkg: str) -> None:
        assert self.actuator is not None
        flag_key = self._flag_keys[model]
        try:
            self.actuator.rollback(flag_key, to_version=lkg, from_version=version)
        except Exception as exc:
            message = shown(str(exc), limit=500, quote=False)
            logger.error(
                "model %r: rolling back flag %r at its source failed: %s", model, flag_key, message
            )
            self._emit(ActuatorFailed(model, version, flag_key, message))
            self.errors += 1  # last: once the count shows it, the event and the log line exist
        else:
            logger.info("model %r: flag %r now serves %r at its source", model, flag_key, lkg)
