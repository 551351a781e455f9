"""The local Unleash 8 + PostgreSQL 15 stack of ``services/unleash`` for tests: one fixture.

Fixtures (registered by :mod:`support.plugin`):
    unleash_stack     session: a running stack (``StackInfo``), reused or started on demand
    unleash_admin     session: an ``UnleashAdmin`` client of its admin API
    flag_name         a unique flag name; the flag is deleted after the test
    unleash_provider  a factory of ``UnleashProvider`` with its own cache folder and a 1 s refresh

When PostgreSQL, Node or unleash-server are not installed the tests that need the stack are
skipped with the reason (nothing is started), except under ``CI=true``, where they fail.

Who stops the stack: a stack that was running before the tests (started by ``start.py``, by CI or
by hand) is never stopped by them. One that a test run started is stopped at the end of the run
by its main process (with pytest-xdist, once every worker is done, so a crashed worker leaves
nothing running either), unless another test run still uses it: every process using the stack
holds a shared lock on ``DIR/test-runs.lock``, and the stack is only stopped by a process that
can take that lock exclusively; the last run to finish does. ``MODELFLAGS_UNLEASH_KEEP=1`` keeps
a stack the tests started running for the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from support.services import unavailable

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "unleash"
if str(SERVICE_DIR) not in sys.path:
    sys.path.insert(0, str(SERVICE_DIR))

from unleash_stack import (  # noqa: E402
    MissingPrerequisites,
    StackError,
    StackInfo,
    UnleashAdmin,
    UnleashAdminError,
    default_dir,
    start_stack,
    stop_stack,
)

__all__ = [
    "CHANGE_BOUND",
    "REFRESH_INTERVAL",
    "SERVICE_DIR",
    "StackInfo",
    "UnleashAdmin",
    "UnleashAdminError",
    "create_rollout",
    "flag_name",
    "release_stack",
    "stop_stack_left_by_tests",
    "unleash_admin",
    "unleash_provider",
    "unleash_stack",
]

REFRESH_INTERVAL = 1
"""UnleashClient's poll interval in these tests, in seconds (it takes whole seconds)."""
SERVER_REVISION_TICK = 1.0
"""The server recomputes the revision keying its client-features cache once a second, so a
change can reach a poll one tick late."""
SLACK = 1.0
"""Extra slack for a busy 2-core machine."""
CHANGE_BOUND = REFRESH_INTERVAL + SERVER_REVISION_TICK + SLACK
"""Seconds within which a change made through the admin API must be followed by the SDK."""

LEASE_FILE = "test-runs.lock"
"""Every test process using the stack holds a shared lock on this file in the stack folder."""
STARTED_BY_TESTS = "started-by-tests"
"""Present in the stack folder while the running stack was started by a test process."""


def _keep() -> bool:
    return os.environ.get("MODELFLAGS_UNLEASH_KEEP", "") not in ("", "0")


def _lease(root: Path) -> IO[str]:
    """A shared lock on the stack folder's lease file, held until the file is closed."""
    root.mkdir(parents=True, exist_ok=True)
    lease = open(root / LEASE_FILE, "a")  # noqa: SIM115 - held for the session
    fcntl.flock(lease, fcntl.LOCK_SH)
    return lease


def release_stack(root: Path, lease: IO[str] | None = None) -> bool:
    """Give up this process's use of the stack in ``root``; stop it when the tests started it
    and no other test process uses it. True when it was stopped here."""
    marker = root / STARTED_BY_TESTS
    try:
        if lease is None:
            if not marker.exists():
                return False
            lease = open(root / LEASE_FILE, "a")  # noqa: SIM115 - closed below
        if _keep():
            marker.unlink(missing_ok=True)  # handed over: not the tests' to stop any more
            return False
        try:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another test process still uses it; the last one stops it
        if not marker.exists():
            return False
        stop_stack(root)
        marker.unlink(missing_ok=True)
        return True
    finally:
        if lease is not None:
            lease.close()


def stop_stack_left_by_tests() -> bool:
    """At the end of a test run: stop a stack that test processes started and nobody uses."""
    root = default_dir()
    return root.is_dir() and release_stack(root)


@pytest.fixture(scope="session")
def unleash_stack(request: pytest.FixtureRequest) -> Iterator[StackInfo]:
    """The running stack: reused, or started here and then stopped at the end of the run (unless
    another test run still uses it). Skipped, or failed under ``CI=true``, when the programs it
    needs are not installed."""
    root = default_dir().resolve()
    lease = _lease(root)
    marker = root / STARTED_BY_TESTS
    # Marked before starting: a test process killed while the stack starts leaves it to the
    # run's final check, not running for ever.
    marked_here = not marker.exists()
    if marked_here:
        marker.write_text(f"pid {os.getpid()}\n")
    try:
        stack = start_stack(root)  # reuses a running stack without needing any program
    except StackError as exc:
        if marked_here:
            marker.unlink(missing_ok=True)
        lease.close()
        if isinstance(exc, MissingPrerequisites):
            unavailable(str(exc))
        pytest.fail(f"the Unleash stack did not start: {exc}", pytrace=False)
    if stack.reused and marked_here:
        marker.unlink(missing_ok=True)  # it ran before the tests: not theirs to stop
    try:
        yield stack
    finally:
        if hasattr(request.config, "workerinput"):
            # A pytest-xdist worker tears session fixtures down whenever its queue runs dry and
            # sets them up again if it gets more tests: only the main process stops the stack,
            # once every worker is done (pytest_sessionfinish in support.plugin).
            lease.close()
        else:
            release_stack(root, lease)


@pytest.fixture(scope="session")
def unleash_admin(unleash_stack: StackInfo) -> Iterator[UnleashAdmin]:
    """An admin API client of the stack (project ``default``, environment ``development``)."""
    with UnleashAdmin.for_stack(unleash_stack) as admin:
        yield admin


@pytest.fixture
def flag_name(unleash_admin: UnleashAdmin, request: pytest.FixtureRequest) -> Iterator[str]:
    """A flag name no other test uses; the flag is archived and deleted after the test."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"mf-{stem}-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        unleash_admin.delete_flag(name)
    except UnleashAdminError as exc:
        if exc.status_code != 404:  # never created by the test
            raise


@pytest.fixture
def unleash_provider(unleash_stack: StackInfo, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``unleash_provider(api_token=None)`` builds an ``UnleashProvider`` reading the stack with
    a 1 s refresh and its own cache folder (the client token unless given); each is shut down and
    OpenFeature's providers are cleared after the test."""
    from openfeature import api
    from openfeature.contrib.provider.unleash import UnleashProvider
    from UnleashClient.cache import FileCache

    providers: list[UnleashProvider] = []

    def build(api_token: str | None = None) -> UnleashProvider:
        app_name = f"modelflags-tests-{uuid.uuid4().hex[:8]}"
        provider = UnleashProvider(
            url=f"{unleash_stack.url}/api",
            app_name=app_name,
            api_token=api_token or unleash_stack.client_token,
            # Not the default FileCache under the home cache folder.
            cache=FileCache(app_name, directory=str(tmp_path / "unleash-cache")),
        )
        # Not a constructor argument: set it before initialize() starts the poller.
        provider.client.unleash_refresh_interval = REFRESH_INTERVAL
        providers.append(provider)
        return provider

    yield build
    for provider in providers:
        with contextlib.suppress(Exception):  # already shut down by the test
            provider.shutdown()
    api.clear_providers()


def create_rollout(admin: UnleashAdmin, name: str, weights: dict[str, int], **options: Any) -> None:
    """Create ``name`` with one variant per version (payload = version id unless ``payloads``
    say otherwise) and turn it on."""
    admin.create_flag(name, description="modelflags test flag")
    admin.set_variants_rollout(name, weights, **options)
    admin.enable(name)
