"""Verified artifacts: a version's bytes, read once, checked, and handed to a loader as they are.

An artifact is read once, in chunks of about 1 MiB, while its sha256 is computed and its bytes
counted; the chunks are kept in memory and become a :class:`VerifiedArtifact` only when the digest
and the size match the registry. A loader then deserializes those very chunks, through a stream
over them, and never opens the file again: what is deserialized is exactly what was hashed,
whatever happens to the file meanwhile (replaced, rewritten in place, its modification time
restored). Nothing remembers a file as verified: every load reads and hashes again.

Memory: the chunks live in anonymous memory maps (:mod:`~modelflags.artifacts.chunks`). A loader
that reads its stream once from start to end (joblib, pickle) gets
:meth:`VerifiedArtifact.consume`, which gives each chunk back to the system as soon as it has
been read, so the resident peak of a load stays near the larger of the artifact and the model, as
with a bare ``joblib.load`` of the file, rather than their sum.

Reading and checking is :mod:`~modelflags.artifacts.reading`'s job; this module holds the result.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Final
from urllib.parse import unquote, urlsplit

from modelflags.artifacts.chunks import CHUNK_SIZE, ChunkList
from modelflags.artifacts.naming import Subject
from modelflags.errors import ArtifactError

__all__ = ["CHUNK_SIZE", "LoadedArtifact", "VerifiedArtifact"]

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


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
        self, subject: Subject, chunks: ChunkList, *, sha256: str | None, suffix: str = ""
    ) -> None:
        self._subject = subject
        self._chunks = chunks
        self._size = chunks.size
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
        chunks = ChunkList()
        chunks.append(data)
        return cls(Subject.of(model, version, uri), chunks, sha256=None, suffix=suffix)

    @classmethod
    def checked_only(
        cls, subject: Subject, size: int, *, sha256: str | None, suffix: str = ""
    ) -> VerifiedArtifact:
        """A spent artifact: its bytes were checked and not kept (``fetch``-style checks)."""
        artifact = cls(subject, ChunkList(), sha256=sha256, suffix=suffix)
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
        return self._chunks.reader(release=False)

    def consume(self) -> BinaryIO:
        """A forward-only stream over the bytes that releases each chunk once read past.

        Keeps the peak memory of a load near the larger of artifact and model. The artifact
        is spent afterwards: every other method raises ``ValueError``.
        """
        self._check_unspent()
        self._spent = True
        return self._chunks.reader(release=True)

    def read_bytes(self) -> bytes:
        """The bytes as one ``bytes`` object (a copy: twice the memory while both live)."""
        self._check_unspent()
        return self._chunks.to_bytes()

    @contextmanager
    def private_copy(self) -> Iterator[Path]:
        """A file with the bytes, in a new folder only this user can enter, removed on exit.

        For loaders that need a path. The file keeps the name the URI gives it (letters, digits,
        ``.``, ``_`` and ``-`` only; ``artifact`` plus the URI's suffix otherwise).
        Failing to write it raises :class:`~modelflags.errors.ArtifactError`.
        """
        self._check_unspent()
        subject = self._subject
        folder = None
        try:
            folder = tempfile.mkdtemp(prefix="modelflags-")  # mode 0700, this user's
            path = Path(folder) / _copy_name(subject.uri, self._suffix)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
            with open(os.open(path, flags, 0o600), "wb") as out:
                self._chunks.write_to(out)
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


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _copy_name(uri: str, suffix: str) -> str:
    """The file name of a private copy: the URI's own last segment when it is a plain name."""
    name = PurePosixPath(unquote(urlsplit(uri).path)).name
    return name if _PLAIN_NAME.fullmatch(name) else f"artifact{suffix}"
