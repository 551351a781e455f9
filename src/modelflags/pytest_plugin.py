"""The pytest plugin of modelflags, registered through the ``pytest11`` entry point.

It is active wherever modelflags is installed, and pins model versions by model name for one test,
ahead of flags and override files, in every :class:`~modelflags.ModelFlags` of the process
(including the ones the application under test makes itself), undoing the pins when the test
ends::

    def test_checkout_uses_the_beta_recommender(model_overrides):
        model_overrides.set(recommender="v2")
        ...

    @pytest.mark.model_versions(recommender="v1", ranker="2024-05")
    def test_with_the_old_models():
        ...

The ``every_model_version`` marker (a test run once per version that may serve, and the
``model_version`` fixture) lives in :mod:`modelflags.pytest_every_version`, loaded from here.

While the plugin is active, instances made without ``validate_input=`` check each call's input
against the model's declared input, so a test feeding a model the wrong features fails with
:class:`~modelflags.errors.InputContractError` instead of a fallback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelflags import options
from modelflags.serving import pins
from modelflags.testing import ModelOverrides

__all__ = ["model_overrides"]

pytest_plugins = ["modelflags.pytest_every_version"]


@pytest.fixture
def model_overrides() -> Iterator[ModelOverrides]:
    """Pin model versions for one test: ``model_overrides.set(recommender="v2")``."""
    overrides = ModelOverrides()
    try:
        yield overrides
    finally:
        overrides.clear()


_VALIDATE = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``model_versions`` marker; validate inputs by default for the session."""
    config.addinivalue_line(
        "markers",
        "model_versions(**versions): pin model versions by model name for this test (modelflags)",
    )
    config.stash[_VALIDATE] = options.set_validate_input_default(True)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the process's default of ``validate_input``."""
    previous = config.stash.get(_VALIDATE, None)
    if previous is not None:
        options.set_validate_input_default(previous)


_TOKEN = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Apply ``@pytest.mark.model_versions(...)`` from setup to teardown (closest marker wins)."""
    versions: dict[str, str] = {}
    for marker in reversed(list(item.iter_markers("model_versions"))):
        if marker.args:
            raise pytest.UsageError(
                "model_versions takes keyword arguments only: "
                "@pytest.mark.model_versions(recommender='v2')"
            )
        versions.update(marker.kwargs)
    if versions:
        item.stash[_TOKEN] = pins.push(versions)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Remove the marker's pins once the test and its fixtures are done."""
    token = item.stash.get(_TOKEN, None)
    if token is not None:
        pins.pop(token)
        del item.stash[_TOKEN]
