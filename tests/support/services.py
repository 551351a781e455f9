"""What the tests need from the machine: skip (or fail under CI) when it is missing; Chromium.

``unavailable(reason)`` is the one rule for services: on a machine without them the tests that
need them are skipped with the reason; under ``CI=true`` they fail instead, so CI never skips
silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

__all__ = ["CHROMIUM_ARGS", "browser", "chromium_path", "unavailable", "under_ci"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def under_ci() -> bool:
    """True when ``CI=true``: services must be there, so a missing one is a failure."""
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it under ``CI=true``."""
    if under_ci():
        pytest.fail(f"{reason} (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    """Debian's Chromium, or ``$MODELFLAGS_CHROMIUM``."""
    return os.environ.get("MODELFLAGS_CHROMIUM") or "/usr/bin/chromium"


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser); closed
    after the test. Skipped (failed under ``CI=true``) when either is not installed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright Python package is not installed (pip install playwright)")
    chromium = chromium_path()
    if shutil.which(chromium) is None:
        unavailable(f"{chromium} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
