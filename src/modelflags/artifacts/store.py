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
(:class:`~modelflags.artifacts.remote.RemoteFetcher` by default).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from modelflags.artifacts.naming import Subject
from modelflags.artifacts.reading import ByteBounds, read_file, suffix_of
from modelflags.artifacts.verified import LoadedArtifact, VerifiedArtifact
from modelflags.errors import ArtifactError, ArtifactTooLargeError
from modelflags.registry import VersionSpec

if TYPE_CHECKING:
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
    folder); ``max_bytes`` limits the size of any artifact; ``environ`` is where ``headers_env``
    values are read (default ``os.environ``).

    Safe to share between threads: it keeps no state but its fetcher, made under a lock.
    """

    def __init__(
        self,
        *,
        remote: Fetcher | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._remote: Fetcher | None = remote
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
        artifact = self.open(model, version, spec)
        nbytes, digest = artifact.size, artifact.sha256
        value = loaders.load(model, version, spec, artifact)
        return LoadedArtifact(value, nbytes, digest)

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

    def _fetcher(self) -> Fetcher:
        with self._lock:
            if self._remote is None:
                from modelflags.artifacts.remote import RemoteFetcher

                self._remote = RemoteFetcher(cache_dir=self._cache_dir, max_bytes=self._max_bytes)
            return self._remote
