"""The status page in a real browser: an operator reads the split and a breach, refuses nothing
forged, confirms a proposed rollback, and sees the last known good version serve.

Headless Debian Chromium driven by Playwright (never a downloaded browser) loads the pages of a
real server on 127.0.0.1 (``flags.serve_status``) while a thread serves traffic through a real
ModelFlags: real scikit-learn models, flags from a flagd file in FILE mode with a ``fractional``
split. Guardrails are checked by hand and the metrics window moved with a fake clock. The run
saves screenshots of the overview and of the model page; with ``MODELFLAGS_SCREENSHOTS=1`` it
saves them into ``docs/images/`` (the README shows them), otherwise into the test's own folder,
so a run never changes the checkout.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from sklearn.linear_model import LogisticRegression

from modelflags import ModelFlags

from support import FakeClock, Workspace
from web_fixtures import GUARDRAILS, MODEL, TOKEN, serve

try:
    from playwright.sync_api import APIRequestContext, Browser, Page, expect, sync_playwright
except ImportError:  # reported by the browser fixture: a skip, or a failure under CI=true
    sync_playwright = None

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 20_000
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
RANKER = "ranker"
TRAFFIC_BOUND = 200_000
"""Requests the traffic thread serves at most (it is stopped long before)."""


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail under ``CI=true`` (CI must never skip silently)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright."""
    if sync_playwright is None:
        unavailable("the playwright Python package is not installed (pip install playwright)")
    if shutil.which(CHROMIUM) is None:
        unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def flags(
    workspace: Workspace, trained: dict[str, LogisticRegression], tmp_path: Path, clock: FakeClock
) -> Iterator[ModelFlags]:
    """``churn`` split 70/30 between v1 and v2 (worse at its job, watched by a guardrail that
    asks a person); ``ranker`` split 50/50 between v1 and a v2 that raises on every call (fitted
    on four features, asked with three)."""
    rng = np.random.RandomState(3)
    four = rng.rand(100, 4)
    workspace.add(MODEL, "v1", trained["v1"], metadata={"git_commit": "4e1d0c2", "auc": 0.93})
    workspace.add(MODEL, "v2", trained["v2"], metadata={"git_commit": "9a7b3f1", "auc": 0.91})
    workspace.set(MODEL, guardrails=GUARDRAILS)
    workspace.add(RANKER, "v1", trained["v1"], metadata={"git_commit": "1c0ffee"})
    workspace.add(RANKER, "v2", LogisticRegression().fit(four, (four[:, 3] > 0.5).astype(int)))
    flag_file = tmp_path / "flags.json"
    flag_file.write_text(json.dumps({"flags": {MODEL: _split(70), RANKER: _split(50)}}))
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE,
            offline_flag_source_path=str(flag_file),
            deadline_ms=50,
        )
    )
    try:
        with ModelFlags(
            workspace.write(),
            clock=clock,
            metrics=True,
            guardrail_interval=3600,  # checked by hand below
            decision_log=tmp_path / "decisions.jsonl",
        ) as made:
            yield made
    finally:
        api.shutdown()


def _split(v1_share: int) -> dict[str, object]:
    return {
        "state": "ENABLED",
        "variants": {"v1": "v1", "v2": "v2"},
        "defaultVariant": "v1",
        "targeting": {"fractional": [["v1", v1_share], ["v2", 100 - v1_share]]},
    }


@pytest.fixture
def traffic(flags: ModelFlags) -> Iterator[threading.Event]:
    """A thread serving both models until the test ends (bounded)."""
    stop = threading.Event()

    def run() -> None:
        rng = np.random.RandomState(5)
        for batch in range(TRAFFIC_BOUND // 20):
            if stop.is_set():
                return
            serve(flags, 10, seed=100 + batch, prefix="live")
            for i in range(10):
                flags.get_model(RANKER, f"ranker-{batch}-{i}").predict(rng.rand(1, 3))

    thread = threading.Thread(target=run, name="test-traffic", daemon=True)
    thread.start()
    yield stop
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture
def forger() -> Iterator[str]:
    """Another origin (another port on 127.0.0.1) whose page posts a form to the status page as
    soon as it loads, with no form token (it cannot read one): ``{url}/?target=...``."""

    class Forger(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            target = self.path.split("target=", 1)[1]
            body = (
                "<!doctype html><form id=f method=post action='" + target + "'>"
                "<input name=reason value='forged'></form>"
                "<script>document.getElementById('f').submit()</script>"
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forger)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="test-forger", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _shares(text: str) -> dict[str, float]:
    return {v: float(share) / 100 for v, share in re.findall(r"(\w+) ([\d.]+)%", text)}


def test_an_operator_confirms_a_proposed_rollback_in_the_browser(
    browser: Browser,
    flags: ModelFlags,
    traffic: threading.Event,
    forger: str,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """The overview shows the split and then the breach; a forged cross-site post is refused;
    Confirm on the model page rolls v2 back and the page shows v1 answering everything."""
    images = DOCS_IMAGES if os.environ.get("MODELFLAGS_SCREENSHOTS") == "1" else tmp_path
    images.mkdir(parents=True, exist_ok=True)
    with flags.serve_status(token=TOKEN, sample_s=0.5) as server:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = context.new_page()
        try:
            log = tmp_path / "decisions.jsonl"
            _run(page, server.url, flags, forger, clock, context.request, log, images)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            context.close()


def _run(
    page: Page,
    url: str,
    flags: ModelFlags,
    forger: str,
    clock: FakeClock,
    request: APIRequestContext,
    decision_log: Path,
    images: Path,
) -> None:
    # Without the token: 401 for the page and for the JSON.
    first = page.goto(url + "/")
    assert first is not None and first.status == 401
    assert request.get(url + "/api/status").status == 401
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("identity")).to_have_text("operator")

    # The live split of answered requests, read from the page as it refreshes.
    split = page.get_by_test_id(f"split-{MODEL}")
    expect(split).to_contain_text("v2")
    shares: dict[str, float] = {}
    for _ in range(100):
        shares = _shares(split.inner_text())
        if sum(flags.metrics(MODEL)[v].requests for v in flags.metrics(MODEL)) >= 300:
            break
        page.wait_for_timeout(200)
    shares = _shares(split.inner_text())
    assert set(shares) == {"v1", "v2"} and 0.55 < shares["v1"] < 0.85, shares
    expect(page.get_by_test_id(f"split-{RANKER}")).to_contain_text("v1 100.0%")

    # The guardrail fires and proposes; the page shows it on its next refresh.
    breaches = flags.check_guardrails()
    assert [(b.version, b.rule) for b in breaches] == [("v2", "max_outcome_drop")]
    expect(page.get_by_test_id(f"proposal-{MODEL}-v2")).to_be_visible()
    expect(page.locator(f'section[data-model="{MODEL}"] .verdict-fired').first).to_be_visible()
    page.screenshot(path=str(images / "status-overview.png"), full_page=True)

    # A forged post from another origin, with the operator's cookie, is refused.
    target = f"{url}/models/{MODEL}/versions/v2/confirm"
    forged = page.context.new_page()
    with forged.expect_response(target) as answer:
        forged.goto(f"{forger}/?target={target}")
    assert answer.value.status == 403
    forged.close()
    assert [p.version for p in flags.status()[MODEL].proposals] == ["v2"]

    # The model page: evidence, then Confirm with a reason.
    page.get_by_role("link", name="Decide").click()
    expect(page.get_by_test_id("proposal-v2")).to_be_visible()
    expect(page.get_by_test_id("guardrails")).to_contain_text("max_outcome_drop")
    page.screenshot(path=str(images / "status-model.png"), full_page=True)
    page.get_by_test_id("reason-confirm-v2").fill("correct answers fell by a third")
    page.get_by_test_id("confirm-v2").click()
    expect(page.get_by_test_id("state-v2")).to_contain_text("rolled back")
    expect(page.locator("#actions")).to_contain_text("correct answers fell by a third")
    expect(page.get_by_test_id("logged-actions")).to_contain_text("correct answers fell by a third")
    assert flags.get_model(MODEL, "someone-new").version == "v1"

    # Once the old requests leave the window, the page shows v1 answering all of them.
    clock.advance(61)
    expect(page.get_by_test_id("split")).to_have_text("v1 100.0%", timeout=UI_TIMEOUT_MS)
    flags.flush(5)
    # The log rotates past 10 MiB under this traffic: the action is in the current file or
    # the rotated one.
    rotated = decision_log.with_name(decision_log.name + ".1")
    log = [
        *(rotated.read_text().splitlines() if rotated.exists() else []),
        *decision_log.read_text().splitlines(),
    ]
    (action,) = [e for e in map(json.loads, log) if e.get("action") == "rollback"]
    assert action["by"] == "operator" and "correct answers fell" in action["reason"]
