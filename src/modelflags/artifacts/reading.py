"""Reading an artifact once: its bytes hashed, counted and checked as they are read.

:func:`read_file` and :func:`read_stream` read a regular file to its end in chunks of about
1 MiB, hashing them and counting them against :class:`ByteBounds`, and return a
:class:`~modelflags.artifacts.verified.VerifiedArtifact` only when the digest and the size match
the registry. :class:`ByteBounds` holds the size rules shared by local files and downloads: a
declared ``size`` (from the registry) must be met exactly, and ``max_bytes``
(``max_artifact_bytes=``) is a ceiling.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from modelflags.artifacts.chunks import CHUNK_SIZE, ChunkList
from modelflags.artifacts.errors import SizeMismatchError
from modelflags.artifacts.naming import Subject
from modelflags.artifacts.verified import VerifiedArtifact
from modelflags.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    DigestMismatchError,
)

__all__ = ["ByteBounds", "read_file", "read_stream", "suffix_of"]

_SUFFIX = re.compile(r"\.[A-Za-z0-9_-]{1,16}")
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


def suffix_of(location: str) -> str:
    """The file suffix of a path or URI (``.joblib``), or ``""`` when it has none or an odd one."""
    suffix = Path(location.split("?", 1)[0]).suffix
    return suffix if _SUFFIX.fullmatch(suffix) else ""


@dataclass(frozen=True)
class ByteBounds:
    """The size rules of one artifact: exactly ``size`` bytes when declared, at most ``max_bytes``.

    More bytes than either is :class:`~modelflags.errors.ArtifactTooLargeError`; fewer than a
    declared size is :class:`~modelflags.artifacts.errors.SizeMismatchError`. Immutable: safe to
    share between threads.
    """

    size: int | None = None
    max_bytes: int | None = None

    @property
    def ceiling(self) -> int | None:
        """The most bytes an artifact may have, or None when nothing bounds it."""
        limits = [n for n in (self.size, self.max_bytes) if n is not None]
        return min(limits) if limits else None

    def check_announced(self, subject: Subject, shown: str, announced: int) -> None:
        """Check a size known before reading (``Content-Length``, a file's size)."""
        if self.max_bytes is not None and announced > self.max_bytes:
            raise ArtifactTooLargeError(
                f"{subject.where()}: {shown} has {announced} bytes, over the limit of "
                f"{self.max_bytes}",
                **subject.error_args(),
            )
        if self.size is not None and announced > self.size:
            raise ArtifactTooLargeError(
                f"{subject.where()}: {shown} has {announced} bytes, more than the {self.size} "
                "its registry entry declares",
                **subject.error_args(),
            )
        self.check_final(subject, shown, announced)

    def check_running(self, subject: Subject, shown: str, received: int) -> None:
        """Refuse as soon as more bytes arrived than allowed."""
        if self.max_bytes is not None and received > self.max_bytes:
            raise ArtifactTooLargeError(
                f"{subject.where()}: {shown} is over the limit of {self.max_bytes} bytes",
                **subject.error_args(),
            )
        if self.size is not None and received > self.size:
            raise ArtifactTooLargeError(
                f"{subject.where()}: {shown} has more than the {self.size} bytes its registry "
                "entry declares",
                **subject.error_args(),
            )

    def check_final(self, subject: Subject, shown: str, received: int) -> None:
        """Refuse an artifact that ended short of its declared size."""
        if self.size is not None and received < self.size:
            raise SizeMismatchError(
                f"{subject.where()}: {shown} has {received} bytes, fewer than the {self.size} "
                "its registry entry declares",
                expected=self.size,
                actual=received,
                **subject.error_args(),
            )


def read_stream(
    stream: io.RawIOBase,
    subject: Subject,
    *,
    shown: str,
    sha256: str | None,
    bounds: ByteBounds,
    keep: bool = True,
    suffix: str = "",
) -> VerifiedArtifact:
    """Read an open regular file to its end, hashing and counting; check it against the registry.

    ``shown`` names the file in messages. With ``keep=False`` the bytes are hashed and dropped
    (the returned artifact is then spent: it says what was checked). Raises
    :class:`~modelflags.errors.DigestMismatchError`,
    :class:`~modelflags.errors.ArtifactTooLargeError`,
    :class:`~modelflags.artifacts.errors.SizeMismatchError` or
    :class:`~modelflags.errors.ArtifactError` (not a regular file, a read error).
    """
    try:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(
                f"{subject.where()}: {shown} is not a regular file", **subject.error_args()
            )
        bounds.check_announced(subject, shown, info.st_size)
        ceiling = bounds.ceiling
        hasher = hashlib.sha256() if sha256 is not None else None
        chunks = ChunkList()
        scratch = None if keep else memoryview(bytearray(CHUNK_SIZE))
        received = 0
        while True:
            want = CHUNK_SIZE if ceiling is None else min(CHUNK_SIZE, ceiling + 1 - received)
            if scratch is None:
                view = chunks.read_from(stream, max(want, 1))
            else:
                count = stream.readinto(scratch[: max(want, 1)]) or 0
                view = scratch[:count] if count else None
            if view is None:
                break
            with view:
                received += len(view)
                bounds.check_running(subject, shown, received)  # the file grew while read
                if hasher is not None:
                    hasher.update(view)
    except OSError as exc:
        raise ArtifactError(
            f"{subject.where()}: cannot read {shown}: {exc}", **subject.error_args()
        ) from exc
    bounds.check_final(subject, shown, received)
    if hasher is not None and sha256 is not None:
        actual = hasher.hexdigest()
        if actual != sha256:
            raise DigestMismatchError(
                f"{subject.where()}: {shown} has sha256 {actual}, the registry says {sha256}; "
                "it was not loaded",
                expected=sha256,
                actual=actual,
                **subject.error_args(),
            )
    if not keep:
        return VerifiedArtifact.checked_only(subject, received, sha256=sha256, suffix=suffix)
    return VerifiedArtifact(subject, chunks, sha256=sha256, suffix=suffix)


def read_file(
    path: str | os.PathLike[str],
    subject: Subject,
    *,
    sha256: str | None,
    bounds: ByteBounds,
    keep: bool = True,
    suffix: str = "",
) -> VerifiedArtifact:
    """Open ``path`` (symbolic links followed: a registry's own paths may be links) and read it.

    A missing file is :class:`~modelflags.errors.ArtifactNotFoundError`; see :func:`read_stream`.
    """
    shown = f"artifact {os.fspath(path)}"
    try:
        # O_NONBLOCK: opening a FIFO put in the artifact's place must not wait for a writer
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError as exc:
        raise ArtifactNotFoundError(
            f"{subject.where()}: artifact file not found: {os.fspath(path)}",
            **subject.error_args(),
        ) from exc
    except OSError as exc:
        raise ArtifactError(
            f"{subject.where()}: cannot read {shown}: {exc}", **subject.error_args()
        ) from exc
    with open(fd, "rb", buffering=0) as stream:
        return read_stream(
            stream,
            subject,
            shown=shown,
            sha256=sha256,
            bounds=bounds,
            keep=keep,
            suffix=suffix,
        )
