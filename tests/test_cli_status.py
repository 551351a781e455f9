"""``modelflags status --url``: reading a running application's status page from the shell."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from modelflags import ModelFlags
from modelflags.cli import main
from modelflags.cli.status import TOKEN_ENV

from support import FakeClock, Workspace
from web_fixtures import MODEL, TOKEN, write_registry


@pytest.fixture
def page(
    workspace: Workspace,
    trained: dict[str, LogisticRegression],
    set_flags: Callable[..., None],
    clock: FakeClock,
    tmp_path: Path,
) -> Iterator[str]:
    set_flags(**{MODEL: "v2"})
    with ModelFlags(write_registry(workspace, trained), clock=clock) as flags:
        server = flags.serve_status(token=TOKEN, sample_s=3600)
        yield server.url


@pytest.mark.slow
def test_status_prints_each_models_lkg_from_a_running_page(
    page: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The token comes from the environment; the text names the model and its LKG."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert main(["status", "--url", page]) == 0
    out = capsys.readouterr().out
    assert MODEL in out and "v1" in out


@pytest.mark.slow
def test_status_json_is_the_pages_api(page: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the page's /api/status document."""
    assert main(["status", "--url", page, "--token", TOKEN, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["models"][MODEL]["lkg"] == "v1"


@pytest.mark.slow
def test_status_without_the_token_is_a_finding_that_never_shows_a_token(
    page: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused read exits 1 with the address in the message; a wrong token is not echoed."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["status", "--url", page, "--token", "wrong-token-0123456789"]) == 1
    captured = capsys.readouterr()
    assert page in captured.err and "wrong-token" not in captured.err + captured.out


def test_status_needs_a_url(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --url it is a usage error (exit 2)."""
    assert main(["status"]) == 2
