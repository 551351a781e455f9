#!/usr/bin/env python3
"""Start (or reuse) a local MLflow tracking server on 127.0.0.1: SQLite store, local artifacts.

Usage::

    python services/mlflow/start.py [--dir DIR] [--port PORT] [--json] [--timeout SECONDS]

DIR defaults to ``$MODELFLAGS_MLFLOW_DIR`` or ``/tmp/modelflags-mlflow``; it holds the backend
store (``DIR/mlflow.db``), the artifact root (``DIR/artifacts``, what ``--default-artifact-root``
names, so clients read and write the files directly), the root of the server's artifact proxy
(``DIR/proxied``, for experiments whose artifact location is ``mlflow-artifacts:/...``), the
log, the pid and ``DIR/stack.json``. When the server recorded there runs and ``/health``
answers, it is reused. Otherwise ``python -m mlflow server`` (the full ``mlflow`` package) is
started detached, with one worker, no job runner and telemetry off, on a free port (the previous
one when it is free).

Only the standard library is used here.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger("modelflags.mlflow.service")

DEFAULT_DIR = Path("/tmp/modelflags-mlflow")
HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 180.0
_SERVER_NEEDS = ("mlflow.server", "flask", "sqlalchemy", "alembic")
ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # the server's background job runner (huey consumers) is not needed to serve the registry
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


class ServiceError(RuntimeError):
    """The MLflow server could not be started or stopped."""


def default_dir() -> Path:
    """The service folder: ``$MODELFLAGS_MLFLOW_DIR`` or ``/tmp/modelflags-mlflow``."""
    return Path(os.environ.get("MODELFLAGS_MLFLOW_DIR") or DEFAULT_DIR)


def missing_server() -> str | None:
    """Why ``mlflow server`` cannot run here (None when it can)."""
    if importlib.util.find_spec("mlflow") is None:
        return "mlflow is not installed (pip install mlflow: the server needs the full package)"
    missing = [name for name in _SERVER_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"mlflow server needs the full mlflow package ({', '.join(missing)} missing: only "
            "mlflow-skinny, the client, is installed?); pip install mlflow"
        )
    return None


@dataclass(frozen=True)
class ServicePaths:
    """Where one MLflow server keeps its files."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def store_uri(self) -> str:
        return f"sqlite:///{self.database}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def proxied(self) -> Path:
        return self.root / "proxied"

    @property
    def log(self) -> Path:
        return self.root / "mlflow.log"

    @property
    def pid(self) -> Path:
        return self.root / "mlflow.pid"

    @property
    def stack(self) -> Path:
        return self.root / "stack.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


def service_paths(root: str | os.PathLike[str] | None = None) -> ServicePaths:
    return ServicePaths(Path(root).resolve() if root is not None else default_dir().resolve())


# --- processes and the network ---------------------------------------------------------------


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it can be bound on 127.0.0.1, else a port the kernel picks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if preferred:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, preferred))
                return preferred
            except OSError:
                pass
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            other.bind((HOST, 0))
            return int(other.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def server_sessions(paths: ServicePaths) -> list[int]:
    """Session ids of live MLflow servers on this folder's store (normally one)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        command = _cmdline(pid)
        if "server" in command and paths.store_uri in command and pid_alive(pid):
            fields = _stat_fields(pid)
            if fields is not None:
                found.add(int(fields[3]))  # the session id
    return sorted(found)


def session_pids(session: int) -> list[int]:
    """Live processes of a session (the server and the workers it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[3]) == session and fields[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return sorted(pids)


def terminate_session(session: int, *, grace: float = 15.0) -> None:
    """SIGTERM every process of the session, SIGKILL after ``grace`` seconds; returns once none
    runs."""
    for pid in session_pids(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while session_pids(session):
        if time.monotonic() > deadline:
            LOG.warning("MLflow session %d ignored SIGTERM; killing it", session)
            for pid in session_pids(session):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while session_pids(session):
                if time.monotonic() > deadline:
                    raise ServiceError(f"MLflow session {session} still runs after SIGKILL")
                time.sleep(0.05)
            return
        time.sleep(0.05)


def _get(url: str, *, timeout: float = 2.0) -> int:
    """The HTTP status of a GET (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        kept = [
            line
            for line in path.read_text(errors="replace").splitlines()
            if "Deprecat" not in line and "build_environ" not in line
        ]
    except OSError:
        return "(no log)"
    return "\n".join(kept[-lines:])


@contextlib.contextmanager
def service_lock(paths: ServicePaths) -> Iterator[None]:
    """Serialise start and stop of one service folder across processes."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the service -----------------------------------------------------------------------------


def running_service(paths: ServicePaths) -> dict[str, Any] | None:
    """The recorded server when its session runs and ``/health`` answers 200."""
    info = _read_json(paths.stack)
    if info is None:
        return None
    pid, url = info.get("pid"), info.get("url")
    if not isinstance(pid, int) or not isinstance(url, str):
        return None
    if pid not in server_sessions(paths) or _get(f"{url}/health") != 200:
        return None
    return info


def _spawn(paths: ServicePaths, port: int) -> int:
    problem = missing_server()
    if problem is not None:
        raise ServiceError(problem)
    paths.artifacts.mkdir(parents=True, exist_ok=True)
    paths.proxied.mkdir(parents=True, exist_ok=True)
    paths.pid.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        paths.store_uri,
        "--default-artifact-root",
        str(paths.artifacts),
        "--artifacts-destination",
        str(paths.proxied),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    LOG.info("start MLflow on %s:%d (log: %s)", HOST, port, paths.log)
    with open(paths.log, "a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting on port {port}\n")
        log.flush()
        # setsid --fork: the server and its workers run in a session of their own (its id is the
        # server's pid), outlive this process and are re-parented to init. The shell writes its
        # own pid, which exec hands on to the server.
        launcher = 'echo $$ > "$0"; exec "$@"'
        try:
            subprocess.run(
                ["setsid", "--fork", "sh", "-c", launcher, str(paths.pid), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(paths.root),
                env={**os.environ, **ENVIRONMENT},
                check=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceError(f"could not launch {' '.join(command[:4])}: {exc}") from exc
    deadline = time.monotonic() + 10
    while True:
        try:
            return int(paths.pid.read_text().strip())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise ServiceError(f"MLflow did not start:\n{log_tail(paths.log)}") from None
            time.sleep(0.02)


def ensure_mlflow(
    root: str | os.PathLike[str] | None = None,
    *,
    port: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Reuse the healthy MLflow server of ``root`` or start one; returns ``stack.json`` with
    ``reused``."""
    paths = service_paths(root)
    with service_lock(paths):
        info = running_service(paths)
        if info is not None and port not in (None, info.get("port")):
            LOG.info("restarting MLflow to move it to port %d", port)
            terminate_session(int(info["pid"]))
            info = None
        if info is not None:
            return {**info, "reused": True}
        for stray in server_sessions(paths):  # its stack.json was lost, or it is not healthy
            LOG.warning(
                "stopping an MLflow server of %s that is not healthy (session %d)",
                paths.root,
                stray,
            )
            terminate_session(stray)
        recorded = (_read_json(paths.stack) or {}).get("port")
        chosen = free_port(port or (recorded if isinstance(recorded, int) else None))
        if port is not None and chosen != port:
            raise ServiceError(f"port {port} on {HOST} is taken")
        pid = _spawn(paths, chosen)
        url = f"http://{HOST}:{chosen}"
        deadline = time.monotonic() + timeout
        while _get(f"{url}/health") != 200:
            if not pid_alive(pid):
                raise ServiceError(f"MLflow exited while starting:\n{log_tail(paths.log)}")
            if time.monotonic() > deadline:
                terminate_session(pid)
                raise ServiceError(
                    f"MLflow did not answer /health within {timeout:.0f} s:\n{log_tail(paths.log)}"
                )
            time.sleep(0.1)
        info = {
            "url": url,
            "port": chosen,
            "pid": pid,
            "dir": str(paths.root),
            "backend_store_uri": paths.store_uri,
            "artifact_root": str(paths.artifacts),
            "artifacts_destination": str(paths.proxied),
            "log": str(paths.log),
        }
        _write(paths.stack, json.dumps(info, indent=2) + "\n")
        return {**info, "reused": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"service folder (default: {default_dir()})"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--json", action="store_true", help="print stack.json as JSON")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for /health"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        info = ensure_mlflow(args.dir, port=args.port, timeout=args.timeout)
    except ServiceError as exc:
        LOG.error("%s", exc)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key in ("url", "pid", "artifact_root", "dir"):
            print(f"{key + ':':<15}{info[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
