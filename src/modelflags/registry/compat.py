"""Is a version's recorded environment compatible with the running one? A pure decision.

A pickled scikit-learn model loaded by another scikit-learn may load and then answer wrongly, so
the library versions recorded at registration (``lineage.environment``) are compared with the
running ones before the artifact is deserialized. Each model chooses what a difference does with
``compat`` in the registry:

``"default"``
    a recorded library that is not installed: refuse; scikit-learn of another major or minor
    version: refuse; scikit-learn of another patch (or pre-release) version: warn; any other
    recorded library or Python minor version that differs: warn.
``"refuse"``
    refuse on any difference of a recorded library's version, or of Python's minor version.
``"warn"``
    warn on each difference, never refuse.
``"ignore"``
    never warn nor refuse.

:func:`check_compatibility` returns a :class:`CompatVerdict` whose message names each library
with both versions; :func:`check_sklearn_warning` turns scikit-learn's
``InconsistentVersionWarning`` (raised while unpickling) into the same decision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelflags.registry.records import Environment, canonical_name

__all__ = [
    "COMPAT_POLICIES",
    "CompatAction",
    "CompatPolicy",
    "CompatVerdict",
    "Difference",
    "check_compatibility",
    "check_sklearn_warning",
]

CompatPolicy = Literal["default", "refuse", "warn", "ignore"]
COMPAT_POLICIES: tuple[CompatPolicy, ...] = ("default", "refuse", "warn", "ignore")
CompatAction = Literal["ok", "warn", "refuse"]
Level = Literal["major", "minor", "patch", "missing"]

_RELEASE = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_SEVERITY: dict[CompatAction, int] = {"ok": 0, "warn": 1, "refuse": 2}
_STRICT_LIBRARIES = frozenset({"scikit-learn"})


@dataclass(frozen=True)
class Difference:
    """One library (or ``python``) whose running version is not the recorded one.

    ``running`` is None when the library is not installed. Immutable: safe to share.
    """

    library: str
    recorded: str
    running: str | None
    level: Level
    action: CompatAction

    def describe(self) -> str:
        """``scikit-learn 1.3.2 at registration, 1.5.1 here (another minor version)``."""
        if self.running is None:
            return f"{self.library} {self.recorded} at registration, not installed here"
        return (
            f"{self.library} {self.recorded} at registration, {self.running} here "
            f"(another {self.level} version)"
        )


@dataclass(frozen=True)
class CompatVerdict:
    """What to do with a version before deserializing it: ``ok``, ``warn`` or ``refuse``.

    ``message`` names every library that differs with both versions (and the policy that
    decided); ``differences`` lists them. Immutable: safe to share between threads.
    """

    action: CompatAction
    message: str
    differences: tuple[Difference, ...] = ()

    @property
    def refused(self) -> bool:
        """True when the version must not be loaded."""
        return self.action == "refuse"


def check_compatibility(
    recorded_env: Environment | Mapping[str, Any] | None,
    running_env: Environment | Mapping[str, Any],
    policy: CompatPolicy = "default",
) -> CompatVerdict:
    """Compare the environment recorded at registration with the running one under ``policy``.

    Only what was recorded is compared: a library installed here but not recorded does not
    matter. Nothing recorded (an entry written by hand) is ``ok``, and the message says so.
    Raises ``ValueError`` for an unknown policy.
    """
    if policy not in COMPAT_POLICIES:
        raise ValueError(f"unknown compat policy {policy!r} (use {', '.join(COMPAT_POLICIES)})")
    recorded = _environment(recorded_env) if recorded_env is not None else None
    running = _environment(running_env)
    if recorded is None or (not recorded.libraries and recorded.python is None):
        return CompatVerdict("ok", "no environment recorded at registration: not checked")
    differences: list[Difference] = []
    for library, version in sorted(recorded.libraries.items()):
        here = running.libraries.get(library)
        level = _level(version, here)
        if level is not None:
            differences.append(
                Difference(library, version, here, level, _action(policy, library, level))
            )
    if recorded.python and running.python:
        level = _level(recorded.python, running.python)
        if level in ("major", "minor"):
            differences.append(
                Difference("python", recorded.python, running.python, level, _python(policy))
            )
    action: CompatAction = max(
        (d.action for d in differences), key=_SEVERITY.__getitem__, default="ok"
    )
    if not differences:
        listed = ", ".join(f"{name} {version}" for name, version in recorded.libraries.items())
        return CompatVerdict("ok", f"same versions as at registration ({listed or 'python'})")
    described = "; ".join(d.describe() for d in differences)
    verdicts = {"ok": "ignored", "warn": "allowed with a warning", "refuse": "refused"}
    return CompatVerdict(
        action, f"{described}: {verdicts[action]} (compat = {policy!r})", tuple(differences)
    )


def check_sklearn_warning(
    warning: object, policy: CompatPolicy = "default"
) -> CompatVerdict | None:
    """The verdict for scikit-learn's ``InconsistentVersionWarning`` (None for other warnings).

    The warning carries ``original_sklearn_version`` and ``current_sklearn_version``; they are
    judged as a recorded and a running environment would be.
    """
    original = getattr(warning, "original_sklearn_version", None)
    current = getattr(warning, "current_sklearn_version", None)
    if not isinstance(original, str) or not isinstance(current, str):
        return None
    return check_compatibility(
        Environment(libraries={"scikit-learn": original}),
        Environment(libraries={"scikit-learn": current}),
        policy,
    )


def _environment(value: Environment | Mapping[str, Any]) -> Environment:
    if isinstance(value, Environment):
        return value
    return Environment.model_validate(dict(value))


def _level(recorded: str, running: str | None) -> Level | None:
    """How far apart two versions are (None: the same)."""
    if running is None:
        return "missing"
    if recorded == running:
        return None
    one, two = _release(recorded), _release(running)
    if one is None or two is None or one[0] != two[0]:
        return "major"
    if one[1] != two[1]:
        return "minor"
    return "patch"  # another patch, or the same release with other pre/post/local parts


def _release(version: str) -> tuple[int, int, int] | None:
    found = _RELEASE.match(version.strip().lstrip("v"))
    if found is None:
        return None
    major, minor, patch = (int(part) if part else 0 for part in found.groups())
    return major, minor, patch


def _action(policy: CompatPolicy, library: str, level: Level) -> CompatAction:
    if policy == "ignore":
        return "ok"
    if policy in ("refuse", "warn"):
        return policy
    if level == "missing":
        return "refuse"
    if canonical_name(library) in _STRICT_LIBRARIES and level in ("major", "minor"):
        return "refuse"
    return "warn"


def _python(policy: CompatPolicy) -> CompatAction:
    if policy == "ignore":
        return "ok"
    return "refuse" if policy == "refuse" else "warn"
