"""Artifacts: a version's URI becomes verified bytes, and verified bytes a model, in one call.

The load contract, the one call the serving core makes for a version::

    loaded = store.load(model, version, spec, loaders)   # ArtifactStore.load -> LoadedArtifact
    loaded.value    # the model object
    loaded.nbytes   # the artifact's size in bytes
    loaded.sha256   # the digest the deserialized bytes matched (None: the registry pins none)

It reads the artifact once (a local file, or the remote cache's entry, downloading it first when
needed) into memory while hashing it, checks the digest and the declared ``size``, and hands
those very bytes to the version's loader (:class:`~modelflags.artifacts.loaders.LoaderRegistry`):
what is deserialized is what was hashed, on every load, reloads after an eviction included.
Nothing remembers a file as verified. Raises an :class:`~modelflags.errors.ArtifactError`
subclass when the bytes cannot be had or trusted, :class:`~modelflags.errors.DeserializationError`
when the loader fails, and :class:`~modelflags.errors.RegistryError` for an unknown loader name.

:meth:`ArtifactStore.open` is the first half (bytes only), and :meth:`ArtifactStore.fetch`
checks a version and returns a path, for prefetching; deserializing that path would reopen the
window this module closes (earlier releases called ``fetch`` then ``LoaderRegistry.load`` with the
path: that still works, and the path is then read and verified again by the loader registry).

Local paths are opened as given (symbolic links followed: they are the registry's own);
remote URIs (``http``, ``https``, ``s3``) are handed to a fetcher
(:class:`~modelflags.artifacts.remote.RemoteFetcher` by default). MLflow model versions
(``models:/`` URIs) are folders: :meth:`ArtifactStore.open_folder` has a
:class:`~modelflags.artifacts.folder_cache.FolderFetcher` bring them into the same cache and
check their folder digest (:mod:`~modelflags.artifacts.folders`); a version without a pinned
digest is refused before any byte is fetched.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from modelflags.artifacts.folders import VerifiedFolder
from modelflags.artifacts.naming import Subject
from modelflags.artifacts.reading import ByteBounds, read_file, suffix_of
from modelflags.artifacts.verified import LoadedArtifact, VerifiedArtifact
from modelflags.errors import ArtifactError, ArtifactTooLargeError, VersionRefusedError
from modelflags.registry import VersionSpec
from modelflags.registry.mlflow import PIN_FILE, PIN_TAG

if TYPE_CHECKING:
    from modelflags.artifacts.folder_cache import FolderFetcher
    from modelflags.artifacts.loaders import LoaderRegistry

__all__ = ["ArtifactStore", "Fetcher", "VerifyingFetcher", "file_sha256"]

_CHUNK = 1 << 20


class Fetcher(Protocol):
    """What fetches remote artifacts into local files checked against their digest."""

    def fetch(
        self,
        *,
        model: str,
        version: str,
        uri: str,
        sha256: str,
        headers: Mapping[str, str],
    ) -> Path:
        """Return a local file whose bytes have ``sha256``, downloading it if needed."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class VerifyingFetcher(Protocol):
    """A fetcher that also hands over verified bytes (as :class:`RemoteFetcher` does)."""

    def open(
        self,
        *,
        model: str,
        version: str,
        uri: str,
        sha256: str,
        headers: Mapping[str, str] | None = None,
        size: int | None = None,
    ) -> VerifiedArtifact:
        """The artifact's bytes, checked against ``sha256`` and ``size``."""
        ...


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in chunks (memory stays flat)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    """Turns a :class:`VersionSpec` into verified bytes, and those into a model.

    ``remote`` fetches remote URIs (default: a :class:`~modelflags.remote.RemoteFetcher` made on
    first use, downloading into ``cache_dir`` or ``MODELFLAGS_CACHE_DIR`` or the user cache
    folder); ``folders`` fetches MLflow model folders (default: a
    :class:`~modelflags.artifacts.folder_cache.FolderFetcher` on the same cache folder, made on
    first use); ``max_bytes`` limits the size of any artifact (a folder's total); ``environ`` is
    where ``headers_env`` values are read (default ``os.environ``).

    Safe to share between threads: it keeps no state but its fetcher, made under a lock.
    """

    def __init__(
        self,
        *,
        remote: Fetcher | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
        environ: Mapping[str, str] | None = None,
        folders: FolderFetcher | None = None,
    ) -> None:
        self._remote: Fetcher | None = remote
        self._folders: FolderFetcher | None = folders
        self._cache_dir = cache_dir
        self._max_bytes = max_bytes
        self._environ = environ if environ is not None else os.environ
        self._lock = threading.Lock()

    def load(
        self, model: str, version: str, spec: VersionSpec, loaders: LoaderRegistry
    ) -> LoadedArtifact:
        """Read, verify and deserialize a version: the one call of the load contract.

        See :mod:`modelflags.artifacts.store`.
        """
        artifact: VerifiedArtifact | VerifiedFolder
        if spec.mlflow is not None:
            artifact = self.open_folder(model, version, spec)
        else:
            artifact = self.open(model, version, spec)
        nbytes, digest = artifact.size, artifact.sha256
        value = loaders.load(model, version, spec, artifact)
        return LoadedArtifact(value, nbytes, digest)

    def open_folder(self, model: str, version: str, spec: VersionSpec) -> VerifiedFolder:
        """An MLflow model version's files, checked against its pinned folder digest.

        Raises :class:`~modelflags.errors.VersionRefusedError` (``check="digest"``) when no
        digest is pinned, else as :meth:`FolderFetcher.open
        <modelflags.artifacts.folder_cache.FolderFetcher.open>`.
        """
        ref = spec.mlflow
        if ref is None:
            raise ArtifactError(
                f"model {model!r} version {version!r}: {spec.uri} is not a folder artifact",
                model=model,
                version=version,
                uri=spec.uri,
            )
        if spec.sha256 is None:
            raise VersionRefusedError(
                f"model {model!r} version {version!r}: MLflow version {ref.version} of "
                f"{ref.name!r} has no pinned digest, and an unpinned version is never served: "
                f"run 'modelflags mlflow pin {ref.name} {ref.version}' (sets the tag "
                f"{PIN_TAG}), add it to {PIN_FILE}, or set trust_on_first_use",
                model=model,
                version=version,
                check="digest",
            )
        from modelflags.artifacts.mlflow import folder_source_for

        folder = self._folder_fetcher().open(
            model=model,
            version=version,
            uri=spec.uri,
            location=spec.location,
            sha256=spec.sha256,
            source=folder_source_for(spec.location, ref.tracking_uri),
        )
        folder.trusted_types = ref.skops_trusted_types
        return folder

    def folder_fetcher(self) -> FolderFetcher:
        """The fetcher of folder artifacts (made on first use), for pinning and prefetching."""
        return self._folder_fetcher()

    def open(self, model: str, version: str, spec: VersionSpec) -> VerifiedArtifact:
        """The version's bytes, read once and checked against the registry (sha256, size).

        Raises :class:`ArtifactNotFoundError`, :class:`DigestMismatchError`,
        :class:`ArtifactTooLargeError`, :class:`~modelflags.artifacts.errors.SizeMismatchError`,
        :class:`FetchError` or another :class:`ArtifactError`.
        """
        subject = Subject.of(model, version, spec.uri)
        bounds = ByteBounds(size=spec.size, max_bytes=self._max_bytes)
        if not spec.is_remote:
            return read_file(
                spec.location,
                subject,
                sha256=spec.sha256,
                bounds=bounds,
                suffix=suffix_of(spec.location),
            )
        assert spec.sha256 is not None  # the registry requires it for remote URIs
        fetcher = self._fetcher()
        headers = self._headers(subject, spec)
        if isinstance(fetcher, VerifyingFetcher):
            artifact = fetcher.open(
                model=model,
                version=version,
                uri=spec.location,
                sha256=spec.sha256,
                headers=headers,
                size=spec.size,
            )
            if self._max_bytes is not None and artifact.size > self._max_bytes:
                raise ArtifactTooLargeError(
                    f"{subject.where()}: {subject.uri} has {artifact.size} bytes, over the "
                    f"limit of {self._max_bytes}",
                    **subject.error_args(),
                )
            return artifact
        path = fetcher.fetch(
            model=model, version=version, uri=spec.location, sha256=spec.sha256, headers=headers
        )
        return read_file(
            path, subject, sha256=spec.sha256, bounds=bounds, suffix=suffix_of(spec.location)
        )

    def fetch(self, model: str, version: str, spec: VersionSpec) -> Path:
        """A local file with the version's bytes, checked against the registry when this returns.

        For prefetching and validation: the file may change afterwards, so never deserialize it
        yourself; :meth:`load` (or :meth:`open`) hands over the bytes it checked. Raises as
        :meth:`open`.
        """
        subject = Subject.of(model, version, spec.uri)
        bounds = ByteBounds(size=spec.size, max_bytes=self._max_bytes)
        if spec.is_remote:
            from modelflags.artifacts.remote import RemoteFetcher

            assert spec.sha256 is not None
            fetcher = self._fetcher()
            headers = self._headers(subject, spec)
            if isinstance(fetcher, RemoteFetcher):
                return fetcher.fetch(
                    model=model,
                    version=version,
                    uri=spec.location,
                    sha256=spec.sha256,
                    headers=headers,
                    size=spec.size,
                )
            path = fetcher.fetch(
                model=model,
                version=version,
                uri=spec.location,
                sha256=spec.sha256,
                headers=headers,
            )
            read_file(path, subject, sha256=spec.sha256, bounds=bounds, keep=False)
            return path
        read_file(spec.location, subject, sha256=spec.sha256, bounds=bounds, keep=False)
        return Path(spec.location)

    def close(self) -> None:
        """Release the remote fetcher's connections, if one was made."""
        with self._lock:
            remote, self._remote = self._remote, None
        if remote is not None:
            remote.close()

    def _headers(self, subject: Subject, spec: VersionSpec) -> dict[str, str]:
        headers: dict[str, str] = {}
        for header, variable in spec.headers_env.items():
            value = self._environ.get(variable)
            if value is None:
                raise ArtifactError(
                    f"{subject.where()}: environment variable {variable!r} "
                    f"(for header {header!r}) is not set",
                    **subject.error_args(),
                )
            headers[header] = value
        return headers

    def _folder_fetcher(self) -> FolderFetcher:
        with self._lock:
            if self._folders is None:
                from modelflags.artifacts.folder_cache import FolderFetcher

                self._folders = FolderFetcher(cache_dir=self._cache_dir, max_bytes=self._max_bytes)
            return self._folders

    def _fetcher(self) -> Fetcher:
        with self._lock:
            if self._remote is None:
                from modelflags.artifacts.remote import RemoteFetcher

                self._remote = RemoteFetcher(cache_dir=self._cache_dir, max_bytes=self._max_bytes)
            return self._remote
