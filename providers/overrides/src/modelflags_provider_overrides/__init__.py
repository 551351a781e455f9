"""Local flag overrides for any OpenFeature provider.

:class:`OverridesProvider` wraps another provider (the *delegate*) and answers
flags from overrides first: a watched TOML/JSON file and/or overrides set in
code. Everything else goes to the delegate.

Example::

    from openfeature import api
    from modelflags_provider_overrides import OverridesProvider

    api.set_provider(OverridesProvider(my_provider, path="overrides.toml"))
"""

from __future__ import annotations

from .errors import OverridesError, OverridesFileError
from .provider import MAX_POLL_INTERVAL, OVERRIDE_REASON, OverridesProvider

__all__ = [
    "MAX_POLL_INTERVAL",
    "OVERRIDE_REASON",
    "OverridesError",
    "OverridesFileError",
    "OverridesProvider",
    "__version__",
]

__version__ = "0.1.0"
"""The installed version of this package."""
