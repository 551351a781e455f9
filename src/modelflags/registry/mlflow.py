"""Models whose versions come from MLflow's Model Registry: what the registry file says of them.

::

    [models.recommender]
    mlflow = { name = "recommender", tracking_uri = "http://127.0.0.1:5000" }
    default_version = "@champion"      # an MLflow alias (resolved at start) or a version id

The ``mlflow`` table names the registered model (``name``) and the tracking server
(``tracking_uri``, default ``$MLFLOW_TRACKING_URI``; an ``http(s)`` URL). Such a model lists no
``versions``: they are MLflow's model versions (ids ``"1"``, ``"2"``, ...), read at start and
every ``refresh_s`` seconds. Without ``default_version`` the newest pinned version is the default.
Other keys: ``timeout_s`` (each request to the tracking server), ``trust_on_first_use`` (pin a
version's digest when it is first downloaded; off by default), ``skops_trusted_types`` (type
names the skops loader trusts beyond skops' own and those the version's ``MLmodel`` records),
``pin_file`` (the local pin file; default ``mlflow-pins.toml`` beside the registry file).

A version is served only when its folder digest (:mod:`modelflags.artifacts.folders`) is pinned:
in the MLflow model-version tag :data:`PIN_TAG`, or in the local pin file::

    # mlflow-pins.toml: folder digests of MLflow model versions, by registered model
    [recommender]
    7 = "9f2c..."

Each version the serving process knows is a :class:`~modelflags.registry.schema.VersionSpec`
with ``uri = "models:/<name>/<version>"``, ``loader = "mlflow"``, the pinned digest as
``sha256`` and a :class:`MlflowVersionRef` saying where its files are.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = [
    "PIN_FILE",
    "PIN_TAG",
    "TRACKING_URI_ENV",
    "MlflowModel",
    "MlflowVersionRef",
    "model_version_uri",
]

PIN_TAG = "modelflags.sha256"
"""The MLflow model-version tag that pins a version's folder digest."""

PIN_FILE = "mlflow-pins.toml"
"""The local pin file's default name, beside the registry file."""

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
"""Where the tracking server's URI is read when the ``mlflow`` table gives none."""


def model_version_uri(name: str, version: str) -> str:
    """MLflow's URI of a model version: ``models:/<name>/<version>``."""
    return f"models:/{name}/{version}"


def _check_tracking_uri(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"tracking_uri {value!r} is not an http(s) URL of an MLflow tracking server"
        )
    return value.rstrip("/")


class MlflowModel(BaseModel):
    """The ``mlflow`` table of a model whose versions come from MLflow (see the module).

    ``pin_path`` is ``pin_file`` made absolute against the registry file's folder (empty when
    neither is known: a registry given as a mapping without ``pin_file``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    tracking_uri: str | None = None
    refresh_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    trust_on_first_use: bool = False
    skops_trusted_types: tuple[str, ...] = ()
    pin_file: str | None = Field(default=None, min_length=1)
    pin_path: str = ""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value.isprintable() or value != value.strip():
            raise ValueError(f"invalid MLflow model name {value!r}")
        return value

    @field_validator("tracking_uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        return None if value is None else _check_tracking_uri(value)

    @model_validator(mode="after")
    def _resolve_pins(self, info: ValidationInfo) -> MlflowModel:
        base = (info.context or {}).get("base_dir")
        if self.pin_file is not None:
            path = os.path.expanduser(self.pin_file)
            if not os.path.isabs(path) and base is not None:
                path = os.path.join(base, path)
            object.__setattr__(self, "pin_path", os.path.abspath(path))
        elif base is not None:
            object.__setattr__(self, "pin_path", os.path.join(base, PIN_FILE))
        return self

    def resolved_tracking_uri(self, environ: Any = None) -> str | None:
        """``tracking_uri``, else ``$MLFLOW_TRACKING_URI`` (checked), else None."""
        if self.tracking_uri is not None:
            return self.tracking_uri
        env = os.environ if environ is None else environ
        value = env.get(TRACKING_URI_ENV)
        return _check_tracking_uri(value) if value else None


class MlflowVersionRef(BaseModel):
    """Where one MLflow model version's files are: ``artifact_uri`` (MLflow's download URI for
    it: a local folder, ``mlflow-artifacts:``, ``s3://``, ...) on the server at
    ``tracking_uri``; ``skops_trusted_types`` from the model's ``mlflow`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tracking_uri: str
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    artifact_uri: str = Field(min_length=1)
    skops_trusted_types: tuple[str, ...] = ()
