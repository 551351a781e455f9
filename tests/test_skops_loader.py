"""make_skops_loader on real scikit-learn models written with skops.io.dump."""

from __future__ import annotations

import operator
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from modelflags.artifacts.skops import make_skops_loader

sio = pytest.importorskip("skops.io", reason="the skops tests need skops (modelflags[skops])")

NEG = "_operator.neg"


class Doubler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A custom transformer: a type skops does not trust by default."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X) * 2


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(0)
    X = rng.rand(60, 3)
    return X, (X[:, 0] > 0.5).astype(int)


def dump(obj: Any, path: Path) -> Path:
    sio.dump(obj, path)
    return path


def test_loads_a_scikit_learn_model_that_needs_no_extra_trust(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    model = LogisticRegression().fit(X, y)
    loaded = make_skops_loader()(dump(model, tmp_path / "model.skops"))
    assert isinstance(loaded, LogisticRegression)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_refuses_a_function_that_is_not_trusted_and_names_it(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    model = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression()).fit(X, y)
    path = dump(model, tmp_path / "model.skops")
    with pytest.raises(ValueError, match=f"not trusted: {NEG}") as info:
        make_skops_loader()(path)
    assert "make_skops_loader(trusted=[...])" in str(info.value)


def test_loads_a_function_once_it_is_trusted(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    model = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression()).fit(X, y)
    loaded = make_skops_loader(trusted=[NEG])(dump(model, tmp_path / "model.skops"))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_refuses_a_custom_class_unless_it_is_trusted(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    model = make_pipeline(Doubler(), LogisticRegression()).fit(X, y)
    path = dump(model, tmp_path / "model.skops")
    name = f"{Doubler.__module__}.Doubler"
    with pytest.raises(ValueError, match=name):
        make_skops_loader(trusted=[NEG])(path)
    loaded = make_skops_loader(trusted=[name])(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_trusting_some_types_does_not_trust_the_others(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    model = make_pipeline(FunctionTransformer(operator.neg), Doubler(), LogisticRegression()).fit(
        X, y
    )
    path = dump(model, tmp_path / "model.skops")
    with pytest.raises(ValueError) as info:
        make_skops_loader(trusted=[NEG])(path)
    assert "Doubler" in str(info.value) and NEG not in str(info.value)


def test_a_single_string_is_not_taken_for_a_list_of_types() -> None:
    with pytest.raises(TypeError, match="not one string"):
        make_skops_loader(trusted=NEG)


def test_missing_skops_asks_to_install_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "skops", None)
    monkeypatch.setitem(sys.modules, "skops.io", None)
    with pytest.raises(ImportError, match=r"pip install 'modelflags\[skops\]'"):
        make_skops_loader()(tmp_path / "model.skops")


def test_skops_files_load_from_verified_bytes_through_the_store(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """The built-in skops loader reads the bytes the store hashed (a seekable stream over them)."""
    import hashlib

    from modelflags.artifacts import ArtifactStore, LoaderRegistry
    from modelflags.registry import Registry

    X, y = data
    model = LogisticRegression().fit(X, y)
    path = dump(model, tmp_path / "model.skops")
    registry = Registry.from_mapping(
        {
            "models": {
                "m": {
                    "default_version": "v1",
                    "versions": {
                        "v1": {
                            "uri": str(path),
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                        }
                    },
                }
            }
        }
    )
    spec = registry.models["m"].versions["v1"]
    loaded = ArtifactStore().load("m", "v1", spec, LoaderRegistry())
    np.testing.assert_array_equal(loaded.value.predict(X), model.predict(X))
