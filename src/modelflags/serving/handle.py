"""``ServedModel``: the handle ``get_model`` returns, and the serving reasons it carries.

A handle describes one decision (which version serves, what the flag asked, why) and runs
inference through the guard that owns the fallback policy: when an inference method raises on a
version that is not the last known good one, the same call runs on the last known good version
and its result is returned. Methods that change the model (``fit``, ``partial_fit``,
``set_params``, ...) never fall back: they run on the handle's own model, as asked.

For scikit-learn a handle behaves like the model it serves: ``is_classifier``,
``check_is_fitted``, scorers from ``get_scorer`` and ``clone`` see the model's tags, fitted state
and parameters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from openfeature.evaluation_context import EvaluationContext

__all__ = ["MUTATING_PREFIXES", "Guard", "ServedModel", "ServingReason"]


class ServingReason(StrEnum):
    """Why the serving version serves: the flag's own reason, or a modelflags decision.

    The first group are OpenFeature's reasons, used when the flag's choice serves as asked.
    The second are modelflags' own: ``OVERRIDE`` (a pin or an override file chose),
    ``FALLBACK`` (the version asked for failed or is quarantined), ``ROLLED_BACK`` (a guardrail
    or a person rolled it back), ``PREWARMING`` (it is loading after a flag change) and ``POLICY``
    (this process may not serve it). A reason a provider invents is ``UNKNOWN`` here; the raw
    value stays in :attr:`ServedModel.flag_reason`.
    """

    STATIC = "STATIC"
    DEFAULT = "DEFAULT"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    CACHED = "CACHED"
    DISABLED = "DISABLED"
    STALE = "STALE"
    UNKNOWN = "UNKNOWN"
    ERROR = "ERROR"
    OVERRIDE = "OVERRIDE"
    FALLBACK = "FALLBACK"
    ROLLED_BACK = "ROLLED_BACK"
    PREWARMING = "PREWARMING"
    POLICY = "POLICY"

    @classmethod
    def of(cls, flag_reason: object) -> ServingReason:
        """The serving reason for a flag's own reason (``UNKNOWN`` for one it does not know)."""
        return _BY_VALUE.get(flag_reason, cls.UNKNOWN)


_BY_VALUE: dict[object, ServingReason] = {reason.value: reason for reason in ServingReason}
_BY_VALUE[None] = ServingReason.UNKNOWN

MUTATING_PREFIXES = ("fit", "partial_fit", "set_", "reset", "update", "load", "train")
"""Methods whose name starts with one of these change the model: they never fall back."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Guard(Protocol):
    """What runs a handle's inference calls with fallback (the serving policy)."""

    def invoke(
        self, handle: ServedModel, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``method`` of the handle's model with the fallback policy."""
        ...


class ServedModel:
    """A model version chosen for one request, with guarded inference.

    Attributes: ``name``; ``version`` (the version serving); ``requested_version`` (what the flag
    asked; equals ``version`` unless it fell back); ``fell_back``; ``reason`` (a
    :class:`ServingReason`, equal to its string); ``variant``; ``shadow_version`` (the version
    mirrored in shadow, or ``None``); ``metadata`` (the serving version's lineage from the
    registry); ``model`` (the raw object); ``context`` (the evaluation context of the decision);
    ``flag_reason``, ``flag_error_code`` and ``flag_metadata`` (what the flag itself said, kept
    even when the handle fell back).

    ``predict``, ``predict_proba``, ``decision_function``, ``transform``, ``score_samples``,
    calling the handle, and any other method of the model run with fallback, except methods that
    change the model (names starting with ``fit``, ``partial_fit``, ``set_``, ...), which run on
    this handle's model only. ``apredict`` and the other ``a``-prefixed methods run the same
    inference on a worker thread, off the event loop. Other attributes are read from the model.
    A handle describes one decision and does not change after it is made; it is safe to share
    between threads when the model object itself is.
    """

    __slots__ = (
        "_guard",
        "context",
        "fell_back",
        "flag_error_code",
        "flag_metadata",
        "flag_reason",
        "metadata",
        "model",
        "name",
        "reason",
        "requested_version",
        "shadow_version",
        "variant",
        "version",
    )

    name: str
    version: str
    requested_version: str
    fell_back: bool
    reason: ServingReason
    variant: str | None
    shadow_version: str | None
    metadata: Mapping[str, Any]
    model: Any
    context: EvaluationContext | None
    flag_reason: str | None
    flag_error_code: str | None
    flag_metadata: Mapping[str, Any]

    def __init__(
        self,
        guard: Guard,
        name: str,
        version: str,
        requested_version: str,
        model: Any,
        metadata: Mapping[str, Any],
        *,
        reason: ServingReason,
        variant: str | None,
        fell_back: bool = False,
        shadow_version: str | None = None,
        context: EvaluationContext | None = None,
        flag_reason: str | None = None,
        flag_error_code: str | None = None,
        flag_metadata: Mapping[str, Any] = _EMPTY,
    ) -> None:
        self._guard = guard
        self.name = name
        self.version = version
        self.requested_version = requested_version
        self.model = model
        self.metadata = metadata
        self.reason = reason
        self.variant = variant
        self.fell_back = fell_back
        self.shadow_version = shadow_version
        self.context = context
        self.flag_reason = flag_reason
        self.flag_error_code = flag_error_code
        self.flag_metadata = flag_metadata

    # -- inference, with fallback ---------------------------------------------------------------

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """The model's ``predict``, with fallback."""
        return self._guard.invoke(self, "predict", args, kwargs)

    def predict_proba(self, *args: Any, **kwargs: Any) -> Any:
        """The model's ``predict_proba``, with fallback."""
        return self._guard.invoke(self, "predict_proba", args, kwargs)

    def decision_function(self, *args: Any, **kwargs: Any) -> Any:
        """The model's ``decision_function``, with fallback."""
        return self._guard.invoke(self, "decision_function", args, kwargs)

    def transform(self, *args: Any, **kwargs: Any) -> Any:
        """The model's ``transform``, with fallback."""
        return self._guard.invoke(self, "transform", args, kwargs)

    def score_samples(self, *args: Any, **kwargs: Any) -> Any:
        """The model's ``score_samples``, with fallback."""
        return self._guard.invoke(self, "score_samples", args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the model itself, with fallback."""
        return self._guard.invoke(self, "__call__", args, kwargs)

    # -- the same off the event loop ------------------------------------------------------------

    async def ainvoke(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run inference method ``method`` with fallback on a worker thread."""
        if method.startswith(MUTATING_PREFIXES):
            raise ValueError(f"{method!r} changes the model; call it directly, not off-loop")
        return await asyncio.to_thread(self._guard.invoke, self, method, args, kwargs)

    async def apredict(self, *args: Any, **kwargs: Any) -> Any:
        """``predict`` with fallback, on a worker thread."""
        return await self.ainvoke("predict", *args, **kwargs)

    async def apredict_proba(self, *args: Any, **kwargs: Any) -> Any:
        """``predict_proba`` with fallback, on a worker thread."""
        return await self.ainvoke("predict_proba", *args, **kwargs)

    async def adecision_function(self, *args: Any, **kwargs: Any) -> Any:
        """``decision_function`` with fallback, on a worker thread."""
        return await self.ainvoke("decision_function", *args, **kwargs)

    async def atransform(self, *args: Any, **kwargs: Any) -> Any:
        """``transform`` with fallback, on a worker thread."""
        return await self.ainvoke("transform", *args, **kwargs)

    async def ascore_samples(self, *args: Any, **kwargs: Any) -> Any:
        """``score_samples`` with fallback, on a worker thread."""
        return await self.ainvoke("score_samples", *args, **kwargs)

    # -- scikit-learn's view of the handle ------------------------------------------------------

    def __sklearn_tags__(self) -> Any:
        """The served model's scikit-learn tags (``is_classifier`` and scorers read them)."""
        tags = getattr(self.model, "__sklearn_tags__", None)
        if tags is None:
            raise AttributeError("__sklearn_tags__")
        return tags()

    def __sklearn_is_fitted__(self) -> bool:
        """Whether the served model is fitted (``check_is_fitted`` asks this)."""
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self.model)
        except NotFittedError:
            return False
        return True

    def __sklearn_clone__(self) -> Any:
        """An unfitted copy of the served model with the same parameters (``clone``)."""
        from sklearn.base import clone

        return clone(self.model)

    # -- everything else reads through ----------------------------------------------------------

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        value = getattr(self.model, attribute)
        if not callable(value) or attribute.startswith(MUTATING_PREFIXES):
            return value
        return _BoundInference(self, attribute)

    def __repr__(self) -> str:
        fallback = f", requested={self.requested_version!r}" if self.fell_back else ""
        return (
            f"<ServedModel {self.name!r} version={self.version!r}{fallback} "
            f"reason={str(self.reason)!r}>"
        )


class _BoundInference:
    """A model method reached through ``ServedModel.__getattr__``, run with fallback."""

    __slots__ = ("_handle", "_method")

    def __init__(self, handle: ServedModel, method: str) -> None:
        self._handle = handle
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._handle._guard.invoke(self._handle, self._method, args, kwargs)

    def __repr__(self) -> str:
        return f"<guarded {self._method} of {self._handle!r}>"
