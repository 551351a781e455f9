"""The :class:`OverridesProvider`: local overrides layered over any OpenFeature provider."""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, TypeVar, cast

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.hook import Hook
from openfeature.provider import AbstractProvider, FeatureProvider, Metadata
from openfeature.track import TrackingEventDetails

from ._spec import (
    SOURCE_FILE,
    SOURCE_PROGRAMMATIC,
    FileSignature,
    Override,
    build_override,
    build_overrides,
    check_suffix,
    file_signature,
    load_file,
)
from ._watcher import PollingThread
from .errors import OverridesFileError

__all__ = ["MAX_POLL_INTERVAL", "OVERRIDE_REASON", "OverridesProvider"]

logger = logging.getLogger(__name__)

OVERRIDE_REASON: Final = "OVERRIDE"
"""The ``reason`` of every resolution answered by an override."""

MAX_POLL_INTERVAL: Final = 1.0
"""Upper bound, in seconds, for the ``poll_interval`` of the file watcher."""

_T = TypeVar("_T")
_ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


class _TypeMismatch(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _TypeMismatch("a boolean")


def _as_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _TypeMismatch("a string")


def _as_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _TypeMismatch("an integer")


def _as_float(value: object) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise _TypeMismatch("a float")


def _as_object(value: object) -> _ObjectValue:
    if isinstance(value, dict | list):
        return cast(_ObjectValue, copy.deepcopy(value))
    raise _TypeMismatch("an object (table or array)")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Immutable view of all overrides; replaced as a whole on every change."""

    file: Mapping[str, Override]
    programmatic: Mapping[str, Override]
    effective: Mapping[str, Override]

    @classmethod
    def build(cls, file: Mapping[str, Override], programmatic: Mapping[str, Override]) -> _Snapshot:
        """Combine file and programmatic overrides; programmatic ones win per key."""
        return cls(
            file=MappingProxyType(dict(file)),
            programmatic=MappingProxyType(dict(programmatic)),
            effective=MappingProxyType({**file, **programmatic}),
        )


def _changed_keys(before: Mapping[str, Override], after: Mapping[str, Override]) -> list[str]:
    changed = []
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if old is None or new is None or old.fingerprint != new.fingerprint:
            changed.append(key)
    return sorted(changed)


class OverridesProvider(AbstractProvider):
    """An OpenFeature provider that answers from local overrides first.

    Overrides come from an optional TOML/JSON file (watched for changes) and from
    code (:meth:`set`, :meth:`clear`, the ``flags`` argument); code overrides win
    over file overrides for the same key. A flag without an override, or whose
    rules all fail to match, is resolved by ``delegate``. Without a delegate such
    a flag resolves to the caller's default with ``ErrorCode.FLAG_NOT_FOUND``.

    Answers from an override carry ``reason="OVERRIDE"``; ``variant`` is
    ``"override"`` for a plain value and ``"rule-<i>"`` (zero-based index) for
    the matching rule of a rule list; ``flag_metadata["override_source"]`` is
    ``"file"`` or ``"programmatic"``. An override whose value does not fit the
    requested type yields the default value with ``ErrorCode.TYPE_MISMATCH``
    (integers are accepted, and converted, for float flags).

    The delegate's lifecycle (``initialize``, ``shutdown``), hooks, ``track`` and
    events pass through. Events the delegate emits are re-emitted unchanged as
    events of this provider.

    The provider is safe to share between threads: all overrides live in one
    immutable snapshot that writers replace atomically under a lock, and
    evaluation reads the current snapshot without locking.

    Args:
        delegate: The provider answering flags that are not overridden.
        path: A ``.toml`` or ``.json`` override file. It is read (and validated)
            during construction; :meth:`initialize` starts watching it.
        flags: Initial programmatic overrides (same forms as :meth:`set`).
        poll_interval: Seconds between file checks, ``0 < poll_interval <= 1``.

    Raises:
        OverridesFileError: ``path`` is missing, unreadable, has an unsupported
            suffix or holds invalid overrides.
        OverridesError: ``flags`` holds an invalid override.
        ValueError: ``poll_interval`` is out of range.
    """

    def __init__(
        self,
        delegate: FeatureProvider | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        flags: Mapping[str, object] | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        super().__init__()
        if not 0 < poll_interval <= MAX_POLL_INTERVAL:
            raise ValueError(
                f"poll_interval must be > 0 and <= {MAX_POLL_INTERVAL} seconds, got {poll_interval}"
            )
        self._delegate = delegate
        self._poll_interval = float(poll_interval)
        self._path = Path(os.fspath(path)).absolute() if path is not None else None
        self._lock = threading.RLock()
        self._lifecycle_lock = threading.Lock()
        self._watcher: PollingThread | None = None
        self._forwarding = True
        self._delegate_healthy = True
        self._signature: FileSignature | None = None
        self._broken_reason: str | None = None

        programmatic = build_overrides(flags or {}, source=SOURCE_PROGRAMMATIC)
        file_overrides: dict[str, Override] = {}
        if self._path is not None:
            check_suffix(self._path)
            # stat before reading: an edit made in between is seen by the first poll
            self._signature = file_signature(self._path)
            file_overrides = load_file(self._path)
            logger.debug("Loaded %d override(s) from %s", len(file_overrides), self._path)
        self._snapshot = _Snapshot.build(file_overrides, programmatic)

    # ------------------------------------------------------------------ info

    @property
    def delegate(self) -> FeatureProvider | None:
        """The provider that answers flags without a matching override."""
        return self._delegate

    @property
    def path(self) -> Path | None:
        """The watched override file (absolute), if any."""
        return self._path

    @property
    def overrides(self) -> dict[str, object]:
        """A copy of the effective overrides: flag key to value or list of rules."""
        return {key: item.describe() for key, item in self._snapshot.effective.items()}

    def get_metadata(self) -> Metadata:
        """Name this provider after its delegate: ``OverridesProvider(<delegate name>)``."""
        if self._delegate is None:
            return Metadata(name="OverridesProvider")
        return Metadata(name=f"OverridesProvider({self._delegate.get_metadata().name})")

    def get_provider_hooks(self) -> list[Hook]:
        """Return the delegate's provider hooks."""
        return self._delegate.get_provider_hooks() if self._delegate is not None else []

    # ------------------------------------------------------------- lifecycle

    def attach(
        self,
        on_emit: Callable[[FeatureProvider, ProviderEvent, ProviderEventDetails], None],
    ) -> None:
        """Connect to the SDK's event dispatch and route the delegate's events through us."""
        super().attach(on_emit)
        if self._delegate is not None:
            self._delegate.attach(self._on_delegate_event)

    def detach(self) -> None:
        """Disconnect from the SDK's event dispatch (and the delegate from us)."""
        if self._delegate is not None:
            self._delegate.detach()
        super().detach()

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start watching the override file, then initialize the delegate."""
        with self._lifecycle_lock:
            self._forwarding = True
            if self._path is not None and self._watcher is None:
                self._watcher = PollingThread(
                    self._poll_file,
                    interval=self._poll_interval,
                    name=f"OverridesProvider-watcher[{self._path.name}]",
                )
                self._watcher.start()
                logger.debug("Watching %s every %.3fs", self._path, self._poll_interval)
        if self._delegate is not None:
            self._delegate.initialize(evaluation_context)

    def shutdown(self) -> None:
        """Stop the file watcher (waiting for its thread) and shut down the delegate."""
        with self._lifecycle_lock:
            self._forwarding = False
            watcher, self._watcher = self._watcher, None
        if watcher is not None and not watcher.stop(timeout=max(5.0, 10 * self._poll_interval)):
            logger.warning("Thread %s did not stop in time", watcher.name)
        if self._delegate is not None:
            self._delegate.shutdown()

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """Pass a tracking event to the delegate."""
        if self._delegate is not None:
            self._delegate.track(tracking_event_name, evaluation_context, tracking_event_details)

    # ---------------------------------------------------------------- events

    def emit(self, event: ProviderEvent, details: ProviderEventDetails) -> None:
        """Send an event to the SDK, if this provider is attached to it."""
        on_emit = getattr(self, "_on_emit", None)
        if on_emit is not None:
            on_emit(self, event, details)

    def _on_delegate_event(
        self, provider: FeatureProvider, event: ProviderEvent, details: ProviderEventDetails
    ) -> None:
        if not self._forwarding:
            logger.debug("Dropping %s from %s after shutdown", event.value, type(provider).__name__)
            return
        if event is ProviderEvent.PROVIDER_READY:
            self._delegate_healthy = True
        elif event in (ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_STALE):
            self._delegate_healthy = False
        logger.debug("Forwarding %s from the delegate", event.value)
        self.emit(event, details)

    # ------------------------------------------------------ programmatic API

    def set(self, key: str, value: object) -> None:
        """Override ``key`` with a value or a list of rules (wins over the file).

        Emits ``PROVIDER_CONFIGURATION_CHANGED`` with ``flags_changed=[key]`` when
        the effective override of ``key`` changes.

        Raises:
            OverridesError: ``value`` is not a valid override.
            TypeError: ``key`` is not a string.
        """
        if not isinstance(key, str):
            raise TypeError(f"flag key must be a string, not {type(key).__name__}")
        override = build_override(key, value, source=SOURCE_PROGRAMMATIC)
        with self._lock:
            programmatic = dict(self._snapshot.programmatic)
            programmatic[key] = override
            self._publish(self._snapshot.file, programmatic, origin=SOURCE_PROGRAMMATIC)

    def clear(self, key: str | None = None) -> None:
        """Remove the programmatic override of ``key``, or all of them when ``key`` is ``None``.

        File overrides are not affected; a file override for ``key`` applies again.
        Emits ``PROVIDER_CONFIGURATION_CHANGED`` with the keys whose effective
        override changed, if any.
        """
        with self._lock:
            if key is None:
                programmatic: dict[str, Override] = {}
            else:
                programmatic = dict(self._snapshot.programmatic)
                if programmatic.pop(key, None) is None:
                    return
            self._publish(self._snapshot.file, programmatic, origin=SOURCE_PROGRAMMATIC)

    def _publish(
        self,
        file: Mapping[str, Override],
        programmatic: Mapping[str, Override],
        *,
        origin: str,
        always_emit: bool = False,
    ) -> list[str]:
        """Swap in a new snapshot and announce the keys that changed. Caller holds the lock."""
        before = self._snapshot
        after = _Snapshot.build(file, programmatic)
        self._snapshot = after
        changed = _changed_keys(before.effective, after.effective)
        if changed or always_emit:
            metadata: dict[str, bool | str | int | float] = {"source": origin}
            if origin == SOURCE_FILE and self._path is not None:
                metadata["path"] = str(self._path)
            self.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=changed, metadata=metadata)
            )
        return changed

    # ----------------------------------------------------------- file watch

    def _poll_file(self) -> None:
        path = self._path
        if path is None:  # pragma: no cover - no watcher without a path
            return
        signature = file_signature(path)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            file_overrides = load_file(path)
        except OverridesFileError as exc:
            self._report_broken(exc)
            return
        with self._lock:
            recovered = self._broken_reason is not None
            self._broken_reason = None
            changed = self._publish(
                file_overrides,
                self._snapshot.programmatic,
                origin=SOURCE_FILE,
                always_emit=recovered,
            )
            if recovered:
                logger.info("Overrides file %s is valid again", path)
                if self._delegate_healthy:
                    self.emit_provider_ready(
                        ProviderEventDetails(
                            message=f"overrides file '{path}' is valid again",
                            metadata={"source": SOURCE_FILE, "path": str(path)},
                        )
                    )
        if changed:
            logger.info("Reloaded overrides file %s; changed flags: %s", path, ", ".join(changed))

    def _report_broken(self, exc: OverridesFileError) -> None:
        message = str(exc)
        with self._lock:
            if message == self._broken_reason:
                return
            self._broken_reason = message
            logger.warning("Keeping the last good overrides: %s", message)
            self.emit_provider_error(
                ProviderEventDetails(
                    message=f"{message} (keeping the last good overrides)",
                    error_code=ErrorCode.PARSE_ERROR,
                    metadata={"source": SOURCE_FILE, "path": str(exc.path)},
                )
            )

    # ------------------------------------------------------------ resolution

    def _answer(
        self,
        flag_key: str,
        default_value: _T,
        evaluation_context: EvaluationContext | None,
        convert: Callable[[object], _T],
    ) -> FlagResolutionDetails[_T] | None:
        override = self._snapshot.effective.get(flag_key)
        if override is None:
            return None
        hit = override.evaluate(evaluation_context)
        if hit is None:
            return None
        value, variant = hit
        metadata = {"override_source": override.source}
        try:
            converted = convert(value)
        except _TypeMismatch as exc:
            return FlagResolutionDetails(
                value=default_value,
                error_code=ErrorCode.TYPE_MISMATCH,
                error_message=(
                    f"override for flag '{flag_key}' is {type(value).__name__}, not {exc.expected}"
                ),
                reason=Reason.ERROR,
                variant=variant,
                flag_metadata=metadata,
            )
        return FlagResolutionDetails(
            value=converted, reason=OVERRIDE_REASON, variant=variant, flag_metadata=metadata
        )

    @staticmethod
    def _not_found(flag_key: str, default_value: _T) -> FlagResolutionDetails[_T]:
        return FlagResolutionDetails(
            value=default_value,
            error_code=ErrorCode.FLAG_NOT_FOUND,
            error_message=f"flag '{flag_key}' has no matching override and there is no delegate",
            reason=Reason.ERROR,
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """Resolve a boolean flag: override first, then the delegate."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_bool)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return self._delegate.resolve_boolean_details(flag_key, default_value, evaluation_context)

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """Resolve a boolean flag: override first, then the delegate's async method."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_bool)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return await self._delegate.resolve_boolean_details_async(
            flag_key, default_value, evaluation_context
        )

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """Resolve a string flag: override first, then the delegate."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_str)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return self._delegate.resolve_string_details(flag_key, default_value, evaluation_context)

    async def resolve_string_details_async(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """Resolve a string flag: override first, then the delegate's async method."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_str)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return await self._delegate.resolve_string_details_async(
            flag_key, default_value, evaluation_context
        )

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """Resolve an integer flag: override first, then the delegate."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_int)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return self._delegate.resolve_integer_details(flag_key, default_value, evaluation_context)

    async def resolve_integer_details_async(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """Resolve an integer flag: override first, then the delegate's async method."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_int)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return await self._delegate.resolve_integer_details_async(
            flag_key, default_value, evaluation_context
        )

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """Resolve a float flag: override first, then the delegate."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_float)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return self._delegate.resolve_float_details(flag_key, default_value, evaluation_context)

    async def resolve_float_details_async(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """Resolve a float flag: override first, then the delegate's async method."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_float)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return await self._delegate.resolve_float_details_async(
            flag_key, default_value, evaluation_context
        )

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: _ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[_ObjectValue]:
        """Resolve an object (table/array) flag: override first, then the delegate."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_object)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return self._delegate.resolve_object_details(flag_key, default_value, evaluation_context)

    async def resolve_object_details_async(
        self,
        flag_key: str,
        default_value: _ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[_ObjectValue]:
        """Resolve an object flag: override first, then the delegate's async method."""
        answer = self._answer(flag_key, default_value, evaluation_context, _as_object)
        if answer is not None:
            return answer
        if self._delegate is None:
            return self._not_found(flag_key, default_value)
        return await self._delegate.resolve_object_details_async(
            flag_key, default_value, evaluation_context
        )
