"""modelflags: serve machine-learning model versions chosen by OpenFeature flags.

``ModelFlags`` is the entry point. This module also keeps one process-wide instance for
applications that prefer module functions (:func:`configure`, :func:`get_model`). Global state lives
here, in :mod:`modelflags.serving.pins` (version pins for tests), in :mod:`modelflags.options` (the
default of ``validate_input``, which the pytest plugin turns on) and in
:mod:`modelflags.serving.unpickling` (the hook that hands scikit-learn's version warnings to the
thread loading a version), nowhere else.

Names that bring in an HTTP client, a file lock or an optional extra (the actuators, the canary
driver, the remote fetcher, the OpenTelemetry and Prometheus bridges) are imported on first use,
so ``import modelflags`` stays light.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelflags.artifacts import ArtifactStore, LoaderRegistry
from modelflags.client import FALLBACK, PREWARMING, ROLLED_BACK, ModelFlags
from modelflags.errors import (
    ActuatorError,
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    DeserializationError,
    DigestMismatchError,
    FetchError,
    InputContractError,
    ModelFlagsError,
    ModelUnavailableError,
    RegistryError,
    VersionLoadError,
    VersionRefusedError,
)
from modelflags.golden import CheckReport, VersionCheck, check, register
from modelflags.options import (
    AuditOptions,
    CacheOptions,
    GovernanceOptions,
    PrewarmOptions,
    ResolutionCacheOptions,
    RolloutOptions,
    ShadowOptions,
)
from modelflags.registry import (
    GuardrailRules,
    ModelSpec,
    OutcomeDrop,
    Registry,
    VersionSpec,
    load_registry,
    promote,
)
from modelflags.rollout.actuators.base import Actuator
from modelflags.rollout.metrics import MetricsRecorder, VersionMetrics
from modelflags.serving.handle import ServedModel, ServingReason
from modelflags.serving.health import Backoff
from modelflags.serving.resolution import OVERRIDE
from modelflags.serving.shadow import ShadowStats
from modelflags.telemetry.decision_log import DecisionLog
from modelflags.telemetry.events import (
    ActuatorFailed,
    BecameLKG,
    Breach,
    DriftDetected,
    Event,
    FallbackServed,
    FellBack,
    GuardrailAlert,
    GuardrailAlerted,
    GuardrailBreached,
    LastKnownGoodChanged,
    Loaded,
    LoadFailed,
    PrewarmCompleted,
    Prewarmed,
    Quarantined,
    RolledBack,
    ShadowCompared,
    ShadowResult,
    VersionLoaded,
    VersionLoadFailed,
    VersionQuarantined,
    VersionRolledBack,
)
from modelflags.telemetry.status import (
    FlagSourceStatus,
    ModelStatus,
    QuarantineStatus,
    ResolutionCacheStatus,
)

if TYPE_CHECKING:
    from modelflags.artifacts.remote import RemoteFetcher, RetryPolicy
    from modelflags.rollout.actuators import FlagdFileActuator, UnleashActuator
    from modelflags.rollout.canary import CanaryDriver, CanaryResult, Stage
    from modelflags.telemetry.otel import OpenTelemetryMetrics
    from modelflags.telemetry.prometheus import PrometheusMetrics

__all__ = [
    "FALLBACK",
    "OVERRIDE",
    "PREWARMING",
    "ROLLED_BACK",
    "Actuator",
    "ActuatorError",
    "ActuatorFailed",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "ArtifactTooLargeError",
    "AuditOptions",
    "Backoff",
    "BecameLKG",
    "Breach",
    "CacheOptions",
    "CanaryDriver",
    "CanaryResult",
    "CheckReport",
    "DecisionLog",
    "DeserializationError",
    "DigestMismatchError",
    "DriftDetected",
    "Event",
    "FallbackServed",
    "FellBack",
    "FetchError",
    "FlagSourceStatus",
    "FlagdFileActuator",
    "GovernanceOptions",
    "GuardrailAlert",
    "GuardrailAlerted",
    "GuardrailBreached",
    "GuardrailRules",
    "InputContractError",
    "LastKnownGoodChanged",
    "LoadFailed",
    "Loaded",
    "LoaderRegistry",
    "MetricsRecorder",
    "ModelFlags",
    "ModelFlagsError",
    "ModelSpec",
    "ModelStatus",
    "ModelUnavailableError",
    "OpenTelemetryMetrics",
    "OutcomeDrop",
    "PrewarmCompleted",
    "PrewarmOptions",
    "Prewarmed",
    "PrometheusMetrics",
    "QuarantineStatus",
    "Quarantined",
    "Registry",
    "RegistryError",
    "RemoteFetcher",
    "ResolutionCacheOptions",
    "ResolutionCacheStatus",
    "RetryPolicy",
    "RolledBack",
    "RolloutOptions",
    "ServedModel",
    "ServingReason",
    "ShadowCompared",
    "ShadowOptions",
    "ShadowResult",
    "ShadowStats",
    "Stage",
    "UnleashActuator",
    "VersionCheck",
    "VersionLoadError",
    "VersionLoadFailed",
    "VersionLoaded",
    "VersionMetrics",
    "VersionQuarantined",
    "VersionRefusedError",
    "VersionRolledBack",
    "VersionSpec",
    "__version__",
    "check",
    "configure",
    "get_model",
    "load_registry",
    "promote",
    "register",
    "shutdown",
]

__version__ = "0.2.0"

_LAZY = {
    "RemoteFetcher": "modelflags.artifacts.remote",
    "RetryPolicy": "modelflags.artifacts.remote",
    "FlagdFileActuator": "modelflags.rollout.actuators",
    "UnleashActuator": "modelflags.rollout.actuators",
    "CanaryDriver": "modelflags.rollout.canary",
    "CanaryResult": "modelflags.rollout.canary",
    "Stage": "modelflags.rollout.canary",
    "OpenTelemetryMetrics": "modelflags.telemetry.otel",
    "PrometheusMetrics": "modelflags.telemetry.prometheus",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelflags' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
