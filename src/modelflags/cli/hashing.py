"""``modelflags hash FILE...``: the sha256 and size of files, as registry snippets to paste.

A folder gets its folder digest (:mod:`modelflags.artifacts.folders`): what a pin of an MLflow
model version holds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelflags.cli.output import OK, USAGE, Output
from modelflags.errors import ModelFlagsError
from modelflags.registry.capture import file_digest

__all__ = ["add_commands"]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``hash`` to the command's subparsers."""
    parser = commands.add_parser(
        "hash",
        parents=[common],
        help="print the sha256 and size of files as registry snippets",
        description=(
            "Print each file's sha256 and size as the TOML lines of a registry version, ready to "
            "paste under [models.NAME.versions.ID]."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="artifact files (or folders)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, output: Output) -> int:
    """Hash each file; exit 2 when one cannot be read (the others are still printed)."""
    hashed: list[dict[str, Any]] = []
    errors: list[str] = []
    lines: list[str] = []
    for name in args.files:
        path = Path(name)
        if path.is_dir():
            try:
                digest, size = _folder(path)
            except ModelFlagsError as exc:
                errors.append(f"cannot hash folder {name}: {exc}")
                output.problem(errors[-1])
                continue
            hashed.append(
                {
                    "path": name,
                    "uri": path.as_posix(),
                    "sha256": digest,
                    "size": size,
                    "folder": True,
                }
            )
            if lines:
                lines.append("")
            lines += [f"# {name} (folder digest)", f'sha256 = "{digest}"', f"size = {size}"]
            continue
        try:
            digest, size = file_digest(path)
        except OSError as exc:
            errors.append(f"cannot read {name}: {exc.strerror or exc}")
            output.problem(errors[-1])
            continue
        hashed.append({"path": name, "uri": path.as_posix(), "sha256": digest, "size": size})
        if lines:
            lines.append("")
        lines += [f"# {name}", f'uri = "{_toml_string(path.as_posix())}"']
        lines += [f'sha256 = "{digest}"', f"size = {size}"]
    output.result({"files": hashed, "errors": errors}, lines)
    return USAGE if errors else OK


def _folder(path: Path) -> tuple[str, int]:
    from modelflags.artifacts.folders import folder_digest
    from modelflags.artifacts.mlflow import MLFLOW_BOOKKEEPING
    from modelflags.artifacts.mlflow_flavors import MLMODEL

    # an MLflow model folder: MLflow's own bookkeeping file is not part of it
    ignore = MLFLOW_BOOKKEEPING if (path / MLMODEL).is_file() else frozenset[str]()
    found = folder_digest(path, ignore=ignore)
    return found.sha256, found.size


def _toml_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
