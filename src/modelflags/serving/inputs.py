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
- **Drift**: the input is offered to an :class:`InputSampler` (the drift watch of
  :mod:`modelflags.rollout.drift`), which takes a sampled share onto a bounded queue and never
  blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """Takes a sampled share of inputs for drift statistics (the drift watch fits)."""

    def offer(self, model: str, version: str, data: Any) -> None:
        """Maybe keep ``data`` for later, off the request thread; never blocks, never raises."""


class ContractCheck:
    """Checks inputs against one model's declared input.

    Safe to share between threads: the only state is the last columns object that passed,
    replaced whole (a lost write costs one full comparison).
    """

    __slots__ = ("_index", "_names", "_seen", "features", "model", "width")

    def __init__(self, model: str, contract: InputContract) -> None:
        self.model = model
        self.features = contract.features
        self.width = contract.width
        self._names = frozenset(contract.features or ())
        self._index: Any = None
        self._seen: Any = None

    def check(self, version: str, data: Any) -> None:
        """Raise :class:`InputContractError` when ``data`` does not fit the declared input."""
        columns = getattr(data, "columns", None)
        if columns is not None:
            if columns is not self._seen:
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
        if self._same(columns, features):
            return
        names = [str(name) for name in columns]
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

    def _same(self, columns: Any, features: tuple[str, ...]) -> bool:
        equals = getattr(columns, "equals", None)
        if equals is None:
            return tuple(columns) == features
        index = self._index
        if index is None:
            index = self._index = type(columns)(list(features))
        try:
            return bool(equals(index))
        except Exception:  # a column index of another kind: judged name by name
            return False


class InputGate:
    """What the guard runs on each call's input before the model sees it.

    ``contracts``: the models whose input is validated, and their declared input; ``sampler``
    and ``watched``: where inputs of the watched models are offered for drift statistics. Safe
    to share between threads.
    """

    __slots__ = ("_checks", "_sampler", "_watched")

    def __init__(
        self,
        contracts: Mapping[str, InputContract],
        *,
        sampler: InputSampler | None = None,
        watched: frozenset[str] = frozenset(),
    ) -> None:
        self._checks = {name: ContractCheck(name, contract) for name, contract in contracts.items()}
        self._sampler = sampler
        self._watched = watched if sampler is not None else frozenset()

    def __bool__(self) -> bool:
        return bool(self._checks or self._watched)

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
        if model in self._watched:
            assert self._sampler is not None
            self._sampler.offer(model, version, data)
