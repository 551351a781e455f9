"""Bytes held in memory chunk by chunk, each chunk given back to the system once read past.

An artifact's bytes are kept in anonymous memory maps of :data:`CHUNK_SIZE` bytes rather than in
``bytes`` objects: memory that a heap allocator frees often stays resident in the process, while a
closed map is returned to the system at once. So a loader that reads an artifact from start to
end (joblib, pickle) through :meth:`ChunkList.reader` with ``release=True`` keeps the resident peak
of a load near the larger of the artifact and the model, not their sum.
"""

from __future__ import annotations

import bisect
import io
import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, Final

__all__ = ["CHUNK_SIZE", "ChunkList"]

CHUNK_SIZE: Final = 1 << 20
"""About how many bytes are read, hashed and kept per chunk."""

_BUFFER = 1 << 16


@contextmanager
def _window(buffer: mmap.mmap, start: int, stop: int) -> Iterator[memoryview]:
    """A view of ``buffer[start:stop]``, released on exit (a map with live views cannot close)."""
    part = memoryview(buffer)[start:stop]
    try:
        yield part
    finally:
        part.release()


class ChunkList:
    """Bytes in anonymous memory maps of :data:`CHUNK_SIZE` bytes, appended to, then read.

    Not safe to share between threads: one reads or writes it at a time.
    """

    def __init__(self) -> None:
        self._maps: list[mmap.mmap] = []
        self._lengths: list[int] = []
        self._size = 0

    @property
    def size(self) -> int:
        """The number of bytes held."""
        return self._size

    def read_from(self, stream: io.RawIOBase, limit: int) -> memoryview | None:
        """Read at most ``limit`` bytes (up to a chunk) of ``stream`` into a new chunk.

        Returns a view of the bytes read, to hash them and then ``release()`` it, or None at
        the end of the stream.
        """
        buffer = mmap.mmap(-1, CHUNK_SIZE)
        with _window(buffer, 0, min(limit, CHUNK_SIZE)) as target:
            count = stream.readinto(target) or 0
        if not count:
            buffer.close()
            return None
        self._maps.append(buffer)
        self._lengths.append(count)
        self._size += count
        return memoryview(buffer)[:count]

    def append(self, data: bytes) -> None:
        """Copy ``data`` in, filling the last chunk before starting a new one."""
        source = memoryview(data)
        done = 0
        while done < len(source):
            if not self._maps or self._lengths[-1] == CHUNK_SIZE:
                self._maps.append(mmap.mmap(-1, CHUNK_SIZE))
                self._lengths.append(0)
            used = self._lengths[-1]
            take = min(CHUNK_SIZE - used, len(source) - done)
            self._maps[-1][used : used + take] = source[done : done + take]
            self._lengths[-1] = used + take
            done += take
        self._size += len(source)

    def write_to(self, out: BinaryIO) -> None:
        """Write every byte to ``out``."""
        for buffer, length in zip(self._maps, self._lengths, strict=True):
            with _window(buffer, 0, length) as part:
                out.write(part)

    def to_bytes(self) -> bytes:
        """Every byte as one ``bytes`` object (a copy)."""
        out = io.BytesIO()
        self.write_to(out)
        return out.getvalue()

    def close(self) -> None:
        """Give every chunk back to the system."""
        for buffer in self._maps:
            buffer.close()
        self._maps.clear()
        self._lengths.clear()
        self._size = 0

    def reader(self, *, release: bool) -> BinaryIO:
        """A buffered binary stream over the bytes.

        With ``release``, the stream is forward-only, owns the chunks (this list is emptied) and
        closes each one once read past; otherwise it is seekable and the list stays intact.
        """
        maps, lengths = list(self._maps), list(self._lengths)
        if release:
            self._maps, self._lengths, self._size = [], [], 0
        raw = _ChunkReader(maps, lengths, release=release)
        return io.BufferedReader(raw, _BUFFER)


class _ChunkReader(io.RawIOBase):
    """A raw stream over chunks; with ``release``, forward-only and closing them as it goes."""

    def __init__(self, maps: list[mmap.mmap], lengths: list[int], *, release: bool) -> None:
        super().__init__()
        self._maps = maps
        self._lengths = lengths
        self._release = release
        self._index = 0
        self._offset = 0
        self._position = 0
        self._starts: list[int] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return not self._release

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as whole, whole.cast("B") as target:
            done = 0
            while done < len(target) and self._index < len(self._maps):
                length = self._lengths[self._index]
                take = min(length - self._offset, len(target) - done)
                start = self._offset
                with _window(self._maps[self._index], start, start + take) as part:
                    target[done : done + take] = part
                done += take
                self._offset += take
                if self._offset >= length:
                    if self._release:
                        self._maps[self._index].close()
                    self._index += 1
                    self._offset = 0
        self._position += done
        return done

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._release:
            raise io.UnsupportedOperation("a consumed artifact is read once, forward")
        if self._starts is None:
            starts, total = [], 0
            for length in self._lengths:
                starts.append(total)
                total += length
            starts.append(total)
            self._starts = starts
        end = self._starts[-1]
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: end}[whence]
        position = max(base + offset, 0)
        self._position = position
        if position >= end:
            self._index, self._offset = len(self._maps), 0
        else:
            self._index = bisect.bisect_right(self._starts, position) - 1
            self._offset = position - self._starts[self._index]
        return position

    def close(self) -> None:
        if self._release:
            for buffer in self._maps[self._index :]:
                buffer.close()
        super().close()
