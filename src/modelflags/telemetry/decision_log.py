"""An audit trail of serving decisions: one JSON line per decision, written in the background.

Each line says which version was asked for and which served, and why (one line in the file,
without spaces; wrapped here; ASCII, with other characters escaped as JSON does)::

    {"time": "2024-05-01T12:00:00.123456Z", "model": "recommender", "requested": "v3",
     "served": "v2", "reason": "FALLBACK", "cause": "ValueError: bad input",
     "key": "5f1c0e9a2b7d4c31a8e6f0d2c9b4a713"}

``time`` is when :meth:`DecisionLog.log` was called (UTC); ``cause`` and ``key`` may be null.

``key`` is never the targeting key itself but the first 16 bytes, in hex, of
``sha256(salt + targeting key as UTF-8)``: the same user gets the same ``key`` for as long as the
salt is the same, so a person can follow one user's decisions (:meth:`DecisionLog.hash_key`)
without the log holding who they are. Without a ``salt`` a random one is drawn for each process,
and then keys cannot be compared across processes or restarts.

Recording a decision never blocks and never raises: it puts a tuple on a bounded queue, and a
daemon thread hashes the key, formats and appends the lines (the raw key is in memory only until
then). When the queue is full the decision is dropped and
counted (:attr:`DecisionLog.dropped`). The file rotates by size like logging's
``RotatingFileHandler``: ``path`` is renamed ``path.1``, ``path.1`` becomes ``path.2``, and so on
up to ``path.<backups>``; older ones are deleted.

No file ever grows past ``max_bytes``: a line that would be longer on its own has its longest
free-text values shortened (``cause`` first, then the version ids and the model name), each cut
value ending in ``...[N more characters]``, and is counted in :attr:`DecisionLog.truncated`;
when even that cannot make it fit (a ``max_bytes`` of a few dozen bytes), it is dropped and
counted in :attr:`DecisionLog.dropped`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random as _random
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import cast

from modelflags.telemetry.rotating_file import AppendError, RotatingFile

__all__ = ["DecisionLog"]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024

_Decision = tuple[float, str, str, str, str | None, str | None, str | None]

_STOP = object()
_quote = json.encoder.encode_basestring_ascii  # the C escaper behind json.dumps
_BATCH = 1024  # lines written between two looks at the queue, at most


class _Action:
    """An action to write (see :meth:`DecisionLog.action`)."""

    __slots__ = ("fields", "stamp")

    def __init__(self, stamp: float, fields: dict[str, object]) -> None:
        self.stamp = stamp
        self.fields = fields


class _Marker:
    """Queued by flush(); set once every line queued before it is written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class DecisionLog:
    """Appends serving decisions to ``path`` as JSON lines, from a background thread.

    - ``max_bytes``: rotate before a line would make the file larger than this (a line longer
      than this on its own is shortened, see the module docs); ``backups``: how many rotated
      files to keep (0: the file is truncated instead).
    - ``sample``: the share of decisions recorded (drawn with ``random``); the others are counted
      in :attr:`unsampled`.
    - ``salt``: mixed into the hash of targeting keys; ``None`` draws a random one for this
      process, so hashes cannot be compared across processes.
    - ``queue_size``: decisions waiting for the writer (threads racing for the last place may
      pass it by one each); beyond it they are dropped and counted in :attr:`dropped`, as are
      decisions that could not be written (logged) or came after :meth:`close`.
    - ``clock``: wall-clock seconds since the epoch for the ``time`` field.

    The folder of ``path`` must exist; the file is opened by the writer thread. Safe to share
    between threads; one instance per file (rotation is not coordinated between processes).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 10 * MiB,
        backups: int = 3,
        sample: float = 1.0,
        salt: str | bytes | None = None,
        queue_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, not {max_bytes!r}")
        if backups < 0:
            raise ValueError(f"backups must be 0 or more, not {backups!r}")
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample must be between 0 and 1, not {sample!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be positive, not {queue_size!r}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"{self.path}: the folder of the decision log does not exist ({self.path.parent})"
            )
        self.max_bytes = max_bytes
        self.backups = backups
        self.sample = sample
        if salt is None:
            salt = secrets.token_bytes(16)
        self._hasher = hashlib.sha256(salt.encode("utf-8") if isinstance(salt, str) else salt)
        self._clock = clock
        self._random = random
        # A C queue without a lock of its own; the bound is checked before putting, so it may be
        # passed by at most one decision per thread racing for the last place.
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.queue_size = queue_size
        self._counts_lock = threading.Lock()
        self._dropped = 0
        self._unsampled = 0
        self._written = 0
        self._truncated = 0
        self._closed = False
        self._close_lock = threading.Lock()
        self._file = RotatingFile(self.path, max_bytes=max_bytes, backups=backups)
        self._write_lock = threading.Lock()  # the file: the writer thread and actions' callers
        self._stamp_second = -1
        self._second_text = ""
        self._thread = threading.Thread(
            target=self._run, name="modelflags-decision-log", daemon=True
        )
        self._thread.start()

    # -- the caller's side ----------------------------------------------------------------------

    def log(
        self,
        model: str,
        requested: str,
        served: str,
        reason: str,
        cause: str | None,
        targeting_key: str | None,
    ) -> None:
        """Record one decision: ``requested`` by the flag, ``served`` in fact, and why.

        Never blocks, never raises: a decision that is not sampled, finds the queue full or comes
        after :meth:`close` is counted and dropped.
        """
        try:
            if self.sample < 1.0 and not self._random() < self.sample:
                with self._counts_lock:
                    self._unsampled += 1
                return
            if self._closed or self._queue.qsize() >= self.queue_size:
                with self._counts_lock:
                    self._dropped += 1
                return
            self._queue.put((self._clock(), model, requested, served, reason, cause, targeting_key))
        except Exception:  # a faulty injected clock or random source
            logger.exception("decision of model %r not recorded", model)
            with self._counts_lock:
                self._dropped += 1

    def action(
        self,
        action: str,
        model: str,
        version: str | None,
        *,
        by: str,
        reason: str,
        **detail: str | float | int | None,
    ) -> None:
        """Record what a person (or the guardrails) did: a rollback, a release, a confirmed or
        dismissed proposal, with who did it and why. Actions are never sampled and, being the
        audit trail and rare, are written before this returns rather than queued (however many
        decisions wait for the writer; so an action line may precede decisions made just before
        it). Never raises: an action that cannot be written is logged and counted."""
        try:
            if self._closed:
                with self._counts_lock:
                    self._dropped += 1
                logger.error(
                    "decision log %s closed: action %s of %r lost", self.path, action, model
                )
                return
            record = {"action": action, "model": model, "version": version, "by": by}
            line = self._action_line(
                _Action(self._clock(), {**record, "reason": reason, **detail}), cached=False
            )
            if line is not None:
                self._write([line])
                if self._closed:  # closed meanwhile: the line is written, the file not kept open
                    with self._write_lock:
                        self._file.close()
        except Exception:
            logger.exception("action %s of model %r not recorded", action, model)
            with self._counts_lock:
                self._dropped += 1

    def hash_key(self, targeting_key: str) -> str:
        """The ``key`` this log writes for ``targeting_key`` (to find one user's decisions)."""
        hasher = self._hasher.copy()
        hasher.update(targeting_key.encode("utf-8"))
        return hasher.digest()[:16].hex()

    @property
    def dropped(self) -> int:
        """Decisions lost: queue full, not writable, or logged after :meth:`close`."""
        return self._dropped

    @property
    def unsampled(self) -> int:
        """Decisions left out by sampling."""
        return self._unsampled

    @property
    def truncated(self) -> int:
        """Lines whose values were shortened to fit in ``max_bytes``."""
        return self._truncated

    @property
    def written(self) -> int:
        """Lines written so far."""
        return self._written

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every decision queued so far is written; False if ``timeout`` passed first."""
        if not self._thread.is_alive():
            return self._queue.empty()
        marker = _Marker()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Write what is queued, stop the writer thread and close the file. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("decision log %s: writer did not drain in %s s", self.path, timeout)
        else:
            # Decisions that raced with close() and landed behind the stop sign.
            left = 0
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Marker):
                    item.done.set()
                elif item is not _STOP:
                    left += 1
            if left:
                with self._counts_lock:
                    self._dropped += left

    def reset_after_fork(self) -> None:
        """In a child process just forked: fresh locks and queue, the file reopened on the next
        write, and a writer thread of its own. Decisions queued before the fork are the
        parent's to write; both processes then append to the same file (rotation is not
        coordinated between them)."""
        self._counts_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._file.close()
        if self._closed:
            return
        self._thread = threading.Thread(
            target=self._run, name="modelflags-decision-log", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with self._write_lock:
                self._file.open()
        except OSError:
            logger.exception("decision log %s: cannot open; will retry", self.path)
        try:
            while True:
                item = self._queue.get()
                batch: list[bytes] = []
                markers: list[_Marker] = []
                while True:
                    if item is _STOP:
                        break
                    if isinstance(item, _Marker):
                        markers.append(item)
                    elif isinstance(item, _Action):
                        line = self._action_line(item)
                        if line is not None:
                            batch.append(line)
                    else:
                        line = self._line(cast(_Decision, item))
                        if line is not None:
                            batch.append(line)
                    if len(batch) >= _BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._write(batch)
                for marker in markers:
                    marker.done.set()
                if item is _STOP:
                    return
        finally:
            with self._write_lock:
                self._file.close()

    def _stamp(self, stamp: float) -> str:
        """``stamp`` as the log writes it, on the writer thread (which caches the second)."""
        second = int(stamp // 1)
        if second != self._stamp_second:
            self._stamp_second = second
            self._second_text = _second_text(second)
        return _with_micros(self._second_text, stamp, second)

    def _action_line(self, item: _Action, *, cached: bool = True) -> bytes | None:
        """The line of an action; ``cached=False`` off the writer thread (the cached second of
        :meth:`_stamp` belongs to the writer)."""
        try:
            stamp = self._stamp(item.stamp) if cached else _iso_stamp(item.stamp)
            fields = {"time": stamp, **item.fields}
            return (json.dumps(fields, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        except Exception:
            logger.exception("decision log %s: cannot format an action; dropped", self.path)
            with self._counts_lock:
                self._dropped += 1
            return None

    def _line(self, decision: _Decision) -> bytes | None:
        try:
            stamp, model, requested, served, reason, cause, key = decision
            time_text = self._stamp(stamp)
            hashed = None if key is None else self.hash_key(key)
            fields = {
                "model": model,
                "requested": requested,
                "served": served,
                "reason": reason,
                "cause": cause,
            }
            line = _encode(time_text, fields, hashed)
            if len(line) > self.max_bytes:
                return self._fit(time_text, fields, hashed)
            return line
        except Exception:  # not a string where one belongs; the writer must go on
            logger.exception("decision log %s: cannot format a decision; dropped", self.path)
            with self._counts_lock:
                self._dropped += 1
            return None

    def _fit(
        self, time_text: str, fields: dict[str, str | None], hashed: str | None
    ) -> bytes | None:
        """The line shortened to ``max_bytes``: the longest values cut first; None if it cannot."""
        for name in _CUT_ORDER:
            value = fields[name]
            if value is None:
                continue
            # The longest prefix that fits, by bisection (escaping makes lengths uneven).
            low, high = 0, len(value)
            while low < high:
                middle = (low + high + 1) // 2
                fields[name] = _cut(value, middle)
                if len(_encode(time_text, fields, hashed)) <= self.max_bytes:
                    low = middle
                else:
                    high = middle - 1
            fields[name] = min(_cut(value, low), value, key=len)
            line = _encode(time_text, fields, hashed)
            if len(line) <= self.max_bytes:
                with self._counts_lock:
                    self._truncated += 1
                return line
        logger.warning(
            "decision log %s: a decision does not fit in max_bytes=%d even shortened; dropped",
            self.path,
            self.max_bytes,
        )
        with self._counts_lock:
            self._dropped += 1
        return None

    def _write(self, lines: list[bytes]) -> None:
        """Append ``lines`` to the file (from the writer thread, or an action's caller); those
        that cannot be written are dropped and counted."""
        with self._write_lock:
            try:
                self._written += self._file.append(lines)
            except AppendError as exc:
                logger.error(
                    "decision log %s: cannot write (%s); decisions dropped", self.path, exc.cause
                )
                self._written += exc.written
                with self._counts_lock:
                    self._dropped += len(lines) - exc.written


def _iso_stamp(stamp: float) -> str:
    """``stamp`` (seconds since the epoch) as the log writes it: ISO 8601, UTC, microseconds."""
    second = int(stamp // 1)
    return _with_micros(_second_text(second), stamp, second)


def _second_text(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _with_micros(second_text: str, stamp: float, second: int) -> str:
    micros = min(999_999, round((stamp - second) * 1e6))
    return f"{second_text}.{micros:06d}Z"


#: The order in which values are shortened when a line is longer than ``max_bytes``.
_CUT_ORDER = ("cause", "requested", "served", "model", "reason")


def _encode(time_text: str, fields: dict[str, str | None], hashed: str | None) -> bytes:
    return (
        f'{{"time":"{time_text}","model":{_json(fields["model"])},'
        f'"requested":{_json(fields["requested"])},"served":{_json(fields["served"])},'
        f'"reason":{_json(fields["reason"])},"cause":{_json(fields["cause"])},'
        f'"key":{_json(hashed)}}}\n'
    ).encode("ascii")


def _cut(value: str, keep: int) -> str:
    """``value`` with only its first ``keep`` characters and a note of how many were cut."""
    if keep >= len(value):
        return value
    return f"{value[:keep]}...[{len(value) - keep} more characters]"


def _json(value: str | None) -> str:
    """``value`` as a JSON string (ASCII, escaped), or ``null``."""
    if value is None:
        return "null"
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return _quote(value)
