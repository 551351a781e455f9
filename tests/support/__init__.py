"""Everything the tests share, in one place (importable as ``support``: ``tests/`` is on the path).

Here: artifacts and registries on disk (:class:`Workspace`), flags (:func:`memory_provider`) and a
hand-moved clock (:class:`FakeClock`). In the submodules, re-exported here: waiting on conditions
(:mod:`support.waiting`), traffic generators (:mod:`support.traffic`), event and log recorders
(:mod:`support.recorders`). Fixtures (the artifact HTTP server, the Unleash stack, Chromium) live
in :mod:`support.artifact_server`, :mod:`support.unleash` and :mod:`support.services`, and are
registered by :mod:`support.plugin`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import joblib
import tomli_w
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from support.recorders import EventRecorder, LogRecorder, recording_logs
from support.traffic import Traffic
from support.waiting import holds_for, settles, wait_until

__all__ = [
    "EventRecorder",
    "FakeClock",
    "LogRecorder",
    "Traffic",
    "Workspace",
    "holds_for",
    "memory_provider",
    "recording_logs",
    "settles",
    "sha256_of",
    "wait_until",
]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def memory_provider(flags: Mapping[str, object]) -> InMemoryProvider:
    """An in-memory provider whose flag values are the given values (variant = value)."""
    return InMemoryProvider(
        {key: InMemoryFlag(str(value), {str(value): value}) for key, value in flags.items()}
    )


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
