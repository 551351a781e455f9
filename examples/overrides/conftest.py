"""Builds the app's model versions and registry once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from sklearn.dummy import DummyClassifier


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three versions of 'recommender' that always answer 1, 2 and 3."""
    folder = tmp_path_factory.mktemp("models")
    X = np.zeros((4, 2))
    lines = ["[models.recommender]", 'default_version = "v1"']
    for label in (1, 2, 3):
        model = DummyClassifier(strategy="constant", constant=label).fit(X, [1, 2, 3, label])
        joblib.dump(model, folder / f"v{label}.joblib")
        lines += [f"[models.recommender.versions.v{label}]", f'uri = "v{label}.joblib"']
    path = folder / "registry.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def flag_service() -> Iterator[None]:
    """Production would use a real flag service; here everyone is on v1."""
    api.set_provider_and_wait(InMemoryProvider({"recommender": InMemoryFlag("v1", {"v1": "v1"})}))
    yield
    api.clear_providers()
