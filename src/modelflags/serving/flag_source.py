"""Where a flag's answer comes from when no pin and no kept answer gives it.

:class:`FlagSource` asks the override layer first (it answers the flags it knows, reason
``OVERRIDE``), then the OpenFeature client, within an optional time bound: a provider that takes
longer is answered with the default value and an error, never waited for. The asynchronous path
awaits the override layer's and the client's async APIs: it never calls a synchronous evaluation.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagResolutionDetails, Reason

from modelflags.serving.handle import ServingReason

__all__ = ["OVERRIDE", "FlagSource", "OverrideSource"]

OVERRIDE = ServingReason.OVERRIDE
"""The reason of an answer from an override file or a pin."""

_EVALUATION_WORKERS = 4


class OverrideSource(Protocol):
    """A layer that answers some flags locally (reason ``OVERRIDE``) and leaves the rest.

    The override-file provider (``modelflags-provider-overrides``) fits; the serving core reaches
    it only through this interface.
    """

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        """Its answer for ``flag_key``; reason ``OVERRIDE`` when it has one."""
        ...

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        """The same, awaitable."""
        ...

    def shutdown(self) -> None:
        """Stop watching its files."""
        ...


class FlagSource:
    """Asks the override layer, then the OpenFeature client, for a string flag's details.

    ``timeout`` bounds a synchronous evaluation (``None``: no bound, and no extra cost; a bound
    runs evaluations on up to four worker threads, made on first use; past eight evaluations the
    provider has not answered, the default answers at once). Safe to share between threads.
    """

    def __init__(
        self,
        client: OpenFeatureClient,
        *,
        overrides: OverrideSource | None = None,
        timeout: float | None = None,
    ) -> None:
        self.client = client
        self.overrides = overrides
        self.timeout = timeout
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._unanswered = 0

    def ask(
        self, flag_key: str, default: str, context: EvaluationContext, timeout: float | None
    ) -> FlagEvaluationDetails[str]:
        """The override layer's answer if it has one, else the client's (``timeout``: this
        call's bound, else the source's)."""
        overrides = self.overrides
        if overrides is not None:
            answer = overrides.resolve_string_details(flag_key, default, context)
            if answer.reason == OVERRIDE or answer.error_code is ErrorCode.TYPE_MISMATCH:
                return _details(flag_key, answer)
        bound = timeout if timeout is not None else self.timeout
        if bound is None:
            return self.client.get_string_details(flag_key, default, context)
        return self._bounded(flag_key, default, context, bound)

    async def ask_async(
        self, flag_key: str, default: str, context: EvaluationContext, timeout: float | None
    ) -> FlagEvaluationDetails[str]:
        """Like :meth:`ask`, awaiting the async APIs (the bound limits the wait)."""
        overrides = self.overrides
        if overrides is not None:
            answer = await overrides.resolve_string_details_async(flag_key, default, context)
            if answer.reason == OVERRIDE or answer.error_code is ErrorCode.TYPE_MISMATCH:
                return _details(flag_key, answer)
        bound = timeout if timeout is not None else self.timeout
        evaluation = self.client.get_string_details_async(flag_key, default, context)
        if bound is None:
            return await evaluation
        # Not asyncio.wait_for: the SDK's evaluation raises UnboundLocalError from its own
        # ``finally`` when it is cancelled (openfeature-sdk 0.10), which wait_for would pass on.
        task = asyncio.ensure_future(evaluation)
        try:
            await asyncio.wait((task,), timeout=bound)
        finally:
            if not task.done():
                task.cancel()
                task.add_done_callback(_forget)
        return task.result() if task.done() else _timed_out(flag_key, default, bound)

    def ask_shadow(self, flag_key: str, context: EvaluationContext) -> FlagEvaluationDetails[str]:
        """A shadow flag's details (default ``""``): an override, else the client, unbounded."""
        overrides = self.overrides
        if overrides is not None:
            answer = overrides.resolve_string_details(flag_key, "", context)
            if answer.reason == OVERRIDE:
                return _details(flag_key, answer)
        return self.client.get_string_details(flag_key, "", context)

    def _bounded(
        self, flag_key: str, default: str, context: EvaluationContext, bound: float
    ) -> FlagEvaluationDetails[str]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    _EVALUATION_WORKERS, thread_name_prefix="modelflags-evaluate"
                )
            executor = self._executor
            # Evaluations a provider has not answered wait in the executor's queue; past this
            # many, the default answers at once instead of queueing behind them without end.
            saturated = self._unanswered >= 2 * _EVALUATION_WORKERS
            if not saturated:
                self._unanswered += 1
        if saturated:
            return _timed_out(flag_key, default, bound, waiting=self._unanswered)
        future = executor.submit(self.client.get_string_details, flag_key, default, context)
        future.add_done_callback(self._answered)
        try:
            return future.result(bound)
        except FutureTimeout:
            return _timed_out(flag_key, default, bound)

    def _answered(self, future: object) -> None:
        with self._lock:
            self._unanswered -= 1

    def reset_after_fork(self) -> None:
        """In a child process just forked: a fresh lock, and no worker threads (bounded
        evaluations start new ones)."""
        self._lock = threading.Lock()
        self._executor = None
        self._unanswered = 0

    def close(self) -> None:
        """Stop the worker threads of bounded evaluations, if any were started."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _details(flag_key: str, answer: FlagResolutionDetails[str]) -> FlagEvaluationDetails[str]:
    return FlagEvaluationDetails(
        flag_key,
        answer.value,
        variant=answer.variant,
        flag_metadata=dict(answer.flag_metadata or {}),
        reason=answer.reason,
        error_code=answer.error_code,
        error_message=answer.error_message,
    )


def _forget(task: asyncio.Future[Any]) -> None:
    """Retrieve what a cancelled evaluation raised, so asyncio does not report it."""
    if not task.cancelled():
        task.exception()


def _timed_out(
    flag_key: str, default: str, bound: float, *, waiting: int = 0
) -> FlagEvaluationDetails[str]:
    message = (
        f"the flag provider has not answered {waiting} evaluations; not asked again until one "
        "returns"
        if waiting
        else f"the flag provider did not answer within {bound:g} s"
    )
    return FlagEvaluationDetails(
        flag_key, default, reason=Reason.ERROR, error_code=ErrorCode.GENERAL, error_message=message
    )
