"""The last list of a model's versions read from MLflow, kept under ``state_dir``.

With ``ModelFlags(..., state_dir=...)`` every refresh that changed a model's versions writes
``<state_dir>/mlflow-versions/<model>.json`` atomically::

    {"format": 1, "tracking_uri": "http://127.0.0.1:5000", "name": "recommender",
     "refreshed_at": 1717243200.0, "default_version": "7", "aliases": {"champion": "7"},
     "versions": {"7": {<the version's registry entry>}, ...}}

A process that starts while MLflow cannot be reached serves from it: the versions it lists (their
pins taken again from the pin file and the recorded tags), its last known good version from the
state file, and artifacts from the cache. A snapshot of another tracking server or registered
model is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelflags.registry.schema import VersionSpec

__all__ = ["Snapshot", "read_snapshot", "snapshot_path", "write_snapshot"]

logger = logging.getLogger(__name__)

_FORMAT = 1
FOLDER = "mlflow-versions"


@dataclass(frozen=True)
class Snapshot:
    """A model's versions as last read from MLflow (immutable: safe to share between threads)."""

    default_version: str
    aliases: Mapping[str, str]
    versions: Mapping[str, VersionSpec]
    refreshed_at: float | None


def snapshot_path(state_dir: str | os.PathLike[str], model: str) -> Path:
    """Where the snapshot of ``model`` lives."""
    return Path(state_dir) / FOLDER / f"{model}.json"


def write_snapshot(
    path: Path,
    *,
    tracking_uri: str,
    name: str,
    snapshot: Snapshot,
) -> None:
    """Write ``snapshot`` atomically; a failure is logged, never raised (serving goes on)."""
    payload = {
        "format": _FORMAT,
        "tracking_uri": tracking_uri,
        "name": name,
        "refreshed_at": snapshot.refreshed_at,
        "default_version": snapshot.default_version,
        "aliases": dict(snapshot.aliases),
        "versions": {
            version: spec.model_dump(mode="json", exclude={"location"}, exclude_defaults=True)
            for version, spec in snapshot.versions.items()
        },
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                json.dump(payload, stream, indent=1, default=str)
                stream.write("\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, TypeError, ValueError) as exc:
        logger.error("cannot write the MLflow versions snapshot %s: %s", path, exc)


def read_snapshot(path: Path, *, tracking_uri: str, name: str) -> Snapshot | None:
    """The snapshot at ``path`` when it is of this server and model; None (logged) otherwise."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        logger.warning("ignoring unreadable MLflow versions snapshot %s: %s", path, exc)
        return None
    if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
        logger.warning("ignoring MLflow versions snapshot %s: unknown format", path)
        return None
    if raw.get("tracking_uri") != tracking_uri or raw.get("name") != name:
        logger.warning(
            "ignoring MLflow versions snapshot %s: it is of model %r at %s, not %r at %s",
            path,
            raw.get("name"),
            raw.get("tracking_uri"),
            name,
            tracking_uri,
        )
        return None
    try:
        versions = {
            str(version): VersionSpec.model_validate(entry, context={"base_dir": None})
            for version, entry in dict(raw.get("versions") or {}).items()
        }
    except (ValidationError, TypeError, ValueError) as exc:
        logger.warning("ignoring MLflow versions snapshot %s: %s", path, exc)
        return None
    aliases = raw.get("aliases")
    if not isinstance(aliases, dict):
        aliases = {}
    refreshed = raw.get("refreshed_at")
    return Snapshot(
        default_version=str(raw.get("default_version") or ""),
        aliases={str(k): str(v) for k, v in aliases.items()},
        versions=versions,
        refreshed_at=float(refreshed) if isinstance(refreshed, int | float) else None,
    )
