"""A real Prometheus for the tests, and a real HTTP server for it to scrape.

Import the fixture into a test module (``from prometheus_fixtures import prometheus_fixture``;
it is registered as ``prometheus``); nothing is registered in ``conftest.py``. Self-contained:
it needs only ``services/prometheus`` (``start.py`` / ``stop.py``), httpx and pytest.

``prometheus`` (session) starts Debian's ``prometheus`` binary in a folder of its own under the
session's temporary folder, scraping one :class:`Exposition` (a threaded WSGI server on
127.0.0.1) every second, and stops it at the end of the session. A test makes its metrics app
the one scraped with ``with prometheus.scraping(app): ...``. One target for the whole session,
because Prometheus applies a change of targets only about 5 s after it (its discovery
throttle); the test waits for what it expects with :meth:`PrometheusServer.wait_for`.

When the binary is not installed, every test using the fixture is skipped with the reason,
except under ``CI=true``, where it fails: CI must never skip them silently.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE_DIR = ROOT / "services" / "prometheus"

__all__ = [
    "Exposition",
    "PrometheusServer",
    "load_service",
    "prometheus_fixture",
    "unavailable",
]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def load_service(script: str) -> ModuleType:
    """``services/prometheus/<script>.py`` as a module (under the name its siblings use)."""
    name = f"modelflags_prometheus_{script}"
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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every second would flood the test output."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Exposition:
    """A WSGI server on 127.0.0.1 that serves whichever app was installed last (404 before).

    Safe to share between threads: the app is swapped by one assignment.
    """

    def __init__(self) -> None:
        self.app: WsgiApp | None = None
        self._server = make_server(
            "127.0.0.1", 0, self._dispatch, _ThreadingServer, handler_class=_QuietHandler
        )
        self.address = f"127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="exposition", daemon=True
        )
        self._thread.start()

    def _dispatch(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        app = self.app
        if app is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no metrics app installed\n"]
        return app(environ, start_response)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Exposition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrometheusServer:
    """A running Prometheus (``url``) that scrapes :attr:`exposition` every second."""

    def __init__(self, info: Mapping[str, Any], exposition: Exposition) -> None:
        self.url = str(info["url"])
        self.dir = Path(str(info["dir"]))
        self.pid = int(info["pid"])
        self.exposition = exposition
        self._http = httpx.Client(base_url=self.url, timeout=5.0)

    @contextlib.contextmanager
    def scraping(self, app: WsgiApp) -> Iterator[str]:
        """Serve ``app`` to Prometheus for the block; yields the address it is served at."""
        self.exposition.app = app
        try:
            yield self.exposition.address
        finally:
            self.exposition.app = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (``/api/v1/query``)."""
        response = self._http.get("/api/v1/query", params={"query": promql})
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: HTTP {response.status_code} {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, promql: str, label: str) -> dict[str, float]:
        """An instant query's values by the value of ``label``."""
        return {
            sample["metric"].get(label, ""): float(sample["value"][1])
            for sample in self.query(promql)
        }

    def wait_for(
        self, promql: str, label: str, expected: Mapping[str, float], *, timeout: float = 20.0
    ) -> dict[str, float]:
        """Poll ``promql`` until its values by ``label`` are ``expected`` (bounded); return them.

        Fails the test with the last values seen when ``timeout`` passes first.
        """
        deadline = time.monotonic() + timeout
        seen: dict[str, float] = {}
        while True:
            seen = self.values(promql, label)
            if seen.keys() == expected.keys() and all(
                math.isclose(seen[key], value, rel_tol=1e-9, abs_tol=1e-12)
                for key, value in expected.items()
            ):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{promql!r}: expected {dict(expected)}, still {seen} after {timeout:.0f} s"
                )
            time.sleep(0.1)

    def close(self) -> None:
        self._http.close()


@pytest.fixture(scope="session", name="prometheus")
def prometheus_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A Prometheus of this session, scraping one exposition server every second."""
    start = load_service("start")
    stop = load_service("stop")
    missing = start.missing_binary()
    if missing is not None:
        unavailable(f"no real Prometheus: {missing}")
    folder = tmp_path_factory.mktemp("prometheus")
    with Exposition() as exposition:
        try:
            info = start.ensure_prometheus(folder, [exposition.address])
        except start.ServiceError as exc:
            stop.stop_prometheus(folder)
            pytest.fail(f"Prometheus did not start: {exc}", pytrace=False)
        server = PrometheusServer(info, exposition)
        try:
            yield server
        finally:
            server.close()
            stop.stop_prometheus(folder)
