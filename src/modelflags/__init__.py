"""modelflags: serve machine-learning model versions chosen by OpenFeature flags.

``ModelFlags`` is the entry point. This module also keeps one process-wide instance for
applications that prefer module functions (:func:`configure`, :func:`get_model`). Global state lives
here and in :mod:`modelflags.pins` (version pins for tests), nowhere else.

Actuators and the canary driver live in :mod:`modelflags.actuators` and :mod:`modelflags.canary`
(they bring in HTTP and file-lock machinery that plain serving does not need).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from modelflags.client import FALLBACK, PREWARMING, ROLLED_BACK, ModelFlags
from modelflags.errors import (
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
from modelflags.registry import ModelSpec, Registry, VersionSpec, load_registry, promote, register
from modelflags.registry.guardrails import GuardrailRules
from modelflags.rollout.metrics import VersionMetrics
from modelflags.serving.handle import ServedModel
from modelflags.serving.health import Backoff
from modelflags.serving.resolution import OVERRIDE
from modelflags.serving.shadow import ShadowStats
from modelflags.telemetry.decision_log import DecisionLog
from modelflags.telemetry.events import (
    ActuatorFailed,
    BecameLKG,
    Breach,
    FellBack,
    GuardrailAlert,
    Loaded,
    LoadFailed,
    Prewarmed,
    Quarantined,
    RolledBack,
    ShadowResult,
)
from modelflags.telemetry.status import ModelStatus, QuarantineStatus

__all__ = [
    "FALLBACK",
    "OVERRIDE",
    "PREWARMING",
    "ROLLED_BACK",
    "ActuatorFailed",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactTooLargeError",
    "Backoff",
    "BecameLKG",
    "Breach",
    "DecisionLog",
    "DeserializationError",
    "DigestMismatchError",
    "FellBack",
    "FetchError",
    "GuardrailAlert",
    "GuardrailRules",
    "LoadFailed",
    "Loaded",
    "ModelFlags",
    "ModelFlagsError",
    "ModelSpec",
    "ModelStatus",
    "ModelUnavailableError",
    "Prewarmed",
    "QuarantineStatus",
    "Quarantined",
    "Registry",
    "RegistryError",
    "RolledBack",
    "ServedModel",
    "ShadowResult",
    "ShadowStats",
    "VersionLoadError",
    "VersionMetrics",
    "VersionSpec",
    "__version__",
    "configure",
    "get_model",
    "load_registry",
    "promote",
    "register",
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
