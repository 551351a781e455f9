"""Pinning an MLflow model version: its folder digest computed here and recorded.

:func:`pin_version` downloads the version's files into the verified cache (so the first request
does not pay for them), computes their folder digest (:mod:`modelflags.artifacts.folders`) and
records it: as the version's MLflow tag ``modelflags.sha256`` (default), or in a local pin file
(:mod:`modelflags.registry.mlflow_pins`). A version already pinned to another digest is refused,
never re-pinned: a version's files do not change, so a different digest means they did, or the
pin was written by mistake; find out which, then remove the old pin by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelflags.artifacts.folder_cache import FolderFetcher
from modelflags.artifacts.mlflow import folder_source_for
from modelflags.errors import ModelFlagsError
from modelflags.registry.mlflow import PIN_TAG, model_version_uri
from modelflags.registry.mlflow_pins import PinFile
from modelflags.sources.mlflow_api import MlflowApi

__all__ = ["Pinned", "pin_version"]


@dataclass(frozen=True)
class Pinned:
    """The outcome of :func:`pin_version`: the digest, the folder's size and file count, where
    the pin was written (``"tag"`` or the pin file's path), and whether it was already there.
    Immutable: safe to share between threads."""

    name: str
    version: str
    sha256: str
    size: int
    files: int
    where: str
    created: bool
    location: str


def pin_version(
    api: MlflowApi,
    name: str,
    version: str,
    *,
    folders: FolderFetcher,
    pin_file: str | Path | None = None,
) -> Pinned:
    """Compute the folder digest of version ``version`` of MLflow model ``name`` and pin it.

    Raises :class:`~modelflags.errors.VersionSourceError` when MLflow cannot be read or
    written, an :class:`~modelflags.errors.ArtifactError` when the files cannot be had, and
    :class:`~modelflags.errors.ModelFlagsError` when the version is pinned to another digest.
    """
    described = api.version(name, version)
    location = api.download_uri(name, version)
    uri = model_version_uri(name, version)
    folder = folders.pin(
        model=name,
        version=version,
        uri=uri,
        location=location,
        source=folder_source_for(location, api.tracking_uri),
    )
    digest = folder.sha256
    outcome = Pinned(name, version, digest, folder.size, len(folder.files), "tag", True, location)
    if pin_file is not None:
        created = PinFile(pin_file).add(name, version, digest)
        return _with(outcome, where=str(pin_file), created=created)
    tags = {
        str(item.get("key")): str(item.get("value"))
        for item in described.get("tags") or ()
        if isinstance(item, dict)
    }
    current = tags.get(PIN_TAG)
    if current is not None:
        if current.strip().lower() == digest:
            return _with(outcome, created=False)
        raise ModelFlagsError(
            f"{uri} is already pinned to {current} by its tag {PIN_TAG}, but its files now have "
            f"folder digest {digest}: a version's files never change, so find out why; to pin "
            "the files as they are, delete the tag in MLflow first"
        )
    api.set_version_tag(name, version, PIN_TAG, digest)
    return outcome


def _with(pinned: Pinned, *, where: str | None = None, created: bool) -> Pinned:
    return Pinned(
        pinned.name,
        pinned.version,
        pinned.sha256,
        pinned.size,
        pinned.files,
        where or pinned.where,
        created,
        pinned.location,
    )
