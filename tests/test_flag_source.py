"""The flag source's health as ``status()`` and the log show it: no provider, a flagd file that
does not parse, an Unleash server that is down, and OpenFeature's error and stale events."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.contrib.provider.unleash import UnleashProvider
from openfeature.event import ProviderEventDetails
from UnleashClient.cache import FileCache

from modelflags import ModelFlags, ServingReason
from modelflags.testing import InMemoryFlags, RegistryBuilder

from models import Constant
from support import wait_until

X = np.zeros((3, 2))


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    builder.add("m", "v2", Constant(2))
    builder.add("other", "v1", Constant(5))
    return builder.write()


def source_lines(caplog: pytest.LogCaptureFixture, text: str = "flag source") -> list[str]:
    """modelflags' own log lines about the flag source."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("modelflags")
        and record.name != "modelflags.serving.answers"  # the resolution cache's own lines
        and text in record.getMessage()
    ]


# -- no provider -------------------------------------------------------------------------------


def test_without_a_provider_each_model_warns_once_naming_the_fix(
    registry: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request serves the default; one WARNING per model says how to set a provider."""
    with caplog.at_level(logging.WARNING, logger="modelflags"), ModelFlags(registry) as flags:
        for _ in range(5):
            handle = flags.get_model("m", "u1")
            assert (handle.version, handle.reason) == ("v1", ServingReason.DEFAULT)
            flags.get_model("other", "u1")
        status = flags.status()
    warnings = [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and "no OpenFeature provider" in record.getMessage()
    ]
    assert sorted(record.getMessage().split("'")[1] for record in warnings) == ["m", "other"]
    assert all("set_provider_and_wait" in record.getMessage() for record in warnings)
    for name in ("m", "other"):
        assert status[name].flag_source is not None
        assert status[name].flag_source.state == "not set"


def test_without_a_provider_the_async_path_warns_too(
    registry: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``get_model_async`` gives the same single warning."""
    import asyncio

    async def scenario(flags: ModelFlags) -> None:
        for _ in range(3):
            await flags.get_model_async("m", "u1")

    with caplog.at_level(logging.WARNING, logger="modelflags"), ModelFlags(registry) as flags:
        asyncio.run(asyncio.wait_for(scenario(flags), 10))
    assert len(source_lines(caplog, "no OpenFeature provider")) == 1


def test_with_a_provider_set_nothing_is_warned_and_the_source_is_ready(
    registry: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider set before serving: no warning, state ``ready``."""
    InMemoryFlags(m="v2", other="v1").install()
    with caplog.at_level(logging.WARNING, logger="modelflags"), ModelFlags(registry) as flags:
        assert flags.get_model("m", "u1").version == "v2"
        source = flags.status()["m"].flag_source
    assert source is not None and (source.state, source.errors) == ("ready", 0)
    assert source_lines(caplog, "no OpenFeature provider") == []


# -- OpenFeature error and stale events --------------------------------------------------------


def test_provider_error_and_stale_events_change_the_state_once_each(
    registry: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PROVIDER_ERROR makes the source ``error``, PROVIDER_STALE ``stale``, READY ``ready``: one
    log line per change, however many events repeat it."""
    flags_source = InMemoryFlags(m="v2", other="v1").install()
    provider = flags_source.provider
    with caplog.at_level(logging.INFO, logger="modelflags"), ModelFlags(registry) as flags:

        def source() -> Any:
            return flags.status()["m"].flag_source

        for _ in range(3):
            provider.emit_provider_error(ProviderEventDetails(message="backend unreachable"))
        wait_until(lambda: source().errors == 3, 10, "three provider errors")
        assert (source().state, source().last_error) == ("error", "backend unreachable")
        provider.emit_provider_stale(ProviderEventDetails(message="flags are 5 min old"))
        wait_until(lambda: source().state == "stale", 10, "stale")
        provider.emit_provider_ready(ProviderEventDetails())
        wait_until(lambda: source().state == "ready", 10, "ready again")
        assert flags.get_model("m", "u1").version == "v2"
    lines = source_lines(caplog)
    assert len(lines) == 3, lines
    assert "is error: backend unreachable" in lines[0]
    assert "is stale" in lines[1] and "ready again" in lines[2]


# -- a flagd file that does not parse ----------------------------------------------------------

FLAGS = {
    "flags": {
        "m": {"state": "ENABLED", "variants": {"v1": "v1", "v2": "v2"}, "defaultVariant": "v2"},
        "other": {"state": "ENABLED", "variants": {"v1": "v1"}, "defaultVariant": "v1"},
    }
}


def replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def flagd_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(FLAGS))
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=50
        )
    )
    yield path
    api.shutdown()


@pytest.mark.slow
def test_an_invalid_flagd_file_shows_as_an_error_logged_once_per_change_of_state(
    registry: Path, flagd_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """flagd logs a traceback on every poll of a broken file; status() says ``error`` with a
    count of failed polls and the last message, modelflags logs it once, the last good flags keep
    serving, and fixing the file makes the source ``ready`` again (one more line)."""
    with caplog.at_level(logging.INFO), ModelFlags(registry) as flags:
        assert flags.get_model("m", "u1").version == "v2"

        def source() -> Any:
            return flags.status()["m"].flag_source

        replace_file(flagd_file, '{"flags": {"m": ')
        wait_until(lambda: source().state == "error", 10, "the broken file seen")
        wait_until(lambda: source().errors >= 5, 10, "five failed polls")
        broken = source()
        polls = sum(
            1
            for record in caplog.records
            if record.name.startswith("openfeature") and record.levelno >= logging.ERROR
        )
        assert broken.errors <= polls + 1, (broken.errors, polls)  # counted once per poll
        assert broken.last_error is not None and "parse" in broken.last_error
        assert broken.since is not None
        assert flags.get_model("m", "u1").version == "v2"  # the last good flags
        assert len(source_lines(caplog)) == 1
        replace_file(flagd_file, json.dumps(FLAGS))
        wait_until(lambda: source().state == "ready", 10, "the fixed file seen")
        fixed = source()
        assert fixed.errors >= broken.errors and fixed.since is not None
        assert fixed.since >= broken.since
    lines = source_lines(caplog)
    assert len(lines) == 2, lines
    assert "FlagdProvider is error" in lines[0] and "ready again" in lines[1]


def test_a_request_flagd_cannot_split_leaves_the_source_ready(
    registry: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A fractional split evaluated without a targeting key makes flagd log an error for that
    request: a problem of one evaluation, not of the flag source."""
    path = tmp_path / "split.json"
    split = {"fractional": [["v1", 50], ["v2", 50]]}
    document = {"flags": {"m": {**FLAGS["flags"]["m"], "targeting": split}}}
    path.write_text(json.dumps(document))
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=50
        )
    )
    try:
        with caplog.at_level(logging.INFO), ModelFlags(registry) as flags:
            for _ in range(3):
                flags.get_model("m")  # no user: no targeting key to split on
            keyed = {flags.get_model("m", f"user-{index}").version for index in range(40)}
            source = flags.status()["m"].flag_source
    finally:
        api.shutdown()
    assert keyed == {"v1", "v2"}
    assert any(r.name.startswith("openfeature") for r in caplog.records)  # flagd did complain
    assert source is not None and (source.state, source.errors) == ("ready", 0)
    assert source_lines(caplog) == []


# -- Unleash -----------------------------------------------------------------------------------

FEATURES = {
    "version": 2,
    "features": [
        {
            "name": "m",
            "enabled": True,
            "type": "release",
            "project": "default",
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "100", "stickiness": "default", "groupId": "m"},
                    "constraints": [],
                    "variants": [
                        {
                            "name": "v2",
                            "weight": 1000,
                            "weightType": "fix",
                            "stickiness": "default",
                            "payload": {"type": "string", "value": "v2"},
                        }
                    ],
                }
            ],
            "variants": [],
        }
    ],
}


class _UnleashAPI(BaseHTTPRequestHandler):
    """The three endpoints UnleashClient calls: features (GET), register and metrics (POST)."""

    def do_GET(self) -> None:
        if not self.path.startswith("/api/client/features"):
            self.send_error(404)
            return
        body = json.dumps(FEATURES).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class UnleashServer:
    """A small Unleash client API on 127.0.0.1, stoppable mid-test."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _UnleashAPI)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def unleash_provider(tmp_path: Path) -> Iterator[Any]:
    """Build Unleash providers with their own cache folder and a 1 s refresh; shut down after."""
    providers: list[UnleashProvider] = []

    def build(url: str) -> UnleashProvider:
        app = f"modelflags-tests-{uuid.uuid4().hex[:8]}"
        provider = UnleashProvider(
            url=url,
            app_name=app,
            api_token="client-token",
            cache=FileCache(app, directory=str(tmp_path / "unleash-cache")),
        )
        provider.client.unleash_refresh_interval = 1  # before initialize() starts the poller
        providers.append(provider)
        return provider

    yield build
    api.shutdown()
    for provider in providers:
        provider.shutdown()


@pytest.mark.slow
def test_unleash_on_a_closed_port_shows_as_an_error(
    registry: Path, unleash_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Its first failed poll makes the source ``error``, with the client's message."""
    api.set_provider_and_wait(unleash_provider(f"http://127.0.0.1:{closed_port()}/api"))
    with caplog.at_level(logging.INFO, logger="modelflags"), ModelFlags(registry) as flags:
        wait_until(lambda: flags.status()["m"].flag_source.state == "error", 15, "a failed poll")
        source = flags.status()["m"].flag_source
        handle = flags.get_model("m", "u1")
    assert source.provider == "UnleashProvider" and source.errors >= 1
    assert source.last_error is not None and "fetch failed" in source.last_error
    assert handle.version == "v1"
    assert len(source_lines(caplog, "is error")) == 1


@pytest.mark.slow
def test_unleash_that_stops_answering_shows_as_an_error_while_its_cached_flags_serve(
    registry: Path, unleash_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A real HTTP server answers, then stops: ``error`` after the next poll, one log line, and
    the provider keeps serving the flags it fetched."""
    server = UnleashServer()
    try:
        api.set_provider_and_wait(unleash_provider(server.url))
        with caplog.at_level(logging.INFO, logger="modelflags"), ModelFlags(registry) as flags:
            wait_until(lambda: flags.get_model("m", "u1").version == "v2", 15, "the flag served")
            assert flags.status()["m"].flag_source.state == "ready"
            server.stop()
            wait_until(lambda: flags.status()["m"].flag_source.state == "error", 15, "the outage")
            wait_until(lambda: flags.status()["m"].flag_source.errors >= 2, 15, "a second poll")
            handle = flags.get_model("m", "u2")
            assert (handle.version, handle.fell_back) == ("v2", False)
            assert handle.predict(X).tolist() == [2, 2, 2]
    finally:
        server.stop()
    assert len(source_lines(caplog, "is error")) == 1


@pytest.mark.slow
def test_quieting_the_unleash_logger_as_the_readme_says_keeps_the_health(
    registry: Path,
    unleash_provider: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``UnleashClient``'s records stopped at its logger, no traceback reaches the
    application's handlers, and the failed polls still make the source ``error``."""
    monkeypatch.setattr(logging.getLogger("UnleashClient"), "propagate", False)
    api.set_provider_and_wait(unleash_provider(f"http://127.0.0.1:{closed_port()}/api"))
    with caplog.at_level(logging.INFO), ModelFlags(registry) as flags:
        wait_until(lambda: flags.status()["m"].flag_source.state == "error", 15, "a failed poll")
    assert [r for r in caplog.records if r.name == "UnleashClient"] == []
    assert len(source_lines(caplog, "is error")) == 1
