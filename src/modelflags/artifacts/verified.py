"""Verified artifacts: a version's bytes, read once, checked, and handed to a loader as they are.

An artifact is read once, in chunks of about 1 MiB, while its sha256 is computed and its bytes
counted; the chunks are kept in memory and become a :class:`VerifiedArtifact` only when the digest
and the size match the registry. A loader then deserializes those very chunks, through a stream
over them, and never opens the file again: what is deserialized is exactly what was hashed,
whatever happens to the file meanwhile (replaced, rewritten in place, its modification time
restored). Nothing remembers a file as verified: every load reads and hashes again.

Memory: a loader that reads its stream once from start to end (joblib, pickle) gets
:meth:`VerifiedArtifact.consume`, which lets go of each chunk as soon as it has been read, so the
resident peak of a load stays near the larger of the artifact and the model, as with a bare
``joblib.load`` of the file, rather than their sum.

:class:`ByteBounds` holds the size rules shared by local files and downloads: a declared ``size``
(from the registry) must be met exactly, and ``max_bytes`` (``max_artifact_bytes=``) is a ceiling.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from modelflags.artifacts.errors import SizeMismatchError
from modelflags.artifacts.naming import Subject
from modelflags.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    DigestMismatchError,
)

__all__ = [
    "CHUNK_SIZE",
    "ByteBounds",
    "LoadedArtifact",
    "VerifiedArtifact",
    "read_file",
    "read_stream",
    "suffix_of",
]

CHUNK_SIZE: Final = 1 << 20
"""About how many bytes are read, hashed and kept per chunk."""

_BUFFER = 1 << 16
_SUFFIX = re.compile(r"\.[A-Za-z0-9_-]{1,16}")
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


def suffix_of(location: str) -> str:
    """The file suffix of a path or URI (``.joblib``), or ``""`` when it has none or an odd one."""
    suffix = Path(location.split("?", 1)[0]).suffix
    return suffix if _SUFFIX.fullmatch(suffix) else ""


@dataclass(frozen=True)
class LoadedArtifact:
    """What :meth:`ArtifactStore.load <modelflags.artifacts.ArtifactStore.load>` returns.

    ``value`` is the deserialized model, ``nbytes`` the size of the artifact it came from, and
    ``sha256`` the digest those bytes matched (None when the registry pins no digest, for a local
    file). Immutable: safe to share between threads (the model itself is the loader's).
    """

    value: Any
    nbytes: int
    sha256: str | None


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


class VerifiedArtifact:
    """The bytes of one version, read once and checked against the registry.

    ``sha256`` is the digest the bytes matched (None when the registry pins none, for a local
    file); ``size`` their number; ``suffix`` the file suffix of the registered URI (``.joblib``).
    A loader reads the bytes through :meth:`open` (a seekable stream; as often as needed),
    :meth:`consume` (a forward-only stream that frees memory as it goes; the artifact is spent
    after it), :meth:`read_bytes`, or :meth:`private_copy` (a file only this user can reach, for
    loaders that need a path).

    Not safe to share between threads: one load uses it, then drops it.
    """

    def __init__(
        self, subject: Subject, chunks: list[bytes], *, sha256: str | None, suffix: str = ""
    ) -> None:
        self._subject = subject
        self._chunks = chunks
        self._size = sum(len(chunk) for chunk in chunks)
        self._sha256 = sha256
        self._suffix = suffix
        self._spent = False

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        model: str = "",
        version: str = "",
        uri: str = "",
        suffix: str = "",
    ) -> VerifiedArtifact:
        """An artifact around ``data`` (nothing is checked: for loaders' own tests)."""
        chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        return cls(Subject.of(model, version, uri), chunks, sha256=None, suffix=suffix)

    @classmethod
    def checked_only(
        cls, subject: Subject, size: int, *, sha256: str | None, suffix: str = ""
    ) -> VerifiedArtifact:
        """A spent artifact: its bytes were checked and not kept (``fetch``-style checks)."""
        artifact = cls(subject, [], sha256=sha256, suffix=suffix)
        artifact._size = size
        artifact._spent = True
        return artifact

    @property
    def model(self) -> str:
        """The model the bytes belong to."""
        return self._subject.model

    @property
    def version(self) -> str:
        """The version the bytes belong to."""
        return self._subject.version

    @property
    def uri(self) -> str:
        """The registered URI, without user info and query string."""
        return self._subject.uri

    @property
    def sha256(self) -> str | None:
        """The hex digest the bytes matched, or None when the registry pins none."""
        return self._sha256

    @property
    def size(self) -> int:
        """The number of bytes."""
        return self._size

    @property
    def suffix(self) -> str:
        """The registered URI's file suffix (``.joblib``), or ``""``."""
        return self._suffix

    def open(self) -> BinaryIO:
        """A new seekable binary stream over the bytes."""
        self._check_unspent()
        return io.BufferedReader(_ChunkReader(self._chunks, release=False), _BUFFER)

    def consume(self) -> BinaryIO:
        """A forward-only stream over the bytes that releases each chunk once read past.

        Keeps the peak memory of a load near the larger of artifact and model. The artifact
        is spent afterwards: every other method raises ``ValueError``.
        """
        self._check_unspent()
        chunks, self._chunks = self._chunks, []
        self._spent = True
        return io.BufferedReader(_ChunkReader(chunks, release=True), _BUFFER)

    def read_bytes(self) -> bytes:
        """The bytes as one ``bytes`` object (a copy: twice the memory while both live)."""
        self._check_unspent()
        return b"".join(self._chunks)

    @contextmanager
    def private_copy(self) -> Iterator[Path]:
        """A file with the bytes, in a new folder only this user can enter, removed on exit.

        For loaders that need a path. The file keeps the URI's suffix (``artifact.onnx``).
        Failing to write it raises :class:`~modelflags.errors.ArtifactError`.
        """
        self._check_unspent()
        subject = self._subject
        folder = None
        try:
            folder = tempfile.mkdtemp(prefix="modelflags-")  # mode 0700, this user's
            path = Path(folder) / f"artifact{self._suffix}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
            with open(os.open(path, flags, 0o600), "wb") as out:
                out.writelines(self._chunks)
        except OSError as exc:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise ArtifactError(
                f"{subject.where()}: cannot write a private copy of {subject.uri} for its "
                f"loader: {exc}",
                **subject.error_args(),
            ) from exc
        try:
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _check_unspent(self) -> None:
        if self._spent:
            raise ValueError(
                f"{self._subject.where()}: the artifact's bytes were consumed by an earlier reader"
            )

    def __repr__(self) -> str:
        return (
            f"VerifiedArtifact(model={self.model!r}, version={self.version!r}, "
            f"uri={self.uri!r}, size={self._size}, sha256={self._sha256!r})"
        )


def read_stream(
    stream: BinaryIO,
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
        chunks: list[bytes] = []
        received = 0
        while True:
            want = CHUNK_SIZE if ceiling is None else min(CHUNK_SIZE, ceiling + 1 - received)
            chunk = stream.read(max(want, 1))
            if not chunk:
                break
            received += len(chunk)
            bounds.check_running(subject, shown, received)  # the file grew while being read
            if hasher is not None:
                hasher.update(chunk)
            if keep:
                chunks.append(chunk)
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


class _ChunkReader(io.RawIOBase):
    """A raw stream over a list of chunks; with ``release``, forward-only and freeing as it goes."""

    def __init__(self, chunks: list[bytes], *, release: bool) -> None:
        super().__init__()
        self._chunks = chunks
        self._release = release
        self._index = 0
        self._offset = 0
        self._position = 0
        self._starts: list[int] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return not self._release

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        done = 0
        chunks = self._chunks
        while done < len(target) and self._index < len(chunks):
            chunk = chunks[self._index]
            take = min(len(chunk) - self._offset, len(target) - done)
            target[done : done + take] = memoryview(chunk)[self._offset : self._offset + take]
            done += take
            self._offset += take
            if self._offset >= len(chunk):
                if self._release:
                    chunks[self._index] = b""
                self._index += 1
                self._offset = 0
        self._position += done
        return done

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._release:
            raise io.UnsupportedOperation("a consumed artifact is read once, forward")
        if self._starts is None:
            starts, total = [], 0
            for chunk in self._chunks:
                starts.append(total)
                total += len(chunk)
            starts.append(total)
            self._starts = starts
        end = self._starts[-1]
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: end}[whence]
        position = max(base + offset, 0)
        self._position = position
        if position >= end:
            self._index, self._offset = len(self._chunks), 0
        else:
            self._index = bisect.bisect_right(self._starts, position) - 1
            self._offset = position - self._starts[self._index]
        return position
