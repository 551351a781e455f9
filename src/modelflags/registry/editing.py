"""Editing a registry file in place: locked, validated, atomic; TOML comments and layout kept.

:func:`edit_registry` takes ``.<name>.lock`` next to the registry file (``filelock``, so other
processes that edit it wait their turn), reads and validates the file, lets a function change
the parsed document, validates the result as a registry and replaces the file atomically (a
temporary file in the same folder, fsync, ``os.replace``): a reader sees the old registry or the
new one, never half of one. Nothing is written when the change or the validation raises, or when
the file changed meanwhile (an editor that does not take the lock); each of those is a
:class:`~modelflags.errors.RegistryError` that says so.

TOML registries are edited with ``tomlkit``, which keeps comments, order and layout; JSON
registries are rewritten with the indentation they had. YAML registries are not edited.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from modelflags.errors import RegistryError
from modelflags.registry.files import parse_registry_text, read_registry_text
from modelflags.registry.records import Stage
from modelflags.registry.schema import Registry

__all__ = ["Edit", "add_version", "edit_registry", "plain", "set_stage", "set_version_field"]

T = TypeVar("T")
_INDENT = re.compile(r"\n([ \t]+)\S")
_NEW_FILE_MODE = 0o644


@dataclass
class Edit:
    """What a change function receives: the parsed document to change in place (a tomlkit
    document for TOML, dicts for JSON), the registry as validated before the change, and the
    registry file. Set ``changed = False`` to leave the file as it is."""

    document: MutableMapping[str, Any]
    registry: Registry
    path: Path
    toml: bool
    changed: bool = True


def edit_registry(
    path: str | os.PathLike[str],
    change: Callable[[Edit], T],
    *,
    create: bool = False,
    lock_timeout: float = 10.0,
) -> T:
    """Apply ``change`` to the registry at ``path`` under its lock; return what ``change`` returns.

    With ``create``, a missing file is started empty (its folder must exist). A link is edited
    at its target and stays a link. Raises :class:`RegistryError` when the file cannot be read,
    is invalid before or after the change, is locked by another edit for ``lock_timeout``
    seconds, or changed on disk while being edited; ``change`` may raise it too. In every such
    case the file is left as it was.
    """
    import filelock

    file = Path(path)
    where = str(file)
    suffix = file.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise RegistryError(
            f"{where}: only TOML and JSON registries can be edited, not {suffix or 'this file'!r}",
            file=where,
        )
    target = Path(os.path.realpath(file))
    lock_path = target.with_name(f".{target.name}.lock")
    try:
        with filelock.FileLock(str(lock_path), timeout=lock_timeout):
            return _edit_locked(file, target, change, create=create)
    except filelock.Timeout as exc:
        raise RegistryError(
            f"{where}: another edit of this registry holds {lock_path} (waited "
            f"{lock_timeout:g} s); nothing was written",
            file=where,
        ) from exc
    except OSError as exc:
        raise RegistryError(f"{where}: cannot edit the registry: {exc}", file=where) from exc


def _edit_locked(file: Path, target: Path, change: Callable[[Edit], T], *, create: bool) -> T:
    where = str(file)
    toml = file.suffix.lower() == ".toml"
    exists = target.exists()
    if not exists and not create:
        raise RegistryError(f"{where}: registry file not found", file=where)
    before = read_registry_text(target) if exists else ""
    if exists:
        parse_registry_text(before, file)  # the checks of load_registry (duplicate JSON keys)
    document = _load_document(before, toml=toml, where=where)
    registry = _validate(_plain(document), file)
    edit = Edit(document=document, registry=registry, path=file, toml=toml)
    result = change(edit)
    if not edit.changed:
        return result
    text = _dump_document(document, toml=toml, indent=_indent_of(before))
    _validate(parse_registry_text(text, file), file)
    now = read_registry_text(target) if target.exists() else ""
    if now != before or target.exists() != exists:
        raise RegistryError(
            f"{where}: the registry changed on disk while it was being edited (by a program "
            "that does not take its lock); nothing was written: run the command again",
            file=where,
        )
    _replace(target, text)
    return result


def _load_document(text: str, *, toml: bool, where: str) -> MutableMapping[str, Any]:
    if toml:
        import tomlkit
        from tomlkit.exceptions import ParseError

        try:
            return tomlkit.parse(text)
        except ParseError as exc:
            raise RegistryError(f"{where}: invalid TOML: {exc}", file=where) from exc
    loaded = json.loads(text) if text.strip() else {}
    if not isinstance(loaded, dict):
        raise RegistryError(f"{where}: the registry must be an object at top level", file=where)
    return loaded


def _plain(document: MutableMapping[str, Any]) -> dict[str, Any]:
    unwrap = getattr(document, "unwrap", None)
    return dict(unwrap()) if callable(unwrap) else dict(document)


def _validate(data: Any, file: Path) -> Registry:
    return Registry.from_mapping(data, source=str(file), base_dir=file.parent.absolute())


def _dump_document(document: MutableMapping[str, Any], *, toml: bool, indent: str) -> str:
    if toml:
        import tomlkit

        return tomlkit.dumps(document).rstrip("\n") + "\n"
    return json.dumps(document, indent=indent, ensure_ascii=False, default=_json_default) + "\n"


def _json_default(value: object) -> str:
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return str(isoformat()).replace("+00:00", "Z")
    raise TypeError(f"cannot write {type(value).__name__} to a JSON registry")


def _indent_of(text: str) -> str:
    found = _INDENT.search(text)
    return found.group(1) if found else "  "


def _replace(target: Path, text: str) -> None:
    folder = target.parent
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else _NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # durability of the rename; not every system allows it
        folder_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)


def plain(value: Any) -> Any:
    """A dump of records as dicts, lists and scalars (tuples become lists, empty ones left out:
    TOML has no null, and an empty ``params = {}`` says nothing)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items() if not _empty(v)}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _empty(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple) and not value


# -- writing a version into the document ------------------------------------------------------


def add_version(
    edit: Edit,
    model: str,
    version: str,
    entry: dict[str, Any],
    *,
    new_model: bool,
    model_input: dict[str, Any] | None = None,
) -> None:
    """Write ``version``'s ``entry``; a new model gets it as ``default_version`` and
    ``model_input`` as its declared ``input``."""
    models = _child(edit, edit.document, "models")
    if new_model:
        table = _child(edit, models, model)
        table["default_version"] = version
        if model_input is not None:
            table["input"] = _toml(model_input) if edit.toml and _is_table(table) else model_input
    table = models[model]
    versions = _child(edit, table, "versions")
    versions[version] = _toml(entry) if edit.toml and _is_table(versions) else entry


def set_stage(edit: Edit, model: str, version: str, stage: Stage, record: dict[str, Any]) -> None:
    table = edit.document["models"][model]["versions"][version]
    table["stage"] = stage
    history = table.get("history")
    if history is None:
        table["history"] = _toml([record]) if edit.toml and _is_table(table) else [record]
    else:
        history.append(_toml(record) if edit.toml and _is_table(table) else record)


def _child(edit: Edit, parent: MutableMapping[str, Any], key: str) -> MutableMapping[str, Any]:
    if key not in parent:
        if edit.toml and _is_table(parent):
            import tomlkit

            parent[key] = tomlkit.table(is_super_table=True)
        else:
            parent[key] = {}
    child: MutableMapping[str, Any] = parent[key]
    return child


def _is_table(value: object) -> bool:
    """True for a TOML document or ``[table]``; False for an inline table (or JSON)."""
    from tomlkit.items import InlineTable

    return not isinstance(value, InlineTable)


def _toml(value: Any, *, inline: bool = True) -> Any:
    """Plain data as tomlkit items: a small flat table inline, larger ones as ``[tables]``,
    lists of tables as ``[[arrays of tables]]``, a blank line after each table without tables."""
    import tomlkit

    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        array = tomlkit.aot()
        for item in value:
            array.append(_toml(item, inline=False))
        return array
    if not isinstance(value, dict):
        return value
    flat = not any(isinstance(item, dict | list) for item in value.values())
    if inline and value and flat and len(value) <= 4:
        small = tomlkit.inline_table()
        small.update(value)
        return small
    table = tomlkit.table()
    items = [(key, _toml(item)) for key, item in value.items()]
    for key, item in sorted(items, key=lambda pair: _rank(pair[1])):
        table[key] = item
    if not any(_rank(item) >= 2 for _, item in items):
        table.add(tomlkit.nl())
    return table


def _rank(item: Any) -> int:
    """Scalars and inline tables first, then tables, then arrays of tables (TOML's order)."""
    from tomlkit.items import AoT, Table

    if isinstance(item, AoT):
        return 3
    if isinstance(item, Table):
        return 2
    return 1


def set_version_field(edit: Edit, model: str, version: str, key: str, value: Any) -> None:
    """Set one field of a registered version (a small flat table is written inline in TOML)."""
    table = edit.document["models"][model]["versions"][version]
    table[key] = _toml(value) if edit.toml and _is_table(table) else value
