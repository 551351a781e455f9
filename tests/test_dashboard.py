"""An operator toggles a model's flag in Unleash's web UI; the SDK follows.

Headless Debian Chromium driven by Playwright (never a downloaded browser): log in with the
default account, switch the flag off and on in the ``development`` environment, and watch
``ModelFlags.get_model`` serve the default (the last known good version) and then the variant
again. Screenshots land in the test's ``tmp_path`` for debugging.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from openfeature import api

from modelflags import ModelFlags

from models import Constant
from support import Workspace, wait_until
from support.unleash import CHANGE_BOUND, StackInfo, UnleashAdmin, create_rollout

if TYPE_CHECKING:  # imported when the test runs (the browser fixture reports a missing one)
    from openfeature.contrib.provider.unleash import UnleashProvider
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.unleash, pytest.mark.slow]

UI_TIMEOUT_MS = 20_000
MODEL = "churn"


@pytest.fixture
def dashboard(browser: Browser, unleash_stack: StackInfo) -> Iterator[Page]:
    """A page logged in to Unleash's web UI (admin / unleash4all)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{unleash_stack.url}/login")
    page.locator("input[name=username]").fill(unleash_stack.ui_username)
    page.locator("input[name=password]").fill(unleash_stack.ui_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def registry(workspace: Workspace, flag_name: str) -> Path:
    """``churn`` read from the test's flag: v0 is the registry default, v1 and v2 are flagged."""
    for label, version in enumerate(("v0", "v1", "v2")):
        workspace.add(MODEL, version, Constant(label))
    workspace.set(MODEL, flag=flag_name, default_version="v0")
    return workspace.write()


def test_toggling_the_flag_in_the_web_ui_switches_the_served_model(
    dashboard: Page,
    unleash_stack: StackInfo,
    unleash_admin: UnleashAdmin,
    flag_name: str,
    registry: Path,
    unleash_provider: Callable[[], UnleashProvider],
    tmp_path: Path,
) -> None:
    """Off in the dashboard: the default (LKG) is served; on again: the flagged variant."""
    from playwright.sync_api import expect

    create_rollout(unleash_admin, flag_name, {"v1": 100, "v2": 0})
    api.set_provider_and_wait(unleash_provider())
    page = dashboard
    seen: dict[str, float] = {}
    try:
        with ModelFlags(registry) as flags:
            wait_until(
                lambda: flags.get_model(MODEL, "user-1").variant == "v1",
                CHANGE_BOUND,
                "the new flag serving v1",
            )
            assert flags.get_model(MODEL, "user-1").version == "v1"

            page.goto(f"{unleash_stack.url}/projects/default/features/{flag_name}")
            toggle = page.get_by_test_id(f"TOGGLE-{flag_name}-development").get_by_role("switch")
            expect(toggle).to_be_checked()

            toggle.click()
            expect(toggle).not_to_be_checked()
            expect(page.get_by_text("Disabled in development")).to_be_visible()
            clicked = time.monotonic()
            page.screenshot(path=str(tmp_path / "flag-off.png"), full_page=True)
            assert not _enabled(unleash_admin, flag_name)  # the click reached the server
            wait_until(
                lambda: flags.get_model(MODEL, "user-1").version == "v0",
                CHANGE_BOUND,
                "the default served after the flag was turned off in the UI",
            )
            seen["off"] = time.monotonic() - clicked
            off = flags.get_model(MODEL, "user-1")
            assert off.version == flags.status()[MODEL].lkg  # the default is the LKG
            assert (str(off.reason), off.variant, off.fell_back) == ("DEFAULT", None, False)

            toggle.click()
            expect(toggle).to_be_checked()
            expect(page.get_by_text("Enabled in development")).to_be_visible()
            clicked = time.monotonic()
            page.screenshot(path=str(tmp_path / "flag-on.png"), full_page=True)
            assert _enabled(unleash_admin, flag_name)
            wait_until(
                lambda: flags.get_model(MODEL, "user-1").version == "v1",
                CHANGE_BOUND,
                "the variant served after the flag was turned on in the UI",
            )
            seen["on"] = time.monotonic() - clicked
            on = flags.get_model(MODEL, "user-1")
            assert (on.variant, str(on.reason)) == ("v1", "TARGETING_MATCH")
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise
    finally:
        api.shutdown()
    print("UI toggles followed after", {step: f"{took:.2f} s" for step, took in seen.items()})


def _enabled(admin: UnleashAdmin, flag: str) -> bool:
    """Whether ``flag`` is on in ``development``, according to the admin API."""
    environments = admin.get_flag(flag)["environments"]
    return bool(next(env for env in environments if env["name"] == "development")["enabled"])
