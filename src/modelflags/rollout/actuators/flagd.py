"""The flagd flag-file actuator: rewrite one flag of a flagd JSON file atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import filelock

from modelflags.rollout.actuators.base import ActuatorError, checked_shares, percents

__all__ = ["FlagdFileActuator"]

logger = logging.getLogger(__name__)


class FlagdFileActuator:
    """Rewrites one flag of a flagd flag file (JSON), as flagd's FILE mode reads it.

    Only the named flag changes; other flags and the file's other keys (``$schema``,
    ``$evaluators``, metadata) are kept as they are. Each change reads the file, edits the flag
    and writes the whole document back atomically: a temporary file in the same folder, fsync,
    ``os.replace`` (readers see the old file or the new one, never a mix), under a
    ``filelock.FileLock`` on ``<path>.lock`` so that writers in several threads or processes take
    turns and no change is lost. The new file keeps the old one's permission bits, and its
    modification time always moves forward (flagd's file watcher reloads on a newer mtime, and two
    writes within one tick of a coarse file-system clock would otherwise look like one). When the
    flag file is a symbolic link, the file it points to is edited (and locked, as
    ``<target>.lock``) and the link stays a link.

    - :meth:`set_split` sets ``"state": "ENABLED"`` and replaces the flag's ``targeting`` with
      ``{"fractional": [[variant, percent], ...]}`` (flagd buckets by flag key + targeting key).
      A single version at 100 is written as ``defaultVariant`` with ``targeting: {}``.
    - :meth:`rollback` sets ``"state": "ENABLED"``, ``defaultVariant`` to the last known good
      version and ``targeting`` to ``{}``: everyone gets it, with or without a targeting key.
      (Disabling the flag would make each SDK serve its own default, the process's last known
      good version, which during a canary may be the very version being rolled back.)

    Versions are found among the flag's variants by name (with the version id as value) or by
    value; a version the flag lacks is added as ``{version: version}``. Any rule the targeting
    held before (a beta rule, for example) is replaced. JSON only (not YAML).

    Safe to share between threads and processes.
    """

    name = "flagd-file"

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"FlagdFileActuator({str(self.path)!r})"

    def current_split(self, flag_key: str) -> dict[str, int] | None:
        """The split the flag serves now, as :meth:`set_split` and :meth:`rollback` write it: a
        ``fractional`` targeting, or an empty one (the ``defaultVariant`` for everyone). ``None``
        for anything else (other targeting rules, a disabled flag)."""
        try:
            document = self._read(flag_key, Path(os.path.realpath(self.path)))
        except OSError as exc:
            raise self._error(flag_key, f"cannot read the flag file: {exc}") from exc
        flags = document.get("flags")
        flag = flags.get(flag_key) if isinstance(flags, dict) else None
        if not isinstance(flag, dict):
            raise self._error(flag_key, f"no flag {flag_key!r} in this flag file")
        variants = flag.get("variants")
        if flag.get("state", "ENABLED") != "ENABLED" or not isinstance(variants, dict):
            return None
        targeting = flag.get("targeting") or {}
        if not targeting:
            version = variants.get(flag.get("defaultVariant"))
            return {version: 100} if isinstance(version, str) else None
        pairs = targeting.get("fractional") if len(targeting) == 1 else None
        if not isinstance(pairs, list):
            return None
        weights: dict[str, float] = {}
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                return None
            if pair[0] not in variants:
                return None
            version, weight = variants[pair[0]], pair[1]
            if not isinstance(version, str) or not isinstance(weight, int | float):
                return None
            weights[version] = weights.get(version, 0.0) + float(weight)
        return percents(weights)

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        shares = checked_shares(weights)

        def edit(flag: dict[str, Any]) -> None:
            names = [self._variant(flag_key, flag, version) for version, _ in shares]
            flag["state"] = "ENABLED"
            if len(shares) == 1:
                flag["defaultVariant"] = names[0]
                flag["targeting"] = {}
            else:
                pairs = [[name, percent] for name, (_, percent) in zip(names, shares, strict=True)]
                flag["targeting"] = {"fractional": pairs}

        self._edit(flag_key, edit)
        logger.info("%s: flag %r split %s", self.path, flag_key, dict(weights))

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        def edit(flag: dict[str, Any]) -> None:
            flag["state"] = "ENABLED"
            flag["defaultVariant"] = self._variant(flag_key, flag, to_version)
            flag["targeting"] = {}

        self._edit(flag_key, edit)
        logger.warning(
            "%s: flag %r rolled back from %r to %r", self.path, flag_key, from_version, to_version
        )

    # -- mechanism ------------------------------------------------------------------------------

    def _error(self, flag_key: str, message: str) -> ActuatorError:
        return ActuatorError(f"{self.path}: {message}", flag_key=flag_key, actuator=self.name)

    def _variant(self, flag_key: str, flag: dict[str, Any], version: str) -> str:
        """The name of the variant serving ``version``, added to the flag when missing."""
        variants = flag.setdefault("variants", {})
        if not isinstance(variants, dict):
            raise self._error(flag_key, f"flag {flag_key!r} has variants that are not an object")
        if variants.get(version) == version:
            return version
        for name, value in variants.items():
            if value == version:
                return str(name)
        if version in variants:
            raise self._error(
                flag_key,
                f"flag {flag_key!r} has a variant {version!r} whose value is "
                f"{variants[version]!r}, not the version id",
            )
        variants[version] = version
        return version

    def _edit(self, flag_key: str, edit: Callable[[dict[str, Any]], None]) -> None:
        # A link (a deployment pointing flags.json at a versioned file) is written through, at
        # its target as it is now; every writer locks the target, whatever name it was given.
        target = Path(os.path.realpath(self.path))
        lock_path = target.with_name(target.name + ".lock")
        try:
            with filelock.FileLock(str(lock_path), timeout=self.lock_timeout):
                before = os.stat(target)
                document = self._read(flag_key, target)
                flags = document.get("flags")
                flag = flags.get(flag_key) if isinstance(flags, dict) else None
                if not isinstance(flag, dict):
                    raise self._error(flag_key, f"no flag {flag_key!r} in this flag file")
                edit(flag)
                self._write(document, before, target)
        except filelock.Timeout as exc:
            raise self._error(
                flag_key, f"another writer held {lock_path} for {self.lock_timeout:g} s"
            ) from exc
        except OSError as exc:
            raise self._error(flag_key, f"cannot update the flag file: {exc}") from exc

    def _read(self, flag_key: str, target: Path) -> dict[str, Any]:
        text = target.read_text(encoding="utf-8")
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise self._error(flag_key, f"not a valid JSON flag file: {exc}") from exc
        if not isinstance(document, dict):
            raise self._error(flag_key, "not a flagd flag file (the top level is not an object)")
        return document

    def _write(self, document: dict[str, Any], before: os.stat_result, target: Path) -> None:
        folder = target.parent
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(tmp, stat.S_IMODE(before.st_mode))
            mtime = max(time.time_ns(), before.st_mtime_ns + 1_000_000)
            os.utime(tmp, ns=(mtime, mtime))
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
