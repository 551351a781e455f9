"""What the registry records about a version besides its artifact: stage, history and lineage.

::

    [models.recommender.versions.v3]
    uri = "artifacts/recommender-v3.joblib"
    sha256 = "9f2c..."
    size = 48213
    stage = "production"                 # candidate (default), staging, production, archived

    [models.recommender.versions.v3.lineage]
    registered_at = 2024-05-01T12:00:00Z
    registered_by = "ada"
    estimator = "sklearn.linear_model.LogisticRegression"
    git = { commit = "4e1d0c2...", dirty = false, branch = "main" }
    params = { C = 1.0, max_iter = 100 }
    metrics = { auc = 0.91 }
    [models.recommender.versions.v3.lineage.environment]
    python = "3.11.7"
    platform = "linux-x86_64"
    libraries = { scikit-learn = "1.5.2", numpy = "2.1.3", scipy = "1.14.1", joblib = "1.4.2" }
    [[models.recommender.versions.v3.lineage.data]]
    path = "data/train.csv"
    sha256 = "5e88..."
    size = 1048576

    [[models.recommender.versions.v3.history]]
    stage = "candidate"
    at = 2024-05-01T12:00:00Z
    by = "ada"
    reason = "registered"
    [[models.recommender.versions.v3.history]]
    stage = "production"
    previous = "candidate"
    at = 2024-05-02T09:30:00Z
    by = "grace"
    reason = "AUC +2% over v2 on the May holdout"

``modelflags register`` and ``modelflags promote`` write these tables; nothing here is needed to
serve a version, and a registry without them stays valid (``stage`` defaults to ``candidate``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "STAGES",
    "DataFile",
    "DvcEntry",
    "Environment",
    "GitState",
    "HistoryEntry",
    "Lineage",
    "Stage",
]

Stage = Literal["candidate", "staging", "production", "archived"]
STAGES: tuple[Stage, ...] = get_args(Stage)
"""The stages of a version, in the order a version usually passes through them."""


class HistoryEntry(BaseModel):
    """One change of a version's stage: to ``stage`` from ``previous`` (None: registered), when
    (``at``, UTC), by whom and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: Stage
    previous: Stage | None = None
    at: datetime
    by: str = Field(min_length=1)
    reason: str = ""


class GitState(BaseModel):
    """The git commit of the working tree a version was registered from, and whether tracked
    files had changes not committed (``dirty``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commit: str = Field(pattern=r"^[0-9a-f]{7,64}$")
    dirty: bool = False
    branch: str | None = None


class DataFile(BaseModel):
    """A data file a version was trained or evaluated on: its path as given, sha256 and size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class DvcEntry(BaseModel):
    """A dependency (``dep``) or output (``out``) of a stage in the ``dvc.lock`` that was present
    when the version was registered, with the digest DVC recorded for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str
    kind: Literal["dep", "out"]
    path: str
    md5: str | None = None
    size: int | None = Field(default=None, ge=0)


class Environment(BaseModel):
    """The interpreter and library versions a version was made with (or the running ones).

    ``libraries`` maps distribution names (``scikit-learn``, not ``sklearn``) to versions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    python: str | None = None
    platform: str | None = None
    libraries: dict[str, str] = Field(default_factory=dict)

    @field_validator("libraries", mode="after")
    @classmethod
    def _canonical_names(cls, value: dict[str, str]) -> dict[str, str]:
        return {canonical_name(name): version for name, version in value.items()}


class Lineage(BaseModel):
    """Where a version came from: code (git), data, parameters, metrics, environment, who and when.

    ``params`` are those given and, when the estimator was passed to
    :func:`~modelflags.registry.register`, its ``get_params()`` (values that are not plain
    numbers, strings or booleans are written as their ``repr``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    registered_at: datetime | None = None
    registered_by: str | None = None
    git: GitState | None = None
    environment: Environment | None = None
    estimator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    data: tuple[DataFile, ...] = ()
    dvc: tuple[DvcEntry, ...] = ()


def canonical_name(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``Scikit_Learn`` -> ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()
