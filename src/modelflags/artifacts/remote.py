"""Remote artifacts: HTTP(S) and S3 downloads into a verified, content-addressed disk cache.

The cache folder holds::

    <cache_dir>/sha256/<first two hex digits>/<digest>   verified artifacts, named by their sha256
    <cache_dir>/partial/<digest>.partial                  an unfinished download, resumed later
    <cache_dir>/locks/<digest>.lock                       the cross-process download lock

A download streams into its ``.partial`` file while its sha256 is computed, and is moved to its
final name with ``os.replace`` only when the digest matches, after its bytes are synced to disk
(so not even a power cut leaves a short file there). A file present under ``sha256/`` was
therefore verified when it was written, and is trusted by its name: a warm start does not hash it
again. Only one thread of one process downloads a digest at a time (a thread lock inside the
process, a ``filelock.FileLock`` between processes); the others wait and then find the file.

Errors of httpx and s3fs are translated here, at one boundary, into :mod:`modelflags.errors`.
Request header values never appear in log records or error messages, and URIs are shown without
their user info and query string.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import random as _random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol, TypedDict
from urllib.parse import urlsplit, urlunsplit

import filelock
import httpx

from modelflags.errors import (
    ArtifactError,
    ArtifactNotFoundError,
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

CHUNK_SIZE: Final = 1 << 20
"""About how many bytes are hashed and written per batch (and read per S3 call)."""

DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=5.0)
"""Connect within 5 s; every other wait (each read, write, pool) within 10 s."""

_DIGEST = re.compile(r"[0-9a-f]{64}")
_SCHEMES = frozenset({"http", "https", "s3"})
_RETRY_STATUSES = frozenset({408, 429})
_NOT_FOUND_STATUSES = frozenset({404, 410})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?")
_SYNC_EVERY = 8 * CHUNK_SIZE
_MAX_RESTARTS = 2
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")


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


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: exponential back-off with full jitter.

    ``attempts`` counts every try, the first included. The pause before retry ``n`` (0-based) is
    drawn uniformly from ``[0, min(max_delay, base_delay * 2**n))``. No retry starts once
    ``max_total`` seconds would have passed since the first try. A ``Retry-After`` of a 429 or
    503 answer lengthens the pause, up to ``max_delay``. Immutable: safe to share between threads.
    """

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    max_total: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.max_total) < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    def delay(self, retry: int, draw: float) -> float:
        """The pause before retry number ``retry`` (0 for the first), for a uniform ``draw``."""
        cap = min(self.max_delay, self.base_delay * 2.0**retry)
        return cap * draw


DEFAULT_RETRY: Final = RetryPolicy()
"""Four attempts, pauses drawn below 0.2, 0.4 and 0.8 s, at most 30 s in all."""


@dataclass(frozen=True)
class ProgressEvent:
    """How far one download has come; ``done`` on the last event of a download.

    ``received`` counts bytes of the artifact, a resumed download's earlier bytes included;
    ``total`` is None when the server did not say. ``uri`` is shown without user info and query.
    Immutable: safe to share between threads.
    """

    model: str
    version: str
    uri: str
    received: int
    total: int | None
    done: bool = False


class _Retryable(Exception):
    """A transient failure: the attempt may be repeated."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float = 0.0):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class _Restart(Exception):
    """The partial file cannot be continued: drop it and download from the first byte."""


@dataclass(frozen=True)
class _Job:
    model: str
    version: str
    uri: str
    shown: str
    digest: str
    headers: Mapping[str, str]
    final: Path
    partial: Path

    def where(self) -> str:
        return f"model {self.model!r} version {self.version!r}"

    def error_args(self) -> _ErrorArgs:
        return {"model": self.model, "version": self.version, "uri": self.uri}


class _ErrorArgs(TypedDict):
    model: str
    version: str
    uri: str


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class _Body:
    """An open response: ``start`` is the offset of its first byte in the artifact."""

    start: int
    total: int | None
    chunks: Iterator[bytes]


class RemoteFetcher:
    """Fetches ``http``, ``https`` and ``s3`` artifacts into a verified, content-addressed cache.

    Implements :class:`modelflags.artifacts.Fetcher`. Safe to share between threads (one instance
    per process is the intent: it pools HTTP connections), and several processes may share one
    cache folder. Concurrent requests for the same digest cause one download.

    ``timeout`` applies to every request, also through a ``client`` you pass. ``headers`` are sent
    with every HTTP(S) request; the per-call headers of :meth:`fetch` override them (S3 requests
    are signed by s3fs and take no extra headers). ``s3_options`` are
    passed to ``s3fs.S3FileSystem`` (for example ``endpoint_url``, ``key``, ``secret``); without
    them s3fs and botocore read the usual AWS settings, ``AWS_ENDPOINT_URL`` included. Downloads of
    at least ``progress_min_bytes`` (or of unknown size) log their progress at INFO about every
    tenth and call ``progress``. ``sleep``, ``random`` and ``clock`` are injectable for tests.
    With ``durable=False`` a download is not synced to disk before it is published: a little
    faster, but a power cut may then leave a damaged file under its trusted name.
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
        self._cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._client = client
        self._owns_client = client is None
        self._transport = transport
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._retry = retry
        self._max_bytes = max_bytes
        self._headers = dict(headers or {})
        self._s3_options = dict(s3_options or {})
        self._progress = progress
        self._progress_min_bytes = progress_min_bytes
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._durable = durable
        self._lock = threading.Lock()
        self._digest_locks: dict[str, threading.Lock] = {}
        self._s3: Any = None

    @property
    def cache_dir(self) -> Path:
        """The cache folder."""
        return self._cache_dir

    def cache_path(self, sha256: str) -> Path:
        """Where the verified artifact with this digest lives (whether or not it is there yet)."""
        digest = sha256.strip().lower()
        return self._cache_dir / "sha256" / digest[:2] / digest

    def fetch(
        self,
        *,
        model: str,
        version: str,
        uri: str,
        sha256: str,
        headers: Mapping[str, str] | None = None,
    ) -> Path:
        """A local file whose bytes have ``sha256``, downloaded from ``uri`` unless cached.

        Raises :class:`ArtifactNotFoundError` (404, missing object), :class:`DigestMismatchError`,
        :class:`ArtifactTooLargeError`, :class:`FetchError` (other statuses, or transient failures
        that outlasted the retries) or :class:`ArtifactError`.
        """
        digest = sha256.strip().lower()
        shown = _redact(uri)
        where = f"model {model!r} version {version!r}"
        if not _DIGEST.fullmatch(digest):
            raise ArtifactError(
                f"{where}: {sha256!r} is not a sha256 digest", model=model, version=version, uri=uri
            )
        scheme = urlsplit(uri).scheme.lower()
        if scheme not in _SCHEMES:
            raise ArtifactError(
                f"{where}: cannot fetch {shown}: only http, https and s3 URIs are remote",
                model=model,
                version=version,
                uri=uri,
            )
        final = self.cache_path(digest)
        if final.is_file():
            return final
        job = _Job(
            model=model,
            version=version,
            uri=uri,
            shown=shown,
            digest=digest,
            headers={**self._headers, **(headers or {})},
            final=final,
            partial=self._cache_dir / "partial" / f"{digest}.partial",
        )
        for name, value in job.headers.items():
            if not (_HEADER_NAME.fullmatch(name) and _HEADER_VALUE.fullmatch(value)):
                # checked here because httpx's and httpcore's errors and logs quote the value
                raise ArtifactError(
                    f"{where}: header {name!r} for {shown} has a name or value that is not valid "
                    "HTTP (control characters, non-ASCII, or surrounding spaces)",
                    **job.error_args(),
                )
        if scheme == "s3":
            self._s3fs(job)  # fail early, and clearly, when s3fs is not installed
        try:
            for folder in (final.parent, job.partial.parent, self._cache_dir / "locks"):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(
                f"{where}: cannot use cache folder {self._cache_dir}: {exc}", **job.error_args()
            ) from exc
        with self._exclusive(job):
            if final.is_file():  # another thread or process downloaded it while we waited
                logger.debug("%s: found %s in the cache after waiting", where, shown)
                return final
            self._download(job, scheme)
        return final

    def close(self) -> None:
        """Close the HTTP client this fetcher made (a client you passed stays open)."""
        with self._lock:
            client = self._client if self._owns_client else None
            if self._owns_client:
                self._client = None
            self._s3 = None
        if client is not None:
            client.close()

    # -- locking ---------------------------------------------------------------------------

    @contextmanager
    def _exclusive(self, job: _Job) -> Iterator[None]:
        with self._lock:
            local = self._digest_locks.setdefault(job.digest, threading.Lock())
        started = time.monotonic()
        if not local.acquire(timeout=max(self._lock_timeout, 0.0)):
            raise self._lock_timed_out(job)
        try:
            remaining = max(self._lock_timeout - (time.monotonic() - started), 0.0)
            path = self._cache_dir / "locks" / f"{job.digest}.lock"
            file_lock = filelock.FileLock(str(path), timeout=remaining)
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

    def _lock_timed_out(self, job: _Job) -> FetchError:
        return FetchError(
            f"{job.where()}: gave up waiting {self._lock_timeout:g} s for another download "
            f"of {job.shown} into {self._cache_dir}",
            **job.error_args(),
        )

    # -- the retry loop --------------------------------------------------------------------

    def _download(self, job: _Job, scheme: str) -> None:
        opener = self._open_s3 if scheme == "s3" else self._open_http
        policy = self._retry
        started = self._clock()
        tries = restarts = 0
        logger.info("%s: downloading %s", job.where(), job.shown)
        while True:
            offset = _size(job.partial)
            try:
                with opener(job, offset) as body:
                    self._receive(job, body)
                logger.info("%s: downloaded %s", job.where(), job.shown)
                return
            except _Restart as exc:
                _discard(job.partial)
                restarts += 1
                if restarts > _MAX_RESTARTS:
                    raise FetchError(
                        f"{job.where()}: cannot fetch {job.shown}: {exc}", **job.error_args()
                    ) from exc
                logger.info("%s: restarting download of %s: %s", job.where(), job.shown, exc)
            except _Retryable as exc:
                tries += 1
                if tries >= policy.attempts:
                    raise self._gave_up(job, exc, f"after {tries} attempts") from exc
                wait = max(
                    policy.delay(tries - 1, self._random()), min(exc.retry_after, policy.max_delay)
                )
                spent = self._clock() - started
                if spent + wait > policy.max_total:
                    raise self._gave_up(
                        job, exc, f"after {tries} attempts in {spent:.1f} s"
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
            except ArtifactError:
                _discard(job.partial)
                raise
            except OSError as exc:
                # the cache folder, not the network: the sources translate their own errors
                _discard(job.partial)
                raise ArtifactError(
                    f"{job.where()}: cannot write {job.partial}: {exc}", **job.error_args()
                ) from exc

    def _gave_up(self, job: _Job, exc: _Retryable, how: str) -> FetchError:
        return FetchError(
            f"{job.where()}: cannot fetch {job.shown}: {exc.reason} ({how})",
            status=exc.status,
            **job.error_args(),
        )

    def _receive(self, job: _Job, body: _Body) -> None:
        """Stream ``body`` into the partial file, hashing it; publish it if the digest matches."""
        limit = self._max_bytes
        if limit is not None and body.total is not None and body.total > limit:
            raise ArtifactTooLargeError(
                f"{job.where()}: {job.shown} has {body.total} bytes, over the limit of {limit}",
                **job.error_args(),
            )
        hasher = hashlib.sha256()
        if body.start:
            with open(job.partial, "rb") as kept:
                while chunk := kept.read(CHUNK_SIZE):
                    hasher.update(chunk)
            logger.info("%s: resuming %s at byte %d", job.where(), job.shown, body.start)
        report = _ProgressReporter(
            job,
            body.total,
            body.start,
            minimum=self._progress_min_bytes,
            callback=self._progress,
        )
        received = body.start
        with (
            open(job.partial, "ab" if body.start else "wb") as out,
            _Writer(out, hasher, durable=self._durable) as writer,
        ):
            batch: list[bytes] = []
            batched = 0
            try:
                for chunk in body.chunks:
                    received += len(chunk)
                    if limit is not None and received > limit:
                        raise ArtifactTooLargeError(
                            f"{job.where()}: {job.shown} is over the limit of {limit} bytes",
                            **job.error_args(),
                        )
                    batch.append(chunk)
                    batched += len(chunk)
                    if batched >= CHUNK_SIZE:
                        writer.put(batch)
                        batch, batched = [], 0
                    report.update(received)
            except BaseException:
                writer.put_quietly(batch)  # what did arrive is kept: a retry resumes after it
                raise
            writer.put(batch)
            writer.finish()
        if body.total is not None and received < body.total:
            raise _Retryable(f"the body ended at byte {received} of {body.total}")
        actual = hasher.hexdigest()
        if actual != job.digest:
            _discard(job.partial)
            if body.start:
                raise _Restart("the resumed file does not match its digest")
            raise DigestMismatchError(
                f"{job.where()}: {job.shown} has sha256 {actual}, the registry says "
                f"{job.digest}; it was not kept",
                expected=job.digest,
                actual=actual,
                **job.error_args(),
            )
        os.replace(job.partial, job.final)
        report.finish(received)

    # -- HTTP ------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    transport=self._transport, timeout=self._timeout, follow_redirects=True
                )
            return self._client

    @contextmanager
    def _open_http(self, job: _Job, offset: int) -> Iterator[_Body]:
        headers = {"Accept-Encoding": "identity", **job.headers}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with self._http().stream("GET", job.uri, headers=headers, timeout=self._timeout) as r:
                start = self._check_response(job, r, offset)
                yield _Body(start, _total(r, start), r.iter_bytes())
        except httpx.LocalProtocolError:
            # its message may quote a header value; do not chain it
            raise FetchError(
                f"{job.where()}: cannot send the request for {job.shown}: a header name or "
                "value is not valid HTTP",
                **job.error_args(),
            ) from None
        except httpx.TransportError as exc:
            raise _Retryable(_describe(exc)) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError(
                f"{job.where()}: cannot fetch {job.shown}: {_describe(exc)}", **job.error_args()
            ) from exc

    def _check_response(self, job: _Job, response: httpx.Response, offset: int) -> int:
        """The offset the response body starts at; raises for statuses that carry no artifact."""
        status = response.status_code
        if status in _NOT_FOUND_STATUSES:
            raise ArtifactNotFoundError(
                f"{job.where()}: {job.shown} not found (HTTP {status})", **job.error_args()
            )
        if status == 416 and offset:
            raise _Restart(f"the server cannot resume at byte {offset} (HTTP 416)")
        if status >= 500 or status in _RETRY_STATUSES:
            raise _Retryable(f"HTTP {status}", status=status, retry_after=_retry_after(response))
        if status == 200:
            if offset:
                logger.info("%s: the server ignored the range request; starting over", job.where())
            return 0
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is not None and int(match.group(1)) == offset:
                return offset
            raise _Restart(f"the server answered a different range than bytes={offset}-")
        raise FetchError(
            f"{job.where()}: cannot fetch {job.shown}: HTTP {status}",
            status=status,
            **job.error_args(),
        )

    # -- S3 --------------------------------------------------------------------------------

    def _s3fs(self, job: _Job) -> Any:
        with self._lock:
            if self._s3 is None:
                try:
                    import s3fs
                except ImportError as exc:
                    raise ArtifactError(
                        f"{job.where()}: s3:// artifacts need s3fs: pip install 'modelflags[s3]'",
                        **job.error_args(),
                    ) from exc
                self._s3 = s3fs.S3FileSystem(skip_instance_cache=True, **self._s3_options)
            return self._s3

    @contextmanager
    def _open_s3(self, job: _Job, offset: int) -> Iterator[_Body]:
        fs = self._s3fs(job)
        key = job.uri.split("://", 1)[1]
        with _translate_s3(job):
            size = int(fs.info(key)["size"])
            if offset > size:
                raise _Restart(f"the partial file is longer than the object ({size} bytes)")
            stream: BinaryIO = fs.open(key, "rb", block_size=4 * CHUNK_SIZE)
        try:
            if offset:
                with _translate_s3(job):
                    stream.seek(offset)
            yield _Body(offset, size, self._s3_chunks(job, stream))
        finally:
            stream.close()

    def _s3_chunks(self, job: _Job, stream: BinaryIO) -> Iterator[bytes]:
        while True:
            with _translate_s3(job):
                chunk = stream.read(CHUNK_SIZE)
            if not chunk:
                return
            yield chunk


@contextmanager
def _translate_s3(job: _Job) -> Iterator[None]:
    try:
        yield
    except (_Restart, _Retryable, ArtifactError):
        raise
    except FileNotFoundError as exc:
        raise ArtifactNotFoundError(
            f"{job.where()}: {job.shown} not found", **job.error_args()
        ) from exc
    except PermissionError as exc:
        raise FetchError(
            f"{job.where()}: access to {job.shown} denied", status=403, **job.error_args()
        ) from exc
    except Exception as exc:  # botocore, aiohttp and s3fs errors share no base class
        raise _Retryable(_describe(exc)) from exc


class _Writer:
    """Hashes and writes batches of chunks on a worker thread, so that disk and hash work
    overlap the network.

    When ``durable``, a second thread syncs the file to disk as it grows (without holding up the
    writes), so the final sync before publication has little left to do. Used by one download
    at a time. At most two batches of about :data:`CHUNK_SIZE` bytes wait in its queue, so
    memory stays flat.
    """

    def __init__(self, out: BinaryIO, hasher: _Hasher, *, durable: bool) -> None:
        self._out = out
        self._hasher = hasher
        self._durable = durable
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._sync_wanted = threading.Event()
        self._writing = True
        self._thread = threading.Thread(target=self._write, name="modelflags-writer", daemon=True)
        self._syncer = threading.Thread(target=self._sync, name="modelflags-syncer", daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        if self._durable:
            self._syncer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def put(self, batch: list[bytes]) -> None:
        """Queue ``batch`` (blocks while two are waiting); raises the worker's error, if any."""
        if self._error is not None:
            raise self._error
        if batch:
            self._queue.put(batch)

    def put_quietly(self, batch: list[bytes]) -> None:
        """Queue ``batch`` unless the worker failed (used while another error propagates)."""
        if self._error is None and batch:
            self._queue.put(batch)

    def finish(self) -> None:
        """Wait until every batch is hashed, written and synced; raises the worker's error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _write(self) -> None:
        unsynced = 0
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining, so that put() never blocks for ever
            try:
                for chunk in batch:
                    self._hasher.update(chunk)
                    self._out.write(chunk)
                    unsynced += len(chunk)
                if self._durable and unsynced >= _SYNC_EVERY:
                    self._out.flush()
                    self._sync_wanted.set()
                    unsynced = 0
            except BaseException as exc:
                self._error = exc
        self._writing = False
        if self._durable:
            self._sync_wanted.set()
            self._syncer.join()
        if self._error is None:
            try:
                self._out.flush()
                if self._durable:
                    _datasync(self._out.fileno())
            except BaseException as exc:
                self._error = exc

    def _sync(self) -> None:
        fileno = self._out.fileno()
        while True:
            self._sync_wanted.wait()
            self._sync_wanted.clear()
            if not self._writing:
                return
            try:
                _datasync(fileno)
            except OSError:
                return  # the final fsync reports it


class _ProgressReporter:
    """Logs and reports one download's progress about every tenth of its size."""

    def __init__(
        self,
        job: _Job,
        total: int | None,
        start: int,
        *,
        minimum: int,
        callback: Callable[[ProgressEvent], None] | None,
    ) -> None:
        self._job = job
        self._total = total
        self._minimum = minimum
        self._callback = callback
        self._step = max(total // 10, 1) if total is not None else max(minimum, CHUNK_SIZE)
        self._next = (start // self._step + 1) * self._step

    def update(self, received: int) -> None:
        if received < self._next:
            return
        self._next = (received // self._step + 1) * self._step
        if self._total is None or (self._minimum <= self._total != received):
            self._emit(received, done=False)

    def finish(self, received: int) -> None:
        if (self._total if self._total is not None else received) >= self._minimum:
            self._emit(received, done=True)

    def _emit(self, received: int, *, done: bool) -> None:
        job = self._job
        if self._total:
            logger.info(
                "%s: %d%% of %s (%d of %d bytes)",
                job.where(),
                received * 100 // self._total,
                job.shown,
                received,
                self._total,
            )
        else:
            logger.info("%s: %d bytes of %s", job.where(), received, job.shown)
        if self._callback is None:
            return
        event = ProgressEvent(job.model, job.version, job.shown, received, self._total, done)
        try:
            self._callback(event)
        except Exception:
            logger.warning("%s: the progress callback raised", job.where(), exc_info=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _discard(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


def _total(response: httpx.Response, start: int) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is not None and match.group(3) != "*":
            return int(match.group(3))
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return None
    return start + int(length)


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return 0.0  # an HTTP date, or nothing: the back-off decides


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _redact(uri: str) -> str:
    """The URI without user info and query string, which may carry credentials."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    query = "..." if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
