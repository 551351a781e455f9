"""A fleet rollout end to end, with real parts only.

Three processes serve a model through the SDK on 127.0.0.1 (gunicorn with two sync workers
sharing a ``PROMETHEUS_MULTIPROC_DIR``, and one more process with a folder of its own), each
reading a flagd flag file in FILE mode. A real Prometheus scrapes both servers every second.
``modelflags rollout`` runs as a process of its own: a candidate whose users click half as often
is rolled back for the whole fleet; a good one reaches 100 %, its controller killed with SIGKILL
at the 50 % stage and started again. A bounded load generator sends the traffic.

The instances read a copy of the registry without the guardrails table, so that only the
controller decides (the instances' own guardrails would otherwise judge each process's slice).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
import tomli_w

from modelflags.rollout.actuators.flagd import FlagdFileActuator

from prometheus_fixtures import load_service, unavailable
from support import sha256_of

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CLICK_RATES = {"v1": 0.3, "v2": 0.3, "v3": 0.15}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_fleet_files(root: Path) -> tuple[Path, Path, Path]:
    """Models (real scikit-learn classifiers predicting each version's click rate), the
    controller's registry, the instances' registry (no guardrails) and the flag file."""
    from sklearn.dummy import DummyClassifier

    versions: dict[str, Any] = {}
    for version, rate in CLICK_RATES.items():
        labels = [1] * round(rate * 100) + [0] * round((1 - rate) * 100)
        model = DummyClassifier(strategy="prior").fit([[0.0, 0.0]] * len(labels), labels)
        path = root / f"recommender-{version}.joblib"
        joblib.dump(model, path)
        versions[version] = {"uri": path.name, "sha256": sha256_of(path)}
    model_entry: dict[str, Any] = {"default_version": "v1", "versions": versions}
    (root / "instances.toml").write_text(tomli_w.dumps({"models": {"recommender": model_entry}}))
    model_entry["guardrails"] = {
        "max_outcome_drop": {"name": "click", "relative": 0.05},
        "min_requests": 100,
        "sustained_s": 0,
        "alpha": 0.001,
    }
    registry = root / "registry.toml"
    registry.write_text(tomli_w.dumps({"models": {"recommender": model_entry}}))
    flags = root / "flags.json"
    variants = {version: version for version in CLICK_RATES}
    document = {"flags": {"recommender": {"state": "ENABLED", "variants": variants,
                                          "defaultVariant": "v1", "targeting": {}}}}  # fmt: skip
    flags.write_text(json.dumps(document))
    return registry, root / "instances.toml", flags


class Processes:
    """Process groups started for the test; :meth:`kill_all` ends every one."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
        stream = open(log, "w")  # noqa: SIM115 - closed with the process, in kill_all
        process = subprocess.Popen(
            args, env=env, cwd=TESTS, stdout=stream, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        stream.close()
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # workers left behind, if any


class LoadGenerator:
    """``total`` requests at about ``rate`` a second over ``threads`` threads, to the
    ``servers`` in turn, then it stops by itself (or at :meth:`stop`). Remembers the versions
    of the last responses."""

    def __init__(self, servers: list[str], *, total: int, rate: float, threads: int = 4) -> None:
        self.servers, self.total, self.rate = servers, total, rate
        self.recent: deque[str] = deque(maxlen=60)
        self.errors = 0
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, args=(i, threads), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _work(self, index: int, threads: int) -> None:
        interval = threads / self.rate
        begun = time.monotonic()
        with httpx.Client(timeout=5.0) as client:
            for number in range(index, self.total, threads):
                if self._stop.is_set():
                    return
                due = begun + (number // threads) * interval
                self._stop.wait(max(0.0, due - time.monotonic()))
                server = self.servers[number % len(self.servers)]
                try:
                    answer = client.get(f"http://{server}/predict", params={"user": f"u{number}"})
                    version = str(answer.json()["version"])
                except (httpx.HTTPError, ValueError, KeyError):
                    with self._lock:
                        self.errors += 1
                    continue
                with self._lock:
                    self.recent.append(version)
                    self.sent += 1

    def wait_for_only(self, version: str, timeout: float) -> Counter[str]:
        """Wait until the last responses all came from ``version``; their counts."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = Counter(self.recent)
            if set(seen) == {version} and sum(seen.values()) >= 30:
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"still serving {dict(seen)} after {timeout:.0f} s")
            time.sleep(0.2)


def wait_until_serving(servers: list[str], processes: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for server in servers:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{server}/predict", timeout=2).status_code == 200:
                    break
            dead = [p.args for p in processes.started if p.poll() is not None]
            assert not dead, f"a server exited: {dead}"
            assert time.monotonic() < deadline, f"{server} does not answer"
            time.sleep(0.2)


def controller_args(
    registry: Path, flags: Path, url: str, candidate: str, folder: Path
) -> list[str]:
    return [
        sys.executable, "-m", "modelflags", "rollout", str(registry), "--model", "recommender",
        "--candidate", candidate, "--actuator", f"flagd:{flags}", "--prometheus", url,
        "--stages", "20,50,100", "--stage-seconds", "8", "--poll-seconds", "1",
        "--state", str(folder / f"state-{candidate}.json"),
        "--audit", str(folder / f"audit-{candidate}.jsonl"),
    ]  # fmt: skip


def run_until(
    process: subprocess.Popen[str], words: str, timeout: float
) -> tuple[list[str], threading.Thread]:
    """Lines of ``process`` until one contains ``words`` (or it exits, or time runs out), and
    the thread that reads them (it ends when the process's output does)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            return seen, reader
        seen.append(line)
        if words in line:
            return seen, reader
    raise AssertionError(f"no {words!r} within {timeout:.0f} s:\n" + "\n".join(seen))


@pytest.fixture
def fleet_stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Three serving processes and a Prometheus scraping them; all stopped afterwards."""
    start, stop = load_service("start"), load_service("stop")
    missing = start.missing_binary()
    if missing is not None:
        unavailable(f"no real Prometheus: {missing}")
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        unavailable("gunicorn is not installed (pip install 'modelflags[dev]')")
    registry, instances, flags = write_fleet_files(tmp_path)
    ports = [free_port(), free_port()]
    servers = [f"127.0.0.1:{port}" for port in ports]
    env = {**os.environ, "FLEET_REGISTRY": str(instances), "FLEET_FLAGS": str(flags)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(TESTS), env.get("PYTHONPATH", "")])
    processes = Processes()
    folder = tmp_path / "prometheus"
    try:
        for name in ("gunicorn", "single"):
            (tmp_path / f"metrics-{name}").mkdir()
        processes.start(
            [sys.executable, "-m", "gunicorn", "-w", "2", "-b", servers[0], "--pid",
             str(tmp_path / "gunicorn.pid"), "fleet_app:app"],
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics-gunicorn")},
            tmp_path / "gunicorn.log",
        )  # fmt: skip
        processes.start(
            [sys.executable, str(TESTS / "fleet_app.py"), str(ports[1]), str(tmp_path)],
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics-single")},
            tmp_path / "single.log",
        )
        wait_until_serving(servers, processes)
        info = start.ensure_prometheus(folder, servers)
        yield {
            "registry": registry, "flags": flags, "servers": servers, "url": info["url"],
            "env": env, "processes": processes, "dir": tmp_path,
        }  # fmt: skip
    finally:
        processes.kill_all()
        stop.stop_prometheus(folder)
        left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
        assert left.stdout.strip() == "", f"processes left running: {left.stdout}"


def audit_of(folder: Path, candidate: str) -> list[dict[str, Any]]:
    lines = (folder / f"audit-{candidate}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_fleet_rolls_a_worse_candidate_back_and_a_good_one_out(
    fleet_stack: dict[str, Any],
) -> None:
    """The worse candidate is rolled back for every process; the good one reaches 100 %
    although its controller is killed at the 50 % stage and started again."""
    stack = fleet_stack
    folder, flags, url = stack["dir"], stack["flags"], stack["url"]
    processes: Processes = stack["processes"]
    reader = FlagdFileActuator(flags)
    with LoadGenerator(stack["servers"], total=60_000, rate=150) as load:
        worse = processes.start(
            controller_args(stack["registry"], flags, url, "v3", folder),
            stack["env"], folder / "controller-v3.log",
        )  # fmt: skip
        assert worse.wait(timeout=180) == 1, (folder / "controller-v3.log").read_text()
        assert reader.current_split("recommender") == {"v1": 100}
        decided = [entry["decision"] for entry in audit_of(folder, "v3")]
        assert "breach" in decided and decided[-1] == "rollback"
        load.wait_for_only("v1", timeout=30)

        args = controller_args(stack["registry"], flags, url, "v2", folder)
        first = subprocess.Popen(
            args, env=stack["env"], cwd=TESTS, stdout=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        processes.started.append(first)
        _, output = run_until(first, "split: v1 50 %", timeout=120)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        output.join(timeout=10)
        assert first.stdout is not None
        first.stdout.close()
        again = processes.start(args, stack["env"], folder / "controller-v2.log")
        assert again.wait(timeout=180) == 0, (folder / "controller-v2.log").read_text()
        said = (folder / "controller-v2.log").read_text()
        assert "resume: resuming from" in said and "completed" in said
        assert reader.current_split("recommender") == {"v2": 100}
        load.wait_for_only("v2", timeout=30)
    assert load.errors == 0
