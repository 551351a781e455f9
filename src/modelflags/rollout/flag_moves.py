"""A rollout's moves of its flag: splits and rollbacks through an actuator, with retries.

The controller decides; :class:`FlagMoves` carries a decision to the flag's source, trying
``attempts`` times, ``retry_s`` apart, and answers with the last error instead of raising, so
that the controller can hold, alert and try again at its next check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from modelflags.rollout.actuators.base import Actuator, SplitReader

__all__ = ["FlagMoves"]

logger = logging.getLogger(__name__)


class FlagMoves:
    """Moves ``flag_key`` between ``baseline`` and ``candidate`` through ``actuator``.

    Not safe to share between threads (the actuators are, but one rollout moves one flag).
    """

    def __init__(
        self,
        actuator: Actuator,
        flag_key: str,
        *,
        baseline: str,
        candidate: str,
        attempts: int,
        retry_s: float,
        sleep: Callable[[float], None],
    ) -> None:
        self.actuator, self.flag_key = actuator, flag_key
        self.baseline, self.candidate = baseline, candidate
        self.attempts, self.retry_s = attempts, retry_s
        self._sleep = sleep

    def split(self, percent: int) -> str | None:
        """Serve the candidate to ``percent`` of users; the last error, or ``None`` when done."""
        weights = {self.baseline: 100 - percent, self.candidate: percent}
        return self._try("split", lambda: self.actuator.set_split(self.flag_key, weights))

    def rollback(self) -> str | None:
        """Serve the baseline to everyone; the last error, or ``None`` when done."""
        return self._try(
            "rollback",
            lambda: self.actuator.rollback(
                self.flag_key, to_version=self.baseline, from_version=self.candidate
            ),
        )

    def candidate_share(self) -> tuple[int | None, str]:
        """The candidate's percent now, or ``None`` and why it cannot be known."""
        if not isinstance(self.actuator, SplitReader):
            return None, "the actuator cannot read splits"
        try:
            split = self.actuator.current_split(self.flag_key)
        except Exception as exc:
            return None, f"reading it failed: {exc}"
        if split is None:
            return None, "its rules are not a plain split"
        return split.get(self.candidate, 0), ""

    def _try(self, what: str, action: Callable[[], None]) -> str | None:
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                action()
                return None
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("%s: %s attempt %d failed: %s", self.flag_key, what, attempt, error)
                if attempt < self.attempts:
                    self._sleep(self.retry_s)
        return error
