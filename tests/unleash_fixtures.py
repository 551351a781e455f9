"""Fixtures for the tests that need the local Unleash 8 + PostgreSQL 15 stack.

Import them into a test module (``from unleash_fixtures import unleash_stack_fixture, ...``:
each is registered under the name without ``_fixture``); nothing is registered in
``conftest.py``. The stack comes from ``providers/unleash`` (``start.py``): it is
reused when it already runs, started otherwise, and stopped at the end of the session only when
this session started it (``MODELFLAGS_UNLEASH_KEEP=1`` keeps it running for the next run).

When PostgreSQL, node or unleash-server are not installed the tests are skipped with the reason,
except under ``CI=true``, where they fail: CI must never skip them silently.

Fixtures:
    unleash_stack     session: a running stack (``StackInfo``)
    unleash_admin     session: an ``UnleashAdmin`` client of its admin API
    flag_name         a unique flag name; the flag is deleted after the test
    unleash_provider  a factory of ``UnleashProvider`` with its own cache folder and a 1 s refresh
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from openfeature.contrib.provider.unleash import UnleashProvider
from UnleashClient.cache import FileCache

ROOT = Path(__file__).resolve().parents[1]
UNLEASH_DIR = ROOT / "providers" / "unleash"
if str(UNLEASH_DIR) not in sys.path:
    sys.path.insert(0, str(UNLEASH_DIR))

from unleash_stack import (  # noqa: E402
    StackInfo,
    UnleashAdmin,
    UnleashAdminError,
    start_stack,
    stop_stack,
)

__all__ = [
    "CHANGE_BOUND",
    "REFRESH_INTERVAL",
    "StackInfo",
    "UnleashAdmin",
    "UnleashAdminError",
    "create_rollout",
    "flag_name_fixture",
    "missing_prerequisites",
    "unavailable",
    "unleash_admin_fixture",
    "unleash_provider_fixture",
    "unleash_stack_fixture",
    "wait_until",
]

REFRESH_INTERVAL = 1
"""UnleashClient's poll interval in these tests, in seconds (it takes whole seconds)."""
SERVER_REVISION_TICK = 1.0
"""The server recomputes the revision keying its client-features cache once a second, so a
change can reach a poll one tick late: the issue's bound is one refresh interval plus 1 s."""
SLACK = 1.0
"""Extra slack for a busy 2-core machine, as the providers/unleash tests found necessary."""
CHANGE_BOUND = REFRESH_INTERVAL + SERVER_REVISION_TICK + SLACK
"""Seconds within which a change made through the admin API must be followed by the SDK."""

_session: dict[str, StackInfo] = {}


def _load_start_script() -> ModuleType:
    """``providers/unleash/start.py`` as a module (under the name its siblings use)."""
    name = "modelflags_unleash_start"
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, UNLEASH_DIR / "start.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def missing_prerequisites() -> list[str]:
    """What is not installed for the stack to start (empty when everything is there)."""
    start = _load_start_script()
    missing = []
    pg_bin = Path(start.PG_BIN)
    absent = [tool for tool in ("initdb", "pg_ctl", "psql") if not (pg_bin / tool).exists()]
    if absent:
        missing.append(f"PostgreSQL 15 ({', '.join(absent)} not in {pg_bin})")
    if shutil.which("node") is None:
        missing.append("node (Node 20 or newer) on PATH")
    if not Path(start.UNLEASH_PACKAGE).exists():
        missing.append(f"unleash-server 8 in {Path(start.UNLEASH_PACKAGE).parents[1]}")
    return missing


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail under ``CI=true`` (CI must never skip silently)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", name="unleash_stack")
def unleash_stack_fixture() -> Iterator[StackInfo]:
    """The running stack: reused, or started here and stopped at the end of the session.

    Each test module that imports this fixture gets its own instance of it; the stack itself is
    started at most once per session and stopped by the instance that started it.
    """
    if "stack" in _session:
        yield _session["stack"]
        return
    try:
        stack = start_stack()  # reuses a running stack without needing any binary
    except RuntimeError as exc:  # StackError
        missing = missing_prerequisites()
        if missing:
            unavailable(
                f"the Unleash stack cannot start: not installed: {'; '.join(missing)} "
                f"(run {UNLEASH_DIR / 'install.sh'})"
            )
        pytest.fail(f"the Unleash stack did not start: {exc}", pytrace=False)
    _session["stack"] = stack
    try:
        yield stack
    finally:
        _session.clear()
        if not stack.reused and os.environ.get("MODELFLAGS_UNLEASH_KEEP", "") in ("", "0"):
            stop_stack(stack.dir or None)


@pytest.fixture(scope="session", name="unleash_admin")
def unleash_admin_fixture(unleash_stack: StackInfo) -> Iterator[UnleashAdmin]:
    """An admin API client of the stack (project ``default``, environment ``development``)."""
    with UnleashAdmin.for_stack(unleash_stack) as admin:
        yield admin


@pytest.fixture(name="flag_name")
def flag_name_fixture(unleash_admin: UnleashAdmin, request: pytest.FixtureRequest) -> Iterator[str]:
    """A flag name no other test uses; the flag is archived and deleted after the test."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"mf-{stem}-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        unleash_admin.delete_flag(name)
    except UnleashAdminError as exc:
        if exc.status_code != 404:  # never created by the test
            raise


@pytest.fixture(name="unleash_provider")
def unleash_provider_fixture(
    unleash_stack: StackInfo, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], UnleashProvider]]:
    """Build UnleashProviders reading the stack with a 1 s refresh and their own cache folder."""
    providers: list[UnleashProvider] = []

    def build() -> UnleashProvider:
        app_name = f"modelflags-tests-{uuid.uuid4().hex[:8]}"
        provider = UnleashProvider(
            url=f"{unleash_stack.url}/api",
            app_name=app_name,
            api_token=unleash_stack.client_token,
            cache=FileCache(app_name, directory=str(tmp_path / "unleash-cache")),
        )
        # Not a constructor argument: set it before initialize() starts the poller.
        provider.client.unleash_refresh_interval = REFRESH_INTERVAL
        providers.append(provider)
        return provider

    yield build
    for provider in providers:
        provider.shutdown()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 20 ms (bounded); return the seconds it took or fail the test."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not seen within {timeout:.1f} s")
        time.sleep(0.02)
    return time.monotonic() - started


def create_rollout(admin: UnleashAdmin, name: str, weights: dict[str, int]) -> None:
    """Create ``name`` with one variant per version (payload = version id) and turn it on."""
    admin.create_flag(name, description="modelflags test flag")
    admin.set_variants_rollout(name, weights)
    admin.enable(name)
