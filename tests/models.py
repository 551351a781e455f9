"""Small picklable model classes used by the tests (importable as ``models``)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Constant:
    """Predicts the same label for every row."""

    def __init__(self, label: int) -> None:
        self.label = label
        self.threshold = 0.5

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.label)

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.tile([1.0 - self.label, float(self.label)], (len(X), 1))

    def explain(self, X: Any) -> str:
        return f"constant {self.label} for {len(X)} rows"

    def __call__(self, X: Any) -> np.ndarray:
        return self.predict(X)


class Broken(Constant):
    """Loads fine, raises at every inference call."""

    def predict(self, X: Any) -> np.ndarray:
        raise RuntimeError("broken model")

    def predict_proba(self, X: Any) -> np.ndarray:
        raise RuntimeError("broken model")


class PickyAboutInput(Constant):
    """Raises ValueError on empty input, like most estimators."""

    def predict(self, X: Any) -> np.ndarray:
        if len(X) == 0:
            raise ValueError("empty input")
        return super().predict(X)


class ExitsOnNegative(Constant):
    """Ends its process abruptly when the first value of the input is negative (a crash)."""

    def predict(self, X: Any) -> np.ndarray:
        if float(np.asarray(X, dtype=float).ravel()[0]) < 0:
            import os

            os._exit(3)
        return super().predict(X)
