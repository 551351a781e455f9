"""Golden examples at registration: a sample of inputs run through the real scikit-learn model
being registered, kept with its outputs in a content-addressed file beside the registry."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import modelflags
from modelflags import RegistryError, load_registry
from modelflags.registry import register as register_without_loading
from modelflags.registry.examples import decode_examples, encode_examples, read_examples
from modelflags.registry.inputs import MAX_ROWS, read_inputs
from modelflags.registry.replay import record


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Named features, one of them text: what a shop's recommender is trained on."""
    rng = np.random.RandomState(3)
    return pd.DataFrame(
        {
            "age": rng.randint(18, 80, 120).astype(float),
            "basket": rng.rand(120) * 100,
            "country": rng.choice(["de", "fr", "it"], 120),
        }
    )


@pytest.fixture(scope="module")
def named_pipeline(frame: pd.DataFrame) -> Any:
    """A real pipeline fitted on a DataFrame (it records ``feature_names_in_``)."""
    y = ((frame["basket"] > 50) ^ (frame["country"] == "fr")).astype(int)
    columns = ColumnTransformer(
        [("num", StandardScaler(), ["age", "basket"]), ("cat", OneHotEncoder(), ["country"])]
    )
    return make_pipeline(columns, LogisticRegression()).fit(frame, y)


@pytest.fixture
def folder(tmp_path: Path, trained: dict[str, LogisticRegression]) -> Path:
    """Artifacts of real models pickled by this scikit-learn, and examples beside them."""
    joblib.dump(trained["v1"], tmp_path / "v1.joblib")
    joblib.dump(trained["v2"], tmp_path / "v2.joblib")
    np.save(tmp_path / "sample.npy", np.random.RandomState(5).rand(25, 3))
    return tmp_path


def test_register_runs_the_artifact_on_the_examples_and_keeps_inputs_and_outputs(
    folder: Path, trained: dict[str, LogisticRegression]
) -> None:
    """The artifact is loaded, run on the sample, and inputs with predict and predict_proba are
    kept in examples/<sha256>.npz, referenced from the version with their digest and rows."""
    registry = folder / "registry.toml"
    result = modelflags.register(registry, "recommender", "v1", folder / "v1.joblib",
                                 examples=folder / "sample.npy")  # fmt: skip
    assert result.examples is not None and result.created
    spec = load_registry(registry).models["recommender"].versions["v1"]
    assert spec.examples == result.examples
    file = Path(spec.examples.location)
    assert file == folder / "examples" / f"{spec.examples.sha256}.npz"
    assert spec.examples.uri == f"examples/{spec.examples.sha256}.npz"
    assert sha(file) == spec.examples.sha256 and spec.examples.rows == 25
    stored = decode_examples(file.read_bytes())
    sample = np.load(folder / "sample.npy")
    np.testing.assert_array_equal(stored.inputs.arrays[0], sample)
    np.testing.assert_array_equal(stored.outputs["predict"], trained["v1"].predict(sample))
    np.testing.assert_array_equal(
        stored.outputs["predict_proba"], trained["v1"].predict_proba(sample)
    )
    assert "examples = {" in registry.read_text()


def test_the_estimator_answers_when_it_is_passed_and_the_artifact_is_not_loaded(
    tmp_path: Path, trained: dict[str, LogisticRegression]
) -> None:
    """With ``estimator=``, its answers are recorded: the artifact's bytes are never loaded."""
    (tmp_path / "opaque.bin").write_bytes(b"not a pickle at all")
    sample = np.random.RandomState(6).rand(10, 3)
    result = modelflags.register(tmp_path / "r.toml", "m", "v1", tmp_path / "opaque.bin",
                                 estimator=trained["v2"], examples=sample)  # fmt: skip
    assert result.examples is not None
    stored = read_examples(result.examples)
    np.testing.assert_array_equal(stored.outputs["predict"], trained["v2"].predict(sample))


def test_the_same_examples_make_the_same_file_and_registering_again_changes_nothing(
    folder: Path, trained: dict[str, LogisticRegression]
) -> None:
    """The file is written deterministically: the same sample and model give the same bytes, so
    a second registration of the same id, bytes and examples writes nothing."""
    inputs = read_inputs(folder / "sample.npy")
    first = encode_examples(record(trained["v1"], inputs))
    assert encode_examples(record(trained["v1"], inputs)) == first
    registry = folder / "registry.toml"
    modelflags.register(registry, "m", "v1", folder / "v1.joblib", examples=folder / "sample.npy")
    before = registry.read_text()
    again = modelflags.register(registry, "m", "v1", folder / "v1.joblib",
                                examples=folder / "sample.npy")  # fmt: skip
    assert (again.created, again.examples_added) == (False, False)
    assert registry.read_text() == before
    assert again.examples is not None and again.examples.sha256 == hashlib.sha256(first).hexdigest()


def test_examples_are_added_to_a_version_registered_without_them(folder: Path) -> None:
    """A version registered before examples existed gains them; its entry is otherwise kept."""
    registry = folder / "registry.json"
    modelflags.register(registry, "m", "v1", folder / "v1.joblib")
    before = json.loads(registry.read_text())["models"]["m"]["versions"]["v1"]
    result = modelflags.register(registry, "m", "v1", folder / "v1.joblib",
                                 examples=folder / "sample.npy")  # fmt: skip
    assert (result.created, result.examples_added) == (False, True)
    after = json.loads(registry.read_text())["models"]["m"]["versions"]["v1"]
    assert after.pop("examples")["rows"] == 25
    assert after == before


def test_other_examples_for_a_version_that_has_some_are_refused(folder: Path) -> None:
    """Examples record what a version answered when they were taken: they are not replaced."""
    registry = folder / "registry.toml"
    modelflags.register(registry, "m", "v1", folder / "v1.joblib", examples=folder / "sample.npy")
    before = registry.read_text()
    with pytest.raises(RegistryError, match="already has examples"):
        modelflags.register(registry, "m", "v1", folder / "v1.joblib",
                            examples=np.ones((4, 3)))  # fmt: skip
    assert registry.read_text() == before
    assert len(list((folder / "examples").iterdir())) == 1


@pytest.mark.slow
def test_csv_examples_reach_a_model_fitted_on_named_features_as_a_dataframe(
    tmp_path: Path, frame: pd.DataFrame, named_pipeline: Any
) -> None:
    """A CSV header names the columns (in any order, text included); the pipeline gets a
    DataFrame, and the stored columns come back as one."""
    joblib.dump(named_pipeline, tmp_path / "v1.joblib")
    sample = frame.head(12)[["country", "basket", "age"]]
    sample.to_csv(tmp_path / "sample.csv", index=False)
    result = modelflags.register(tmp_path / "r.toml", "shop", "v1", tmp_path / "v1.joblib",
                                 examples=tmp_path / "sample.csv")  # fmt: skip
    assert result.examples is not None
    stored = read_examples(result.examples)
    assert stored.inputs.columns == ("country", "basket", "age")
    assert stored.inputs.arrays[0].dtype.kind == "U"
    given = stored.inputs.model_input()
    assert isinstance(given, pd.DataFrame)
    np.testing.assert_array_equal(stored.outputs["predict"], named_pipeline.predict(sample))


def test_an_array_gets_the_feature_names_of_a_model_fitted_on_named_features(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    """An array as wide as the model's named features is given the model's names."""
    numbers = frame[["age", "basket"]]
    model = LogisticRegression().fit(numbers, (numbers["basket"] > 50).astype(int))
    joblib.dump(model, tmp_path / "v1.joblib")
    result = modelflags.register(tmp_path / "r.toml", "m", "v1", tmp_path / "v1.joblib",
                                 examples=numbers.to_numpy()[:8])  # fmt: skip
    assert result.examples is not None
    assert read_examples(result.examples).inputs.columns == ("age", "basket")


def test_parquet_examples_are_read_with_pyarrow(
    tmp_path: Path, frame: pd.DataFrame, named_pipeline: Any
) -> None:
    """A Parquet file keeps its column names and types."""
    joblib.dump(named_pipeline, tmp_path / "v1.joblib")
    frame.head(9).to_parquet(tmp_path / "sample.parquet")
    result = modelflags.register(tmp_path / "r.toml", "shop", "v1", tmp_path / "v1.joblib",
                                 examples=tmp_path / "sample.parquet")  # fmt: skip
    assert result.examples is not None and result.examples.rows == 9
    assert read_examples(result.examples).inputs.columns == ("age", "basket", "country")


def test_parquet_without_pyarrow_is_a_clear_error(
    tmp_path: Path, frame: pd.DataFrame, named_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pyarrow, a .parquet file of examples says what to install; nothing is written."""
    joblib.dump(named_pipeline, tmp_path / "v1.joblib")
    frame.head(3).to_parquet(tmp_path / "sample.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(RegistryError, match=r"needs pyarrow \(pip install 'modelflags\[parquet\]'"):
        modelflags.register(tmp_path / "r.toml", "shop", "v1", tmp_path / "v1.joblib",
                            examples=tmp_path / "sample.parquet")  # fmt: skip
    assert not (tmp_path / "r.toml").exists() and not (tmp_path / "examples").exists()


def test_without_pandas_a_csv_of_numbers_is_read_for_a_model_fitted_on_an_array(
    folder: Path, trained: dict[str, LogisticRegression], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header is skipped and the numbers make one array; text needs pandas, and says so."""
    sample = np.random.RandomState(8).rand(6, 3)
    lines = ["a,b,c", *(",".join(repr(float(v)) for v in row) for row in sample)]
    (folder / "sample.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setitem(sys.modules, "pandas", None)
    inputs = read_inputs(folder / "sample.csv")
    np.testing.assert_array_equal(inputs.arrays[0], sample)
    (folder / "text.csv").write_text("a,b,c\n1,x,2\n")
    with pytest.raises(ValueError, match="without pandas a CSV of examples holds numbers only"):
        read_inputs(folder / "text.csv")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("examples", "needle"),
    [
        (np.ones((5, 4)), "the examples have 4 columns; the model expects 3 features"),
        (np.ones(5), "the examples have 1-D rows; the model expects 3 features"),
        (np.ones((2, 2, 3)), "examples are rows: a 1-D or 2-D array, not 3-D"),
        (np.ones((0, 3)), "the examples have no rows"),
        (np.ones((MAX_ROWS + 1, 3)), f"over the limit of {MAX_ROWS}"),
        (np.array([[1, None, 2]], dtype=object), r"None \(NoneType\) among objects"),
        (np.array([["a", None, "b"]], dtype=object), r"None \(NoneType\) among objects"),
        (np.array([["a", 1, 2.5]], dtype=object), "the examples: text mixed with numbers"),
        (pd.DataFrame({"a": ["x", None, "y"]}), r"column 'a': text with missing values \(NaN\)"),
        ("missing.npy", "examples file not found"),
        ("sample.txt", "use a .npy, .csv or .parquet file of examples"),
    ],
)
def test_examples_that_do_not_fit_are_refused_and_nothing_is_written(
    folder: Path, examples: Any, needle: str
) -> None:
    """Each refusal names the registry, model, version and what is wrong; no registry and no
    examples file are written."""
    if isinstance(examples, str):
        (folder / "sample.txt").write_text("1,2,3\n")
        examples = folder / examples
    with pytest.raises(RegistryError, match=needle) as caught:
        modelflags.register(folder / "r.toml", "m", "v1", folder / "v1.joblib", examples=examples)
    assert f"{folder / 'r.toml'}: model 'm' version 'v1'" in str(caught.value)
    assert caught.value.field == "versions.v1.examples"
    assert not (folder / "r.toml").exists() and not (folder / "examples").exists()


def test_objects_that_are_all_numbers_become_floats() -> None:
    """An object array of Python and numpy numbers (as a DataFrame may give) is read as floats."""
    inputs = read_inputs(np.array([[1, np.int64(2), 3.5]], dtype=object))
    assert inputs.arrays[0].dtype == np.float64
    np.testing.assert_array_equal(inputs.arrays[0], [[1.0, 2.0, 3.5]])


def test_named_examples_lacking_a_feature_of_the_model_are_refused(
    tmp_path: Path, frame: pd.DataFrame, named_pipeline: Any
) -> None:
    """The features the model was fitted on and the sample lacks are named."""
    joblib.dump(named_pipeline, tmp_path / "v1.joblib")
    with pytest.raises(
        RegistryError, match="lack 1 of the 3 features the model was fitted on: age"
    ):
        modelflags.register(tmp_path / "r.toml", "shop", "v1", tmp_path / "v1.joblib",
                            examples=frame[["basket", "country"]].head(4))  # fmt: skip
    assert not (tmp_path / "r.toml").exists()


def test_text_for_a_model_fitted_on_numbers_is_refused(folder: Path, frame: pd.DataFrame) -> None:
    """Named columns with text cannot become the array the model was fitted on."""
    with pytest.raises(RegistryError, match="columns 'country' hold text"):
        modelflags.register(folder / "r.toml", "m", "v1", folder / "v1.joblib",
                            examples=frame[["age", "basket", "country"]].head(3))  # fmt: skip


def test_an_artifact_that_cannot_load_is_a_clear_error(tmp_path: Path) -> None:
    """Examples are run through the artifact: bytes that do not load say so, nothing written."""
    (tmp_path / "v1.joblib").write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="cannot load the artifact to run its examples"):
        modelflags.register(tmp_path / "r.toml", "m", "v1", tmp_path / "v1.joblib",
                            examples=np.ones((2, 3)))  # fmt: skip
    assert not (tmp_path / "r.toml").exists()


def test_a_model_without_predict_is_refused(tmp_path: Path) -> None:
    """Examples record what predict answers: a transformer has none."""
    scaler = StandardScaler().fit(np.random.RandomState(0).rand(10, 3))
    joblib.dump(scaler, tmp_path / "v1.joblib")
    with pytest.raises(RegistryError, match="StandardScaler has no predict method"):
        modelflags.register(tmp_path / "r.toml", "m", "v1", tmp_path / "v1.joblib",
                            examples=np.ones((2, 3)))  # fmt: skip


def test_the_registry_function_needs_a_way_to_load_the_artifact(folder: Path) -> None:
    """Below the top-level package, examples need the estimator or a ``load`` function."""
    with pytest.raises(RegistryError, match="pass estimator="):
        register_without_loading(folder / "r.toml", "m", "v1", folder / "v1.joblib",
                                 examples=folder / "sample.npy")  # fmt: skip


def test_examples_stored_for_an_edit_that_is_refused_are_removed(folder: Path) -> None:
    """The examples file is written before the registry; when the registry is not written
    (here: its new entry is invalid), the file goes too."""
    with pytest.raises(RegistryError, match="unsupported URI scheme 'ftp'"):
        modelflags.register(folder / "r.toml", "m", "v1", folder / "v1.joblib",
                            uri="ftp://host/v1.joblib", examples=folder / "sample.npy")  # fmt: skip
    assert not (folder / "r.toml").exists()
    assert list((folder / "examples").iterdir()) == []


def test_text_labels_and_float_outputs_are_kept_as_they_are(tmp_path: Path) -> None:
    """String class labels are kept as text, a regressor's floats as floats."""
    rng = np.random.RandomState(2)
    X = rng.rand(60, 2)
    labels = np.where(X[:, 0] > 0.5, "buy", "skip")
    classifier = LogisticRegression().fit(X, labels)
    regressor = LinearRegression().fit(X, X[:, 0] * 3.0)
    labelled = record(classifier, read_inputs(X[:7]))
    assert labelled.outputs["predict"].dtype.kind == "U"
    assert set(labelled.outputs["predict"]) <= {"buy", "skip"}
    valued = record(regressor, read_inputs(X[:7]))
    assert valued.outputs["predict"].dtype.kind == "f" and "predict_proba" not in valued.outputs


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"uri": "https://host/e.npz", "sha256": "0" * 64, "rows": 1}, "a local file beside"),
        ({"uri": "e.npz", "sha256": "0" * 64, "rows": 0}, "greater than or equal to 1"),
        ({"uri": "e.npz", "sha256": "xyz", "rows": 1}, "should match pattern"),
    ],
)
def test_a_hand_written_examples_entry_is_validated(
    tmp_path: Path, entry: dict[str, Any], needle: str
) -> None:
    """The registry's examples field names its problems like every other field."""
    version = {"uri": "v1.joblib", "examples": entry}
    data = {"models": {"m": {"default_version": "v1", "versions": {"v1": version}}}}
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(RegistryError, match=needle):
        load_registry(tmp_path / "r.json")


def test_a_file_that_is_not_one_of_examples_is_refused_when_read(tmp_path: Path) -> None:
    """An .npz file written by something else, or not a zip at all, is not taken for examples."""
    buffer = tmp_path / "other.npz"
    np.savez(buffer, x=np.ones(3))
    with pytest.raises(ValueError, match="not a file of examples written by modelflags"):
        decode_examples(buffer.read_bytes())
    with pytest.raises(ValueError, match="not a file of examples"):
        decode_examples(b"plain bytes")
