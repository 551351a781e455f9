"""Reading the decision log back: its last lines, with a bounded read from the end of the file.

The log (:mod:`modelflags.telemetry.decision_log`) grows by one line per served decision, so
reading it whole to show the last fifty would cost more the longer the process runs. :func:`tail`
reads at most ``max_bytes`` from the end of the file, and of the newest rotated file
(``path.1``) when the current one holds too few lines, and parses only those lines.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["tail"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024
"""How much of the log's end is read at most, current and rotated file together."""
ACTIONS_MAX_BYTES = 1024 * 1024
"""How much is read at most for actions only: they are rare, and behind an action there may be
a whole queue of decisions written after it (thousands of lines under heavy traffic)."""
_LINE_GUESS = 512  # bytes per line assumed for a first, smaller read


def tail(
    path: str | os.PathLike[str],
    limit: int = 50,
    *,
    model: str | None = None,
    actions: bool = False,
    max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """The last ``limit`` entries of the decision log at ``path`` (of ``model`` only, when
    given), oldest first: decisions and actions as the JSON objects they were written as; with
    ``actions``, only the actions (rollbacks, releases, confirmations, dismissals), which a
    flood of decisions would otherwise push out of the last ``limit`` entries.

    Reads at most ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`, or
    :data:`ACTIONS_MAX_BYTES` for actions) from the end of ``path``, then of ``path.1`` (the
    newest rotated file) if more entries are wanted and the budget allows. A line cut by the
    bounded read, or one that is not a JSON object, is skipped; a missing file reads as empty.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, not {limit!r}")
    if max_bytes is None:
        max_bytes = ACTIONS_MAX_BYTES if actions else DEFAULT_MAX_BYTES
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, not {max_bytes!r}")
    newest = Path(path)
    entries: list[dict[str, Any]] = []
    budget = max_bytes
    for file in (newest, newest.with_name(f"{newest.name}.1")):
        wanted = limit - len(entries)
        size = min(budget, wanted * _LINE_GUESS)
        while True:  # a small read first, larger ones while too few entries are found
            data, whole, cut = _read_end(file, size)
            found = _entries(data, skip_first=cut, model=model, actions=actions, limit=wanted)
            if len(found) >= wanted or whole or size >= budget:
                break
            size = min(budget, size * 4)
        budget -= len(data)
        entries = found + entries
        if len(entries) >= limit or not whole or budget <= 0:
            break
    return entries[-limit:]


def _read_end(path: Path, budget: int) -> tuple[bytes, bool, bool]:
    """Up to ``budget`` bytes from the end of ``path``; whether that is the whole file, and
    whether its first line was cut by the bound."""
    if budget <= 0:
        return b"", False, False
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            start = max(0, size - budget)
            if start == 0:
                return file.read(size), True, False
            file.seek(start - 1)  # the byte before says whether a line starts at ``start``
            data = file.read(size - start + 1)
            return data[1:], False, data[:1] != b"\n"
    except FileNotFoundError:
        return b"", True, False
    except OSError as exc:
        logger.warning("decision log %s: cannot read: %s", path, exc)
        return b"", False, False


def _entries(
    data: bytes, *, skip_first: bool, model: str | None, actions: bool = False, limit: int
) -> list[dict[str, Any]]:
    """The last ``limit`` entries in ``data`` (of ``model``), oldest first, parsed from the end
    so that only those are parsed."""
    lines = data.split(b"\n")
    if skip_first:
        lines = lines[1:]  # cut by the bounded read
    entries: list[dict[str, Any]] = []
    for line in reversed(lines):
        if len(entries) >= limit:
            break
        if not line.strip():
            continue
        if model is not None and _quoted(model) not in line:
            continue  # cheap test before parsing: the model's name is in its lines
        if actions and b'"action":' not in line:
            continue  # the same for actions: decision lines have no such key
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(entry, dict)
            and (model is None or entry.get("model") == model)
            and (not actions or "action" in entry)
        ):
            entries.append(entry)
    entries.reverse()
    return entries


def _quoted(model: str) -> bytes:
    """``model`` as the log writes it inside a line (JSON, ASCII)."""
    return json.dumps(model, ensure_ascii=True).encode("ascii")
