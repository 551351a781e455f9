"""Loaders: verified bytes become a model object.

A loader is registered by name. The registry may name the loader of a version
(``loader = "joblib"``); otherwise it is chosen by the file's suffix. There are two kinds:

- a :class:`VerifiedLoader` (every built-in one; make yours with :func:`verified_loader`)
  receives the :class:`~modelflags.artifacts.verified.VerifiedArtifact` itself and reads the
  verified bytes from memory;
- any other callable ``(path) -> object`` receives the path of a private copy of the verified
  bytes, written for the call into a new folder only this user can enter and removed when the
  call returns. The path is valid only during the call: a loader that reads its file lazily later
  must copy it, or become a :class:`VerifiedLoader`.

Either way the bytes deserialized are the bytes whose sha256 matched; no loader is ever given the
registered file itself. Built in: ``joblib`` (``.joblib``, ``.jbl``), ``pickle`` (``.pkl``,
``.pickle``), ``skops`` (``.skops``, needs the ``skops`` extra; it refuses types that are not
trusted) and ``mlflow`` (an MLflow model folder, a
:class:`~modelflags.artifacts.folders.VerifiedFolder`: see
:mod:`~modelflags.artifacts.mlflow_flavors`; a path loader given a folder gets the path of a
private copy of the whole folder). Both joblib and pickle execute code from the file while
loading: only load artifacts you trust, and pin their sha256.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modelflags.artifacts.chunks import CHUNK_SIZE, ChunkList
from modelflags.artifacts.folders import VerifiedFolder
from modelflags.artifacts.naming import Subject, redact_uri
from modelflags.artifacts.reading import ByteBounds, read_file, suffix_of
from modelflags.artifacts.verified import VerifiedArtifact
from modelflags.errors import DeserializationError, RegistryError
from modelflags.registry import VersionSpec

__all__ = [
    "Loader",
    "LoaderRegistry",
    "VerifiedLoader",
    "joblib_loader",
    "mlflow_loader",
    "pickle_loader",
    "skops_loader",
    "verified_loader",
]

Loader = Callable[[Path], Any]
"""A loader as registered: a callable taking a path, or a :class:`VerifiedLoader` (also one)."""


class VerifiedLoader:
    """A loader that deserializes the verified bytes of a
    :class:`~modelflags.artifacts.verified.VerifiedArtifact`, never a path.

    Wraps ``load(artifact) -> object``. Called with a path (as loaders of earlier releases were),
    it reads that file once and loads those bytes; nothing is verified then, for no digest is
    known. As safe to share between threads as ``load`` is.
    """

    def __init__(self, load: Callable[[Any], Any], *, name: str = "") -> None:
        self._load = load
        self._name = name or getattr(load, "__name__", "loader")

    def load_artifact(self, artifact: VerifiedArtifact | VerifiedFolder) -> Any:
        """Deserialize ``artifact`` (a folder for folder loaders such as ``mlflow``)."""
        return self._load(artifact)

    def __call__(self, source: VerifiedArtifact | VerifiedFolder | str | os.PathLike[str]) -> Any:
        if isinstance(source, VerifiedArtifact | VerifiedFolder):
            return self._load(source)
        return self._load(_read_unchecked(source))

    def __repr__(self) -> str:
        return f"VerifiedLoader({self._name})"


def verified_loader(load: Callable[[VerifiedArtifact], Any]) -> VerifiedLoader:
    """Make ``load(artifact) -> object`` a loader of verified bytes (usable as a decorator)."""
    return VerifiedLoader(load)


def _read_unchecked(path: str | os.PathLike[str]) -> VerifiedArtifact:
    chunks = ChunkList()
    with open(path, "rb", buffering=0) as stream:
        while (view := chunks.read_from(stream, CHUNK_SIZE)) is not None:
            view.release()
    where = os.fspath(path)
    return VerifiedArtifact(Subject.of("", "", where), chunks, sha256=None, suffix=suffix_of(where))


def _load_joblib(artifact: VerifiedArtifact) -> Any:
    import joblib

    return joblib.load(artifact.consume())


def _load_pickle(artifact: VerifiedArtifact) -> Any:
    return pickle.load(artifact.consume())


def _load_skops(artifact: VerifiedArtifact) -> Any:
    from modelflags.artifacts.skops import make_skops_loader

    return make_skops_loader().load_artifact(artifact)


def _load_mlflow(folder: VerifiedFolder | VerifiedArtifact) -> Any:
    from modelflags.artifacts.mlflow_flavors import load_mlflow_folder

    return load_mlflow_folder(folder)


joblib_loader = VerifiedLoader(_load_joblib, name="joblib")
"""Load a joblib file (scikit-learn's usual format). Executes pickle code: trust the file."""

pickle_loader = VerifiedLoader(_load_pickle, name="pickle")
"""Load a plain pickle. Executes pickle code: trust the file."""

skops_loader = VerifiedLoader(_load_skops, name="skops")
"""Load a ``.skops`` file, refusing any type skops does not trust by default."""

mlflow_loader = VerifiedLoader(_load_mlflow, name="mlflow")
"""Load an MLflow model folder (its sklearn flavor, else pyfunc through MLflow)."""

_DEFAULT_LOADERS: dict[str, Loader] = {
    "joblib": joblib_loader,
    "pickle": pickle_loader,
    "skops": skops_loader,
    "mlflow": mlflow_loader,
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

    def load(
        self,
        model: str,
        version: str,
        spec: VersionSpec,
        source: VerifiedArtifact | VerifiedFolder | str | os.PathLike[str],
    ) -> Any:
        """Deserialize a version's verified bytes with its loader.

        ``source`` is the :class:`~modelflags.artifacts.verified.VerifiedArtifact` of
        :meth:`ArtifactStore.open <modelflags.artifacts.ArtifactStore.open>`, or, as in earlier
        releases, a path: that file is then read and verified against ``spec`` (sha256, size)
        here, and its checked bytes are loaded. A loader's failure becomes
        :class:`~modelflags.errors.DeserializationError`; a path that fails its checks raises the
        :class:`~modelflags.errors.ArtifactError` that says why.
        """
        name = self.name_for(model, version, spec)
        with self._lock:
            loader = self._loaders[name]
        artifact: VerifiedArtifact | VerifiedFolder
        if isinstance(source, VerifiedArtifact | VerifiedFolder):
            artifact = source
        else:
            artifact = read_file(
                source,
                Subject.of(model, version, spec.uri),
                sha256=spec.sha256,
                bounds=ByteBounds(size=spec.size),
                suffix=suffix_of(spec.location),
            )
        shown = redact_uri(spec.location)
        if isinstance(loader, VerifiedLoader):
            return _deserialize(model, version, name, shown, loader.load_artifact, artifact)
        with artifact.private_copy() as path:
            return _deserialize(model, version, name, shown, loader, path)


def _deserialize(
    model: str, version: str, name: str, shown: str, call: Callable[[Any], Any], arg: Any
) -> Any:
    try:
        return call(arg)
    except Exception as exc:
        raise DeserializationError(
            f"model {model!r} version {version!r}: loader {name!r} failed on {shown}: "
            f"{type(exc).__name__}: {exc}",
            model=model,
            version=version,
            loader=name,
        ) from exc
