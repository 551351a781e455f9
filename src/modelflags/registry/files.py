"""Reading registry files: TOML, JSON (duplicate keys refused) and YAML (with PyYAML).

Relative artifact paths resolve against the folder of the registry file; every error is a
:class:`~modelflags.errors.RegistryError` naming the file (and, for bytes that are not UTF-8,
the byte offset and line; for a duplicate JSON key, the table that holds it).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelflags.errors import RegistryError
from modelflags.registry.schema import Registry

__all__ = ["as_registry", "load_registry", "parse_registry_text", "read_registry_text"]


def load_registry(path: str | os.PathLike[str]) -> Registry:
    """Read, validate and resolve a registry file (``.toml``, ``.json``, ``.yaml``/``.yml``)."""
    file = Path(path)
    data = parse_registry_text(read_registry_text(file), file)
    return Registry.from_mapping(data, source=str(file), base_dir=file.parent.absolute())


def read_registry_text(file: Path) -> str:
    """The text of a registry file; a missing, unreadable or non-UTF-8 file is a RegistryError."""
    where = str(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError as exc:
        raise RegistryError(f"{where}: registry file not found", file=where) from exc
    except OSError as exc:
        raise RegistryError(f"{where}: cannot read registry file: {exc}", file=where) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RegistryError(
            f"{where}: not valid UTF-8 at byte {exc.start} (line {line}): "
            f"{raw[exc.start : exc.end]!r} ({exc.reason}); save the file as UTF-8",
            file=where,
        ) from exc


def parse_registry_text(text: str, file: Path) -> Mapping[str, Any]:
    """Parse a registry's text by the file's suffix; the top level must be a table."""
    data = _parse(text, file)
    if not isinstance(data, Mapping):
        raise RegistryError(
            f"{file}: the registry must be a table/object at top level", file=str(file)
        )
    return data


def _parse(text: str, file: Path) -> Any:
    where = str(file)
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            document = json.loads(text, object_pairs_hook=_Object.from_pairs)
            _refuse_duplicates(document, [])
            return document
        if suffix in {".yaml", ".yml"}:
            try:
                import yaml
            except ImportError as exc:
                raise RegistryError(
                    f"{where}: YAML registries need PyYAML (pip install 'modelflags[yaml]')",
                    file=where,
                ) from exc
            return yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{where}: invalid TOML: {exc}", file=where) from exc
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{where}: invalid JSON: {exc}", file=where) from exc
    except _DuplicateKeyError as exc:
        path = ".".join(exc.path)
        model = exc.path[1] if len(exc.path) > 1 and exc.path[0] == "models" else None
        raise RegistryError(
            f"{where}: duplicate key {exc.key!r} in {path or 'the top-level object'}",
            file=where,
            model=model,
            field=".".join([*exc.path[2:], exc.key]) if model else None,
        ) from exc
    except RegistryError:
        raise
    except Exception as exc:  # YAML's errors have no common importable base without PyYAML
        raise RegistryError(f"{where}: cannot parse registry: {exc}", file=where) from exc
    raise RegistryError(
        f"{where}: unknown registry format {suffix!r} (use .toml, .json or .yaml)", file=where
    )


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str, path: list[str]) -> None:
        super().__init__(key)
        self.key = key
        self.path = path


class _Object(dict[str, Any]):
    """A JSON object that remembers the first key it saw twice (JSON keeps the last silently)."""

    duplicate: str | None = None

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _Object:
        result = cls()
        for key, value in pairs:
            if key in result and result.duplicate is None:
                result.duplicate = key
            result[key] = value
        return result


def _refuse_duplicates(value: Any, path: list[str]) -> None:
    """Raise for the first duplicate key, with the path of the object that holds it."""
    if isinstance(value, _Object):
        if value.duplicate is not None:
            raise _DuplicateKeyError(value.duplicate, path)
        for key, item in value.items():
            _refuse_duplicates(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_duplicates(item, [*path, str(index)])


def as_registry(registry: str | os.PathLike[str] | Registry | Mapping[str, Any]) -> Registry:
    """A :class:`Registry` from a registry, a mapping of the same shape, or a file path."""
    if isinstance(registry, Registry):
        return registry
    if isinstance(registry, Mapping):
        return Registry.from_mapping(registry, source="<mapping>")
    return load_registry(registry)
