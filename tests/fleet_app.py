"""A small web app serving a model through the SDK, one process of the fleet end-to-end test.

Run by gunicorn (``gunicorn -w 2 fleet_app:app``) or alone (``python fleet_app.py PORT``).
Environment: ``FLEET_REGISTRY`` (the registry), ``FLEET_FLAGS`` (the flagd flag file, read in
FILE mode), ``PROMETHEUS_MULTIPROC_DIR`` (set before start). Routes:

- ``GET /predict?user=U``: the flag picks the version for user U; the model's ``predict_proba``
  gives the chance that this simulated user clicks; the click (0 or 1) is drawn and recorded as
  the outcome ``click``. Answers ``{"version": ..., "click": ...}``.
- ``GET /metrics``: the Prometheus exposition of every process sharing the metrics folder.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType

from modelflags import ModelFlags
from modelflags.telemetry.prometheus import PrometheusMetrics, metrics_app

FEATURES = np.zeros((1, 2))


def build() -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """The WSGI app of this process (made in each worker: gunicorn imports it after forking)."""
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE,
            offline_flag_source_path=os.environ["FLEET_FLAGS"],
            deadline_ms=100,
        )
    )
    flags = ModelFlags(os.environ["FLEET_REGISTRY"], metrics_exporters=[PrometheusMetrics()])
    exposition = metrics_app()
    chance = random.Random(os.getpid())

    def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            return exposition(environ, start)  # type: ignore[no-any-return]
        user = parse_qs(environ.get("QUERY_STRING", "")).get("user", ["anonymous"])[0]
        handle = flags.get_model("recommender", user)
        probability = float(handle.predict_proba(FEATURES)[0][1])
        click = 1.0 if chance.random() < probability else 0.0
        flags.record_outcome(handle, "click", click)
        body = json.dumps({"version": handle.version, "click": click}).encode()
        start("200 OK", [("Content-Type", "application/json")])
        return [body]

    return app


app = build() if "gunicorn" in sys.modules or __name__ == "__main__" else None

if __name__ == "__main__":
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    class _Threading(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    assert app is not None
    server = make_server("127.0.0.1", int(sys.argv[1]), app, _Threading, handler_class=_Quiet)
    print("serving", flush=True)
    server.serve_forever()
