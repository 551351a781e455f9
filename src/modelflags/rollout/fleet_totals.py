"""Fleet totals per version since a rollout started, exact across counter resets.

Each instance exports cumulative counters (:mod:`modelflags.telemetry.prometheus`); a restarted
instance starts them again from zero. :class:`FleetTotals` keeps, for every series (one metric of
one version on one instance), its last value and its total since the rollout started, and adds
what each new scrape brings:

- the first read of a rollout records every series' current value as its starting point (what
  an instance counted before the rollout is not evidence about it);
- a later scrape adds ``value - last``; when a counter of the instance's series group (same
  labels but the metric name and ``le``) went *down* at that scrape, the instance restarted:
  the scrape adds ``value`` (what it counted since the restart) for every series of the group.
  ``outcome_sum`` may go down on its own (negative outcome values), so it is never a witness;
- a series first seen after the first read (a new instance, a version's first call) counts from
  zero.

Raw samples are read (:mod:`modelflags.rollout.promql`), so a reset is seen at the scrape where it
happened; a restart goes unseen only if the new process counted past its predecessor's whole
total within one scrape interval. In gunicorn's multi-process mode a worker's restart is no reset
(the metrics folder keeps its values); emptying the folder and restarting the server is one.

Not safe to share between threads: one controller owns it. :meth:`to_json` /
:meth:`from_json` carry it through a restart of the controller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelflags.errors import MetricsUnavailableError
from modelflags.rollout.evidence import Counts, Moments
from modelflags.rollout.promql import PrometheusSource, SeriesSamples

__all__ = ["FleetReader", "FleetTotals", "VersionTotals"]

FIRST_WINDOW_S = 300.0
"""How far back the first read looks for each series' value (Prometheus' default lookback)."""

_GROUPING_EXCLUDED = ("__name__", "le")


@dataclass(frozen=True, slots=True)
class VersionTotals:
    """One version's fleet totals since the rollout started.

    ``ran``: calls the version ran (``latency_seconds_count``); ``errors``: those that raised;
    ``buckets``: cumulative latency histogram (upper bound in seconds, ``inf`` last -> calls at
    or below it); ``outcome``: the outcome's count, sum and sum of squares (``None`` when no
    instance reported one). ``instances``: how many series groups fed it. Immutable.
    """

    ran: int
    errors: int
    buckets: tuple[tuple[float, int], ...]
    outcome: Moments | None
    instances: int

    def to_json(self) -> dict[str, Any]:
        """The counts, for an audit line."""
        outcome = self.outcome
        return {
            "ran": self.ran,
            "errors": self.errors,
            "instances": self.instances,
            "outcome": None if outcome is None else [outcome.count, outcome.total],
        }

    @property
    def calls(self) -> Counts:
        """Errors among the calls it ran."""
        return Counts(self.ran, min(self.errors, self.ran))

    def slower_than(self, limit_s: float) -> int:
        """Calls surely slower than ``limit_s``: those in buckets wholly above it (a lower bound
        of the true count when ``limit_s`` is not a bucket bound)."""
        at_most = 0
        for bound, count in self.buckets:
            if bound >= limit_s:
                at_most = count
                break
        else:
            return 0
        return max(0, self.ran - at_most)


class FleetTotals:
    """Reset-safe running totals of a model's series since a rollout started (module docs).

    Not safe to share between threads.
    """

    def __init__(self, prefix: str = "modelflags") -> None:
        self.prefix = prefix
        self.started = False
        self._series: dict[str, list[float]] = {}  # key -> [last value, total]
        self._groups: dict[str, float] = {}  # group key -> timestamp of the last scrape absorbed
        self._labels: dict[str, tuple[tuple[str, str], ...]] = {}

    def absorb(self, series: Iterable[SeriesSamples]) -> int:
        """Add the new scrapes of ``series``; returns how many scrapes were new."""
        groups: dict[str, list[SeriesSamples]] = {}
        for item in series:
            groups.setdefault(_group_key(item.labels), []).append(item)
        new = 0
        for group, members in groups.items():
            if not self.started:
                self._baseline(group, members)
            else:
                new += self._advance(group, members)
        self.started = True
        return new

    def _baseline(self, group: str, members: list[SeriesSamples]) -> None:
        latest = max(item.points[-1][0] for item in members)
        self._groups[group] = latest
        for item in members:
            key = _series_key(item.labels)
            self._series[key] = [item.points[-1][1], 0.0]
            self._labels[key] = item.labels

    def _advance(self, group: str, members: list[SeriesSamples]) -> int:
        since = self._groups.get(group, -math.inf)
        by_time: dict[float, list[tuple[str, float, bool]]] = {}
        for item in members:
            key = _series_key(item.labels)
            self._labels.setdefault(key, item.labels)
            witness = not item.name.endswith("_outcome_sum")
            for stamp, value in item.points:
                if stamp > since:
                    by_time.setdefault(stamp, []).append((key, value, witness))
        for stamp in sorted(by_time):
            scrape = by_time[stamp]
            reset = any(
                witness and key in self._series and value < self._series[key][0]
                for key, value, witness in scrape
            )
            for key, value, _ in scrape:
                state = self._series.setdefault(key, [0.0, 0.0])
                state[1] += value if reset else value - state[0]
                state[0] = value
        if by_time:
            self._groups[group] = max(by_time)
        return len(by_time)

    def versions(self) -> set[str]:
        """The versions some series was seen for."""
        return {_label(labels, "version") for labels in self._labels.values()}

    def version(self, version: str, outcome: str | None = None) -> VersionTotals:
        """The totals of ``version`` over every instance (``outcome``: which outcome's sums)."""
        prefix = self.prefix
        ran = errors = 0.0
        buckets: dict[float, float] = {}
        count = total = squares = 0.0
        seen_outcome = False
        instances: set[str] = set()
        for key, (_, value) in self._series.items():
            labels = self._labels[key]
            if _label(labels, "version") != version:
                continue
            name = _label(labels, "__name__")
            if name == f"{prefix}_latency_seconds_count":
                ran += value
                instances.add(_group_key(labels))
            elif name == f"{prefix}_inference_errors_total":
                errors += value
            elif name == f"{prefix}_latency_seconds_bucket":
                bound = float(_label(labels, "le"))
                buckets[bound] = buckets.get(bound, 0.0) + value
            elif outcome is not None and _label(labels, "outcome") == outcome:
                seen_outcome = True
                if name == f"{prefix}_outcome_count":
                    count += value
                elif name == f"{prefix}_outcome_sum":
                    total += value
                elif name == f"{prefix}_outcome_squares_total":
                    squares += value
        moments = None
        if seen_outcome:
            moments = Moments(max(0, round(count)), total, max(0.0, squares))
            if moments.count == 0:
                moments = Moments(0, 0.0, 0.0)
        return VersionTotals(
            ran=max(0, round(ran)),
            errors=max(0, round(errors)),
            buckets=tuple((bound, max(0, round(buckets[bound]))) for bound in sorted(buckets)),
            outcome=moments,
            instances=len(instances),
        )

    # -- persistence ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-able copy of the state."""
        return {
            "prefix": self.prefix,
            "started": self.started,
            "groups": dict(self._groups),
            "series": [
                {"labels": dict(self._labels[key]), "last": last, "total": total}
                for key, (last, total) in self._series.items()
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FleetTotals:
        """The totals :meth:`to_json` wrote; ``ValueError`` on anything else."""
        try:
            totals = cls(str(data["prefix"]))
            totals.started = bool(data["started"])
            totals._groups = {str(k): float(v) for k, v in data["groups"].items()}
            for item in data["series"]:
                labels = tuple(sorted((str(k), str(v)) for k, v in item["labels"].items()))
                key = _series_key(labels)
                totals._labels[key] = labels
                totals._series[key] = [float(item["last"]), float(item["total"])]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not the totals of a rollout: {exc}") from exc
        return totals


class FleetReader:
    """Reads ``versions`` of ``model`` from ``source`` into :attr:`totals` (reset-safe).

    Each read asks for the samples since the previous read plus ``lag_s`` (scrapes that reached
    Prometheus late, and clock differences; samples already absorbed are skipped), at most
    ``max_window_s``. Not safe to share between threads.
    """

    def __init__(
        self,
        source: PrometheusSource,
        model: str,
        versions: tuple[str, ...],
        outcome: str | None,
        *,
        lag_s: float = 30.0,
        max_window_s: float = 3600.0,
    ) -> None:
        self.source, self.model, self.versions, self.outcome = source, model, versions, outcome
        self.lag_s, self.max_window_s = lag_s, max_window_s
        self.totals = FleetTotals(source.prefix)

    def start(self) -> int:
        """The first read: every series' value now becomes its starting point. Returns how many
        series there were. Raises :class:`MetricsUnavailableError`."""
        series = self._fetch(FIRST_WINDOW_S)
        self.totals = FleetTotals(self.source.prefix)
        self.totals.absorb(series)
        return len(series)

    def read(self, since: float | None, now: float) -> dict[str, VersionTotals]:
        """Each version's totals after the scrapes since ``since``. Raises
        :class:`MetricsUnavailableError`, with reason ``"no_series"`` when a version had no
        series in this answer (no data is never read as "nothing happened")."""
        elapsed = self.max_window_s if since is None else max(0.0, now - since)
        series = self._fetch(min(self.max_window_s, elapsed + self.lag_s))
        self.totals.absorb(series)
        answered = {item.label("version") for item in series}
        found = {version: self.totals.version(version, self.outcome) for version in self.versions}
        missing = [v for v, got in found.items() if got.instances == 0 or v not in answered]
        if missing:
            raise MetricsUnavailableError(
                f"no series for {' and '.join(missing)} of model {self.model!r} in "
                f"{self.source.url} yet",
                url=self.source.url,
                reason="no_series",
            )
        return found

    def _fetch(self, window_s: float) -> list[SeriesSamples]:
        return self.source.read(self.model, self.versions, outcome=self.outcome, window_s=window_s)


def _label(labels: tuple[tuple[str, str], ...], key: str) -> str:
    for name, value in labels:
        if name == key:
            return value
    return ""


def _series_key(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{name}={value!r}" for name, value in labels)


def _group_key(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{name}={value!r}" for name, value in labels if name not in _GROUPING_EXCLUDED)
