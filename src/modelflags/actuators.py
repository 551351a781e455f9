"""The actuators, at the import path of earlier releases.

See :mod:`modelflags.rollout.actuators`.
"""

from modelflags.rollout.actuators import *  # noqa: F403
from modelflags.rollout.actuators import __all__ as __all__
