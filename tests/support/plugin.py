"""The tests' pytest plugin: every shared fixture, defined once, registered by the conftests.

A conftest registers it with::

    from support.plugin import register

    def pytest_configure(config: pytest.Config) -> None:
        register(config)

Fixtures: ``artifact_server`` (:mod:`support.artifact_server`), ``browser``
(:mod:`support.services`), ``unleash_stack``, ``unleash_admin``, ``flag_name`` and
``unleash_provider`` (:mod:`support.unleash`).
"""

from __future__ import annotations

import sys

import pytest

from support.artifact_server import artifact_server, running_artifact_server
from support.services import browser
from support.unleash import (
    flag_name,
    stop_stack_left_by_tests,
    unleash_admin,
    unleash_provider,
    unleash_stack,
)

__all__ = [
    "artifact_server",
    "browser",
    "flag_name",
    "register",
    "running_artifact_server",
    "unleash_admin",
    "unleash_provider",
    "unleash_stack",
]

NAME = "modelflags-test-support"


def register(config: pytest.Config) -> None:
    """Register this plugin with ``config`` once, however many conftests ask."""
    if not config.pluginmanager.has_plugin(NAME):
        config.pluginmanager.register(sys.modules[__name__], NAME)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """At the end of the run (in the main process, after every worker is done): stop a stack
    that test processes started and that nobody uses any more, such as one a crashed worker
    left behind."""
    if not hasattr(session.config, "workerinput"):
        stop_stack_left_by_tests()
