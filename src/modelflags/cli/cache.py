"""``modelflags cache ls`` and ``modelflags cache prune``: the remote-artifact cache.

The cache holds verified artifacts as ``<cache_dir>/sha256/<xx>/<digest>``. ``ls`` lists each
entry with its size, age and the registry versions that use it. ``prune`` removes the entries no
given registry references, and with ``--keep-archived N`` those used only by archived versions
beyond the N most recently archived of each model; ``--older-than DAYS`` spares entries written
more recently. An entry is removed only under its download lock
(``<cache_dir>/locks/<digest>.lock``, taken without waiting), so a download in progress is never
cut short: such an entry is skipped and reported. Symbolic links are never followed.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelflags.artifacts.remote import default_cache_dir
from modelflags.cli.output import FINDINGS, OK, USAGE, Output, plural, size_text
from modelflags.registry import Registry, VersionSpec, load_registry

__all__ = ["Entry", "Use", "add_commands", "plan_prune", "scan"]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_DAY = 86_400.0


@dataclass(frozen=True)
class Use:
    """One registry version that uses a cache entry. Immutable: safe to share."""

    registry: str
    model: str
    version: str
    stage: str
    archived_rank: int | None = None  # 0: the model's most recently archived version


@dataclass
class Entry:
    """One verified artifact in the cache, and who uses it. Not safe to share between threads."""

    digest: str
    path: Path
    size: int
    mtime: float
    uses: list[Use] = field(default_factory=list)


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``cache ls`` and ``cache prune`` to the command's subparsers."""
    cache = commands.add_parser(
        "cache",
        help="list or prune the artifact cache",
        description="List or prune the cache of downloaded artifacts.",
    )
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "ls",
        parents=[common],
        help="list cache entries and the registry versions that use them",
        description="List cache entries (size, age) and the registry versions that use each.",
    )
    _common(listing)
    listing.set_defaults(run=run_ls)
    prune = actions.add_parser(
        "prune",
        parents=[common],
        help="remove cache entries no given registry needs",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    _common(prune)
    prune.add_argument(
        "--keep-archived",
        type=int,
        metavar="N",
        help="keep the entries of only the N most recently archived versions of each model",
    )
    prune.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="only entries written DAYS days ago or more",
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    prune.set_defaults(run=run_prune)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", action="append", default=[], metavar="R", help="a registry (repeatable)"
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache folder (default: $MODELFLAGS_CACHE_DIR, else the user cache folder)",
    )


def scan(cache_dir: Path, registries: list[Registry]) -> list[Entry]:
    """The cache's entries (regular files named by their digest), with their uses."""
    entries: list[Entry] = []
    root = cache_dir / "sha256"
    for prefix in _scandir(root):
        if not prefix.is_dir(follow_symlinks=False):
            continue
        for item in _scandir(Path(prefix.path)):
            name = item.name
            if not (_DIGEST.fullmatch(name) and name[:2] == prefix.name):
                continue
            if not item.is_file(follow_symlinks=False):
                continue
            info = item.stat(follow_symlinks=False)
            entries.append(Entry(name, Path(item.path), info.st_size, info.st_mtime))
    uses = _uses(registries)
    for entry in entries:
        entry.uses = uses.get(entry.digest, [])
    return sorted(entries, key=lambda entry: entry.digest)


def plan_prune(
    entries: list[Entry], *, keep_archived: int | None, older_than: float | None, now: float
) -> list[tuple[Entry, bool, str]]:
    """(entry, remove?, why) for each entry."""
    plan = []
    for entry in entries:
        live = [use for use in entry.uses if use.stage != "archived"]
        if live:
            plan.append((entry, False, f"used by {_names(live)}"))
            continue
        if entry.uses:
            kept = [
                use
                for use in entry.uses
                if keep_archived is None or (use.archived_rank or 0) < keep_archived
            ]
            if kept:
                plan.append((entry, False, f"archived, kept: {_names(kept)}"))
                continue
            why = f"archived beyond the {keep_archived} most recent: {_names(entry.uses)}"
        else:
            why = "no given registry uses it"
        if older_than is not None and now - entry.mtime < older_than * _DAY:
            plan.append((entry, False, f"{why}, but written less than {older_than:g} days ago"))
            continue
        plan.append((entry, True, why))
    return plan


def run_ls(args: argparse.Namespace, output: Output) -> int:
    """List the cache."""
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    entries = scan(cache_dir, [load_registry(path) for path in args.registry])
    now = time.time()
    lines = [f"{cache_dir}: {plural(len(entries), 'entry')}, {size_text(_total(entries))}"]
    for entry in entries:
        used = _names(entry.uses) if entry.uses else ("-" if not args.registry else "unused")
        lines.append(
            f"  {entry.digest[:16]}  {size_text(entry.size):>9}  "
            f"{_age(now - entry.mtime):>5}  {used}"
        )
    output.result(
        {"cache_dir": str(cache_dir), "entries": [_entry_json(entry) for entry in entries]}, lines
    )
    return OK


def run_prune(args: argparse.Namespace, output: Output) -> int:
    """Prune the cache (or say what would go)."""
    if not args.registry and args.older_than is None:
        return output.error(
            "cache prune needs --registry R (keep what R uses) or --older-than DAYS", USAGE
        )
    if args.keep_archived is not None and args.keep_archived < 0:
        return output.error("--keep-archived must be 0 or more", USAGE)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    entries = scan(cache_dir, [load_registry(path) for path in args.registry])
    plan = plan_prune(
        entries, keep_archived=args.keep_archived, older_than=args.older_than, now=time.time()
    )
    removed: list[dict[str, Any]] = []
    busy: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for entry, remove, why in plan:
        record = {**_entry_json(entry), "why": why}
        if not remove:
            kept.append(record)
        elif args.dry_run or _remove(cache_dir, entry):
            removed.append(record)
        else:
            busy.append(record)
    verb = "would remove" if args.dry_run else "removed"
    lines = [
        f"{verb} {plural(len(removed), 'entry')} ({size_text(sum(r['size'] for r in removed))}) "
        f"from {cache_dir}; kept {len(kept)}"
    ]
    lines += [f"  {verb} {r['sha256'][:16]} ({size_text(r['size'])}): {r['why']}" for r in removed]
    lines += [f"  in use, skipped {r['sha256'][:16]}: a download holds its lock" for r in busy]
    output.result(
        {
            "cache_dir": str(cache_dir),
            "dry_run": args.dry_run,
            "removed": removed,
            "in_use": busy,
            "kept": kept,
        },
        lines,
    )
    return FINDINGS if busy else OK


def _remove(cache_dir: Path, entry: Entry) -> bool:
    """Delete ``entry`` under its download lock; False when a download holds it."""
    import filelock

    lock_path = cache_dir / "locks" / f"{entry.digest}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(str(lock_path), timeout=0):
            entry.path.unlink(missing_ok=True)
            (cache_dir / "partial" / f"{entry.digest}.partial").unlink(missing_ok=True)
    except filelock.Timeout:
        return False
    return True


def _uses(registries: list[Registry]) -> dict[str, list[Use]]:
    found: dict[str, list[Use]] = {}
    for registry in registries:
        for name, model in registry.models.items():
            archived = sorted(
                (v for v, spec in model.versions.items() if spec.stage == "archived"),
                key=lambda v: _archived_at(model.versions[v]),
                reverse=True,
            )
            for version, spec in model.versions.items():
                if spec.sha256 is None:
                    continue
                rank = archived.index(version) if version in archived else None
                use = Use(registry.source or "?", name, version, spec.stage, rank)
                found.setdefault(spec.sha256, []).append(use)
    return found


def _archived_at(spec: VersionSpec) -> datetime:
    """When the version was archived (else registered); versions without dates rank last."""
    moves = [entry.at for entry in spec.history if entry.stage == "archived"]
    if moves:
        return max(moves)
    if spec.lineage is not None and spec.lineage.registered_at is not None:
        return spec.lineage.registered_at
    return datetime.min.replace(tzinfo=UTC)


def _names(uses: list[Use]) -> str:
    return ", ".join(f"{use.model}/{use.version} ({use.stage})" for use in uses)


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "sha256": entry.digest,
        "path": str(entry.path),
        "size": entry.size,
        "mtime": entry.mtime,
        "used_by": [
            {"registry": u.registry, "model": u.model, "version": u.version, "stage": u.stage}
            for u in entry.uses
        ],
    }


def _total(entries: list[Entry]) -> int:
    return sum(entry.size for entry in entries)


def _age(seconds: float) -> str:
    if seconds >= _DAY:
        return f"{seconds / _DAY:.0f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f}h"
    return f"{max(seconds, 0) / 60:.0f}m"


def _scandir(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as found:
            return list(found)
    except (FileNotFoundError, NotADirectoryError):
        return []
