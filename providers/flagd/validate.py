#!/usr/bin/env python3
"""Check flagd flag files before flagd reads them: the JSON schema, then what it cannot express.

Usage::

    python providers/flagd/validate.py canary.json [more.json ...]   # exit 1 on any problem

``flagd-schema.json`` (next to this file) describes the shape the Python flagd provider accepts.
Beyond it, this checks what flagd itself lets through and then serves wrongly at evaluation time:
a ``defaultVariant`` that is not a variant, a ``fractional`` bucket or an ``if`` result naming a
variant that does not exist, fractional weights adding up to zero, a ``$ref`` to a missing
evaluator. With ``versions`` (a model flag's registry versions) every string variant value must
also be a known version id, or the empty string (no shadow).

Needs ``jsonschema`` (``pip install jsonschema``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_PATH", "check_file", "problems", "schema"]

SCHEMA_PATH = Path(__file__).resolve().parent / "flagd-schema.json"


def schema() -> dict[str, Any]:
    """The JSON schema of flagd flag files."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def problems(document: Any, *, versions: Collection[str] | None = None) -> list[str]:
    """Every problem found in a parsed flag file (empty when it is fine)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema())
    found = [
        f"{_where(error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]
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
        if versions is not None:
            for variant, value in variants.items():
                if isinstance(value, str) and value and value not in versions:
                    found.append(
                        f"{where}.variants.{variant}: {value!r} is not a registered version "
                        f"(known: {', '.join(sorted(versions))})"
                    )
    for name, rule in evaluators.items():
        found += _check_rule(rule, evaluators, f"$evaluators.{name}")
    return found


def check_file(path: str | Path, *, versions: Collection[str] | None = None) -> list[str]:
    """The problems of the flag file at ``path`` (unreadable JSON is a problem too)."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return [f"cannot read {path}: {exc}"]
    return problems(document, versions=versions)


def _where(path: Any) -> str:
    return ".".join(str(part) for part in path) or "(document)"


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


def main(argv: list[str] | None = None) -> int:
    """Check each file named on the command line; 1 if any has a problem, 2 without files."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        found = check_file(path)
        for problem in found:
            print(f"{path}: {problem}")
        if found:
            failed += 1
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
