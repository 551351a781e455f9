"""How reading a model's versions from its source goes, as ``status()`` shows it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["SourceStatus"]


@dataclass(frozen=True)
class SourceStatus:
    """Where a model's versions come from and how reading them goes (``status().extra``).

    ``refreshed_at`` is the wall-clock time (seconds since the epoch) of the last successful
    read; ``last_error`` the last failure's message (None once a read succeeds again) and
    ``error_since`` when failures began; ``from_snapshot`` says the versions are those of the
    snapshot under ``state_dir`` (MLflow could not be read since start). Immutable.
    """

    tracking_uri: str
    name: str
    refresh_s: float
    refreshed_at: float | None = None
    last_error: str | None = None
    error_since: float | None = None
    from_snapshot: bool = False
    versions: tuple[str, ...] = ()
    unpinned: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (what ``ModelStatus.extra["mlflow"]`` holds)."""
        return {
            "tracking_uri": self.tracking_uri,
            "name": self.name,
            "refresh_s": self.refresh_s,
            "refreshed_at": self.refreshed_at,
            "last_error": self.last_error,
            "error_since": self.error_since,
            "from_snapshot": self.from_snapshot,
            "versions": list(self.versions),
            "unpinned": list(self.unpinned),
            "aliases": dict(self.aliases),
        }
