"""Remote artifacts: HTTP(S) and S3 downloads into a content-addressed disk cache.

:class:`RemoteFetcher` ties the parts together:

- :mod:`~modelflags.artifacts.cache_layout`: the cache folder, what it trusts, and how its files
  are opened (never through a link);
- :mod:`~modelflags.artifacts.http` and :mod:`~modelflags.artifacts.s3`: where the bytes come
  from, and where configured headers may go (only to the artifact's own origin);
- :mod:`~modelflags.artifacts.transfer`: a download streamed into its ``.partial`` file, hashed,
  counted against the declared ``size`` and ``max_bytes``, then published under its digest;
- :mod:`~modelflags.artifacts.retry`: retries with back-off, and the deadline of a fetch;
- :mod:`~modelflags.artifacts.verified`: what a loader gets.

:meth:`RemoteFetcher.open` returns the artifact's verified bytes (what is deserialized);
:meth:`RemoteFetcher.fetch` returns the path of the cache entry, checked when it returns (for
prefetching: never deserialize that path, it may change afterwards). Either hashes the entry
again every time: a file in the cache is not trusted by its name.

Only one thread of one process downloads a digest at a time (a thread lock inside the process, a
``filelock.FileLock`` between processes); the others wait and then find the file. Request header
values never appear in log records or error messages, and URIs are shown without their user info
and query string.
"""

from __future__ import annotations

import logging
import os
import random as _random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import filelock
import httpx

from modelflags.artifacts.cache_layout import CacheLayout, default_cache_dir
from modelflags.artifacts.chunks import CHUNK_SIZE
from modelflags.artifacts.errors import SizeMismatchError
from modelflags.artifacts.http import DEFAULT_TIMEOUT, HttpSource
from modelflags.artifacts.naming import Subject
from modelflags.artifacts.reading import ByteBounds, read_stream, suffix_of
from modelflags.artifacts.retry import DEFAULT_RETRY, Deadline, Restart, Retryable, RetryPolicy
from modelflags.artifacts.s3 import S3Source
from modelflags.artifacts.transfer import DeadlinePassed, Job, ProgressEvent, receive
from modelflags.artifacts.verified import VerifiedArtifact
from modelflags.errors import (
    ArtifactError,
    ArtifactTooLargeError,
    DigestMismatchError,
    FetchError,
)

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "ProgressEvent",
    "RemoteFetcher",
    "RetryPolicy",
    "default_cache_dir",
]

logger = logging.getLogger(__name__)

_DIGEST = re.compile(r"[0-9a-f]{64}")
_SCHEMES = frozenset({"http", "https", "s3"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?")
_MAX_RESTARTS = 2
_SUSPECT = (DigestMismatchError, SizeMismatchError, ArtifactTooLargeError)


class RemoteFetcher:
    """Fetches ``http``, ``https`` and ``s3`` artifacts into a content-addressed cache.

    Implements :class:`modelflags.artifacts.Fetcher`. Safe to share between threads (one instance
    per process is the intent: it pools HTTP connections), and several processes may share one
    cache folder. Concurrent requests for the same digest cause one download.

    ``timeout`` applies to every request, also through a ``client`` you pass, each wait capped at
    the time left before the fetch's deadline (``retry.max_total``). ``headers`` are sent with
    every HTTP(S) request to the artifact's own origin; the per-call headers of :meth:`fetch`
    override them (see :mod:`modelflags.artifacts.http` for redirects; S3 requests are signed by
    s3fs and take no extra headers). ``s3_options`` are passed to ``s3fs.S3FileSystem``. Downloads
    of at least ``progress_min_bytes`` (or of unknown size) log their progress at INFO about every
    tenth and call ``progress``. ``max_bytes`` refuses larger artifacts. ``sleep``, ``random`` and
    ``clock`` are injectable for tests. With ``durable=False`` a download is not synced to disk
    before it is published: a little faster; a power cut may then leave a damaged entry, which
    the next use detects (every use hashes the entry) and downloads again.
    """

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_bytes: int | None = None,
        headers: Mapping[str, str] | None = None,
        s3_options: Mapping[str, Any] | None = None,
        progress: Callable[[ProgressEvent], None] | None = None,
        progress_min_bytes: int = 8 << 20,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
        lock_timeout: float = 600.0,
        durable: bool = True,
    ) -> None:
        if client is not None and transport is not None:
            raise ValueError("pass either client= or transport=, not both")
        self._layout = CacheLayout(cache_dir if cache_dir is not None else default_cache_dir())
        self._http = HttpSource(
            client=client,
            transport=transport,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
        )
        self._s3 = S3Source(s3_options or {})
        self._retry = retry
        self._max_bytes = max_bytes
        self._headers = dict(headers or {})
        self._progress = progress
        self._progress_min_bytes = progress_min_bytes
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._durable = durable
        self._lock = threading.Lock()
        self._digest_locks: dict[str, threading.Lock] = {}

    @property
    def cache_dir(self) -> Path:
        """The cache folder."""
        return self._layout.root

    def cache_path(self, sha256: str) -> Path:
        """Where the artifact with this digest is cached (whether or not it is there yet)."""
        return self._layout.entry(sha256.strip().lower())

    def fetch(
        self,
        *,
        model: str,
        version: str,
        uri: str,
        sha256: str,
        headers: Mapping[str, str] | None = None,
        size: int | None = None,
    ) -> Path:
        """The cache entry of ``sha256``, downloaded from ``uri`` unless cached, checked now.

        The entry is hashed (a cached one too) before this returns; deserialize through
        :meth:`open` instead, which hands over the very bytes it hashed. ``size`` is the declared
        size, when the registry has one. Raises :class:`ArtifactNotFoundError` (404, missing
        object), :class:`DigestMismatchError`, :class:`ArtifactTooLargeError`,
        :class:`~modelflags.artifacts.errors.SizeMismatchError`, :class:`FetchError` (other
        statuses, the deadline, or transient failures that outlasted the retries) or
        :class:`ArtifactError` (an unusable or unsafe cache folder among others).
        """
        job, scheme = self._job(model, version, uri, sha256, headers, size)
        self._get(job, scheme, keep=False)
        return self._layout.entry(job.digest)

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
        """The artifact's bytes, verified against ``sha256`` (and ``size``), held in memory.

        Reads and hashes the cache entry, or downloads it (keeping the bytes it hashed). An
        entry that fails its checks is removed and downloaded again. Raises as :meth:`fetch`.
        """
        job, scheme = self._job(model, version, uri, sha256, headers, size)
        return self._get(job, scheme, keep=True)

    def close(self) -> None:
        """Close the HTTP client this fetcher made (a client you passed stays open)."""
        self._http.close()
        self._s3.close()

    # -- one fetch -------------------------------------------------------------------------

    def _job(
        self,
        model: str,
        version: str,
        uri: str,
        sha256: str,
        headers: Mapping[str, str] | None,
        size: int | None,
    ) -> tuple[Job, str]:
        subject = Subject.of(model, version, uri)
        digest = sha256.strip().lower()
        if not _DIGEST.fullmatch(digest):
            raise ArtifactError(
                f"{subject.where()}: {sha256!r} is not a sha256 digest", **subject.error_args()
            )
        try:
            scheme = urlsplit(uri).scheme.lower()
        except ValueError:
            scheme = ""
        if scheme not in _SCHEMES:
            raise ArtifactError(
                f"{subject.where()}: cannot fetch {subject.uri}: only http, https and s3 URIs "
                "are remote",
                **subject.error_args(),
            )
        merged = {**self._headers, **(headers or {})}
        for name, value in merged.items():
            if not (_HEADER_NAME.fullmatch(name) and _HEADER_VALUE.fullmatch(value)):
                # checked here because httpx's and httpcore's errors and logs quote the value
                raise ArtifactError(
                    f"{subject.where()}: header {name!r} for {subject.uri} has a name or value "
                    "that is not valid HTTP (control characters, non-ASCII, or surrounding "
                    "spaces)",
                    **subject.error_args(),
                )
        bounds = ByteBounds(size=size, max_bytes=self._max_bytes)
        job = Job(subject, uri, digest, merged, bounds)
        if scheme == "s3":
            self._s3.check(job)
        return job, scheme

    def _get(self, job: Job, scheme: str, *, keep: bool) -> VerifiedArtifact:
        self._layout.prepare(job.digest, job.subject)
        found = self._cached(job, keep=keep, discard=False)
        if found is not None:
            return found
        with self._exclusive(job):
            found = self._cached(job, keep=keep, discard=True)
            if found is not None:  # another thread or process downloaded it while we waited
                logger.debug("%s: found %s in the cache after waiting", job.where(), job.shown)
                return found
            return self._download(job, scheme, keep=keep)

    def _cached(self, job: Job, *, keep: bool, discard: bool) -> VerifiedArtifact | None:
        """The cache entry, read and checked; None when absent or (under the lock) removed."""
        entry = self._layout.entry(job.digest)
        stream = self._layout.open_entry(job.digest, job.subject)
        if stream is None:
            return None
        with stream:
            try:
                return read_stream(
                    stream,
                    job.subject,
                    shown=f"cache entry {entry}",
                    sha256=job.digest,
                    bounds=job.bounds,
                    keep=keep,
                    suffix=suffix_of(job.uri),
                )
            except _SUSPECT as exc:
                if discard:
                    logger.warning(
                        "%s: removing cache entry %s and downloading %s again: %s",
                        job.where(),
                        entry,
                        job.shown,
                        exc,
                    )
                    self._layout.discard_entry(job.digest)
                return None

    @contextmanager
    def _exclusive(self, job: Job) -> Iterator[None]:
        with self._lock:
            local = self._digest_locks.setdefault(job.digest, threading.Lock())
        started = time.monotonic()
        if not local.acquire(timeout=max(self._lock_timeout, 0.0)):
            raise self._lock_timed_out(job)
        try:
            remaining = max(self._lock_timeout - (time.monotonic() - started), 0.0)
            file_lock = self._layout.file_lock(job.digest, job.subject, remaining)
            try:
                file_lock.acquire()
            except filelock.Timeout as exc:
                raise self._lock_timed_out(job) from exc
            try:
                yield
            finally:
                file_lock.release()
        finally:
            local.release()

    def _lock_timed_out(self, job: Job) -> FetchError:
        return FetchError(
            f"{job.where()}: gave up waiting {self._lock_timeout:g} s for another download "
            f"of {job.shown} into {self._layout.root}",
            **job.error_args(),
        )

    # -- the retry loop --------------------------------------------------------------------

    def _download(self, job: Job, scheme: str, *, keep: bool) -> VerifiedArtifact:
        opener = self._s3.open if scheme == "s3" else self._http.open
        layout, policy = self._layout, self._retry
        deadline = Deadline.after(policy.max_total, self._clock)
        tries = restarts = 0
        logger.info("%s: downloading %s", job.where(), job.shown)
        while True:
            try:
                offset = layout.partial_size(job.digest, job.subject)
                with opener(job, offset, deadline) as body:
                    kept = receive(
                        job,
                        body,
                        layout,
                        deadline=deadline,
                        durable=self._durable,
                        progress=self._progress,
                        progress_min_bytes=self._progress_min_bytes,
                        keep=keep,
                    )
                logger.info("%s: downloaded %s", job.where(), job.shown)
                suffix = suffix_of(job.uri)
                if keep and kept is not None:
                    return VerifiedArtifact(job.subject, kept, sha256=job.digest, suffix=suffix)
                if keep:  # too large to hold while downloading: read the entry back
                    found = self._cached(job, keep=True, discard=True)
                    if found is None:
                        raise FetchError(
                            f"{job.where()}: the cache entry of {job.shown} changed right after "
                            "its download",
                            **job.error_args(),
                        )
                    return found
                size = layout.entry(job.digest).stat().st_size
                return VerifiedArtifact.checked_only(
                    job.subject, size, sha256=job.digest, suffix=suffix
                )
            except Restart as exc:
                layout.discard_partial(job.digest)
                restarts += 1
                if restarts > _MAX_RESTARTS:
                    raise FetchError(
                        f"{job.where()}: cannot fetch {job.shown}: {exc}", **job.error_args()
                    ) from exc
                logger.info("%s: restarting download of %s: %s", job.where(), job.shown, exc)
            except Retryable as exc:
                tries += 1
                if tries >= policy.attempts:
                    raise self._gave_up(job, exc, f"after {tries} attempts") from exc
                wait = max(
                    policy.delay(tries - 1, self._random()), min(exc.retry_after, policy.max_delay)
                )
                spent = deadline.elapsed()
                if spent + wait >= policy.max_total:
                    raise self._gave_up(
                        job,
                        exc,
                        f"after {tries} attempts in {spent:.1f} s; the deadline of a fetch "
                        f"({policy.max_total:g} s) leaves no time for another",
                    ) from exc
                logger.warning(
                    "%s: attempt %d of %d to fetch %s failed (%s); retrying in %.2f s",
                    job.where(),
                    tries,
                    policy.attempts,
                    job.shown,
                    exc.reason,
                    wait,
                )
                self._sleep(wait)
            except DeadlinePassed as exc:
                raise FetchError(
                    f"{job.where()}: cannot fetch {job.shown}: the deadline of a fetch "
                    f"({policy.max_total:g} s) passed after {deadline.elapsed():.1f} s and "
                    f"{exc.received} bytes (kept for the next try)",
                    **job.error_args(),
                ) from None
            except ArtifactError:
                layout.discard_partial(job.digest)
                raise
            except OSError as exc:
                # the cache folder, not the network: the sources translate their own errors
                layout.discard_partial(job.digest)
                raise ArtifactError(
                    f"{job.where()}: cannot write {layout.partial(job.digest)}: {exc}",
                    **job.error_args(),
                ) from exc

    def _gave_up(self, job: Job, exc: Retryable, how: str) -> FetchError:
        return FetchError(
            f"{job.where()}: cannot fetch {job.shown}: {exc.reason} ({how})",
            status=exc.status,
            **job.error_args(),
        )
