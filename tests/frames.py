"""Training data with named features, and real scikit-learn pipelines fitted on it.

The application's input today has ``age``, ``income``, ``visits`` and ``country``; older versions
were trained before ``visits`` and ``country`` existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

TODAY = ("age", "income", "visits", "country")
OLDER = ("age", "income")
NUMERIC = ("age", "income", "visits")


def frame(rows: int, *, seed: int = 0, age_shift: float = 0.0, **columns: Any) -> pd.DataFrame:
    """Customers: ``age`` (normal, moved by ``age_shift``), ``income`` (log-normal), ``visits``
    (Poisson) and ``country`` (three values); ``columns`` replace or add columns."""
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "age": rng.normal(40.0 + age_shift, 10.0, rows),
            "income": rng.lognormal(10.0, 0.5, rows),
            "visits": rng.poisson(3.0, rows).astype(float),
            "country": rng.choice(["de", "fr", "it"], rows, p=[0.5, 0.3, 0.2]),
        }
    )
    for name, values in columns.items():
        data[name] = values
    return data


def target(data: pd.DataFrame) -> np.ndarray:
    return np.asarray((data["age"] > 40).astype(int))


def by_name(features: Sequence[str], data: pd.DataFrame) -> Pipeline:
    """A pipeline that selects its columns by name (a ColumnTransformer first)."""
    numeric = [name for name in features if name in NUMERIC]
    parts: list[Any] = [(StandardScaler(), numeric)]
    if "country" in features:
        parts.append((OneHotEncoder(handle_unknown="ignore"), ["country"]))
    pipeline = make_pipeline(make_column_transformer(*parts), LogisticRegression())
    return pipeline.fit(data[list(features)], target(data))


def plain(features: Sequence[str], data: pd.DataFrame) -> Pipeline:
    """A pipeline that takes exactly its training columns, in order (a scaler first)."""
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(
        data[list(features)], target(data)
    )
