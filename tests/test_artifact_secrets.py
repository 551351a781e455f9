"""Credentials go only where they were meant for: configured headers stay on the artifact's
origin across redirects, and no secret of a URI, a header or a response reaches a log or an error.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelflags.artifacts.remote import RemoteFetcher
from modelflags.artifacts.store import ArtifactStore
from modelflags.errors import ActuatorError, FetchError
from modelflags.registry import Registry, VersionSpec
from modelflags.rollout.actuators.unleash import UnleashActuator

from support.artifact_server import ArtifactServer, redirect, status

SECRET_HEADERS = {"authorization", "x-api-key", "x-static"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_of(uri: str, data: bytes, **fields: Any) -> VersionSpec:
    registry = Registry.from_mapping(
        {
            "models": {
                "m": {
                    "default_version": "v1",
                    "versions": {"v1": {"uri": uri, "sha256": sha(data), **fields}},
                }
            }
        }
    )
    return registry.models["m"].versions["v1"]


@pytest.fixture
def home() -> Iterator[ArtifactServer]:
    """The artifact URI's origin."""
    with ArtifactServer() as running:
        yield running


@pytest.fixture
def elsewhere() -> Iterator[ArtifactServer]:
    """Another origin (another port of 127.0.0.1)."""
    with ArtifactServer() as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArtifactStore]:
    """A store whose versions' ``headers_env`` read TOKEN, with a static header configured."""
    fetcher = RemoteFetcher(cache_dir=tmp_path / "cache", headers={"X-Static": "static-s3cret"})
    made = ArtifactStore(remote=fetcher, environ={"TOKEN": "env-s3cret"})
    yield made
    made.close()


HEADERS_ENV = {"Authorization": "TOKEN", "X-Api-Key": "TOKEN"}


# -- redirects -------------------------------------------------------------------------------


@pytest.mark.slow
def test_configured_headers_never_reach_another_origin_after_a_redirect(
    home: ArtifactServer, elsewhere: ArtifactServer, store: ArtifactStore
) -> None:
    """headers_env and static headers go to the artifact's origin; the redirect to another
    origin is followed without any of them, and the artifact still loads."""
    data = b"the artifact"
    target = elsewhere.add("/signed/v1.bin", data)
    url = home.add("/v1.bin", data)
    home.fail("/v1.bin", redirect(target))
    path = store.fetch("m", "v1", spec_of(url, data, headers_env=HEADERS_ENV))
    assert path.read_bytes() == data
    sent_home = home.requests("/v1.bin")[0].headers
    assert sent_home["authorization"] == "env-s3cret" and sent_home["x-static"] == "static-s3cret"
    (sent_away,) = elsewhere.requests("/signed/v1.bin")
    assert SECRET_HEADERS.isdisjoint(sent_away.headers), sent_away.headers
    assert "s3cret" not in repr(sent_away.headers)


@pytest.mark.slow
def test_user_info_of_the_uri_is_not_sent_to_another_origin(
    home: ArtifactServer, elsewhere: ArtifactServer, tmp_path: Path
) -> None:
    """Basic credentials in the URI go to its origin only."""
    data = b"the artifact"
    target = elsewhere.add("/v1.bin", data)
    home.add("/v1.bin", data)
    home.fail("/v1.bin", redirect(target, code=307))
    url = home.url("/v1.bin").replace("http://", "http://user:hunter2@")
    fetcher = RemoteFetcher(cache_dir=tmp_path / "cache")
    fetcher.fetch(model="m", version="v1", uri=url, sha256=sha(data))
    fetcher.close()
    assert home.requests("/v1.bin")[0].headers["authorization"].startswith("Basic ")
    assert "authorization" not in elsewhere.requests("/v1.bin")[0].headers


def test_a_redirect_within_the_origin_keeps_the_configured_headers(
    home: ArtifactServer, store: ArtifactStore
) -> None:
    """Same scheme, host and port: the headers follow, user info included."""
    data = b"the artifact"
    moved = home.add("/moved/v1.bin", data)
    url = home.add("/v1.bin", data)
    home.fail("/v1.bin", redirect(moved.removeprefix(home.base_url), code=301))
    store.fetch("m", "v1", spec_of(url, data, headers_env=HEADERS_ENV))
    sent = home.requests("/moved/v1.bin")[0].headers
    assert sent["authorization"] == "env-s3cret" and sent["x-api-key"] == "env-s3cret"
    assert sent["x-static"] == "static-s3cret"


@pytest.mark.slow
def test_a_given_clients_auth_and_headers_do_not_follow_a_redirect_elsewhere(
    home: ArtifactServer, elsewhere: ArtifactServer, tmp_path: Path
) -> None:
    """A client you pass keeps its auth, cookies and default headers on the artifact's origin."""
    data = b"the artifact"
    target = elsewhere.add("/v1.bin", data)
    url = home.add("/v1.bin", data)
    home.fail("/v1.bin", redirect(target))
    with httpx.Client(
        auth=("user", "pa55word"),
        headers={"X-Client": "client-s3cret"},
        cookies={"session": "cookie-s3cret"},
    ) as client:
        fetcher = RemoteFetcher(cache_dir=tmp_path / "cache", client=client)
        fetcher.fetch(model="m", version="v1", uri=url, sha256=sha(data))
    sent_home = home.requests("/v1.bin")[0].headers
    assert sent_home["x-client"] == "client-s3cret"
    assert sent_home["cookie"] == "session=cookie-s3cret"
    away = elsewhere.requests("/v1.bin")[0].headers
    assert "authorization" not in away and "x-client" not in away and "cookie" not in away


def test_redirect_loops_and_odd_schemes_are_fetch_errors(
    home: ArtifactServer, tmp_path: Path
) -> None:
    """More than ten redirects, or a redirect to a non-HTTP URI, fail clearly."""
    data = b"the artifact"
    url = home.add("/loop", data)
    home.fail("/loop", *[redirect("/loop")] * 11)
    odd = home.add("/odd", data)
    home.fail("/odd", redirect("file:///etc/passwd"))
    fetcher = RemoteFetcher(cache_dir=tmp_path / "cache")
    with pytest.raises(FetchError, match="more than 10 redirects"):
        fetcher.fetch(model="m", version="v1", uri=url, sha256=sha(data))
    with pytest.raises(FetchError, match="redirects to a URI that is not http or https"):
        fetcher.fetch(model="m", version="v1", uri=odd, sha256=sha(data))
    fetcher.close()


# -- logs and errors -------------------------------------------------------------------------


@pytest.mark.slow
def test_no_secret_of_a_uri_header_or_redirect_reaches_any_log_record(
    home: ArtifactServer,
    elsewhere: ArtifactServer,
    store: ArtifactStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """User info, query tokens, header values and a presigned redirect's signature appear in
    no record of any logger, at DEBUG, through retries, a redirect and a failure."""
    caplog.set_level(logging.DEBUG)
    data = b"the artifact"
    signed = elsewhere.add("/signed/v1.bin", data) + "?X-Amz-Signature=s1gnature-s3cret"
    home.add("/v1.bin", data)
    home.fail("/v1.bin", status(503), redirect(signed))
    home.add("/gone.bin", b"another artifact")
    home.fail("/gone.bin", status(403))
    base = home.base_url.replace("http://", "http://user:hunter2-s3cret@")
    ok = spec_of(f"{base}/v1.bin?token=query-s3cret", data, headers_env=HEADERS_ENV)
    gone = spec_of(
        f"{base}/gone.bin?token=query-s3cret", b"another artifact", headers_env=HEADERS_ENV
    )
    assert store.fetch("m", "v1", ok).read_bytes() == data
    with pytest.raises(FetchError) as info:
        store.fetch("m", "v1", gone)
    assert any(r.name.startswith("modelflags") for r in caplog.records)
    texts = [r.getMessage() for r in caplog.records] + [caplog.text, str(info.value)]
    for text in texts:
        assert "s3cret" not in text, text
    assert "s3cret" not in info.value.uri and info.value.uri.endswith("/gone.bin?...")


@pytest.mark.slow
def test_other_http_clients_keep_their_own_logs(
    home: ArtifactServer, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the fetcher's own requests are kept out of httpx's log; the application's are not."""
    data = b"the artifact"
    url = home.add("/v1.bin", data)
    caplog.set_level(logging.INFO, logger="httpx")
    store.fetch("m", "v1", spec_of(url, data))
    assert not [r for r in caplog.records if r.name == "httpx"]
    with httpx.Client() as client:
        client.get(home.url("/v1.bin"))
    assert [r for r in caplog.records if r.name == "httpx"]


# -- actuator errors -------------------------------------------------------------------------


@pytest.mark.slow
def test_an_actuator_error_quotes_a_short_escaped_excerpt_without_tokens() -> None:
    """A response body is cut short, its control characters escaped, and tokens masked: the
    admin token echoed back, and values of fields named like secrets."""
    token = "*:development.0123456789abcdef-admin-token"
    body = (
        f'{{"error": "bad token {token}", "apiToken": "leaked-s3cret", '
        '"hint": "\x1b[2J\x1b[31mforged\nlog line"}' + "A" * 5000
    )
    transport = httpx.MockTransport(lambda request: httpx.Response(401, text=body))
    with (
        httpx.Client(transport=transport) as client,
        UnleashActuator("http://unleash.test", token, client=client) as actuator,
        pytest.raises(ActuatorError) as info,
    ):
        actuator.set_split("recommender", {"v1": 90, "v2": 10})
    message = str(info.value)
    assert token not in message and "leaked-s3cret" not in message
    assert "\x1b" not in message and "\n" not in message and "\\x1b[31m" in message
    assert len(message) < 400 and "characters in all" in message
    assert info.value.status == 401 and "HTTP 401" in message
