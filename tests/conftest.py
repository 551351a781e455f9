"""Shared fixtures: real scikit-learn models on disk, registries, real OpenFeature providers.

The fixtures for services (the artifact HTTP server, the Unleash stack, Chromium) come from the
support plugin registered here (``tests/support/plugin.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext

from support import FakeClock, Workspace, memory_provider
from support.plugin import register

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

# Collecting means compiling and rewriting the asserts of about a hundred test modules: seconds in
# every worker. Keep the result in __pycache__ (ignored by git) even where the environment asks
# Python not to write bytecode (PYTHONDONTWRITEBYTECODE), so that runs after the first skip it.
sys.dont_write_bytecode = False

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    register(config)


@pytest.fixture(autouse=True)
def _reset_openfeature() -> Iterator[None]:
    """Every test starts and ends with no provider, hooks or context set globally."""
    yield
    api.clear_providers()
    api.clear_hooks()
    api.set_evaluation_context(EvaluationContext())


@pytest.fixture(scope="session")
def features() -> np.ndarray:
    return np.random.RandomState(0).rand(40, 3)


@pytest.fixture(scope="session")
def trained() -> dict[str, LogisticRegression]:
    """Two real classifiers that disagree on part of the input space."""
    from sklearn.linear_model import LogisticRegression  # here: the main xdist process skips it

    rng = np.random.RandomState(1)
    X = rng.rand(200, 3)
    y1 = (X[:, 0] > 0.5).astype(int)
    y2 = (X[:, 1] > 0.5).astype(int)
    return {
        "v1": LogisticRegression().fit(X, y1),
        "v2": LogisticRegression().fit(X, y2),
    }


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture
def set_flags() -> Callable[..., None]:
    """Install a real in-memory provider with flag key -> value."""

    def install(**flags: object) -> None:
        api.set_provider_and_wait(memory_provider(flags))

    return install


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
