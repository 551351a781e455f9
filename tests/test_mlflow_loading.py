"""MLflow model folders load through this package's loaders, from verified bytes.

The folders are written by MLflow's own ``mlflow.sklearn.save_model`` and
``mlflow.pyfunc.save_model`` (no server needed), then loaded through the ``mlflow`` loader and
the artifact store's load contract.
"""

from __future__ import annotations

import gc
import importlib.util
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow_fixtures import mlflow_quietly
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from modelflags.artifacts import ArtifactStore, LoaderRegistry
from modelflags.artifacts.folders import folder_digest, read_folder
from modelflags.artifacts.mlflow_flavors import load_mlflow_folder
from modelflags.artifacts.naming import Subject
from modelflags.errors import DeserializationError, DigestMismatchError, VersionRefusedError
from modelflags.registry.mlflow import MlflowVersionRef
from modelflags.registry.schema import VersionSpec

# Looked up, not imported: importing MLflow takes seconds, and only the tests that run need it.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason="the mlflow extra is not installed"
)

SUBJECT = Subject.of("m", "1", "models:/m/1")


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return np.random.RandomState(5).rand(50, 4)


def save(path: Path, model: Any, **options: Any) -> Path:
    with mlflow_quietly() as mlflow:
        mlflow.sklearn.save_model(model, str(path), pip_requirements=["scikit-learn"], **options)
    return path


def spec_of(folder: Path, *, pinned: bool = True, trusted: tuple[str, ...] = ()) -> VersionSpec:
    return VersionSpec.model_validate(
        {
            "uri": "models:/m/1",
            "sha256": folder_digest(folder).sha256 if pinned else None,
            "loader": "mlflow",
            "mlflow": MlflowVersionRef(
                tracking_uri="http://127.0.0.1:9",
                name="m",
                version="1",
                artifact_uri=str(folder),
                skops_trusted_types=trusted,
            ),
        },
        context={"base_dir": None},
    )


@pytest.mark.slow
@pytest.mark.parametrize("serialization", ["pickle", "cloudpickle", "skops"])
def test_each_sklearn_serialization_format_loads_the_estimator_itself(
    tmp_path: Path, X: np.ndarray, serialization: str
) -> None:
    """pickle, cloudpickle and skops folders load as the scikit-learn estimator."""
    model = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    folder = save(tmp_path / "model", model, serialization_format=serialization)
    store = ArtifactStore(cache_dir=tmp_path / "cache")
    loaded = store.load("m", "1", spec_of(folder), LoaderRegistry())
    assert isinstance(loaded.value, LogisticRegression)
    assert (loaded.value.predict_proba(X) == model.predict_proba(X)).all()
    assert loaded.sha256 == folder_digest(folder).sha256
    assert loaded.nbytes == folder_digest(folder).size


@pytest.mark.slow
def test_a_folder_changed_after_pinning_is_not_loaded(tmp_path: Path, X: np.ndarray) -> None:
    """The store checks the folder digest before the loader sees a byte."""
    model = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    folder = save(tmp_path / "model", model, serialization_format="pickle")
    spec = spec_of(folder)
    (folder / "MLmodel").write_text((folder / "MLmodel").read_text() + "\n# changed\n")
    with pytest.raises(DigestMismatchError):
        ArtifactStore(cache_dir=tmp_path / "cache").load("m", "1", spec, LoaderRegistry())


def test_an_unpinned_folder_is_refused_before_it_is_fetched(tmp_path: Path, X: np.ndarray) -> None:
    """No pinned digest, no load: the refusal says how to pin it."""
    model = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    folder = save(tmp_path / "model", model, serialization_format="pickle")
    with pytest.raises(VersionRefusedError, match="modelflags mlflow pin m 1") as caught:
        ArtifactStore(cache_dir=tmp_path / "cache").load(
            "m", "1", spec_of(folder, pinned=False), LoaderRegistry()
        )
    assert caught.value.check == "digest"
    assert not (tmp_path / "cache").exists()


def forest_without_recorded_types(tmp_path: Path, X: np.ndarray) -> tuple[Path, Any]:
    forest = RandomForestClassifier(n_estimators=4, random_state=0).fit(
        X, (X[:, 1] > 0.5).astype(int)
    )
    folder = save(
        tmp_path / "forest",
        forest,
        serialization_format="skops",
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
    mlmodel = folder / "MLmodel"
    text = re.sub(
        r"skops_trusted_types:\n(\s+- .*\n)+", "skops_trusted_types: null\n", mlmodel.read_text()
    )
    assert "sklearn.tree._tree.Tree" not in text
    mlmodel.write_text(text)
    return folder, forest


def test_skops_refuses_types_nobody_trusted(tmp_path: Path, X: np.ndarray) -> None:
    """A skops file needing a type neither its MLmodel nor the registry trusts is refused,
    naming the type."""
    folder, _ = forest_without_recorded_types(tmp_path, X)
    store = ArtifactStore(cache_dir=tmp_path / "cache")
    with pytest.raises(DeserializationError, match=r"sklearn\.tree\._tree\.Tree"):
        store.load("m", "1", spec_of(folder), LoaderRegistry())


def test_skops_loads_with_the_types_the_registry_trusts(tmp_path: Path, X: np.ndarray) -> None:
    """The mlflow table's skops_trusted_types are added to those the MLmodel records."""
    folder, forest = forest_without_recorded_types(tmp_path, X)
    store = ArtifactStore(cache_dir=tmp_path / "cache")
    spec = spec_of(folder, trusted=("sklearn.tree._tree.Tree",))
    loaded = store.load("m", "1", spec, LoaderRegistry())
    assert (loaded.value.predict(X) == forest.predict(X)).all()


@pytest.mark.slow
def test_a_pyfunc_only_model_loads_through_mlflow_from_a_private_copy(
    tmp_path: Path, X: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an sklearn flavor, MLflow's pyfunc loader reads a private copy of the verified
    files, which is removed once the model is gone."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    model = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    folder = save(tmp_path / "model", model, serialization_format="pickle")
    mlmodel = folder / "MLmodel"
    text = mlmodel.read_text()
    mlmodel.write_text(re.sub(r"\n  sklearn:\n(    .*\n)+", "\n", text))
    assert "  sklearn:" not in mlmodel.read_text()
    verified = read_folder(folder, SUBJECT, sha256=None)
    with mlflow_quietly():
        loaded = load_mlflow_folder(verified)
        assert not isinstance(loaded, LogisticRegression)
        assert (loaded.predict(X) == model.predict(X)).all()
    copies = [path for path in Path(tempfile.gettempdir()).glob("modelflags-*") if path.is_dir()]
    del loaded
    gc.collect()
    assert not [path for path in copies if path.exists() and (path / "MLmodel").exists()]


def test_the_mlflow_loader_refuses_a_single_file(tmp_path: Path) -> None:
    """An MLflow version is a folder; a file registered with loader mlflow fails to load."""
    path = tmp_path / "model.pkl"
    path.write_bytes(b"not a folder")
    spec = VersionSpec.model_validate(
        {"uri": str(path), "loader": "mlflow"}, context={"base_dir": None}
    )
    with pytest.raises(DeserializationError, match="folders, not single files"):
        ArtifactStore().load("m", "1", spec, LoaderRegistry())


def test_a_folder_without_a_loadable_flavor_says_which_flavors_it_has(tmp_path: Path) -> None:
    """An MLmodel with only other flavors is refused with their names."""
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors:\n  onnx:\n    data: model.onnx\n")
    (folder / "model.onnx").write_bytes(b"\0")
    with pytest.raises(ValueError, match="flavors onnx"):
        load_mlflow_folder(read_folder(folder, SUBJECT, sha256=None))
