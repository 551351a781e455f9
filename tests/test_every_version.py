"""The ``every_model_version`` marker: a user's own test run once per version that may serve,
with that version pinned, in a separate pytest run over a real registry of real models."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import modelflags
from modelflags.errors import RegistryError

APP_TESTS = """
import numpy as np
import pytest
from modelflags import ModelFlags
from modelflags.serving import pins

ROWS = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]])


@pytest.fixture
def flags():
    flags = ModelFlags("registry.toml")
    yield flags
    flags.close()


@pytest.mark.every_model_version("recommender")
def test_serves_the_version_under_test(flags, model_version):
    served = flags.get_model("recommender", "ada")
    assert served.version == model_version
    assert pins.active() == {"recommender": model_version}


@pytest.mark.every_model_version("recommender")
def test_a_customer_with_a_large_second_feature_is_recommended(flags):
    assert flags.get_model("recommender", "ada").predict(ROWS)[1] == 1


def test_pins_are_gone_in_a_test_that_is_not_marked():
    assert pins.active() == {}
"""


@pytest.fixture
def project(pytester: pytest.Pytester, trained: dict[str, LogisticRegression]) -> pytest.Pytester:
    """A project with a registry of three real versions: v1 (learned the first feature), v2
    (learned the second), v0 archived; and the plugin loaded explicitly in the inner run."""
    rows = np.random.RandomState(7).rand(10, 3)
    for version in ("v1", "v2"):
        joblib.dump(trained[version], pytester.path / f"{version}.joblib")
        modelflags.register(pytester.path / "registry.toml", "recommender", version,
                            pytester.path / f"{version}.joblib", examples=rows)  # fmt: skip
    (pytester.path / "v0.joblib").write_bytes(b"retired long ago")
    modelflags.register(pytester.path / "registry.toml", "recommender", "v0",
                        pytester.path / "v0.joblib", stage="archived")  # fmt: skip
    return pytester


def run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    """The inner run loads the plugin by module name only (not through the installed entry
    point, which would register it a second time under another name)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(pytester.path)
    return pytester.runpytest("-p", "modelflags.pytest_plugin", "-p", "no:cacheprovider", "-v")


@pytest.mark.slow
def test_a_marked_test_runs_once_per_version_that_may_serve_with_it_pinned(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each marked test runs for v1 and v2 (not the archived v0), ids naming the version; the
    rollback target v1 fails the test that only the latest v2 passes."""
    project.makeini("[pytest]\nmodelflags_registry = registry.toml\n")
    project.makepyfile(test_app=APP_TESTS)
    result = run_inner(project, monkeypatch)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_serves_the_version_under_test[[]recommender=v1[]] PASSED*",
            "*test_serves_the_version_under_test[[]recommender=v2[]] PASSED*",
            "*test_a_customer_with_a_large_second_*[[]recommender=v1[]] FAILED*",
            "*test_a_customer_with_a_large_second_*[[]recommender=v2[]] PASSED*",
            "*test_pins_are_gone_in_a_test_that_is_not_marked PASSED*",
        ]
    )
    assert "recommender=v0" not in result.stdout.str()


@pytest.mark.slow
def test_the_marker_may_name_the_registry_relative_to_the_rootdir(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``registry=`` in the marker, with no ini option; other parametrizations combine."""
    project.makeini("[pytest]\n")
    project.makepyfile(
        test_app="""
import pytest

@pytest.mark.every_model_version("recommender", registry="registry.toml")
@pytest.mark.parametrize("rows", [1, 2])
def test_x(model_version, rows):
    assert model_version in ("v1", "v2")
"""
    )
    result = run_inner(project, monkeypatch)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_x[[]recommender=v1-1[]] PASSED*"])


INI = "modelflags_registry = registry.toml"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ini", "marker", "needle"),
    [
        ("", '"recommender"', "every_model_version needs a registry: @pytest.mark.*"),
        ("modelflags_registry = gone.toml", '"recommender"', "*gone.toml: registry file not found"),
        (INI, '"ranker"', "*no model 'ranker' in *registry.toml (known: recommender)"),
        (INI, "", "every_model_version takes one model name*"),
        (INI, '"a", "b"', "every_model_version takes one model name*"),
        (INI, '"recommender", path="x"', "every_model_version takes one model name*"),
    ],
)  # fmt: skip
def test_a_marker_without_a_usable_registry_or_model_is_a_usage_error(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ini: str, marker: str, needle: str
) -> None:
    """The collection error says what is missing, without a traceback."""
    project.makeini(f"[pytest]\n{ini}\n")
    project.makepyfile(
        test_app=f"""
import pytest

@pytest.mark.every_model_version({marker})
def test_x():
    pass
"""
    )
    result = run_inner(project, monkeypatch)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"test_app.py::test_x: {needle}"])
    assert "Traceback" not in result.stdout.str()


def test_archiving_the_default_version_is_refused_so_a_marked_test_always_has_a_version(
    project: pytest.Pytester,
) -> None:
    """The default version never serves once archived, so the registry refuses it (and nothing
    is written): a model always keeps a version its marked tests run with."""
    registry = project.path / "registry.toml"
    before = registry.read_text()
    with pytest.raises(RegistryError, match="archived versions never serve"):
        modelflags.promote(registry, "recommender", "v1", to="archived")
    assert registry.read_text() == before


def test_the_model_version_fixture_without_the_marker_is_a_usage_error(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fixture names the marker it needs."""
    project.makepyfile(test_app="def test_x(model_version):\n    pass\n")
    result = run_inner(project, monkeypatch)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*the model_version fixture needs @pytest.mark.every_model_version*"]
    )


def test_the_registry_path_of_the_ini_option_is_relative_to_the_ini_file(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from a subfolder, the ini option still finds the registry beside the ini file."""
    project.makeini("[pytest]\nmodelflags_registry = registry.toml\n")
    (project.path / "tests").mkdir()
    (project.path / "tests" / "test_app.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.every_model_version('recommender')\n"
        "def test_x(model_version):\n    pass\n"
    )
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(project.path / "tests")
    result = project.runpytest("-p", "modelflags.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
