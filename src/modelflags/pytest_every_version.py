"""The ``every_model_version`` marker of the pytest plugin: a test run once per version that may
serve, so that every rollback target is tested by the same tests as the latest version::

    @pytest.mark.every_model_version("recommender")
    def test_recommends_items_the_user_has_not_bought(app, model_version):
        ...                                   # runs as test_...[recommender=v1], [recommender=v2]

Each run pins the model to one version (every :class:`~modelflags.ModelFlags` of the process
serves it, as with the ``model_versions`` marker) from setup to teardown; the ``model_version``
fixture gives its id. The versions are those of the registry that are not archived, read at
collection from the marker's ``registry=`` argument (relative to the rootdir) or the
``modelflags_registry`` ini option (relative to the ini file's folder).

Loaded by :mod:`modelflags.pytest_plugin` (its ``pytest_plugins``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from modelflags.errors import RegistryError
from modelflags.registry import load_registry
from modelflags.serving import pins

__all__ = ["VersionUnderTest", "model_version"]

INI_OPTION = "modelflags_registry"
_MARKER = "every_model_version"
_USAGE = (
    "@pytest.mark.every_model_version('recommender', registry='models/registry.toml') "
    f"(or set {INI_OPTION} = models/registry.toml in the pytest configuration)"
)


@dataclass(frozen=True)
class VersionUnderTest:
    """The model, version and registry file of one run of a marked test. Immutable."""

    model: str
    version: str
    registry: Path


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the ``modelflags_registry`` ini option."""
    parser.addini(
        INI_OPTION,
        "registry file whose versions @pytest.mark.every_model_version runs tests with "
        "(relative to the configuration file's folder)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``every_model_version`` marker."""
    config.addinivalue_line(
        "markers",
        "every_model_version(model, registry=None): run the test once per version of the model "
        "that is not archived, with that version pinned (modelflags)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize a marked test with the versions of its model that are not archived."""
    marker = metafunc.definition.get_closest_marker(_MARKER)
    if marker is None:
        return
    model, path = _arguments(marker, metafunc.config, metafunc.definition.nodeid)
    try:
        registry = load_registry(path)
    except RegistryError as exc:
        _usage(f"{metafunc.definition.nodeid}: {exc}")
    spec = registry.models.get(model)
    if spec is None:
        known = ", ".join(sorted(registry.models)) or "none"
        _usage(f"{metafunc.definition.nodeid}: no model {model!r} in {path} (known: {known})")
    versions = [v for v, version in spec.versions.items() if version.stage != "archived"]
    if not versions:
        _usage(
            f"{metafunc.definition.nodeid}: every version of model {model!r} in {path} is archived"
        )
    metafunc.parametrize(
        "_modelflags_version_under_test",
        [VersionUnderTest(model, version, path) for version in versions],
        ids=[f"{model}={version}" for version in versions],
        indirect=True,
    )


def _usage(message: str) -> NoReturn:
    """Fail the collection (or setup) with ``message`` alone: a usage error, not a traceback."""
    pytest.fail(message, pytrace=False)


def _arguments(marker: pytest.Mark, config: pytest.Config, where: str) -> tuple[str, Path]:
    unknown = set(marker.kwargs) - {"model", "registry"}
    model = marker.args[0] if marker.args else marker.kwargs.get("model")
    if unknown or len(marker.args) > 1 or not isinstance(model, str) or not model:
        _usage(f"{where}: every_model_version takes one model name: {_USAGE}")
    given = marker.kwargs.get("registry")
    if given is not None:
        return model, config.rootpath / Path(given)
    configured = str(config.getini(INI_OPTION) or "").strip()
    if not configured:
        _usage(f"{where}: every_model_version needs a registry: {_USAGE}")
    folder = config.inipath.parent if config.inipath is not None else config.rootpath
    return model, folder / configured


@pytest.fixture(autouse=True)
def _modelflags_version_under_test(
    request: pytest.FixtureRequest,
) -> Iterator[VersionUnderTest | None]:
    """Pin the version a marked test runs with, from setup to teardown (None when unmarked)."""
    under_test: VersionUnderTest | None = getattr(request, "param", None)
    if under_test is None:
        yield None
        return
    token = pins.push({under_test.model: under_test.version})
    try:
        yield under_test
    finally:
        pins.pop(token)


@pytest.fixture
def model_version(_modelflags_version_under_test: VersionUnderTest | None) -> str:
    """The version id a test marked ``every_model_version`` runs with in this run."""
    if _modelflags_version_under_test is None:
        _usage(f"the model_version fixture needs {_USAGE}")
    return _modelflags_version_under_test.version
