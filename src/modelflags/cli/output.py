"""What every command shares: exit codes, ``--json`` output, error lines, sizes and plurals.

A command builds one JSON-able result and the lines a person reads; :class:`Output` prints the
one or the other. Errors and warnings go to stderr as ``modelflags: ...`` lines; with ``--json``
an error is also the result (``{"error": ...}``) so that tools always get a JSON document.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final, TextIO

__all__ = ["FINDINGS", "OK", "USAGE", "Output", "common_options", "plural", "size_text"]

OK: Final = 0
"""Done, nothing to report."""
FINDINGS: Final = 1
"""The command ran and found problems (invalid artifacts, failed downloads, ...)."""
USAGE: Final = 2
"""The command could not run as asked: bad arguments, unreadable input, a refused edit."""


def common_options() -> argparse.ArgumentParser:
    """The options every command takes (``--json``), as a parent parser."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json", action="store_true", help="print one JSON document instead of text"
    )
    return parent


class Output:
    """Prints a command's result as text or JSON. Not safe to share between threads."""

    def __init__(self, *, json_mode: bool, out: TextIO, err: TextIO) -> None:
        self.json_mode = json_mode
        self.out = out
        self.err = err

    def result(self, data: Mapping[str, Any], lines: Iterable[str] = ()) -> None:
        """Print ``data`` as JSON, or ``lines`` as text."""
        if self.json_mode:
            self.out.write(json.dumps(data, indent=2, default=str) + "\n")
        else:
            for line in lines:
                self.out.write(line + "\n")

    def warn(self, message: str) -> None:
        """A warning line on stderr."""
        self.err.write(f"modelflags: warning: {message}\n")

    def problem(self, message: str) -> None:
        """An error line on stderr about one item; the command goes on (and says so in its
        result)."""
        self.err.write(f"modelflags: {message}\n")

    def error(self, message: str, code: int = USAGE) -> int:
        """An error line on stderr (and the JSON result with ``--json``); returns ``code``."""
        self.err.write(f"modelflags: {message}\n")
        if self.json_mode:
            self.out.write(json.dumps({"error": message, "exit_code": code}, indent=2) + "\n")
        return code


def size_text(count: int) -> str:
    """``48.2 kB``: a byte count for people (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def plural(count: int, noun: str) -> str:
    """``1 version``, ``2 versions``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
