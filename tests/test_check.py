"""``modelflags check``: every version that may serve, loaded as serving loads it and replayed on
its golden examples; real scikit-learn models, real files, and the real command."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LinearRegression, LogisticRegression

import modelflags
from modelflags import RegistryError, load_registry
from modelflags.cli import main
from modelflags.registry.examples import Examples, encode_examples, read_examples

ROOT = Path(__file__).resolve().parent.parent


class StepTimer:
    """A timer that moves by one millisecond each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def shop(tmp_path: Path, trained: dict[str, LogisticRegression]) -> Path:
    """A registry of three real versions: v1 and v2 with examples, v0 archived (and broken)."""
    sample = np.random.RandomState(5).rand(20, 3)
    registry = tmp_path / "registry.json"
    (tmp_path / "v0.joblib").write_bytes(b"an old artifact that no longer loads")
    for version in ("v1", "v2"):
        joblib.dump(trained[version], tmp_path / f"{version}.joblib")
        modelflags.register(registry, "recommender", version, tmp_path / f"{version}.joblib",
                            examples=sample)  # fmt: skip
    # An archived version is never the default (the first registered), so v1 came first.
    modelflags.register(registry, "recommender", "v0", tmp_path / "v0.joblib", stage="archived")
    return registry


def edit_version(registry: Path, version: str, **fields: Any) -> None:
    """Change a version's entry by hand, as a person editing the file would."""
    document = json.loads(registry.read_text())
    entry = document["models"]["recommender"]["versions"][version]
    entry.update(fields)
    registry.write_text(json.dumps(document, indent=2))


def replace_outputs(registry: Path, version: str, change: dict[str, Any]) -> None:
    """Record other outputs for a version (what it would have answered elsewhere), with the
    examples file's name and digest updated so that only the answers differ."""
    ref = load_registry(registry).models["recommender"].versions[version].examples
    assert ref is not None
    stored = read_examples(ref)
    outputs = {method: change.get(method, value) for method, value in stored.outputs.items()}
    data = encode_examples(Examples(stored.inputs, outputs))
    digest = hashlib.sha256(data).hexdigest()
    (registry.parent / "examples" / f"{digest}.npz").write_bytes(data)
    edit_version(registry, version, examples={"uri": f"examples/{digest}.npz", "sha256": digest,
                                              "rows": ref.rows})  # fmt: skip


@pytest.mark.slow
def test_every_version_that_may_serve_loads_and_answers_its_examples_as_recorded(
    shop: Path,
) -> None:
    """v1 and v2 load, answer as recorded; the archived v0 is not tried; the time per row is
    measured on a second run of the examples."""
    report = modelflags.check(shop, timer=StepTimer())
    assert [(v.version, v.status) for v in report.versions] == [("v1", "passed"), ("v2", "passed")]
    assert report.ok() and report.ok(strict=True)
    first = report.versions[0]
    assert first.loaded and first.rows == 20 and first.load_seconds == pytest.approx(0.001)
    assert first.seconds_per_row == {
        "predict": pytest.approx(0.001 / 20),
        "predict_proba": pytest.approx(0.001 / 20),
    }
    assert [(c.method, c.equal, c.exact) for c in first.comparisons] == [
        ("predict", True, True),
        ("predict_proba", True, False),
    ]
    assert first.warnings == ()


@pytest.mark.slow
def test_a_version_that_answers_other_labels_fails_naming_the_rows(shop: Path) -> None:
    """Labels are compared exactly: one row that differs fails the version, and says which."""
    ref = load_registry(shop).models["recommender"].versions["v1"].examples
    assert ref is not None
    labels = read_examples(ref).outputs["predict"].copy()
    labels[3] = 1 - labels[3]
    replace_outputs(shop, "v1", {"predict": labels})
    report = modelflags.check(shop)
    v1 = report.versions[0]
    assert v1.status == "failed" and not report.ok()
    assert f"predict: 1 of 20 rows differ (first: row 3, {1 - labels[3]} here, {labels[3]} " \
           "recorded)" in v1.reason  # fmt: skip
    assert report.versions[1].status == "passed"


def test_floats_are_equal_within_the_tolerance_and_differ_beyond_it(shop: Path) -> None:
    """predict_proba a hair away from the recording passes with the default tolerance, and fails
    with none; a larger gap fails with the default too, giving the largest difference."""
    ref = load_registry(shop).models["recommender"].versions["v2"].examples
    assert ref is not None
    probabilities = read_examples(ref).outputs["predict_proba"]
    replace_outputs(shop, "v2", {"predict_proba": probabilities + 1e-12})
    assert modelflags.check(shop, "recommender").ok()
    strict = modelflags.check(shop, rtol=0.0, atol=0.0)
    assert "predict_proba: 20 of 20 rows differ by more than rtol=0, atol=0" in (
        strict.versions[1].reason
    )
    shifted = probabilities.copy()
    shifted[7] += [0.01, -0.01]
    replace_outputs(shop, "v2", {"predict_proba": shifted})
    v2 = modelflags.check(shop).versions[1]
    assert v2.failed
    assert "1 of 20 rows differ by more than rtol=1e-05, atol=1e-08 (largest difference 0.01; " \
           "first: row 7)" in v2.reason  # fmt: skip
    assert v2.comparisons[1].max_difference == pytest.approx(0.01)


def test_a_version_whose_artifact_changed_fails_and_is_not_loaded(shop: Path) -> None:
    """The artifact's sha256 is checked before anything deserializes it."""
    joblib.dump(LogisticRegression(), shop.parent / "v2.joblib")
    v2 = modelflags.check(shop).versions[1]
    assert (v2.status, v2.loaded) == ("failed", False)
    assert "cannot load: model 'recommender' version 'v2': artifact" in v2.reason
    # The bytes changed: caught by the declared size or by the sha256, never deserialized.
    assert "the registry says" in v2.reason or "its registry entry declares" in v2.reason


def test_a_missing_artifact_fails_and_says_so(shop: Path) -> None:
    """A rollback target whose file is gone is found now, not during an incident."""
    (shop.parent / "v1.joblib").unlink()
    assert "artifact file not found" in modelflags.check(shop).versions[0].reason


def test_examples_whose_bytes_changed_are_not_used(shop: Path) -> None:
    """The examples file is checked against its sha256 too."""
    ref = load_registry(shop).models["recommender"].versions["v1"].examples
    assert ref is not None
    Path(ref.location).write_bytes(Path(ref.location).read_bytes() + b"\0")
    v1 = modelflags.check(shop).versions[0]
    assert v1.loaded and v1.failed
    assert f"the registry says {ref.sha256}; it was not used" in v1.reason


def test_a_version_its_compat_policy_refuses_here_fails_before_loading(shop: Path) -> None:
    """A scikit-learn of another minor version than recorded is refused by the default policy,
    as serving refuses it."""
    document = json.loads(shop.read_text())
    libraries = document["models"]["recommender"]["versions"]["v1"]["lineage"]["environment"][
        "libraries"
    ]
    libraries["scikit-learn"] = "0.1.0"
    shop.write_text(json.dumps(document))
    v1 = modelflags.check(shop).versions[0]
    assert (v1.status, v1.loaded) == ("failed", False)
    assert f"refused in this environment: scikit-learn 0.1.0 at registration, " \
           f"{sklearn.__version__} here" in v1.reason  # fmt: skip


def test_a_version_without_examples_is_not_checked_unless_strict(
    shop: Path, trained: dict[str, LogisticRegression]
) -> None:
    """It is loaded, reported as not checked: fine by default, a failure when strict."""
    joblib.dump(trained["v1"], shop.parent / "v3.joblib")
    modelflags.register(shop, "recommender", "v3", shop.parent / "v3.joblib")
    report = modelflags.check(shop)
    v3 = report.versions[2]
    assert (v3.status, v3.loaded) == ("not checked", True)
    assert "no examples recorded" in v3.reason
    assert report.ok() and not report.ok(strict=True)
    assert report.to_dict()["not_checked"] == 1


def test_text_labels_and_regression_floats_are_replayed(tmp_path: Path) -> None:
    """String class labels compare exactly, a regressor's floats within the tolerance."""
    rng = np.random.RandomState(4)
    X = rng.rand(50, 2)
    joblib.dump(LogisticRegression().fit(X, np.where(X[:, 0] > 0.5, "buy", "skip")),
                tmp_path / "labels.joblib")  # fmt: skip
    joblib.dump(LinearRegression().fit(X, X @ [2.0, -1.0]), tmp_path / "values.joblib")
    registry = tmp_path / "registry.toml"
    for name in ("labels", "values"):
        modelflags.register(registry, name, "v1", tmp_path / f"{name}.joblib", examples=X[:9])
    report = modelflags.check(registry)
    assert [(v.model, v.status) for v in report.versions] == [
        ("labels", "passed"),
        ("values", "passed"),
    ]
    assert [c.exact for c in report.versions[1].comparisons] == [False]


def test_an_unknown_model_is_an_error(shop: Path) -> None:
    """Naming a model the registry lacks is a RegistryError listing the known ones."""
    with pytest.raises(RegistryError, match=r"no model 'ranker' \(known: recommender\)"):
        modelflags.check(shop, "ranker")


# -- the command -------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_check_prints_a_line_per_version_and_exits_0_when_all_pass(
    shop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line per version, then a summary with the tolerances used."""
    status, out, _ = run(capsys, "check", str(shop))
    lines = out.splitlines()
    assert status == 0
    assert lines[0].startswith("recommender v1") and "ok      loads in" in lines[0]
    assert "20 rows, answers equal; predict " in lines[0] and " us/row" in lines[0]
    assert lines[-1] == "2 versions: 2 passed, 0 failed, 0 not checked (rtol=1e-05, atol=1e-08)"
    status, out, _ = run(capsys, "show", str(shop), "recommender", "v1")
    assert status == 0 and "  examples   20 rows in examples/" in out


def test_check_strict_fails_a_version_without_examples(
    shop: Path, trained: dict[str, LogisticRegression], capsys: pytest.CaptureFixture[str]
) -> None:
    """--strict: a version with nothing to replay fails the check."""
    joblib.dump(trained["v1"], shop.parent / "v3.joblib")
    modelflags.register(shop, "recommender", "v3", shop.parent / "v3.joblib")
    assert run(capsys, "check", str(shop))[0] == 0
    status, out, _ = run(capsys, "check", str(shop), "--strict")
    assert status == 1
    assert "v3           candidate  FAILED  loads in" in out and "no examples" in out


def test_check_rejects_negative_tolerances_and_unknown_models(
    shop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid arguments exit 2 with a message."""
    status, _, err = run(capsys, "check", str(shop), "--rtol", "-1")
    assert status == 2 and "--rtol and --atol must be 0 or more" in err
    status, _, err = run(capsys, "check", str(shop), "--model", "ranker")
    assert status == 2 and "no model 'ranker'" in err


@pytest.fixture
def shell_env() -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [
            str(ROOT / "src"),
            str(ROOT / "providers" / "overrides" / "src"),
            env.get("PYTHONPATH", ""),
        ]
    )
    yield env


def shell(env: dict[str, str], *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelflags", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_register_with_examples_then_check_from_the_shell(
    tmp_path: Path, trained: dict[str, LogisticRegression], shell_env: dict[str, str]
) -> None:
    """The real command: v1 registered with a CSV of examples; once its file holds other bytes,
    the check fails that rollback target (exit 1) and reports it in JSON, v2 passing."""
    rng = np.random.RandomState(9)
    lines = ["a,b,c", *(",".join(f"{v:.6f}" for v in row) for row in rng.rand(15, 3))]
    (tmp_path / "sample.csv").write_text("\n".join(lines) + "\n")
    for version in ("v1", "v2"):
        joblib.dump(trained[version], tmp_path / f"{version}.joblib")
    done = shell(shell_env, "register", "registry.toml", "recommender", "v1", "v1.joblib",
                 "--examples", "sample.csv", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "  examples 15 rows in examples/" in done.stdout
    modelflags.register(tmp_path / "registry.toml", "recommender", "v2", tmp_path / "v2.joblib",
                        examples=tmp_path / "sample.csv")  # fmt: skip

    joblib.dump(trained["v2"], tmp_path / "v1.joblib")  # v1's file now holds other bytes
    done = shell(shell_env, "check", "registry.toml", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert (report["ok"], report["failed"], report["passed"]) == (False, 1, 1)
    v1 = report["versions"][0]
    assert (v1["version"], v1["status"], v1["loaded"]) == ("v1", "failed", False)
    assert "sha256" in v1["reason"]
    assert report["versions"][1]["comparisons"][0] == {
        "method": "predict",
        "equal": True,
        "exact": True,
        "mismatched_rows": 0,
        "first_row": None,
        "max_difference": None,
        "detail": "predict: 15 rows equal exactly",
    }


def test_register_examples_that_do_not_fit_exit_2(
    tmp_path: Path, trained: dict[str, LogisticRegression], capsys: pytest.CaptureFixture[str]
) -> None:
    """A sample of the wrong width is refused with its reason; no registry is written."""
    joblib.dump(trained["v1"], tmp_path / "v1.joblib")
    np.save(tmp_path / "wide.npy", np.ones((3, 5)))
    registry, artifact = str(tmp_path / "registry.toml"), str(tmp_path / "v1.joblib")
    status, _, err = run(capsys, "register", registry, "recommender", "v1", artifact,
                         "--examples", str(tmp_path / "wide.npy"))  # fmt: skip
    assert status == 2
    assert "the examples have 5 columns; the model expects 3 features" in err
    assert not (tmp_path / "registry.toml").exists()


def test_register_json_gives_the_examples(
    tmp_path: Path, trained: dict[str, LogisticRegression], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json``: where the examples are, their digest and rows; adding them later says so."""
    joblib.dump(trained["v1"], tmp_path / "v1.joblib")
    np.save(tmp_path / "sample.npy", np.ones((4, 3)))
    registry, artifact = str(tmp_path / "registry.toml"), str(tmp_path / "v1.joblib")
    run(capsys, "register", registry, "recommender", "v1", artifact)
    status, out, _ = run(capsys, "register", registry, "recommender", "v1", artifact,
                         "--examples", str(tmp_path / "sample.npy"), "--json")  # fmt: skip
    result = json.loads(out)
    assert status == 0 and (result["created"], result["examples_added"]) == (False, True)
    assert result["examples"]["rows"] == 4
    assert result["examples"]["uri"] == f"examples/{result['examples']['sha256']}.npz"
    status, out, _ = run(capsys, "register", registry, "recommender", "v1", artifact,
                         "--examples", str(tmp_path / "sample.npy"))  # fmt: skip
    assert out.startswith("recommender v1 is already registered with these bytes; nothing changed")
