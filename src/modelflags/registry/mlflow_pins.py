"""The local pin file: folder digests of MLflow model versions this registry trusts.

::

    # mlflow-pins.toml
    [recommender]            # the registered model's name in MLflow
    7 = "9f2c..."            # version -> folder digest (modelflags.artifacts.folders)

It lives beside the registry file (``mlflow-pins.toml``, or the ``pin_file`` of the model's
``mlflow`` table). A pin here wins over the MLflow tag ``modelflags.sha256``: whoever can change
MLflow cannot change this file. ``modelflags mlflow pin --pin-file`` and
``trust_on_first_use`` add to it; edits are locked (``.<name>.lock`` beside it) and atomic, and
keep comments (``tomlkit``).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from modelflags.errors import RegistryError

__all__ = ["PinFile"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEADER = "# Folder digests of MLflow model versions, by registered model (modelflags).\n"


class PinFile:
    """Reads and extends one pin file (``path``; None: there is none).

    :meth:`read` re-reads the file only when its modification time or size changed. Safe to
    share between threads: the cached reading is replaced by one assignment.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._seen: tuple[int, int] | None = None
        self._pins: dict[str, dict[str, str]] = {}

    def read(self) -> dict[str, dict[str, str]]:
        """Registered model name -> version -> digest (empty when there is no file).

        Raises :class:`~modelflags.errors.RegistryError` naming the file and entry for a file
        that cannot be read or holds something that is not a digest.
        """
        path = self.path
        if path is None:
            return {}
        try:
            info = path.stat()
        except FileNotFoundError:
            self._seen, self._pins = None, {}
            return {}
        except OSError as exc:
            raise RegistryError(f"{path}: cannot read the pin file: {exc}", file=str(path)) from exc
        seen = (info.st_mtime_ns, info.st_size)
        if seen == self._seen:
            return self._pins
        pins = _parse(path)
        self._seen, self._pins = seen, pins
        return pins

    def digest(self, name: str, version: str) -> str | None:
        """The digest pinned for ``version`` of ``name``, if any."""
        return self.read().get(name, {}).get(version)

    def add(self, name: str, version: str, digest: str, *, lock_timeout: float = 10.0) -> bool:
        """Pin ``version`` of ``name`` to ``digest``; False when it already was.

        Raises :class:`~modelflags.errors.RegistryError` when the version is pinned to another
        digest (a pin is never changed here: edit the file by hand), or the file cannot be
        written.
        """
        import filelock
        import tomlkit

        path = self.path
        if path is None:
            raise RegistryError("no pin file: give the model's mlflow table a pin_file")
        if not _SHA256.fullmatch(digest):
            raise RegistryError(f"{path}: {digest!r} is not a sha256 digest", file=str(path))
        lock = filelock.FileLock(str(path.with_name(f".{path.name}.lock")), timeout=lock_timeout)
        try:
            with lock:
                text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
                document = tomlkit.parse(text)
                table = document.get(name)
                if table is None:
                    table = tomlkit.table()
                    document[name] = table
                current = table.get(version)
                if current is not None:
                    if str(current) == digest:
                        return False
                    raise RegistryError(
                        f"{path}: version {version} of {name!r} is already pinned to {current}, "
                        f"not {digest}; a version's bytes never change: find out why, then edit "
                        "the file by hand",
                        file=str(path),
                    )
                table[version] = digest
                _replace(path, tomlkit.dumps(document))
        except filelock.Timeout as exc:
            raise RegistryError(
                f"{path}: another process holds its lock for more than {lock_timeout:g} s",
                file=str(path),
            ) from exc
        except OSError as exc:
            raise RegistryError(
                f"{path}: cannot write the pin file: {exc}", file=str(path)
            ) from exc
        return True


def _parse(path: Path) -> dict[str, dict[str, str]]:
    where = str(path)
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{where}: cannot read the pin file: {exc}", file=where) from exc
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{where}: invalid TOML: {exc}", file=where) from exc
    pins: dict[str, dict[str, str]] = {}
    for name, versions in data.items():
        if not isinstance(versions, dict):
            raise RegistryError(
                f"{where}: {name!r} must be a table of version = digest", file=where
            )
        for version, digest in versions.items():
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest.strip().lower()):
                raise RegistryError(
                    f"{where}: [{name}] {version} = {digest!r} is not a sha256 digest",
                    file=where,
                    field=f"{name}.{version}",
                )
        pins[name] = {str(version): str(d).strip().lower() for version, d in versions.items()}
    return pins


def _replace(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically (temporary file in its folder, fsync, rename)."""
    folder = target.parent
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # durability of the rename; not every system allows it
        folder_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)
