"""Registering and promoting versions: lineage from real git repositories and real scikit-learn
models, immutable ids, stages with approval, and edits that are locked, atomic and keep TOML."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock
import joblib
import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import modelflags
from modelflags import ArtifactNotFoundError, RegistryError, load_registry
from modelflags.registry import promote, register
from modelflags.registry.editing import Edit, edit_registry

NOON = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
REGISTRY_TEXT = """\
# The shop's models: edited by hand and by `modelflags register`.
[models.recommender]
default_version = "v0"    # the first last-known-good

[models.recommender.versions.v0]
uri = "v0.joblib"         # trained before lineage was recorded
"""


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git repository with one commit holding ``train.py`` and ``data/train.csv``."""
    folder = tmp_path / "repo"
    (folder / "data").mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "ada@example.com")
    git(folder, "config", "user.name", "Ada")
    (folder / "train.py").write_text("print('training')\n")
    (folder / "data" / "train.csv").write_text("x,y\n0.1,0\n0.9,1\n")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "first")
    (folder / "registry.toml").write_text(REGISTRY_TEXT)
    return folder


@pytest.fixture
def estimator(trained: dict[str, LogisticRegression]) -> LogisticRegression:
    return trained["v1"]


@pytest.fixture
def artifact(repo: Path, estimator: LogisticRegression) -> Path:
    path = repo / "models" / "recommender-v1.joblib"
    path.parent.mkdir()
    joblib.dump(estimator, path)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_register_records_digest_size_and_lineage_from_a_real_git_repository(
    repo: Path, artifact: Path, estimator: LogisticRegression
) -> None:
    """sha256, size, git commit, libraries, estimator and its params, data, metrics, who, when."""
    result = register(
        repo / "registry.toml",
        "recommender",
        "v1",
        artifact,
        estimator=estimator,
        metrics={"auc": 0.91},
        params={"seed": 7},
        data=[repo / "data" / "train.csv"],
        source_dir=repo,
        user="ada",
        clock=lambda: NOON,
    )
    assert result.created and result.same_bytes_as == ()

    version = load_registry(repo / "registry.toml").models["recommender"].versions["v1"]
    assert version.uri == "models/recommender-v1.joblib"
    assert (version.sha256, version.size) == (sha(artifact), artifact.stat().st_size)
    assert version.stage == "candidate"
    lineage = version.lineage
    assert lineage is not None
    assert lineage.registered_by == "ada"
    assert lineage.registered_at == NOON.replace(microsecond=0)
    assert lineage.git is not None
    assert lineage.git.commit == git(repo, "rev-parse", "HEAD")
    assert (lineage.git.dirty, lineage.git.branch) == (False, "main")
    assert lineage.estimator == "sklearn.linear_model.LogisticRegression"
    assert lineage.params["C"] == 1.0 and lineage.params["seed"] == 7
    assert lineage.params["random_state"] == "None"
    assert lineage.metrics == {"auc": 0.91}
    (data,) = lineage.data
    assert data.sha256 == sha(repo / "data" / "train.csv")
    assert data.size == (repo / "data" / "train.csv").stat().st_size
    environment = version.environment
    assert environment is not None
    assert environment.libraries["scikit-learn"] == sklearn.__version__
    assert environment.libraries["numpy"] == np.__version__
    assert environment.libraries["joblib"] == joblib.__version__
    assert environment.python is not None
    (entry,) = version.history
    assert (entry.stage, entry.previous, entry.by, entry.reason) == (
        "candidate",
        None,
        "ada",
        "registered",
    )


def test_register_keeps_comments_and_layout_of_a_toml_registry(repo: Path, artifact: Path) -> None:
    """The file before the edit is kept line for line; the new version follows in tables."""
    register(repo / "registry.toml", "recommender", "v1", artifact, source_dir=repo, user="ada")
    text = (repo / "registry.toml").read_text()
    assert text.startswith(REGISTRY_TEXT)
    assert "\n[models.recommender.versions.v1]\n" in text
    assert "\n[[models.recommender.versions.v1.history]]\n" in text
    assert "\n\n\n" not in text and text.endswith('reason = "registered"\n')


def test_a_dirty_working_tree_is_recorded_as_dirty(repo: Path, artifact: Path) -> None:
    """A tracked file changed and not committed makes ``git.dirty`` true."""
    (repo / "train.py").write_text("print('changed')\n")
    register(repo / "registry.toml", "recommender", "v1", artifact, source_dir=repo)
    lineage = load_registry(repo / "registry.toml").models["recommender"].versions["v1"].lineage
    assert lineage is not None and lineage.git is not None and lineage.git.dirty


def test_outside_a_git_repository_no_commit_is_recorded(tmp_path: Path, artifact: Path) -> None:
    """Registering from a folder that is not in git records no git state, and still works."""
    outside = tmp_path / "outside"
    outside.mkdir()
    register(outside / "registry.toml", "m", "v1", artifact, source_dir=outside)
    spec = load_registry(outside / "registry.toml").models["m"]
    assert spec.default_version == "v1"
    assert spec.versions["v1"].uri == str(artifact.resolve())
    assert spec.versions["v1"].lineage is not None
    assert spec.versions["v1"].lineage.git is None


def test_the_libraries_a_pickle_needs_are_read_without_loading_it(
    repo: Path, tmp_path: Path
) -> None:
    """Without the object, the classes the pickle names give its libraries (pipeline included)."""
    path = tmp_path / "pipeline.joblib"
    X = np.random.RandomState(0).rand(30, 2)
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, X[:, 0] > 0.5), path)
    register(repo / "registry.toml", "pipe", "v1", path, source_dir=repo)
    lineage = load_registry(repo / "registry.toml").models["pipe"].versions["v1"].lineage
    assert lineage is not None and lineage.environment is not None
    assert {"scikit-learn", "numpy", "scipy", "joblib"} <= set(lineage.environment.libraries)
    assert lineage.estimator is None and lineage.params == {}


def test_a_dvc_lock_in_the_source_folder_is_recorded(repo: Path, artifact: Path) -> None:
    """The deps and outs of each stage of dvc.lock are recorded with their md5."""
    (repo / "dvc.lock").write_text(
        "schema: '2.0'\n"
        "stages:\n"
        "  train:\n"
        "    cmd: python train.py\n"
        "    deps:\n"
        "    - path: data/train.csv\n"
        "      md5: 0123456789abcdef0123456789abcdef\n"
        "      size: 18\n"
        "    outs:\n"
        "    - path: models/recommender-v1.joblib\n"
        "      md5: fedcba9876543210fedcba9876543210\n"
    )
    register(repo / "registry.toml", "recommender", "v1", artifact, source_dir=repo)
    lineage = load_registry(repo / "registry.toml").models["recommender"].versions["v1"].lineage
    assert lineage is not None
    assert [(e.stage, e.kind, e.path, e.size) for e in lineage.dvc] == [
        ("train", "dep", "data/train.csv", 18),
        ("train", "out", "models/recommender-v1.joblib", None),
    ]


def test_registering_the_same_bytes_again_changes_nothing(repo: Path, artifact: Path) -> None:
    """The same id with the same bytes is already registered: the file is not rewritten."""
    register(repo / "registry.toml", "recommender", "v1", artifact, source_dir=repo)
    before = (repo / "registry.toml").read_bytes()
    again = register(repo / "registry.toml", "recommender", "v1", artifact, source_dir=repo)
    assert not again.created
    assert (repo / "registry.toml").read_bytes() == before


def test_registering_an_id_again_with_other_bytes_is_refused(
    repo: Path, artifact: Path, tmp_path: Path
) -> None:
    """Ids are immutable: other bytes under v1 are a RegistryError, and nothing is written."""
    register(repo / "registry.toml", "recommender", "v1", artifact, source_dir=repo)
    before = (repo / "registry.toml").read_bytes()
    other = tmp_path / "other.joblib"
    other.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(RegistryError) as caught:
        register(repo / "registry.toml", "recommender", "v1", other, source_dir=repo)
    assert f"already registered with sha256 {sha(artifact)}" in str(caught.value)
    assert sha(other) in str(caught.value)
    assert (caught.value.model, caught.value.field) == ("recommender", "versions.v1")
    assert (repo / "registry.toml").read_bytes() == before


def test_a_hand_written_version_without_digest_cannot_be_overwritten(
    repo: Path, artifact: Path
) -> None:
    """v0 has no sha256 in the file; registering v0 is refused rather than guessed."""
    with pytest.raises(RegistryError, match="already registered with no sha256"):
        register(repo / "registry.toml", "recommender", "v0", artifact, source_dir=repo)


def test_same_bytes_under_another_id_are_reported(repo: Path, artifact: Path) -> None:
    """A second id for the same bytes is allowed but named in the result (and logged)."""
    register(repo / "registry.toml", "recommender", "v1", artifact, source_dir=repo)
    result = register(repo / "registry.toml", "recommender", "v3", artifact, source_dir=repo)
    assert result.created and result.same_bytes_as == ("v1",)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"version": "v 1"}, RegistryError, "invalid version id 'v 1'"),
        ({"version": "v1\n"}, RegistryError, "invalid version id"),
        ({"model": "../m"}, RegistryError, "invalid model name '../m'"),
        ({"stage": "prodution"}, RegistryError, "did you mean 'production'?"),
        ({"stage": "live"}, RegistryError, "unknown stage 'live'"),
        ({"artifact": "missing.joblib"}, ArtifactNotFoundError, "artifact file not found"),
        ({"data": ["missing.csv"]}, RegistryError, "data file not found: missing.csv"),
        ({"metrics": {"auc": "high"}}, RegistryError, "metric 'auc' must be a number"),
        ({"uri": "ftp://host/m.joblib"}, RegistryError, "unsupported URI scheme 'ftp'"),
    ],
)
def test_bad_input_is_a_clear_error_and_nothing_is_written(
    repo: Path, artifact: Path, kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    """Each refusal names what is wrong, and the registry file stays byte for byte the same."""
    arguments: dict[str, Any] = {"model": "recommender", "version": "v1", "artifact": artifact}
    arguments.update(kwargs)
    with pytest.raises(error, match=needle.replace("?", r"\?")):
        register(
            repo / "registry.toml",
            arguments.pop("model"),
            arguments.pop("version"),
            arguments.pop("artifact"),
            source_dir=repo,
            **arguments,
        )
    assert (repo / "registry.toml").read_text() == REGISTRY_TEXT
    assert not list(repo.glob(".registry.toml.*.tmp"))


def test_a_missing_artifact_does_not_create_a_registry(tmp_path: Path) -> None:
    """Nothing is written, not even a new empty registry file."""
    with pytest.raises(ArtifactNotFoundError):
        register(tmp_path / "registry.toml", "m", "v1", tmp_path / "nope.joblib")
    assert not (tmp_path / "registry.toml").exists()


def test_json_registries_are_rewritten_atomically_with_their_indentation(
    tmp_path: Path, artifact: Path
) -> None:
    """A JSON registry gains the version; its four-space indentation is kept."""
    path = tmp_path / "registry.json"
    document = {"models": {"m": {"default_version": "v0", "versions": {"v0": {"uri": "a"}}}}}
    path.write_text(json.dumps(document, indent=4))
    register(path, "m", "v1", artifact, user="ada", clock=lambda: NOON)
    text = path.read_text()
    assert '\n    "models": {\n' in text
    written = json.loads(text)["models"]["m"]["versions"]["v1"]
    assert written["history"][0]["at"] == "2024-05-01T12:00:00Z"
    assert load_registry(path).models["m"].versions["v1"].sha256 == sha(artifact)


def test_yaml_registries_are_not_edited(tmp_path: Path, artifact: Path) -> None:
    """Editing YAML would lose its comments: refused with a clear error."""
    path = tmp_path / "registry.yaml"
    path.write_text("models: {}\n")
    with pytest.raises(RegistryError, match="only TOML and JSON registries can be edited"):
        register(path, "m", "v1", artifact)


def test_a_registry_locked_by_another_edit_is_a_clear_error(repo: Path, artifact: Path) -> None:
    """While another process holds the registry's lock, an edit gives up and writes nothing."""
    with (
        filelock.FileLock(str(repo / ".registry.toml.lock")),
        pytest.raises(RegistryError, match="another edit of this registry holds"),
    ):
        register(repo / "registry.toml", "recommender", "v1", artifact, lock_timeout=0.05)
    assert (repo / "registry.toml").read_text() == REGISTRY_TEXT


def test_a_registry_changed_on_disk_during_an_edit_is_left_as_the_other_writer_left_it(
    repo: Path,
) -> None:
    """An editor that ignores the lock wins: the edit is refused, nothing is overwritten."""
    path = repo / "registry.toml"
    theirs = REGISTRY_TEXT + "# saved from an editor meanwhile\n"

    def change(edit: Edit) -> None:
        edit.document["models"]["recommender"]["default_version"] = "v0"
        path.write_text(theirs)

    with pytest.raises(RegistryError, match="changed on disk while it was being edited"):
        edit_registry(path, change)
    assert path.read_text() == theirs


@pytest.mark.slow
def test_concurrent_registrations_take_turns_and_none_is_lost(
    repo: Path, estimator: LogisticRegression
) -> None:
    """Eight threads registering eight versions at once: all eight are in the file."""
    paths = []
    for index in range(8):
        path = repo / f"v{index}.joblib"
        joblib.dump({"index": index, "model": estimator}, path)
        paths.append(path)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            register(repo / "registry.toml", "recommender", f"v{index + 1}", paths[index])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    versions = load_registry(repo / "registry.toml").models["recommender"].versions
    assert sorted(versions) == ["v0", *[f"v{index}" for index in range(1, 9)]]


def test_a_symlinked_registry_is_edited_at_its_target(repo: Path, artifact: Path) -> None:
    """The link stays a link; the file it points to gets the version."""
    real = repo / "registries" / "prod.toml"
    real.parent.mkdir()
    (repo / "registry.toml").replace(real)
    (repo / "registry.toml").symlink_to(Path("registries") / "prod.toml")
    register(repo / "registry.toml", "recommender", "v1", artifact)
    assert (repo / "registry.toml").is_symlink()
    assert "v1" in load_registry(real).models["recommender"].versions


# -- stages and promotion ------------------------------------------------------------------------


@pytest.fixture
def registered(repo: Path, artifact: Path) -> Path:
    register(repo / "registry.toml", "recommender", "v1", artifact, user="ada", clock=lambda: NOON)
    return repo / "registry.toml"


def test_promote_records_who_when_and_why_in_the_history(registered: Path) -> None:
    """Each move adds a history entry; the stage field follows."""
    later = datetime(2024, 5, 2, 9, 30, tzinfo=UTC)
    first = promote(registered, "recommender", "v1", to="staging", by="grace", clock=lambda: later)
    assert (first.previous, first.stage, first.by) == ("candidate", "staging", "grace")
    promote(registered, "recommender", "v1", to="production", by="grace", reason="AUC +2%")
    version = load_registry(registered).models["recommender"].versions["v1"]
    assert version.stage == "production"
    assert [(e.previous, e.stage, e.by, e.reason) for e in version.history] == [
        (None, "candidate", "ada", "registered"),
        ("candidate", "staging", "grace", ""),
        ("staging", "production", "grace", "AUC +2%"),
    ]
    assert version.history[1].at == later
    assert registered.read_text().startswith(REGISTRY_TEXT)


def test_without_by_the_promoter_is_the_login_name(registered: Path) -> None:
    """Who promoted is always recorded: the current user when not named."""
    promoted = promote(registered, "recommender", "v1", to="archived")
    assert promoted.by == modelflags.registry.versions.current_user()


def require_approval(path: Path) -> None:
    text = path.read_text().replace(
        'default_version = "v0"', 'default_version = "v0"\nrequire_approval = true', 1
    )
    path.write_text(text)


def test_production_with_required_approval_needs_a_named_approver(registered: Path) -> None:
    """Without --by, the promotion to production is refused and nothing is written."""
    require_approval(registered)
    before = registered.read_text()
    with pytest.raises(RegistryError, match="requires an approver for production"):
        promote(registered, "recommender", "v1", to="production")
    assert registered.read_text() == before


def test_the_registrant_cannot_approve_their_own_version(registered: Path) -> None:
    """Approval means a second person: ada registered v1, so ada cannot approve it."""
    require_approval(registered)
    with pytest.raises(RegistryError, match="registered by ada, who cannot approve it"):
        promote(registered, "recommender", "v1", to="production", by="ada")
    promoted = promote(registered, "recommender", "v1", to="production", by="grace")
    assert promoted.stage == "production"


def test_registering_straight_into_production_is_refused_when_approval_is_required(
    registered: Path, artifact: Path, tmp_path: Path
) -> None:
    """The approval rule cannot be skipped by registering with --stage production."""
    require_approval(registered)
    other = tmp_path / "v2.joblib"
    other.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(RegistryError, match="requires an approver for production"):
        register(registered, "recommender", "v2", other, stage="production")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "version", "stage", "needle"),
    [
        ("nope", "v1", "staging", "no model 'nope' (known: recommender)"),
        ("recommender", "v9", "staging", "has no version 'v9' (known: v0, v1)"),
        ("recommender", "v1", "candidate", "is already candidate"),
        ("recommender", "v1", "prod", "unknown stage 'prod'"),
    ],
)
def test_bad_promotions_are_clear_errors(
    registered: Path, model: str, version: str, stage: str, needle: str
) -> None:
    """Unknown model, version or stage, or no change: a RegistryError, nothing written."""
    before = registered.read_text()
    with pytest.raises(RegistryError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        promote(registered, model, version, to=stage)
    assert registered.read_text() == before


def test_the_top_level_package_offers_register_and_promote() -> None:
    """``modelflags.register`` is the registry's function that loads artifacts to run examples;
    ``modelflags.promote`` is the registry's."""
    assert modelflags.register.__wrapped__ is register  # type: ignore[attr-defined]
    assert modelflags.register.__doc__ == register.__doc__
    assert modelflags.promote is promote
