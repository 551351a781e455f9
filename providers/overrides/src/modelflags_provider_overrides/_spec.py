"""Validation, normalisation and evaluation of override definitions.

An override is either a plain value or a list of rules. A value is a string,
boolean, integer, float, table (dict with string keys) or array (list) of those.
A *rule list* is a non-empty list whose every element is a table; each table
must then be a rule: a required ``value`` and an optional ``when`` table that
maps context attribute names (or ``targeting_key``) to a scalar (equality) or a
non-empty array of scalars (membership).
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn, TypeAlias

from openfeature.evaluation_context import EvaluationContext
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from .errors import OverridesError, OverridesFileError

Scalar: TypeAlias = str | bool | int | float
FileSignature: TypeAlias = tuple[int, int, int, int]

TARGETING_KEY: Final = "targeting_key"
SOURCE_FILE: Final = "file"
SOURCE_PROGRAMMATIC: Final = "programmatic"
SUPPORTED_SUFFIXES: Final = (".toml", ".json")

_VALUE_KINDS = "a string, boolean, integer, float, table/object or array"
_CONDITION_KINDS = "a string, boolean, integer or float, or a non-empty array of those"


class _NestedValueError(Exception):
    """A value contains something that is not allowed, at ``where`` inside it."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.where = where
        self.reason = reason


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _checked_copy(value: object, where: str) -> object:
    """Return a deep copy of ``value`` after checking that it is a plain data value."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        return [_checked_copy(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        copied: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NestedValueError(where, f"table keys must be strings, not {_type_name(key)}")
            copied[key] = _checked_copy(item, f"{where}.{key}")
        return copied
    raise _NestedValueError(where, f"unsupported type {_type_name(value)}; expected {_VALUE_KINDS}")


def _validate_value(value: object) -> object:
    try:
        return _checked_copy(value, "")
    except _NestedValueError as exc:
        raise PydanticCustomError(
            "override_value", "{reason}", {"reason": exc.reason, "nested": exc.where}
        ) from None


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | bool | int | float)


def _validate_condition(value: object) -> object:
    if _is_scalar(value):
        return value
    if isinstance(value, list) and value and all(_is_scalar(item) for item in value):
        return list(value)
    raise PydanticCustomError(
        "override_condition",
        "must be {kinds} (got {got})",
        {"kinds": _CONDITION_KINDS, "got": _describe(value)},
    )


def _describe(value: object) -> str:
    if isinstance(value, list):
        return "an empty array" if not value else "an array containing non-scalar items"
    return _type_name(value)


_Value = Annotated[Any, AfterValidator(_validate_value)]
_Condition = Annotated[Any, AfterValidator(_validate_condition)]


class _RuleModel(BaseModel):
    """Shape of one rule in a rule list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: _Value
    when: Annotated[dict[str, _Condition] | None, Field(strict=True)] = None


_RULES_ADAPTER: Final = TypeAdapter(list[_RuleModel])
_VALUE_ADAPTER: Final = TypeAdapter(_Value)


def same_scalar(actual: object, expected: Scalar) -> bool:
    """Compare a context attribute with a condition value without bool/int confusion."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected
    if isinstance(actual, str) and isinstance(expected, str):
        return actual == expected
    return False


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule: a value and the conditions (all must hold) that select it."""

    value: object
    conditions: tuple[tuple[str, tuple[Scalar, ...]], ...]

    def matches(self, context: EvaluationContext | None) -> bool:
        """Tell whether every condition holds for ``context``."""
        for attribute, allowed in self.conditions:
            actual = _context_value(context, attribute)
            if actual is None or not any(same_scalar(actual, item) for item in allowed):
                return False
        return True


def _context_value(context: EvaluationContext | None, attribute: str) -> object:
    if context is None:
        return None
    if attribute == TARGETING_KEY and context.targeting_key is not None:
        return context.targeting_key
    return context.attributes.get(attribute)


@dataclass(frozen=True, slots=True)
class Override:
    """A validated, immutable override for one flag."""

    rules: tuple[Rule, ...]
    is_rule_list: bool
    source: str
    raw: object
    fingerprint: str

    def evaluate(self, context: EvaluationContext | None) -> tuple[object, str] | None:
        """Return ``(value, variant)`` of the first matching rule, or ``None``."""
        for index, rule in enumerate(self.rules):
            if rule.matches(context):
                variant = f"rule-{index}" if self.is_rule_list else "override"
                return rule.value, variant
        return None

    def describe(self) -> object:
        """Return a fresh copy of the definition in the file/``set()`` form."""
        return copy.deepcopy(self.raw)


def is_rule_list(raw: object) -> bool:
    """Tell whether ``raw`` is treated as a list of rules rather than a plain list value."""
    return isinstance(raw, list) and bool(raw) and all(isinstance(item, dict) for item in raw)


def _field_name(loc: tuple[int | str, ...], nested: str, rules: bool) -> str:
    name = "rules" if rules else "value"
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name + nested


def _raise_from_validation(
    exc: ValidationError, *, flag_key: str, rules: bool, path: str | None
) -> NoReturn:
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        context = error.get("ctx") or {}
        nested = context.get("nested", "")
        problems.append((_field_name(tuple(error["loc"]), str(nested), rules), error["msg"]))
    field, reason = problems[0]
    if len(problems) > 1:
        reason += "".join(f"; also field '{other}': {msg}" for other, msg in problems[1:])
    if path is None:
        raise OverridesError(reason, flag_key=flag_key, field=field) from None
    raise OverridesFileError(reason, path=path, flag_key=flag_key, field=field) from None


def build_override(flag_key: str, raw: object, *, source: str, path: str | None = None) -> Override:
    """Validate ``raw`` and compile it into an :class:`Override`.

    Raises:
        OverridesError: ``raw`` is invalid (``OverridesFileError`` when ``path`` is given).
    """
    if is_rule_list(raw):
        try:
            models = _RULES_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            _raise_from_validation(exc, flag_key=flag_key, rules=True, path=path)
        rules: list[Rule] = []
        described: list[dict[str, object]] = []
        for model in models:
            when = model.when or {}
            conditions = tuple(
                (name, tuple(cond) if isinstance(cond, list) else (cond,))
                for name, cond in when.items()
            )
            rules.append(Rule(value=model.value, conditions=conditions))
            entry: dict[str, object] = {"value": model.value}
            if model.when is not None:
                entry["when"] = dict(model.when)
            described.append(entry)
        raw_form: object = described
        kind = "rules"
        compiled = tuple(rules)
    else:
        try:
            value = _VALUE_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            _raise_from_validation(exc, flag_key=flag_key, rules=False, path=path)
        raw_form = value
        kind = "value"
        compiled = (Rule(value=value, conditions=()),)
    fingerprint = json.dumps({kind: raw_form}, sort_keys=True)
    return Override(
        rules=compiled,
        is_rule_list=kind == "rules",
        source=source,
        raw=raw_form,
        fingerprint=fingerprint,
    )


def build_overrides(
    raw: Mapping[str, object], *, source: str, path: str | None = None
) -> dict[str, Override]:
    """Validate and compile a whole mapping of flag key to override definition."""
    compiled: dict[str, Override] = {}
    for flag_key, definition in raw.items():
        if not isinstance(flag_key, str):
            reason = f"flag keys must be strings, not {_type_name(flag_key)}"
            if path is None:
                raise OverridesError(reason)
            raise OverridesFileError(reason, path=path)
        compiled[flag_key] = build_override(flag_key, definition, source=source, path=path)
    return compiled


def check_suffix(path: Path) -> None:
    """Reject file names whose suffix is not a supported format."""
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise OverridesFileError(
            f"unsupported file type '{path.suffix}'; the name must end in .toml or .json",
            path=str(path),
        )


def file_signature(path: Path) -> FileSignature | None:
    """Return what the watcher compares between polls, or ``None`` if it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_dev)


def load_file(path: Path) -> dict[str, Override]:
    """Read, parse and validate an override file.

    Raises:
        OverridesFileError: the file is missing, unreadable, unparsable or invalid.
    """
    where = str(path)
    check_suffix(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OverridesFileError("file does not exist", path=where) from None
    except OSError as exc:
        raise OverridesFileError(f"cannot read file: {exc.strerror or exc}", path=where) from None
    document: object
    if path.suffix.lower() == ".toml":
        try:
            document = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise OverridesFileError(f"file is not UTF-8: {exc.reason}", path=where) from None
        except tomllib.TOMLDecodeError as exc:
            raise OverridesFileError(f"invalid TOML: {exc}", path=where) from None
    else:
        try:
            document = json.loads(data)
        except UnicodeDecodeError as exc:
            raise OverridesFileError(f"file is not UTF-8: {exc.reason}", path=where) from None
        except json.JSONDecodeError as exc:
            raise OverridesFileError(f"invalid JSON: {exc}", path=where) from None
    if not isinstance(document, dict):
        raise OverridesFileError(
            "the top level must be an object mapping flag keys to overrides, "
            f"not {_type_name(document)}",
            path=where,
        )
    return build_overrides(document, source=SOURCE_FILE, path=where)
