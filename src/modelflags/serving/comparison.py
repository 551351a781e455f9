"""Comparing a shadow's output with the primary's, element by element (needs numpy).

Label outputs (integers, booleans, strings, objects) count towards agreement; floating-point
outputs (probabilities, scores) towards the absolute differences, where a NaN in the same place of
both is no difference. Outputs of different shapes agree on nothing. Without numpy a model with a
shadow flag is refused when the instance is made (:func:`require_comparisons`), so a mirrored call
is never counted as an error for want of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from modelflags.errors import ModelFlagsError

__all__ = ["Comparison", "compare", "require_comparisons"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """How two outputs of one call compare, element by element."""

    elements: int
    equal: int
    numeric: int
    abs_diff_sum: float
    abs_diff_max: float | None


def compare(primary: Any, shadow: Any) -> Comparison:
    """Compare two outputs element-wise.

    Label outputs (integers, booleans, strings, objects) count towards agreement; floating-point
    outputs (probabilities, scores) towards the absolute differences, where a NaN in the same
    place of both is no difference. Outputs of different shapes agree on nothing.
    """
    import numpy as np

    left = np.asarray(primary)
    right = np.asarray(shadow)
    if left.shape != right.shape:
        size = max(left.size, right.size, 1)
        return Comparison(size, 0, 0, 0.0, None)
    size = int(left.size)
    if not size:
        return Comparison(0, 0, 0, 0.0, None)
    if _is_number(left) and _is_number(right) and (_is_float(left) or _is_float(right)):
        diff = np.abs(left.astype(np.float64) - right.astype(np.float64))
        diff[np.isnan(left) & np.isnan(right)] = 0.0
        diff = diff[~np.isnan(diff)]
        if not diff.size:
            return Comparison(0, 0, 0, 0.0, None)
        return Comparison(0, 0, int(diff.size), float(diff.sum()), float(diff.max()))
    return Comparison(size, int(np.count_nonzero(left == right)), 0, 0.0, None)


def _is_number(array: Any) -> bool:
    import numpy as np

    return bool(np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.bool_))


def _is_float(array: Any) -> bool:
    import numpy as np

    return bool(np.issubdtype(array.dtype, np.inexact))


def require_comparisons(models: Iterable[str]) -> None:
    """Refuse, at start, shadow flags on a machine without numpy (comparisons need it).

    Raises :class:`~modelflags.errors.ModelFlagsError` naming the models with a shadow flag;
    without this check every mirrored call would silently count as an error.
    """
    shadowed = sorted(models)
    if not shadowed:
        return
    try:
        import numpy  # noqa: F401
    except ImportError as exc:
        raise ModelFlagsError(
            f"model(s) {', '.join(map(repr, shadowed))} have a shadow_flag, and comparing shadow "
            "outputs needs numpy, which is not installed: pip install numpy (it comes with "
            "modelflags[sklearn]), or remove the shadow_flag"
        ) from exc
