"""``ServedModel``: the handle ``get_model`` returns.

It describes the decision (which version serves, what the flag asked, why) and runs inference
through the guard that owns the fallback policy: when a method raises on a version that is not the
last known good one, the same call is run on the last known good version and its result returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from openfeature.evaluation_context import EvaluationContext

__all__ = ["Guard", "ServedModel"]


class Guard(Protocol):
    """What runs a handle's inference calls with fallback (implemented by ``ModelFlags``)."""

    def invoke(
        self, handle: ServedModel, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``method`` of the handle's model with the fallback policy."""
        ...


class ServedModel:
    """A model version chosen for one request, with guarded inference.

    Attributes: ``name``; ``version`` (the version serving); ``requested_version`` (what the flag
    asked; equals ``version`` unless it fell back); ``fell_back``; ``reason`` (the OpenFeature
    reason, or ``"FALLBACK"``); ``variant``; ``shadow_version`` (the version mirrored in shadow, or
    ``None``); ``metadata`` (the version's lineage from the registry); ``model`` (the raw object);
    ``context`` (the evaluation context the decision was made for).

    ``predict``, ``predict_proba``, ``decision_function``, ``transform``, ``score_samples``,
    calling the handle, and any other method of the model run with fallback; other attributes are
    read from the model. A handle describes one decision and does not change after it is made;
    it is safe to share between threads when the model object itself is.
    """

    __slots__ = (
        "_guard",
        "context",
        "fell_back",
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
    reason: str | None
    variant: str | None
    shadow_version: str | None
    metadata: Mapping[str, Any]
    model: Any
    context: EvaluationContext | None

    def __init__(
        self,
        guard: Guard,
        name: str,
        version: str,
        requested_version: str,
        model: Any,
        metadata: Mapping[str, Any],
        *,
        reason: str | None,
        variant: str | None,
        fell_back: bool = False,
        shadow_version: str | None = None,
        context: EvaluationContext | None = None,
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

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        value = getattr(self.model, attribute)
        if not callable(value):
            return value
        return _BoundInference(self, attribute)

    def __repr__(self) -> str:
        fallback = f", requested={self.requested_version!r}" if self.fell_back else ""
        return (
            f"<ServedModel {self.name!r} version={self.version!r}{fallback} reason={self.reason!r}>"
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
