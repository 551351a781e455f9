"""Reference statistics of a version's training sample, and the drift rules that use them.

At registration, each feature of the training sample (``reference=X_train``, or
``--reference FILE``) is summarised in a few numbers kept in the version's entry: for a numeric
feature the inner edges of (at most) ten quantile bins and the share of values in each bin; for a
text or categorical one its ten most frequent values and their shares (the rest pooled as
"other"); for both the share of missing values::

    [models.recommender.versions.v3.reference]
    rows = 5000
    [models.recommender.versions.v3.reference.features.age]
    edges = [23.0, 27.0, 31.0, 35.0, 39.0, 44.0, 49.0, 55.0, 62.0]
    shares = [0.098, 0.101, 0.1, 0.103, 0.097, 0.1, 0.1, 0.102, 0.099, 0.1]
    missing = 0.012

    [models.recommender.drift]           # what drift the serving process watches for
    max_feature_psi = 0.2                # population stability index of any one feature
    max_missing_increase = 0.1           # missing share above the reference's, 0..1
    sample = 0.01                        # share of calls whose input is looked at
    window_s = 3600                      # sliding window of the figures
    min_samples = 500                    # rows needed in the window before judging
    action = "alert"                     # or "rollback"

The serving side (:mod:`modelflags.rollout.drift`) bins sampled inputs with the same edges and
compares the shares. Everything here is small and plain: about twenty numbers a feature.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DriftRules",
    "FeatureReference",
    "ReferenceStats",
    "columns_of",
    "read_sample",
    "reference_statistics",
]

_SHARE_TOLERANCE = 1e-3


class FeatureReference(BaseModel):
    """One feature of the training sample.

    Numeric: ``edges`` (inner bin edges, increasing; a value ``x`` falls in bin ``i`` when
    ``edges[i-1] <= x < edges[i]``) and ``shares`` (the share of non-missing values in each of
    the ``len(edges) + 1`` bins). Categorical: ``categories`` (the most frequent values, written
    as strings) and ``shares`` (one per category, then one for every other value). ``missing``:
    the share of missing values (NaN, None).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] | None = None
    shares: tuple[float, ...]
    missing: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> FeatureReference:
        if self.categories is not None:
            if self.edges:
                raise ValueError("a feature has edges (numeric) or categories, not both")
            bins = len(self.categories) + 1
        else:
            if any(not math.isfinite(edge) for edge in self.edges):
                raise ValueError("edges must be finite numbers")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError("edges must increase")
            bins = len(self.edges) + 1
        if len(self.shares) != bins:
            raise ValueError(f"{bins} shares expected (one per bin), not {len(self.shares)}")
        if any(not 0.0 <= share <= 1.0 for share in self.shares):
            raise ValueError("shares must be between 0 and 1")
        total = sum(self.shares)
        if abs(total - 1.0) > _SHARE_TOLERANCE and not (total == 0.0 and self.missing == 1.0):
            raise ValueError(f"shares must add up to 1, not {total:.6g}")
        return self

    @property
    def categorical(self) -> bool:
        """True for a feature summarised by its values rather than by bins."""
        return self.categories is not None


class ReferenceStats(BaseModel):
    """The reference statistics of a version: the sample's ``rows`` and each feature's summary,
    in the order of the sample's columns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(ge=1)
    features: dict[str, FeatureReference]

    @model_validator(mode="after")
    def _has_features(self) -> ReferenceStats:
        if not self.features:
            raise ValueError("reference statistics need at least one feature")
        return self


class DriftRules(BaseModel):
    """The ``drift`` table of a model: what the serving process watches in its input.

    ``max_feature_psi``: the population stability index of a feature, over the window, above
    which drift is reported; ``max_missing_increase``: how far a feature's missing share may
    rise above the reference's. ``sample``: the share of calls whose input is looked at (off the
    request thread); ``window_s``: the sliding window; ``min_samples``: rows in the window before
    anything is judged. ``action``: ``"alert"`` (an event and a log line) or ``"rollback"`` (the
    version is also rolled back when it is not the last known good one).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_feature_psi: float | None = Field(default=None, gt=0.0)
    max_missing_increase: float | None = Field(default=None, gt=0.0, le=1.0)
    sample: float = Field(default=0.01, gt=0.0, le=1.0)
    window_s: float = Field(default=3600.0, gt=0.0)
    min_samples: int = Field(default=500, ge=1)
    action: Literal["alert", "rollback"] = "alert"

    @model_validator(mode="after")
    def _needs_a_rule(self) -> DriftRules:
        if self.max_feature_psi is None and self.max_missing_increase is None:
            raise ValueError("drift needs a rule: max_feature_psi or max_missing_increase")
        return self


# -- computing them --------------------------------------------------------------------------


def reference_statistics(
    sample: object,
    *,
    features: Sequence[str] | None = None,
    bins: int = 10,
    categories: int = 10,
) -> ReferenceStats:
    """Summarise ``sample`` (a DataFrame, a mapping of columns or a 2-D array) per feature.

    ``features`` names the columns of an array (default ``x0``, ``x1``, ...), or picks those of
    a DataFrame. Raises ``ValueError`` for a sample that is empty, not two-dimensional, or
    lacks a named feature.
    """
    if bins < 2:
        raise ValueError("reference statistics need at least 2 bins")
    columns = columns_of(sample, features)
    rows = len(next(iter(columns.values())))
    if rows == 0:
        raise ValueError("the reference sample has no rows")
    summary = {name: _summarise(values, bins, categories) for name, values in columns.items()}
    return ReferenceStats(rows=rows, features=summary)


def columns_of(sample: object, features: Sequence[str] | None = None) -> dict[str, Any]:
    """The columns of ``sample`` by feature name, as one-dimensional arrays.

    Raises ``ValueError`` when it is not two-dimensional, when ``features`` does not fit it
    (another count for an array; names it lacks for a DataFrame or mapping), or is empty.
    """
    import numpy as np

    names = getattr(sample, "columns", None)
    if names is not None or isinstance(sample, Mapping):
        getter: Any = sample
        have = [str(name) for name in (names if names is not None else getter.keys())]
        chosen = list(features) if features is not None else have
        missing = [name for name in chosen if name not in have]
        if missing:
            raise ValueError(
                f"the sample lacks {_names(missing)} (it has {_names(have) or 'no columns'})"
            )
        if not chosen:
            raise ValueError("the sample has no columns")
        return {name: np.asarray(getter[name]) for name in chosen}
    array = np.asarray(sample)
    if array.ndim != 2:
        raise ValueError(f"the sample must be two-dimensional (rows x features), not {array.shape}")
    count = array.shape[1]
    if features is not None and len(features) != count:
        raise ValueError(f"the sample has {count} columns, not the {len(features)} features named")
    if count == 0:
        raise ValueError("the sample has no columns")
    chosen = list(features) if features is not None else [f"x{i}" for i in range(count)]
    return {name: array[:, i] for i, name in enumerate(chosen)}


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:8])
    return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def numeric(values: Any) -> Any:
    """``values`` as floats with NaN for missing ones, or None when they are not all numbers."""
    import numpy as np

    if values.dtype.kind in "fiu":
        return values.astype(np.float64, copy=False)
    if values.dtype.kind != "O":
        return None
    try:
        return np.array([np.nan if is_missing(item) else item for item in values], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def is_missing(value: object) -> bool:
    """True for None and NaN (pandas' NA and NaT included)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def _summarise(values: Any, bins: int, categories: int) -> FeatureReference:
    import numpy as np

    floats = numeric(values)
    if floats is not None:
        present = floats[~np.isnan(floats)]
        missing = 1.0 - present.size / floats.size
        if not present.size:
            return FeatureReference(shares=(0.0,), missing=1.0)
        cuts = np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1])
        edges = sorted({_round(float(edge)) for edge in cuts if math.isfinite(edge)})
        counts = np.bincount(
            np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1
        )
        shares = tuple(_round(float(c) / present.size, 6) for c in counts)
        return FeatureReference(edges=tuple(edges), shares=_normalised(shares), missing=missing)
    texts = [str(item) for item in values.tolist() if not is_missing(item)]
    missing = 1.0 - len(texts) / len(values)
    if not texts:
        return FeatureReference(categories=(), shares=(0.0,), missing=1.0)
    counted = Counter(texts)
    top = sorted(counted, key=lambda value: (-counted[value], value))[:categories]
    parts = [counted[value] / len(texts) for value in top]
    parts.append(1.0 - sum(parts))
    rounded = tuple(_round(max(0.0, share), 6) for share in parts)
    return FeatureReference(categories=tuple(top), shares=_normalised(rounded), missing=missing)


def _round(value: float, digits: int | None = None) -> float:
    """Six significant digits (or ``digits`` decimals): the registry stays readable."""
    if digits is not None:
        return round(value, digits)
    return float(f"{value:.6g}")


def _normalised(shares: tuple[float, ...]) -> tuple[float, ...]:
    """Rounded shares whose sum is exactly 1 again (the rounding put on the largest)."""
    excess = round(1.0 - sum(shares), 6)
    if not excess:
        return shares
    largest = max(range(len(shares)), key=shares.__getitem__)
    fixed = list(shares)
    fixed[largest] = round(fixed[largest] + excess, 6)
    return tuple(fixed)


# -- reading a sample from a file --------------------------------------------------------------


def read_sample(path: str | os.PathLike[str]) -> Any:
    """A sample read from ``.npy`` (no pickled objects) or ``.csv`` (a header row of names).

    A CSV is read with pandas when it is installed (a DataFrame), else into columns of numbers
    (or text, for a column that is not all numbers). Raises ``ValueError`` for another suffix or
    an unreadable file.
    """
    import numpy as np

    file = Path(path)
    suffix = file.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {file} as a NumPy array: {exc}") from exc
    if suffix != ".csv":
        raise ValueError(f"{file}: a sample is read from .npy or .csv, not {suffix or 'this file'}")
    try:
        import pandas as pd
    except ImportError:
        return _read_csv_columns(file)
    try:
        return pd.read_csv(file)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {file} as CSV: {exc}") from exc


def _read_csv_columns(file: Path) -> dict[str, Any]:
    import numpy as np

    try:
        with file.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {file} as CSV: {exc}") from exc
    if len(rows) < 2:
        raise ValueError(f"{file}: a CSV sample needs a header row and at least one row")
    header, body = rows[0], rows[1:]
    columns: dict[str, Any] = {}
    for i, name in enumerate(header):
        cells = [row[i] if i < len(row) else "" for row in body]
        try:
            columns[name] = np.array([float(c) if c.strip() else np.nan for c in cells])
        except ValueError:
            columns[name] = np.array([c if c.strip() else None for c in cells], dtype=object)
    return columns
