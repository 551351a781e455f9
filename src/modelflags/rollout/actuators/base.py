"""Actuators: change a model's flag at its source, so every instance follows.

A guardrail that fires inside one process only protects that process. An actuator writes the
decision where the flag lives, so every instance reading the flag serves the same versions::

    Actuator                the protocol: set_split() and rollback()
     ├── FlagdFileActuator  a flagd flag file (FILE mode), rewritten atomically under a file lock
     └── UnleashActuator    the Unleash 8 admin API: variants of a flexibleRollout strategy

Weights map version ids to percents that sum to 100. Failures raise :class:`ActuatorError` with
what a person needs (the file path; the HTTP method, URL, status and body); the callers (the
guardrail policy and the canary driver) catch, report and carry on. Actuators are never called on
the request path. Invalid arguments (weights that do not sum to 100) raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from modelflags.errors import ActuatorError

__all__ = ["Actuator", "ActuatorError", "SplitReader", "checked_shares", "percents"]


@runtime_checkable
class Actuator(Protocol):
    """Changes which model versions a flag serves, at the flag's source."""

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        """Serve the versions of ``weights`` (version id -> percent, summing to 100).

        A version at 100 may be written as the flag's plain default.
        """
        ...

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        """Serve ``to_version`` to everyone; ``from_version`` is the version being abandoned."""
        ...


@runtime_checkable
class SplitReader(Protocol):
    """An actuator that can also say which split a flag serves now (both built-in ones can)."""

    def current_split(self, flag_key: str) -> dict[str, int] | None:
        """Version id -> percent (summing to 100) the flag serves to everyone, or ``None`` when
        its rules are not a plain split this actuator writes (targeting rules, a disabled flag).
        Raises :class:`ActuatorError` when the source cannot be read."""
        ...


def percents(weights: Mapping[str, float]) -> dict[str, int] | None:
    """Non-negative ``weights`` as whole percents summing to 100 (largest remainders), or
    ``None`` when they are not all finite and non-negative or sum to zero."""
    values = dict(weights)
    if not values or any(not (0.0 <= w < float("inf")) for w in values.values()):
        return None
    total = sum(values.values())
    if total <= 0:
        return None
    exact = {key: 100.0 * w / total for key, w in values.items()}
    result = {key: int(share) for key, share in exact.items()}
    spare = 100 - sum(result.values())
    for key in sorted(exact, key=lambda k: exact[k] - result[k], reverse=True)[:spare]:
        result[key] += 1
    return result


def checked_shares(weights: Mapping[str, int]) -> list[tuple[str, int]]:
    """Validated (version, percent) pairs in the given order, without the zero ones."""
    if not weights:
        raise ValueError("weights must name at least one version")
    for version, percent in weights.items():
        if not isinstance(version, str) or not version:
            raise ValueError(f"version ids must be non-empty strings, got {version!r}")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"weight of {version!r} must be an integer in 0..100, got {percent!r}")
    total = sum(weights.values())
    if total != 100:
        raise ValueError(f"weights must sum to 100, got {total}: {dict(weights)}")
    return [(version, percent) for version, percent in weights.items() if percent > 0]
