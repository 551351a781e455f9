"""One download, streamed into the cache: what it is (Job), where its bytes come from (Body), and
how they are hashed, written, bounded and reported on the way (receive).

A download streams into its ``.partial`` file while its sha256 is computed, and is moved to its
final name with ``os.replace`` only when the digest and the declared size match, after its bytes
are synced to disk (so not even a power cut leaves a short file there). The bytes are counted as
they arrive: more than the registry's ``size`` or than ``max_bytes`` stops the download at once,
and so does the fetch's deadline (:mod:`modelflags.artifacts.retry`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from modelflags.artifacts.cache_layout import CacheLayout
from modelflags.artifacts.chunks import CHUNK_SIZE, ChunkList
from modelflags.artifacts.naming import ErrorArgs, Subject
from modelflags.artifacts.reading import ByteBounds
from modelflags.artifacts.retry import Deadline, Restart, Retryable
from modelflags.errors import DigestMismatchError

__all__ = [
    "Body",
    "DeadlinePassed",
    "Job",
    "ProgressEvent",
    "ProgressReporter",
    "Writer",
    "describe",
    "receive",
]

logger = logging.getLogger(__name__)

_SYNC_EVERY = 8 * CHUNK_SIZE

KEEP_UNBOUNDED = 512 << 20
"""Most bytes of a download kept in memory for its loader when neither the registry's ``size``
nor ``max_bytes`` bounds the artifact (more are read back from the cache entry instead)."""
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


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


@dataclass(frozen=True)
class Job:
    """One artifact to download: ``uri`` (with its credentials, for the request only), the
    digest it must have, the headers configured for its origin, and its size bounds.
    Immutable: safe to share between threads."""

    subject: Subject
    uri: str
    digest: str
    headers: Mapping[str, str]
    bounds: ByteBounds

    def where(self) -> str:
        """``model 'm' version 'v1'``."""
        return self.subject.where()

    @property
    def shown(self) -> str:
        """The URI without user info and query string."""
        return self.subject.uri

    def error_args(self) -> ErrorArgs:
        """``model=``, ``version=`` and the redacted ``uri=`` of an ArtifactError."""
        return self.subject.error_args()

    def secrets(self) -> list[str]:
        """Strings that must never appear in a message: header values, user info, query."""
        parts = urlsplit(self.uri)
        found = [value for value in self.headers.values() if value]
        userinfo = parts.netloc.rpartition("@")[0]
        found += [userinfo, userinfo.partition(":")[2], parts.query]
        return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def describe(exc: BaseException, job: Job) -> str:
    """``Type: message`` of a third-party error, with the job's secrets masked."""
    text = str(exc)
    for secret in job.secrets():
        text = text.replace(secret, "***")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DeadlinePassed(Exception):
    """The fetch's deadline passed while its body was arriving; what arrived is kept."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the deadline passed after {received} bytes")
        self.received = received


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class Body:
    """An open response: ``start`` is the offset of its first byte in the artifact."""

    start: int
    total: int | None
    chunks: Iterator[bytes]


def receive(
    job: Job,
    body: Body,
    layout: CacheLayout,
    *,
    deadline: Deadline,
    durable: bool,
    progress: Callable[[ProgressEvent], None] | None,
    progress_min_bytes: int,
    keep: bool,
) -> ChunkList | None:
    """Stream ``body`` into the partial file, hashing it; publish it if digest and size match.

    With ``keep``, returns the artifact's bytes in chunks (an earlier run's bytes included), as
    long as they stay within the job's ceiling, or within :data:`KEEP_UNBOUNDED` bytes when
    nothing bounds the artifact; past that, the chunks are let go (a server sending endless bytes
    must not fill memory) and None is returned: read the published entry instead. Without
    ``keep``, returns an empty ChunkList. Raises :class:`Retryable` for a body that ended before its
    length, :class:`Restart` for a resumed file that does not match, :class:`DeadlinePassed`,
    and ArtifactErrors for what retrying cannot mend (too large, size or digest mismatch).
    """
    subject, bounds = job.subject, job.bounds
    if body.total is not None:
        bounds.check_announced(subject, job.shown, body.total)
    hasher = hashlib.sha256()
    kept = ChunkList()
    keep_limit = bounds.ceiling if bounds.ceiling is not None else KEEP_UNBOUNDED
    dropped = False
    if body.start:
        with layout.read_partial(job.digest, subject) as earlier:
            while chunk := earlier.read(CHUNK_SIZE):
                hasher.update(chunk)
                if keep:
                    kept.append(chunk)
                    if kept.size > keep_limit:
                        kept.close()
                        keep, dropped = False, True
        logger.info("%s: resuming %s at byte %d", job.where(), job.shown, body.start)
    report = ProgressReporter(
        job, body.total, body.start, minimum=progress_min_bytes, callback=progress
    )
    received = body.start
    with (
        layout.open_partial(job.digest, subject, append=bool(body.start)) as out,
        Writer(out, hasher, durable=durable) as writer,
    ):
        batch: list[bytes] = []
        batched = 0
        try:
            for chunk in body.chunks:
                received += len(chunk)
                bounds.check_running(subject, job.shown, received)
                batch.append(chunk)
                if keep:
                    kept.append(chunk)
                    if received > keep_limit:
                        kept.close()
                        keep, dropped = False, True
                batched += len(chunk)
                if batched >= CHUNK_SIZE:
                    writer.put(batch)
                    batch, batched = [], 0
                report.update(received)
                if deadline.passed():
                    raise DeadlinePassed(received)
        except BaseException:
            writer.put_quietly(batch)  # what did arrive is kept: a retry resumes after it
            raise
        writer.put(batch)
        writer.finish()
    if body.total is not None and received < body.total:
        raise Retryable(f"the body ended at byte {received} of {body.total}")
    try:
        bounds.check_final(subject, job.shown, received)
    except BaseException:
        layout.discard_partial(job.digest)
        raise
    actual = hasher.hexdigest()
    if actual != job.digest:
        layout.discard_partial(job.digest)
        if body.start:
            raise Restart("the resumed file does not match its digest")
        raise DigestMismatchError(
            f"{job.where()}: {job.shown} has sha256 {actual}, the registry says "
            f"{job.digest}; it was not kept",
            expected=job.digest,
            actual=actual,
            **job.error_args(),
        )
    layout.publish(job.digest)
    report.finish(received)
    return None if dropped else kept


class Writer:
    """Hashes and writes batches of chunks on a worker thread, so that disk and hash work
    overlap the network.

    When ``durable``, a second thread syncs the file to disk as it grows (without holding up the
    writes), so the final sync before publication has little left to do. Used by one download
    at a time. At most two batches of about 1 MiB wait in its queue, so memory stays flat.
    """

    def __init__(self, out: BinaryIO, hasher: Hasher, *, durable: bool) -> None:
        self._out = out
        self._hasher = hasher
        self._durable = durable
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._sync_wanted = threading.Event()
        self._writing = True
        self._thread = threading.Thread(target=self._write, name="modelflags-writer", daemon=True)
        self._syncer = threading.Thread(target=self._sync, name="modelflags-syncer", daemon=True)

    def __enter__(self) -> Writer:
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


class ProgressReporter:
    """Logs and reports one download's progress about every tenth of its size.

    Used by one download at a time, on its thread.
    """

    def __init__(
        self,
        job: Job,
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
                job.subject.where(),
                received * 100 // self._total,
                job.subject.uri,
                received,
                self._total,
            )
        else:
            logger.info("%s: %d bytes of %s", job.subject.where(), received, job.subject.uri)
        if self._callback is None:
            return
        subject = job.subject
        event = ProgressEvent(
            subject.model, subject.version, subject.uri, received, self._total, done
        )
        try:
            self._callback(event)
        except Exception:
            logger.warning("%s: the progress callback raised", job.subject.where(), exc_info=True)
