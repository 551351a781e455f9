"""The status page through Starlette's TestClient: every status code, sign-in and sessions, the
checks against cross-site posts, actions and their audit trail, escaping, and the JSON API.

The app serves a real ModelFlags with real scikit-learn models and a real in-memory OpenFeature
provider; the guardrails are checked by hand on a fake clock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from modelflags import ModelFlags
from modelflags.web.app import StatusApp
from modelflags.web.auth import COOKIE, Credentials

from support import FakeClock, Workspace
from web_fixtures import MODEL, TOKEN, csrf_of, propose_rollback, serve, write_registry

HERE = "http://testserver"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ALICE, BOB = "alice-token-0123456789abcdef", "bob-token-0123456789abcdefgh"


@pytest.fixture
def registry(workspace: Workspace, trained: dict[str, LogisticRegression]) -> Path:
    return write_registry(workspace, trained, owner="<script>alert(1)</script>")


@pytest.fixture
def flags(
    registry: Path, set_flags: Callable[..., None], clock: FakeClock, tmp_path: Path
) -> Iterator[ModelFlags]:
    """Model ``churn`` flagged to v2, checked by hand, with a decision log."""
    set_flags(**{MODEL: "v2"})
    with ModelFlags(
        registry,
        clock=clock,
        guardrail_interval=3600,
        decision_log=tmp_path / "decisions.jsonl",
        prewarm=False,  # each v2 request loads or answers at once: the split counts are exact
    ) as made:
        yield made


def client_of(app: StatusApp) -> TestClient:
    return TestClient(app, base_url=HERE, follow_redirects=False)


@pytest.fixture
def client(flags: ModelFlags) -> Iterator[TestClient]:
    with client_of(flags.web_app(token=TOKEN, sample_s=3600)) as made:
        yield made


def sign_in(client: TestClient, token: str = TOKEN) -> str:
    """Sign in through the form; the form token of the model page."""
    answer = client.post("/login", data={"token": token, "next": "/"}, headers={"Origin": HERE})
    assert answer.status_code == 303
    return csrf_of(client.get(f"/models/{MODEL}").text)


def post_form(
    client: TestClient, action: str, fields: dict[str, str], version: str = "v2", **headers: str
) -> Any:
    return client.post(f"/models/{MODEL}/versions/{version}/{action}", data=fields, headers=headers)


# -- 401: no credentials ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", f"/models/{MODEL}", "/api/status", f"/api/models/{MODEL}"])
def test_every_page_and_api_answers_401_without_a_token(client: TestClient, path: str) -> None:
    """Reading needs the token: 401 with a Bearer challenge, the page offering to sign in."""
    answer = client.get(path)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in answer.text


def test_a_wrong_token_is_401_and_is_never_echoed(client: TestClient) -> None:
    """A wrong bearer token reads nothing; a wrong token in the form signs nobody in."""
    wrong = "not-the-token-0123456789"
    assert client.get("/api/status", headers={"Authorization": f"Bearer {wrong}"}).status_code == (
        401
    )
    answer = client.post("/login", data={"token": wrong}, headers={"Origin": HERE})
    assert answer.status_code == 401
    assert wrong not in answer.text and "not valid" in answer.text
    assert COOKIE not in answer.cookies


@pytest.mark.slow
def test_actions_without_a_token_are_401(client: TestClient, flags: ModelFlags) -> None:
    """Neither a form post nor an API post acts without credentials."""
    propose_rollback(flags)
    form = post_form(client, "confirm", {"reason": "r"}, Origin=HERE)
    api = client.post(f"/api/models/{MODEL}/versions/v2/confirm", json={"reason": "r"})
    assert (form.status_code, api.status_code) == (401, 401)
    assert [p.version for p in flags.status()[MODEL].proposals] == ["v2"]


@pytest.mark.slow
def test_public_read_opens_the_pages_but_never_the_actions(flags: ModelFlags) -> None:
    """``public_read=True``: pages and JSON without a token; actions still need one."""
    propose_rollback(flags)
    with client_of(flags.web_app(token=TOKEN, public_read=True, sample_s=3600)) as client:
        assert client.get("/").status_code == 200
        assert client.get("/api/status").json()["models"][MODEL]["lkg"] == "v1"
        page = client.get(f"/models/{MODEL}").text
        assert 'name="csrf"' not in page and "Sign in" in page  # no form to act with
        api = client.post(f"/api/models/{MODEL}/versions/v2/confirm", json={"reason": "r"})
        assert api.status_code == 401
    assert flags.status()[MODEL].proposals


def test_a_page_without_any_token_must_be_public_read_only(flags: ModelFlags) -> None:
    """No token and no ``public_read`` is refused at once; too short a token too (unshown)."""
    with pytest.raises(ValueError, match="needs token= or tokens="):
        flags.web_app()
    with pytest.raises(ValueError, match="at least 16 characters") as raised:
        flags.web_app(token="short-secret")
    assert "short-secret" not in str(raised.value)


# -- 404, 409, 422 ------------------------------------------------------------------------------


def test_an_unknown_model_is_404_listing_the_known_ones(client: TestClient) -> None:
    """The page links the known models; the API lists them."""
    page = client.get("/models/nope", headers=BEARER)
    assert page.status_code == 404
    assert f'href="/models/{MODEL}"' in page.text and "unknown model" in page.text
    api = client.get("/api/models/nope", headers=BEARER)
    assert api.status_code == 404
    assert api.json() == {"error": "unknown model 'nope'", "known": [MODEL]}


def test_an_unknown_version_or_action_is_404_listing_the_known_ones(client: TestClient) -> None:
    """Unknown versions list the model's versions; unknown actions the four actions."""
    version = client.post(
        f"/api/models/{MODEL}/versions/v9/rollback", json={"reason": "r"}, headers=BEARER
    )
    assert version.status_code == 404
    assert version.json()["known"] == ["v1", "v2"]
    action = client.post(
        f"/api/models/{MODEL}/versions/v2/explode", json={"reason": "r"}, headers=BEARER
    )
    assert action.status_code == 404
    assert action.json()["known"] == ["rollback", "release", "confirm", "dismiss"]
    model = client.post(
        "/api/models/nope/versions/v2/rollback", json={"reason": "r"}, headers=BEARER
    )
    assert (model.status_code, model.json()["known"]) == (404, [MODEL])


def test_an_action_the_version_cannot_take_is_409_saying_why(
    client: TestClient, flags: ModelFlags
) -> None:
    """Confirming with no proposal, or rolling back the only proven version: 409 and why."""
    confirm = client.post(
        f"/api/models/{MODEL}/versions/v2/confirm", json={"reason": "r"}, headers=BEARER
    )
    assert confirm.status_code == 409
    assert "no rollback of 'v2' is waiting" in confirm.json()["error"]
    lkg = client.post(
        f"/api/models/{MODEL}/versions/v1/rollback", json={"reason": "r"}, headers=BEARER
    )
    assert lkg.status_code == 409
    assert "last known good version" in lkg.json()["error"]
    sign_in(client)
    recent = client.get("/api/status").json()["actions"]
    assert [(a["action"], a["result"]) for a in recent] == [
        ("rollback", "refused"),
        ("confirm", "refused"),
    ]


def test_a_rollback_without_metrics_is_409(
    workspace: Workspace, trained: dict[str, LogisticRegression], set_flags: Callable[..., None]
) -> None:
    """A ModelFlags that keeps no metrics cannot roll back: 409 says what it needs."""
    set_flags(**{MODEL: "v2"})
    with (
        ModelFlags(write_registry(workspace, trained, guardrails=None)) as flags,
        client_of(flags.web_app(token=TOKEN, sample_s=3600)) as client,
    ):
        answer = client.post(
            f"/api/models/{MODEL}/versions/v2/rollback", json={"reason": "r"}, headers=BEARER
        )
    assert answer.status_code == 409
    assert "rollbacks need metrics" in answer.json()["error"]


@pytest.mark.slow
@pytest.mark.parametrize("reason", [None, "", "   ", "x" * 501])
def test_a_missing_or_too_long_reason_is_422(
    client: TestClient, flags: ModelFlags, reason: str | None
) -> None:
    """Every action needs a reason (500 characters at most), in the API and in the form."""
    propose_rollback(flags)
    body = {} if reason is None else {"reason": reason}
    api = client.post(f"/api/models/{MODEL}/versions/v2/confirm", json=body, headers=BEARER)
    assert api.status_code == 422
    csrf = sign_in(client)
    fields = {"csrf": csrf} if reason is None else {"csrf": csrf, "reason": reason}
    form = post_form(client, "confirm", fields, Origin=HERE)
    assert form.status_code == 422
    assert [p.version for p in flags.status()[MODEL].proposals] == ["v2"]


def test_a_body_of_the_wrong_type_or_size_is_refused(client: TestClient) -> None:
    """JSON for the API (415 otherwise, 400 for a non-object), at most 16 KiB (413)."""
    url = f"/api/models/{MODEL}/versions/v2/rollback"
    assert client.post(url, data={"reason": "r"}, headers=BEARER).status_code == 415
    assert client.post(url, json=["r"], headers=BEARER).status_code == 400
    assert client.post(url, json={"reason": "r" * 20_000}, headers=BEARER).status_code == 413


# -- cross-site requests ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_forged_cross_site_form_post_is_403(client: TestClient, flags: ModelFlags) -> None:
    """With the victim's session, a post from another origin, without Origin and Referer, with a
    foreign Referer, or without the form token is refused; nothing happens."""
    propose_rollback(flags)
    csrf = sign_in(client)
    fields = {"csrf": csrf, "reason": "forged"}
    assert post_form(client, "confirm", fields, Origin="http://evil.example").status_code == 403
    assert post_form(client, "confirm", fields).status_code == 403
    referer = post_form(client, "confirm", fields, Referer="http://evil.example/page")
    assert referer.status_code == 403
    no_token = post_form(client, "confirm", {"reason": "forged"}, Origin=HERE)
    assert no_token.status_code == 403
    wrong = post_form(client, "confirm", {"csrf": csrf[::-1], "reason": "forged"}, Origin=HERE)
    assert wrong.status_code == 403
    assert post_form(client, "confirm", fields, Origin="null").status_code == 403
    assert [p.version for p in flags.status()[MODEL].proposals] == ["v2"]


@pytest.mark.slow
def test_a_form_token_is_bound_to_its_session(flags: ModelFlags) -> None:
    """Bob's form token does not work in Alice's session."""
    propose_rollback(flags)
    app = flags.web_app(tokens={"alice": ALICE, "bob": BOB}, sample_s=3600)
    with client_of(app) as alice, client_of(app) as bob:
        sign_in(alice, ALICE)
        bobs = sign_in(bob, BOB)
        answer = post_form(alice, "confirm", {"csrf": bobs, "reason": "r"}, Origin=HERE)
    assert answer.status_code == 403


@pytest.mark.slow
def test_an_api_post_from_another_origin_is_403_and_a_cookie_does_not_act(
    client: TestClient, flags: ModelFlags
) -> None:
    """API actions need the bearer token (a session cookie is not enough) and no foreign
    Origin."""
    propose_rollback(flags)
    sign_in(client)
    url = f"/api/models/{MODEL}/versions/v2/confirm"
    assert client.post(url, json={"reason": "r"}, headers={"Origin": HERE}).status_code == 401
    foreign = client.post(
        url, json={"reason": "r"}, headers={**BEARER, "Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    assert flags.status()[MODEL].proposals


def test_signing_in_from_another_origin_is_403(client: TestClient) -> None:
    """The sign-in form itself is checked (no signing a victim into a session)."""
    answer = client.post("/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403
    assert COOKIE not in answer.cookies


@pytest.mark.slow
def test_a_trusted_origin_may_post(flags: ModelFlags) -> None:
    """``trusted_origins`` admits a proxy's public origin besides the request's own host."""
    propose_rollback(flags)
    app = flags.web_app(token=TOKEN, trusted_origins=["https://ops.example.com"], sample_s=3600)
    with client_of(app) as client:
        csrf = sign_in(client)
        fields = {"csrf": csrf, "reason": "from the proxy"}
        answer = post_form(client, "confirm", fields, Origin="https://ops.example.com")
    assert answer.status_code == 303
    assert flags.status()[MODEL].rolled_back == ("v2",)


# -- sessions -----------------------------------------------------------------------------------


def test_signing_in_sets_a_strict_httponly_cookie_that_holds_no_token(client: TestClient) -> None:
    """The cookie is signed, SameSite=Strict, HttpOnly, scoped to the app, and not the token."""
    answer = client.post(
        "/login", data={"token": TOKEN, "next": f"/models/{MODEL}"}, headers={"Origin": HERE}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/models/{MODEL}"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie
    assert client.get("/api/status").status_code == 200
    page = client.get("/")
    assert 'data-testid="identity">operator<' in page.text


def test_sign_in_never_redirects_off_the_app(client: TestClient) -> None:
    """A ``next`` naming another site leads to the overview."""
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        answer = client.post(
            "/login", data={"token": TOKEN, "next": target}, headers={"Origin": HERE}
        )
        assert answer.headers["location"] == "/"


def test_a_forged_or_expired_session_is_refused(flags: ModelFlags) -> None:
    """A cookie signed with another key, a changed identity or a lapsed session reads nothing."""
    now = [1_000_000.0]
    app = flags.web_app(token=TOKEN, sample_s=3600, session_s=60, clock=lambda: now[0])
    other = Credentials(tokens={"operator": "another-token-0123456789"}, clock=lambda: now[0])
    with client_of(app) as client:
        client.cookies.set(COOKIE, other.issue("operator"))
        assert client.get("/api/status").status_code == 401
        client.cookies.clear()
        sign_in(client)
        genuine = client.cookies[COOKIE]
        name, expires, nonce, mac = genuine.split(".")
        client.cookies.clear()
        client.cookies.set(COOKIE, ".".join([name, str(int(expires) + 3600), nonce, mac]))
        assert client.get("/api/status").status_code == 401
        client.cookies.clear()
        client.cookies.set(COOKIE, genuine)
        assert client.get("/api/status").status_code == 200
        now[0] += 61
        assert client.get("/api/status").status_code == 401


def test_signing_out_ends_the_session_in_the_browser(client: TestClient) -> None:
    """Sign out (a form post with its token) clears the cookie."""
    csrf = sign_in(client)
    answer = client.post("/logout", data={"csrf": csrf}, headers={"Origin": HERE})
    assert answer.status_code == 303
    assert "Max-Age=0" in answer.headers["set-cookie"] or "expires=" in answer.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/").status_code == 401


# -- actions and their trail --------------------------------------------------------------------


@pytest.mark.slow
def test_confirming_in_the_form_rolls_back_and_logs_who_and_why(
    client: TestClient, flags: ModelFlags, tmp_path: Path
) -> None:
    """Confirm with a reason: the LKG serves, and the decision log names the operator and the
    reason; the page shows the action."""
    propose_rollback(flags)
    csrf = sign_in(client)
    answer = post_form(client, "confirm", {"csrf": csrf, "reason": "clicks fell"}, Origin=HERE)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/models/{MODEL}#actions"
    model = flags.get_model(MODEL, "someone")
    assert (model.version, model.requested_version) == ("v1", "v2")
    flags.flush(5)
    lines = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    (action,) = [line for line in lines if "action" in line]
    assert (action["action"], action["version"], action["by"]) == ("rollback", "v2", "operator")
    assert action["reason"] == "confirmed by operator: clicks fell"
    page = client.get(f"/models/{MODEL}").text
    assert "clicks fell" in page and "rolled back" in page
    assert 'data-testid="logged-actions"' in page


def test_each_identity_acts_under_its_own_name(
    flags: ModelFlags, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``tokens=``, the token's name is who acted: in the decision log, on the page and in
    the application's log."""
    serve(flags, 5)
    app = flags.web_app(tokens={"alice": ALICE, "bob": BOB}, sample_s=3600)
    with client_of(app) as client, caplog.at_level(logging.WARNING, "modelflags.web.actions"):
        rolled = client.post(
            f"/api/models/{MODEL}/versions/v2/rollback",
            json={"reason": "latency"},
            headers={"Authorization": f"Bearer {BOB}"},
        )
        released = client.post(
            f"/api/models/{MODEL}/versions/v2/release",
            json={"reason": "fixed"},
            headers={"Authorization": f"Bearer {ALICE}"},
        )
        recent = client.get("/api/status", headers={"Authorization": f"Bearer {ALICE}"}).json()
    assert (rolled.status_code, rolled.json()["by"]) == (200, "bob")
    assert (released.status_code, released.json()["by"]) == (200, "alice")
    assert [(a["by"], a["action"], a["reason"]) for a in recent["actions"]] == [
        ("alice", "release", "fixed"),
        ("bob", "rollback", "latency"),
    ]
    flags.flush(5)
    logged = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [(e["action"], e["by"], e["reason"]) for e in logged if "action" in e] == [
        ("rollback", "bob", "latency"),
        ("release", "alice", "fixed"),
    ]
    assert any("by 'bob'" in r.getMessage() and "latency" in r.getMessage() for r in caplog.records)
    assert all(ALICE not in r.getMessage() and BOB not in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_without_a_decision_log_actions_stay_on_the_page_and_in_the_log(
    workspace: Workspace,
    trained: dict[str, LogisticRegression],
    set_flags: Callable[..., None],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No decision log: the page says so, keeps the action in memory and logs it at WARNING."""
    set_flags(**{MODEL: "v2"})
    with ModelFlags(
        write_registry(workspace, trained), clock=clock, guardrail_interval=3600
    ) as flags:
        propose_rollback(flags)
        with client_of(flags.web_app(token=TOKEN, sample_s=3600)) as client:
            csrf = sign_in(client)
            with caplog.at_level(logging.WARNING, "modelflags.web.actions"):
                fields = {"csrf": csrf, "reason": "keep it"}
                assert post_form(client, "dismiss", fields, Origin=HERE).status_code == 303
            page = client.get(f"/models/{MODEL}").text
            data = client.get("/api/status").json()
    assert "has no decision log" in page and "keep it" in page
    assert data["decision_log"] is False
    assert data["actions"][0]["action"] == "dismiss" and data["actions"][0]["result"] == "done"
    assert any("dismiss of model 'churn'" in record.getMessage() for record in caplog.records)


# -- what the pages show ------------------------------------------------------------------------


@pytest.mark.slow
def test_pages_escape_user_data(client: TestClient, flags: ModelFlags) -> None:
    """Metadata and reasons are text, never markup."""
    propose_rollback(flags)
    csrf = sign_in(client)
    reason = '<img src=x onerror="alert(2)">'
    assert post_form(
        client, "dismiss", {"csrf": csrf, "reason": reason}, Origin=HERE
    ).status_code == (303)
    page = client.get(f"/models/{MODEL}").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=" in page


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    """No inline script or style, no framing, nothing cached; the static files exist."""
    answer = client.get("/", headers=BEARER)
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
    assert "<script>" not in answer.text and "style=" not in answer.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/refresh.js").status_code == 200


@pytest.mark.slow
def test_the_overview_shows_split_lkg_proposals_and_guardrails(
    client: TestClient, flags: ModelFlags
) -> None:
    """After traffic and a proposal: the split of answered requests, the LKG, the proposal and
    the guardrail verdict, in the page and in the JSON."""
    propose_rollback(flags)
    data = client.get("/api/status", headers=BEARER).json()
    model = data["models"][MODEL]
    assert model["lkg"] == "v1" and model["requests"] == 600
    assert [(p["version"], p["share"]) for p in model["split"]] == [("v1", 0.5), ("v2", 0.5)]
    assert [p["version"] for p in model["proposals"]] == ["v2"]
    assert model["guardrails"]["verdict"] == "fired"
    assert data["flag_source"]["state"] == "ready"
    page = client.get("/", headers=BEARER).text
    assert 'data-testid="split-churn">v1 50.0% · v2 50.0%<' in page
    assert 'data-testid="proposal-churn-v2"' in page and "verdict-fired" in page


@pytest.mark.slow
def test_the_model_page_shows_evidence_series_lineage_and_decisions(
    client: TestClient, flags: ModelFlags
) -> None:
    """The model page: the rule's evidence, charts over time, lineage, the decision log."""
    propose_rollback(flags)
    data = client.get(f"/api/models/{MODEL}", headers=BEARER).json()
    (rule,) = data["guardrails"]["rules"]
    assert (rule["rule"], rule["metric"], rule["verdict"]) == (
        "max_outcome_drop",
        "correct",
        "fired",
    )
    assert rule["estimate"] < rule["limit"] < rule["lkg_estimate"]
    assert set(data["series"]) == {"v1", "v2"}
    assert data["lineage"]["v1"]["metadata"]["git_commit"] == "4e1d0c2"
    assert data["outcomes"]["v1"]["correct"]["count"] == 300
    assert data["decisions"] and data["decisions"][-1]["model"] == MODEL
    assert data["drift"] is None and data["shadow"] == []
    page = client.get(f"/models/{MODEL}", headers=BEARER).text
    assert page.count("<svg") >= 7  # split, four series, one outcome series, one interval chart
    assert "correct: candidates against the LKG" in page
    assert "4e1d0c2" in page


@pytest.mark.slow
def test_the_app_mounts_under_a_prefix(flags: ModelFlags) -> None:
    """Mounted at /modelflags in a Starlette app: links, cookie and redirects carry the prefix."""
    propose_rollback(flags)
    host = Starlette(routes=[Mount("/modelflags", flags.web_app(token=TOKEN, sample_s=3600))])
    with TestClient(host, base_url=HERE, follow_redirects=False) as client:
        assert client.get("/modelflags/").status_code == 401
        answer = client.post(
            "/modelflags/login",
            data={"token": TOKEN, "next": "/modelflags/"},
            headers={"Origin": HERE},
        )
        assert "Path=/modelflags/" in answer.headers["set-cookie"]
        page = client.get(f"/modelflags/models/{MODEL}").text
        assert 'href="/modelflags/static/style.css"' in page
        assert f'action="/modelflags/models/{MODEL}/versions/v2/confirm"' in page
        fields = {"csrf": csrf_of(page), "reason": "mounted"}
        done = client.post(
            f"/modelflags/models/{MODEL}/versions/v2/confirm", data=fields, headers={"Origin": HERE}
        )
    assert done.headers["location"] == f"/modelflags/models/{MODEL}#actions"
    assert flags.status()[MODEL].rolled_back == ("v2",)


def test_closing_modelflags_stops_the_page_sampler(flags: ModelFlags) -> None:
    """The sampler starts with the first page and stops when the ModelFlags closes."""
    app = flags.web_app(token=TOKEN, sample_s=3600)
    assert not app.sampler.running
    with client_of(app) as client:
        assert client.get("/api/status", headers=BEARER).status_code == 200
        assert app.sampler.running
        flags.close()
        assert not app.sampler.running
