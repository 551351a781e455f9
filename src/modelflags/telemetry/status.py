"""``ModelFlags.status()``: what an operator needs at 3 a.m., as frozen records."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from modelflags.serving.health import Quarantine

__all__ = ["ModelStatus", "QuarantineStatus", "model_status"]


@dataclass(frozen=True, slots=True)
class QuarantineStatus:
    """A quarantined version: why, how many failures in a row, and seconds until it is retried."""

    version: str
    cause: str
    failures: int
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One model: its flag, LKG and default, what is loaded (bytes), pinned, quarantined, and
    rolled back by a guardrail or by hand."""

    name: str
    flag: str
    lkg: str
    default_version: str
    loaded: Mapping[str, int]
    pinned: tuple[str, ...]
    quarantined: tuple[QuarantineStatus, ...]
    flag_errors: int
    last_flag_error: str | None
    rolled_back: tuple[str, ...] = ()


def model_status(
    name: str,
    *,
    flag: str,
    lkg: str,
    default_version: str,
    cached: Mapping[Hashable, tuple[int, bool]],
    quarantined: list[Quarantine],
    now: float,
    flag_errors: tuple[int, str | None],
    rolled_back: frozenset[str] = frozenset(),
) -> ModelStatus:
    """Assemble the status of model ``name`` from snapshots of the cache and health."""
    loaded: dict[str, int] = {}
    pinned: list[str] = []
    for key, (nbytes, is_pinned) in cached.items():
        if isinstance(key, tuple) and len(key) == 2 and key[0] == name:
            loaded[str(key[1])] = nbytes
            if is_pinned:
                pinned.append(str(key[1]))
    return ModelStatus(
        name=name,
        flag=flag,
        lkg=lkg,
        default_version=default_version,
        loaded=dict(sorted(loaded.items())),
        pinned=tuple(sorted(pinned)),
        quarantined=tuple(
            QuarantineStatus(q.version, q.cause, q.failures, max(0.0, q.until - now))
            for q in quarantined
        ),
        flag_errors=flag_errors[0],
        last_flag_error=flag_errors[1],
        rolled_back=tuple(sorted(rolled_back)),
    )
