"""Checking a flagd flag file, alone and against a registry, before flagd reads it.

:func:`problems` checks the structure the Python flagd provider reads (a hand-written check of
what matters to it: no JSON-schema library needed), then what flagd accepts and serves wrongly at
evaluation time: a ``defaultVariant`` that is not a variant, a ``fractional`` bucket or an ``if``
result naming a variant that does not exist, weights adding up to zero, a ``$ref`` to a missing
evaluator. :func:`registry_problems` adds the registry's view: every variant value of a model's
flag is a registered version of that model (the empty string too, for a shadow flag).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modelflags.registry import Registry

__all__ = ["check_file", "problems", "registry_problems"]

_TOP_KEYS = frozenset({"$schema", "flags", "$evaluators", "metadata"})
_FLAG_KEYS = frozenset({"state", "variants", "defaultVariant", "targeting", "metadata"})
_STATES = ("ENABLED", "DISABLED")


def check_file(path: str | Path, registry: Registry | None = None) -> list[str]:
    """The problems of the flag file at ``path`` (unreadable JSON is one too)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"cannot read {path}: {exc}"]
    found = problems(document)
    if registry is not None and not found:
        found += registry_problems(document, registry)
    return found


def problems(document: Any) -> list[str]:
    """Every problem of a parsed flag file, each with its place (empty when it is fine)."""
    found = _structure(document)
    if found:
        return found  # the cross-checks below assume the shape is right
    evaluators = document.get("$evaluators", {})
    for key, flag in document["flags"].items():
        where = f"flags.{key}"
        variants = flag["variants"]
        default = flag.get("defaultVariant")
        if default not in (None, "") and default not in variants:
            found.append(f"{where}.defaultVariant: {default!r} is not one of its variants")
        targeting = flag.get("targeting") or {}
        for path, name in _results(targeting, evaluators, f"{where}.targeting"):
            if name not in variants:
                found.append(f"{path}: {name!r} is not one of the variants of {key!r}")
        found += _check_rule(targeting, evaluators, f"{where}.targeting")
    for name, rule in evaluators.items():
        found += _check_rule(rule, evaluators, f"$evaluators.{name}")
    return found


def registry_problems(document: Mapping[str, Any], registry: Registry) -> list[str]:
    """Variant values of each model's flag (and shadow flag) that are not its versions."""
    found = []
    flags = document.get("flags", {})
    for name, model in sorted(registry.models.items()):
        keys = [(model.flag_key, False)]
        if model.shadow_flag:
            keys.append((model.shadow_flag, True))
        for key, shadow in keys:
            flag = flags.get(key)
            if not isinstance(flag, Mapping):
                continue
            for variant, value in flag.get("variants", {}).items():
                if shadow and value == "":
                    continue  # no shadow
                if not isinstance(value, str) or value not in model.versions:
                    found.append(
                        f"flags.{key}.variants.{variant}: {value!r} is not a registered version "
                        f"of model {name!r} (known: {', '.join(model.versions)})"
                    )
    return found


def _structure(document: Any) -> list[str]:
    """What the Python flagd provider needs the file to look like (it refuses it otherwise)."""
    if not isinstance(document, Mapping):
        return ["(document): not a JSON object"]
    found = [
        f"(document): unknown key {key!r} (use {', '.join(sorted(_TOP_KEYS))})"
        for key in document
        if key not in _TOP_KEYS
    ]
    flags = document.get("flags")
    if not isinstance(flags, Mapping) or not flags:
        return [*found, "flags: should be a non-empty object of flags"]
    evaluators = document.get("$evaluators", {})
    if not isinstance(evaluators, Mapping):
        found.append("$evaluators: should be an object of named rules")
    found += _metadata(document.get("metadata", {}), "metadata")
    for key, flag in flags.items():
        found += _flag(flag, f"flags.{key}")
    return found


def _flag(flag: Any, where: str) -> list[str]:
    if not isinstance(flag, Mapping):
        return [f"{where}: should be an object"]
    found = [
        f"{where}: unknown key {key!r} (the Python flagd provider refuses the whole file)"
        for key in flag
        if key not in _FLAG_KEYS
    ]
    if flag.get("state") not in _STATES:
        found.append(f"{where}.state: {flag.get('state')!r} is not one of {', '.join(_STATES)}")
    variants = flag.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        found.append(f"{where}.variants: should be non-empty (variant name -> value)")
    else:
        kinds = sorted({_kind(value) for value in variants.values()})
        if len(kinds) > 1:
            found.append(f"{where}.variants: values of more than one type ({', '.join(kinds)})")
    default = flag.get("defaultVariant")
    if default is not None and not isinstance(default, str):
        found.append(f"{where}.defaultVariant: should be a variant name or null")
    targeting = flag.get("targeting", {})
    if not isinstance(targeting, Mapping):
        found.append(f"{where}.targeting: should be an object (a JSON Logic rule, or empty)")
    else:
        found += _fractional_shapes(targeting, f"{where}.targeting")
    found += _metadata(flag.get("metadata", {}), f"{where}.metadata")
    return found


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def _metadata(value: Any, where: str) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{where}: should be an object"]
    return [
        f"{where}.{key}: should be a string, number or boolean"
        for key, item in value.items()
        if not isinstance(item, str | int | float | bool)
    ]


def _fractional_shapes(rule: Any, where: str) -> list[str]:
    """Buckets are ``[variant, weight]`` with a non-negative integer weight, or ``[variant]``."""
    found: list[str] = []
    if isinstance(rule, list):
        for index, item in enumerate(rule):
            found += _fractional_shapes(item, f"{where}[{index}]")
    elif isinstance(rule, Mapping):
        for operator, arguments in rule.items():
            path = f"{where}.{operator}"
            if operator != "fractional":
                found += _fractional_shapes(arguments, path)
                continue
            if not isinstance(arguments, list) or not arguments:
                found.append(f"{path}: should be a non-empty list of [variant, weight] buckets")
                continue
            for index, bucket in enumerate(arguments):
                if index == 0 and not isinstance(bucket, list):
                    continue  # the bucketing expression
                found += _bucket(bucket, f"{path}[{index}]")
    return found


def _bucket(bucket: Any, where: str) -> list[str]:
    if not isinstance(bucket, list) or not 1 <= len(bucket) <= 2:
        return [f"{where}: should be [variant, weight]"]
    if not isinstance(bucket[0], str) or not bucket[0]:
        return [f"{where}: the variant should be a non-empty string"]
    weight = bucket[1] if len(bucket) == 2 else 1
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        return [f"{where}: weight {weight!r} is not a non-negative integer"]
    return []


def _results(rule: Any, evaluators: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """(path, variant name) for every literal variant a rule can return."""
    if isinstance(rule, list):
        for index, item in enumerate(rule):
            yield from _results(item, evaluators, f"{path}[{index}]")
        return
    if not isinstance(rule, dict) or len(rule) != 1:
        return
    ((operator, arguments),) = rule.items()
    if operator == "fractional":
        for index, bucket in enumerate(arguments):
            if isinstance(bucket, list) and bucket and isinstance(bucket[0], str):
                yield f"{path}.fractional[{index}]", bucket[0]
    elif operator == "if" and isinstance(arguments, list):
        # [condition, then, condition, then, ..., else]: results are at odd indices and last.
        positions = list(range(1, len(arguments), 2))
        if len(arguments) % 2 == 1 and len(arguments) > 1:
            positions.append(len(arguments) - 1)
        for index in positions:
            result = arguments[index]
            if isinstance(result, str):
                yield f"{path}.if[{index}]", result
            else:
                yield from _results(result, evaluators, f"{path}.if[{index}]")
    elif operator == "$ref" and isinstance(arguments, str) and arguments in evaluators:
        yield from _results(evaluators[arguments], evaluators, f"$evaluators.{arguments}")


def _check_rule(rule: Any, evaluators: Mapping[str, Any], path: str) -> list[str]:
    """Fractional splits that can never pick a variant, and references to missing evaluators."""
    found: list[str] = []
    if isinstance(rule, list):
        for index, item in enumerate(rule):
            found += _check_rule(item, evaluators, f"{path}[{index}]")
        return found
    if not isinstance(rule, dict):
        return found
    for operator, arguments in rule.items():
        if operator == "$ref" and arguments not in evaluators:
            found.append(f"{path}: no evaluator named {arguments!r} in $evaluators")
        elif operator == "fractional":
            buckets = [b for b in arguments if isinstance(b, list)]
            if sum(b[1] if len(b) == 2 else 1 for b in buckets) <= 0:
                found.append(f"{path}.fractional: the weights add up to 0")
        else:
            found += _check_rule(arguments, evaluators, f"{path}.{operator}")
    return found
