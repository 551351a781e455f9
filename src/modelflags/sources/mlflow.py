"""A model whose versions are the model versions of MLflow's Model Registry.

:class:`MlflowVersionSource` reads, for one model of the registry with an ``mlflow`` table
(:mod:`modelflags.registry.mlflow`), the registered model's versions (``READY`` ones), aliases
and version tags through :class:`~modelflags.sources.mlflow_api.MlflowApi`, and, once per
version (versions are immutable), where its files are, its run and its ``MLmodel``. Each read
becomes a complete :class:`~modelflags.registry.ModelSpec` whose versions are ordinary
:class:`~modelflags.registry.VersionSpec` entries (``uri = "models:/<name>/<version>"``, loader
``mlflow``, lineage and ``metadata["mlflow"]`` from :mod:`~modelflags.sources.mlflow_lineage`).

**Trust.** MLflow stores no digest of a version's files, so a version serves only with a pinned
folder digest (:mod:`modelflags.artifacts.folders`): from the local pin file, else the version's
tag ``modelflags.sha256``, else, with ``trust_on_first_use = true``, the digest of its first
download (:mod:`~modelflags.sources.mlflow_trust`). A version without any stays listed (so flags
naming it get a clear cause) but is refused before a byte is fetched.

**At start** (:meth:`MlflowVersionSource.start`) the default version is resolved: an id, an
alias (``"@champion"``) or, when none is given, the newest pinned version; it must be pinned.
When MLflow cannot be reached, the snapshot under ``state_dir``
(:mod:`~modelflags.sources.snapshots`) serves, the error shown in ``status()``; without one the
model cannot start (:class:`~modelflags.errors.ModelUnavailableError`).

**Later** (:meth:`MlflowVersionSource.refresh`, every ``refresh_s`` seconds on the poller's
thread) a new spec is returned only when something changed; a failure is recorded and the known
versions keep serving. A version deleted in MLflow leaves the set, except the versions the
caller must keep (the last known good one, the default), which stay marked
``metadata["mlflow"]["deleted"] = True``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from modelflags.artifacts.folder_cache import FolderFetcher
from modelflags.artifacts.mlflow import folder_source_for
from modelflags.artifacts.mlflow_flavors import MLMODEL, read_mlmodel
from modelflags.errors import ModelUnavailableError, VersionSourceError
from modelflags.registry.messages import registry_error
from modelflags.registry.mlflow import PIN_TAG, MlflowVersionRef, model_version_uri
from modelflags.registry.mlflow_pins import PinFile
from modelflags.registry.schema import MLFLOW_VERSIONS, ModelSpec, VersionSpec
from modelflags.sources.mlflow_api import MlflowApi
from modelflags.sources.mlflow_lineage import describe, mlmodel_summary, stage_of
from modelflags.sources.mlflow_trust import VersionTrust, order, resolve_default
from modelflags.sources.snapshots import Snapshot, read_snapshot, snapshot_path, write_snapshot
from modelflags.sources.status import SourceStatus

__all__ = ["MlflowVersionSource", "SourceStatus"]

logger = logging.getLogger(__name__)

_MLMODEL_LIMIT = 1 << 20
_ERROR_LIMIT = 500


@dataclass(frozen=True)
class _Details:
    """What never changes for a version: where its files are, its run, its MLmodel summary."""

    artifact_uri: str
    run: Mapping[str, Any] | None
    mlmodel: Mapping[str, Any] | None


class MlflowVersionSource:
    """The versions of one model, read from MLflow's Model Registry (see the module).

    ``spec`` is the model as the registry file gives it (its ``mlflow`` table, no versions);
    ``folders`` downloads versions trusted on first use; ``wall`` is the wall clock of
    ``status()``. :meth:`start` and :meth:`refresh` are called by one thread at a time (the
    assembly, then the poller); :meth:`status` is safe from any thread (a frozen record replaced
    by one assignment).
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        api: MlflowApi,
        pins: PinFile,
        folders: FolderFetcher,
        state_dir: str | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if spec.mlflow is None:
            raise ValueError(f"model {spec.name!r} has no mlflow table")
        self.name = spec.name
        self.config = spec.mlflow
        self.interval = spec.mlflow.refresh_s
        self._template = spec
        self._api = api
        self._snapshot_path = None if state_dir is None else snapshot_path(state_dir, spec.name)
        self._wall = wall
        self._details: dict[str, _Details] = {}
        self._trust = VersionTrust(
            spec.name, spec.mlflow.name, pins=pins, folders=folders, tracking_uri=api.tracking_uri
        )
        self._current: ModelSpec | None = None
        self._aliases: dict[str, str] = {}
        self._status = SourceStatus(api.tracking_uri, self.config.name, self.interval)

    # -- the two calls ------------------------------------------------------------------------

    def start(self) -> ModelSpec:
        """The model with its versions, from MLflow or, when it cannot be read, the snapshot.

        Raises :class:`~modelflags.errors.ModelUnavailableError` when neither can give a
        servable default version.
        """
        try:
            aliases, listed = self._read()
            versions = self._build(listed, aliases, keep=())
            default = resolve_default(
                self.name, self.config.name, self._template.default_version, aliases, versions
            )
            spec = self._model(versions, default)
        except VersionSourceError as exc:
            snapshot = self._load_snapshot()
            if snapshot is None:
                raise ModelUnavailableError(
                    f"model {self.name!r}: cannot read its versions from MLflow: {exc}"
                    + (
                        "; and no snapshot of them was saved (ModelFlags(state_dir=...) keeps "
                        "one, to start while MLflow is down)"
                    ),
                    model=self.name,
                ) from exc
            spec = self._from_snapshot(snapshot)
            self._failed(exc, from_snapshot=True)
            logger.error(
                "model %r: cannot read its versions from MLflow (%s); serving the %d versions "
                "saved in %s",
                self.name,
                exc,
                len(spec.versions),
                self._snapshot_path,
            )
        else:
            self._succeeded(spec, aliases)
            self._save(spec, aliases)
        self._current = spec
        return spec

    def refresh(self, keep: Collection[str] = ()) -> ModelSpec | None:
        """Read MLflow again; the new spec when anything changed, else None. Never raises: a
        failure is recorded in :meth:`status` and the known versions stay."""
        current = self._current
        if current is None:
            raise RuntimeError("start() first")
        try:
            aliases, listed = self._read()
            kept = {*keep, current.default_version}
            versions = self._build(listed, aliases, keep=kept)
            spec = self._model(versions, current.default_version)
        except Exception as exc:
            self._failed(exc, from_snapshot=self._status.from_snapshot)
            logger.warning(
                "model %r: refreshing its versions from MLflow failed: %s", self.name, exc
            )
            return None
        self._succeeded(spec, aliases)
        if spec == current:
            return None
        self._log_changes(current, spec)
        self._current = spec
        self._save(spec, aliases)
        return spec

    def read_versions(self) -> tuple[dict[str, VersionSpec], dict[str, str]]:
        """Every READY version as it would serve, and the aliases (for ``modelflags show``:
        nothing is downloaded, nothing trusted on first use, no default resolved)."""
        aliases, listed = self._read()
        return self._build(listed, aliases, keep=(), trusting=False), aliases

    def status(self) -> SourceStatus:
        """How reading the versions goes."""
        return self._status

    def close(self) -> None:
        """Close the connections to MLflow."""
        self._api.close()

    def reset_after_fork(self) -> None:
        """In a child process just forked: connections of its own."""
        self._api.reset_after_fork()

    # -- reading MLflow ---------------------------------------------------------------------

    def _read(self) -> tuple[dict[str, str], list[tuple[dict[str, Any], _Details]]]:
        name = self.config.name
        aliases = self._api.aliases(name)
        listed: list[tuple[dict[str, Any], _Details]] = []
        for raw in self._api.versions(name):
            if str(raw.get("status") or "READY") != "READY":
                continue
            version = str(raw.get("version", ""))
            details = self._details.get(version)
            if details is None:
                details = self._details[version] = self._fetch_details(version, raw)
            listed.append((raw, details))
        return aliases, listed

    def _fetch_details(self, version: str, raw: Mapping[str, Any]) -> _Details:
        location = self._api.download_uri(self.config.name, version)
        run: dict[str, Any] | None = None
        run_id = raw.get("run_id")
        if run_id:
            try:
                run = self._api.run(str(run_id))
            except VersionSourceError as exc:
                if exc.unreachable:
                    raise
                logger.info(
                    "model %r version %r: its run is not readable: %s", self.name, version, exc
                )
        return _Details(location, run, self._mlmodel(version, location))

    def _mlmodel(self, version: str, location: str) -> Mapping[str, Any] | None:
        """The version's MLmodel summary, for metadata and the compatibility check (None when
        it cannot be read: the version still lists; its loader reads the verified copy)."""
        try:
            with tempfile.TemporaryDirectory(prefix="modelflags-mlmodel-") as scratch:
                target = Path(scratch) / MLMODEL
                folder_source_for(location, self._api.tracking_uri).download(
                    location, MLMODEL, target
                )
                if target.stat().st_size > _MLMODEL_LIMIT:
                    raise ValueError(f"{MLMODEL} is larger than {_MLMODEL_LIMIT} bytes")
                return mlmodel_summary(read_mlmodel(target.read_bytes(), f"{location}/{MLMODEL}"))
        except Exception as exc:
            logger.info(
                "model %r version %r: cannot read its %s: %s", self.name, version, MLMODEL, exc
            )
            return None

    # -- building the spec ----------------------------------------------------------------------

    def _build(
        self,
        listed: list[tuple[dict[str, Any], _Details]],
        aliases: Mapping[str, str],
        *,
        keep: Collection[str],
        trusting: bool = True,
    ) -> dict[str, VersionSpec]:
        trust = self._trust
        local = trust.local()
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        versions: dict[str, VersionSpec] = {}
        for raw, details in listed:
            version = str(raw.get("version", ""))
            tags = {
                str(item.get("key")): str(item.get("value"))
                for item in raw.get("tags") or ()
                if isinstance(item, Mapping)
            }
            digest, how = trust.digest(version, local.get(version), tags.get(PIN_TAG))
            if digest is None and trusting and self.config.trust_on_first_use:
                digest = trust.first_use(version, details.artifact_uri)
                how = None if digest is None else "first use"
            lineage, metadata = describe(
                raw,
                aliases=by_version.get(version, []),
                run=details.run,
                mlmodel=details.mlmodel,
                pinned_by=how,
            )
            versions[version] = self._version(version, raw, details, digest, lineage, metadata)
        previous = self._current.versions if self._current is not None else {}
        for version in sorted(set(keep) - set(versions)):
            old = previous.get(version)
            if old is None:
                continue
            if trust.warn_once("deleted", version):
                logger.warning(
                    "model %r version %r: MLflow no longer lists it; it stays because it is the "
                    "last known good or the default version",
                    self.name,
                    version,
                )
            info = dict(old.metadata.get("mlflow") or {})
            info["deleted"] = True
            versions[version] = old.model_copy(
                update={"metadata": {**old.metadata, "mlflow": info}}
            )
        return dict(sorted(versions.items(), key=lambda item: order(item[0])))

    def _version(
        self,
        version: str,
        raw: Mapping[str, Any],
        details: _Details,
        digest: str | None,
        lineage: Any,
        metadata: dict[str, Any],
    ) -> VersionSpec:
        ref = MlflowVersionRef(
            tracking_uri=self._api.tracking_uri,
            name=self.config.name,
            version=version,
            artifact_uri=details.artifact_uri,
            skops_trusted_types=self.config.skops_trusted_types,
        )
        try:
            return VersionSpec.model_validate(
                {
                    "uri": model_version_uri(self.config.name, version),
                    "sha256": digest,
                    "loader": "mlflow",
                    "stage": stage_of(raw),
                    "lineage": lineage,
                    "metadata": metadata,
                    "mlflow": ref,
                },
                context={"base_dir": None},
            )
        except ValidationError as exc:
            raise registry_error(exc, f"MLflow model {self.config.name!r}") from exc

    def _model(self, versions: dict[str, VersionSpec], default: str) -> ModelSpec:
        template = self._template
        data = {key: getattr(template, key) for key in ModelSpec.model_fields}
        data.update(versions=versions, default_version=default)
        try:
            return ModelSpec.model_validate(data, context={MLFLOW_VERSIONS: True, "base_dir": None})
        except ValidationError as exc:
            raise registry_error(exc, f"model {self.name!r} from MLflow", root=ModelSpec) from exc

    def _unavailable(self, message: str) -> ModelUnavailableError:
        return ModelUnavailableError(f"model {self.name!r}: {message}", model=self.name)

    # -- the snapshot ---------------------------------------------------------------------------

    def _load_snapshot(self) -> Snapshot | None:
        if self._snapshot_path is None:
            return None
        return read_snapshot(
            self._snapshot_path, tracking_uri=self._api.tracking_uri, name=self.config.name
        )

    def _from_snapshot(self, snapshot: Snapshot) -> ModelSpec:
        local = self._trust.local()
        versions: dict[str, VersionSpec] = {}
        for version, spec in snapshot.versions.items():
            info = spec.metadata.get("mlflow") or {}
            tags = info.get("tags") if isinstance(info, Mapping) else None
            tag = tags.get(PIN_TAG) if isinstance(tags, Mapping) else None
            digest, how = self._trust.digest(version, local.get(version), tag)
            first_use = isinstance(info, Mapping) and info.get("pinned_by") == "first use"
            if digest is None and spec.sha256 is not None and first_use:
                digest, how = spec.sha256, "first use"  # an earlier process's, kept in memory
            metadata = {**spec.metadata, "mlflow": {**info, "pinned_by": how}}
            versions[version] = spec.model_copy(update={"sha256": digest, "metadata": metadata})
        self._aliases = dict(snapshot.aliases)
        wanted = self._template.default_version
        default = wanted if wanted and not wanted.startswith("@") else snapshot.default_version
        if default not in versions:
            raise self._unavailable(f"its snapshot has no default version {default!r}")
        if versions[default].sha256 is None:
            raise self._unavailable(
                f"its default version {default} (from the snapshot) is not pinned"
            )
        return self._model(versions, default)

    def _save(self, spec: ModelSpec, aliases: Mapping[str, str]) -> None:
        if self._snapshot_path is None:
            return
        write_snapshot(
            self._snapshot_path,
            tracking_uri=self._api.tracking_uri,
            name=self.config.name,
            snapshot=Snapshot(spec.default_version, dict(aliases), spec.versions, self._wall()),
        )

    # -- status ---------------------------------------------------------------------------------

    def _succeeded(self, spec: ModelSpec, aliases: Mapping[str, str]) -> None:
        self._aliases = dict(aliases)
        self._status = SourceStatus(
            self._api.tracking_uri,
            self.config.name,
            self.interval,
            refreshed_at=self._wall(),
            versions=tuple(spec.versions),
            unpinned=tuple(v for v, item in spec.versions.items() if item.sha256 is None),
            aliases=MappingProxyType(dict(aliases)),
        )

    def _failed(self, exc: Exception, *, from_snapshot: bool) -> None:
        previous = self._status
        current = self._current
        versions = tuple(current.versions) if current is not None else previous.versions
        message = f"{type(exc).__name__}: {exc}"
        self._status = SourceStatus(
            previous.tracking_uri,
            previous.name,
            previous.refresh_s,
            refreshed_at=previous.refreshed_at,
            last_error=message[:_ERROR_LIMIT],
            error_since=previous.error_since or self._wall(),
            from_snapshot=from_snapshot,
            versions=versions,
            unpinned=previous.unpinned,
            aliases=MappingProxyType(dict(self._aliases)),
        )

    def _log_changes(self, old: ModelSpec, new: ModelSpec) -> None:
        added = [v for v in new.versions if v not in old.versions]
        removed = [v for v in old.versions if v not in new.versions]
        pinned = [
            v
            for v, spec in new.versions.items()
            if spec.sha256 is not None and v in old.versions and old.versions[v].sha256 is None
        ]
        for what, versions in (("new", added), ("removed", removed), ("newly pinned", pinned)):
            if versions:
                logger.info(
                    "model %r: %s versions from MLflow: %s", self.name, what, ", ".join(versions)
                )
