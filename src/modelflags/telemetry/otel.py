"""Serving metrics as OpenTelemetry instruments (optional: ``pip install 'modelflags[otel]'``).

:class:`OpenTelemetryMetrics` records the same calls and outcomes as
:class:`modelflags.metrics.Metrics`, into OpenTelemetry instruments that the application's
``MeterProvider`` exports wherever it is set up to (OTLP, Prometheus, ...). With the default
``prefix`` the instruments are:

==============================  =========  ===========  ===================================
name                            kind       unit         attributes
==============================  =========  ===========  ===================================
``modelflags.requests``         counter    ``{call}``   ``model``, ``version``
``modelflags.inference_errors`` counter    ``{call}``   ``model``, ``version``
``modelflags.fallbacks``        counter    ``{call}``   ``model``, ``version``
``modelflags.latency``          histogram  ``ms``       ``model``, ``version``
``modelflags.outcomes``         counter    ``1``        ``model``, ``version``, ``outcome``
``modelflags.feature_psi``      gauge      ``1``        ``model``, ``version``, ``feature``
``modelflags.feature_missing``  gauge      ``1``        ``model``, ``version``, ``feature``
==============================  =========  ===========  ===================================

The two gauges carry, for models with drift rules, each feature's population stability index
and missing share over the drift window (they need opentelemetry-api 1.23 or later, which has
synchronous gauges; with an older one they are left out).

``version`` is the version asked to serve the call; a call the last known good version answered
counts in ``modelflags.fallbacks`` too. ``modelflags.outcomes`` adds each outcome's value (a click
is 1, so the counter counts clicks); counters only go up, so negative values are not added. Only
this module imports OpenTelemetry.
"""

from __future__ import annotations

import logging

try:
    from opentelemetry.metrics import Meter, get_meter
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "modelflags.otel needs the OpenTelemetry API: pip install 'modelflags[otel]'"
    ) from exc

__all__ = ["LATENCY_BUCKETS_MS", "OpenTelemetryMetrics"]

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 75, 100, 250, 500, 1000, 2500, 5000, 10000,
)  # fmt: skip
"""Histogram bucket boundaries suggested to the SDK: model calls are often well under 5 ms."""


class OpenTelemetryMetrics:
    """Records serving calls and outcomes as OpenTelemetry metrics.

    ``meter`` defaults to the global meter provider's meter ``"modelflags"``; ``prefix`` starts
    every instrument name. Has the ``record_call`` / ``record_outcome`` methods of
    :class:`modelflags.metrics.Metrics`, so either (or both) can be given to the serving path.
    Safe to share between threads (the instruments are).
    """

    def __init__(self, meter: Meter | None = None, *, prefix: str = "modelflags") -> None:
        if meter is None:
            meter = get_meter("modelflags")
        self.prefix = prefix
        self._requests = meter.create_counter(
            f"{prefix}.requests", unit="{call}", description="Inference calls asked of a version"
        )
        self._errors = meter.create_counter(
            f"{prefix}.inference_errors",
            unit="{call}",
            description="Inference calls that raised in the version asked",
        )
        self._fallbacks = meter.create_counter(
            f"{prefix}.fallbacks",
            unit="{call}",
            description="Inference calls answered by the last known good version instead",
        )
        try:
            self._latency = meter.create_histogram(
                f"{prefix}.latency",
                unit="ms",
                description="Duration of inference calls",
                explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS,
            )
        except TypeError:  # opentelemetry-api before 1.23 takes no advice on buckets
            self._latency = meter.create_histogram(
                f"{prefix}.latency", unit="ms", description="Duration of inference calls"
            )
        self._outcomes = meter.create_counter(
            f"{prefix}.outcomes",
            unit="1",
            description="Sum of observed outcome values (e.g. clicks) per serving version",
        )
        create_gauge = getattr(meter, "create_gauge", None)  # opentelemetry-api >= 1.23
        self._psi = self._missing = None
        if create_gauge is not None:
            self._psi = create_gauge(
                f"{prefix}.feature_psi",
                unit="1",
                description="Population stability index of a feature over the drift window",
            )
            self._missing = create_gauge(
                f"{prefix}.feature_missing",
                unit="1",
                description="Share of missing values of a feature over the drift window",
            )

    def record_call(
        self, model: str, version: str, latency_s: float, error: bool, fell_back: bool
    ) -> None:
        """Count one inference call asked of ``version`` and record its latency (in ms)."""
        attributes = {"model": model, "version": version}
        self._requests.add(1, attributes)
        if error:
            self._errors.add(1, attributes)
        if fell_back:
            self._fallbacks.add(1, attributes)
        self._latency.record(latency_s * 1000.0, attributes)

    def record_outcome(self, model: str, version: str, name: str, value: float) -> None:
        """Add ``value`` of outcome ``name`` to ``version``'s counter (negative values are not)."""
        if value < 0:
            logger.debug("outcome %r of %s/%s is negative (%r); not counted", name, model, version)
            return
        self._outcomes.add(value, {"model": model, "version": version, "outcome": name})

    def record_feature_drift(
        self, model: str, version: str, feature: str, psi: float | None, missing: float
    ) -> None:
        """Set the drift figures of one feature of ``version`` (``psi`` None: no rows yet)."""
        if self._psi is None or self._missing is None:
            return
        attributes = {"model": model, "version": version, "feature": feature}
        if psi is not None:
            self._psi.set(psi, attributes)
        self._missing.set(missing, attributes)
