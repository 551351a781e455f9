"""The public surface: what ``import modelflags`` offers, and what it does not import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import modelflags

EXPECTED = {
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
    "FALLBACK",
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
    "OVERRIDE",
    "OpenTelemetryMetrics",
    "PrometheusMetrics",
    "OutcomeDrop",
    "PREWARMING",
    "PrewarmCompleted",
    "PrewarmOptions",
    "Prewarmed",
    "QuarantineStatus",
    "Quarantined",
    "ROLLED_BACK",
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
    "VersionLoadError",
    "VersionCheck",
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
}


def test_all_is_pinned() -> None:
    """__all__ lists exactly the public names, and each exists."""
    assert set(modelflags.__all__) == EXPECTED
    for name in modelflags.__all__:
        assert hasattr(modelflags, name), name


def test_every_error_derives_from_the_base() -> None:
    """One exception tree: every exported error is a ModelFlagsError."""
    for name in modelflags.__all__:
        value = getattr(modelflags, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, modelflags.ModelFlagsError), name


@pytest.mark.slow
def test_importing_the_package_stays_light() -> None:
    """A plain import brings in no HTTP client, ML library or optional extra."""
    code = (
        "import sys, modelflags; "
        "print(sorted(m for m in ('httpx', 'sklearn', 'numpy', 'joblib', 'grpc', 'fsspec', "
        "'skops', 'opentelemetry', 'filelock', 'yaml', 'starlette', 'jinja2', 'uvicorn', "
        "'modelflags.web') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_public_classes_and_functions_have_docstrings() -> None:
    """Every public name is documented."""
    for name in modelflags.__all__:
        value = getattr(modelflags, name)
        if callable(value):
            assert value.__doc__, name
