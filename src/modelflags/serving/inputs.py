"""The input of an inference call: checked against the model's declared input, sampled for drift.

Both happen on the request thread before the model sees the input, and both are off unless
asked for; with neither, the guard pays one attribute check.

Only the methods that take the model's input (:data:`INPUT_METHODS`: ``predict``,
``predict_proba``, ``transform``, ...) are looked at.

- **Contract** (``ModelFlags(validate_input=True)``, on by default under pytest): a DataFrame's
  columns must be the model's declared features (in any order; the missing and extra ones are
  named), a two-dimensional array's (or sparse matrix's) width their number. Other inputs (lists,
  dicts, text) pass unchecked. A misfit raises
  :class:`~modelflags.errors.InputContractError` and never falls back: bad input is the caller's.
  Dtypes are checked when a version loads, not per call (reading a DataFrame's dtypes costs more
  than many predictions).
- **Drift**: a sampled share of the inputs of watched models (a draw of the random source
  against the model's rate) is handed to an :class:`InputSampler` (the drift watch of
  :mod:`modelflags.rollout.drift`), which puts it on a bounded queue and never blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from modelflags.errors import InputContractError
from modelflags.registry.contracts import InputContract, describe_features

__all__ = ["INPUT_METHODS", "ContractCheck", "InputGate", "InputSampler"]

INPUT_METHODS = frozenset(
    {
        "__call__",
        "apply",
        "decision_function",
        "predict",
        "predict_joint_log_proba",
        "predict_log_proba",
        "predict_proba",
        "score",
        "score_samples",
        "staged_decision_function",
        "staged_predict",
        "staged_predict_proba",
        "transform",
    }
)
"""The methods whose first argument is the model's input (``inverse_transform``'s is not)."""


class InputSampler(Protocol):
    """Takes sampled inputs for drift statistics (the drift watch fits)."""

    def offer(self, model: str, version: str, data: Any) -> None:
        """Keep ``data`` for work off the request thread; never blocks, never raises."""


class ContractCheck:
    """Checks inputs against one model's declared input.

    Safe to share between threads: the only state is the last columns object that passed,
    replaced whole (a lost write costs one full comparison).
    """

    __slots__ = ("_arrow", "_names", "_seen", "features", "model", "width")

    def __init__(self, model: str, contract: InputContract) -> None:
        self.model = model
        self.features = contract.features
        self.width = contract.width
        self._names = frozenset(contract.features or ())
        self._arrow: Any = None
        self._seen: Any = None

    def check(self, version: str, data: Any) -> None:
        """Raise :class:`InputContractError` when ``data`` does not fit the declared input."""
        columns = getattr(data, "columns", None)
        if columns is not None:
            if columns is self._seen:
                return
            # pandas' Arrow-backed text columns compare through the Arrow protocol in well under
            # a microsecond, where listing them costs several.
            expected = self._arrow
            if expected is not None:
                to_arrow = getattr(getattr(columns, "array", None), "__arrow_array__", None)
                try:
                    if to_arrow is not None and to_arrow().equals(expected):
                        self._seen = columns
                        return
                except Exception:  # not what pyarrow makes of text: judged name by name
                    pass
            self._check_columns(version, columns)
            self._seen = columns
            return
        shape = getattr(data, "shape", None)
        if shape is not None and (len(shape) != 2 or shape[1] != self.width):
            raise InputContractError(
                f"model {self.model!r} version {version!r}: the input has shape "
                f"{tuple(shape)}, and the model's declared input is {self.width} features "
                "(rows x features); the model was not called",
                model=self.model,
                version=version,
            )

    def _check_columns(self, version: str, columns: Any) -> None:
        features = self.features
        if features is None:
            if len(columns) != self.width:
                raise InputContractError(
                    f"model {self.model!r} version {version!r}: the input has {len(columns)} "
                    f"columns, and the model's declared input is {self.width} features; the "
                    "model was not called",
                    model=self.model,
                    version=version,
                )
            return
        tolist = getattr(columns, "tolist", None)
        names = tolist() if callable(tolist) else list(columns)
        if names == list(features):
            self._learn_arrow(columns, features)
            return
        names = [str(name) for name in names]
        present = set(names)
        missing = tuple(name for name in features if name not in present)
        extra = tuple(name for name in names if name not in self._names)
        if not missing and not extra:
            return  # the same features in another order
        problems = []
        if missing:
            problems.append(f"lacks {describe_features(missing)}")
        if extra:
            problems.append(f"has {describe_features(extra)}, which the declared input does not")
        raise InputContractError(
            f"model {self.model!r} version {version!r}: the input {' and '.join(problems)} "
            f"(declared: {describe_features(features)}); the model was not called",
            model=self.model,
            version=version,
            missing=missing,
            extra=extra,
        )

    def _learn_arrow(self, columns: Any, features: tuple[str, ...]) -> None:
        """Keep the declared features in the Arrow form of ``columns``, when they have one."""
        to_arrow = getattr(getattr(columns, "array", None), "__arrow_array__", None)
        if to_arrow is None:
            return
        try:
            import pyarrow as pa

            arrow = to_arrow()
            array = pa.array(list(features), type=arrow.type)
            chunked = isinstance(arrow, pa.ChunkedArray)
            self._arrow = pa.chunked_array([array]) if chunked else array
        except Exception:  # no pyarrow, or not text: the columns are listed each time
            self._arrow = None


class InputGate:
    """What the guard runs on each call's input before the model sees it.

    ``contracts``: the models whose input is validated, and their declared input; ``sampler``,
    ``rates`` and ``random``: where the sampled share (``rates``, per watched model) of inputs
    is handed for drift statistics. Safe to share between threads.
    """

    __slots__ = ("_checks", "_random", "_rates", "_sampler")

    def __init__(
        self,
        contracts: Mapping[str, InputContract],
        *,
        sampler: InputSampler | None = None,
        rates: Mapping[str, float] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self._checks = {name: ContractCheck(name, contract) for name, contract in contracts.items()}
        watched = sampler is not None and random is not None
        self._rates = dict(rates or {}) if watched else {}
        self._sampler: InputSampler = sampler if sampler is not None else _Nowhere()
        self._random: Callable[[], float] = random if random is not None else _never

    def __bool__(self) -> bool:
        return bool(self._checks or self._rates)

    def __call__(
        self,
        model: str,
        version: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> None:
        """Check (and maybe sample) the input of one call of ``method`` (one of
        :data:`INPUT_METHODS`): its first argument, or ``X=``."""
        if method not in INPUT_METHODS:
            return
        data = args[0] if args else kwargs.get("X")
        if data is None:
            return
        check = self._checks.get(model)
        if check is not None:
            check.check(version, data)
        rate = self._rates.get(model)
        if rate is not None and self._random() < rate:
            self._sampler.offer(model, version, data)


class _Nowhere:
    """The sampler of a gate that samples nothing."""

    def offer(self, model: str, version: str, data: Any) -> None:
        """Drop ``data``."""


def _never() -> float:
    return 1.0
