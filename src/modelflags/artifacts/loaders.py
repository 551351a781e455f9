"""Loaders: a verified local file becomes a model object.

A loader is any callable ``(path) -> object``, registered by name. The registry may name the loader
of a version (``loader = "joblib"``); otherwise it is chosen by the file's suffix. Built in:
``joblib`` (``.joblib``, ``.jbl``), ``pickle`` (``.pkl``, ``.pickle``) and ``skops`` (``.skops``,
needs the ``skops`` extra; it refuses types that are not trusted). Both joblib and pickle execute
code from the file while loading: only load artifacts you trust, and pin their sha256.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modelflags.errors import DeserializationError, RegistryError
from modelflags.registry import VersionSpec

__all__ = ["Loader", "LoaderRegistry", "joblib_loader", "pickle_loader", "skops_loader"]

Loader = Callable[[Path], Any]


def joblib_loader(path: Path) -> Any:
    """Load a joblib file (scikit-learn's usual format). Executes pickle code: trust the file."""
    import joblib

    return joblib.load(path)


def pickle_loader(path: Path) -> Any:
    """Load a plain pickle. Executes pickle code: trust the file."""
    with open(path, "rb") as stream:
        return pickle.load(stream)


def skops_loader(path: Path) -> Any:
    """Load a ``.skops`` file, refusing any type skops does not trust by default."""
    from modelflags.artifacts.skops import make_skops_loader

    return make_skops_loader()(path)


_DEFAULT_LOADERS: dict[str, Loader] = {
    "joblib": joblib_loader,
    "pickle": pickle_loader,
    "skops": skops_loader,
}
_DEFAULT_SUFFIXES = {
    ".joblib": "joblib",
    ".jbl": "joblib",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".skops": "skops",
}


class LoaderRegistry:
    """Loaders by name and by file suffix.

    Safe to share between threads; registering while serving is allowed.
    """

    def __init__(self, loaders: Mapping[str, Loader] | None = None) -> None:
        self._lock = threading.Lock()
        self._loaders: dict[str, Loader] = dict(_DEFAULT_LOADERS)
        self._suffixes: dict[str, str] = dict(_DEFAULT_SUFFIXES)
        for name, loader in (loaders or {}).items():
            self.register(name, loader)

    def register(self, name: str, loader: Loader, *, suffixes: tuple[str, ...] = ()) -> None:
        """Register ``loader`` under ``name`` and, optionally, as the default for ``suffixes``."""
        if not name:
            raise ValueError("a loader needs a name")
        with self._lock:
            self._loaders[name] = loader
            for suffix in suffixes:
                self._suffixes[
                    suffix.lower() if suffix.startswith(".") else f".{suffix.lower()}"
                ] = name

    def names(self) -> list[str]:
        """The registered loader names."""
        with self._lock:
            return sorted(self._loaders)

    def name_for(self, model: str, version: str, spec: VersionSpec) -> str:
        """The loader name of a version: the registry's choice, else by suffix, else joblib."""
        with self._lock:
            if spec.loader is not None:
                if spec.loader not in self._loaders:
                    known = ", ".join(sorted(self._loaders))
                    raise RegistryError(
                        f"model {model!r} version {version!r}: unknown loader {spec.loader!r} "
                        f"(known: {known})",
                        model=model,
                        field=f"versions.{version}.loader",
                    )
                return spec.loader
            suffix = Path(spec.location.split("?", 1)[0]).suffix.lower()
            return self._suffixes.get(suffix, "joblib")

    def load(self, model: str, version: str, spec: VersionSpec, path: Path) -> Any:
        """Deserialize ``path`` with the version's loader; failures become DeserializationError."""
        name = self.name_for(model, version, spec)
        with self._lock:
            loader = self._loaders[name]
        try:
            return loader(path)
        except Exception as exc:
            raise DeserializationError(
                f"model {model!r} version {version!r}: loader {name!r} failed on {path}: "
                f"{type(exc).__name__}: {exc}",
                model=model,
                version=version,
                loader=name,
            ) from exc
