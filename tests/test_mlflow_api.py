"""The small MLflow REST client: credentials, bounded failures, paging, filters."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import tomli_w

from modelflags import ModelFlags
from modelflags.errors import ModelUnavailableError, RegistryError, VersionSourceError
from modelflags.sources.mlflow_api import MlflowApi


def test_the_token_goes_only_in_the_authorization_header() -> None:
    """MLFLOW_TRACKING_TOKEN becomes a bearer header; it is in no error message."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(403, json={"error_code": "PERMISSION_DENIED", "message": "no"})

    api = MlflowApi(
        "https://mlflow.example:5000",
        transport=httpx.MockTransport(handler),
        environ={"MLFLOW_TRACKING_TOKEN": "s3cr3t-token"},
    )
    with pytest.raises(VersionSourceError) as caught:
        api.aliases("rec")
    assert seen[0].headers["Authorization"] == "Bearer s3cr3t-token"
    assert caught.value.status == 403 and not caught.value.unreachable
    assert "s3cr3t-token" not in str(caught.value)
    assert "PERMISSION_DENIED: no" in str(caught.value)


def test_basic_credentials_are_sent_when_there_is_no_token() -> None:
    """MLFLOW_TRACKING_USERNAME and _PASSWORD become basic auth."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"registered_model": {"aliases": []}})

    api = MlflowApi(
        "http://127.0.0.1:5000",
        transport=httpx.MockTransport(handler),
        environ={"MLFLOW_TRACKING_USERNAME": "ada", "MLFLOW_TRACKING_PASSWORD": "pw"},
    )
    assert api.aliases("rec") == {}
    assert seen[0].headers["Authorization"].startswith("Basic ")


def test_versions_are_read_page_by_page_with_a_quoted_filter() -> None:
    """The search follows next_page_token; a name with a quote is filtered with another one."""
    pages = {
        None: {"model_versions": [{"version": "1"}], "next_page_token": "p2"},
        "p2": {"model_versions": [{"version": "2"}]},
    }
    filters: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        filters.append(request.url.params["filter"])
        return httpx.Response(200, json=pages[request.url.params.get("page_token")])

    api = MlflowApi("http://127.0.0.1:5000", transport=httpx.MockTransport(handler))
    assert [item["version"] for item in api.versions("it's")] == ["1", "2"]
    assert filters == ['name="it\'s"', 'name="it\'s"']


@pytest.mark.slow
def test_a_server_that_does_not_answer_fails_within_the_timeout() -> None:
    """A port that accepts nothing is an unreachable source, reported in about the timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # accepts the connection, never answers
        port = listener.getsockname()[1]
        api = MlflowApi(f"http://127.0.0.1:{port}", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(VersionSourceError, match="did not answer") as caught:
            api.aliases("rec")
        assert caught.value.unreachable
        assert time.monotonic() - started < 5


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_mlflow_down_at_start_without_a_snapshot_cannot_start(tmp_path: Path) -> None:
    """No answer and nothing saved under state_dir: the model cannot start, and the error says
    where MLflow was asked and how a snapshot would have helped."""
    url = f"http://127.0.0.1:{closed_port()}"
    registry = tmp_path / "registry.toml"
    registry.write_text(
        tomli_w.dumps({"models": {"rec": {"mlflow": {"name": "rec", "tracking_uri": url}}}})
    )
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="state_dir") as caught:
        ModelFlags(registry, state_dir=tmp_path / "state")
    assert url in str(caught.value) and caught.value.model == "rec"
    assert time.monotonic() - started < 15


def test_a_model_without_a_tracking_uri_is_a_registry_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither tracking_uri nor MLFLOW_TRACKING_URI: the error names the model and the field."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"models": {"rec": {"mlflow": {"name": "rec"}}}}))
    with pytest.raises(RegistryError, match="MLFLOW_TRACKING_URI") as caught:
        ModelFlags(registry)
    assert caught.value.model == "rec" and caught.value.field == "mlflow.tracking_uri"


def test_the_tracking_uri_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLFLOW_TRACKING_URI is used when the table gives none (here: a closed port)."""
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"models": {"rec": {"mlflow": {"name": "rec"}}}}))
    with pytest.raises(ModelUnavailableError, match=url.replace(".", r"\.")):
        ModelFlags(registry)


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"name": "rec", "tracking_uri": "sqlite:///x.db"}, "not an http(s) URL"),
        ({"name": "rec", "refresh_s": 0}, "greater than 0"),
        ({"name": ""}, "at least 1 character"),
        ({"name": "rec", "colour": 1}, "unknown field 'colour'"),
    ],
)
def test_an_invalid_mlflow_table_names_the_model_and_field(
    table: dict[str, object], needle: str
) -> None:
    """The mlflow table is validated like the rest of the registry."""
    from modelflags.registry import Registry

    with pytest.raises(RegistryError, match="model 'rec'") as caught:
        Registry.from_mapping({"models": {"rec": {"mlflow": table}}}, source="reg.toml")
    assert needle in str(caught.value)


def test_an_mlflow_model_may_not_list_versions_in_the_file() -> None:
    """Its versions come from MLflow; a versions table is refused."""
    from modelflags.registry import Registry

    data = {
        "models": {
            "rec": {
                "mlflow": {"name": "rec", "tracking_uri": "http://127.0.0.1:5000"},
                "default_version": "v1",
                "versions": {"v1": {"uri": "a.joblib"}},
            }
        }
    }
    with pytest.raises(RegistryError, match="come from MLflow"):
        Registry.from_mapping(data, source="reg.toml")


def test_a_models_uri_outside_an_mlflow_model_is_refused() -> None:
    """models:/ URIs name MLflow versions, which only an mlflow table brings in."""
    from modelflags.registry import Registry

    data = {"models": {"m": {"default_version": "v1", "versions": {"v1": {"uri": "models:/m/1"}}}}}
    with pytest.raises(RegistryError, match="mlflow table"):
        Registry.from_mapping(data, source="reg.toml")


def test_validate_accepts_a_registry_with_an_mlflow_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``modelflags validate`` checks the mlflow table without reaching MLflow."""
    from modelflags.cli import main

    registry = tmp_path / "registry.toml"
    registry.write_text(
        tomli_w.dumps(
            {
                "models": {
                    "rec": {
                        "mlflow": {"name": "rec", "tracking_uri": "http://127.0.0.1:9"},
                        "default_version": "@champion",
                    }
                }
            }
        )
    )
    assert main(["validate", str(registry)]) == 0
    assert "valid registry with 1 model" in capsys.readouterr().out
