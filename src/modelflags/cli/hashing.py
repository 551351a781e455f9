"""``modelflags hash FILE...``: the sha256 and size of files, as registry snippets to paste."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelflags.cli.output import OK, USAGE, Output
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
    parser.add_argument("files", nargs="+", metavar="FILE", help="artifact files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, output: Output) -> int:
    """Hash each file; exit 2 when one cannot be read (the others are still printed)."""
    hashed: list[dict[str, Any]] = []
    errors: list[str] = []
    lines: list[str] = []
    for name in args.files:
        path = Path(name)
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


def _toml_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
