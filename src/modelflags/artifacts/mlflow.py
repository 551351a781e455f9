"""MLflow's artifact stores as a :class:`~modelflags.artifacts.folder_cache.FolderSource`.

A model version's files live where MLflow's server put them: a folder on this machine (``mlflow
server --default-artifact-root DIR``, read directly by
:class:`~modelflags.artifacts.folder_cache.LocalFolderSource`), or a store MLflow's client knows
(the server's ``mlflow-artifacts:`` proxy, S3, GCS, Azure, ...), listed and downloaded file by
file with ``mlflow.artifacts.list_artifacts`` and ``mlflow.artifacts.download_artifacts``.
Retries and timeouts of those downloads are MLflow's own (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``).

``mlflow`` (the ``mlflow`` extra) is imported on first use, never before.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tempfile
from pathlib import Path
from typing import Any

from modelflags.artifacts.folder_cache import FolderSource, LocalFolderSource, local_folder_path

__all__ = ["MLFLOW_BOOKKEEPING", "MlflowArtifactSource", "folder_source_for", "mlflow_module"]

_MAX_FILES = 100_000

MLFLOW_BOOKKEEPING = frozenset({"registered_model_meta"})
"""Files MLflow itself writes into a model folder after it was logged, left out of the folder
(and its digest): ``mlflow.<flavor>.load_model("models:/...")`` writes ``registered_model_meta``
(the registered name and version) into a local artifact folder in place."""


def mlflow_module(name: str, why: str) -> Any:
    """Import ``mlflow`` or one of its modules, or say which extra is missing and why."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"{why} needs MLflow's client: pip install 'modelflags[mlflow]' ({exc})"
        ) from exc


class MlflowArtifactSource:
    """The files of a folder in any artifact store MLflow's client can read.

    ``tracking_uri`` is passed to MLflow for the stores that need it (``mlflow-artifacts:``).
    Keeps no state: safe to share between threads (as MLflow's artifact functions are).
    """

    def __init__(
        self, tracking_uri: str | None = None, ignore: frozenset[str] = MLFLOW_BOOKKEEPING
    ) -> None:
        self._tracking_uri = tracking_uri
        self._ignore = ignore

    def list_files(self, location: str) -> list[tuple[str, int | None]]:
        """Every file below ``location``, listed folder by folder."""
        artifacts = mlflow_module("mlflow.artifacts", "reading an MLflow artifact store")
        found: list[tuple[str, int | None]] = []
        pending = [""]
        while pending:
            folder = pending.pop()
            uri = _join(location, folder)
            for info in artifacts.list_artifacts(artifact_uri=uri, tracking_uri=self._tracking_uri):
                name = posixpath.basename(str(info.path).rstrip("/"))
                relative = f"{folder}/{name}" if folder else name
                if info.is_dir:
                    pending.append(relative)
                elif relative in self._ignore:
                    continue
                else:
                    size = info.file_size
                    found.append((relative, int(size) if size is not None else None))
                if len(found) + len(pending) > _MAX_FILES:
                    raise ValueError(f"{location} lists more than {_MAX_FILES} files")
        if not found:
            raise FileNotFoundError(f"no files at {location}")
        return found

    def download(self, location: str, path: str, target: Path) -> None:
        """Download one file into a folder beside ``target``, then move it there."""
        artifacts = mlflow_module("mlflow.artifacts", "reading an MLflow artifact store")
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".mlflow-") as scratch:
            landed = Path(
                artifacts.download_artifacts(
                    artifact_uri=_join(location, path),
                    dst_path=scratch,
                    tracking_uri=self._tracking_uri,
                )
            )
            if not stat.S_ISREG(os.lstat(landed).st_mode):
                raise ValueError(f"{path!r} of {location} did not arrive as a regular file")
            os.replace(landed, target)


def folder_source_for(location: str, tracking_uri: str | None) -> FolderSource:
    """The source of a version's files: read directly when they are on this machine, else
    through MLflow's client."""
    if local_folder_path(location) is not None:
        return LocalFolderSource(MLFLOW_BOOKKEEPING)
    return MlflowArtifactSource(tracking_uri)


def _join(location: str, path: str) -> str:
    if not path:
        return location
    return f"{location.rstrip('/')}/{path}"
