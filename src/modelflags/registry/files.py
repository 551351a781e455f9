"""Reading registry files: TOML, JSON (duplicate keys refused) and YAML (with PyYAML).

Relative artifact paths resolve against the folder of the registry file; every error is a
:class:`~modelflags.errors.RegistryError` naming the file.
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

__all__ = ["load_registry"]


def load_registry(path: str | os.PathLike[str]) -> Registry:
    """Read, validate and resolve a registry file (``.toml``, ``.json``, ``.yaml``/``.yml``)."""
    file = Path(path)
    where = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise RegistryError(f"{where}: registry file not found", file=where) from exc
    except OSError as exc:
        raise RegistryError(f"{where}: cannot read registry file: {exc}", file=where) from exc
    data = _parse(text, file)
    if not isinstance(data, Mapping):
        raise RegistryError(
            f"{where}: the registry must be a table/object at top level", file=where
        )
    return Registry.from_mapping(data, source=where, base_dir=file.parent.absolute())


def _parse(text: str, file: Path) -> Any:
    where = str(file)
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_no_duplicate_keys)
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
        raise RegistryError(f"{where}: duplicate key {exc.key!r}", file=where) from exc
    except RegistryError:
        raise
    except Exception as exc:  # YAML's errors have no common importable base without PyYAML
        raise RegistryError(f"{where}: cannot parse registry: {exc}", file=where) from exc
    raise RegistryError(
        f"{where}: unknown registry format {suffix!r} (use .toml, .json or .yaml)", file=where
    )


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result
