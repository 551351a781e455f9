"""Reference statistics of a training sample: what is recorded at registration, and the errors
that stop a registration (or a start) instead of a request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from modelflags import ModelFlags, RegistryError
from modelflags.registry import Registry, load_registry, register
from modelflags.registry.reference import (
    DriftRules,
    FeatureReference,
    read_sample,
    reference_statistics,
)

from frames import TODAY, by_name, frame

TRAIN = frame(2000, seed=1)


def test_numeric_features_get_decile_bins_and_text_features_their_top_values() -> None:
    """Ten bins of about a tenth each for a continuous feature; shares of the values of a text
    one; every share list adds up to one."""
    stats = reference_statistics(TRAIN)
    assert stats.rows == 2000
    assert list(stats.features) == list(TODAY)
    age = stats.features["age"]
    assert len(age.edges) == 9
    assert all(abs(share - 0.1) < 0.01 for share in age.shares)
    country = stats.features["country"]
    assert country.categories == ("de", "fr", "it")
    assert abs(country.shares[0] - 0.5) < 0.05
    assert country.shares[-1] == 0.0  # nothing beyond the three values
    for feature in stats.features.values():
        assert abs(sum(feature.shares) - 1.0) < 1e-9
        assert feature.missing == 0.0


def test_ties_merge_bins_and_missing_values_are_counted_apart() -> None:
    """A count with few values gets fewer bins; NaN and None are the missing share."""
    data = TRAIN.copy()
    data.loc[:199, "income"] = np.nan
    data.loc[:99, "country"] = None
    stats = reference_statistics(data)
    visits = stats.features["visits"]
    assert len(visits.edges) < 9
    assert visits.edges == tuple(sorted(set(visits.edges)))
    assert stats.features["income"].missing == pytest.approx(0.1)
    assert stats.features["country"].missing == pytest.approx(0.05)
    empty = reference_statistics({"x": np.array([np.nan, np.nan])}).features["x"]
    assert (empty.shares, empty.missing) == ((0.0,), 1.0)


def test_arrays_and_mappings_are_named_by_position_or_by_key() -> None:
    array = np.random.default_rng(0).normal(size=(100, 3))
    assert list(reference_statistics(array).features) == ["x0", "x1", "x2"]
    named = reference_statistics(array, features=["a", "b", "c"])
    assert list(named.features) == ["a", "b", "c"]
    picked = reference_statistics(TRAIN, features=["income", "age"])
    assert list(picked.features) == ["income", "age"]


@pytest.mark.parametrize(
    ("sample", "features", "words"),
    [
        (np.zeros(5), None, "must be two-dimensional"),
        (np.zeros((0, 2)), None, "has no rows"),
        (np.zeros((5, 2)), ["a"], "has 2 columns, not the 1 features named"),
        (frame(5), ["age", "tenure"], "the sample lacks 'tenure'"),
    ],
)
def test_samples_that_do_not_fit_are_value_errors(
    sample: Any, features: list[str] | None, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        reference_statistics(sample, features=features)


def test_inconsistent_statistics_are_refused_by_the_schema() -> None:
    with pytest.raises(ValueError, match="edges must increase"):
        FeatureReference(edges=(2.0, 1.0), shares=(0.3, 0.3, 0.4))
    with pytest.raises(ValueError, match="3 shares expected"):
        FeatureReference(edges=(1.0, 2.0), shares=(0.5, 0.5))
    with pytest.raises(ValueError, match="must add up to 1"):
        FeatureReference(categories=("a",), shares=(0.5, 0.2))
    with pytest.raises(ValueError, match="drift needs a rule"):
        DriftRules()


# -- at registration ----------------------------------------------------------------------------


@pytest.fixture
def artifact(tmp_path: Path) -> tuple[Path, Any]:
    estimator = by_name(TODAY, TRAIN)
    path = tmp_path / "v1.joblib"
    joblib.dump(estimator, path)
    return path, estimator


@pytest.mark.slow
def test_register_records_the_reference_in_the_version_entry(
    tmp_path: Path, artifact: tuple[Path, Any]
) -> None:
    """The statistics land in the registry, readable, and load back as the same values."""
    path, estimator = artifact
    registry = tmp_path / "registry.toml"
    result = register(
        registry, "m", "v1", path, estimator=estimator, reference=TRAIN, source_dir=tmp_path
    )
    assert result.reference is not None and result.reference.rows == 2000
    text = registry.read_text()
    assert "[models.m.versions.v1.reference]" in text
    assert "[models.m.versions.v1.reference.features.age]" in text
    spec = load_registry(registry).models["m"].versions["v1"]
    assert spec.reference == result.reference
    assert spec.input is not None and spec.input.dtypes["age"] == "float64"


@pytest.mark.slow
def test_a_reference_that_does_not_fit_the_estimator_is_refused_and_nothing_written(
    tmp_path: Path, artifact: tuple[Path, Any]
) -> None:
    """A sample lacking a feature the estimator needs, or of another width, stops registration."""
    path, estimator = artifact
    registry = tmp_path / "registry.toml"
    with pytest.raises(RegistryError, match="the sample lacks 'visits'") as caught:
        register(
            registry, "m", "v1", path, estimator=estimator, reference=TRAIN.drop(columns="visits")
        )
    assert "model 'm' version 'v1': the reference sample does not fit the model" in str(
        caught.value
    )
    assert caught.value.field == "versions.v1.reference"
    with pytest.raises(RegistryError, match="it has 3 columns, the estimator expects 4"):
        register(registry, "m", "v1", path, estimator=estimator, reference=np.zeros((10, 3)))
    assert not registry.exists()


def test_a_drift_rule_without_reference_statistics_is_an_error_at_start(tmp_path: Path) -> None:
    """A hand-written drift table on versions registered without a sample: the registry is
    invalid, so the process does not start (and registration into it would be refused)."""
    model = {
        "default_version": "v1",
        "versions": {"v1": {"uri": "a.joblib"}},
        "drift": {"max_feature_psi": 0.2},
    }
    with pytest.raises(RegistryError, match="drift rules need reference statistics") as caught:
        ModelFlags({"models": {"m": model}})
    assert "model 'm'" in str(caught.value)
    stats = reference_statistics(TRAIN).model_dump()
    model["versions"] = {"v1": {"uri": "a.joblib", "reference": stats}}
    assert Registry.from_mapping({"models": {"m": model}}).models["m"].drift is not None
    model["versions"] = {
        "v1": {"uri": "a.joblib"},
        "v0": {"uri": "b.joblib", "reference": stats, "stage": "archived"},
    }
    with pytest.raises(RegistryError, match="no version that may serve has any"):
        Registry.from_mapping({"models": {"m": model}})


def test_samples_are_read_from_npy_and_csv_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.npy without pickles; .csv with pandas, or with the csv module when pandas is missing."""
    np.save(tmp_path / "x.npy", np.ones((4, 2)))
    assert read_sample(tmp_path / "x.npy").shape == (4, 2)
    TRAIN.head(20).to_csv(tmp_path / "x.csv", index=False)
    assert isinstance(read_sample(tmp_path / "x.csv"), pd.DataFrame)
    monkeypatch.setitem(sys.modules, "pandas", None)
    columns = read_sample(tmp_path / "x.csv")
    assert list(columns) == list(TODAY)
    assert columns["age"].dtype == np.float64
    assert columns["country"].dtype == object
    with pytest.raises(ValueError, match=r"from \.npy or \.csv"):
        read_sample(tmp_path / "x.parquet")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="cannot read"):
        read_sample(tmp_path / "objects.npy")


@pytest.mark.slow
def test_the_command_records_a_reference_file(tmp_path: Path, artifact: tuple[Path, Any]) -> None:
    """modelflags register --reference FILE summarises the sample; a bad file is a usage error."""
    path, _ = artifact
    sample = tmp_path / "train.csv"
    TRAIN.to_csv(sample, index=False)
    registry = tmp_path / "registry.toml"
    command = [sys.executable, "-m", "modelflags", "register", str(registry), "m", "v1", str(path)]
    done = subprocess.run(
        [*command, "--reference", str(sample), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reference_rows"] == 2000
    assert load_registry(registry).models["m"].versions["v1"].reference is not None
    bad = subprocess.run(
        [*command, "--reference", str(tmp_path / "train.txt")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert "from .npy or .csv" in bad.stderr
