"""Golden examples: a small sample of inputs and the outputs a version gave on them.

::

    [models.recommender.versions.v3]
    uri = "recommender-v3.joblib"
    sha256 = "9f2c..."
    examples = { uri = "examples/5e88....npz", sha256 = "5e88...", rows = 200 }

``modelflags register --examples FILE`` reads the inputs
(:func:`~modelflags.registry.inputs.read_inputs`: ``.npy``, ``.csv``, or ``.parquet`` with
pyarrow), runs the version on them (:mod:`~modelflags.registry.replay`) and
stores inputs and outputs as one ``.npz`` file in ``examples/`` beside the registry, named by its
sha256 (:func:`store_examples`): content-addressed, so the same examples are one file, and a file
whose bytes changed no longer matches its name or the registry. ``modelflags check`` reads them
back (:func:`read_examples`, digest checked) and replays them.

The file is written deterministically (fixed zip timestamps, sorted entries) and read with
``allow_pickle=False``: it holds numbers, booleans, dates and text only, never objects, so reading
it cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from modelflags.registry.inputs import Inputs

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "EXAMPLES_FOLDER",
    "Examples",
    "ExamplesRef",
    "decode_examples",
    "encode_examples",
    "read_examples",
    "store_examples",
]

EXAMPLES_FOLDER = "examples"
"""The folder beside the registry file where examples are stored."""

_FORMAT = 1
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


class ExamplesRef(BaseModel):
    """Where a version's examples are: a local ``.npz`` file (``uri``, relative to the registry's
    folder), its ``sha256`` and its number of ``rows``. ``location`` is the path made absolute."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int = Field(ge=1)
    location: str = ""

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> ExamplesRef:
        parts = urlsplit(self.uri)
        scheme = parts.scheme.lower()
        if len(scheme) > 1 and scheme != "file":
            raise ValueError(
                f"examples are a local file beside the registry, not {self.uri!r} "
                "(use a path or file://)"
            )
        raw = unquote(parts.path) if scheme == "file" else self.uri
        path = Path(os.path.expanduser(raw))
        base = (info.context or {}).get("base_dir")
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        object.__setattr__(self, "location", str(path.absolute()))
        return self


@dataclass(frozen=True)
class Examples:
    """Inputs and the outputs a version gave on them, by method (``predict``, ``predict_proba``).
    Immutable: safe to share between threads."""

    inputs: Inputs
    outputs: Mapping[str, NDArray[Any]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """The number of rows."""
        return self.inputs.rows


# -- the .npz file -----------------------------------------------------------------------------


def encode_examples(examples: Examples) -> bytes:
    """The bytes of the ``.npz`` file: the same examples always give the same bytes."""
    import numpy as np

    entries: dict[str, NDArray[Any]] = {"format": np.array(_FORMAT)}
    if examples.inputs.named:
        entries["columns"] = np.array(examples.inputs.columns, dtype=str)
    for index, array in enumerate(examples.inputs.arrays):
        entries[f"input.{index}"] = array
    for method, output in examples.outputs.items():
        entries[f"output.{method}"] = output
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as stream:
                np.lib.format.write_array(stream, entries[name], allow_pickle=False)
    return buffer.getvalue()


def decode_examples(data: bytes) -> Examples:
    """Examples from the bytes of a ``.npz`` file (read without unpickling anything).

    Raises ``ValueError`` for a file that is not one of examples.
    """
    import numpy as np

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"not a file of examples: {exc}") from None
    if "format" not in arrays or int(arrays["format"]) != _FORMAT:
        raise ValueError("not a file of examples written by modelflags (no known format)")
    count = 0
    while f"input.{count}" in arrays:
        count += 1
    inputs = tuple(arrays[f"input.{i}"] for i in range(count))
    columns = tuple(str(name) for name in arrays.get("columns", ()))
    outputs = {
        name.removeprefix("output."): value
        for name, value in sorted(arrays.items())
        if name.startswith("output.")
    }
    if not inputs or (columns and len(columns) != len(inputs)):
        raise ValueError("the file of examples has no inputs, or not one per column")
    return Examples(Inputs(inputs, columns), outputs)


def store_examples(data: bytes, registry: Path) -> tuple[str, str, Path, bool]:
    """Write ``data`` as ``examples/<sha256>.npz`` beside the ``registry`` file, unless it is there.

    Returns the URI to record (relative to the registry's folder), the sha256, the path, and
    whether the file was written now. It is written atomically (a temporary file, then a rename),
    so it is whole or absent.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    uri = f"{EXAMPLES_FOLDER}/{sha256}.npz"
    path = registry.absolute().parent / EXAMPLES_FOLDER / f"{sha256}.npz"
    if path.is_file() and _digest(path) == sha256:
        return uri, sha256, path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return uri, sha256, path, True


def read_examples(ref: ExamplesRef) -> Examples:
    """The examples ``ref`` names, after checking their sha256 and row count.

    Raises ``ValueError`` for a missing or unreadable file, other bytes than recorded, or a file
    that is not one of examples.
    """
    path = Path(ref.location)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"examples file not found: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read examples file {path}: {exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.sha256:
        raise ValueError(
            f"examples file {path} has sha256 {actual}, the registry says {ref.sha256}; "
            "it was not used"
        )
    try:
        examples = decode_examples(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if examples.rows != ref.rows:
        raise ValueError(f"{path}: {examples.rows} rows, the registry says {ref.rows}")
    return examples


def _digest(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
