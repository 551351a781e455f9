"""Input contracts: a version that cannot take the declared input is refused at load, and calls
whose input does not fit are refused before the model sees them (never falling back)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelflags import InputContractError, ModelFlags, RegistryError
from modelflags.options import set_validate_input_default, validate_input_default
from modelflags.registry import Registry
from modelflags.registry.contracts import (
    InputContract,
    contract_of,
    input_mismatch,
    selects_by_name,
)

from frames import OLDER, TODAY, by_name, frame, plain
from support import Workspace

TRAIN = frame(400, seed=1)
REQUEST = frame(5, seed=2)


@pytest.fixture
def today(workspace: Workspace) -> Workspace:
    """Model ``m`` declares today's input; v2 (the default) was trained on it."""
    workspace.add("m", "v2", by_name(TODAY, TRAIN), default=True)
    workspace.set("m", input={"features": list(TODAY), "dtypes": {"country": "str"}})
    return workspace


def cause_of(flags: ModelFlags, version: str) -> str:
    (entry,) = [q for q in flags.status()["m"].quarantined if q.version == version]
    return entry.cause


# -- the contract itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "words"),
    [
        ({"features": ["a", "b", "a"]}, "features named twice: a"),
        ({"features": ["a", "b"], "n_features": 3}, "n_features = 3 but 2 features are named"),
        ({"features": ["a"], "dtypes": {"b": "float64"}}, "dtypes of features not listed"),
        ({"dtypes": {"b": "float64"}}, "an input needs features"),
        ({"features": []}, "features is empty"),
        ({"n_features": 0}, "greater than or equal to 1"),
    ],
)
def test_a_malformed_input_table_is_a_registry_error_naming_the_field(
    declared: dict[str, Any], words: str
) -> None:
    model = {"default_version": "v1", "versions": {"v1": {"uri": "a"}}, "input": declared}
    with pytest.raises(RegistryError, match="field 'input") as caught:
        Registry.from_mapping({"models": {"m": model}}, source="r.toml")
    assert words in str(caught.value)


def test_the_contract_of_a_fitted_pipeline_is_its_features_and_their_dtypes() -> None:
    """Named features from ``feature_names_in_`` (dtypes from the sample), else the count."""
    contract = contract_of(by_name(TODAY, TRAIN), TRAIN)
    assert contract is not None
    assert contract.features == TODAY
    assert contract.dtypes["age"] == "float64"
    assert contract.dtypes["country"] in ("str", "object")
    array_trained = LogisticRegression().fit(TRAIN[list(OLDER)].to_numpy(), TRAIN["age"] > 40)
    assert contract_of(array_trained) == InputContract(n_features=2)
    assert contract_of(object()) is None


def test_selecting_by_name_is_a_column_transformer_first() -> None:
    assert selects_by_name(by_name(OLDER, TRAIN))
    assert not selects_by_name(plain(OLDER, TRAIN))
    assert not selects_by_name(LogisticRegression())


def test_mismatches_are_described_in_words() -> None:
    """Missing, extra (unless selected by name), order, count and dtype differences."""
    declared = InputContract(features=TODAY, dtypes={"country": "str"})
    older = InputContract(features=OLDER)
    assert input_mismatch(declared, older) == (
        "the declared input has features 'visits', 'country', which it was not trained on"
    )
    assert input_mismatch(declared, older, by_name=True) is None
    assert input_mismatch(older, declared, by_name=True) == (
        "it needs features 'visits', 'country', which the declared input lacks"
    )
    swapped = InputContract(features=("income", "age"))
    assert input_mismatch(older, swapped) == "it expects the same features in another order"
    assert input_mismatch(older, swapped, by_name=True) is None
    assert input_mismatch(InputContract(n_features=3), older) == (
        "it expects 2 features, the model's declared input has 3"
    )
    numbers = InputContract(features=TODAY, dtypes={"country": "int64"})
    assert (
        input_mismatch(declared, numbers) == "other dtypes for country (int64 here, str declared)"
    )
    widths = InputContract(features=TODAY, dtypes={"country": "string"})
    assert input_mismatch(declared, widths) is None  # str and string are both text


# -- refused at load ----------------------------------------------------------------------------


def test_a_version_trained_on_an_older_feature_set_is_refused_at_load(
    today: Workspace, set_flags: Callable[..., None]
) -> None:
    """v1 takes exactly age and income: it cannot take today's input, so v2 answers, and the
    cause names the features."""
    today.add("m", "v1", plain(OLDER, TRAIN))
    set_flags(m="v1")
    with ModelFlags(today.write()) as flags:
        model = flags.get_model("m")
        assert (model.version, model.requested_version, model.reason) == ("v2", "v1", "FALLBACK")
        assert model.predict(REQUEST).shape == (5,)
        cause = cause_of(flags, "v1")
    assert "model 'm' version 'v1' cannot take the model's declared input" in cause
    assert "features 'visits', 'country', which it was not trained on" in cause


@pytest.mark.slow
def test_an_older_version_that_selects_its_columns_by_name_serves(
    today: Workspace, set_flags: Callable[..., None]
) -> None:
    """A rollback target with a ColumnTransformer first takes today's input as it is."""
    older = by_name(OLDER, TRAIN)
    today.add("m", "v1", older)
    set_flags(m="v1")
    with ModelFlags(today.write()) as flags:
        model = flags.get_model("m")
        assert (model.version, model.reason) == ("v1", "STATIC")
        np.testing.assert_array_equal(model.predict(REQUEST), older.predict(REQUEST))


def test_a_version_that_needs_a_feature_the_input_lacks_is_refused(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Declared: the older input; v2 needs visits and country, which requests do not carry."""
    workspace.add("m", "v1", by_name(OLDER, TRAIN))
    workspace.add("m", "v2", by_name(TODAY, TRAIN))
    workspace.set("m", input={"features": list(OLDER)})
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        assert flags.get_model("m").version == "v1"
        assert "it needs features 'visits', 'country', which the declared input lacks" in (
            cause_of(flags, "v2")
        )


def test_an_array_model_of_another_width_is_refused(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Declared n_features = 3: a version fitted on two columns is refused, naming both counts."""
    workspace.add("m", "v1", LogisticRegression().fit(np.random.rand(50, 3), np.arange(50) % 2))
    workspace.add("m", "v2", LogisticRegression().fit(np.random.rand(50, 2), np.arange(50) % 2))
    workspace.set("m", input={"n_features": 3})
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        assert flags.get_model("m").version == "v1"
        assert "it expects 2 features, the model's declared input has 3" in cause_of(flags, "v2")


def test_dtypes_recorded_at_registration_must_match_the_declared_ones(
    today: Workspace, set_flags: Callable[..., None]
) -> None:
    """v3 was trained with country as numbers: refused against a declared text column."""
    numbers = TRAIN.assign(country=TRAIN["country"].map({"de": 0, "fr": 1, "it": 2}))
    today.add(
        "m",
        "v3",
        by_name(TODAY, numbers),
        input={"features": list(TODAY), "dtypes": {"country": "int64"}},
    )
    set_flags(m="v3")
    with ModelFlags(today.write()) as flags:
        assert flags.get_model("m").version == "v2"
        assert "other dtypes for country (int64 here, str declared)" in cause_of(flags, "v3")


# -- checked per call ---------------------------------------------------------------------------


class Counting:
    """Wraps a model and counts the calls that reach it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls = 0

    def predict(self, data: Any) -> Any:
        self.calls += 1
        return self.model.predict(data)


@pytest.fixture
def counted(today: Workspace) -> Iterator[tuple[ModelFlags, dict[str, Counting]]]:
    """v2 (the LKG) and v3 (flagged) wrapped so calls that reach them are counted."""
    today.add("m", "v3", by_name(TODAY, TRAIN))
    seen: dict[str, Counting] = {}

    def loader(path: Path) -> Counting:
        import joblib

        wrapped = seen[path.stem.rpartition("-")[2]] = Counting(joblib.load(path))
        return wrapped

    for version in ("v2", "v3"):
        today.models["m"]["versions"][version]["loader"] = "counted"
    with ModelFlags(
        today.write(), loaders={"counted": loader}, validate_input=True, metrics=True
    ) as flags:
        yield flags, seen


@pytest.mark.slow
def test_missing_and_extra_columns_are_named_before_the_model_is_called(
    counted: tuple[ModelFlags, dict[str, Counting]], set_flags: Callable[..., None]
) -> None:
    """A request without visits and with a stray column: InputContractError names both; the
    model never ran, nothing fell back, nothing was quarantined or counted."""
    flags, seen = counted
    set_flags(m="v3")
    model = flags.get_model("m")
    bad = REQUEST.drop(columns=["visits"]).assign(visit_count=1)
    with pytest.raises(InputContractError) as caught:
        model.predict(bad)
    error = caught.value
    assert (error.model, error.version, error.missing, error.extra) == (
        "m",
        "v3",
        ("visits",),
        ("visit_count",),
    )
    assert "the input lacks feature 'visits' and has feature 'visit_count'" in str(error)
    assert "the model was not called" in str(error)
    assert isinstance(error, ValueError)
    assert {name: wrapped.calls for name, wrapped in seen.items()} == {"v3": 0}
    assert flags.status()["m"].quarantined == ()
    assert flags.metrics("m") == {}
    assert model.predict(REQUEST).shape == (5,)  # a good request passes, in any column order
    assert model.predict(REQUEST[list(reversed(TODAY))]).shape == (5,)
    assert seen["v3"].calls == 2


def test_arrays_are_judged_by_their_width(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Declared n_features = 3: a (5, 2) or 1-D array is refused with its shape named."""
    fitted = LogisticRegression().fit(np.random.rand(50, 3), np.arange(50) % 2)
    workspace.add("m", "v1", fitted)
    workspace.set("m", input={"n_features": 3})
    with ModelFlags(workspace.write(), validate_input=True) as flags:
        model = flags.get_model("m")
        assert model.predict(np.zeros((5, 3))).shape == (5,)
        with pytest.raises(InputContractError, match=r"input has shape \(5, 2\)"):
            model.predict(np.zeros((5, 2)))
        with pytest.raises(InputContractError, match=r"shape \(3,\).*3 features"):
            model.predict_proba(X=np.zeros(3))
        assert model.predict([[0.0, 0.0, 0.0]]).shape == (1,)  # lists pass unchecked


def test_validation_is_on_under_pytest_and_off_when_asked(
    today: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """The plugin turns the default on; validate_input=False turns it off for one instance,
    and then the model itself meets the bad input."""
    assert validate_input_default() is True
    bad = REQUEST.drop(columns=["visits"])
    with ModelFlags(today.write()) as flags, pytest.raises(InputContractError):
        flags.get_model("m").predict(bad)
    with ModelFlags(today.write(), validate_input=False) as flags:
        with pytest.raises(ValueError, match="columns are missing") as caught:
            flags.get_model("m").predict(bad)
        assert not isinstance(caught.value, InputContractError)
    previous = set_validate_input_default(False)
    try:
        with (
            ModelFlags(today.write()) as flags,
            pytest.raises(ValueError, match="columns are missing"),
        ):
            flags.get_model("m").predict(bad)
    finally:
        set_validate_input_default(previous)


def test_a_model_without_a_declared_input_is_never_checked(workspace: Workspace) -> None:
    workspace.add("m", "v1", by_name(TODAY, TRAIN))
    with (
        ModelFlags(workspace.write(), validate_input=True) as flags,
        pytest.raises(ValueError, match="columns are missing"),
    ):
        flags.get_model("m").predict(REQUEST[["age"]])


def test_methods_that_do_not_take_the_model_s_input_are_not_checked(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """inverse_transform takes the output space: it is left alone."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(np.random.rand(30, 4))
    workspace.add("m", "v1", pca)
    workspace.set("m", input={"n_features": 4})
    with ModelFlags(workspace.write(), validate_input=True) as flags:
        model = flags.get_model("m")
        reduced = model.transform(np.random.rand(3, 4))
        assert model.inverse_transform(reduced).shape == (3, 4)
        with pytest.raises(InputContractError):
            model.transform(reduced)


def test_registration_records_the_version_s_input_and_declares_a_new_model_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """register(estimator=...) writes the version's input; the first version of a model declares
    it; a later version that does not fit the declaration is registered with a warning."""
    import joblib

    from modelflags.registry import load_registry, register

    registry = tmp_path / "registry.toml"
    for version, estimator in (("v1", plain(OLDER, TRAIN)), ("v2", plain(TODAY[:3], TRAIN))):
        path = tmp_path / f"{version}.joblib"
        joblib.dump(estimator, path)
        with caplog.at_level(logging.WARNING):
            result = register(
                registry, "m", version, path, estimator=estimator, source_dir=tmp_path
            )
        assert result.input is not None and result.input.features == tuple(
            estimator.feature_names_in_
        )
    spec = load_registry(registry).models["m"]
    assert spec.input == InputContract(features=OLDER)
    assert spec.versions["v2"].input == InputContract(features=TODAY[:3])
    assert "version 'v2' does not take the model's declared input" in caplog.text
    assert "it needs feature 'visits', which the declared input lacks" in caplog.text
    assert "[models.m.input]" in registry.read_text()


@pytest.mark.parametrize(
    "kind",
    [None, object, "string[python]", "string[pyarrow]", list],
    ids=["default", "object", "python strings", "arrow strings", "a plain list"],
)
def test_columns_of_every_kind_are_compared_by_name(kind: Any) -> None:
    """pandas indexes of object, Python or Arrow strings, and plain lists (as other DataFrame
    libraries give) are judged alike: same names pass in any order, others are named."""
    import pandas as pd

    from modelflags.serving.inputs import ContractCheck

    def frame_of(names: list[Any]) -> SimpleNamespace:
        if kind is list:
            return SimpleNamespace(columns=names)
        return SimpleNamespace(columns=pd.Index(names, dtype=kind))

    check = ContractCheck("m", InputContract(features=TODAY))
    for _ in range(2):  # the second time, what was learned about the columns' kind is reused
        check.check("v1", frame_of(list(TODAY)))
        check.check("v1", frame_of(list(reversed(TODAY))))
    with pytest.raises(InputContractError) as caught:
        check.check("v1", frame_of([*TODAY[:3], "region"]))
    assert (caught.value.missing, caught.value.extra) == (("country",), ("region",))
    with pytest.raises(InputContractError, match="lacks features 'age'"):
        check.check("v1", SimpleNamespace(columns=pd.Index([0, 1, 2, 3])))
