"""Fleet mode in one process: comparative rules are left to the rollout controller.

A model with ``decisions = "fleet"`` is judged by ``modelflags rollout`` on the fleet's pooled
metrics. Its processes keep every local safety (load and inference fallback, quarantine, the
absolute limits), but a comparative rule that breaches here is only logged and reported as a
``GuardrailAlerted`` event: N processes acting on their own slices would multiply false alarms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from modelflags.telemetry.events import Breach, Event, GuardrailAlert

__all__ = ["COMPARATIVE_RULES", "local_breaches"]

logger = logging.getLogger(__name__)

COMPARATIVE_RULES: frozenset[str] = frozenset(
    {"max_outcome_drop", "max_error_rate_increase", "max_latency_increase"}
)
"""Rules that compare a candidate with the LKG: a fleet decides those from pooled metrics."""


def local_breaches(
    breaches: list[Breach], fleet: Collection[str], emit: Callable[[Event], None]
) -> list[Breach]:
    """The breaches this process acts on: all of them, except the comparative rules of a model in
    ``fleet``, which are logged and reported as ``GuardrailAlerted`` only."""
    if not breaches or breaches[0].model not in fleet:
        return breaches
    for each in breaches:
        if each.rule in COMPARATIVE_RULES:
            logger.warning(
                'model %r version %r: %s breached here; decisions = "fleet": the rollout '
                "controller decides on the fleet's metrics",
                each.model,
                each.version,
                each.rule,
            )
            emit(GuardrailAlert(each.model, each.version, each))
    return [each for each in breaches if each.rule not in COMPARATIVE_RULES]
