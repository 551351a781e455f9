"""The registry's schema: models, their versions, artifact URIs, digests and lineage.

A registry never chooses a version (flags do). It is validated with pydantic and frozen.
Validation errors become :class:`RegistryError` with the file, the model and the field in the
message. Relative artifact paths resolve against the folder of the registry file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
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

from modelflags.errors import RegistryError
from modelflags.registry.guardrails import GuardrailRules

__all__ = ["REMOTE_SCHEMES", "ModelSpec", "Registry", "VersionSpec", "registry_error"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*$")
REMOTE_SCHEMES = frozenset({"http", "https", "s3"})
_SCHEMES = REMOTE_SCHEMES | {"file", ""}


class VersionSpec(BaseModel):
    """One registered version: where its artifact is, its digest, loader and lineage metadata.

    ``location`` is the URI made absolute: a local path for files, the URL for remote artifacts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str = Field(min_length=1)
    sha256: str | None = None
    loader: str | None = None
    size: int | None = Field(default=None, ge=0)
    headers_env: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    location: str = ""

    @field_validator("sha256")
    @classmethod
    def _check_digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        lowered = value.strip().lower()
        if not _SHA256.match(lowered):
            raise ValueError("must be 64 hexadecimal characters (a sha256 digest)")
        return lowered

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> VersionSpec:
        base = (info.context or {}).get("base_dir")
        parts = urlsplit(self.uri)
        scheme = parts.scheme.lower()
        if len(scheme) == 1:  # a Windows drive letter, not a scheme
            scheme = ""
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
        """True when the artifact must be fetched over the network."""
        return urlsplit(self.location).scheme.lower() in REMOTE_SCHEMES


class ModelSpec(BaseModel):
    """One model: its flag keys, default version and versions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    flag: str | None = Field(default=None, min_length=1)
    shadow_flag: str | None = Field(default=None, min_length=1)
    shadow_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    default_version: str
    versions: dict[str, VersionSpec]
    guardrails: GuardrailRules | None = None

    @field_validator("versions", mode="before")
    @classmethod
    def _check_versions(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            if not value:
                raise ValueError("a model needs at least one version")
            for version_id in value:
                _check_id(version_id, "version id")
        return value

    @model_validator(mode="after")
    def _check_default(self) -> ModelSpec:
        if self.default_version not in self.versions:
            known = ", ".join(sorted(self.versions))
            raise ValueError(
                f"default_version {self.default_version!r} is not among the versions ({known})"
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
            _check_id(name, "model name")
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
            raise registry_error(exc, source) from exc

    def model(self, name: str) -> ModelSpec:
        """The spec of model ``name`` (``KeyError`` when unknown)."""
        return self.models[name]


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"empty {what}")
    if not _ID.match(value):
        raise ValueError(
            f"invalid {what} {value!r}: use letters, digits and . _ : @ + - "
            "(starting with a letter or digit)"
        )


def registry_error(exc: ValidationError, source: str | None) -> RegistryError:
    """A :class:`RegistryError` naming the file, model and field of each validation error."""
    lines = []
    first_model: str | None = None
    first_field: str | None = None
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        model = loc[1] if len(loc) > 1 and loc[0] == "models" else None
        field = ".".join(loc[2:]) if model is not None else ".".join(loc)
        if first_model is None and first_field is None:
            first_model, first_field = model, field or None
        message = str(error["msg"]).removeprefix("Value error, ")
        where = f"model {model!r}" if model else "registry"
        field_text = f", field {field!r}" if field else ""
        lines.append(f"{where}{field_text}: {message}")
    prefix = f"{source}: " if source else ""
    return RegistryError(
        prefix + "invalid registry: " + "; ".join(lines),
        file=source,
        model=first_model,
        field=first_field,
    )
