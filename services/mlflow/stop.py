#!/usr/bin/env python3
"""Stop the local MLflow tracking server started by start.py.

Usage::

    python services/mlflow/stop.py [--dir DIR] [--purge]

Every process of every MLflow server on DIR's store (the server and its workers: one session)
gets SIGTERM (SIGKILL after 15 s), and this returns once none runs. Stopping a server that does
not run is not an error. ``--purge`` removes DIR afterwards (store, artifacts, log).
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

LOG = logging.getLogger("modelflags.mlflow.service")
HERE = Path(__file__).resolve().parent


def _load_start() -> ModuleType:
    name = "modelflags_mlflow_start"
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


def stop_mlflow(
    root: str | os.PathLike[str] | None = None, *, purge: bool = False
) -> dict[str, bool]:
    """Stop the MLflow server of ``root`` (idempotent); with ``purge`` remove the folder.

    Returns ``{"mlflow": <it was running>, "purged": <the folder was removed>}``.
    """
    paths = _start.service_paths(root)
    result = {"mlflow": False, "purged": False}
    if not paths.root.exists():
        return result
    with _start.service_lock(paths):
        info = _start._read_json(paths.stack) or {}
        sessions = set(_start.server_sessions(paths))
        recorded = info.get("pid")
        if isinstance(recorded, int) and _start.session_pids(recorded):
            sessions.add(recorded)
        for session in sorted(sessions):
            LOG.info("stop MLflow (session %d)", session)
            _start.terminate_session(session)
            result["mlflow"] = True
        for stale in (paths.stack, paths.pid):
            stale.unlink(missing_ok=True)
        if purge:
            shutil.rmtree(paths.root)
            result["purged"] = True
            LOG.info("removed %s", paths.root)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"service folder (default: {_start.default_dir()})"
    )
    parser.add_argument("--purge", action="store_true", help="remove the service folder too")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = stop_mlflow(args.dir, purge=args.purge)
    except _start.ServiceError as exc:
        LOG.error("%s", exc)
        return 1
    print(f"stopped: {'mlflow' if result['mlflow'] else 'nothing was running'}")
    if result["purged"]:
        print(f"removed: {_start.service_paths(args.dir).root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
