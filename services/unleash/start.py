#!/usr/bin/env python3
"""Start (or reuse) a local Unleash 8 + PostgreSQL 15 stack on 127.0.0.1 for tests and CI.

Usage::

    python services/unleash/start.py [--dir DIR] [--json] [--timeout SECONDS]

DIR defaults to ``$MODELFLAGS_UNLEASH_DIR`` or ``/tmp/modelflags-unleash``. When the stack
recorded in ``DIR/stack.json`` is running and healthy it is reused. Otherwise every prerequisite
is checked before anything starts (all missing ones are named at once), PostgreSQL is initialised
(once) and started as the ``postgres`` user on a free port, and Unleash is started detached from
``server.js`` with two API tokens generated for this folder: an admin token (``*:*.<random>``) and
a backend token (``default:development.<random>``). When a later step fails, what this run started
is stopped again, so a failed start leaves no process behind.

Only the standard library is used, so this runs before any test dependency is installed.
Run ``install.sh`` first. ``MODELFLAGS_PG_BIN`` (PostgreSQL's programs) and
``MODELFLAGS_UNLEASH_NODE_DIR`` (the folder holding ``node_modules/unleash-server``) override where
the programs are looked for.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import json
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger("modelflags.unleash.stack")

HERE = Path(__file__).resolve().parent
SERVER_JS = HERE / "server.js"
INSTALL_SH = HERE / "install.sh"
DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_TOOLS = ("initdb", "pg_ctl", "psql", "postgres")
UNLEASH_MAJOR = "8"
MIN_NODE_MAJOR = 20
DEFAULT_DIR = Path("/tmp/modelflags-unleash")
HOST = "127.0.0.1"
PG_OS_USER = "postgres"
DB_NAME = "unleash"
DB_USER = "unleash"
DEFAULT_TIMEOUT = 90.0
# Unleash's documented default web UI login (created on a fresh database); not a secret.
UI_USERNAME = "admin"
UI_PASSWORD = "unleash4all"
# Environment variables read by unleash-server that must not leak into the test server.
_UNLEASH_ENV_PREFIXES = ("DATABASE_", "INIT_", "AUTH_", "HTTP_", "UNLEASH_")
_UNLEASH_ENV_NAMES = {"PORT", "BASE_URI_PATH", "IMPORT_FILE", "LOG_LEVEL"}


class StackError(RuntimeError):
    """The stack could not be started, checked or stopped."""


class MissingPrerequisites(StackError):
    """Programs the stack needs are not installed; nothing was started."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(
            f"cannot start the Unleash stack, not installed: {'; '.join(missing)} "
            f"(run: bash {INSTALL_SH}, as root)"
        )
        self.missing = missing


def default_dir() -> Path:
    """The stack folder: ``$MODELFLAGS_UNLEASH_DIR`` or ``/tmp/modelflags-unleash``."""
    return Path(os.environ.get("MODELFLAGS_UNLEASH_DIR") or DEFAULT_DIR)


def pg_bin() -> Path:
    """PostgreSQL's programs: ``$MODELFLAGS_PG_BIN`` or Debian's PostgreSQL 15 folder."""
    return Path(os.environ.get("MODELFLAGS_PG_BIN") or DEFAULT_PG_BIN)


def node_dir() -> Path:
    """The folder with ``node_modules/unleash-server``: ``$MODELFLAGS_UNLEASH_NODE_DIR`` or
    ``node/`` next to this script (where ``install.sh`` puts it)."""
    return Path(os.environ.get("MODELFLAGS_UNLEASH_NODE_DIR") or HERE / "node").resolve()


def unleash_package() -> Path:
    """The ``package.json`` of the installed unleash-server."""
    return node_dir() / "node_modules" / "unleash-server" / "package.json"


@dataclass(frozen=True)
class StackPaths:
    """Where a stack keeps its files."""

    root: Path

    @property
    def pg_root(self) -> Path:
        return self.root / "pg"

    @property
    def pg_data(self) -> Path:
        return self.pg_root / "data"

    @property
    def pg_socket(self) -> Path:
        return self.pg_root / "socket"

    @property
    def pg_log(self) -> Path:
        return self.pg_root / "postgresql.log"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def server_config(self) -> Path:
        return self.root / "server-config.json"

    @property
    def unleash_log(self) -> Path:
        return self.root / "unleash.log"

    @property
    def unleash_pid(self) -> Path:
        return self.root / "unleash.pid"

    @property
    def stack(self) -> Path:
        return self.root / "stack.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


def stack_paths(root: str | os.PathLike[str] | None = None) -> StackPaths:
    return StackPaths(Path(root).resolve() if root is not None else default_dir().resolve())


# --- small process / network helpers ---------------------------------------------------------


def _is_root() -> bool:
    return os.geteuid() == 0


def _pg_superuser() -> str:
    return PG_OS_USER if _is_root() else getpass.getuser()


def _as_pg_user(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as the postgres OS user when we are root (initdb refuses root)."""
    if _is_root():
        return ["runuser", "-u", PG_OS_USER, "--", *cmd]
    return cmd


def _run(
    cmd: list[str], *, input_text: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    LOG.debug("run: %s", shlex.join(cmd))
    try:
        proc = subprocess.run(
            cmd,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{shlex.join(cmd)} failed: {exc}") from exc
    if proc.returncode != 0:
        raise StackError(
            f"{shlex.join(cmd)} exited with {proc.returncode}:\n{proc.stderr.strip()}"
            f"\n{proc.stdout.strip()}".rstrip()
        )
    return proc


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it can be bound on 127.0.0.1, else a port the kernel picks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if preferred:
            # Like the servers themselves: a port whose old connections linger in TIME_WAIT
            # is free for listening.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, preferred))
                return preferred
            except OSError:
                pass
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            other.bind((HOST, 0))
            return int(other.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def http_status(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 2.0) -> int:
    """HTTP status of a GET (0 when nothing answers)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
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


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def stack_lock(paths: StackPaths) -> Iterator[None]:
    """Serialise start/stop of one stack folder across processes."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- secrets -------------------------------------------------------------------------------------


def _load_or_create_secrets(paths: StackPaths) -> dict[str, str]:
    """Tokens and passwords of this stack folder, generated once.

    Unleash only creates ``initApiTokens`` on an empty database, so the tokens must survive
    restarts of the same folder.
    """
    existing = _read_json(paths.secrets)
    keys = ("admin_token", "client_token", "db_password", "session_secret")
    if existing is not None and all(isinstance(existing.get(k), str) for k in keys):
        return {k: str(existing[k]) for k in keys}
    if (paths.pg_data / "PG_VERSION").exists():
        raise StackError(
            f"{paths.pg_data} exists but {paths.secrets} is missing or broken; "
            f"remove the folder with: python {HERE / 'stop.py'} --dir {paths.root} --purge"
        )
    created = {
        # Admin tokens must cover all projects and all environments.
        "admin_token": f"*:*.{secrets.token_hex(24)}",
        # Backend (server-side SDK) tokens are bound to one project and one environment.
        "client_token": f"default:development.{secrets.token_hex(24)}",
        "db_password": secrets.token_hex(16),
        "session_secret": secrets.token_hex(24),
    }
    _write_private(paths.secrets, json.dumps(created, indent=2) + "\n")
    return created


# --- PostgreSQL ------------------------------------------------------------------------------


def postgres_status(paths: StackPaths) -> tuple[int, int] | None:
    """(pid, port) of the running postmaster of this folder, or None."""
    pid_file = paths.pg_data / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    if pid_alive(pid) and "postgres" in _cmdline(pid):
        return pid, port
    return None


# --- prerequisites ---------------------------------------------------------------------------


def _node_major(node: str) -> int | None:
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout.strip()
        return int(version.lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def missing_prerequisites() -> list[str]:
    """Everything the stack needs that is not installed (empty when all is there).

    Checked before anything is started, so a machine without PostgreSQL, Node or unleash-server
    gets one message naming all of them and no half-started stack.
    """
    missing: list[str] = []
    pg = pg_bin()
    absent = [tool for tool in PG_TOOLS if not (pg / tool).exists()]
    if absent:
        missing.append(f"PostgreSQL 15 ({', '.join(absent)} not in {pg})")
    if _is_root():
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            missing.append(f"the {PG_OS_USER!r} OS user (created by Debian's postgresql package)")
        if shutil.which("runuser") is None:
            missing.append("runuser (util-linux) on PATH")
    if shutil.which("setsid") is None:
        missing.append("setsid (util-linux) on PATH")
    node = shutil.which("node")
    if node is None:
        missing.append(f"node (Node {MIN_NODE_MAJOR} or newer) on PATH")
    else:
        major = _node_major(node)
        if major is None or major < MIN_NODE_MAJOR:
            missing.append(f"Node {MIN_NODE_MAJOR} or newer ({node} is {major or 'unknown'})")
    package = unleash_package()
    version = str((_read_json(package) or {}).get("version", ""))
    if not version.startswith(f"{UNLEASH_MAJOR}."):
        found = f"found {version}" if version else "not found"
        missing.append(f"unleash-server {UNLEASH_MAJOR}.x in {package.parents[2]} ({found})")
    if not SERVER_JS.exists():
        missing.append(f"{SERVER_JS}")
    return missing


def _prepare_pg_dirs(paths: StackPaths) -> None:
    paths.pg_root.mkdir(parents=True, exist_ok=True)
    paths.pg_socket.mkdir(exist_ok=True)
    if _is_root():
        for path in (paths.pg_root, paths.pg_socket):
            shutil.chown(path, PG_OS_USER, PG_OS_USER)
        probe = subprocess.run(
            _as_pg_user(["test", "-w", str(paths.pg_root), "-a", "-x", str(paths.pg_root)]),
            capture_output=True,
            check=False,
        )
        if probe.returncode != 0:
            raise StackError(
                f"the {PG_OS_USER} user cannot write {paths.pg_root}: every parent folder of "
                f"{paths.root} must be searchable by others (choose a folder under /tmp)"
            )
    paths.pg_root.chmod(0o700)


def _initdb(paths: StackPaths) -> None:
    if (paths.pg_data / "PG_VERSION").exists():
        return
    if paths.pg_data.exists():
        shutil.rmtree(paths.pg_data)  # left over from an interrupted initdb
    LOG.info("initdb %s", paths.pg_data)
    _run(
        _as_pg_user(
            [
                str(pg_bin() / "initdb"),
                "-D",
                str(paths.pg_data),
                "-U",
                _pg_superuser(),
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]
        ),
        timeout=180,
    )


def _pg_ctl_start(paths: StackPaths, port: int) -> None:
    server_options = " ".join(
        [
            f"-p {port}",
            "-c listen_addresses=" + HOST,
            "-k " + shlex.quote(str(paths.pg_socket)),
            # A throw-away test database: durability is not needed, speed is.
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=50",
        ]
    )
    _run(
        _as_pg_user(
            [
                str(pg_bin() / "pg_ctl"),
                "-D",
                str(paths.pg_data),
                "-l",
                str(paths.pg_log),
                "-w",
                "-t",
                "60",
                "-o",
                server_options,
                "start",
            ]
        ),
        timeout=90,
    )


def _psql(paths: StackPaths, port: int, sql: str, database: str = "postgres") -> str:
    cmd = _as_pg_user(
        [
            str(pg_bin() / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(paths.pg_socket),
            "-p",
            str(port),
            "-U",
            _pg_superuser(),
            "-d",
            database,
        ]
    )
    return _run(cmd, input_text=sql, timeout=60).stdout.strip()


def _ensure_database(paths: StackPaths, port: int, password: str) -> None:
    if _psql(paths, port, f"SELECT 1 FROM pg_roles WHERE rolname = '{DB_USER}';") != "1":
        LOG.info("create role %s", DB_USER)
        _psql(paths, port, f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{password}';")
    if _psql(paths, port, f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}';") != "1":
        LOG.info("create database %s", DB_NAME)
        _psql(paths, port, f"CREATE DATABASE {DB_NAME} OWNER {DB_USER};")


def start_postgres(paths: StackPaths) -> tuple[int, int]:
    """Initialise this folder's PostgreSQL if needed and start it; return (pid, port)."""
    _prepare_pg_dirs(paths)
    _initdb(paths)
    last_error: StackError | None = None
    previous_db = (_read_json(paths.server_config) or {}).get("db")
    preferred = previous_db.get("port") if isinstance(previous_db, dict) else None
    preferred = preferred if isinstance(preferred, int) else None
    for attempt in range(3):
        # Keep the port of the last run when it is free, so restarts keep their address.
        port = free_port(preferred if attempt == 0 else None)
        LOG.info("start PostgreSQL on %s:%d", HOST, port)
        try:
            _pg_ctl_start(paths, port)
        except StackError as exc:  # e.g. the port was taken in between
            last_error = exc
            LOG.warning("PostgreSQL did not start: %s", exc)
            stop_postgres(paths)  # pg_ctl may have given up on a server that started late
            continue
        status = postgres_status(paths)
        if status is not None:
            return status
    raise StackError(f"PostgreSQL did not start: {last_error}\n{_log_tail(paths.pg_log)}")


def stop_postgres(paths: StackPaths) -> bool:
    """Stop this folder's PostgreSQL (``pg_ctl stop -m fast``); False when it was not running."""
    status = postgres_status(paths)
    if status is None:
        return False
    pid = status[0]
    LOG.info("stop PostgreSQL (pid %d)", pid)
    try:
        _run(
            _as_pg_user(
                [
                    str(pg_bin() / "pg_ctl"),
                    "-D",
                    str(paths.pg_data),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ]
            ),
            timeout=90,
        )
    except StackError as exc:
        LOG.warning("pg_ctl stop failed (%s); sending SIGTERM", exc)
        terminate(pid, grace=30)
    return True


# --- Unleash ---------------------------------------------------------------------------------


def unleash_status(paths: StackPaths) -> int | None:
    """Pid of this folder's running Unleash server, or None."""
    try:
        pid = int(paths.unleash_pid.read_text().strip())
    except (OSError, ValueError):
        return None
    cmdline = _cmdline(pid)
    if pid_alive(pid) and SERVER_JS.name in cmdline and str(paths.server_config) in cmdline:
        return pid
    return None


def stop_unleash(paths: StackPaths, *, grace: float = 20.0) -> bool:
    """Stop this folder's Unleash server; False when it was not running."""
    pid = unleash_status(paths)
    if pid is None:
        return False
    LOG.info("stop Unleash (pid %d)", pid)
    terminate(pid, grace=grace)
    return True


def _unleash_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_UNLEASH_ENV_PREFIXES) and k not in _UNLEASH_ENV_NAMES
    }
    env.update({"CHECK_VERSION": "false", "SEND_TELEMETRY": "false", "TZ": "UTC"})
    return env


def _spawn_unleash(paths: StackPaths, stack_secrets: Mapping[str, str], pg_port: int) -> int:
    node = shutil.which("node")
    if node is None:  # checked with the other prerequisites; PATH may have changed since
        raise StackError("node not found on PATH")
    # Keep the previous address when possible: clients configured with it keep working.
    port = free_port(_configured_unleash_port(paths))
    config = {
        "host": HOST,
        "port": port,
        "db": {
            "host": HOST,
            "port": pg_port,
            "user": DB_USER,
            "password": stack_secrets["db_password"],
            "database": DB_NAME,
        },
        "adminToken": stack_secrets["admin_token"],
        "clientToken": stack_secrets["client_token"],
        "secret": stack_secrets["session_secret"],
        "logLevel": os.environ.get("MODELFLAGS_UNLEASH_LOG_LEVEL", "warn"),
        "pidFile": str(paths.unleash_pid),
        "nodeDir": str(node_dir()),
    }
    _write_private(paths.server_config, json.dumps(config, indent=2) + "\n")
    paths.unleash_pid.unlink(missing_ok=True)
    LOG.info("start Unleash on %s:%d (log: %s)", HOST, port, paths.unleash_log)
    with open(paths.unleash_log, "a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting on port {port}\n")
        log.flush()
        # setsid --fork: the server runs in its own session, outlives this process and is
        # re-parented to init, so no caller has to reap it. It writes its own pid file.
        cmd = [node, "--no-deprecation", str(SERVER_JS), str(paths.server_config)]
        _run_detached(["setsid", "--fork", *cmd], log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pid = unleash_status(paths)
        if pid is not None:
            return pid
        time.sleep(0.05)
    raise StackError(f"Unleash did not start:\n{_log_tail(paths.unleash_log)}")


def _run_detached(cmd: list[str], log: Any) -> None:
    try:
        subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(HERE),
            env=_unleash_env(),
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise StackError(f"could not launch {shlex.join(cmd)}: {exc}") from exc


def _configured_unleash_port(paths: StackPaths) -> int | None:
    config = _read_json(paths.server_config)
    port = config.get("port") if config else None
    return port if isinstance(port, int) else None


def wait_healthy(url: str, pid: int, log_file: Path, timeout: float) -> None:
    """Wait until ``url/health`` answers 200, the server dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if http_status(f"{url}/health", timeout=2.0) == 200:
            return
        if not pid_alive(pid):
            raise StackError(f"Unleash exited before it was healthy:\n{_log_tail(log_file)}")
        if time.monotonic() > deadline:
            raise StackError(
                f"Unleash at {url} not healthy after {timeout:.0f} s:\n{_log_tail(log_file)}"
            )
        time.sleep(0.25)


def _check_tokens(url: str, stack_secrets: Mapping[str, str]) -> None:
    checks = (
        ("admin", f"{url}/api/admin/projects", stack_secrets["admin_token"]),
        ("client", f"{url}/api/client/features", stack_secrets["client_token"]),
    )
    for kind, endpoint, token in checks:
        status = http_status(endpoint, headers={"Authorization": token}, timeout=5.0)
        if status != 200:
            raise StackError(
                f"the {kind} token is not accepted by {endpoint} (HTTP {status}); the database "
                f"may hold tokens of an older stack: restart with stop.py --purge"
            )


def terminate(pid: int, *, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    LOG.warning("pid %d ignored SIGTERM; killing it", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


# --- the stack -------------------------------------------------------------------------------


def running_stack(paths: StackPaths) -> dict[str, Any] | None:
    """The recorded stack when all its processes run and ``/health`` answers 200."""
    info = _read_json(paths.stack)
    if info is None:
        return None
    pids = info.get("pids")
    url = info.get("url")
    if not isinstance(pids, dict) or not isinstance(url, str):
        return None
    if not all(isinstance(p, int) and pid_alive(p) for p in pids.values()):
        return None
    if unleash_status(paths) != pids.get("unleash") or postgres_status(paths) is None:
        return None
    if http_status(f"{url}/health") != 200:
        return None
    return info


def ensure_stack(
    root: str | os.PathLike[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Any]:
    """Reuse the healthy stack in ``root`` or start one; return the ``stack.json`` content.

    Raises :class:`MissingPrerequisites` (before starting anything) when programs are missing,
    and :class:`StackError` when a step fails; then whatever this call started is stopped again.
    """
    paths = stack_paths(root)
    with stack_lock(paths):
        info = running_stack(paths)
        if info is not None:
            LOG.info("reusing the running stack at %s", info["url"])
            return {**info, "reused": True}
        missing = missing_prerequisites()
        if missing:
            raise MissingPrerequisites(missing)
        undo: list[Callable[[], object]] = []
        try:
            info = _start_stack(paths, timeout, undo)
        except BaseException:
            for step in reversed(undo):
                try:
                    step()
                except Exception:
                    LOG.exception("could not stop what a failed start left behind")
            raise
        return {**info, "reused": False}


def _start_stack(
    paths: StackPaths, timeout: float, undo: list[Callable[[], object]]
) -> dict[str, Any]:
    """Start what is not running; append to ``undo`` how to stop each part it starts."""
    started = time.monotonic()
    stack_secrets = _load_or_create_secrets(paths)
    status = postgres_status(paths)
    if status is None:
        undo.append(lambda: stop_postgres(paths))
        status = start_postgres(paths)
    pg_pid, pg_port = status
    _ensure_database(paths, pg_port, stack_secrets["db_password"])

    unleash_pid = unleash_status(paths)
    port = _configured_unleash_port(paths)
    url = f"http://{HOST}:{port}"
    if unleash_pid is not None and port is not None:
        # A server of this folder still runs (e.g. its stack.json was lost): use it if it
        # becomes healthy, else replace it.
        try:
            wait_healthy(url, unleash_pid, paths.unleash_log, timeout)
        except StackError as exc:
            LOG.warning("replacing an unhealthy Unleash server (pid %d): %s", unleash_pid, exc)
            terminate(unleash_pid)
            unleash_pid = None
    elif unleash_pid is not None:
        terminate(unleash_pid)
        unleash_pid = None
    if unleash_pid is None:
        undo.append(lambda: stop_unleash(paths))
        unleash_pid = _spawn_unleash(paths, stack_secrets, pg_port)
        port = _configured_unleash_port(paths)
        url = f"http://{HOST}:{port}"
        wait_healthy(url, unleash_pid, paths.unleash_log, timeout)
    _check_tokens(url, stack_secrets)

    info = {
        "url": url,
        "admin_token": stack_secrets["admin_token"],
        "client_token": stack_secrets["client_token"],
        "pg_port": pg_port,
        "pids": {"unleash": unleash_pid, "postgres": pg_pid},
        "dir": str(paths.root),
        "unleash_log": str(paths.unleash_log),
        "postgres_log": str(paths.pg_log),
        "ui_username": UI_USERNAME,
        "ui_password": UI_PASSWORD,
    }
    _write_private(paths.stack, json.dumps(info, indent=2) + "\n")
    LOG.info("stack ready at %s after %.1f s", url, time.monotonic() - started)
    return info


def format_info(info: Mapping[str, Any]) -> str:
    pids = info.get("pids", {})
    return "\n".join(
        [
            f"url:          {info['url']}",
            f"admin_token:  {info['admin_token']}",
            f"client_token: {info['client_token']}",
            f"pg_port:      {info['pg_port']}",
            f"pids:         unleash={pids.get('unleash')} postgres={pids.get('postgres')}",
            f"dir:          {info.get('dir')}",
            f"web UI login: {info.get('ui_username')} / {info.get('ui_password')}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"stack folder (default: {default_dir()})"
    )
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
        info = ensure_stack(args.dir, timeout=args.timeout)
    except StackError as exc:
        LOG.error("%s", exc)
        return 1
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
