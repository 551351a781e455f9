"""The canary driver, at the import path of earlier releases.

See :mod:`modelflags.rollout.canary`.
"""

from modelflags.rollout.canary import *  # noqa: F403
from modelflags.rollout.canary import __all__ as __all__
