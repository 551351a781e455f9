"""Artifacts: a version's URI becomes verified bytes, and verified bytes become a model.

:mod:`~modelflags.artifacts.store` verifies local files and hands remote URIs to
:mod:`~modelflags.artifacts.remote` (HTTP(S) and S3 into a content-addressed cache);
:mod:`~modelflags.artifacts.loaders` deserializes (joblib, pickle, and skops through
:mod:`~modelflags.artifacts.skops`). Nothing here decides what serves.
"""

from modelflags.artifacts.loaders import Loader, LoaderRegistry
from modelflags.artifacts.store import ArtifactStore, Fetcher, file_sha256

__all__ = ["ArtifactStore", "Fetcher", "Loader", "LoaderRegistry", "file_sha256"]
