"""Where the optional override layer comes from: an override file, through its provider package.

The serving core reaches the layer only through
:class:`~modelflags.serving.resolution.OverrideSource`; this wiring module is the one place that
imports the ``modelflags-provider-overrides`` package, and only when an override file is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.provider import FeatureProvider

from modelflags.errors import ModelFlagsError
from modelflags.serving.resolution import OverrideSource

__all__ = ["OVERRIDES_ENV", "overrides_layer"]

OVERRIDES_ENV = "MODELFLAGS_OVERRIDES"
"""Environment variable naming an override file; read once, when a ModelFlags is made."""


def overrides_layer(
    path: str | os.PathLike[str] | None,
    on_event: Callable[[FeatureProvider, ProviderEvent, ProviderEventDetails], None],
    *,
    from_env: bool = False,
) -> OverrideSource | None:
    """The override layer for ``path`` (watched and initialized), or ``None`` without a path.

    ``from_env`` says the path came from :data:`OVERRIDES_ENV`, so errors can say so.
    """
    if path is None:
        return None
    origin = f" (from ${OVERRIDES_ENV})" if from_env else ""
    try:
        from modelflags_provider_overrides import OverridesError, OverridesProvider
    except ImportError as exc:
        raise ModelFlagsError(
            f"override file {os.fspath(path)}{origin} needs the modelflags-provider-overrides "
            "package (pip install -e providers/overrides)"
        ) from exc
    try:
        provider = OverridesProvider(path=path)
    except OverridesError as exc:
        raise ModelFlagsError(f"{exc}{origin}") from exc
    except RecursionError as exc:
        raise ModelFlagsError(
            f"{os.fspath(path)}{origin}: the override file is nested too deeply"
        ) from exc
    provider.attach(on_event)
    provider.initialize(EvaluationContext())
    layer: OverrideSource = provider
    return layer
