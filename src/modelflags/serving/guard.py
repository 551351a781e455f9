"""Guarded inference: a handle's call, and what happens when it raises.

An inference call runs on the handle's version. When it raises and that version is not the last
known good one (LKG), the same call runs on the LKG and its result is returned; the failing
version is quarantined. When the LKG raises too, the input is the caller's to see: the original
error is raised and nobody is penalised. A completed call proves its version, is recorded for the
guardrails, and is mirrored to the shadow version when the handle has one. Methods that change the
model (``fit``, ``partial_fit``, ``set_params``, ...) never fall back.

With an input gate (:mod:`~modelflags.serving.inputs`), the call's input is first checked against
the model's declared input, which raises :class:`~modelflags.errors.InputContractError` before the
model sees it (never falling back), and offered to the drift watch.
"""

from __future__ import annotations

import time
from typing import Any

from modelflags.errors import ModelFlagsError
from modelflags.serving.handle import MUTATING_PREFIXES, ServedModel
from modelflags.serving.inputs import InputGate
from modelflags.serving.shadow import ShadowRunner
from modelflags.serving.versions import VersionKeeper

__all__ = ["InferenceGuard"]


class InferenceGuard:
    """Runs handles' inference calls with fallback to the last known good version.

    Owned by the serving policy, which hands it to every handle it builds. ``inputs`` (set once
    when the instance is assembled) checks and samples each call's input. Safe to share between
    threads; it takes no lock of its own.
    """

    def __init__(self, keeper: VersionKeeper, shadow: ShadowRunner) -> None:
        self.keeper = keeper
        self.shadow = shadow
        self.inputs: InputGate | None = None
        self._health = keeper.health

    def invoke(
        self, handle: ServedModel, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``method`` on the handle's model; on failure, on the last known good version.

        Methods that change the model run on the handle's model only, without fallback.
        """
        if method.startswith(MUTATING_PREFIXES):
            return getattr(handle.model, method)(*args, **kwargs)
        name, version = handle.name, handle.version
        inputs = self.inputs
        if inputs is not None:
            inputs(name, version, method, args, kwargs)
        health = self._health
        if health.blocked(name, version) is not None:
            # Quarantined since this handle was made: do not fail (and be penalised) again.
            lkg, entry = self.keeper.lkg_entry(name)
            if lkg != version:
                return getattr(entry.value, method)(*args, **kwargs)
        shadow = handle.shadow_version
        oversight = self.keeper.oversight
        timed = shadow is not None or oversight is not None
        started = time.perf_counter() if timed else 0.0
        try:
            result = getattr(handle.model, method)(*args, **kwargs)
        except Exception as exc:
            return self._recover(handle, method, args, kwargs, exc, started)
        elapsed = time.perf_counter() - started if timed else 0.0
        if oversight is not None:
            # A handle that fell back counts as a call of the version the flag asked for that
            # this version never ran (quarantined, rolled back or loading): the failure that
            # quarantined it was counted when it happened.
            oversight.record_call(name, handle.requested_version, elapsed, False, handle.fell_back)
        if shadow is not None:
            if health.blocked(name, shadow) is None:
                self.shadow.submit(name, version, shadow, method, args, kwargs, result, elapsed)
            else:
                self.shadow.drop(name, version, shadow)
        if not health.is_proven(name, version):
            self.keeper.proved(name, version)
        return result

    def _recover(
        self,
        handle: ServedModel,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: Exception,
        started: float,
    ) -> Any:
        name, version = handle.name, handle.version
        oversight = self.keeper.oversight
        if version == self._health.lkg(name):
            if oversight is not None:
                # A handle the LKG answered in place of the flagged version (quarantined, rolled
                # back, loading) is a call that version never ran: the LKG's error is not its.
                elapsed = time.perf_counter() - started
                fell_back = handle.fell_back
                oversight.record_call(
                    name, handle.requested_version, elapsed, not fell_back, fell_back
                )
            raise error
        try:
            lkg, entry = self.keeper.lkg_entry(name)
        except ModelFlagsError:
            raise error from None
        lkg_failed = False
        try:
            result = getattr(entry.value, method)(*args, **kwargs)
        except Exception:
            lkg_failed = True
        if lkg_failed:
            # Both versions reject this call: the input is the caller's to see, nobody is
            # quarantined. The version did raise: it counts as its error, as an LKG call that
            # raises counts as the LKG's, so bad input weighs on both sides of a comparison.
            if oversight is not None:
                elapsed = time.perf_counter() - started
                oversight.record_call(name, handle.requested_version, elapsed, True, False)
            raise error
        if oversight is not None:
            elapsed = time.perf_counter() - started
            oversight.record_call(name, handle.requested_version, elapsed, True, True)
        cause = f"{method} raised {type(error).__name__}: {error}"
        self.keeper.failed(
            name, version, error, stage="inference", served=lkg, method=method, cause=cause
        )
        if not self._health.is_proven(name, lkg):
            self.keeper.proved(name, lkg)
        return result
