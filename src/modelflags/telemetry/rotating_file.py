"""An append-only file that rotates by size, as logging's ``RotatingFileHandler`` does.

``path`` is renamed ``path.1`` when the next lines would take it past ``max_bytes``, ``path.1``
becomes ``path.2``, and so on up to ``path.<backups>``; older ones are deleted (with no backups
the file is emptied instead). Lines are appended with one system call per run of lines that fits
before a rotation, on an unbuffered file, so a line counts as written once that call returned.

Used by one thread at a time (the decision log's writer); not safe to share between threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = ["AppendError", "RotatingFile"]


class AppendError(OSError):
    """Appending failed part way: ``written`` lines were written before ``cause``."""

    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(str(cause))
        self.written = written
        self.cause = cause


class RotatingFile:
    """``path``, opened for appending on first use and rotated past ``max_bytes``."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: IO[bytes] | None = None
        self._size = 0

    def open(self) -> IO[bytes]:
        """Open (or reopen) the file for appending; raises ``OSError``."""
        self.close()
        # Unbuffered: a line counts as written once the system call returned.
        file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open across batches
        self._file = file
        self._size = os.fstat(file.fileno()).st_size
        return file

    def append(self, lines: Sequence[bytes]) -> int:
        """Append ``lines`` (each ending in a newline), rotating between lines when the next one
        would take the file past ``max_bytes``; the number written. Raises
        :class:`AppendError` (with the number written before the failure) on an OS error, and
        closes the file so that the next call opens it again."""
        done = 0
        try:
            file = self._file if self._file is not None else self.open()
            chunk: list[bytes] = []
            pending = 0
            for line in lines:
                total = self._size + pending
                if total and total + len(line) > self.max_bytes:
                    if chunk:
                        _write_all(file, b"".join(chunk))
                        self._size += pending
                        done += len(chunk)
                        chunk.clear()
                        pending = 0
                    file = self._rotate()
                chunk.append(line)
                pending += len(line)
            if chunk:
                _write_all(file, b"".join(chunk))
                self._size += pending
                done += len(chunk)
        except OSError as exc:
            self.close()
            raise AppendError(done, exc) from exc
        return done

    def close(self) -> None:
        """Close the file (it is opened again on the next append). Never raises."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def _rotate(self) -> IO[bytes]:
        self.close()
        if self.backups == 0:
            os.truncate(self.path, 0)
        else:
            for index in range(self.backups - 1, 0, -1):
                source = self._backup(index)
                if source.exists():
                    os.replace(source, self._backup(index + 1))
            if self.path.exists():
                os.replace(self.path, self._backup(1))
        return self.open()

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")


def _write_all(file: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[file.write(view) :]
