"""A tiny application that recommends with whatever model version its flags choose."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from modelflags import ModelFlags


def make_flags(registry: str | os.PathLike[str], **options: object) -> ModelFlags:
    """The application's ModelFlags (``MODELFLAGS_OVERRIDES`` is honoured by ModelFlags itself)."""
    return ModelFlags(Path(registry), **options)  # type: ignore[arg-type]


def recommend(
    flags: ModelFlags, user_id: str, rows: Sequence[Sequence[float]]
) -> dict[str, object]:
    """Score ``rows`` for ``user_id``; says which version answered."""
    model = flags.get_model("recommender", {"id": user_id})
    return {"version": model.version, "labels": model.predict(rows).tolist()}
