"""Serving metrics for Prometheus (optional: ``pip install 'modelflags[prometheus]'``).

:class:`PrometheusMetrics` records the same calls and outcomes as
:class:`modelflags.rollout.metrics.Metrics`, as cumulative Prometheus metrics that a Prometheus
server scrapes from every process of a fleet, so that one controller can judge a rollout on the
fleet's pooled traffic. With the default ``prefix`` the metrics are:

==========================================  =========  ============================  ==========
name                                        type       labels                        unit
==========================================  =========  ============================  ==========
``modelflags_requests_total``               counter    ``model``, ``version``        calls
``modelflags_inference_errors_total``       counter    ``model``, ``version``        calls
``modelflags_fallbacks_total``              counter    ``model``, ``version``        calls
``modelflags_skipped_total``                counter    ``model``, ``version``        calls
``modelflags_latency_seconds``              histogram  ``model``, ``version``        seconds
``modelflags_outcome``                      summary    ``model``, ``version``,       values
                                                       ``outcome``
``modelflags_outcome_squares_total``        counter    ``model``, ``version``,       values²
                                                       ``outcome``
``modelflags_feature_psi``                  gauge      ``model``, ``version``,       PSI
                                                       ``feature``
``modelflags_feature_missing_share``        gauge      ``model``, ``version``,       0..1
                                                       ``feature``
==========================================  =========  ============================  ==========

As in :class:`Metrics`, a call counts under the version the flag asked for, and an outcome
under the version that served the call:

- ``requests``: every inference call asked of the version (a failed load counts as one call).
- ``inference_errors``: calls where the version raised or could not be loaded.
- ``fallbacks``: calls the last known good version answered in its place.
- ``skipped``: the part of ``fallbacks`` the version never ran (quarantined, rolled back or still
  loading). ``requests - skipped`` are the calls it ran, the denominator of its error rate.
- ``latency_seconds``: the duration of each call the version ran (``_bucket``, ``_sum`` and
  ``_count``; ``_count`` equals ``requests - skipped``). Buckets: :data:`LATENCY_BUCKETS_S`.
- ``outcome``: ``_count`` is how many values of an outcome were reported, ``_sum`` their sum, so
  ``_sum / _count`` is the mean, and for a binary outcome (click = 1, none = 0) the rate.
- ``feature_psi`` and ``feature_missing_share``: for models with drift rules, each feature's
  population stability index and missing share over the drift window, as last judged by the
  drift watch (made on first use, so they appear only where drift is watched). Across processes
  the largest value of any process is served (``multiprocess_mode="max"``), the one that alarms.
- ``outcome_squares_total``: the sum of the squared values. With ``_count`` and ``_sum`` it gives
  the variance of a continuous outcome (revenue per request), which a sequential test of a
  difference in means needs and a binary outcome does not (its variance follows from its mean):
  ``(squares - sum**2 / count) / (count - 1)``.

The series of a version are created together, at zero, on its first call (and those of an
outcome on its first value), so a query for one of them never finds it missing while another
exists. Non-finite outcome values are not recorded (a NaN would spoil the sum for good); negative
ones are, so ``modelflags_outcome_sum`` may go down: read it as a total, not with ``rate()``.

Fleet totals per version, as a controller reads them::

    sum by (version) (modelflags_requests_total{model="recommender"})
    sum by (version) (modelflags_inference_errors_total{model="recommender"})
      / (sum by (version) (modelflags_requests_total{model="recommender"})
         - sum by (version) (modelflags_skipped_total{model="recommender"}))
    sum by (version) (modelflags_outcome_sum{model="recommender", outcome="click"})
      / sum by (version) (modelflags_outcome_count{model="recommender", outcome="click"})
    histogram_quantile(0.95, sum by (version, le) (modelflags_latency_seconds_bucket{...}))

Serving them, e.g. next to a WSGI application (``metrics_app(asgi=True)`` for ASGI)::

    flags = ModelFlags("registry.toml", metrics_exporters=[PrometheusMetrics()])
    app = DispatcherMiddleware(app, {"/metrics": metrics_app()})  # werkzeug's, or any router

**Several processes** (gunicorn workers): set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder
before the processes start (before ``prometheus_client`` is imported); each process then writes
its values to files there and :func:`metrics_app` serves their sums. Counters, histograms and
summaries keep the values of processes that have exited, so totals survive a worker's restart;
the drift gauges keep their last value too (``max`` mode), so no gunicorn ``child_exit`` hook
(``mark_process_dead``) is needed. Empty the folder before each start of the whole server, never
while it runs. In a single process prometheus-client also exports a ``*_created`` gauge per
series; ``PROMETHEUS_DISABLE_CREATED_SERIES=True`` leaves them out.

**One registry, many instances**: the metrics are registered once per (registry, prefix) and
shared by every :class:`PrometheusMetrics` made for that pair, so two ``ModelFlags`` in one
process add to the same series instead of failing to register twice.

Only this module imports ``prometheus_client``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

try:
    from prometheus_client import (
        REGISTRY,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        Summary,
        make_asgi_app,
        make_wsgi_app,
        values,
    )
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "modelflags.telemetry.prometheus needs prometheus-client: "
        "pip install 'modelflags[prometheus]'"
    ) from exc

__all__ = [
    "LATENCY_BUCKETS_S",
    "MULTIPROC_ENV",
    "PrometheusMetrics",
    "app_for",
    "exposition_registry",
    "metrics_app",
    "multiprocess_mode",
]

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable that turns on prometheus-client's multi-process mode."""

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds of the latency buckets, in seconds (``+Inf`` is added): model calls are often well
under 5 ms, so the small end is fine-grained. The same bounds as the OpenTelemetry bridge's."""

_LABELS = ("model", "version")
_OUTCOME_LABELS = ("model", "version", "outcome")
_FEATURE_LABELS = ("model", "version", "feature")


@dataclass(frozen=True, slots=True)
class _VersionSeries:
    """The children of one (model, version) pair, made once and reused on every call."""

    requests: Counter
    errors: Counter
    fallbacks: Counter
    skipped: Counter
    latency: Histogram


@dataclass(frozen=True, slots=True)
class _OutcomeSeries:
    """The children of one (model, version, outcome) triple."""

    values: Summary
    squares: Counter


@dataclass(frozen=True, slots=True)
class _DriftGauges:
    """The drift gauges of one (registry, prefix), made on first use."""

    psi: Gauge
    missing: Gauge


class _Families:
    """The metric families of one (registry, prefix), and their children by label values."""

    def __init__(self, registry: CollectorRegistry, prefix: str, buckets: tuple[float, ...]):
        self.registry = registry
        self.prefix = prefix
        self.drift: _DriftGauges | None = None
        self.buckets = buckets
        self.versions: dict[tuple[str, str], _VersionSeries] = {}
        self.outcomes: dict[tuple[str, str, str], _OutcomeSeries] = {}
        self.requests = Counter(
            f"{prefix}_requests",
            "Inference calls asked of a model version (a failed load counts as one)",
            _LABELS,
            registry=registry,
        )
        self.errors = Counter(
            f"{prefix}_inference_errors",
            "Inference calls in which the version asked raised or could not be loaded",
            _LABELS,
            registry=registry,
        )
        self.fallbacks = Counter(
            f"{prefix}_fallbacks",
            "Inference calls the last known good version answered instead of the version asked",
            _LABELS,
            registry=registry,
        )
        self.skipped = Counter(
            f"{prefix}_skipped",
            "Fallbacks the version asked never ran (quarantined, rolled back or loading)",
            _LABELS,
            registry=registry,
        )
        self.latency = Histogram(
            f"{prefix}_latency_seconds",
            "Duration of the inference calls a version ran",
            _LABELS,
            registry=registry,
            buckets=buckets,
        )
        self.values = Summary(
            f"{prefix}_outcome",
            "Observed outcome values (e.g. click = 1, none = 0) of calls a version served",
            _OUTCOME_LABELS,
            registry=registry,
        )
        self.squares = Counter(
            f"{prefix}_outcome_squares",
            "Sum of the squared outcome values, for the variance of continuous outcomes",
            _OUTCOME_LABELS,
            registry=registry,
        )

    # The children are made outside any lock of ours (in multi-process mode a new child opens
    # files): ``labels`` returns the same child for the same label values, so a race between
    # two threads builds equal series, and setdefault keeps one.

    def version(self, model: str, version: str) -> _VersionSeries:
        series = _VersionSeries(
            self.requests.labels(model, version),
            self.errors.labels(model, version),
            self.fallbacks.labels(model, version),
            self.skipped.labels(model, version),
            self.latency.labels(model, version),
        )
        return self.versions.setdefault((model, version), series)

    def drift_gauges(self) -> _DriftGauges:
        """The drift gauges, registered the first time (families only: no files are opened)."""
        with _families_lock:
            if self.drift is None:
                self.drift = _DriftGauges(
                    Gauge(
                        f"{self.prefix}_feature_psi",
                        "Population stability index of a feature over the drift window",
                        _FEATURE_LABELS,
                        registry=self.registry,
                        multiprocess_mode="max",
                    ),
                    Gauge(
                        f"{self.prefix}_feature_missing_share",
                        "Share of missing values of a feature over the drift window",
                        _FEATURE_LABELS,
                        registry=self.registry,
                        multiprocess_mode="max",
                    ),
                )
            return self.drift

    def outcome(self, model: str, version: str, name: str) -> _OutcomeSeries:
        series = _OutcomeSeries(
            self.values.labels(model, version, name), self.squares.labels(model, version, name)
        )
        return self.outcomes.setdefault((model, version, name), series)


# registry -> prefix -> families. Weak keys: a registry a test throws away takes its families along.
_families: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Families]] = (
    weakref.WeakKeyDictionary()
)
_families_lock = threading.Lock()


def _families_for(
    registry: CollectorRegistry, prefix: str, buckets: tuple[float, ...]
) -> _Families:
    with _families_lock:
        by_prefix = _families.setdefault(registry, {})
        families = by_prefix.get(prefix)
        if families is None:
            try:
                families = _Families(registry, prefix, buckets)
            except ValueError as exc:  # "Duplicated timeseries in CollectorRegistry"
                raise ValueError(
                    f"cannot register the {prefix}_* metrics: {exc}; something else registered "
                    "these names in this registry: pass another prefix= or registry="
                ) from exc
            by_prefix[prefix] = families
        elif families.buckets != buckets:
            raise ValueError(
                f"the {prefix}_* metrics are already registered in this registry with latency "
                f"buckets {families.buckets}, not {buckets}: pass the same buckets, or another "
                "prefix= or registry="
            )
        return families


def multiprocess_mode() -> bool:
    """True when prometheus-client keeps its values in ``PROMETHEUS_MULTIPROC_DIR`` files.

    prometheus-client decides when it is first imported: the variable must be set before.
    """
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class PrometheusMetrics:
    """Records serving calls and outcomes as Prometheus metrics (see the module for the names).

    ``registry``: where the metrics are registered (default: prometheus-client's global
    ``REGISTRY``, which its ``start_http_server`` and ``make_wsgi_app`` serve); ``prefix``
    starts every name; ``buckets``: latency bucket bounds in seconds. Instances for the same
    registry and prefix share one set of metrics. Has the ``record_call`` / ``record_outcome``
    methods of :class:`modelflags.rollout.metrics.Metrics`: give it to
    ``ModelFlags(metrics_exporters=[...])``. Safe to share between threads (the series are
    made once and then only read; prometheus-client's values lock themselves).
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        *,
        prefix: str = "modelflags",
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
    ) -> None:
        self.registry = registry
        self.prefix = prefix
        self._families = _families_for(registry, prefix, tuple(float(b) for b in buckets))
        self._versions = self._families.versions
        self._outcomes = self._families.outcomes
        if os.environ.get(MULTIPROC_ENV) and not multiprocess_mode():
            logger.warning(
                "%s is set but prometheus_client was imported before it was: this process "
                "keeps its metrics to itself; set it before the process starts",
                MULTIPROC_ENV,
            )

    def record_call(
        self, model: str, version: str, latency_s: float, error: bool, fell_back: bool
    ) -> None:
        """Count one inference call asked of ``version`` (``latency_s`` seconds).

        ``error``: the version raised; ``fell_back``: the last known good version answered.
        A call that fell back without an error never ran on ``version``: it counts as skipped,
        and its latency (the last known good version's) is left out, as in ``Metrics``.
        """
        series = self._versions.get((model, version))
        if series is None:
            series = self._families.version(model, version)
        series.requests.inc()
        if error:
            series.errors.inc()
        if fell_back:
            series.fallbacks.inc()
            if not error:
                series.skipped.inc()
                return
        series.latency.observe(latency_s)

    def record_outcome(self, model: str, version: str, name: str, value: float) -> None:
        """Add one value of outcome ``name`` (e.g. 1.0 for a click, 0.0 for none) to ``version``.

        Comparing means needs one value per served call, zeros included. Non-finite values are
        not recorded.
        """
        if not math.isfinite(value):
            logger.debug(
                "outcome %r of %s/%s is not finite (%r); not recorded", name, model, version, value
            )
            return
        series = self._outcomes.get((model, version, name))
        if series is None:
            series = self._families.outcome(model, version, name)
        series.values.observe(value)
        series.squares.inc(value * value)

    def record_feature_drift(
        self, model: str, version: str, feature: str, psi: float | None, missing: float
    ) -> None:
        """Set the drift figures of one feature of ``version`` (``psi`` None: no rows yet)."""
        gauges = self._families.drift or self._families.drift_gauges()
        if psi is not None and math.isfinite(psi):
            gauges.psi.labels(model, version, feature).set(psi)
        gauges.missing.labels(model, version, feature).set(missing)

    def app(self, *, asgi: bool = False) -> Callable[..., Any]:
        """A WSGI app (an ASGI app with ``asgi=True``) serving these metrics.

        In multi-process mode it serves the sums over every process (see :func:`metrics_app`);
        otherwise this instance's registry.
        """
        return metrics_app(None if multiprocess_mode() else self.registry, asgi=asgi)


def exposition_registry(
    registry: CollectorRegistry | None = None,
    *,
    multiprocess_dir: str | os.PathLike[str] | None = None,
) -> CollectorRegistry:
    """The registry an exposition should collect from.

    ``registry`` when given; else, with ``multiprocess_dir`` or ``PROMETHEUS_MULTIPROC_DIR``
    set, a new registry whose ``MultiProcessCollector`` sums the files every process wrote there
    (registering metrics in it as well would export them twice); else the global ``REGISTRY``.
    """
    if registry is not None:
        if multiprocess_dir is not None:
            raise ValueError("pass registry= or multiprocess_dir=, not both")
        return registry
    path = os.fspath(multiprocess_dir) if multiprocess_dir is not None else None
    path = path or os.environ.get(MULTIPROC_ENV) or None
    if path is None:
        return REGISTRY
    if not os.path.isdir(path):
        raise ValueError(f"the multi-process metrics folder {path!r} is not a folder")
    collecting = CollectorRegistry()
    MultiProcessCollector(collecting, path=path)  # type: ignore[no-untyped-call]
    return collecting


def metrics_app(
    registry: CollectorRegistry | None = None,
    *,
    asgi: bool = False,
    multiprocess_dir: str | os.PathLike[str] | None = None,
) -> Callable[..., Any]:
    """A WSGI app (an ASGI app with ``asgi=True``) that serves the metrics to Prometheus.

    Mount it at the application's ``/metrics``, or serve it on a port of its own. What it
    collects is :func:`exposition_registry` of the same arguments: in multi-process mode, the
    sums over every process of the folder.
    """
    collecting = exposition_registry(registry, multiprocess_dir=multiprocess_dir)
    return make_asgi_app(collecting) if asgi else make_wsgi_app(collecting)


def app_for(exporters: Iterable[object], *, asgi: bool = False) -> Callable[..., Any]:
    """The exposition app of the first :class:`PrometheusMetrics` among ``exporters`` (its own
    registry), else :func:`metrics_app`'s default."""
    recorder = next((r for r in exporters if isinstance(r, PrometheusMetrics)), None)
    return recorder.app(asgi=asgi) if recorder is not None else metrics_app(asgi=asgi)
