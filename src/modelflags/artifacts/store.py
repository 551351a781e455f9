"""Artifacts: a version's URI becomes a verified local file.

Local files are checked against their sha256 before anything deserializes them; the digest of an
unchanged file (same inode, size and modification time) is remembered so a reload does not hash it
again. Remote URIs (``http``, ``https``, ``s3``) are handed to a fetcher
(:class:`modelflags.remote.RemoteFetcher` by default) that downloads into a content-addressed
disk cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from modelflags.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    DigestMismatchError,
)
from modelflags.registry import VersionSpec

__all__ = ["ArtifactStore", "Fetcher", "file_sha256"]

_CHUNK = 1 << 20


class Fetcher(Protocol):
    """What fetches remote artifacts into verified local files."""

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


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in chunks (memory stays flat)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    """Turns a :class:`VersionSpec` into a verified local file.

    ``remote`` fetches remote URIs (default: a :class:`~modelflags.remote.RemoteFetcher` made on
    first use, downloading into ``cache_dir`` or ``MODELFLAGS_CACHE_DIR`` or the user cache
    folder); ``max_bytes`` limits the size of any artifact.

    Safe to share between threads: the digest memo is guarded by a lock, and hashing and
    downloads run outside it.
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
        self._verified: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._lock = threading.Lock()

    def fetch(self, model: str, version: str, spec: VersionSpec) -> Path:
        """A local file with the version's bytes, verified against its sha256 when one is given.

        Raises :class:`ArtifactNotFoundError`, :class:`DigestMismatchError`,
        :class:`ArtifactTooLargeError` or another :class:`ArtifactError`.
        """
        if spec.is_remote:
            assert spec.sha256 is not None  # the registry requires it for remote URIs
            headers = self._headers(model, version, spec)
            return self._fetcher().fetch(
                model=model, version=version, uri=spec.location, sha256=spec.sha256, headers=headers
            )
        return self._local(model, version, spec)

    def close(self) -> None:
        """Release the remote fetcher's connections, if one was made."""
        with self._lock:
            remote, self._remote = self._remote, None
        if remote is not None:
            remote.close()

    def _local(self, model: str, version: str, spec: VersionSpec) -> Path:
        path = Path(spec.location)
        try:
            stat = path.stat()
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(
                f"model {model!r} version {version!r}: artifact file not found: {path}",
                model=model,
                version=version,
                uri=spec.uri,
            ) from exc
        except OSError as exc:
            raise ArtifactError(
                f"model {model!r} version {version!r}: cannot read artifact {path}: {exc}",
                model=model,
                version=version,
                uri=spec.uri,
            ) from exc
        if self._max_bytes is not None and stat.st_size > self._max_bytes:
            raise ArtifactTooLargeError(
                f"model {model!r} version {version!r}: artifact {path} has {stat.st_size} bytes, "
                f"over the limit of {self._max_bytes}",
                model=model,
                version=version,
                uri=spec.uri,
            )
        if spec.sha256 is None:
            return path
        key = str(path)
        fingerprint = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._verified.get(key)
        if known is not None and known[0] == fingerprint and known[1] == spec.sha256:
            return path
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise ArtifactError(
                f"model {model!r} version {version!r}: cannot read artifact {path}: {exc}",
                model=model,
                version=version,
                uri=spec.uri,
            ) from exc
        if actual != spec.sha256:
            raise DigestMismatchError(
                f"model {model!r} version {version!r}: artifact {path} has sha256 {actual}, "
                f"the registry says {spec.sha256}; it was not loaded",
                model=model,
                version=version,
                uri=spec.uri,
                expected=spec.sha256,
                actual=actual,
            )
        with self._lock:
            self._verified[key] = (fingerprint, actual)
        return path

    def _headers(self, model: str, version: str, spec: VersionSpec) -> dict[str, str]:
        headers: dict[str, str] = {}
        for header, variable in spec.headers_env.items():
            value = self._environ.get(variable)
            if value is None:
                raise ArtifactError(
                    f"model {model!r} version {version!r}: environment variable {variable!r} "
                    f"(for header {header!r}) is not set",
                    model=model,
                    version=version,
                    uri=spec.uri,
                )
            headers[header] = value
        return headers

    def _fetcher(self) -> Fetcher:
        with self._lock:
            if self._remote is None:
                from modelflags.artifacts.remote import RemoteFetcher

                self._remote = RemoteFetcher(cache_dir=self._cache_dir, max_bytes=self._max_bytes)
            return self._remote
