"""Folder artifacts into the content-addressed cache: downloaded whole, verified, resumed.

:class:`FolderFetcher` is to folders what :class:`~modelflags.artifacts.remote.RemoteFetcher` is
to files, with the same rules:

- **verified before use**: a folder is read into memory and its folder digest
  (:mod:`~modelflags.artifacts.folders`) checked against the pinned one before a loader sees a
  byte; a cache entry is checked again on every use, and one that fails is removed and downloaded
  again;
- **single flight**: one thread of one process downloads a digest at a time (a thread lock in the
  process, the cache's ``filelock`` per digest between processes); the others wait, then find it;
- **resume**: files are downloaded one by one into ``partial/<digest>.folder/``, each written
  aside and moved into place when complete, so a download cut short keeps its complete files and
  the next one fetches only the rest. A resumed download that does not match its digest is
  started once more from nothing;
- **no links**: nothing in the cache is followed (see :mod:`~modelflags.artifacts.cache_layout`).

Where the files come from is a :class:`~modelflags.artifacts.folder_sources.FolderSource`
(:mod:`~modelflags.artifacts.folder_sources`): :class:`LocalFolderSource` for a folder on
this machine (what ``mlflow server --default-artifact-root DIR`` gives its clients), or MLflow's
own client for every other artifact store (:mod:`~modelflags.artifacts.mlflow`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import filelock

from modelflags.artifacts.cache_layout import CacheLayout, default_cache_dir
from modelflags.artifacts.folder_sources import FolderSource, LocalFolderSource, local_folder_path
from modelflags.artifacts.folders import VerifiedFolder, check_relative_path, read_folder
from modelflags.artifacts.naming import Subject
from modelflags.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    DigestMismatchError,
    FetchError,
)

__all__ = ["FolderFetcher", "FolderSource", "LocalFolderSource", "local_folder_path"]

logger = logging.getLogger(__name__)

_INCOMING = ".incoming-"


class FolderFetcher:
    """Fetches folder artifacts into the content-addressed cache and hands over verified bytes.

    ``cache_dir`` as for :class:`~modelflags.artifacts.remote.RemoteFetcher` (default
    ``MODELFLAGS_CACHE_DIR``, else the user cache folder); ``max_bytes`` bounds a folder's total
    size; ``lock_timeout`` is how long to wait for another download of the same folder.

    Safe to share between threads, and several processes may share one cache folder.
    """

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
        lock_timeout: float = 600.0,
    ) -> None:
        self._layout = CacheLayout(cache_dir if cache_dir is not None else default_cache_dir())
        self._max_bytes = max_bytes
        self._lock_timeout = lock_timeout
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    @property
    def cache_dir(self) -> Path:
        """The cache folder."""
        return self._layout.root

    def entry(self, sha256: str) -> Path:
        """Where the folder with this digest is cached (whether or not it is there yet)."""
        return self._layout.folder_entry(sha256)

    def open(
        self,
        *,
        model: str,
        version: str,
        uri: str,
        location: str,
        sha256: str,
        source: FolderSource,
    ) -> VerifiedFolder:
        """The folder's files, verified against ``sha256``: from the cache, or downloaded from
        ``location`` through ``source`` first. ``uri`` names the folder in messages.

        Raises :class:`~modelflags.errors.DigestMismatchError`,
        :class:`~modelflags.errors.ArtifactNotFoundError`,
        :class:`~modelflags.errors.ArtifactTooLargeError`,
        :class:`~modelflags.errors.FetchError` (the store failed, or waiting for another
        download timed out) or another :class:`~modelflags.errors.ArtifactError`.
        """
        subject = Subject.of(model, version, uri)
        digest = sha256.strip().lower()
        self._layout.prepare_folders(digest, subject)
        found = self._cached(digest, subject, discard=False)
        if found is not None:
            return found
        with self._exclusive(digest, subject):
            found = self._cached(digest, subject, discard=True)
            if found is not None:
                return found
            return self._download(digest, digest, subject, location, source)

    def pin(
        self, *, model: str, version: str, uri: str, location: str, source: FolderSource
    ) -> VerifiedFolder:
        """Download a folder whose digest is not known yet, and cache it under the digest found.

        For pinning (``modelflags mlflow pin``, ``trust_on_first_use``): the caller decides
        whether to trust the digest; nothing is loaded here. Raises as :meth:`open`.
        """
        subject = Subject.of(model, version, uri)
        key = "uri-" + _hash_text(location)
        self._layout.prepare(key, subject)
        with self._exclusive(key, subject):
            return self._download(key, None, subject, location, source)

    # -- the cache ----------------------------------------------------------------------------

    def _cached(self, digest: str, subject: Subject, *, discard: bool) -> VerifiedFolder | None:
        entry = self._layout.folder_entry(digest)
        try:
            return read_folder(
                entry,
                subject,
                sha256=digest,
                max_bytes=self._max_bytes,
                shown=f"cache entry {entry}",
            )
        except ArtifactNotFoundError:
            return None
        except ArtifactTooLargeError:
            raise
        except ArtifactError as exc:
            if discard:
                logger.warning(
                    "%s: removing cache entry %s and downloading %s again: %s",
                    subject.where(),
                    entry,
                    subject.uri,
                    exc,
                )
                self._layout.discard_tree(entry)
            return None

    @contextlib.contextmanager
    def _exclusive(self, key: str, subject: Subject) -> Iterator[None]:
        with self._lock:
            local = self._key_locks.setdefault(key, threading.Lock())
        started = time.monotonic()
        if not local.acquire(timeout=max(self._lock_timeout, 0.0)):
            raise self._lock_timed_out(subject)
        try:
            remaining = max(self._lock_timeout - (time.monotonic() - started), 0.0)
            file_lock = self._layout.file_lock(key, subject, remaining)
            try:
                file_lock.acquire()
            except filelock.Timeout as exc:
                raise self._lock_timed_out(subject) from exc
            try:
                yield
            finally:
                file_lock.release()
        finally:
            local.release()

    def _lock_timed_out(self, subject: Subject) -> FetchError:
        return FetchError(
            f"{subject.where()}: gave up waiting {self._lock_timeout:g} s for another download "
            f"of {subject.uri} into {self._layout.root}",
            **subject.error_args(),
        )

    # -- one download -------------------------------------------------------------------------

    def _download(
        self,
        key: str,
        expected: str | None,
        subject: Subject,
        location: str,
        source: FolderSource,
    ) -> VerifiedFolder:
        partial = self._layout.partial_folder(key)
        shown = f"the download of {subject.uri}"
        for attempt in (1, 2):
            try:
                resumed = self._receive(key, partial, subject, location, source)
            except OSError as exc:  # the cache folder, not the store: its errors are mapped
                raise ArtifactError(
                    f"{subject.where()}: cannot write {partial}: {exc}", **subject.error_args()
                ) from exc
            try:
                folder = read_folder(
                    partial, subject, sha256=expected, max_bytes=self._max_bytes, shown=shown
                )
            except DigestMismatchError:
                self._layout.discard_tree(partial)
                if resumed and attempt == 1:
                    logger.warning(
                        "%s: %s resumed %d files of an earlier try and does not match its "
                        "digest; downloading it again from nothing",
                        subject.where(),
                        shown,
                        resumed,
                    )
                    continue
                raise
            except ArtifactError:
                self._layout.discard_tree(partial)
                raise
            self._publish(partial, folder.sha256, subject)
            logger.info(
                "%s: downloaded %s (%d files, %d bytes)",
                subject.where(),
                subject.uri,
                len(folder.files),
                folder.size,
            )
            return folder
        raise AssertionError("unreachable")  # pragma: no cover

    def _receive(
        self, key: str, partial: Path, subject: Subject, location: str, source: FolderSource
    ) -> int:
        """Bring ``partial`` to the listed files; returns how many complete ones were kept."""
        try:
            listing = list(source.list_files(location))
        except Exception as exc:
            raise _store_error(subject, "list the files of", exc) from exc
        wanted = self._check_listing(listing, subject)
        layout = self._layout
        for leftover in partial.parent.glob(f"{key}{_INCOMING}*"):
            layout.discard_tree(leftover)
        try:
            info = os.lstat(partial)
            if not stat.S_ISDIR(info.st_mode):
                layout.discard_tree(partial)
                raise FileNotFoundError
        except FileNotFoundError:
            os.mkdir(partial, 0o700)
        self._drop_unlisted(partial, wanted)
        kept = 0
        for relative, size in wanted.items():
            target = partial.joinpath(*relative.split("/"))
            found = _lstat(target)
            if found is not None:
                if stat.S_ISREG(found.st_mode) and size is not None and found.st_size == size:
                    kept += 1
                    continue
                layout.discard_tree(target)
            incoming = Path(tempfile.mkdtemp(prefix=f"{key}{_INCOMING}", dir=partial.parent))
            try:
                landed = incoming / "file"
                try:
                    source.download(location, relative, landed)
                except Exception as exc:
                    raise _store_error(subject, f"download {relative!r} of", exc) from exc
                try:
                    _make_parents(partial, relative)
                except ValueError as exc:
                    raise _store_error(subject, "place the files of", exc) from exc
                os.replace(landed, target)
            finally:
                shutil.rmtree(incoming, ignore_errors=True)
        return kept

    def _check_listing(
        self, listing: Sequence[tuple[str, int | None]], subject: Subject
    ) -> dict[str, int | None]:
        wanted: dict[str, int | None] = {}
        total = 0
        for relative, size in listing:
            problem = check_relative_path(relative)
            if problem is not None or relative in wanted:
                raise ArtifactError(
                    f"{subject.where()}: the store lists {relative!r} in {subject.uri}, with "
                    f"{problem or 'the same path twice'}; nothing was downloaded",
                    **subject.error_args(),
                )
            wanted[relative] = size
            total += size or 0
        if not wanted:
            raise ArtifactNotFoundError(
                f"{subject.where()}: the store has no files at {subject.uri}",
                **subject.error_args(),
            )
        if self._max_bytes is not None and total > self._max_bytes:
            raise ArtifactTooLargeError(
                f"{subject.where()}: {subject.uri} has {total} bytes, over the limit of "
                f"{self._max_bytes}",
                **subject.error_args(),
            )
        return wanted

    def _drop_unlisted(self, partial: Path, wanted: dict[str, int | None]) -> None:
        """Remove what an earlier try left that the store no longer lists (and any link)."""
        parents = {
            "/".join(name.split("/")[:i]) for name in wanted for i in range(1, name.count("/") + 1)
        }
        for folder, folders, files in os.walk(partial, topdown=True, followlinks=False):
            base = Path(folder)
            for name in list(folders):
                relative = (base / name).relative_to(partial).as_posix()
                if relative not in parents or os.path.islink(base / name):
                    self._layout.discard_tree(base / name)
                    folders.remove(name)
            for name in files:
                relative = (base / name).relative_to(partial).as_posix()
                if relative not in wanted:
                    self._layout.discard_tree(base / name)

    def _publish(self, partial: Path, digest: str, subject: Subject) -> None:
        layout = self._layout
        layout.prepare_folders(digest, subject)
        entry = layout.folder_entry(digest)
        if self._cached(digest, subject, discard=True) is not None:
            layout.discard_tree(partial)  # the same bytes are already there
            return
        try:
            os.replace(partial, entry)
        except OSError as exc:
            layout.discard_tree(partial)
            raise ArtifactError(
                f"{subject.where()}: cannot move the download of {subject.uri} to {entry}: {exc}",
                **subject.error_args(),
            ) from exc


def _store_error(subject: Subject, what: str, exc: Exception) -> ArtifactError:
    """The error of a failed store call (the store's own message kept, bounded)."""
    message = f"{subject.where()}: cannot {what} {subject.uri}: {type(exc).__name__}: {exc}"
    if len(message) > 600:
        message = message[:600] + "..."
    if isinstance(exc, ArtifactError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return ArtifactNotFoundError(message, **subject.error_args())
    if isinstance(exc, ValueError):
        return ArtifactError(message, **subject.error_args())
    return FetchError(message, **subject.error_args())


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _make_parents(root: Path, relative: str) -> None:
    folder = root
    for part in relative.split("/")[:-1]:
        folder = folder / part
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise ValueError(f"{folder} is not a folder") from None


def _hash_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()
