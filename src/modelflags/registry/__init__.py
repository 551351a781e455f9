"""The registry: which models exist, their versions, artifact URIs, digests and lineage.

A registry never chooses a version (flags do). :mod:`~modelflags.registry.schema` says what a
valid registry is (its guardrails tables in :mod:`~modelflags.registry.guardrails`, stages,
history and lineage in :mod:`~modelflags.registry.records`); :mod:`~modelflags.registry.files`
reads registry files; :mod:`~modelflags.registry.versions` registers and promotes versions
(through :mod:`~modelflags.registry.editing`, with lineage from
:mod:`~modelflags.registry.capture`); :mod:`~modelflags.registry.compat` decides whether a
version's recorded environment may load in the running one.
"""

from modelflags.registry.capture import running_environment
from modelflags.registry.compat import (
    CompatPolicy,
    CompatVerdict,
    check_compatibility,
    check_sklearn_warning,
)
from modelflags.registry.files import load_registry
from modelflags.registry.guardrails import (
    ErrorRateIncrease,
    GuardrailRules,
    LatencyIncrease,
    OutcomeDrop,
)
from modelflags.registry.records import STAGES, Environment, HistoryEntry, Lineage, Stage
from modelflags.registry.schema import REMOTE_SCHEMES, ModelSpec, Registry, VersionSpec
from modelflags.registry.versions import Promoted, Registered, promote, register

__all__ = [
    "REMOTE_SCHEMES",
    "STAGES",
    "CompatPolicy",
    "CompatVerdict",
    "Environment",
    "ErrorRateIncrease",
    "GuardrailRules",
    "HistoryEntry",
    "LatencyIncrease",
    "Lineage",
    "ModelSpec",
    "OutcomeDrop",
    "Promoted",
    "Registered",
    "Registry",
    "Stage",
    "VersionSpec",
    "check_compatibility",
    "check_sklearn_warning",
    "load_registry",
    "promote",
    "register",
    "running_environment",
]
