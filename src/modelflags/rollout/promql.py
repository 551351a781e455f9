"""Reading a model's fleet metrics from Prometheus' HTTP API (``/api/v1/query``) over httpx.

One instant query per read asks for the raw samples of every series a rollout decision needs,
for the versions compared, over the last ``window_s`` seconds (a range selector: Prometheus
answers with a matrix, each scrape's value with its timestamp)::

    {__name__=~"modelflags_(latency_seconds_bucket|latency_seconds_count|inference_errors_total
    |outcome_count|outcome_sum|outcome_squares_total)", model="recommender",
    version=~"v1|v2", outcome=~"|click"}[65s]

Raw samples rather than ``sum by (version)``: a sum over instances drops when one instance
restarts, by an amount nobody can tell afterwards, and ``increase()`` extrapolates to the window's
edges (fractional counts that may overshoot). With every scrape's value per instance,
:class:`~modelflags.rollout.fleet_totals.FleetTotals` sees each reset and keeps exact totals.

Failures are :class:`~modelflags.errors.MetricsUnavailableError` with a ``reason``:
``"unreachable"`` (no answer, timeout, HTTP error status), ``"query"`` (Prometheus refused the
PromQL), ``"no_series"`` (checked by the caller, who knows which series it needs).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from modelflags.errors import MetricsUnavailableError

__all__ = ["PrometheusSource", "SeriesSamples", "selector"]

logger = logging.getLogger(__name__)

FAMILIES = (
    "latency_seconds_bucket",
    "latency_seconds_count",
    "inference_errors_total",
    "outcome_count",
    "outcome_sum",
    "outcome_squares_total",
)
"""The metric names read, after the prefix (see :mod:`modelflags.telemetry.prometheus`)."""

_BODY_LIMIT = 300


@dataclass(frozen=True, slots=True)
class SeriesSamples:
    """One series' raw samples: ``labels`` (``__name__`` included, sorted) and ``points``
    (``(unix seconds, value)``, oldest first). Immutable: safe to share between threads."""

    labels: tuple[tuple[str, str], ...]
    points: tuple[tuple[float, float], ...]

    @property
    def name(self) -> str:
        """The metric name."""
        return self.label("__name__")

    def label(self, key: str) -> str:
        """The value of label ``key`` ("" when the series has none, as in PromQL)."""
        for name, value in self.labels:
            if name == key:
                return value
        return ""


def _string(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(
    model: str,
    versions: Iterable[str],
    *,
    outcome: str | None,
    window_s: float,
    prefix: str = "modelflags",
) -> str:
    """The PromQL of one read: raw samples of ``model``'s ``versions`` over ``window_s``."""
    names = "|".join(re.escape(family) for family in FAMILIES)
    alternatives = "|".join(re.escape(version) for version in versions)
    outcomes = "" if outcome is None else "|" + re.escape(outcome)
    seconds = max(1, math.ceil(window_s))
    return (
        f"{{__name__=~{_string(re.escape(prefix) + '_(' + names + ')')}, "
        f"model={_string(model)}, version=~{_string(alternatives)}, "
        f"outcome=~{_string(outcomes)}}}[{seconds}s]"
    )


class PrometheusSource:
    """Asks a Prometheus server for the raw samples of a model's series.

    ``url`` is the server's base address (``http://127.0.0.1:9090``); ``client`` an httpx client
    to use (its owner closes it), else one is made with ``transport`` (tests pass
    ``httpx.MockTransport``) and ``timeout``; :meth:`close` closes it. ``prefix`` is the one the
    instances' :class:`~modelflags.telemetry.prometheus.PrometheusMetrics` use. Safe to share
    between threads (httpx clients are).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "modelflags",
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.prefix = prefix
        self._owns = client is None
        self._http = (
            client if client is not None else httpx.Client(transport=transport, timeout=timeout)
        )

    def __repr__(self) -> str:
        return f"PrometheusSource({self.url!r})"

    def close(self) -> None:
        """Close the HTTP client, if this source made it."""
        if self._owns:
            self._http.close()

    def read(
        self, model: str, versions: Iterable[str], *, outcome: str | None, window_s: float
    ) -> list[SeriesSamples]:
        """The raw samples of ``model``'s series for ``versions`` over the last ``window_s``.

        Raises :class:`MetricsUnavailableError` (``"unreachable"`` or ``"query"``); an empty
        list is an answer (the caller says whether it is enough).
        """
        query = selector(model, versions, outcome=outcome, window_s=window_s, prefix=self.prefix)
        return _matrix(self.query(query), self.url, query)

    def query(self, promql: str) -> dict[str, Any]:
        """The ``data`` of an instant query, or :class:`MetricsUnavailableError`."""
        endpoint = f"{self.url}/api/v1/query"
        try:
            response = self._http.post(endpoint, data={"query": promql})
        except httpx.HTTPError as exc:
            raise MetricsUnavailableError(
                f"Prometheus at {self.url} did not answer: {type(exc).__name__}: {exc}",
                url=self.url,
                reason="unreachable",
            ) from exc
        body: Any = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            raise MetricsUnavailableError(
                f"Prometheus at {self.url} refused the query ({body.get('errorType')}: "
                f"{body.get('error')}): {promql}",
                url=self.url,
                reason="query",
            )
        if not response.is_success or not isinstance(body, dict):
            text = response.text[:_BODY_LIMIT]
            raise MetricsUnavailableError(
                f"Prometheus at {self.url} answered HTTP {response.status_code}: {text}",
                url=self.url,
                reason="unreachable",
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise MetricsUnavailableError(
                f"Prometheus at {self.url} answered without data: {response.text[:_BODY_LIMIT]}",
                url=self.url,
                reason="unreachable",
            )
        return data


def _matrix(data: dict[str, Any], url: str, query: str) -> list[SeriesSamples]:
    """The series of a matrix answer (anything else is a query error)."""
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise MetricsUnavailableError(
            f"Prometheus at {url} answered a {data.get('resultType')!r}, not a matrix, to {query}",
            url=url,
            reason="query",
        )
    found = []
    for item in data["result"]:
        try:
            labels = tuple(sorted((str(k), str(v)) for k, v in item["metric"].items()))
            points = tuple((float(t), float(v)) for t, v in item["values"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MetricsUnavailableError(
                f"Prometheus at {url} answered a malformed series ({exc}): {item!r:.200}",
                url=url,
                reason="query",
            ) from exc
        points = tuple(point for point in points if math.isfinite(point[1]))
        if points:
            found.append(SeriesSamples(labels, points))
    logger.debug("%s: %d series for %s", url, len(found), query)
    return found
