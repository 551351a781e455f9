#!/usr/bin/env python3
"""Start (or reuse) a local Prometheus on 127.0.0.1 that scrapes the given targets every second.

Usage::

    python services/prometheus/start.py [--target HOST:PORT ...] [--dir DIR] [--port PORT]
                                        [--scrape-interval SECONDS] [--metrics-path PATH]
                                        [--json] [--timeout SECONDS]

DIR defaults to ``$MODELFLAGS_PROMETHEUS_DIR`` or ``/tmp/modelflags-prometheus``; it holds the
configuration, the TSDB storage (``DIR/data``), the log, the pid and ``DIR/stack.json``. When
the Prometheus recorded there runs and is ready it is reused: a different list of targets is
written to its configuration and loaded with SIGHUP, without a restart. Otherwise Debian's
``prometheus`` binary is started detached on a free port (the previous one when it is free).

Only the standard library is used. Run ``install.sh`` first.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger("modelflags.prometheus.service")

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = Path("/tmp/modelflags-prometheus")
DEFAULT_BINARY = "/usr/bin/prometheus"
HOST = "127.0.0.1"
JOB = "modelflags"
DEFAULT_TIMEOUT = 30.0
DEFAULT_SCRAPE_INTERVAL = 1.0
_TARGET = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$")


class ServiceError(RuntimeError):
    """Prometheus could not be started, reconfigured or stopped."""


def default_dir() -> Path:
    """The service folder: ``$MODELFLAGS_PROMETHEUS_DIR`` or ``/tmp/modelflags-prometheus``."""
    return Path(os.environ.get("MODELFLAGS_PROMETHEUS_DIR") or DEFAULT_DIR)


def binary() -> str:
    """The Prometheus binary: ``$MODELFLAGS_PROMETHEUS_BIN`` or Debian's ``/usr/bin/prometheus``."""
    return os.environ.get("MODELFLAGS_PROMETHEUS_BIN") or DEFAULT_BINARY


def missing_binary() -> str | None:
    """Why the binary cannot run (None when it can)."""
    path = binary()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return f"the prometheus binary {path} is not installed (run {HERE / 'install.sh'})"
    return None


@dataclass(frozen=True)
class ServicePaths:
    """Where one Prometheus keeps its files."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "prometheus.log"

    @property
    def pid(self) -> Path:
        return self.root / "prometheus.pid"

    @property
    def stack(self) -> Path:
        return self.root / "stack.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


def service_paths(root: str | os.PathLike[str] | None = None) -> ServicePaths:
    return ServicePaths(Path(root).resolve() if root is not None else default_dir().resolve())


# --- small process / network helpers ---------------------------------------------------------


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
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def service_pids(paths: ServicePaths) -> list[int]:
    """Live processes running Prometheus on this folder's configuration (normally one)."""
    flag = f"--config.file={paths.config}"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if flag in _cmdline(pid) and pid_alive(pid):
                found.append(pid)
    return sorted(found)


def _get(url: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    """HTTP status and body of a GET (status 0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


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


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def service_lock(paths: ServicePaths) -> Iterator[None]:
    """Serialise start/stop of one service folder across processes."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def terminate(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once ``pid`` no longer runs."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    LOG.warning("pid %d ignored SIGTERM; killing it", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise ServiceError(f"pid {pid} still runs after SIGKILL")
        time.sleep(0.05)


# --- configuration ---------------------------------------------------------------------------


def check_targets(targets: Sequence[str]) -> list[str]:
    """The targets, each ``host:port``, in order and without repeats; ValueError otherwise."""
    checked: list[str] = []
    for target in targets:
        if not _TARGET.match(target):
            raise ValueError(f"a target is host:port (e.g. 127.0.0.1:8000), not {target!r}")
        if target not in checked:
            checked.append(target)
    return checked


def _duration(seconds: float) -> str:
    if not 0.01 <= seconds <= 3600:
        raise ValueError(f"the scrape interval must be 0.01 to 3600 seconds, not {seconds!r}")
    return f"{round(seconds * 1000)}ms"


def render_config(targets: Sequence[str], *, scrape_interval: float, metrics_path: str) -> str:
    """The configuration file: JSON, which Prometheus reads as the YAML it is a subset of."""
    if not metrics_path.startswith("/"):
        raise ValueError(f"the metrics path must start with '/', not {metrics_path!r}")
    interval = _duration(scrape_interval)
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": metrics_path,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def active_targets(url: str) -> set[str] | None:
    """The scrape URLs of the job's active targets, or None when Prometheus does not answer."""
    status, body = _get(f"{url}/api/v1/targets?state=active")
    if status != 200:
        return None
    try:
        found = json.loads(body)["data"]["activeTargets"]
    except (ValueError, KeyError, TypeError):
        return None
    return {str(t.get("scrapeUrl")) for t in found if t.get("labels", {}).get("job") == JOB}


def _scrape_urls(targets: Sequence[str], metrics_path: str) -> set[str]:
    return {f"http://{target}{metrics_path}" for target in targets}


def _wait(what: str, check: Any, timeout: float, paths: ServicePaths, pid: int) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not pid_alive(pid):
            raise ServiceError(f"Prometheus exited while {what}:\n{_log_tail(paths.log)}")
        if time.monotonic() > deadline:
            raise ServiceError(
                f"Prometheus not {what} after {timeout:.0f} s:\n{_log_tail(paths.log)}"
            )
        time.sleep(0.05)


# --- the service -----------------------------------------------------------------------------


def running_service(paths: ServicePaths) -> dict[str, Any] | None:
    """The recorded service when its process runs and ``/-/ready`` answers 200."""
    info = _read_json(paths.stack)
    if info is None:
        return None
    pid, url = info.get("pid"), info.get("url")
    if not isinstance(pid, int) or not isinstance(url, str) or pid not in service_pids(paths):
        return None
    if _get(f"{url}/-/ready")[0] != 200:
        return None
    return info


def _spawn(paths: ServicePaths, port: int) -> int:
    problem = missing_binary()
    if problem is not None:
        raise ServiceError(problem)
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.pid.unlink(missing_ok=True)
    command = [
        binary(),
        f"--config.file={paths.config}",
        f"--web.listen-address={HOST}:{port}",
        f"--storage.tsdb.path={paths.data}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]
    LOG.info("start Prometheus on %s:%d (log: %s)", HOST, port, paths.log)
    with open(paths.log, "a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting on port {port}\n")
        log.flush()
        # setsid --fork: Prometheus runs in its own session, outlives this process and is
        # re-parented to init, so no caller has to reap it. The shell writes its own pid, which
        # exec hands on to Prometheus.
        launcher = 'echo $$ > "$0"; exec "$@"'
        try:
            subprocess.run(
                ["setsid", "--fork", "sh", "-c", launcher, str(paths.pid), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(paths.root),
                check=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceError(f"could not launch {command[0]}: {exc}") from exc
    deadline = time.monotonic() + 10
    while True:
        try:
            return int(paths.pid.read_text().strip())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise ServiceError(f"Prometheus did not start:\n{_log_tail(paths.log)}") from None
            time.sleep(0.02)


def ensure_prometheus(
    root: str | os.PathLike[str] | None = None,
    targets: Sequence[str] = (),
    *,
    port: int | None = None,
    scrape_interval: float = DEFAULT_SCRAPE_INTERVAL,
    metrics_path: str = "/metrics",
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Reuse the ready Prometheus in ``root`` or start one, scraping ``targets``.

    A running one gets the new configuration by SIGHUP; this returns once its active targets
    are exactly ``targets``. Returns the ``stack.json`` content, with ``reused``.
    """
    wanted = check_targets(targets)
    config = render_config(wanted, scrape_interval=scrape_interval, metrics_path=metrics_path)
    paths = service_paths(root)
    with service_lock(paths):
        info = running_service(paths)
        if info is not None and port not in (None, info.get("port")):
            LOG.info("restarting Prometheus to move it to port %d", port)
            terminate(int(info["pid"]))
            info = None
        changed = not paths.config.exists() or paths.config.read_text() != config
        if changed:
            _write(paths.config, config)
        reused = info is not None
        if info is not None:
            pid, url = int(info["pid"]), str(info["url"])
            if changed:
                LOG.info("reload Prometheus (pid %d) with targets %s", pid, wanted or "none")
                os.kill(pid, signal.SIGHUP)
        else:
            for stray in service_pids(paths):  # e.g. its stack.json was lost
                LOG.warning(
                    "stopping a Prometheus of %s that is not ready (pid %d)", paths.root, stray
                )
                terminate(stray)
            previous = _read_json(paths.stack) or {}
            recorded = previous.get("port")
            chosen = free_port(port or (recorded if isinstance(recorded, int) else None))
            if port is not None and chosen != port:
                raise ServiceError(f"port {port} on {HOST} is taken")
            pid = _spawn(paths, chosen)
            url = f"http://{HOST}:{chosen}"
            _wait("ready", lambda: _get(f"{url}/-/ready")[0] == 200, timeout, paths, pid)
        expected = _scrape_urls(wanted, metrics_path)
        _wait(
            f"scraping {sorted(expected) or 'nothing'}",
            lambda: active_targets(url) == expected,
            timeout,
            paths,
            pid,
        )
        info = {
            "url": url,
            "port": int(urllib.parse.urlsplit(url).port or 0),
            "pid": pid,
            "targets": wanted,
            "metrics_path": metrics_path,
            "scrape_interval_s": scrape_interval,
            "dir": str(paths.root),
            "config": str(paths.config),
            "data": str(paths.data),
            "log": str(paths.log),
        }
        _write(paths.stack, json.dumps(info, indent=2) + "\n")
        return {**info, "reused": reused}


def format_info(info: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"url:      {info['url']}",
            f"pid:      {info['pid']}",
            f"targets:  {', '.join(info['targets']) or '(none)'}",
            f"interval: {info['scrape_interval_s']:g} s",
            f"dir:      {info['dir']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="an address to scrape (repeat for several)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"service folder (default: {default_dir()})"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=DEFAULT_SCRAPE_INTERVAL,
        metavar="SECONDS",
        help="scrape interval (default: 1)",
    )
    parser.add_argument("--metrics-path", default="/metrics", help="path scraped on each target")
    parser.add_argument("--json", action="store_true", help="print stack.json as JSON")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for readiness"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        info = ensure_prometheus(
            args.dir,
            args.target,
            port=args.port,
            scrape_interval=args.scrape_interval,
            metrics_path=args.metrics_path,
            timeout=args.timeout,
        )
    except (ServiceError, ValueError) as exc:
        LOG.error("%s", exc)
        return 1
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
