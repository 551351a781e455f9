"""Shared fixtures: real scikit-learn models on disk, registries, real OpenFeature providers."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import tomli_w
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from sklearn.linear_model import LogisticRegression


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    rng = np.random.RandomState(1)
    X = rng.rand(200, 3)
    y1 = (X[:, 0] > 0.5).astype(int)
    y2 = (X[:, 1] > 0.5).astype(int)
    return {
        "v1": LogisticRegression().fit(X, y1),
        "v2": LogisticRegression().fit(X, y2),
    }


class Workspace:
    """A folder with artifacts and a registry describing them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models: dict[str, dict[str, Any]] = {}

    def add(
        self,
        model: str,
        version: str,
        obj: Any = None,
        *,
        raw: bytes | None = None,
        suffix: str = ".joblib",
        digest: bool = True,
        default: bool = False,
        **fields: Any,
    ) -> Path:
        """Write an artifact (an object with joblib, or raw bytes) and register it."""
        path = self.root / "artifacts" / f"{model}-{version}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            path.write_bytes(raw)
        else:
            joblib.dump(obj, path)
        entry = self.models.setdefault(model, {"versions": {}})
        spec: dict[str, Any] = {"uri": f"artifacts/{path.name}", **fields}
        if digest:
            spec["sha256"] = sha256_of(path)
        entry["versions"][version] = spec
        if default or "default_version" not in entry:
            entry["default_version"] = version
        return path

    def set(self, model: str, **fields: Any) -> None:
        self.models[model].update(fields)

    def data(self) -> dict[str, Any]:
        return {"models": self.models}

    def write(self, name: str = "registry.toml") -> Path:
        path = self.root / name
        if name.endswith(".json"):
            path.write_text(json.dumps(self.data(), indent=2))
        else:
            path.write_text(tomli_w.dumps(self.data()))
        return path


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def memory_provider(flags: Mapping[str, object]) -> InMemoryProvider:
    """An in-memory provider whose flag values are the given values (variant = value)."""
    return InMemoryProvider(
        {key: InMemoryFlag(str(value), {str(value): value}) for key, value in flags.items()}
    )


@pytest.fixture
def set_flags() -> Callable[..., None]:
    """Install a real in-memory provider with flag key -> value."""

    def install(**flags: object) -> None:
        api.set_provider_and_wait(memory_provider(flags))

    return install


class FakeClock:
    """A monotonic clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
