"""Test support for applications that serve models with modelflags, and its pytest plugin.

The plugin is registered through the ``pytest11`` entry point, so it is active wherever modelflags
is installed. It pins model versions by model name for one test, ahead of flags and override files,
in every :class:`~modelflags.ModelFlags` of the process (including the ones the application under
test makes itself), and undoes the pins when the test ends::

    def test_checkout_uses_the_beta_recommender(model_overrides):
        model_overrides.set(recommender="v2")
        ...

    @pytest.mark.model_versions(recommender="v1", ranker="2024-05")
    def test_with_the_old_models():
        ...

Outside pytest, :func:`pinned` does the same as a context manager.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import pytest

from modelflags.serving import pins

__all__ = ["ModelOverrides", "model_overrides", "pinned"]


@contextlib.contextmanager
def pinned(**versions: str) -> Iterator[None]:
    """Pin models to versions, process-wide, for the block (blocks nest)."""
    token = pins.push(versions)
    try:
        yield
    finally:
        pins.pop(token)


class ModelOverrides:
    """Pins for one test; :meth:`set` adds to them, :meth:`clear` removes them.

    Made by the ``model_overrides`` fixture, which undoes every pin when the test ends.
    Not meant to be shared between threads while pins change.
    """

    def __init__(self) -> None:
        self._tokens: list[int] = []

    def set(self, **versions: str) -> None:
        """Pin these models (by name) to these version ids for the rest of the test."""
        self._tokens.append(pins.push(versions))

    def clear(self) -> None:
        """Remove the pins this object set."""
        if self._tokens:
            pins.pop(self._tokens[0])
            self._tokens.clear()

    @property
    def active(self) -> Mapping[str, str]:
        """Every pin in force in the process now (model name -> version)."""
        return dict(pins.active())


@pytest.fixture
def model_overrides() -> Iterator[ModelOverrides]:
    """Pin model versions for one test: ``model_overrides.set(recommender="v2")``."""
    overrides = ModelOverrides()
    try:
        yield overrides
    finally:
        overrides.clear()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``model_versions`` marker."""
    config.addinivalue_line(
        "markers",
        "model_versions(**versions): pin model versions by model name for this test (modelflags)",
    )


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
