"""Where the files of a folder artifact come from: the :class:`FolderSource` interface, and a
folder on this machine (:class:`LocalFolderSource`, which refuses links rather than follow them).

MLflow's other artifact stores are in :mod:`~modelflags.artifacts.mlflow`.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import unquote, urlsplit

__all__ = ["FolderSource", "LocalFolderSource", "local_folder_path"]

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


class FolderSource(Protocol):
    """Where the files of a folder artifact come from."""

    def list_files(self, location: str) -> Sequence[tuple[str, int | None]]:
        """Every file below ``location``: its ``/``-separated relative path and size (None
        when the store does not say).

        Raises ``FileNotFoundError`` when there is nothing there, ``ValueError`` for what a
        folder artifact may not hold (a link), anything else when the store fails.
        """
        ...

    def download(self, location: str, path: str, target: Path) -> None:
        """Write the file at relative ``path`` of ``location`` to ``target`` (a new file).

        Raises as :meth:`list_files`.
        """
        ...


def local_folder_path(location: str) -> Path | None:
    """The local folder a location names (a path or a ``file://`` URI), else None."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return Path(unquote(parts.path))
    if scheme == "" or len(scheme) == 1:  # a path (or a Windows drive letter)
        return Path(location)
    return None


class LocalFolderSource:
    """Files of a folder on this machine. Links are refused, never followed; files named in
    ``ignore`` at the folder's top are not part of it.

    Keeps no state: safe to share between threads.
    """

    def __init__(self, ignore: frozenset[str] = frozenset()) -> None:
        self._ignore = ignore

    def list_files(self, location: str) -> list[tuple[str, int | None]]:
        """Every regular file below the folder, with its size."""
        root = _local(location)
        found: list[tuple[str, int | None]] = []
        info = os.lstat(root)  # FileNotFoundError when it is not there
        if not stat.S_ISDIR(info.st_mode):
            raise ValueError(f"{root} is not a folder (links are not followed)")
        for folder, folders, files in os.walk(root, followlinks=False):
            for name in folders + files:
                path = Path(folder) / name
                info = os.lstat(path)
                relative = path.relative_to(root).as_posix()
                if relative in self._ignore:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found.append((relative, info.st_size))
                elif not stat.S_ISDIR(info.st_mode):
                    raise ValueError(
                        f"{root} has {relative!r}, which is not a file or a folder (a folder "
                        "artifact holds no links)"
                    )
        return found

    def download(self, location: str, path: str, target: Path) -> None:
        """Copy one file, opened without following a link."""
        source = _local(location).joinpath(*path.split("/"))
        fd = os.open(source, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
        with open(fd, "rb") as data, open(target, "xb") as out:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValueError(f"{source} is not a regular file")
            shutil.copyfileobj(data, out, 1 << 20)


def _local(location: str) -> Path:
    path = local_folder_path(location)
    if path is None:
        raise ValueError(f"{location} is not a local folder")
    return path
