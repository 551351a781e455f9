#!/usr/bin/env python3
"""Stop the local Unleash + PostgreSQL stack started by start.py.

Usage::

    python services/unleash/stop.py [--dir DIR] [--purge]

Unleash gets SIGTERM (its graceful shutdown), then PostgreSQL is stopped with
``pg_ctl stop -m fast``. Stopping a stack that does not run is not an error. ``--purge``
removes DIR afterwards (database, tokens, logs).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

LOG = logging.getLogger("modelflags.unleash.stack")
HERE = Path(__file__).resolve().parent


def _load_start() -> ModuleType:
    name = "modelflags_unleash_start"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "start.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / 'start.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_start = _load_start()


def stop_stack(
    root: str | os.PathLike[str] | None = None, *, purge: bool = False
) -> dict[str, bool]:
    """Stop the stack in ``root`` (idempotent); with ``purge`` remove the folder.

    Returns which parts were running: ``{"unleash": ..., "postgres": ..., "purged": ...}``.
    """
    paths = _start.stack_paths(root)
    result = {"unleash": False, "postgres": False, "purged": False}
    if not paths.root.exists():
        return result
    with _start.stack_lock(paths):
        result["unleash"] = _start.stop_unleash(paths)
        result["postgres"] = _start.stop_postgres(paths)
        for stale in (paths.stack, paths.unleash_pid):
            stale.unlink(missing_ok=True)
        if purge:
            shutil.rmtree(paths.root)
            result["purged"] = True
            LOG.info("removed %s", paths.root)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"stack folder (default: {_start.default_dir()})"
    )
    parser.add_argument("--purge", action="store_true", help="remove the stack folder too")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = stop_stack(args.dir, purge=args.purge)
    except _start.StackError as exc:
        LOG.error("%s", exc)
        return 1
    stopped = [name for name in ("unleash", "postgres") if result[name]]
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    if result["purged"]:
        print(f"removed: {_start.stack_paths(args.dir).root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
