"""Where flag-change events come from, and how healthy the flag source is.

Providers report changes in different ways: most emit ``PROVIDER_CONFIGURATION_CHANGED`` through
the OpenFeature SDK (flagd), some keep a handler list of their own and never forward to the SDK
(the Unleash provider hands its handlers a dict), and the override layer emits through its own
attachment. :class:`ChangeFeed` listens to all of them and calls ``on_change`` with the set of
changed flag keys, or ``None`` when the provider did not say which.

It also keeps the flag source's health (:class:`~modelflags.telemetry.status.FlagSourceStatus`):
``PROVIDER_ERROR`` and ``PROVIDER_STALE`` events from either route, and the errors a provider
only logs (the Unleash client logs a traceback on every failed poll and emits nothing), make the
source ``"error"`` or ``"stale"``; a ready or configuration-changed event, or ``quiet_s`` seconds
without a new error, make it ``"ready"`` again. Each change of state is one log line. A process
with no provider set is ``"not set"``: every request then serves the default version. Parts that
keep what the provider said (the resolution cache) :meth:`~ChangeFeed.watch` every error,
staleness and ready signal.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping

from openfeature.client import OpenFeatureClient
from openfeature.event import EventDetails, ProviderEvent, ProviderEventDetails
from openfeature.provider import FeatureProvider

from modelflags.errors import shown
from modelflags.telemetry.status import FlagSourceStatus

__all__ = ["ChangeFeed"]

logger = logging.getLogger(__name__)

OnChange = Callable[[frozenset[str] | None], None]
OnSource = Callable[[str], None]
"""Called with ``"error"``, ``"stale"`` or ``"ready"`` on every such signal of the flag source."""

# Loggers through which providers report failures they emit no event for, by provider module.
# Not flagd's: it emits PROVIDER_ERROR for a flag source that fails, and its log also carries
# evaluation problems of single requests (a fractional split without a targeting key), which say
# nothing of the source's health.
_PROVIDER_LOGGERS: Mapping[str, tuple[str, ...]] = {
    "openfeature.contrib.provider.unleash": ("UnleashClient",),
}
# Log records of these provider modules describe one evaluation's input (flagd's targeting
# operators log a fractional split asked without a targeting key at ERROR), not the source's health.
_EVALUATION_MODULES = frozenset({"custom_ops"})
_NOT_SET = "NoOpProvider"


class ChangeFeed:
    """Subscribes to every source of change and health events for one OpenFeature client.

    Safe to share between threads; :meth:`close` removes every subscription it made.
    ``quiet_s`` is how long without a new error makes an erring source ready again; ``clock``
    gives wall-clock seconds for ``since``.
    """

    def __init__(
        self,
        client: OpenFeatureClient,
        on_change: OnChange,
        *,
        quiet_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self._client = client
        self._on_change = on_change
        self._quiet_s = quiet_s
        self._clock = clock
        self._lock = threading.Lock()
        self._providers: list[object] = []
        self._watched: list[logging.Logger] = []
        self._watch = _LogWatch(self)
        self._closed = False
        self._state = "ready"
        self._since: float | None = clock()
        # Failures counted per route (events, log records): a provider that both emits and logs
        # each failure (flagd) must not count it twice, so the count is the larger of the two.
        self._errors: dict[str, int] = {}
        self._last_error: str | None = None
        self._last_error_at = 0.0
        self._provider_name = ""
        self._watchers: list[OnSource] = []
        self._ready_provider: object = client.provider
        self._subscriptions = (
            (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._on_sdk_event),
            (ProviderEvent.PROVIDER_READY, self._on_ready),
            (ProviderEvent.PROVIDER_ERROR, self._on_sdk_error),
            (ProviderEvent.PROVIDER_STALE, self._on_sdk_stale),
        )
        for event, handler in self._subscriptions:
            client.add_handler(event, handler)
        self._follow(client.provider)

    # -- health ---------------------------------------------------------------------------------

    def source_status(self) -> FlagSourceStatus:
        """The flag source's health now."""
        provider = self._client.provider
        name = type(provider).__name__
        if name == _NOT_SET:
            return FlagSourceStatus(name, "not set", None, self._error_count(), self._last_error)
        self.recover_if_quiet()
        with self._lock:
            return FlagSourceStatus(
                name, self._state, self._since, self._error_count(), self._last_error
            )

    def _error_count(self) -> int:
        return max(self._errors.values(), default=0)

    def provider_set(self) -> bool:
        """False while the client has no provider (OpenFeature's no-op provider)."""
        return type(self._client.provider).__name__ != _NOT_SET

    def watch(self, on_source: OnSource) -> None:
        """Call ``on_source`` with ``"error"``, ``"stale"`` or ``"ready"`` on every such signal
        (each error and ready event, each recovery), on the thread that brings it."""
        with self._lock:
            self._watchers.append(on_source)

    def failed(self, message: str, *, state: str = "error", route: str = "event") -> None:
        """Record an error (or staleness) of the flag source, reported through ``route``."""
        text = shown(message, limit=200, quote=False)
        with self._lock:
            self._errors[route] = self._errors.get(route, 0) + 1
            self._last_error = text
            self._last_error_at = self._clock()
            changed = self._state != state
            if changed:
                self._state, self._since = state, self._last_error_at
        self._notify(state)
        if changed:
            logger.error("flag source %s is %s: %s", self._provider_name or "?", state, text)

    def recovered(self) -> bool:
        """Record that the flag source answered again; True when it was erring until now."""
        with self._lock:
            changed = self._state != "ready"
            if changed:
                self._state, self._since = "ready", self._clock()
        if changed:
            self._notify("ready")
            logger.warning("flag source %s is ready again", self._provider_name or "?")
        return changed

    def recover_if_quiet(self) -> None:
        """Make an erring source ready again when no error came for ``quiet_s`` seconds."""
        with self._lock:
            erring = self._state != "ready"
            quiet = self._clock() - self._last_error_at >= self._quiet_s
        if erring and quiet:
            self.recovered()

    def reset_after_fork(self) -> None:
        """In a child process just forked: a fresh lock (another thread may have held it)."""
        self._lock = threading.Lock()

    def _notify(self, state: str) -> None:
        for watcher in list(self._watchers):
            try:
                watcher(state)
            except Exception:
                logger.exception("a watcher of the flag source failed")

    # -- the override layer ---------------------------------------------------------------------

    def on_override_event(
        self, provider: FeatureProvider, event: ProviderEvent, details: ProviderEventDetails
    ) -> None:
        """Receive events of the override layer (attached with ``provider.attach``)."""
        if event is ProviderEvent.PROVIDER_CONFIGURATION_CHANGED:
            self._deliver(details.flags_changed)
        elif event is ProviderEvent.PROVIDER_ERROR:
            logger.error(
                "override file: %s (the last good overrides stay in force)",
                shown(details.message or "", limit=500, quote=False),
            )

    # -- subscriptions --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            providers, self._providers = self._providers, []
            watched, self._watched = self._watched, []
        for event, handler in self._subscriptions:
            with contextlib.suppress(ValueError):
                self._client.remove_handler(event, handler)
        for provider in providers:
            for event, own in (
                (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._on_own_event),
                (ProviderEvent.PROVIDER_ERROR, self._on_own_error),
                (ProviderEvent.PROVIDER_STALE, self._on_own_stale),
            ):
                with contextlib.suppress(Exception):
                    provider.remove_handler(event, own)  # type: ignore[attr-defined]
        for watched_logger in watched:
            watched_logger.removeHandler(self._watch)

    def _follow(self, provider: object) -> None:
        """Subscribe to a provider's own handler list and failure logs, if it has them."""
        with self._lock:
            if self._closed or any(known is provider for known in self._providers):
                return
            self._providers.append(provider)
            self._provider_name = type(provider).__name__
        module = type(provider).__module__
        for prefix, names in _PROVIDER_LOGGERS.items():
            if module.startswith(prefix):
                for name in names:
                    watched = logging.getLogger(name)
                    if self._watch not in watched.handlers:
                        watched.addHandler(self._watch)
                        with self._lock:
                            self._watched.append(watched)
        add = getattr(provider, "add_handler", None)
        if not callable(add):
            return
        try:
            add(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._on_own_event)
            add(ProviderEvent.PROVIDER_ERROR, self._on_own_error)
            add(ProviderEvent.PROVIDER_STALE, self._on_own_stale)
        except Exception:
            logger.debug("provider %r refused a handler", provider, exc_info=True)

    def _on_ready(self, details: EventDetails) -> None:
        provider = self._client.provider
        self._follow(provider)  # a new provider may have been set
        fresh = provider is not self._ready_provider
        self._ready_provider = provider
        if not self.recovered() and fresh:
            self._notify("ready")  # a new provider: what the old one said is void

    def _on_sdk_event(self, details: EventDetails) -> None:
        self.recovered()
        self._deliver(details.flags_changed)

    def _on_sdk_error(self, details: EventDetails) -> None:
        self.failed(details.message or "the provider reported an error")

    def _on_sdk_stale(self, details: EventDetails) -> None:
        self.failed(details.message or "the provider's flags are stale", state="stale")

    def _on_own_event(self, details: object) -> None:
        self.recovered()
        if isinstance(details, Mapping):  # the Unleash provider hands its handlers a dict
            keys = details.get("flag_keys") or details.get("flags_changed")
            self._deliver(list(keys) if keys else None)
        elif isinstance(details, ProviderEventDetails):
            self._deliver(details.flags_changed)
        else:
            self._deliver(None)

    def _on_own_error(self, details: object) -> None:
        self.failed(_message(details) or "the provider reported an error")

    def _on_own_stale(self, details: object) -> None:
        self.failed(_message(details) or "the provider's flags are stale", state="stale")

    def _deliver(self, keys: list[str] | None) -> None:
        if self._closed:
            return
        try:
            self._on_change(frozenset(keys) if keys else None)
        except Exception:
            logger.exception("handling a flag change failed")


class _LogWatch(logging.Handler):
    """Turns a provider's ERROR log records into flag-source errors; writes nothing itself."""

    def __init__(self, feed: ChangeFeed) -> None:
        super().__init__(logging.ERROR)
        self._feed = feed

    def emit(self, record: logging.LogRecord) -> None:
        if record.module in _EVALUATION_MODULES:
            return
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        self._feed.failed(message, route="log")


def _message(details: object) -> str | None:
    if isinstance(details, Mapping):
        value = details.get("message") or details.get("error_message")
        return None if value is None else str(value)
    return getattr(details, "message", None)
