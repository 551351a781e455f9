"""Flag evaluation: which version does a flag choose for a context.

The OpenFeature client is asked for the model's string flag with the last known good version as
the default value. Provider errors, a missing flag, a value of the wrong type and a version id the
registry does not know all resolve to that default; they never raise. Each distinct cause is logged
once at WARNING and counted, so a broken flag cannot flood the logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import NamedTuple

from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from openfeature.provider import FeatureProvider

__all__ = ["Resolution", "Resolver"]

logger = logging.getLogger(__name__)

_MAX_REMEMBERED_CAUSES = 1024
OVERRIDE = "OVERRIDE"
"""The reason of an answer from an override file or a pin."""


class Resolution(NamedTuple):
    """The outcome of one flag evaluation.

    ``version`` is a version id the registry knows; ``requested`` is what the flag said (``None``
    when it said nothing usable); ``error`` describes why the default was used, if it was.
    """

    version: str
    requested: str | None
    variant: str | None
    reason: str | None
    error: str | None


class Resolver:
    """Evaluates string flags through an OpenFeature client.

    Safe to share between threads: the client is thread-safe and the record of logged causes is
    guarded by a lock taken only on the error path.
    """

    def __init__(
        self, client: OpenFeatureClient, *, overrides: FeatureProvider | None = None
    ) -> None:
        self.client = client
        self.overrides = overrides
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self._errors: dict[str, int] = {}
        self._last_error: dict[str, str] = {}

    def evaluate(
        self, flag_key: str, default: str, context: EvaluationContext
    ) -> FlagEvaluationDetails[str]:
        """The flag's details: from the override layer when it answers, else from the client."""
        overrides = self.overrides
        if overrides is not None:
            answer = overrides.resolve_string_details(flag_key, default, context)
            if answer.reason == OVERRIDE or answer.error_code is ErrorCode.TYPE_MISMATCH:
                return FlagEvaluationDetails(
                    flag_key,
                    answer.value,
                    variant=answer.variant,
                    reason=answer.reason,
                    error_code=answer.error_code,
                    error_message=answer.error_message,
                )
        return self.client.get_string_details(flag_key, default, context)

    async def resolve_async(
        self,
        model: str,
        flag_key: str,
        default: str,
        context: EvaluationContext,
        versions: Collection[str],
    ) -> Resolution:
        """Evaluate ``flag_key`` with the async API; the version is one of ``versions``."""
        if self.overrides is not None:
            details = self.evaluate(flag_key, default, context)  # local files: no I/O to await
        else:
            details = await self.client.get_string_details_async(flag_key, default, context)
        return self.interpret(model, flag_key, default, details, versions)

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
        reason = details.reason
        reason_text = reason.value if isinstance(reason, Reason) else reason
        if details.error_code is None:
            if value in versions:
                return Resolution(value, value, details.variant, reason_text, None)
            if not isinstance(value, str):
                cause = f"flag {flag_key!r} gave a {type(value).__name__}, not a version id string"
                return self._fail(model, flag_key, default, cause, None, details)
            cause = f"flag {flag_key!r} chose version {value!r}, which the registry does not know"
            return self._fail(model, flag_key, default, cause, value, details)
        code = getattr(details.error_code, "value", details.error_code)
        cause = f"flag {flag_key!r} could not be evaluated ({code}: {details.error_message or ''})"
        return self._fail(model, flag_key, default, cause, None, details)

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
        (unknown ids and errors are logged once per cause).
        """
        details = self.evaluate(flag_key, "", context)
        value = details.value
        if details.error_code is None and (not value or value == serving):
            return None
        if details.error_code is None and value in versions:
            return value
        if details.error_code is None:
            cause = (
                f"shadow flag {flag_key!r} chose version {value!r}, "
                "which the registry does not know"
            )
        else:
            code = getattr(details.error_code, "value", details.error_code)
            message = details.error_message or ""
            cause = f"shadow flag {flag_key!r} could not be evaluated ({code}: {message})"
        self._note(model, cause, "no shadow")
        return None

    def errors(self, model: str) -> tuple[int, str | None]:
        """How many evaluations of ``model`` fell back to the default, and the last cause."""
        with self._lock:
            return self._errors.get(model, 0), self._last_error.get(model)

    def _fail(
        self,
        model: str,
        flag_key: str,
        default: str,
        cause: str,
        requested: str | None,
        details: FlagEvaluationDetails[str],
    ) -> Resolution:
        with self._lock:
            self._errors[model] = self._errors.get(model, 0) + 1
            self._last_error[model] = cause
        self._note(model, cause, f"serving {default!r}")
        return Resolution(default, requested, details.variant, Reason.ERROR.value, cause)

    def _note(self, model: str, cause: str, outcome: str) -> None:
        key = (model, cause)
        with self._lock:
            first = key not in self._seen
            if first:
                if len(self._seen) >= _MAX_REMEMBERED_CAUSES:
                    self._seen.clear()
                self._seen.add(key)
        if first:
            logger.warning("model %r: %s; %s (logged once per cause)", model, cause, outcome)
