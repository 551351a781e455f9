"""A simulated fleet behind a real HTTP server that answers like Prometheus' query API.

:class:`FakeFleet` keeps the cumulative counters that ``PrometheusMetrics`` would export from
each instance, draws traffic between scrapes (a scrape a second) with each version's share read
from the real flagd flag file the controller writes, and serves the raw samples of every series
at ``/api/v1/query`` on 127.0.0.1, as Prometheus answers a range selector. ``mode`` makes it
misbehave: ``"error"`` (a PromQL error), ``"empty"`` (no series), ``"down"`` (HTTP 503).
Time is the fleet's own (``now``); a controller's injected clock and sleep move it.
"""

from __future__ import annotations

import json
import re
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np

from modelflags.rollout.actuators.flagd import FlagdFileActuator

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, float("inf"))
START = 1_700_000_000.0


@dataclass
class Behaviour:
    """How a version behaves: click rate, error rate, latency (seconds, one bucket)."""

    click: float = 0.1
    error: float = 0.0
    latency_s: float = 0.004


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Threading(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class FakeFleet:
    """Instances exporting counters, scraped every second, and a query API over them."""

    def __init__(
        self,
        flags: FlagdFileActuator,
        behaviours: dict[str, Behaviour],
        *,
        flag_key: str = "recommender",
        model: str = "recommender",
        instances: Iterable[str] = ("10.0.0.1:8000", "10.0.0.2:8000"),
        rate_per_s: float = 200.0,
        seed: int = 7,
    ) -> None:
        self.flags, self.flag_key, self.model = flags, flag_key, model
        self.behaviours = behaviours
        self.instances = list(instances)
        self.rate = rate_per_s
        self.rng = np.random.default_rng(seed)
        self.now = START
        self.mode = "ok"
        self.queries: list[str] = []
        self.lock = threading.Lock()
        # (instance, version) -> counters; series key -> list of (t, value)
        self.counters: dict[tuple[str, str], dict[str, float]] = {}
        self.samples: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        self._server = make_server("127.0.0.1", 0, self._app, _Threading, handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self._scrape()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of traffic happen (a scrape at each whole second)."""
        end = self.now + seconds
        while self.now + 1.0 <= end + 1e-9:
            self._serve_one_second()
            self.now += 1.0
            self._scrape()
        self.now = end

    def restart(self, instance: str) -> None:
        """The instance restarts: its counters start again from zero."""
        with self.lock:
            for (owner, _), counters in self.counters.items():
                if owner == instance:
                    for key in counters:
                        counters[key] = 0.0

    def _serve_one_second(self) -> None:
        split = self.flags.current_split(self.flag_key) or {}
        for instance in self.instances:
            for version, percent in split.items():
                calls = int(self.rng.poisson(self.rate * percent / 100.0 / len(self.instances)))
                if calls:
                    self._record(instance, version, calls)

    def _record(self, instance: str, version: str, calls: int) -> None:
        b = self.behaviours[version]
        clicks = int(self.rng.binomial(calls, b.click))
        errors = int(self.rng.binomial(calls, b.error))
        with self.lock:
            c = self.counters.setdefault((instance, version), {})
            for key, value in (
                ("latency_seconds_count", calls),
                ("inference_errors_total", errors),
                ("outcome_count", calls),
                ("outcome_sum", clicks),
                ("outcome_squares_total", clicks),
            ):
                c[key] = c.get(key, 0.0) + value
            for bound in BUCKETS:
                key = f"latency_seconds_bucket:{bound}"
                c[key] = c.get(key, 0.0) + (calls if b.latency_s <= bound else 0)

    def _scrape(self) -> None:
        with self.lock:
            for (instance, version), counters in self.counters.items():
                for key, value in counters.items():
                    labels = {"instance": instance, "job": "modelflags", "model": self.model}
                    labels["version"] = version
                    name, _, le = key.partition(":")
                    if le:
                        labels["le"] = "+Inf" if le == "inf" else le
                    if name.startswith("outcome"):
                        labels["outcome"] = "click"
                    labels["__name__"] = f"modelflags_{name}"
                    series = tuple(sorted(labels.items()))
                    self.samples.setdefault(series, []).append((self.now, value))

    def _app(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterator[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(size).decode())
        query = form.get("query", [""])[0]
        self.queries.append(query)
        if self.mode == "down":
            start("503 Service Unavailable", [("Content-Type", "text/plain")])
            return iter([b"unavailable"])
        if self.mode == "error":
            body = {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
            start("400 Bad Request", [("Content-Type", "application/json")])
            return iter([json.dumps(body).encode()])
        window = float(re.search(r"\[(\d+)s\]$", query).group(1))  # type: ignore[union-attr]
        result = []
        if self.mode != "empty":
            with self.lock:
                for labels, points in self.samples.items():
                    inside = [(t, str(v)) for t, v in points if self.now - window < t <= self.now]
                    if inside:
                        result.append({"metric": dict(labels), "values": inside})
        body = {"status": "success", "data": {"resultType": "matrix", "result": result}}
        start("200 OK", [("Content-Type", "application/json")])
        return iter([json.dumps(body).encode()])


def flag_file(path: Any, flag_key: str = "recommender", version: str = "v1") -> Any:
    """A flagd flag file serving ``version`` to everyone."""
    document = {
        "flags": {
            flag_key: {
                "state": "ENABLED",
                "variants": {"v1": "v1", "v2": "v2"},
                "defaultVariant": version,
                "targeting": {},
            }
        }
    }
    path.write_text(json.dumps(document))
    return path
