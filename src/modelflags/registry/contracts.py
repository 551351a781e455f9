"""Input contracts: what a model's input looks like, and whether a version expects the same.

A model declares the input the application sends it; each version records the input it was
trained on (captured at registration from the estimator: ``feature_names_in_`` and
``n_features_in_``)::

    [models.recommender]
    input = { features = ["age", "country", "visits"], dtypes = { country = "str" } }

    [models.recommender.versions.v3]
    input = { features = ["age", "country", "visits"] }

    [models.ranker]
    input = { n_features = 12 }          # arrays: only their width is known

:func:`input_mismatch` decides whether what a version expects fits the declared input: a version
that needs a feature the input lacks cannot serve it; one that was not trained on a feature the
input has cannot either, unless it selects its columns by name (a scikit-learn
``ColumnTransformer``, alone or first in a ``Pipeline``); for estimators that match names in
order, the order must be the same. Everything here is pure; the serving core asks it before a
version may serve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelflags.errors import RegistryError
from modelflags.registry.reference import ReferenceStats, columns_of, reference_statistics

__all__ = [
    "InputContract",
    "capture_input",
    "contract_of",
    "describe_features",
    "dtypes_of",
    "input_mismatch",
    "plain_contract",
    "selects_by_name",
]

_SHOWN_FEATURES = 8


class InputContract(BaseModel):
    """The input of a model or a version: named ``features`` (in order) with optional
    ``dtypes`` (feature -> dtype name, as pandas writes them), or only ``n_features``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: tuple[str, ...] | None = None
    dtypes: dict[str, str] = Field(default_factory=dict)
    n_features: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> InputContract:
        if self.features is None and self.n_features is None:
            raise ValueError("an input needs features = [...] or n_features")
        if self.features is not None:
            if not self.features:
                raise ValueError("features is empty")
            seen: set[str] = set()
            twice: set[str] = set()
            for name in self.features:
                (twice if name in seen else seen).add(name)
            if twice:
                raise ValueError(f"features named twice: {', '.join(sorted(twice))}")
            if self.n_features is not None and self.n_features != len(self.features):
                raise ValueError(
                    f"n_features = {self.n_features} but {len(self.features)} features are named"
                )
            unknown = sorted(set(self.dtypes) - seen)
            if unknown:
                raise ValueError(f"dtypes of features not listed in features: {', '.join(unknown)}")
        elif self.dtypes:
            raise ValueError("dtypes need features = [...] to name them")
        return self

    @property
    def width(self) -> int:
        """How many features the input has."""
        if self.features is not None:
            return len(self.features)
        assert self.n_features is not None
        return self.n_features


def contract_of(estimator: object, sample: object = None) -> InputContract | None:
    """The input ``estimator`` was fitted on (``feature_names_in_``, else ``n_features_in_``),
    with the dtypes of ``sample`` (a pandas DataFrame) for its named features; None when the
    estimator says nothing of its input."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        features = tuple(str(name) for name in names)
        return InputContract(features=features, dtypes=dtypes_of(sample, features))
    width = getattr(estimator, "n_features_in_", None)
    if isinstance(width, int) and not isinstance(width, bool) and width >= 1:
        return InputContract(n_features=width)
    return None


def dtypes_of(sample: object, features: Sequence[str]) -> dict[str, str]:
    """The dtype names of ``features`` in ``sample`` when it is a DataFrame (else empty)."""
    dtypes = getattr(sample, "dtypes", None)
    if dtypes is None or not hasattr(sample, "columns"):
        return {}
    known = {str(name): str(dtype) for name, dtype in dict(dtypes).items()}
    return {name: known[name] for name in features if name in known}


def selects_by_name(estimator: object) -> bool:
    """True when ``estimator`` picks its input columns by name, so extra columns do not matter:
    a scikit-learn ``ColumnTransformer``, or a ``Pipeline`` whose first step is one."""
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list) and steps:
        first = steps[0]
        return selects_by_name(first[1] if isinstance(first, tuple) else first)
    return type(estimator).__name__ == "ColumnTransformer" and hasattr(estimator, "transformers")


def input_mismatch(
    declared: InputContract, expected: InputContract, *, by_name: bool = False
) -> str | None:
    """Why a version expecting ``expected`` cannot take the ``declared`` input (None: it can).

    ``by_name``: the version selects its columns by name, so features it does not use may come
    along, in any order.
    """
    if declared.features is None or expected.features is None:
        if declared.width != expected.width:
            return (
                f"it expects {expected.width} features, the model's declared input has "
                f"{declared.width}"
            )
        return None
    have, want = set(declared.features), set(expected.features)
    missing = [name for name in expected.features if name not in have]
    extra = [name for name in declared.features if name not in want]
    problems = []
    if missing:
        problems.append(f"it needs {describe_features(missing)}, which the declared input lacks")
    if extra and not by_name:
        problems.append(
            f"the declared input has {describe_features(extra)}, which it was not trained on"
        )
    if not problems and not by_name and declared.features != expected.features:
        problems.append("it expects the same features in another order")
    conflicts = [
        f"{name} ({expected.dtypes[name]} here, {declared.dtypes[name]} declared)"
        for name in expected.features
        if name in declared.dtypes
        and name in expected.dtypes
        and _kind(expected.dtypes[name]) != _kind(declared.dtypes[name])
    ]
    if conflicts:
        problems.append(f"other dtypes for {', '.join(conflicts)}")
    return "; ".join(problems) or None


def describe_features(names: Sequence[str]) -> str:
    """``feature 'a'`` or ``features 'a', 'b' and 3 more``: at most eight names shown."""
    shown = ", ".join(repr(name) for name in names[:_SHOWN_FEATURES])
    more = len(names) - _SHOWN_FEATURES
    word = "feature" if len(names) == 1 else "features"
    return f"{word} {shown}" + (f" and {more} more" if more > 0 else "")


_KINDS: Mapping[str, str] = {
    "f": "number",
    "i": "number",
    "u": "number",
    "c": "number",
    "b": "bool",
    "M": "datetime",
    "m": "timedelta",
}


def _kind(dtype: str) -> str:
    """The family of a dtype name: numbers of any width are one kind, strings another."""
    text = dtype.lower()
    if text == "category":
        return "category"
    if text == "boolean":
        return "bool"
    if text in ("object", "str", "string") or text.startswith(("string", "<u", "|s")):
        return "text"
    if text.startswith("datetime"):
        return "datetime"
    try:
        import numpy as np

        return _KINDS.get(np.dtype(text).kind, text)
    except (TypeError, ValueError, ImportError):
        return text


def plain_contract(contract: InputContract) -> dict[str, Any]:
    """The contract as the registry writes it (no empty fields)."""
    return contract.model_dump(exclude_none=True, exclude_defaults=True)


def capture_input(
    estimator: object, reference: object, *, where: str, model: str, version: str
) -> tuple[InputContract | None, ReferenceStats | None]:
    """The input ``estimator`` was fitted on and the reference statistics of ``reference`` (the
    training sample), checked against each other at registration.

    Raises :class:`~modelflags.errors.RegistryError` when the sample does not fit the estimator
    (another number of columns, or features it lacks) or cannot be summarised.
    """
    contract = contract_of(estimator, reference) if estimator is not None else None
    if reference is None:
        return contract, None
    field = f"versions.{version}.reference"
    features: Sequence[str] | None = None
    try:
        if contract is not None:
            columns = columns_of(reference)  # every column, to judge its shape first
            named = contract.features is not None and hasattr(reference, "columns")
            if not named and len(columns) != contract.width:
                raise ValueError(
                    f"it has {len(columns)} columns, the estimator expects {contract.width}"
                )
            features = contract.features
        stats = reference_statistics(reference, features=features)
    except ValueError as exc:
        raise RegistryError(
            f"{where}: model {model!r} version {version!r}: the reference sample does not fit "
            f"the model: {exc}",
            file=where,
            model=model,
            field=field,
        ) from exc
    return contract, stats
