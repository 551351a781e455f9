"""Test support for applications that serve models with modelflags. Imports without pytest.

- :func:`pinned` pins model versions by model name, process-wide, for a block: every
  :class:`~modelflags.ModelFlags` of the process (including the ones the application makes itself)
  serves the pinned version, ahead of its flags and override files.
- :class:`FakeClock`: a monotonic clock tests move by hand (``ModelFlags(clock=...)``), so
  quarantine back-offs and guardrail windows pass in no time.
- :class:`InMemoryFlags`: a real OpenFeature provider holding flag values in memory; changing a
  value emits the configuration-change event providers emit, so live switches can be tested.
- :class:`RegistryBuilder`: writes artifacts into a folder and a registry that describes them,
  with their sha256 and size computed.

The pytest plugin (fixture ``model_overrides``, marker ``model_versions``) lives in
:mod:`modelflags.pytest_plugin` and is registered through the ``pytest11`` entry point.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from openfeature import api
from openfeature.event import ProviderEventDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags.parts import live_parts
from modelflags.registry import Registry
from modelflags.serving import pins

__all__ = ["FakeClock", "InMemoryFlags", "ModelOverrides", "RegistryBuilder", "pinned"]


@contextlib.contextmanager
def pinned(**versions: str) -> Iterator[None]:
    """Pin models to versions, process-wide, for the block (blocks nest)."""
    token = pins.push(versions)
    try:
        yield
    finally:
        pins.pop(token)


class ModelOverrides:
    """Pins for one test; :meth:`set` adds to them, :meth:`clear` removes them.

    Made by the ``model_overrides`` fixture, which undoes every pin when the test ends.
    Not meant to be shared between threads while pins change.
    """

    def __init__(self) -> None:
        self._tokens: list[int] = []

    def set(self, **versions: str) -> None:
        """Pin these models (by name) to these version ids for the rest of the test."""
        self._tokens.append(pins.push(versions))

    def clear(self) -> None:
        """Remove the pins this object set."""
        if self._tokens:
            pins.pop(self._tokens[0])
            self._tokens.clear()

    @property
    def active(self) -> Mapping[str, str]:
        """Every pin in force in the process now (model name -> version)."""
        return dict(pins.active())


class FakeClock:
    """A monotonic clock tests move by hand: ``clock.advance(5)``. Safe to share between threads."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The current reading."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        with self._lock:
            self._now += seconds


class InMemoryFlags:
    """A real OpenFeature provider with string flags held in memory, for tests.

    ``flags = InMemoryFlags(recommender="v2").install()`` sets it as the provider (of ``domain``,
    or the default one) and waits until it is ready; ``flags.set(recommender="v3")`` changes
    values and emits ``PROVIDER_CONFIGURATION_CHANGED`` naming the changed flags, as flag
    services do. The OpenFeature SDK delivers that event on a thread of its own, a moment later;
    so that a test can assert on its very next request, ``set`` also tells every open
    :class:`~modelflags.ModelFlags` of the process at once (their kept flag answers for those
    flags are dropped before it returns). Safe to share between threads.
    """

    def __init__(self, **values: str) -> None:
        self._lock = threading.Lock()
        self._values = dict(values)
        self.provider = InMemoryProvider(self._flags(self._values))

    def install(self, domain: str | None = None) -> InMemoryFlags:
        """Set this provider in OpenFeature's API and wait until it is ready; returns self."""
        if domain is None:
            api.set_provider_and_wait(self.provider)
        else:
            api.set_provider_and_wait(self.provider, domain)
        return self

    def set(self, **values: str) -> None:
        """Change flag values and announce the change."""
        with self._lock:
            self._values.update(values)
            flags = self._flags(self._values)
        self.provider._flags = flags  # the provider reads this mapping on every evaluation
        for parts in list(live_parts()):
            parts.flags_changed(frozenset(values))
        self.provider.emit_provider_configuration_changed(
            ProviderEventDetails(flags_changed=sorted(values))
        )

    @staticmethod
    def _flags(values: Mapping[str, str]) -> dict[str, InMemoryFlag[Any]]:
        return {key: InMemoryFlag(value, {value: value}) for key, value in values.items()}


class RegistryBuilder:
    """Writes artifacts and a registry describing them, hashing each artifact.

    ``builder.add("recommender", "v1", model)`` dumps ``model`` with joblib into
    ``<folder>/artifacts/`` (or writes ``raw`` bytes) and records its uri, sha256 and size;
    :meth:`write` writes the registry (JSON) and returns its path; :meth:`registry` returns it as
    a :class:`~modelflags.registry.Registry`. Not safe to share between threads.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.models: dict[str, dict[str, Any]] = {}

    def add(
        self,
        model: str,
        version: str,
        obj: Any = None,
        *,
        raw: bytes | None = None,
        suffix: str = ".joblib",
        default: bool = False,
        **fields: Any,
    ) -> Path:
        """Write one artifact and register it (``default``: make it the default version)."""
        path = self.folder / "artifacts" / f"{model}-{version}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            path.write_bytes(raw)
        else:
            import joblib

            joblib.dump(obj, path)
        data = path.read_bytes()
        entry = self.models.setdefault(model, {"versions": {}})
        entry["versions"][version] = {
            "uri": f"artifacts/{path.name}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            **fields,
        }
        if default or "default_version" not in entry:
            entry["default_version"] = version
        return path

    def set(self, model: str, **fields: Any) -> None:
        """Set model-level fields (``flag``, ``shadow_flag``, ``guardrails``, ...)."""
        self.models[model].update(fields)

    def data(self) -> dict[str, Any]:
        """The registry as a mapping."""
        return {"models": self.models}

    def write(self, name: str = "registry.json") -> Path:
        """Write the registry as JSON into the folder; returns its path."""
        path = self.folder / name
        path.write_text(json.dumps(self.data(), indent=2) + "\n", encoding="utf-8")
        return path

    def registry(self) -> Registry:
        """The registry as a validated object (relative URIs resolve against the folder)."""
        return Registry.from_mapping(self.data(), source=str(self.folder), base_dir=self.folder)
