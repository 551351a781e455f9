"""modelflags: serve machine-learning model versions chosen by OpenFeature flags.

``ModelFlags`` is the entry point. This module also keeps one process-wide instance for
applications that prefer module functions (:func:`configure`, :func:`get_model`); it is the only
module that owns global state.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from .client import FALLBACK, ModelFlags
from .errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    DeserializationError,
    DigestMismatchError,
    FetchError,
    ModelFlagsError,
    ModelUnavailableError,
    RegistryError,
    VersionLoadError,
)
from .events import BecameLKG, FellBack, Loaded, LoadFailed, Quarantined
from .health import Backoff
from .registry import ModelSpec, Registry, VersionSpec, load_registry
from .served import ServedModel
from .status import ModelStatus, QuarantineStatus

__all__ = [
    "FALLBACK",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactTooLargeError",
    "Backoff",
    "BecameLKG",
    "DeserializationError",
    "DigestMismatchError",
    "FellBack",
    "FetchError",
    "LoadFailed",
    "Loaded",
    "ModelFlags",
    "ModelFlagsError",
    "ModelSpec",
    "ModelStatus",
    "ModelUnavailableError",
    "QuarantineStatus",
    "Quarantined",
    "Registry",
    "RegistryError",
    "ServedModel",
    "VersionLoadError",
    "VersionSpec",
    "__version__",
    "configure",
    "get_model",
    "load_registry",
    "shutdown",
]

__version__ = "0.1.0"

_lock = threading.Lock()
_instance: ModelFlags | None = None


def configure(
    registry: str | os.PathLike[str] | Registry | Mapping[str, Any], **options: Any
) -> ModelFlags:
    """Create the process-wide :class:`ModelFlags` (closing any previous one) and return it.

    ``options`` are those of :class:`ModelFlags`.
    """
    global _instance
    flags = ModelFlags(registry, **options)
    with _lock:
        previous, _instance = _instance, flags
    if previous is not None:
        previous.close()
    return flags


def get_model(name: str, user: object = None) -> ServedModel:
    """:meth:`ModelFlags.get_model` on the instance made by :func:`configure`."""
    flags = _instance
    if flags is None:
        raise ModelFlagsError("modelflags is not configured: call modelflags.configure(registry)")
    return flags.get_model(name, user)


def shutdown() -> None:
    """Close the process-wide instance, if any."""
    global _instance
    with _lock:
        previous, _instance = _instance, None
    if previous is not None:
        previous.close()
