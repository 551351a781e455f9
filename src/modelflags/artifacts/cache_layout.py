"""The content-addressed cache folder: its paths, what it trusts, and how its files are opened.

::

    <cache_dir>/sha256/<first two hex digits>/<digest>   downloaded artifacts, named by their sha256
    <cache_dir>/partial/<digest>.partial                  an unfinished download, resumed later
    <cache_dir>/locks/<digest>.lock                       the cross-process download lock
    <cache_dir>/folders/<first two hex digits>/<digest>/  downloaded folders, by folder digest
    <cache_dir>/partial/<key>.folder/                     an unfinished folder download

(folder digests: :mod:`~modelflags.artifacts.folders`; a folder download is resumed file by file.)

What the cache trusts, and why:

- **The folder, only when nobody else can write to it.** It is created private (mode 0700). An
  existing cache folder, or any folder in it, that belongs to another user or that its group or
  others may write to is refused with :class:`~modelflags.artifacts.errors.UnsafeCacheError`
  (fix its owner or mode, or choose another ``cache_dir``): anyone who can write there could
  plant files or links. The cache folder itself may be reached through a symbolic link you made
  (``~/.cache`` on another disk); nothing inside it is.
- **No link, ever.** Files are opened with ``O_NOFOLLOW`` and must be regular files of the current
  user; sub-folders are checked with ``lstat``. A link, FIFO or other odd thing found where an
  entry, a partial file or a lock should be is removed (the link itself, never its target) and
  logged, and the artifact is downloaded again.
- **No file by its name.** A file under ``sha256/`` was verified when it was written, but it is
  hashed again every time it is used (see :mod:`modelflags.artifacts.verified`); one that does not
  match its name is removed and downloaded again.

Operating-system errors here become :class:`~modelflags.errors.ArtifactError` naming the model,
the version and the folder.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import stat
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, Final

import filelock

from modelflags.artifacts.errors import UnsafeCacheError
from modelflags.artifacts.naming import Subject
from modelflags.errors import ArtifactError

__all__ = ["CacheLayout", "default_cache_dir"]

logger = logging.getLogger(__name__)

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_OTHERS_WRITE: Final = stat.S_IWGRP | stat.S_IWOTH


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The cache folder from the environment.

    ``$MODELFLAGS_CACHE_DIR``, else ``$XDG_CACHE_HOME/modelflags``, else ``~/.cache/modelflags``.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("MODELFLAGS_CACHE_DIR")
    if explicit:
        return Path(os.path.expanduser(explicit))
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(os.path.expanduser(xdg)) if xdg else Path.home() / ".cache"
    return base / "modelflags"


def _user() -> int | None:
    geteuid = getattr(os, "geteuid", None)
    return geteuid() if geteuid is not None else None


class CacheLayout:
    """The paths of the cache folder ``root``, its safety checks, and safe opening of its files.

    See :mod:`modelflags.artifacts.cache_layout` for what it trusts. Safe to share between
    threads: it holds nothing but its root.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        """The cache folder."""
        return self._root

    def entry(self, digest: str) -> Path:
        """Where the artifact with this (lower-case hex) digest lives."""
        return self._root / "sha256" / digest[:2] / digest

    def partial(self, digest: str) -> Path:
        """Where an unfinished download of this digest is kept."""
        return self._root / "partial" / f"{digest}.partial"

    def lock_path(self, digest: str) -> Path:
        """The lock file that serializes downloads of this digest between processes."""
        return self._root / "locks" / f"{digest}.lock"

    def folder_entry(self, digest: str) -> Path:
        """Where the folder artifact with this (lower-case hex) folder digest lives."""
        return self._root / "folders" / digest[:2] / digest

    def partial_folder(self, key: str) -> Path:
        """Where an unfinished download of a folder is kept (``key``: its digest when known)."""
        return self._root / "partial" / f"{key}.folder"

    # -- the folders -------------------------------------------------------------------------

    def prepare(self, digest: str, subject: Subject) -> None:
        """Create the folders a digest needs (mode 0700) and check every one can be trusted.

        Raises :class:`UnsafeCacheError` for a folder another user owns or may write to, or a
        link where a sub-folder belongs, and :class:`ArtifactError` when a folder cannot be made.
        """
        root = self._root
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            with suppress(FileExistsError):
                os.mkdir(root, 0o700)
            info = os.stat(root)  # the root may be a link of the user's; what it reaches counts
        except OSError as exc:
            raise self._unusable(subject, exc) from exc
        if not stat.S_ISDIR(info.st_mode):
            raise self._unusable(subject, f"{root} is not a folder")
        self._check_owner(root, info, subject)
        for folder in (
            root / "sha256",
            self.entry(digest).parent,
            root / "partial",
            root / "locks",
        ):
            self._folder(folder, subject)

    def prepare_folders(self, digest: str, subject: Subject) -> None:
        """Like :meth:`prepare`, for a folder artifact: its ``folders/`` parents too."""
        self.prepare(digest, subject)
        for folder in (self._root / "folders", self.folder_entry(digest).parent):
            self._folder(folder, subject)

    def discard_tree(self, path: Path) -> None:
        """Remove a folder of the cache and everything in it (links removed, never followed);
        a link or file where the folder should be is removed itself."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with suppress(FileNotFoundError):
                os.unlink(path)

    def _folder(self, folder: Path, subject: Subject) -> None:
        try:
            with suppress(FileExistsError):
                os.mkdir(folder, 0o700)
            info = os.lstat(folder)
        except OSError as exc:
            raise self._unusable(subject, exc) from exc
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise UnsafeCacheError(
                f"{subject.where()}: {folder} is {_kind(info)}, not a folder; the cache never "
                "follows links and trusts only folders it made: remove it",
                path=str(folder),
                **subject.error_args(),
            )
        self._check_owner(folder, info, subject)

    def _check_owner(self, folder: Path, info: os.stat_result, subject: Subject) -> None:
        user = _user()
        if user is None:  # no POSIX owners (Windows): the folder's access control decides
            return
        if info.st_uid != user:
            raise UnsafeCacheError(
                f"{subject.where()}: cache folder {folder} belongs to user id {info.st_uid}, "
                f"not to this user (id {user}); its files could be replaced behind this "
                "process's back. Use a folder of your own (cache_dir= or MODELFLAGS_CACHE_DIR)",
                path=str(folder),
                **subject.error_args(),
            )
        if info.st_mode & _OTHERS_WRITE:
            raise UnsafeCacheError(
                f"{subject.where()}: cache folder {folder} can be written by its group or by "
                f"others (mode {stat.S_IMODE(info.st_mode):04o}); run 'chmod go-w {folder}' "
                "or use another folder (cache_dir= or MODELFLAGS_CACHE_DIR)",
                path=str(folder),
                **subject.error_args(),
            )

    def _unusable(self, subject: Subject, cause: object) -> ArtifactError:
        return ArtifactError(
            f"{subject.where()}: cannot use cache folder {self._root}: {cause}",
            **subject.error_args(),
        )

    # -- the files ---------------------------------------------------------------------------

    def open_entry(self, digest: str, subject: Subject) -> io.FileIO | None:
        """The verified-once entry of ``digest`` open for reading, or None when there is none."""
        fd = self._open(self.entry(digest), os.O_RDONLY, subject)
        return None if fd is None else open(fd, "rb", buffering=0)

    def partial_size(self, digest: str, subject: Subject) -> int:
        """How many bytes of ``digest`` an earlier download left (0 when none)."""
        fd = self._open(self.partial(digest), os.O_RDONLY, subject)
        if fd is None:
            return 0
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def read_partial(self, digest: str, subject: Subject) -> BinaryIO:
        """The partial file of ``digest``, open for reading (it must exist)."""
        fd = self._open(self.partial(digest), os.O_RDONLY, subject)
        if fd is None:
            raise FileNotFoundError(errno.ENOENT, "the partial file vanished", self.partial(digest))
        return open(fd, "rb", buffering=0)

    def open_partial(self, digest: str, subject: Subject, *, append: bool) -> BinaryIO:
        """The partial file of ``digest`` open for writing: appending, or emptied first."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        fd = self._open(self.partial(digest), flags, subject)
        assert fd is not None  # O_CREAT
        return open(fd, "ab" if append else "wb")

    def publish(self, digest: str) -> None:
        """Move the finished partial file to its entry (atomic; a link there is replaced)."""
        os.replace(self.partial(digest), self.entry(digest))

    def discard_partial(self, digest: str) -> None:
        """Remove the partial file of ``digest``, if any (a link is removed, not followed)."""
        with suppress(FileNotFoundError):
            os.unlink(self.partial(digest))

    def discard_entry(self, digest: str) -> None:
        """Remove the entry of ``digest``, if any."""
        with suppress(FileNotFoundError):
            os.unlink(self.entry(digest))

    def file_lock(self, digest: str, subject: Subject, timeout: float) -> filelock.BaseFileLock:
        """The cross-process lock of ``digest``, its file first made sure to be a plain file."""
        path = self.lock_path(digest)
        fd = self._open(path, os.O_RDWR | os.O_CREAT, subject)
        assert fd is not None  # O_CREAT
        os.close(fd)
        return filelock.FileLock(str(path), timeout=timeout)

    def _open(self, path: Path, flags: int, subject: Subject) -> int | None:
        """Open ``path`` without following a link; remove what is not a regular file of ours.

        Returns None when the file does not exist and ``flags`` do not create it.
        """
        for _ in range(3):
            try:
                fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC, 0o600)
            except FileNotFoundError as exc:
                if flags & os.O_CREAT:
                    raise self._unusable(subject, exc) from exc
                return None
            except OSError as exc:
                if self._remove_planted(path, subject):
                    continue
                raise self._unusable(subject, exc) from exc
            try:
                info = os.fstat(fd)
            except OSError as exc:
                os.close(fd)
                raise self._unusable(subject, exc) from exc
            user = _user()
            if stat.S_ISREG(info.st_mode) and (user is None or info.st_uid == user):
                return fd
            os.close(fd)
            self._remove_planted(path, subject, owner=info.st_uid)
            if not flags & os.O_CREAT:
                return None
        raise UnsafeCacheError(
            f"{subject.where()}: {path} keeps being replaced by something other than a file",
            path=str(path),
            **subject.error_args(),
        )

    def _remove_planted(self, path: Path, subject: Subject, *, owner: int | None = None) -> bool:
        """Remove ``path`` if it is not a regular file of this user; True when it did."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._unusable(subject, exc) from exc
        user = _user()
        ours = user is None or info.st_uid == user
        if stat.S_ISREG(info.st_mode) and ours and owner in (None, user):
            return False
        if stat.S_ISDIR(info.st_mode):
            raise UnsafeCacheError(
                f"{subject.where()}: {path} is a folder where the cache keeps a file; remove it",
                path=str(path),
                **subject.error_args(),
            )
        what = _kind(info) if ours else f"{_kind(info)} of user id {info.st_uid}"
        logger.warning(
            "%s: removing %s from the cache: it is %s, not a file the cache wrote",
            subject.where(),
            path,
            what,
        )
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._unusable(subject, exc) from exc
        return True


def _kind(info: os.stat_result) -> str:
    mode = info.st_mode
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISREG, "a file"),
    ):
        if test(mode):
            return name
    return "an unknown kind of file"
