"""The remote artifact fetcher, at the import path of earlier releases.

See :mod:`modelflags.artifacts.remote`.
"""

from modelflags.artifacts.remote import *  # noqa: F403
from modelflags.artifacts.remote import __all__ as __all__
