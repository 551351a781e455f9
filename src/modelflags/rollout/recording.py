"""Recording: every inference call and outcome into the metrics and the configured exporters.

The metrics (:class:`~modelflags.rollout.metrics.Metrics`) feed the guardrails; exporters
(OpenTelemetry, Prometheus) mirror the same figures elsewhere. An exporter that raises is logged
(the first time and every thousandth) and counted, and never reaches the request that was being
recorded.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence

from modelflags.errors import shown
from modelflags.rollout.metrics import Metrics, MetricsRecorder

__all__ = ["Recording", "finite"]

logger = logging.getLogger(__name__)


class Recording:
    """Sends calls and outcomes to the metrics and every exporter. Safe to share between
    threads (the metrics and exporters are; the error count may miss a racing increment)."""

    def __init__(self, metrics: Metrics, exporters: Sequence[MetricsRecorder] = ()) -> None:
        self.metrics = metrics
        self.exporters: tuple[MetricsRecorder, ...] = tuple(exporters)
        self.errors = 0

    def record_call(
        self, model: str, version: str, latency_s: float, error: bool, fell_back: bool
    ) -> None:
        """One inference call of ``version``."""
        self.metrics.record_call(model, version, latency_s, error, fell_back)
        for exporter in self.exporters:
            try:
                exporter.record_call(model, version, latency_s, error, fell_back)
            except Exception:
                self._failed(exporter)

    def record_outcome(self, model: str, version: str, name: str, value: float) -> None:
        """One observed outcome of a call ``version`` answered."""
        self.metrics.record_outcome(model, version, name, value)
        for exporter in self.exporters:
            try:
                exporter.record_outcome(model, version, name, value)
            except Exception:
                self._failed(exporter)

    def _failed(self, exporter: MetricsRecorder) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            logger.exception(
                "metrics exporter %r raised (%d times so far); serving goes on",
                exporter,
                self.errors,
            )


def finite(value: object, what: str) -> float:
    """``value`` as a finite float; ``ValueError`` naming ``what`` for NaN, infinities, strings
    (``"nan"`` included) and anything else that is not a real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what}: {shown(value)} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what}: {shown(value)} is not a finite number")
    return number
