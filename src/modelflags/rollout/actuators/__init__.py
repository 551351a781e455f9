"""Actuators: change a model's flag at its source, so every instance follows.

A guardrail that fires inside one process only protects that process. An actuator writes the
decision where the flag lives, so every instance reading the flag serves the same versions::

    Actuator                the protocol: set_split() and rollback()
     ├── FlagdFileActuator  a flagd flag file (FILE mode), rewritten atomically under a file lock
     └── UnleashActuator    the Unleash 8 admin API: variants of a flexibleRollout strategy
"""

from modelflags.rollout.actuators.base import Actuator, ActuatorError
from modelflags.rollout.actuators.flagd import FlagdFileActuator
from modelflags.rollout.actuators.unleash import UnleashActuator

__all__ = ["Actuator", "ActuatorError", "FlagdFileActuator", "UnleashActuator"]
