"""The registry: which models exist, their versions, artifact URIs, digests and lineage.

A registry never chooses a version (flags do). :mod:`~modelflags.registry.schema` says what a
valid registry is (its guardrails tables in :mod:`~modelflags.registry.guardrails`);
:mod:`~modelflags.registry.files` reads registry files.
"""

from modelflags.registry.files import load_registry
from modelflags.registry.guardrails import GuardrailRules, OutcomeDrop
from modelflags.registry.schema import REMOTE_SCHEMES, ModelSpec, Registry, VersionSpec

__all__ = [
    "REMOTE_SCHEMES",
    "GuardrailRules",
    "ModelSpec",
    "OutcomeDrop",
    "Registry",
    "VersionSpec",
    "load_registry",
]
