"""The skops loader, at the import path of earlier releases.

See :mod:`modelflags.artifacts.skops`.
"""

from modelflags.artifacts.skops import *  # noqa: F403
from modelflags.artifacts.skops import __all__ as __all__
