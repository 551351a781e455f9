"""The local Prometheus of services/prometheus: start, reuse, new targets, stop, and the fixture's
skip when the binary is missing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prometheus_fixtures import SERVICE_DIR, Exposition, load_service, unavailable

start = load_service("start")
stop = load_service("stop")

HERE = Path(__file__).resolve().parent


@pytest.fixture
def binary() -> None:
    """The tests that run Prometheus need Debian's binary (skipped without, failed under CI)."""
    missing = start.missing_binary()
    if missing is not None:
        unavailable(f"no real Prometheus: {missing}")


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A service folder; whatever runs on it is stopped after the test."""
    path = tmp_path / "prometheus"
    yield path
    stop.stop_prometheus(path)


@pytest.fixture
def targets() -> Iterator[list[str]]:
    """Two real HTTP servers on 127.0.0.1 to be scraped."""
    with Exposition() as one, Exposition() as other:
        yield [one.address, other.address]


def live(folder: Path) -> list[int]:
    return list(start.service_pids(start.service_paths(folder)))


@pytest.mark.slow
@pytest.mark.usefixtures("binary")
def test_start_is_idempotent_and_loads_new_targets_without_a_restart(
    folder: Path, targets: list[str]
) -> None:
    """A second start reuses the process; other targets are loaded into it by SIGHUP."""
    first = start.ensure_prometheus(folder, targets[:1])
    again = start.ensure_prometheus(folder, targets[:1])
    moved = start.ensure_prometheus(folder, targets)

    assert first["reused"] is False and again["reused"] is moved["reused"] is True
    assert first["pid"] == again["pid"] == moved["pid"]
    assert live(folder) == [first["pid"]]
    assert start.active_targets(moved["url"]) == {f"http://{t}/metrics" for t in targets}
    config = json.loads((folder / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "1000ms"
    assert first["url"].startswith("http://127.0.0.1:")
    assert (folder / "data").is_dir()
    assert json.loads((folder / "stack.json").read_text())["targets"] == targets


@pytest.mark.slow
@pytest.mark.usefixtures("binary")
def test_stop_leaves_no_process_running_and_a_second_stop_is_no_error(folder: Path) -> None:
    """Stop ends the process (a zombie left for init does not count) and forgets its pid."""
    info = start.ensure_prometheus(folder, [])

    assert stop.stop_prometheus(folder) == {"prometheus": True, "purged": False}
    assert not start.pid_alive(info["pid"])
    assert live(folder) == []
    assert not (folder / "stack.json").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{info['url']}/-/ready", timeout=5)
    assert stop.stop_prometheus(folder) == {"prometheus": False, "purged": False}
    assert stop.stop_prometheus(folder, purge=True) == {"prometheus": False, "purged": True}
    assert not folder.exists()


@pytest.mark.slow
@pytest.mark.usefixtures("binary")
def test_a_prometheus_whose_record_was_lost_is_replaced_not_duplicated(folder: Path) -> None:
    """Without its stack.json a running Prometheus of the folder is stopped and one started."""
    lost = start.ensure_prometheus(folder, [])
    (folder / "stack.json").unlink()

    found = start.ensure_prometheus(folder, [])

    assert found["reused"] is False and found["pid"] != lost["pid"]
    assert not start.pid_alive(lost["pid"])
    assert live(folder) == [found["pid"]]


def test_a_port_that_is_taken_is_reported(folder: Path) -> None:
    """An explicit port that another socket holds is an error naming it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(start.ServiceError, match=f"port {port} on 127.0.0.1 is taken"):
            start.ensure_prometheus(folder, [], port=port)
    assert live(folder) == []


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, str(SERVICE_DIR / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.slow
@pytest.mark.usefixtures("binary")
def test_the_start_and_stop_scripts_work_from_the_command_line(
    folder: Path, targets: list[str]
) -> None:
    """``start.py --target ... --json`` describes the running service; ``stop.py --purge``
    stops it and removes its folder."""
    started = run_script("start.py", "--dir", str(folder), "--target", targets[0], "--json")
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    assert info["targets"] == [targets[0]] and info["reused"] is False
    assert httpx.get(f"{info['url']}/-/ready", timeout=5).status_code == 200

    stopped = run_script("stop.py", "--dir", str(folder), "--purge")

    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.splitlines() == ["stopped: prometheus", f"removed: {folder}"]
    assert not start.pid_alive(info["pid"])
    assert not folder.exists()


def test_a_target_that_is_not_host_and_port_is_refused(folder: Path) -> None:
    """Targets are ``host:port``; anything else fails before anything starts."""
    with pytest.raises(ValueError, match="a target is host:port"):
        start.ensure_prometheus(folder, ["http://127.0.0.1:8000/metrics"])
    result = run_script("start.py", "--dir", str(folder), "--target", "127.0.0.1")
    assert result.returncode == 1
    assert "a target is host:port" in result.stderr
    assert live(folder) == []


def test_a_missing_binary_is_reported_with_the_install_script(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the binary, start fails and names install.sh."""
    monkeypatch.setenv("MODELFLAGS_PROMETHEUS_BIN", str(folder / "no-such-prometheus"))
    with pytest.raises(start.ServiceError, match=r"not installed \(run .*install\.sh\)"):
        start.ensure_prometheus(folder, [])


def test_a_prometheus_that_exits_at_start_is_reported_with_its_log(
    folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A binary that dies at once is reported, with the end of its log, and nothing is left."""
    dying = tmp_path / "dying-prometheus"
    dying.write_text("#!/bin/sh\necho 'err: cannot open storage' >&2\nexit 3\n")
    dying.chmod(0o755)
    monkeypatch.setenv("MODELFLAGS_PROMETHEUS_BIN", str(dying))

    with pytest.raises(start.ServiceError, match=r"exited while ready(?s:.*)cannot open storage"):
        start.ensure_prometheus(folder, [], timeout=10)
    assert live(folder) == []


FIXTURE_USER = """
import sys
sys.path.insert(0, {tests!r})
from prometheus_fixtures import prometheus_fixture  # noqa: F401

def test_uses_prometheus(prometheus):
    assert prometheus.url
"""


@pytest.mark.slow
@pytest.mark.parametrize(("ci", "outcome"), [("", "skipped"), ("true", "errors")])
def test_the_fixture_skips_without_the_binary_and_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    """Without the binary a test using ``prometheus`` is skipped with the reason, or fails
    under ``CI=true``."""
    monkeypatch.setenv("MODELFLAGS_PROMETHEUS_BIN", str(pytester.path / "no-such-prometheus"))
    monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_user=FIXTURE_USER.format(tests=str(HERE)))

    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")

    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines(["*no real Prometheus: the prometheus binary*install.sh*"])
