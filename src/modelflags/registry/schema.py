"""The registry's schema: models, their versions, artifact URIs, digests and lineage.

A registry never chooses a version (flags do). It is validated with pydantic and frozen.
Validation errors become :class:`RegistryError` with the file, the model and the field in the
message (an unknown field with the closest known one). Relative artifact paths resolve against
the folder of the registry file.

Model names, version ids and flag keys (``flag``, ``shadow_flag``) use letters, digits and
``. _ : @ + -``, starting with a letter or digit: no spaces, slashes or control characters, so
that they can be written into a log line, a file name or a URL path as they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from modelflags.registry.compat import CompatPolicy
from modelflags.registry.contracts import InputContract
from modelflags.registry.examples import ExamplesRef
from modelflags.registry.guardrails import GuardrailRules
from modelflags.registry.messages import registry_error
from modelflags.registry.mlflow import MlflowModel, MlflowVersionRef
from modelflags.registry.records import Environment, HistoryEntry, Lineage, Stage
from modelflags.registry.reference import DriftRules, ReferenceStats

__all__ = [
    "ID_RULES",
    "MLFLOW_VERSIONS",
    "REMOTE_SCHEMES",
    "ModelSpec",
    "Registry",
    "VersionSpec",
    "check_id",
    "registry_error",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]*")
ID_RULES = "use letters, digits and . _ : @ + - (starting with a letter or digit)"
"""The rule for model names, version ids and flag keys, as error messages state it."""
REMOTE_SCHEMES = frozenset({"http", "https", "s3"})
_SCHEMES = REMOTE_SCHEMES | {"file", ""}
_MLFLOW_SCHEME = "models"
MLFLOW_VERSIONS = "mlflow_versions"
"""The validation context key set when an MLflow model's versions are filled in from MLflow."""


class VersionSpec(BaseModel):
    """One registered version: where its artifact is, its digest, loader, stage and lineage.

    ``location`` is the URI made absolute: a local path for files, the URL for remote artifacts.
    ``stage``, ``history`` and ``lineage`` are described in :mod:`modelflags.registry.records`;
    ``examples`` (inputs and the outputs the version gave on them) in
    :mod:`modelflags.registry.examples`; ``input`` (what the version was trained on) in
    :mod:`modelflags.registry.contracts`; ``reference`` (statistics of its training sample) in
    :mod:`modelflags.registry.reference`; ``metadata`` is free-form. ``mlflow`` is set for the
    versions of a model whose versions come from MLflow (:mod:`modelflags.registry.mlflow`):
    their ``uri`` is ``models:/<name>/<version>``, ``location`` where MLflow keeps the files,
    and ``sha256`` the pinned folder digest.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str = Field(min_length=1)
    sha256: str | None = None
    loader: str | None = None
    size: int | None = Field(default=None, ge=0)
    headers_env: dict[str, str] = Field(default_factory=dict)
    stage: Stage = "candidate"
    history: tuple[HistoryEntry, ...] = ()
    lineage: Lineage | None = None
    examples: ExamplesRef | None = None
    input: InputContract | None = None
    reference: ReferenceStats | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    mlflow: MlflowVersionRef | None = None
    location: str = ""

    @field_validator("sha256")
    @classmethod
    def _check_digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        lowered = value.strip().lower()
        if not _SHA256.fullmatch(lowered):
            raise ValueError("must be 64 hexadecimal characters (a sha256 digest)")
        return lowered

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> VersionSpec:
        base = (info.context or {}).get("base_dir")
        parts = urlsplit(self.uri)
        scheme = parts.scheme.lower()
        if len(scheme) == 1:  # a Windows drive letter, not a scheme
            scheme = ""
        if (scheme == _MLFLOW_SCHEME) != (self.mlflow is not None):
            raise ValueError(
                f"URI {self.uri!r}: models:/ URIs name MLflow model versions, which come from "
                "MLflow itself: declare the model with an mlflow table instead of listing them"
            )
        if self.mlflow is not None:
            object.__setattr__(self, "location", self.mlflow.artifact_uri)
            return self
        if scheme not in _SCHEMES:
            raise ValueError(
                f"unsupported URI scheme {parts.scheme!r} in {self.uri!r} "
                "(use a path, file://, http://, https:// or s3://)"
            )
        if scheme in REMOTE_SCHEMES:
            if not parts.netloc:
                raise ValueError(f"URI {self.uri!r} has no host or bucket")
            if self.sha256 is None:
                raise ValueError(f"a remote URI ({scheme}://) needs a sha256 digest: {self.uri!r}")
            location = self.uri
        else:
            raw = unquote(parts.path) if scheme == "file" else self.uri
            if not raw:
                raise ValueError(f"URI {self.uri!r} has no path")
            path = Path(os.path.expanduser(raw))
            if not path.is_absolute() and base is not None:
                path = Path(base) / path
            location = str(path.absolute())
        object.__setattr__(self, "location", location)
        return self

    @property
    def is_remote(self) -> bool:
        """True when the artifact must be fetched over the network (MLflow versions: False,
        they have their own fetcher)."""
        if self.mlflow is not None:
            return False
        return urlsplit(self.location).scheme.lower() in REMOTE_SCHEMES

    @property
    def environment(self) -> Environment | None:
        """The Python and library versions recorded at registration, if any."""
        return self.lineage.environment if self.lineage is not None else None


class ModelSpec(BaseModel):
    """One model: its flag keys, default version, versions and policies.

    ``compat`` says what a difference between a version's recorded environment and the running
    one does (see :mod:`modelflags.registry.compat`); ``require_approval`` makes a promotion to
    ``production`` need an approver other than the person who registered the version.
    ``input`` declares the input the application sends (:mod:`modelflags.registry.contracts`);
    ``drift`` the drift the serving process watches for (:mod:`modelflags.registry.reference`).
    ``decisions``: ``"process"`` (each process acts on its guardrails' comparative rules) or
    ``"fleet"`` (one controller, ``modelflags rollout``, judges the fleet's pooled metrics and
    acts at the flag source; each process keeps its local safety: load and inference fallback,
    quarantine, absolute limits).
    ``mlflow``: the model's versions come from MLflow's Model Registry
    (:mod:`modelflags.registry.mlflow`); its ``versions`` are then empty in the file and filled
    in when MLflow is read, and ``default_version`` may name an alias (``"@champion"``) or be
    left out (the newest pinned version).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    flag: str | None = Field(default=None, min_length=1)
    shadow_flag: str | None = Field(default=None, min_length=1)
    shadow_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    mlflow: MlflowModel | None = None
    default_version: str = ""
    versions: dict[str, VersionSpec] = Field(default_factory=dict)
    guardrails: GuardrailRules | None = None
    compat: CompatPolicy = "default"
    require_approval: bool = False
    input: InputContract | None = None
    drift: DriftRules | None = None
    decisions: Literal["process", "fleet"] = "process"

    @field_validator("flag", "shadow_flag")
    @classmethod
    def _check_flag_key(cls, value: str | None) -> str | None:
        if value is not None:
            check_id(value, "flag key")
        return value

    @field_validator("versions", mode="before")
    @classmethod
    def _check_versions(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, Mapping):
            if not value and info.data.get("mlflow") is None:
                raise ValueError("a model needs at least one version")
            for version_id in value:
                check_id(version_id, "version id")
        return value

    @model_validator(mode="after")
    def _check_default(self, info: ValidationInfo) -> ModelSpec:
        if self.mlflow is not None:
            if not self.versions:
                return self  # its versions (and an alias as default) are read from MLflow later
            if not (info.context or {}).get(MLFLOW_VERSIONS):
                raise ValueError(
                    "the versions of a model with an mlflow table come from MLflow: remove its "
                    "versions table"
                )
        if not self.versions:
            raise ValueError("a model needs at least one version")
        if not self.default_version:
            raise ValueError(
                "default_version is required: the version served when no flag can be evaluated"
            )
        if self.default_version not in self.versions:
            known = ", ".join(sorted(self.versions))
            raise ValueError(
                f"default_version {self.default_version!r} is not among the versions ({known})"
            )
        if self.versions[self.default_version].stage == "archived":
            raise ValueError(
                f"default_version {self.default_version!r} is archived, and archived versions "
                "never serve: make another version the default first"
            )
        if self.drift is not None and not any(
            spec.reference is not None and spec.stage != "archived"
            for spec in self.versions.values()
        ):
            raise ValueError(
                "drift rules need reference statistics, and no version that may serve has any: "
                "register a version with reference=X_train (or --reference FILE)"
            )
        return self

    @property
    def flag_key(self) -> str:
        """The flag whose value chooses the version (default: the model name)."""
        return self.flag or self.name


class Registry(BaseModel):
    """All registered models. Build it with :func:`load_registry` or :meth:`from_mapping`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, ModelSpec]
    source: str | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _name_models(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        named: dict[str, Any] = {}
        for name, spec in value.items():
            check_id(name, "model name")
            if isinstance(spec, Mapping):
                spec = {**spec, "name": name}
            named[name] = spec
        return named

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        source: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> Registry:
        """Validate ``data`` (the parsed file) into a registry; ``source`` names it in errors."""
        payload = dict(data)
        payload.setdefault("models", {})
        if source is not None:
            payload["source"] = source
        base = os.fspath(base_dir) if base_dir is not None else None
        try:
            return cls.model_validate(payload, context={"base_dir": base})
        except ValidationError as exc:
            raise registry_error(exc, source, root=cls) from exc

    def model(self, name: str) -> ModelSpec:
        """The spec of model ``name`` (``KeyError`` when unknown)."""
        return self.models[name]


def check_id(value: str, what: str) -> None:
    """Raise ``ValueError`` unless ``value`` follows the rules of names, ids and flag keys."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"empty {what}")
    if not _ID.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: {ID_RULES}")
