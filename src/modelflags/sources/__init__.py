"""Version sources: models whose versions come from outside the registry file.

A model of the registry with an ``mlflow`` table (:mod:`modelflags.registry.mlflow`) takes its
versions from MLflow's Model Registry (:mod:`~modelflags.sources.mlflow`, reading MLflow's REST
API with :mod:`~modelflags.sources.mlflow_api`); :mod:`~modelflags.sources.poller` reads them at
start and refreshes them off the request path; :mod:`~modelflags.sources.snapshots` keeps the last
list under ``state_dir`` so that a process can start while MLflow is down. This package sits beside
the serving core: it knows the registry and the artifacts, never how requests are served.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from modelflags.artifacts.folder_cache import FolderFetcher
from modelflags.errors import RegistryError
from modelflags.registry.mlflow import TRACKING_URI_ENV
from modelflags.registry.mlflow_pins import PinFile
from modelflags.registry.schema import Registry
from modelflags.sources.mlflow import MlflowVersionSource
from modelflags.sources.mlflow_api import MlflowApi
from modelflags.sources.poller import VersionSource, VersionSources
from modelflags.sources.status import SourceStatus

__all__ = [
    "MlflowVersionSource",
    "SourceStatus",
    "VersionSource",
    "VersionSources",
    "version_sources",
]


def version_sources(
    registry: Registry,
    *,
    folders: FolderFetcher,
    state_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> VersionSources | None:
    """The sources of ``registry``'s models with an ``mlflow`` table; None when it has none.

    Raises :class:`~modelflags.errors.RegistryError` for a model with neither ``tracking_uri``
    nor ``MLFLOW_TRACKING_URI``.
    """
    sources: dict[str, VersionSource] = {}
    for name, spec in registry.models.items():
        config = spec.mlflow
        if config is None:
            continue
        try:
            uri = config.resolved_tracking_uri(environ)
        except ValueError as exc:
            raise RegistryError(
                f"model {name!r}: {TRACKING_URI_ENV}: {exc}", file=registry.source, model=name
            ) from exc
        if uri is None:
            raise RegistryError(
                f"model {name!r}: its mlflow table has no tracking_uri and {TRACKING_URI_ENV} is "
                "not set",
                file=registry.source,
                model=name,
                field="mlflow.tracking_uri",
            )
        sources[name] = MlflowVersionSource(
            spec,
            api=MlflowApi(uri, timeout=config.timeout_s, environ=environ),
            pins=PinFile(config.pin_path or None),
            folders=folders,
            state_dir=None if state_dir is None else os.fspath(state_dir),
        )
    return VersionSources(sources) if sources else None
