"""Flag files are valid flagd files: examples/flagd's files and those the programs write.

Each file is checked by ``modelflags validate``'s flag-file checker (the structure the Python
provider reads, variants named by the default or by targeting exist, variant values are
registered versions), then read by the real flagd provider in FILE mode, which must serve every
flag without an error.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext

from modelflags.cli import flagfile, main
from modelflags.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples" / "flagd"
EXAMPLE_FILES = sorted(EXAMPLES_DIR.glob("*.json"))
#: Programs whose flag-file writers are checked (a module with ``write_flags``/``write_flag_file``).
WRITER_SOURCES = [
    *sorted((ROOT / "examples").glob("*.py")),
    *sorted((ROOT / "benchmarks").glob("*.py")),
    ROOT / "tests" / "test_live_rollout.py",
]
WRITER_NAMES = ("write_flags", "write_flag_file")
VERSIONS = {"v1", "v2", "v3"}


def registry(versions: set[str]) -> Registry:
    """A registry whose ``recommender`` (with shadow flag) has ``versions``."""
    model = {
        "default_version": "v1",
        "shadow_flag": "recommender.shadow",
        "versions": {version: {"uri": f"/m/{version}.joblib"} for version in sorted(versions)},
    }
    return Registry.from_mapping({"models": {"recommender": model}})


CONTEXTS = [
    EvaluationContext(f"user-{i}", {"plan": plan, "email": email, "account": f"acct-{i % 7}"})
    for i, (plan, email) in enumerate(
        [("free", "ada@users.test"), ("beta", "bob@users.test"), ("free", "cy@example.com")] * 20
    )
]


def load_module(path: Path, name: str) -> ModuleType:
    """Import the file at ``path`` as module ``name`` (once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """Serve a flag document through flagd's provider in FILE mode; returns the client."""

    def serve(document: dict[str, Any]) -> Any:
        path = tmp_path / "served.json"
        path.write_text(json.dumps(document))
        api.set_provider_and_wait(
            FlagdProvider(
                resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=50
            )
        )
        return api.get_client()

    yield serve
    api.shutdown()


def assert_flagd_serves_every_flag(client: Any, document: dict[str, Any]) -> None:
    """Every flag of ``document`` evaluates without error to one of its variants' values."""
    for key, flag in document["flags"].items():
        values = list(flag["variants"].values())
        for context in CONTEXTS:
            details = client.get_string_details(key, "<caller default>", context)
            assert details.error_code is None, (key, details.error_message)
            allowed = values if flag.get("defaultVariant") else [*values, "<caller default>"]
            assert details.value in allowed, (key, details.value)


def test_the_examples_cover_a_canary_targeting_and_a_rollback() -> None:
    """examples/flagd holds the three example flag files its README describes."""
    assert {p.name for p in EXAMPLE_FILES} >= {"canary.json", "targeting.json", "rollback.json"}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_flag_file_is_valid_and_flagd_serves_it(path: Path, served: Any) -> None:
    """Each example passes the schema and the cross-checks, and flagd serves every flag in it."""
    assert flagfile.check_file(path, registry(VERSIONS)) == []
    document = json.loads(path.read_text())
    assert_flagd_serves_every_flag(served(document), document)


@pytest.mark.slow
def test_canary_file_sends_about_a_tenth_of_users_to_the_canary(served: Any) -> None:
    """canary.json: a 90/10 split by targeting key, and a quarter of calls name a shadow."""
    client = served(json.loads((EXAMPLES_DIR / "canary.json").read_text()))
    users = [EvaluationContext(f"user-{i}") for i in range(2000)]
    split = Counter(client.get_string_value("recommender", "v1", user) for user in users)
    assert abs(split["v2"] / 2000 - 0.10) <= 0.02, split
    shadow = Counter(client.get_string_value("recommender.shadow", "", user) for user in users)
    assert abs(shadow["v2"] / 2000 - 0.25) <= 0.03, shadow


def test_targeting_file_routes_beta_and_staff_users(served: Any) -> None:
    """targeting.json: beta users get v3, staff (by a shared evaluator) v2, others v1 or v2."""
    client = served(json.loads((EXAMPLES_DIR / "targeting.json").read_text()))
    beta = EvaluationContext("b", {"plan": "beta", "email": "b@example.com", "account": "a"})
    staff = EvaluationContext("s", {"plan": "free", "email": "s@example.com", "account": "a"})
    assert client.get_string_value("recommender", "-", beta) == "v3"
    assert client.get_string_value("recommender", "-", staff) == "v2"
    others = Counter(
        client.get_string_value(
            "recommender", "-", EvaluationContext(f"u{i}", {"plan": "free", "account": f"a{i}"})
        )
        for i in range(1000)
    )
    assert set(others) == {"v1", "v2"} and others["v2"] < 100, others


def test_rollback_file_sends_everyone_back_without_a_shadow(served: Any) -> None:
    """rollback.json: v1 for everyone and an empty shadow value (no shadow)."""
    client = served(json.loads((EXAMPLES_DIR / "rollback.json").read_text()))
    assert {client.get_string_value("recommender", "-", c) for c in CONTEXTS} == {"v1"}
    assert {client.get_string_value("recommender.shadow", "-", c) for c in CONTEXTS} == {""}


def written_flag_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """Call every flag-file writer of the examples and benchmarks; yield what each wrote."""
    for source in WRITER_SOURCES:
        if not source.exists() or not any(f"def {n}(" in source.read_text() for n in WRITER_NAMES):
            continue
        module = load_module(source, f"modelflags_writer_{source.parent.name}_{source.stem}")
        for name in WRITER_NAMES:
            writer = getattr(module, name, None)
            if writer is None:
                continue
            for index, kwargs in enumerate(_calls(module, writer)):
                path = folder / f"{source.stem}-{name}-{index}.json"
                writer(path, **kwargs)
                yield f"{source.relative_to(ROOT)}:{name}({kwargs})", path


def _calls(module: ModuleType, writer: Any) -> list[dict[str, Any]]:
    """Keyword arguments (after the path) to call ``writer`` with, covering its variations."""
    parameters = list(inspect.signature(writer).parameters.values())[1:]
    calls: list[dict[str, Any]] = [{}]
    for parameter in parameters:
        if parameter.name == "targeting":
            targetings: list[Any] = [{}]
            if hasattr(module, "canary"):
                targetings += [module.canary(10), module.canary(50)]
            calls = [{**call, "targeting": t} for call in calls for t in targetings]
        elif parameter.name == "default":
            calls = [{**call, "default": v} for call in calls for v in ("v1", "v2")]
        elif parameter.default is inspect.Parameter.empty:
            pytest.fail(f"{module.__name__}.{writer.__name__}: no value for {parameter.name!r}")
    return calls


def test_flag_files_written_by_the_programs_are_valid(tmp_path: Path, served: Any) -> None:
    """What the examples, benchmarks and live-rollout tests write is valid and served by flagd."""
    written = list(written_flag_files(tmp_path))
    assert {label.split(":")[0] for label, _ in written} >= {
        "examples/quickstart.py",
        "benchmarks/bench_switch.py",
        "tests/test_live_rollout.py",
    }
    for label, path in written:
        assert flagfile.check_file(path, registry({"v1", "v2", "v3", "v4"})) == [], label
    document = json.loads(written[0][1].read_text())
    assert_flagd_serves_every_flag(served(document), document)


@pytest.mark.parametrize(
    ("flag", "problem"),
    [
        ({"state": "ON", "variants": {"v1": "v1"}}, "'ON' is not one of ENABLED, DISABLED"),
        ({"state": "ENABLED", "variants": {}}, "should be non-empty"),
        ({"state": "ENABLED", "variants": {"v1": "v1"}, "description": "x"}, "description"),
        ({"state": "ENABLED", "variants": {"v1": "v1", "on": True}}, "variants"),
        (
            {
                "state": "ENABLED",
                "variants": {"v1": "v1"},
                "targeting": {"fractional": [["v1", "90"]]},
            },
            "targeting",
        ),
        (
            {"state": "ENABLED", "variants": {"v1": "v1"}, "defaultVariant": "v2"},
            "'v2' is not one of its variants",
        ),
        (
            {
                "state": "ENABLED",
                "variants": {"v1": "v1"},
                "targeting": {"fractional": [["v1", 90], ["v2", 10]]},
            },
            "fractional[1]: 'v2' is not one of the variants",
        ),
        (
            {
                "state": "ENABLED",
                "variants": {"v1": "v1", "v2": "v2"},
                "targeting": {"if": [{"==": [{"var": "plan"}, "beta"]}, "v3", "v1"]},
            },
            "if[1]: 'v3' is not one of the variants",
        ),
        (
            {
                "state": "ENABLED",
                "variants": {"v1": "v1"},
                "targeting": {"fractional": [["v1", 0]]},
            },
            "the weights add up to 0",
        ),
        (
            {"state": "ENABLED", "variants": {"v1": "v1"}, "targeting": {"$ref": "missing"}},
            "no evaluator named 'missing'",
        ),
        ({"state": "ENABLED", "variants": {"v1": "v9"}}, "'v9' is not a registered version"),
    ],
    ids=[
        "bad state",
        "no variants",
        "unknown key",
        "mixed variant types",
        "string weight",
        "unknown default",
        "unknown fractional bucket",
        "unknown if result",
        "zero weights",
        "missing evaluator",
        "unregistered version",
    ],
)
def test_validation_reports_what_flagd_would_refuse_or_serve_wrongly(
    flag: dict[str, Any], problem: str
) -> None:
    """Broken flags are reported with their place, whether flagd refuses them or not."""
    document = {"flags": {"recommender": flag}}
    found = flagfile.problems(document) or flagfile.registry_problems(document, registry(VERSIONS))
    assert any(problem in message for message in found), found


def test_validate_command_exits_1_on_a_broken_flag_file(tmp_path: Path, capsys: Any) -> None:
    """``modelflags validate REGISTRY --flags FILE`` lists each problem with its place."""
    path = tmp_path / "registry.json"
    model = {"default_version": "v1", "versions": {"v1": {"uri": "v1.joblib"}}}
    path.write_text(json.dumps({"models": {"m": model}}))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"flags": {"m": {"state": "ENABLED", "variants": {"v1": "v1"}}}}))
    bad = tmp_path / "bad.json"
    broken = {"state": "ENABLED", "variants": {"v1": "v1"}, "defaultVariant": "v2"}
    bad.write_text(json.dumps({"flags": {"m": broken}}))
    assert main(["validate", str(path), "--offline", "--flags", str(good)]) == 0
    assert main(["validate", str(path), "--offline", "--flags", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"error: {bad}: flags.m.defaultVariant: 'v2' is not one of its variants" in out
