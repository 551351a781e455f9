"""A bounded, single-flight cache of loaded models.

Entries are bounded by count and by artifact bytes (a ``cachetools.LRUCache`` sized in bytes, with
the count enforced on insert). Pinned entries (each model's last known good version) live beside
the LRU and are never evicted. However many threads ask for a cold key at once, the loader runs
once, outside the lock; the others wait for its result or its exception.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import cachetools

__all__ = ["CacheEntry", "ModelCache"]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A loaded model and the size of its artifact in bytes."""

    value: Any
    nbytes: int


class _Pending:
    __slots__ = ("done", "entry", "error", "joiners")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: CacheEntry | None = None
        self.error: BaseException | None = None
        self.joiners = 0  # threads that joined the load instead of starting one (under the lock)


class _CountedLRU(cachetools.LRUCache[Hashable, CacheEntry]):
    """An LRU cache bounded by total bytes and by number of entries; reports evictions."""

    def __init__(
        self, max_entries: int, max_bytes: float, on_evict: Callable[[Hashable], None]
    ) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=_size_of)
        self.max_entries = max_entries
        self._on_evict = on_evict

    def __setitem__(self, key: Hashable, value: CacheEntry) -> None:
        while key not in self and len(self) and len(self) >= self.max_entries:
            self.popitem()
        super().__setitem__(key, value)

    def popitem(self) -> tuple[Hashable, CacheEntry]:
        key, entry = super().popitem()
        self._on_evict(key)
        return key, entry


def _size_of(entry: CacheEntry) -> int:
    return entry.nbytes


class ModelCache:
    """Loaded models by key, bounded, with pinning and single-flight loading.

    Safe to share between threads. No lock is held while a loader runs.
    """

    def __init__(self, *, max_models: int = 8, max_bytes: int | None = None) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._lru = _CountedLRU(
            max_models, math.inf if max_bytes is None else max_bytes, self._evicted
        )
        self._pinned: dict[Hashable, CacheEntry] = {}
        # Every cached entry, pinned or not, for lock-free reads (a dict read is atomic).
        self._index: dict[Hashable, CacheEntry] = {}
        self._recent: Hashable = None
        self._pin_requests: set[Hashable] = set()
        self._pending: dict[Hashable, _Pending] = {}
        self.loads = 0
        self.oversized = 0

    def loading(self, key: Hashable) -> bool:
        """True while a thread loads ``key`` (a lock-free read)."""
        return key in self._pending

    def joiners(self, key: Hashable) -> int:
        """How many threads joined the load of ``key`` in flight to share its result (0 when
        none runs; a lock-free read)."""
        pending = self._pending.get(key)
        return 0 if pending is None else pending.joiners

    def get(self, key: Hashable) -> CacheEntry | None:
        """The cached entry for ``key``, or ``None``; never loads.

        Lock-free when ``key`` is the most recently used key; otherwise its recency is refreshed
        under the lock.
        """
        entry = self._index.get(key)
        if entry is not None and key != self._recent:
            with self._lock:
                self._lru.get(key)  # refresh recency
                self._recent = key
        return entry

    def get_or_load(self, key: Hashable, load: Callable[[], CacheEntry]) -> CacheEntry:
        """The entry for ``key``, calling ``load`` once if no thread has it yet.

        Concurrent callers for the same key wait for that one call and share its result, or see
        its exception raised.
        """
        with self._lock:
            entry = self._pinned.get(key)
            if entry is None:
                entry = self._lru.get(key)
            if entry is not None:
                return entry
            pending = self._pending.get(key)
            owner = pending is None
            if pending is None:
                pending = self._pending[key] = _Pending()
            else:
                pending.joiners += 1
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.entry is not None
            return pending.entry
        try:
            entry = load()
        except BaseException as exc:
            pending.error = exc
            with self._lock:
                del self._pending[key]
            pending.done.set()
            raise
        with self._lock:
            self.loads += 1
            self._store(key, entry)
            del self._pending[key]
        pending.entry = entry
        pending.done.set()
        return entry

    def pin(self, key: Hashable) -> None:
        """Keep ``key`` cached until unpinned (it may be pinned before it is loaded)."""
        with self._lock:
            self._pin_requests.add(key)
            entry = self._lru.pop(key, None)
            if entry is not None:
                self._pinned[key] = entry

    def unpin(self, key: Hashable) -> None:
        """Let ``key`` be evicted again, as the most recently used entry."""
        with self._lock:
            self._pin_requests.discard(key)
            entry = self._pinned.pop(key, None)
            if entry is not None:
                self._store(key, entry)

    def discard(self, key: Hashable) -> None:
        """Forget the loaded model of ``key`` (it reloads on next use)."""
        with self._lock:
            self._pinned.pop(key, None)
            self._lru.pop(key, None)
            self._index.pop(key, None)

    def reset_after_fork(self) -> None:
        """In a child process just forked: a fresh lock, and no loads in flight (the threads
        running them stayed in the parent, so the next request for those keys loads anew)."""
        self._lock = threading.Lock()
        self._pending = {}

    def snapshot(self) -> dict[Hashable, tuple[int, bool]]:
        """Every cached key with its bytes and whether it is pinned."""
        with self._lock:
            result = {key: (entry.nbytes, True) for key, entry in self._pinned.items()}
            result.update({key: (entry.nbytes, False) for key, entry in self._lru.items()})
            return result

    def _evicted(self, key: Hashable) -> None:
        self._index.pop(key, None)

    def _store(self, key: Hashable, entry: CacheEntry) -> None:
        if key in self._pin_requests:
            self._pinned[key] = entry
            self._index[key] = entry
            return
        if self.max_bytes is not None and entry.nbytes > self.max_bytes:
            # Larger than the whole cache: served to its callers, never stored (an unpinned
            # former LKG is dropped here, so it is neither kept nor served from a stale index).
            self.oversized += 1
            self._index.pop(key, None)
            return
        self._lru[key] = entry
        self._index[key] = entry
