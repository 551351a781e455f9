"""The fixtures for services skip with the reason when a service is absent, and fail under CI.

A pytest run inside the test, with PostgreSQL, unleash-server and Chromium pointed at folders
that do not exist: each test needing them is skipped with what is missing and nothing is
started; with ``CI=true`` the same tests fail instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.unleash import STARTED_BY_TESTS

CONFTEST = """
import pytest

from support.plugin import register


def pytest_configure(config: pytest.Config) -> None:
    register(config)
"""

TESTS = """
def test_needs_the_stack(unleash_stack):
    pass


def test_needs_the_admin_api(unleash_admin):
    pass


def test_needs_a_flag(flag_name):
    pass


def test_needs_a_provider(unleash_provider):
    pass


def test_needs_chromium(browser):
    pass
"""


@pytest.fixture
def absent(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A pytest project using the service fixtures on a machine where the services are absent;
    returns the (empty) Unleash stack folder."""
    stack = tmp_path / "stack"
    monkeypatch.setenv("MODELFLAGS_UNLEASH_DIR", str(stack))
    monkeypatch.setenv("MODELFLAGS_PG_BIN", str(tmp_path / "no-postgresql"))
    monkeypatch.setenv("MODELFLAGS_UNLEASH_NODE_DIR", str(tmp_path / "no-node-modules"))
    monkeypatch.setenv("MODELFLAGS_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("MODELFLAGS_UNLEASH_KEEP", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_services=TESTS)
    return stack


@pytest.mark.slow
def test_service_fixtures_skip_with_the_reason_when_services_are_absent(
    pytester: pytest.Pytester, absent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test needing a missing service is skipped, saying what is missing and how to get
    it; nothing is started."""
    monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:benchmark", "-n", "0", "-rs")
    result.assert_outcomes(skipped=5)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED*cannot start the Unleash stack, not installed: PostgreSQL 15 (initdb, pg_ctl,"
            "*unleash-server 8.x in*install.sh*",
            "SKIPPED*no-chromium is not installed (apt-get install chromium)*",
        ]
    )
    assert not (absent / "pg").exists()
    assert not (absent / STARTED_BY_TESTS).exists()


@pytest.mark.slow
def test_service_fixtures_fail_under_ci_when_services_are_absent(
    pytester: pytest.Pytester, absent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``CI=true`` the same tests fail (CI never skips silently), with the same reasons."""
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:benchmark", "-n", "0")
    result.assert_outcomes(errors=5)
    result.stdout.fnmatch_lines(
        [
            "*cannot start the Unleash stack, not installed: PostgreSQL 15*(CI=true: not skipping)",
            "*no-chromium is not installed (apt-get install chromium) (CI=true: not skipping)",
        ]
    )
    assert not (absent / "pg").exists()
