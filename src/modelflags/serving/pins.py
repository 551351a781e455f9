"""Process-wide version pins by model name, for tests (see :mod:`modelflags.testing`).

This module owns the only global pin state. Pins are empty in production; while any are set,
every :class:`ModelFlags` instance serves the pinned version of a pinned model, ahead of its flags
and override files. Changes replace the mapping atomically, so readers never need a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

__all__ = ["active", "pop", "push"]

_lock = threading.Lock()
_stack: list[dict[str, str]] = []
ACTIVE: Mapping[str, str] = {}
"""The pins in force: model name -> version id (read-only; replaced on every change)."""


def active() -> Mapping[str, str]:
    """The pins in force now."""
    return ACTIVE


def push(versions: Mapping[str, str]) -> int:
    """Add pins on top of the current ones; returns a token for :func:`pop`."""
    global ACTIVE
    for name, version in versions.items():
        if not isinstance(version, str) or not version:
            raise TypeError(f"pin for model {name!r} must be a version id string, got {version!r}")
    with _lock:
        _stack.append(dict(versions))
        ACTIVE = _merged()
        return len(_stack)


def pop(token: int) -> None:
    """Remove the pins added by ``push`` (and any pushed after them)."""
    global ACTIVE
    with _lock:
        del _stack[token - 1 :]
        ACTIVE = _merged()


def _merged() -> dict[str, str]:
    merged: dict[str, str] = {}
    for layer in _stack:
        merged.update(layer)
    return merged
