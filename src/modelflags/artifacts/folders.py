"""Folder artifacts: a digest over a folder's files, and a folder read once and verified.

An MLflow model is a folder (``MLmodel``, the serialized model, environment files). A folder
artifact is trusted the way a file is: by one sha256 pinned before anything in it is
deserialized. The **folder digest** is the sha256 of its *manifest*, a UTF-8 text with one line
per regular file::

    <sha256 of the file: 64 lower-case hex digits><two spaces><relative path><newline>

Relative paths use ``/`` between folders and have no leading ``./``; lines are sorted by the
path's UTF-8 bytes; empty folders do not count. A folder with a symbolic link, FIFO, socket or
device in it, a path with a newline, carriage return or backslash, a name that is not UTF-8, or
no file at all has no digest: it is refused. The manifest is what ``sha256sum`` prints, so the
digest can be checked with coreutils alone::

    (cd DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum

An MLflow model folder leaves out ``registered_model_meta`` at its top, a file MLflow's own
``load_model`` writes into a local artifact folder after the version was logged
(:data:`~modelflags.artifacts.mlflow.MLFLOW_BOOKKEEPING`); add ``! -path ./registered_model_meta``
to ``find`` for such a folder.

:func:`read_folder` reads every file of a folder once into memory while hashing it, never
following a link (each name is opened relative to its parent folder's descriptor with
``O_NOFOLLOW``), and returns a :class:`VerifiedFolder` only when the digest matches. A loader
then reads those very bytes: what is deserialized is what was hashed, whatever happens to the
folder afterwards. :func:`folder_digest` computes the digest without keeping the bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from modelflags.artifacts.chunks import CHUNK_SIZE, ChunkList
from modelflags.artifacts.naming import Subject
from modelflags.artifacts.reading import suffix_of
from modelflags.artifacts.verified import VerifiedArtifact
from modelflags.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    DigestMismatchError,
)

__all__ = [
    "FolderDigest",
    "VerifiedFolder",
    "check_relative_path",
    "folder_digest",
    "manifest_digest",
    "read_folder",
]

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)
_BAD_CHARACTERS = frozenset("\n\r\\\0")
_MAX_DEPTH = 32


def check_relative_path(path: str) -> str | None:
    """Why ``path`` cannot name a file of a folder artifact (None when it can).

    A relative path is ``/``-separated names, none empty, ``.`` or ``..``, without newline,
    carriage return, backslash or NUL.
    """
    if not path or path.startswith("/"):
        return "an empty or absolute path"
    if _BAD_CHARACTERS & set(path):
        return "a newline, carriage return, backslash or NUL in the name"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "an empty, '.' or '..' component"
    return None


def manifest_digest(files: Mapping[str, str]) -> str:
    """The folder digest of ``files`` (relative path -> the file's hex sha256)."""
    manifest = hashlib.sha256()
    for path in sorted(files, key=lambda name: name.encode("utf-8")):
        manifest.update(f"{files[path]}  {path}\n".encode())
    return manifest.hexdigest()


@dataclass(frozen=True)
class FolderDigest:
    """A folder's digest, its total size in bytes and each file's sha256 (immutable: safe to
    share between threads)."""

    sha256: str
    size: int
    files: Mapping[str, str]


class VerifiedFolder:
    """The files of one folder artifact, read once and checked against the pinned digest.

    ``sha256`` is the folder digest the files matched; ``size`` their total bytes; ``files``
    maps each relative path to a :class:`~modelflags.artifacts.verified.VerifiedArtifact` of its
    bytes. A loader reads files with :meth:`file` (or :meth:`read_bytes`), or asks for a
    :meth:`private_copy` of the whole folder when it needs paths.

    Not safe to share between threads: one load uses it, then drops it.
    """

    def __init__(
        self,
        subject: Subject,
        files: Mapping[str, VerifiedArtifact],
        *,
        sha256: str,
        trusted_types: tuple[str, ...] = (),
    ) -> None:
        self._subject = subject
        self._files = dict(sorted(files.items(), key=lambda item: item[0].encode("utf-8")))
        self._sha256 = sha256
        self._size = sum(artifact.size for artifact in self._files.values())
        self.trusted_types = trusted_types
        """Type names the registry trusts for this folder's loader (skops), beyond its own."""

    @property
    def model(self) -> str:
        """The model the folder belongs to."""
        return self._subject.model

    @property
    def version(self) -> str:
        """The version the folder belongs to."""
        return self._subject.version

    @property
    def uri(self) -> str:
        """The registered URI, without user info and query string."""
        return self._subject.uri

    @property
    def sha256(self) -> str:
        """The folder digest the files matched."""
        return self._sha256

    @property
    def size(self) -> int:
        """The total number of bytes of the files."""
        return self._size

    @property
    def files(self) -> Mapping[str, VerifiedArtifact]:
        """Relative path -> the file's verified bytes, sorted by path."""
        return self._files

    def file(self, path: str) -> VerifiedArtifact:
        """The verified bytes of the file at relative ``path``.

        Raises :class:`~modelflags.errors.ArtifactError` when the folder has no such file.
        """
        artifact = self._files.get(path)
        if artifact is None:
            raise ArtifactError(
                f"{self._subject.where()}: {self._subject.uri} has no file {path!r}",
                **self._subject.error_args(),
            )
        return artifact

    def read_bytes(self, path: str) -> bytes:
        """The bytes of the file at relative ``path`` (a copy)."""
        return self.file(path).read_bytes()

    @contextmanager
    def private_copy(self) -> Iterator[Path]:
        """The folder written from the verified bytes into a new folder only this user can
        enter, removed on exit (for loaders that need paths)."""
        folder = self._write_copy()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def detached_copy(self) -> Path:
        """Like :meth:`private_copy`, but the caller removes the folder (for models that keep
        reading their files after loading, as some pyfunc models do)."""
        return self._write_copy()

    def _write_copy(self) -> Path:
        subject = self._subject
        folder = None
        try:
            folder = Path(tempfile.mkdtemp(prefix="modelflags-"))  # mode 0700, this user's
            for path, artifact in self._files.items():
                target = folder.joinpath(*path.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
                with open(os.open(target, flags, 0o600), "wb") as out, artifact.open() as data:
                    shutil.copyfileobj(data, out, CHUNK_SIZE)
        except OSError as exc:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise ArtifactError(
                f"{subject.where()}: cannot write a private copy of {subject.uri} for its "
                f"loader: {exc}",
                **subject.error_args(),
            ) from exc
        return folder

    def __repr__(self) -> str:
        return (
            f"VerifiedFolder(model={self.model!r}, version={self.version!r}, uri={self.uri!r}, "
            f"files={len(self._files)}, size={self._size}, sha256={self._sha256!r})"
        )


def read_folder(
    path: str | os.PathLike[str],
    subject: Subject,
    *,
    sha256: str | None,
    max_bytes: int | None = None,
    shown: str | None = None,
) -> VerifiedFolder:
    """Read every file of the folder at ``path`` into memory, hashing it; check the digest.

    With ``sha256=None`` nothing is compared (the returned folder carries the digest found).
    Raises :class:`~modelflags.errors.ArtifactNotFoundError` (no such folder),
    :class:`~modelflags.errors.DigestMismatchError`,
    :class:`~modelflags.errors.ArtifactTooLargeError` (over ``max_bytes`` in total), or
    :class:`~modelflags.errors.ArtifactError` (a link or odd file inside, a read error).
    """
    where = shown or f"folder {os.fspath(path)}"
    files: dict[str, VerifiedArtifact] = {}
    total = 0

    def keep(relative: str, stream: io.FileIO) -> None:
        nonlocal total
        chunks = ChunkList()
        hasher = hashlib.sha256()
        while (view := chunks.read_from(stream, CHUNK_SIZE)) is not None:
            with view:
                total += len(view)
                if max_bytes is not None and total > max_bytes:
                    raise ArtifactTooLargeError(
                        f"{subject.where()}: {where} is over the limit of {max_bytes} bytes",
                        **subject.error_args(),
                    )
                hasher.update(view)
        file_subject = Subject(subject.model, subject.version, f"{subject.uri}/{relative}")
        files[relative] = VerifiedArtifact(
            file_subject, chunks, sha256=hasher.hexdigest(), suffix=suffix_of(relative)
        )

    _walk(path, subject, where, keep)
    actual = manifest_digest({name: str(item.sha256) for name, item in files.items()})
    _compare(subject, where, sha256, actual)
    return VerifiedFolder(subject, files, sha256=actual)


def folder_digest(
    path: str | os.PathLike[str],
    subject: Subject | None = None,
    *,
    shown: str | None = None,
    ignore: frozenset[str] = frozenset(),
) -> FolderDigest:
    """The digest of the folder at ``path``, its size and its files' digests (bytes not kept).

    Files named in ``ignore`` at the folder's top are left out. Raises as :func:`read_folder`.
    """
    subject = subject or Subject.of("", "", os.fspath(path))
    where = shown or f"folder {os.fspath(path)}"
    digests: dict[str, str] = {}
    total = 0
    scratch = bytearray(CHUNK_SIZE)

    def hash_only(relative: str, stream: io.FileIO) -> None:
        nonlocal total
        if relative in ignore:
            return
        hasher = hashlib.sha256()
        view = memoryview(scratch)
        while count := stream.readinto(view):
            hasher.update(view[:count])
            total += count
        digests[relative] = hasher.hexdigest()

    _walk(path, subject, where, hash_only)
    return FolderDigest(manifest_digest(digests), total, dict(sorted(digests.items())))


def _compare(subject: Subject, where: str, expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise DigestMismatchError(
            f"{subject.where()}: {where} has folder digest {actual}, the pinned digest is "
            f"{expected}; nothing in it was loaded",
            expected=expected,
            actual=actual,
            **subject.error_args(),
        )


def _walk(path: str | os.PathLike[str], subject: Subject, where: str, visit: Any) -> None:
    """Call ``visit(relative_path, stream)`` for every regular file below ``path``.

    Names are opened relative to their folder's descriptor without following links, so no
    component can be swapped for a link between the check and the open.
    """
    try:
        root = os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError as exc:
        raise ArtifactNotFoundError(
            f"{subject.where()}: {where} not found", **subject.error_args()
        ) from exc
    except OSError as exc:
        raise ArtifactError(
            f"{subject.where()}: cannot open {where} as a folder (a link, a file, or no "
            f"access): {exc}",
            **subject.error_args(),
        ) from exc
    count = 0
    try:
        count = _walk_fd(root, "", subject, where, visit, 0)
    except OSError as exc:
        raise ArtifactError(
            f"{subject.where()}: cannot read {where}: {exc}", **subject.error_args()
        ) from exc
    finally:
        os.close(root)
    if count == 0:
        raise ArtifactError(
            f"{subject.where()}: {where} has no files, so it has no digest",
            **subject.error_args(),
        )


def _walk_fd(folder: int, prefix: str, subject: Subject, where: str, visit: Any, depth: int) -> int:
    if depth > _MAX_DEPTH:
        raise ArtifactError(
            f"{subject.where()}: {where} nests folders more than {_MAX_DEPTH} deep",
            **subject.error_args(),
        )
    count = 0
    for name in sorted(os.listdir(folder)):
        relative = f"{prefix}{name}"
        problem = check_relative_path(relative)
        if problem is None and not _utf8(name):
            problem = "a name that is not UTF-8"
        if problem is not None:
            raise ArtifactError(
                f"{subject.where()}: {where} has {PurePosixPath(relative).as_posix()!r}, with "
                f"{problem}: such a folder has no digest",
                **subject.error_args(),
            )
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            child = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=folder)
            try:
                count += _walk_fd(child, f"{relative}/", subject, where, visit, depth + 1)
            finally:
                os.close(child)
            continue
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(
                f"{subject.where()}: {where} has {relative!r}, which is {_kind(info)}; a "
                "folder artifact holds only files and folders (links are never followed)",
                **subject.error_args(),
            )
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=folder)
        with open(fd, "rb", buffering=0) as stream:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between stat and open
                raise ArtifactError(
                    f"{subject.where()}: {where}: {relative!r} changed while it was read",
                    **subject.error_args(),
                )
            visit(relative, stream)
        count += 1
    return count


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes come back as lone surrogates
        return False
    return True


def _kind(info: os.stat_result) -> str:
    mode = info.st_mode
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"
