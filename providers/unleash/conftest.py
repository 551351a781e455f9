"""pytest wiring for tests that need the local Unleash stack.

Fixtures:
    unleash_stack   session: a running stack (StackInfo), started on demand and stopped at the
                    end of the session if this session started it (set MODELFLAGS_UNLEASH_KEEP=1
                    to keep it running for the next run)
    unleash_admin   session: UnleashAdmin for that stack
    flag_name       a unique flag name; the flag is deleted after the test
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from unleash_stack import StackInfo, UnleashAdmin, start_stack, stop_stack  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "unleash: needs the Unleash + PostgreSQL stack from providers/unleash (started on demand)",
    )


@pytest.fixture(scope="session")
def unleash_stack() -> Iterator[StackInfo]:
    stack = start_stack()
    yield stack
    if not stack.reused and os.environ.get("MODELFLAGS_UNLEASH_KEEP", "") in ("", "0"):
        stop_stack(stack.dir or None)


@pytest.fixture(scope="session")
def unleash_admin(unleash_stack: StackInfo) -> Iterator[UnleashAdmin]:
    with UnleashAdmin.for_stack(unleash_stack) as admin:
        yield admin


@pytest.fixture
def flag_name(unleash_admin: UnleashAdmin) -> Iterator[str]:
    name = f"mf-test-{uuid.uuid4().hex[:10]}"
    yield name
    unleash_admin.delete_flag(name)
