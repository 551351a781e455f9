"""Stages at serving time: which versions this process may serve.

Each version has a stage in the registry (``candidate``, ``staging``, ``production``,
``archived``). A process chooses the stages it serves with ``ModelFlags(allowed_stages=...)`` or
the ``MODELFLAGS_ALLOWED_STAGES`` environment variable (comma separated, read once when the
instance is made); by default every stage but ``archived``. ``archived`` versions never serve,
whatever is allowed.

A flag (or pin, or override file) naming a version of another stage is answered by the last known
good version with reason ``POLICY``, and each (model, version, stage) is logged once. A model whose
``default_version`` may not serve here cannot be served at all: that is an error when the instance
is made, naming the model, the version and its stage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

from modelflags.errors import ModelUnavailableError
from modelflags.registry import STAGES, ModelSpec, Stage
from modelflags.registry.messages import suggest
from modelflags.serving.health import Health

__all__ = ["ALLOWED_STAGES_ENV", "StageGate", "allowed_stages"]

logger = logging.getLogger(__name__)

ALLOWED_STAGES_ENV = "MODELFLAGS_ALLOWED_STAGES"
"""The environment variable naming the stages a process serves (comma separated)."""

_NEVER: Stage = "archived"


def allowed_stages(
    given: Iterable[str] | str | None, environ: Mapping[str, str]
) -> frozenset[Stage]:
    """The stages this process serves: ``given``, else ``MODELFLAGS_ALLOWED_STAGES`` in
    ``environ``, else every stage but ``archived`` (which never serves, even when named).

    Raises ``ValueError`` naming an unknown stage (and the environment variable when it came from
    there), or when no stage that may serve is left.
    """
    source = "allowed_stages"
    if given is None:
        text = environ.get(ALLOWED_STAGES_ENV, "").strip()
        if not text:
            return frozenset(stage for stage in STAGES if stage != _NEVER)
        given, source = text, ALLOWED_STAGES_ENV
    names = given.split(",") if isinstance(given, str) else list(given)
    chosen: set[Stage] = set()
    for raw in names:
        name = raw.strip() if isinstance(raw, str) else raw
        stage = next((known for known in STAGES if known == name), None)
        if stage is None:
            guess = suggest(str(name), STAGES) if isinstance(name, str) else None
            hint = f" (did you mean {guess!r}?)" if guess else ""
            raise ValueError(
                f"{source}: unknown stage {name!r}{hint}; the stages are {', '.join(STAGES)}"
            )
        chosen.add(stage)
    if _NEVER in chosen:
        logger.warning("%s names %r: archived versions never serve", source, _NEVER)
        chosen.discard(_NEVER)
    if not chosen:
        raise ValueError(
            f"{source}: no stage that may serve is allowed; name some of "
            f"{', '.join(stage for stage in STAGES if stage != _NEVER)}"
        )
    return frozenset(chosen)


class StageGate:
    """Which versions of each model this process may serve, decided from the registry (again by
    :meth:`update` for a model whose versions were refreshed from MLflow).

    Safe to share between threads: the refused sets are frozen when it is made; the record of
    causes already logged takes a short lock the first time each is met.
    """

    def __init__(self, specs: Mapping[str, ModelSpec], allowed: frozenset[Stage]) -> None:
        self.allowed = allowed
        self._stages = {
            name: {version: spec.stage for version, spec in model.versions.items()}
            for name, model in specs.items()
        }
        self._refused = {
            name: frozenset(v for v, stage in stages.items() if stage not in allowed)
            for name, stages in self._stages.items()
        }
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str, str]] = set()
        for name, model in specs.items():
            default = model.default_version
            if default in self._refused[name]:
                raise ModelUnavailableError(
                    f"model {name!r} cannot be served here: its default_version {default!r} is "
                    f"in stage {self._stages[name][default]!r}, and this process serves "
                    f"{self.describe()} (allowed_stages or {ALLOWED_STAGES_ENV}); allow that "
                    "stage, or make a version of an allowed stage the default",
                    model=name,
                    version=default,
                )

    def settle(self, health: Health, specs: Mapping[str, ModelSpec]) -> None:
        """Start from ``default_version`` where the saved last known good version may not serve
        here (a state file written by a process that served other stages)."""
        for name, model in specs.items():
            lkg = health.lkg(name)
            if lkg in self._refused[name]:
                logger.warning(
                    "model %r: the saved last known good version %r is in stage %r, which this "
                    "process does not serve; starting from %r",
                    name,
                    lkg,
                    self._stages[name][lkg],
                    model.default_version,
                )
                health.set_lkg(name, model.default_version)

    def update(self, model: ModelSpec) -> None:
        """Judge the stages of ``model``'s versions again (its version set was refreshed from
        its source). Each table is replaced by one assignment; lock-free readers see the old
        one or the new one."""
        stages = {version: spec.stage for version, spec in model.versions.items()}
        refused = frozenset(v for v, stage in stages.items() if stage not in self.allowed)
        self._stages = {**self._stages, model.name: stages}
        self._refused = {**self._refused, model.name: refused}

    def describe(self) -> str:
        """The allowed stages, in their usual order."""
        return ", ".join(stage for stage in STAGES if stage in self.allowed)

    def refused(self, model: str) -> frozenset[str]:
        """The versions of ``model`` this process may not serve."""
        return self._refused[model]

    def refuses(self, model: str, version: str, *, role: str = "flagged") -> bool:
        """True when ``version`` may not serve here; the first time, one log line says why."""
        if version not in self._refused[model]:
            return False
        stage = self._stages[model][version]
        key = (model, version, role)
        if key not in self._logged:
            with self._lock:
                first = key not in self._logged
                self._logged.add(key)
            if first:
                logger.warning(
                    "model %r: %s version %r is in stage %r, which this process does not serve "
                    "(allowed: %s); %s",
                    model,
                    role,
                    version,
                    stage,
                    self.describe(),
                    "the last known good version answers"
                    if role == "flagged"
                    else "it is not mirrored",
                )
        return True

    def cause(self, model: str, version: str) -> str:
        """Why ``version`` may not serve, for the decision log."""
        return (
            f"version {version!r} is {self._stages[model][version]}; this process serves "
            f"{self.describe()}"
        )
