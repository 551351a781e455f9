"""Override files, pins and the pytest plugin: versions pinned locally over any provider."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType

from modelflags import ModelFlags, ModelFlagsError, ModelUnavailableError
from modelflags.overrides import OVERRIDES_ENV
from modelflags.testing import pinned

from models import Constant
from support import Workspace, recording_logs, wait_until

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry(workspace: Workspace) -> Path:
    for label in (1, 2, 3):
        workspace.add("recommender", f"v{label}", Constant(label))
    workspace.add("ranker", "r1", Constant(10))
    workspace.add("ranker", "r2", Constant(20))
    workspace.set("ranker", flag="ranker-version")
    return workspace.write()


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_override_file_pins_one_model_and_leaves_the_others_to_the_flags(
    registry: Path, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """An override file answers for its flags; other flags still come from the provider."""
    overrides = tmp_path / "overrides.toml"
    overrides.write_text('recommender = "v3"\n')
    set_flags(recommender="v1", **{"ranker-version": "r2"})
    with ModelFlags(registry, overrides=overrides) as flags:
        model = flags.get_model("recommender", "u1")
        assert (model.version, model.reason) == ("v3", "OVERRIDE")
        assert flags.get_model("ranker", "u1").version == "r2"


def test_override_rules_match_on_context_attributes(
    registry: Path, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """Rules in order, first match wins; no match falls through to the provider."""
    overrides = tmp_path / "overrides.json"
    overrides.write_text(
        json.dumps(
            {
                "recommender": [
                    {"value": "v3", "when": {"country": "DE"}},
                    {"value": "v2", "when": {"targeting_key": ["vip-1", "vip-2"]}},
                ]
            }
        )
    )
    set_flags(recommender="v1")
    with ModelFlags(registry, overrides=overrides) as flags:
        assert flags.get_model("recommender", {"id": "a", "country": "DE"}).version == "v3"
        assert flags.get_model("recommender", {"id": "vip-2", "country": "FR"}).version == "v2"
        assert flags.get_model("recommender", {"id": "b", "country": "FR"}).version == "v1"


def test_environment_variable_is_read_once_at_construction(
    registry: Path, set_flags: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODELFLAGS_OVERRIDES names the file when ModelFlags is made; later changes do not count."""
    overrides = tmp_path / "overrides.toml"
    overrides.write_text('recommender = "v2"\n')
    set_flags(recommender="v1")
    monkeypatch.setenv(OVERRIDES_ENV, str(overrides))
    with ModelFlags(registry) as flags:
        monkeypatch.delenv(OVERRIDES_ENV)
        assert flags.get_model("recommender").version == "v2"
    with ModelFlags(registry) as flags:
        assert flags.get_model("recommender").version == "v1"


def test_broken_or_missing_override_file_is_a_clear_error(registry: Path, tmp_path: Path) -> None:
    """A missing or invalid override file fails construction with its path in the message."""
    with pytest.raises(ModelFlagsError, match=r"nowhere\.toml"):
        ModelFlags(registry, overrides=tmp_path / "nowhere.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("recommender = [{ when = { country = 'DE' } }]\n")
    with pytest.raises(ModelFlagsError, match=r"bad\.toml.*recommender"):
        ModelFlags(registry, overrides=bad)


@pytest.mark.slow
def test_edited_override_file_switches_live_traffic_without_a_failed_call(
    registry: Path, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """While 4 threads serve, an edit switches versions within 1 s; a broken edit keeps serving."""
    overrides = tmp_path / "overrides.toml"
    overrides.write_text('recommender = "v1"\n')
    set_flags()
    errors: list[BaseException] = []
    served: Counter[str] = Counter()
    stop = threading.Event()
    with ModelFlags(registry, overrides=overrides) as flags:

        def serve() -> None:
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    model = flags.get_model("recommender", "u1")
                    model.predict([[0]])
                    served[model.version] += 1
                except BaseException as exc:  # pragma: no cover - asserted below
                    errors.append(exc)

        threads = [threading.Thread(target=serve) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            write_atomically(overrides, 'recommender = "v2"\n')
            wait_until(lambda: flags.get_model("recommender", "u1").version == "v2", 1.0, "edit")
            with recording_logs("modelflags", logging.ERROR) as logs:
                write_atomically(overrides, "recommender = [{ valu = 'v3' }]\n")  # broken
                logs.wait_for(lambda record: "override file" in record.getMessage())
            assert flags.get_model("recommender", "u1").version == "v2"
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
    assert errors == []
    assert set(served) <= {"v1", "v2"} and served["v2"] > 0


def test_override_file_layers_over_flagd_targeting(registry: Path, tmp_path: Path) -> None:
    """With flagd FILE mode underneath, non-overridden flags still follow flagd's targeting."""
    flag_file = tmp_path / "flags.json"
    flag_file.write_text(
        json.dumps(
            {
                "flags": {
                    "ranker-version": {
                        "state": "ENABLED",
                        "variants": {"r1": "r1", "r2": "r2"},
                        "defaultVariant": "r1",
                        "targeting": {"if": [{"==": [{"var": "plan"}, "beta"]}, "r2", "r1"]},
                    },
                    "recommender": {
                        "state": "ENABLED",
                        "variants": {"v1": "v1"},
                        "defaultVariant": "v1",
                    },
                }
            }
        )
    )
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE,
            offline_flag_source_path=str(flag_file),
            deadline_ms=50,
        )
    )
    overrides = tmp_path / "overrides.toml"
    overrides.write_text('recommender = "v2"\n')
    try:
        with ModelFlags(registry, overrides=overrides) as flags:
            assert flags.get_model("recommender", {"id": "a", "plan": "beta"}).version == "v2"
            assert flags.get_model("ranker", {"id": "a", "plan": "beta"}).version == "r2"
            assert flags.get_model("ranker", {"id": "b", "plan": "free"}).version == "r1"
    finally:
        api.shutdown()


def test_override_context_manager_pins_by_model_name_and_nests(
    registry: Path, set_flags: Callable[..., None]
) -> None:
    """flags.override pins by model name (mapped to its flag), nests, and restores on exit."""
    set_flags(recommender="v1", **{"ranker-version": "r1"})
    with ModelFlags(registry) as flags:
        with flags.override(recommender="v2", ranker="r2"):
            assert flags.get_model("recommender").version == "v2"
            assert flags.get_model("ranker").reason == "OVERRIDE"
            with flags.override(recommender="v3"):
                assert flags.get_model("recommender").version == "v3"
                assert flags.get_model("ranker").version == "r2"
            assert flags.get_model("recommender").version == "v2"
        assert flags.get_model("recommender").version == "v1"
        assert flags.get_model("ranker").version == "r1"
        expected = "cannot pin model 'recommender' to 'v9'"
        with pytest.raises(ModelUnavailableError, match=expected), flags.override(recommender="v9"):
            pass  # pragma: no cover
        with (
            pytest.raises(ModelUnavailableError, match="unknown model 'nope'"),
            flags.override(nope="v1"),
        ):
            pass  # pragma: no cover


def test_process_wide_pins_reach_every_instance_and_unknown_pins_raise(
    registry: Path, set_flags: Callable[..., None]
) -> None:
    """testing.pinned pins models in every ModelFlags; a pin to an unknown version is an error."""
    set_flags(recommender="v1")
    with ModelFlags(registry) as first, ModelFlags(registry) as second:
        with pinned(recommender="v2"):
            assert first.get_model("recommender").version == "v2"
            assert second.get_model("recommender").version == "v2"
        assert first.get_model("recommender").version == "v1"
        with pinned(recommender="v7"), pytest.raises(ModelUnavailableError, match="'v7'"):
            first.get_model("recommender")


async def _async_version(flags: ModelFlags) -> str:
    return (await flags.get_model_async("recommender")).version


def test_pins_apply_to_async_serving(registry: Path, set_flags: Callable[..., None]) -> None:
    """get_model_async honours pins too."""
    import asyncio

    set_flags(recommender="v1")
    with ModelFlags(registry) as flags, flags.override(recommender="v3"):
        assert asyncio.run(_async_version(flags)) == "v3"


PLUGIN_TESTS = """
import pytest
from modelflags import ModelFlags

REGISTRY = {registry!r}


def version():
    with ModelFlags(REGISTRY) as flags:
        return flags.get_model("recommender", "u1").version


def test_fixture(model_overrides):
    model_overrides.set(recommender="v2")
    assert version() == "v2"
    model_overrides.set(recommender="v3")
    assert version() == "v3"


@pytest.mark.model_versions(recommender="v3")
def test_marker():
    assert version() == "v3"


@pytest.mark.model_versions(recommender="v3")
class TestClass:
    @pytest.mark.model_versions(recommender="v2")
    def test_closest_marker_wins(self):
        assert version() == "v2"


def test_no_leak_after_pins():
    assert version() == "v1"


@pytest.mark.model_versions("v2")
def test_positional_marker_is_an_error():
    pass
"""


@pytest.mark.slow
def test_pytest_plugin_pins_versions_in_a_separate_run(
    pytester: pytest.Pytester, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a fresh pytest run the fixture and marker pin versions, and nothing leaks."""
    # The pickled test models, and the same modelflags as this process.
    search_path = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, search_path)))
    pytester.makepyfile(test_app=PLUGIN_TESTS.format(registry=str(registry)))
    pytester.makeconftest(
        """
import pytest
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider


@pytest.fixture(autouse=True)
def flags():
    api.set_provider_and_wait(InMemoryProvider({"recommender": InMemoryFlag("v1", {"v1": "v1"})}))
    yield
    api.clear_providers()
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark", "-v")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*test_no_leak_after_pins PASSED*"])
    result.stdout.fnmatch_lines(["*model_versions takes keyword arguments only*"])


@pytest.mark.slow
def test_example_app_suite_passes() -> None:
    """examples/overrides: the tiny app's own tests pin with fixture, marker and override file."""
    pytest_in_one_process = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n0"]
    result = subprocess.run(
        [*pytest_in_one_process, "examples/overrides"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
