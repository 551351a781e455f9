"""pytest wiring for the stack's own tests: the shared fixtures of ``tests/support``.

``unleash_stack``, ``unleash_admin``, ``flag_name`` and ``unleash_provider`` are defined once, in
``tests/support/unleash.py`` (``tests`` is on ``sys.path`` through the ``pythonpath`` setting in
``pyproject.toml``). Run from the repository root: ``python -m pytest services/unleash``.
"""

from __future__ import annotations

import pytest

from support.plugin import register


def pytest_configure(config: pytest.Config) -> None:
    register(config)
