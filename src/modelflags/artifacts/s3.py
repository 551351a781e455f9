"""S3 artifact bodies through fsspec/s3fs (``pip install 'modelflags[s3]'``).

Requests are signed by s3fs and take no extra headers. ``s3_options`` are passed to
``s3fs.S3FileSystem`` (for example ``endpoint_url``, ``key``, ``secret``); without them s3fs and
botocore read the usual AWS settings, ``AWS_ENDPOINT_URL`` included. The errors of botocore,
aiohttp and s3fs are translated here, at one boundary, into :mod:`modelflags.errors`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO

from modelflags.artifacts.chunks import CHUNK_SIZE
from modelflags.artifacts.retry import Deadline, Restart, Retryable
from modelflags.artifacts.transfer import Body, DeadlinePassed, Job, describe
from modelflags.errors import ArtifactError, ArtifactNotFoundError, FetchError

__all__ = ["S3Source"]


class S3Source:
    """Opens the body of an ``s3://bucket/key`` artifact from an offset.

    The ``s3fs`` file system is made on first use. Safe to share between threads.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = dict(options)
        self._lock = threading.Lock()
        self._fs: Any = None

    def check(self, job: Job) -> None:
        """Fail early, and clearly, when s3fs is not installed."""
        self._s3fs(job)

    def close(self) -> None:
        """Forget the file system (it is made again on next use)."""
        with self._lock:
            self._fs = None

    def _s3fs(self, job: Job) -> Any:
        with self._lock:
            if self._fs is None:
                try:
                    import s3fs
                except ImportError as exc:
                    raise ArtifactError(
                        f"{job.where()}: s3:// artifacts need s3fs: pip install 'modelflags[s3]'",
                        **job.error_args(),
                    ) from exc
                self._fs = s3fs.S3FileSystem(skip_instance_cache=True, **self._options)
            return self._fs

    @contextmanager
    def open(self, job: Job, offset: int, deadline: Deadline) -> Iterator[Body]:
        """The object's bytes from ``offset``; raises Retryable, Restart or an ArtifactError."""
        if deadline.passed():
            raise DeadlinePassed(offset)
        fs = self._s3fs(job)
        key = job.uri.split("://", 1)[1]
        with _translate(job):
            size = int(fs.info(key)["size"])
            if offset > size:
                raise Restart(f"the partial file is longer than the object ({size} bytes)")
            stream: BinaryIO = fs.open(key, "rb", block_size=4 * CHUNK_SIZE)
        try:
            if offset:
                with _translate(job):
                    stream.seek(offset)
            yield Body(offset, size, _chunks(job, stream))
        finally:
            stream.close()


def _chunks(job: Job, stream: BinaryIO) -> Iterator[bytes]:
    while True:
        with _translate(job):
            chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            return
        yield chunk


@contextmanager
def _translate(job: Job) -> Iterator[None]:
    try:
        yield
    except (Restart, Retryable, ArtifactError, DeadlinePassed):
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
        raise Retryable(describe(exc, job)) from exc
