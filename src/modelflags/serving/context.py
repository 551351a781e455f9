"""The ``user`` argument of ``get_model`` becomes an OpenFeature ``EvaluationContext``.

Accepted: ``None``, an ``EvaluationContext``, a ``str`` or ``int`` (the targeting key), a
``Mapping``, a pydantic model or a dataclass. For mappings and objects the targeting key is the
first present of ``targeting_key``, ``targetingKey``, ``user_id``, ``id``, ``key``; the other
scalar fields (str, int, float, bool, datetime) become attributes. Nested values are left out:
flag rules match on scalars.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from openfeature.evaluation_context import EvaluationContext

__all__ = ["TARGETING_KEY_FIELDS", "to_context"]

TARGETING_KEY_FIELDS = ("targeting_key", "targetingKey", "user_id", "id", "key")
_SCALARS = (str, int, float, bool, datetime.datetime)
_EMPTY = EvaluationContext()


def to_context(user: object) -> EvaluationContext:
    """Convert a user object to an ``EvaluationContext`` (see the module docstring)."""
    if user is None:
        return _EMPTY
    if isinstance(user, EvaluationContext):
        return user
    if isinstance(user, bool):
        raise TypeError("a bool is not a user: pass a targeting key, a mapping or an object")
    if isinstance(user, str | int):
        return EvaluationContext(targeting_key=str(user))
    fields = _fields_of(user)
    if fields is None:
        raise TypeError(
            f"cannot build an evaluation context from {type(user).__name__}: pass None, an "
            "EvaluationContext, a str/int targeting key, a Mapping, a pydantic model or a dataclass"
        )
    targeting_key: str | None = None
    used: str | None = None
    for name in TARGETING_KEY_FIELDS:
        value = fields.get(name)
        if value is not None and isinstance(value, str | int) and not isinstance(value, bool):
            targeting_key, used = str(value), name
            break
    attributes = {
        str(name): value
        for name, value in fields.items()
        if name != used and isinstance(value, _SCALARS)
    }
    return EvaluationContext(targeting_key=targeting_key, attributes=attributes)


def _fields_of(user: object) -> Mapping[Any, Any] | None:
    if isinstance(user, Mapping):
        return user
    if dataclasses.is_dataclass(user) and not isinstance(user, type):
        return {f.name: getattr(user, f.name) for f in dataclasses.fields(user)}
    dump = getattr(user, "model_dump", None)  # pydantic v2 models, without importing pydantic
    if callable(dump) and not isinstance(user, type):
        result = dump()
        if isinstance(result, Mapping):
            return result
    return None
