"""What takes part in a flag evaluation besides its context, and whether it was replaced.

OpenFeature merges the API-level evaluation context, the transaction context and the client's
context into every evaluation, runs API, client and provider hooks around it, and asks the
provider set now. A kept answer is the same answer only while none of these changed.
:class:`Surroundings` holds a snapshot of them and a cheap check (identities only) that nothing
was replaced since; a change takes a new snapshot and calls ``on_change``. Contexts are compared by
identity, so a context changed in place (rather than replaced, as the OpenFeature API does) is not
seen.

Reuse is unsafe while a transaction context propagator is set (each request may carry its own
context) or, unless asked for, while API or client hooks are registered (a hook may change the
context, or count evaluations).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import openfeature.evaluation_context as _global_context
import openfeature.hook as _api_hooks
import openfeature.transaction_context as _transaction
from openfeature.client import OpenFeatureClient
from openfeature.provider._registry import provider_registry as _provider_registry

__all__ = ["Surroundings"]

logger = logging.getLogger(__name__)

_NO_OP_PROPAGATOR = "NoOpTransactionContextPropagator"


class Surroundings:
    """A snapshot of what surrounds the flags of ``client``, and a check for replacements.

    ``with_hooks``: reuse stays safe while hooks are registered (they then do not run when a kept
    answer serves). ``on_change`` is called after a new snapshot that differs from the last.
    Safe to share between threads.
    """

    def __init__(
        self, client: OpenFeatureClient, *, with_hooks: bool, on_change: Callable[[], None]
    ) -> None:
        self._client = client
        self._with_hooks = with_hooks
        self._on_change = on_change
        # The default provider read directly (the client's property costs two calls a check).
        self._registry: Any = (
            _provider_registry
            if client.domain is None and hasattr(_provider_registry, "_default_provider")
            else None
        )
        self._lock = threading.Lock()
        self._world: tuple[object, ...] = (None,) * 6
        self._noted_hooks = False
        self.safe = False
        """True when kept answers may be used in these surroundings."""
        self.moved()

    def reset_after_fork(self) -> None:
        """In a child process just forked: a fresh lock."""
        self._lock = threading.Lock()

    def moved(self) -> bool:
        """True (after taking a new snapshot) when anything was replaced since the last one."""
        client = self._client
        world = self._world
        registry = self._registry
        if (
            _global_context._evaluation_context is world[0]
            and _transaction._evaluation_transaction_context_propagator is world[1]
            and client.context is world[2]
            and _api_hooks._hooks is world[3]
            and client.hooks is world[4]
            and (client.provider if registry is None else registry._default_provider) is world[5]
        ):
            return False
        self._look_around()
        return True

    def _look_around(self) -> None:
        client = self._client
        registry = self._registry
        world = (
            _global_context._evaluation_context,
            _transaction._evaluation_transaction_context_propagator,
            client.context,
            _api_hooks._hooks,
            client.hooks,
            client.provider if registry is None else registry._default_provider,
        )
        hooked = bool(world[3]) or bool(world[4])
        safe = type(world[1]).__name__ == _NO_OP_PROPAGATOR and (not hooked or self._with_hooks)
        with self._lock:
            same = world == self._world  # equal contexts, the same hooks and provider
            self._world, self.safe = world, safe
            note = hooked and not self._noted_hooks
            self._noted_hooks = self._noted_hooks or hooked
        if not same:
            self._on_change()
        if note:
            logger.info(
                "OpenFeature hooks are registered: %s",
                "they do not run when the resolution cache answers"
                if self._with_hooks
                else "the resolution cache stays off while they are (with_hooks=True keeps it on)",
            )
