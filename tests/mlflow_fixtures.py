"""A real MLflow tracking server for the tests, models logged through MLflow's own API, and a
relay that takes the server away.

Import the fixture into a test module (``from mlflow_fixtures import mlflow_server``); nothing is
registered in ``conftest.py``. ``mlflow_server`` (session scope) starts ``mlflow server`` with
``services/mlflow/start.py`` (SQLite store, local artifact root, on 127.0.0.1) in a folder under
the session's temporary folder and stops it (with ``stop.py``) at the end of the session, so no
server outlives the tests. Without the full ``mlflow`` package the tests that use it are skipped
with the reason, except under ``CI=true``, where they fail: CI must never skip them silently.

:class:`Relay` forwards a port of its own to the server; closing it is MLflow going down for
whoever talks to the relay, while the server stays up for every other test.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType

ROOT = Path(__file__).resolve().parents[1]
SERVICE_DIR = ROOT / "services" / "mlflow"

__all__ = [
    "MlflowServer",
    "Relay",
    "flag_file",
    "load_service",
    "mlflow_quietly",
    "mlflow_server",
    "unavailable",
    "use_flagd",
    "wait_for",
]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def load_service(script: str) -> ModuleType:
    """``services/mlflow/<script>.py`` as a module (under the name its siblings use)."""
    name = f"modelflags_mlflow_{script}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, SERVICE_DIR / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail under ``CI=true`` (CI must never skip silently)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def mlflow_quietly() -> Iterator[Any]:
    """MLflow's client module with its own warnings (deprecations of its dependencies, schema
    hints) kept out of the tests' warnings-as-errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow

        yield mlflow


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class MlflowServer:
    """A running MLflow server (``url``) and helpers that use MLflow's own client on it."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.url = str(info["url"])
        self.dir = Path(str(info["dir"]))
        self.artifact_root = Path(str(info["artifact_root"]))
        self._names = 0

    def client(self) -> Any:
        with mlflow_quietly() as mlflow:
            return mlflow.MlflowClient(tracking_uri=self.url)

    def unique_name(self, stem: str) -> str:
        """A registered model name no other test uses."""
        self._names += 1
        return f"{stem}-{os.getpid()}-{self._names}"

    def log_version(
        self,
        name: str,
        model: Any,
        X: np.ndarray,
        *,
        serialization: str = "skops",
        trusted_types: list[str] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        git_commit: str | None = None,
        experiment: str | None = None,
    ) -> str:
        """Log ``model`` in a run with MLflow's sklearn flavor and register it under ``name``;
        returns the new version id."""
        with mlflow_quietly() as mlflow:
            from mlflow.models import infer_signature

            mlflow.set_tracking_uri(self.url)
            experiment_id = None
            if experiment is not None:
                found = mlflow.get_experiment_by_name(experiment)
                experiment_id = (
                    found.experiment_id
                    if found is not None
                    else mlflow.create_experiment(
                        experiment, artifact_location=f"mlflow-artifacts:/{experiment}"
                    )
                )
            with mlflow.start_run(experiment_id=experiment_id):
                mlflow.log_params(dict(params or {}))
                mlflow.log_metrics(dict(metrics or {}))
                if git_commit is not None:
                    mlflow.set_tag("mlflow.source.git.commit", git_commit)
                options: dict[str, Any] = {}
                if serialization == "skops" and trusted_types is not None:
                    options["skops_trusted_types"] = trusted_types
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    registered_model_name=name,
                    serialization_format=serialization,
                    signature=infer_signature(X, model.predict(X)),
                    pip_requirements=["scikit-learn"],
                    **options,
                )
            return str(info.registered_model_version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        with mlflow_quietly():
            self.client().set_registered_model_alias(name, alias, version)

    def delete_version(self, name: str, version: str) -> None:
        with mlflow_quietly():
            self.client().delete_model_version(name, version)

    def files_of(self, name: str, version: str) -> Path:
        """The local folder MLflow keeps the version's files in."""
        with mlflow_quietly():
            return Path(self.client().get_model_version_download_uri(name, version))

    def pin(self, name: str, version: str, *, cache_dir: Path) -> str:
        """Pin the version with ``modelflags mlflow pin`` (its tag); returns the digest."""
        from modelflags.cli import main

        with contextlib.redirect_stdout(_Capture()) as out:
            status = main(
                [
                    "mlflow",
                    "pin",
                    name,
                    version,
                    "--tracking-uri",
                    self.url,
                    "--cache-dir",
                    str(cache_dir),
                    "--json",
                ]
            )
        assert status == 0, out.text
        digest: str = json.loads(out.text)["sha256"]
        return digest


class _Capture:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` for the session (see the module)."""
    start, stop = load_service("start"), load_service("stop")
    problem = start.missing_server()
    if problem is not None:
        unavailable(problem)
    root = tmp_path_factory.mktemp("mlflow-server")
    try:
        info = start.ensure_mlflow(root, timeout=300)
    except start.ServiceError as exc:
        stop.stop_mlflow(root)
        pytest.fail(f"MLflow did not start: {exc}", pytrace=False)
    try:
        yield MlflowServer(info)
    finally:
        stop.stop_mlflow(root)


class Relay:
    """Forwards connections from a port of its own to ``target`` (host, port) on 127.0.0.1.

    :meth:`stop` closes the port and every connection through it (MLflow "down");
    :meth:`start` opens the same port again. Safe to share between threads.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for each in sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


def flag_file(path: Path, flag: str, versions: list[str], default: str) -> None:
    """Write a flagd flag file choosing ``default`` for everyone (atomically)."""
    document = {
        "flags": {
            flag: {
                "state": "ENABLED",
                "variants": {version: version for version in versions},
                "defaultVariant": default,
            }
        }
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


@contextlib.contextmanager
def use_flagd(path: Path) -> Iterator[None]:
    """flagd's provider in FILE mode on ``path`` for the block."""
    provider = FlagdProvider(
        resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=50
    )
    api.set_provider_and_wait(provider)
    try:
        yield
    finally:
        api.shutdown()
