"""A sample of model inputs, read from a file or taken from an array or a DataFrame.

Inputs are one array (from ``.npy`` or an array-like) or named columns (from a CSV or Parquet
header, or a DataFrame); named columns reach the model as a pandas DataFrame. Every array holds
numbers, booleans, dates or text (objects that are all strings become text), so that a file of
examples can be written and read without pickling anything.
"""

from __future__ import annotations

import csv
import numbers
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["MAX_ROWS", "Inputs", "read_inputs"]

MAX_ROWS = 10_000
"""The most rows a sample of examples may have: they are meant to be small, and live in git."""

_SUFFIXES = (".npy", ".csv", ".parquet")
# Kinds of arrays kept as they are: booleans, integers, floats, complex, text, dates, durations.
_PLAIN_KINDS = frozenset("biufcUMm")


@dataclass(frozen=True)
class Inputs:
    """A sample of model inputs: one array (``columns`` empty), or one array per named column.

    Named columns reach the model as a pandas DataFrame, one array as it is. Immutable (the
    arrays are not copied: do not change them): safe to share between threads.
    """

    arrays: tuple[NDArray[Any], ...]
    columns: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        """The number of rows."""
        return len(self.arrays[0]) if self.arrays else 0

    @property
    def named(self) -> bool:
        """True for named columns."""
        return bool(self.columns)

    def as_array(self) -> NDArray[Any]:
        """The inputs as one array (named columns stacked, their names dropped)."""
        import numpy as np

        if not self.named:
            return self.arrays[0]
        text = [
            name for name, a in zip(self.columns, self.arrays, strict=True) if a.dtype.kind in "UO"
        ]
        if text:
            raise ValueError(
                f"columns {', '.join(map(repr, text))} hold text, which a model fitted on an "
                "array of numbers cannot take"
            )
        return np.column_stack(self.arrays)

    def model_input(self) -> Any:
        """What the model is given: a DataFrame for named columns (needs pandas), else the array."""
        if not self.named:
            return self.arrays[0]
        try:
            import pandas as pd
        except ImportError:
            raise ValueError(
                "examples with named columns are given to the model as a pandas DataFrame, "
                "and pandas is not installed (pip install pandas)"
            ) from None
        return pd.DataFrame(dict(zip(self.columns, self.arrays, strict=True)))


def read_inputs(source: object) -> Inputs:
    """Inputs from a file (``.npy``, ``.csv``, ``.parquet``), a DataFrame or an array-like.

    ``.csv`` keeps its header as column names with pandas, and is read as numbers without it;
    ``.parquet`` needs pyarrow. Raises ``ValueError`` naming what is wrong (a missing file, an
    unknown suffix, a missing library, objects that are not numbers, text or dates, no rows or
    more than :data:`MAX_ROWS`).
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix not in _SUFFIXES:
            raise ValueError(f"{path}: use a .npy, .csv or .parquet file of examples")
        if not path.is_file():
            raise ValueError(f"examples file not found: {path}")
        try:
            if suffix == ".npy":
                inputs = _from_array(_load_npy(path))
            elif suffix == ".csv":
                inputs = _read_csv(path)
            else:
                inputs = _read_parquet(path)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    elif _is_frame(source):
        inputs = _from_frame(source)
    else:
        inputs = _from_array(source)
    if inputs.rows == 0:
        raise ValueError("the examples have no rows")
    if inputs.rows > MAX_ROWS:
        raise ValueError(
            f"{inputs.rows} rows of examples, over the limit of {MAX_ROWS}: examples are a small "
            "sample, kept beside the registry"
        )
    return inputs


def _load_npy(path: Path) -> NDArray[Any]:
    import numpy as np

    try:
        loaded: NDArray[Any] = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"not an array of numbers or text ({exc})") from None
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc}") from None
    return loaded


def _read_csv(path: Path) -> Inputs:
    """With pandas: named, typed columns. Without: a header, then numbers only."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    if pd is not None:
        try:
            return _from_frame(pd.read_csv(path))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read it as CSV: {exc}") from None
    import numpy as np

    with path.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    if not rows:
        raise ValueError("empty CSV file")
    header, body = rows[0], rows[1:]
    try:
        values = [[float(cell) for cell in row] for row in body if row]
    except ValueError as exc:
        raise ValueError(f"{exc}: without pandas a CSV of examples holds numbers only") from None
    if any(len(row) != len(header) for row in values):
        raise ValueError(f"every row needs {len(header)} values, as the header has")
    return Inputs((np.array(values, dtype=float).reshape(len(values), len(header)),))


def _read_parquet(path: Path) -> Inputs:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            "reading .parquet examples needs pyarrow (pip install 'modelflags[parquet]'); "
            "or save them as .npy or .csv"
        ) from None
    import pyarrow as pa

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"cannot read it as Parquet: {exc}") from None
    return _named(
        table.column_names,
        [table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names],
    )


def _is_frame(value: object) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _from_frame(frame: Any) -> Inputs:
    import numpy as np

    names = [str(name) for name in frame.columns]
    return _named(names, [np.asarray(frame[column]) for column in frame.columns])


def _named(names: list[str], arrays: list[NDArray[Any]]) -> Inputs:
    if len(set(names)) != len(names):
        raise ValueError("column names repeat")
    if not names:
        raise ValueError("the examples have no columns")
    return Inputs(
        tuple(_plain(a, f"column {n!r}") for n, a in zip(names, arrays, strict=True)), tuple(names)
    )


def _from_array(value: object) -> Inputs:
    import numpy as np

    array = _plain(np.asarray(value), "the examples")
    if array.ndim not in (1, 2):
        raise ValueError(f"examples are rows: a 1-D or 2-D array, not {array.ndim}-D")
    return Inputs((array,))


def _plain(array: NDArray[Any], what: str) -> NDArray[Any]:
    """``array`` as an array the ``.npz`` can hold without pickling: objects that are all text
    become text, all numbers become floats; anything else is refused."""
    if array.dtype.kind in _PLAIN_KINDS:
        return array
    if array.dtype.kind == "O":
        items = array.ravel()
        if all(isinstance(item, str) for item in items):
            return array.astype(str)
        if all(_is_number(item) for item in items):
            return array.astype(float)
        odd = [item for item in items if not isinstance(item, str) and not _is_number(item)]
        if not odd and any(isinstance(item, float) and item != item for item in items):
            raise ValueError(f"{what}: text with missing values (NaN), which examples cannot hold")
        if not odd:
            raise ValueError(f"{what}: text mixed with numbers")
        raise ValueError(
            f"{what}: {odd[0]!r} ({type(odd[0]).__name__}) among objects; examples hold numbers, "
            "booleans, dates and text (a missing number is NaN, missing text is not allowed)"
        )
    raise ValueError(f"{what} has values of type {array.dtype}, which examples cannot hold")


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
