"""Resolution: which version does a model's flag choose for a context.

One path decides, for the synchronous, asynchronous and prewarm callers alike: a pin (this
instance's :meth:`Resolver.pinned`, then the process-wide pins of :mod:`~modelflags.serving.pins`)
wins; then the resolution cache (:mod:`~modelflags.serving.answers`) gives the answer it kept for
the same question, if it may; then the :class:`~modelflags.serving.flag_source.FlagSource` asks
the override layer (reason ``OVERRIDE`` for the flags it knows) and the OpenFeature client, which
evaluates the model's string flag with the last known good version as the default value.

Provider errors, a missing flag, a value of the wrong type and a version id the registry does not
know all resolve to that default; they never raise. Values that came from outside (flag values,
provider messages) are shown bounded and escaped in every message. Each distinct cause is logged
once at WARNING, up to a bound per model, and counted, so a broken flag cannot flood the logs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Collection, Iterator, Mapping
from typing import Any, NamedTuple

from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.track import TrackingEventDetails

from modelflags.errors import ModelUnavailableError, shown
from modelflags.serving import pins
from modelflags.serving.answers import AnswerCache
from modelflags.serving.flag_source import OVERRIDE, FlagSource, OverrideSource
from modelflags.serving.handle import ServingReason

__all__ = ["OVERRIDE", "OverrideSource", "Resolution", "Resolver"]  # the first two re-exported

logger = logging.getLogger(__name__)

_LOGGED_CAUSES_PER_MODEL = 32
_EVALUATION_WORKERS = 4


class Resolution(NamedTuple):
    """The outcome of one flag evaluation, interpreted against the registry.

    ``version`` is a version id the registry knows; ``requested`` is what the flag said (``None``
    when it said nothing usable, such as a provider error); ``error`` describes why the default
    was used, if it was. ``flag_reason``, ``error_code`` and ``flag_metadata`` are the flag's own.
    """

    version: str
    requested: str | None
    variant: str | None
    reason: ServingReason
    error: str | None
    flag_reason: str | None = None
    error_code: str | None = None
    flag_metadata: Mapping[str, Any] = {}


class Resolver:
    """Evaluates model flags: pins, then kept answers, then the override layer and the client.

    ``timeout`` bounds a synchronous evaluation (``None``: no bound, and no extra cost); a
    provider that takes longer is answered with the default and an error. ``answers`` is the
    resolution cache (``None``: every evaluation asks). Safe to share between threads: the client
    is thread-safe, pins are replaced atomically, and the record of logged causes is guarded by a
    lock taken only on the error path.
    """

    def __init__(
        self,
        client: OpenFeatureClient,
        *,
        overrides: OverrideSource | None = None,
        timeout: float | None = None,
        answers: AnswerCache | None = None,
    ) -> None:
        self.client = client
        self.overrides = overrides
        self.source = FlagSource(client, overrides=overrides, timeout=timeout)
        self.answers = answers
        self._tables = None if answers is None else answers.tables
        self._pins: Mapping[str, str] = {}
        self._pins_lock = threading.Lock()
        self._lock = threading.Lock()
        self._logged: dict[str, set[str]] = {}
        self._errors: dict[str, int] = {}
        self._last_error: dict[str, str] = {}

    # -- pins -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def pinned(self, versions: Mapping[str, str]) -> Iterator[None]:
        """Pin models (by name) to versions for a block; blocks nest and restore on exit."""
        with self._pins_lock:
            previous = self._pins
            self._pins = {**previous, **versions}
        if self.answers is not None:
            self.answers.forget(versions)
        try:
            yield
        finally:
            with self._pins_lock:
                self._pins = previous
            if self.answers is not None:
                self.answers.forget(versions)

    def _pin(self, model: str, flag_key: str, versions: Collection[str]) -> str | None:
        pinned = self._pins.get(model) or pins.ACTIVE.get(model)
        if pinned is not None and pinned not in versions:
            raise ModelUnavailableError(
                f"model {model!r} is pinned to version {pinned!r}, which the registry does not "
                f"have (known: {', '.join(sorted(versions))})",
                model=model,
                version=pinned,
            )
        return pinned

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(
        self,
        model: str,
        flag_key: str,
        default: str,
        context: EvaluationContext,
        versions: Collection[str],
        *,
        timeout: float | None = None,
    ) -> FlagEvaluationDetails[str]:
        """The flag's details for ``context``: from a pin, the resolution cache, the override
        layer, or the client."""
        if self._pins or pins.ACTIVE:
            pinned = self._pin(model, flag_key, versions)
            if pinned is not None:
                return FlagEvaluationDetails(flag_key, pinned, variant=pinned, reason=OVERRIDE)
        tables = self._tables
        table = None if tables is None else tables.get(model)
        if table is None:
            return self.source.ask(flag_key, default, context, timeout)
        answer, key = table.lookup(flag_key, default, context)
        if answer is not None:
            return answer
        generation = table.generation  # read before the provider is asked
        details = self.source.ask(flag_key, default, context, timeout)
        if details.value in versions:
            table.store(generation, flag_key, default, context, details, key)
        return details

    async def evaluate_async(
        self,
        model: str,
        flag_key: str,
        default: str,
        context: EvaluationContext,
        versions: Collection[str],
        *,
        timeout: float | None = None,
    ) -> FlagEvaluationDetails[str]:
        """Like :meth:`evaluate`, awaiting the async APIs (``timeout`` bounds the wait)."""
        if self._pins or pins.ACTIVE:
            pinned = self._pin(model, flag_key, versions)
            if pinned is not None:
                return FlagEvaluationDetails(flag_key, pinned, variant=pinned, reason=OVERRIDE)
        tables = self._tables
        table = None if tables is None else tables.get(model)
        key = None
        if table is not None:
            answer, key = table.lookup(flag_key, default, context)
            if answer is not None:
                return answer
        generation = 0 if table is None else table.generation  # read before the provider is asked
        details = await self.source.ask_async(flag_key, default, context, timeout)
        if table is not None and details.value in versions:
            table.store(generation, flag_key, default, context, details, key)
        return details

    def reset_after_fork(self) -> None:
        """In a child process just forked: fresh locks, no worker threads (bounded evaluations
        start new ones), and no kept answers (they are rebuilt from the child's evaluations)."""
        self._lock = threading.Lock()
        self._pins_lock = threading.Lock()
        self.source.reset_after_fork()
        if self.answers is not None:
            self.answers.reset_after_fork()

    def close(self) -> None:
        """Stop the worker threads of bounded evaluations, if any were started."""
        self.source.close()

    # -- interpretation -------------------------------------------------------------------------

    def interpret(
        self,
        model: str,
        flag_key: str,
        default: str,
        details: FlagEvaluationDetails[str],
        versions: Collection[str],
    ) -> Resolution:
        """Turn evaluation details into a :class:`Resolution`, recording any error."""
        value = details.value
        flag_reason = _text(details.reason)
        code = _text(details.error_code)
        if details.error_code is None:
            if value in versions:
                return Resolution(
                    value,
                    value,
                    details.variant,
                    ServingReason.of(flag_reason),
                    None,
                    flag_reason,
                    None,
                    details.flag_metadata,
                )
            if not isinstance(value, str):
                cause = f"flag {flag_key!r} gave a {type(value).__name__}, not a version id string"
                return self._fail(model, default, cause, None, details)
            cause = (
                f"flag {flag_key!r} chose version {shown(value)}, which the registry does not know"
            )
            return self._fail(model, default, cause, shown(value, quote=False), details)
        message = shown(details.error_message or "", quote=False)
        cause = f"flag {flag_key!r} could not be evaluated ({code}: {message})"
        return self._fail(model, default, cause, None, details)

    def shadow(
        self,
        model: str,
        flag_key: str,
        serving: str,
        context: EvaluationContext,
        versions: Collection[str],
    ) -> str | None:
        """The version a shadow flag names beside ``serving``, or ``None``.

        Empty, equal to the serving version, unknown to the registry or not evaluable: ``None``
        (unknown ids and errors are logged once per cause). Pins do not apply to shadow flags.
        """
        tables = self._tables
        table = None if tables is None else tables.get(model)
        details, key = (None, None) if table is None else table.lookup(flag_key, "", context)
        if details is None:
            generation = 0 if table is None else table.generation
            details = self.source.ask_shadow(flag_key, context)
            if table is not None and (details.value == "" or details.value in versions):
                table.store(generation, flag_key, "", context, details, key)
        value = details.value
        if details.error_code is None and (not value or value == serving):
            return None
        if details.error_code is None and value in versions:
            return value
        if details.error_code is None:
            cause = (
                f"shadow flag {flag_key!r} chose version {shown(value)}, "
                "which the registry does not know"
            )
        else:
            message = shown(details.error_message or "", quote=False)
            code = _text(details.error_code)
            cause = f"shadow flag {flag_key!r} could not be evaluated ({code}: {message})"
        self._note(model, cause, "no shadow")
        return None

    def track(
        self,
        name: str,
        context: EvaluationContext | None,
        value: float,
        model: str,
        version: str,
    ) -> None:
        """Send an outcome to OpenFeature's tracking API; a provider that fails is ignored."""
        try:
            self.client.track(
                name,
                context,
                TrackingEventDetails(value=value, attributes={"model": model, "version": version}),
            )
        except Exception:
            logger.debug("tracking %r failed", name, exc_info=True)

    def errors(self, model: str) -> tuple[int, str | None]:
        """How many evaluations of ``model`` fell back to the default, and the last cause."""
        with self._lock:
            return self._errors.get(model, 0), self._last_error.get(model)

    def _fail(
        self,
        model: str,
        default: str,
        cause: str,
        requested: str | None,
        details: FlagEvaluationDetails[str],
    ) -> Resolution:
        with self._lock:
            self._errors[model] = self._errors.get(model, 0) + 1
            self._last_error[model] = cause
        self._note(model, cause, f"serving {default!r}")
        return Resolution(
            default,
            requested,
            details.variant,
            ServingReason.ERROR,
            cause,
            _text(details.reason),
            _text(details.error_code),
            details.flag_metadata,
        )

    def _note(self, model: str, cause: str, outcome: str) -> None:
        with self._lock:
            logged = self._logged.setdefault(model, set())
            if cause in logged or len(logged) > _LOGGED_CAUSES_PER_MODEL:
                return
            full = len(logged) == _LOGGED_CAUSES_PER_MODEL
            logged.add(cause)
        if full:
            logger.warning(
                "model %r: more than %d distinct flag problems; further ones are counted in "
                "status(), not logged",
                model,
                _LOGGED_CAUSES_PER_MODEL,
            )
            return
        logger.warning("model %r: %s; %s (logged once per cause)", model, cause, outcome)


def _text(value: object) -> str | None:
    """The string of an OpenFeature enum member (or of a plain string); ``None`` stays."""
    if value is None:
        return None
    return str(getattr(value, "value", value))
