"""Registry validation errors as people read them: the file, the model, the field, and for an
unknown field the name that was probably meant (``url`` -> "did you mean 'uri'?")."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from modelflags.errors import RegistryError

__all__ = ["registry_error", "suggest"]

#: Fields filled in by modelflags itself, never suggested to a person writing a registry.
_INTERNAL_FIELDS = frozenset({"name", "location", "source"})


def registry_error(
    exc: ValidationError, source: str | None, *, root: type[BaseModel] | None = None
) -> RegistryError:
    """A :class:`RegistryError` naming the file, model and field of each validation error.

    ``root`` is the model that was validated; with it, an unknown field is reported with the
    closest known field of the same table.
    """
    lines = []
    first_model: str | None = None
    first_field: str | None = None
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        model = loc[1] if len(loc) > 1 and loc[0] == "models" else None
        field = ".".join(loc[2:]) if model is not None else ".".join(loc)
        if first_model is None and first_field is None:
            first_model, first_field = model, field or None
        if error["type"] == "extra_forbidden":
            message = _unknown_field(error["loc"], root)
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        where = f"model {model!r}" if model else "registry"
        field_text = f", field {field!r}" if field else ""
        lines.append(f"{where}{field_text}: {message}")
    prefix = f"{source}: " if source else ""
    return RegistryError(
        prefix + "invalid registry: " + "; ".join(lines),
        file=source,
        model=first_model,
        field=first_field,
    )


def suggest(word: str, known: Sequence[str]) -> str | None:
    """The known word closest to ``word`` (difflib's ratio, at least 0.6), or None."""
    matches = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _unknown_field(loc: Sequence[int | str], root: type[BaseModel] | None) -> str:
    word = str(loc[-1])
    table = _model_at(root, loc[:-1]) if root is not None else None
    if table is None:
        return f"unknown field {word!r}"
    known = [name for name in table.model_fields if name not in _INTERNAL_FIELDS]
    guess = suggest(word, known)
    if guess is not None:
        return f"unknown field {word!r} (did you mean {guess!r}?)"
    return f"unknown field {word!r} (known: {', '.join(known)})"


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The pydantic model that validates the table at ``loc`` below ``root``, if one does."""
    current: Any = root
    for part in loc:
        model = _as_model(current)
        if model is not None:
            field = model.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
            continue
        args = [arg for arg in typing.get_args(_unwrap_optional(current)) if arg is not Ellipsis]
        if not args:
            return None
        current = args[-1]  # dict[str, X] -> X; list[X], tuple[X, ...] -> X
    return _as_model(current)


def _unwrap_optional(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _as_model(annotation: Any) -> type[BaseModel] | None:
    candidate = _unwrap_optional(annotation)
    if isinstance(candidate, type) and issubclass(candidate, BaseModel):
        return candidate
    return None
