"""Population statistics of served inputs: binning against a reference, sliding windows, PSI.

The **population stability index** of one feature compares the share of serving rows in each bin
of the training sample's quantile bins (``a_i``) with the training sample's own shares (``e_i``)::

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

(Siddiqi, *Credit Risk Scorecards*, Wiley 2006, ch. 8; its distribution in Yurdakul, *Statistical
Properties of Population Stability Index*, Western Michigan University, 2018). Shares of zero are
floored at :data:`EPSILON` so an empty bin counts as a rare one. Read it as: below 0.1 no real
shift, 0.1 to 0.25 a moderate one, above 0.25 a large one.

**False alarms.** With ``n`` serving rows and a reference of ``N`` rows drawn from the same
population, ``PSI / (1/n + 1/N)`` follows approximately a chi-squared law with ``B - 1`` degrees of
freedom, ``B`` the number of bins (Yurdakul 2018, theorem 3.1). :func:`false_alarm_rate` gives
the chance that a feature that did not move exceeds a threshold: for 10 bins, ``n = 500`` (the
default ``min_samples``), ``N = 1000`` and a threshold of 0.2 it is below 1e-10, so the default
rule fires on real shifts only. It assumes independent rows; rows of one call are often alike,
which makes the figure optimistic for large batches (each sampled call adds at most 1000 rows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelflags.registry.reference import FeatureReference, ReferenceStats, is_missing, numeric

__all__ = [
    "EPSILON",
    "MAX_ROWS_PER_SAMPLE",
    "FeatureFigures",
    "Window",
    "bin_counts",
    "false_alarm_rate",
    "psi",
    "sample_columns",
]

EPSILON = 1e-4
"""The smallest share a bin is given in the PSI (an empty bin would make it infinite)."""

MAX_ROWS_PER_SAMPLE = 1000
"""Rows taken from one sampled call, so one large batch cannot fill the window alone."""


def psi(expected: Any, actual: Any) -> float:
    """The population stability index of ``actual`` shares against ``expected`` ones (see the
    module docs); both sum to 1 over the same bins."""
    import numpy as np

    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def false_alarm_rate(threshold: float, bins: int, rows: int, reference_rows: int) -> float:
    """The chance that a feature with no shift has a PSI above ``threshold`` with ``rows``
    serving rows against a reference of ``reference_rows`` (chi-squared approximation)."""
    if rows < 1 or reference_rows < 1 or bins < 2:
        return 1.0
    statistic = threshold / (1.0 / rows + 1.0 / reference_rows)
    return _chi2_survival(statistic, bins - 1)


def _chi2_survival(x: float, k: int) -> float:
    """P(X > x) for X ~ chi-squared with ``k`` degrees of freedom (series of the regularized
    upper incomplete gamma function; exact for the small ``k`` used here)."""
    if x <= 0:
        return 1.0
    half = x / 2.0
    if k % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, k // 2):
            term *= half / i
            total += term
        return min(1.0, math.exp(-half) * total)
    total = math.erfc(math.sqrt(half))
    term = math.exp(-half) * math.sqrt(half) / math.gamma(1.5)
    for i in range(1, (k - 1) // 2 + 1):
        total += term
        term *= half / (i + 0.5)
    return min(1.0, total)


def sample_columns(data: Any, features: tuple[str, ...]) -> dict[str, Any]:
    """The columns of one sampled input by feature (at most :data:`MAX_ROWS_PER_SAMPLE` rows).

    A DataFrame (or mapping) gives the reference features it has, by name; an array is read by
    position and must have one column per reference feature. Raises ``ValueError`` otherwise.
    """
    import numpy as np

    names = getattr(data, "columns", None)
    if names is not None or isinstance(data, Mapping):
        have = {str(name) for name in (names if names is not None else data.keys())}
        return {
            name: np.asarray(data[name])[:MAX_ROWS_PER_SAMPLE] for name in features if name in have
        }
    if hasattr(data, "toarray"):  # a sparse matrix
        data = data[:MAX_ROWS_PER_SAMPLE].toarray()
    array = np.asarray(data)
    if array.ndim != 2 or array.shape[1] != len(features):
        raise ValueError(f"an input of shape {array.shape} for {len(features)} features")
    array = array[:MAX_ROWS_PER_SAMPLE]
    return {name: array[:, i] for i, name in enumerate(features)}


def bin_counts(reference: FeatureReference, values: Any) -> tuple[Any, int]:
    """How many of ``values`` fall in each bin of ``reference``, and how many are missing."""
    import numpy as np

    if reference.categories is None:
        floats = numeric(values)
        if floats is None:
            raise ValueError("values that are not numbers for a numeric feature")
        present = floats[~np.isnan(floats)]
        counts = np.bincount(
            np.searchsorted(reference.edges, present, side="right"),
            minlength=len(reference.edges) + 1,
        )
        return counts, int(floats.size - present.size)
    index = {category: i for i, category in enumerate(reference.categories)}
    other = len(reference.categories)
    counts = np.zeros(other + 1, dtype=np.int64)
    missing = 0
    for item in values.tolist():
        if is_missing(item):
            missing += 1
        else:
            counts[index.get(str(item), other)] += 1
    return counts, missing


@dataclass(frozen=True, slots=True)
class FeatureFigures:
    """One feature over the window: its PSI (None before any non-missing row), its missing share
    and the reference's."""

    psi: float | None
    missing: float
    reference_missing: float


class _Slice:
    __slots__ = ("counts", "epoch", "missing", "rows")

    def __init__(self, reference: ReferenceStats) -> None:
        import numpy as np

        self.epoch = -1
        self.rows = 0
        self.counts = {
            name: np.zeros(len(feature.shares), dtype=np.int64)
            for name, feature in reference.features.items()
        }
        self.missing = dict.fromkeys(reference.features, 0)

    def restart(self, epoch: int) -> None:
        self.epoch = epoch
        self.rows = 0
        for counts in self.counts.values():
            counts[:] = 0
        for name in self.missing:
            self.missing[name] = 0


class Window:
    """Bin counts of one (model, version) over a sliding window of ``window_s`` seconds, in
    ``buckets`` time slices (the same ring as the serving metrics). Not safe to share between
    threads: the drift watch's worker owns it."""

    def __init__(self, reference: ReferenceStats, *, window_s: float, buckets: int = 12) -> None:
        self.reference = reference
        self.window_s = window_s
        self._slice_s = window_s / buckets
        self._slices = [_Slice(reference) for _ in range(buckets)]

    def add(self, now: float, columns: Mapping[str, Any]) -> int:
        """Count one sample's columns; returns its rows (features it lacks count as missing)."""
        epoch = int(now // self._slice_s)
        current = self._slices[epoch % len(self._slices)]
        if current.epoch != epoch:
            current.restart(epoch)
        rows = max((len(values) for values in columns.values()), default=0)
        for name, feature in self.reference.features.items():
            values = columns.get(name)
            if values is None:
                current.missing[name] += rows
                continue
            counts, missing = bin_counts(feature, values)
            current.counts[name] += counts
            current.missing[name] += missing
        current.rows += rows
        return rows

    def figures(self, now: float) -> tuple[int, dict[str, FeatureFigures]]:
        """Rows in the window, and each feature's figures."""
        import numpy as np

        epoch = int(now // self._slice_s)
        live = [s for s in self._slices if 0 <= epoch - s.epoch < len(self._slices)]
        rows = sum(s.rows for s in live)
        figures: dict[str, FeatureFigures] = {}
        for name, feature in self.reference.features.items():
            counts = sum((s.counts[name] for s in live), np.zeros(len(feature.shares), np.int64))
            missing = sum(s.missing[name] for s in live)
            present = int(counts.sum())
            value = psi(feature.shares, counts / present) if present else None
            share = missing / rows if rows else 0.0
            figures[name] = FeatureFigures(value, share, feature.missing)
        return rows, figures
