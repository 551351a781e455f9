"""Where flag-change events come from, normalised to one callback.

Providers report changes in different ways: most emit ``PROVIDER_CONFIGURATION_CHANGED`` through
the OpenFeature SDK (flagd), some keep a handler list of their own and never forward to the SDK
(the Unleash provider hands its handlers a dict), and the override layer emits through its own
attachment. :class:`ChangeFeed` listens to all of them and calls ``on_change`` with the set of
changed flag keys, or ``None`` when the provider did not say which.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping

from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent, ProviderEventDetails
from openfeature.provider import FeatureProvider

from modelflags.errors import ModelFlagsError

__all__ = ["ChangeFeed", "overrides_provider"]

logger = logging.getLogger(__name__)

OnChange = Callable[[frozenset[str] | None], None]


class ChangeFeed:
    """Subscribes to every source of change events for one OpenFeature client.

    Safe to share between threads; :meth:`close` removes every subscription it made.
    """

    def __init__(self, client: OpenFeatureClient, on_change: OnChange) -> None:
        self._client = client
        self._on_change = on_change
        self._lock = threading.Lock()
        self._providers: list[object] = []
        self._closed = False
        client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._on_sdk_event)
        client.add_handler(ProviderEvent.PROVIDER_READY, self._on_ready)
        self._follow(client.provider)

    def on_override_event(
        self, provider: FeatureProvider, event: ProviderEvent, details: ProviderEventDetails
    ) -> None:
        """Receive events of the override layer (attached with ``provider.attach``)."""
        if event is ProviderEvent.PROVIDER_CONFIGURATION_CHANGED:
            self._deliver(details.flags_changed)
        elif event is ProviderEvent.PROVIDER_ERROR:
            logger.error(
                "override file: %s (the last good overrides stay in force)", details.message
            )

    def close(self) -> None:
        """Stop listening. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            providers, self._providers = self._providers, []
        for event, handler in (
            (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._on_sdk_event),
            (ProviderEvent.PROVIDER_READY, self._on_ready),
        ):
            with contextlib.suppress(ValueError):
                self._client.remove_handler(event, handler)
        for provider in providers:
            with contextlib.suppress(Exception):
                provider.remove_handler(  # type: ignore[attr-defined]
                    ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._on_own_event
                )

    def _follow(self, provider: object) -> None:
        """Subscribe to a provider's own handler list, if it has one."""
        add = getattr(provider, "add_handler", None)
        if not callable(add):
            return
        with self._lock:
            if self._closed or any(known is provider for known in self._providers):
                return
            self._providers.append(provider)
        try:
            add(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._on_own_event)
        except Exception:
            logger.debug("provider %r refused a handler", provider, exc_info=True)

    def _on_ready(self, details: EventDetails) -> None:
        self._follow(self._client.provider)  # a new provider may have been set

    def _on_sdk_event(self, details: EventDetails) -> None:
        self._deliver(details.flags_changed)

    def _on_own_event(self, details: object) -> None:
        if isinstance(details, Mapping):  # the Unleash provider hands its handlers a dict
            keys = details.get("flag_keys") or details.get("flags_changed")
            self._deliver(list(keys) if keys else None)
        elif isinstance(details, ProviderEventDetails):
            self._deliver(details.flags_changed)
        else:
            self._deliver(None)

    def _deliver(self, keys: list[str] | None) -> None:
        if self._closed:
            return
        try:
            self._on_change(frozenset(keys) if keys else None)
        except Exception:
            logger.exception("handling a flag change failed")


def overrides_provider(
    path: str | os.PathLike[str] | None,
    on_event: Callable[[FeatureProvider, ProviderEvent, ProviderEventDetails], None],
) -> FeatureProvider | None:
    """The override layer for ``path`` (watched and initialized), or ``None`` without a path."""
    if path is None:
        return None
    try:
        from modelflags_provider_overrides import OverridesError, OverridesProvider
    except ImportError as exc:
        raise ModelFlagsError(
            "override files need the modelflags-provider-overrides package "
            "(pip install -e providers/overrides)"
        ) from exc
    try:
        provider = OverridesProvider(path=path)
    except OverridesError as exc:
        raise ModelFlagsError(str(exc)) from exc
    provider.attach(on_event)
    provider.initialize(EvaluationContext())
    return provider
