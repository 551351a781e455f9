"""A version run on its examples: the outputs recorded at registration, compared at a check.

:func:`record` fits a sample of inputs to the model (the features it was fitted on, named or
counted: a clear error when they do not fit) and runs ``predict`` and, when the model has it,
``predict_proba``. :func:`compare` tells whether outputs given now equal the recorded ones:
labels (integers, booleans, text) exactly, floats within a tolerance, element by element as
:func:`numpy.isclose` does (``|now - recorded| <= atol + rtol * |recorded|``, NaN equal to NaN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelflags.errors import ModelFlagsError, RegistryError
from modelflags.registry.examples import Examples, encode_examples
from modelflags.registry.inputs import Inputs, read_inputs
from modelflags.registry.schema import VersionSpec

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "METHODS",
    "Comparison",
    "Load",
    "compare",
    "fit_inputs",
    "record",
    "record_examples",
    "run_method",
]

METHODS = ("predict", "predict_proba")
"""The methods whose outputs are recorded, when the model has them (``predict`` it must have)."""
DEFAULT_RTOL = 1e-5
"""Relative tolerance for float outputs (numpy's default for ``isclose``)."""
DEFAULT_ATOL = 1e-8
"""Absolute tolerance for float outputs (numpy's default for ``isclose``)."""

Load = Callable[[str, str, VersionSpec], Any]
"""Loads a version's artifact as serving would: ``load(model, version, spec) -> model object``."""

_FLOAT_KINDS = "fc"
_NUMBER_KINDS = "biufc"


def fit_inputs(inputs: Inputs, model: object) -> Inputs:
    """``inputs`` as the model takes them, judged by what scikit-learn records when it fits.

    A model fitted on named features (``feature_names_in_``) gets named columns: an array gets the
    model's names when its width fits, a frame must hold every one of them. A model fitted on an
    array (``n_features_in_`` only) gets an array that wide (named columns are stacked). Other
    models get the inputs as they are. Raises ``ValueError`` naming what does not fit.
    """
    names = getattr(model, "feature_names_in_", None)
    width = getattr(model, "n_features_in_", None)
    if names is not None:
        wanted = [str(name) for name in names]
        if inputs.named:
            missing = [name for name in wanted if name not in inputs.columns]
            if missing:
                raise ValueError(
                    f"the examples lack {len(missing)} of the {len(wanted)} features the model "
                    f"was fitted on: {', '.join(missing)}"
                )
            return inputs
        array = inputs.arrays[0]
        if array.ndim != 2 or array.shape[1] != len(wanted):
            raise ValueError(
                f"the examples have {_width(array)}; the model was fitted on {len(wanted)} "
                f"named features ({', '.join(wanted)})"
            )
        return Inputs(tuple(array[:, i] for i in range(len(wanted))), tuple(wanted))
    if isinstance(width, int):
        array = inputs.as_array()
        if array.ndim != 2 or array.shape[1] != width:
            raise ValueError(
                f"the examples have {_width(array)}; the model expects {width} features "
                "(its n_features_in_)"
            )
        return Inputs((array,))
    return inputs


def _width(array: NDArray[Any]) -> str:
    if array.ndim != 2:
        return f"{array.ndim}-D rows"
    return f"{array.shape[1]} column{'' if array.shape[1] == 1 else 's'}"


def record(model: object, inputs: Inputs) -> Examples:
    """Run the model on the inputs (fitted to it) and keep what each method answered.

    Raises ``ValueError`` when the model has no ``predict``, the inputs do not fit, or a method
    fails on them or answers something that is not one row per input of numbers or text.
    """
    if not callable(getattr(model, "predict", None)):
        raise ValueError(
            f"{type(model).__name__} has no predict method: examples record what predict answers"
        )
    fitted = fit_inputs(inputs, model)
    given = fitted.model_input()
    outputs = {
        method: run_method(model, method, given, fitted.rows)
        for method in METHODS
        if callable(getattr(model, method, None))
    }
    return Examples(fitted, outputs)


def run_method(model: object, method: str, given: Any, rows: int) -> NDArray[Any]:
    """``model.<method>(given)`` as an array of one row per input (``ValueError`` otherwise)."""
    import numpy as np

    try:
        answer = getattr(model, method)(given)
    except Exception as exc:  # the model's own error, reported with its type
        raise ValueError(f"{method} failed on the examples: {type(exc).__name__}: {exc}") from exc
    array = np.asarray(answer)
    if array.dtype.kind == "O" and all(isinstance(item, str) for item in array.ravel()):
        array = array.astype(str)
    if array.dtype.kind not in _NUMBER_KINDS + "U":
        raise ValueError(
            f"{method} answered values of type {array.dtype}; examples record numbers and text"
        )
    if array.ndim == 0 or array.shape[0] != rows:
        raise ValueError(
            f"{method} answered {array.shape[0] if array.ndim else 'one value'} rows "
            f"for {rows} inputs"
        )
    return array


def record_examples(
    examples: object,
    *,
    estimator: object,
    load: Load | None,
    spec: VersionSpec,
    where: str,
    model: str,
    version: str,
) -> tuple[bytes, int]:
    """The ``.npz`` bytes of ``examples`` run through the version being registered (``estimator``,
    else its artifact loaded with ``load``), and their number of rows.

    Raises :class:`RegistryError` naming the registry, model and version when the examples
    cannot be read, the artifact cannot be loaded, or the examples do not fit the model.
    """
    field = f"versions.{version}.examples"
    subject = f"{where}: model {model!r} version {version!r}"
    try:
        inputs = read_inputs(examples)
    except ValueError as exc:
        raise RegistryError(
            f"{subject}: examples: {exc}", file=where, model=model, field=field
        ) from None
    answerer = estimator
    if answerer is None:
        if load is None:
            raise RegistryError(
                f"{subject}: examples are run through the model: pass estimator= (or load=; "
                "modelflags.register loads the artifact itself)",
                file=where,
                model=model,
                field=field,
            )
        try:
            answerer = load(model, version, spec)
        except ModelFlagsError as exc:
            raise RegistryError(
                f"{subject}: cannot load the artifact to run its examples: {exc}",
                file=where,
                model=model,
                field=field,
            ) from exc
    try:
        recorded = record(answerer, inputs)
    except ValueError as exc:
        raise RegistryError(
            f"{subject}: the examples do not fit the model: {exc}; nothing was written",
            file=where,
            model=model,
            field=field,
        ) from exc
    return encode_examples(recorded), recorded.rows


@dataclass(frozen=True)
class Comparison:
    """Whether one method's outputs equal the recorded ones.

    ``exact`` tells labels (compared exactly) from floats (within ``rtol``/``atol``);
    ``mismatched`` counts the rows with any element that differs, ``first_row`` is the first of
    them, ``max_difference`` the largest absolute difference of floats; ``detail`` says it all in
    one sentence. Immutable: safe to share between threads.
    """

    method: str
    equal: bool
    exact: bool
    rows: int
    mismatched: int = 0
    first_row: int | None = None
    max_difference: float | None = None
    detail: str = ""


def compare(
    method: str,
    recorded: NDArray[Any],
    now: NDArray[Any],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> Comparison:
    """Compare the outputs ``now`` with the ``recorded`` ones (see the module's docstring)."""
    import numpy as np

    exact = recorded.dtype.kind not in _FLOAT_KINDS
    rows = len(recorded)
    if now.shape != recorded.shape:
        return Comparison(
            method, False, exact, rows, rows, 0,
            detail=f"{method}: shape {now.shape} here, {recorded.shape} recorded",
        )  # fmt: skip
    if (recorded.dtype.kind in _NUMBER_KINDS) != (now.dtype.kind in _NUMBER_KINDS):
        kinds = ("numbers", "text") if now.dtype.kind in _NUMBER_KINDS else ("text", "numbers")
        return Comparison(
            method, False, exact, rows, rows, 0,
            detail=f"{method}: {kinds[0]} here, {kinds[1]} recorded",
        )  # fmt: skip
    largest: float | None = None
    if exact:
        same = np.asarray(now == recorded)
    else:
        same = np.isclose(now, recorded, rtol=rtol, atol=atol, equal_nan=True)
        both = np.isfinite(now) & np.isfinite(recorded)
        gaps = np.abs(now - recorded)[both]
        largest = float(gaps.max()) if gaps.size else 0.0
    bad_rows = ~same.reshape(rows, -1).all(axis=1) if rows else np.zeros(0, dtype=bool)
    mismatched = int(bad_rows.sum())
    if mismatched == 0:
        how = "exactly" if exact else f"within rtol={rtol:g}, atol={atol:g}"
        return Comparison(
            method, True, exact, rows, 0, None, largest,
            f"{method}: {rows} rows equal {how}",
        )  # fmt: skip
    first = int(np.flatnonzero(bad_rows)[0])
    if exact:
        detail = (
            f"{method}: {mismatched} of {rows} rows differ (first: row {first}, "
            f"{_row(now[first])} here, {_row(recorded[first])} recorded)"
        )
    else:
        detail = (
            f"{method}: {mismatched} of {rows} rows differ by more than rtol={rtol:g}, "
            f"atol={atol:g} (largest difference {largest:.3g}; first: row {first})"
        )
    return Comparison(method, False, exact, rows, mismatched, first, largest, detail)


def _row(value: Any) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= 60 else text[:57] + "..."
