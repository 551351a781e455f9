"""Actuators: change a model's flag at its source, so every instance follows.

A guardrail that fires inside one process only protects that process. An actuator writes the
decision where the flag lives, so every instance reading the flag serves the same versions::

    Actuator                the protocol: set_split() and rollback()
    SplitReader             and current_split(), which both actuators below also have
     ├── FlagdFileActuator  a flagd flag file (FILE mode), rewritten atomically under a file lock
     └── UnleashActuator    the Unleash 8 admin API: variants of a flexibleRollout strategy

The two actuators are imported on first use (they bring in a file lock and an HTTP client).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelflags.rollout.actuators.base import Actuator, ActuatorError, SplitReader

if TYPE_CHECKING:
    from modelflags.rollout.actuators.flagd import FlagdFileActuator
    from modelflags.rollout.actuators.unleash import UnleashActuator

__all__ = ["Actuator", "ActuatorError", "FlagdFileActuator", "SplitReader", "UnleashActuator"]

_LAZY = {
    "FlagdFileActuator": "modelflags.rollout.actuators.flagd",
    "UnleashActuator": "modelflags.rollout.actuators.unleash",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
