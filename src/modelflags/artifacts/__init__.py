"""Artifacts: a version's URI becomes verified bytes, and verified bytes become a model.

:mod:`~modelflags.artifacts.store` is the entry point (``ArtifactStore.load``: read, verify,
deserialize, in one call); :mod:`~modelflags.artifacts.reading` reads bytes once and checks them
into a :mod:`~modelflags.artifacts.verified` artifact;
:mod:`~modelflags.artifacts.remote` downloads HTTP(S) and S3 artifacts into the content-addressed
cache of :mod:`~modelflags.artifacts.cache_layout` (through :mod:`~modelflags.artifacts.http`,
:mod:`~modelflags.artifacts.s3`, :mod:`~modelflags.artifacts.transfer` and
:mod:`~modelflags.artifacts.retry`); :mod:`~modelflags.artifacts.loaders` deserializes (joblib,
pickle, and skops through :mod:`~modelflags.artifacts.skops`). Nothing here decides what serves.
"""

from modelflags.artifacts.errors import SizeMismatchError, UnsafeCacheError
from modelflags.artifacts.loaders import Loader, LoaderRegistry, VerifiedLoader, verified_loader
from modelflags.artifacts.store import ArtifactStore, Fetcher, VerifyingFetcher, file_sha256
from modelflags.artifacts.verified import LoadedArtifact, VerifiedArtifact

__all__ = [
    "ArtifactStore",
    "Fetcher",
    "LoadedArtifact",
    "Loader",
    "LoaderRegistry",
    "SizeMismatchError",
    "UnsafeCacheError",
    "VerifiedArtifact",
    "VerifiedLoader",
    "VerifyingFetcher",
    "file_sha256",
    "verified_loader",
]
