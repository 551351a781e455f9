"""Golden examples wired to the artifact store and the loaders: recorded at registration, replayed
by a check of every version that may serve.

:func:`register` is :func:`modelflags.registry.register` that loads the artifact being registered
(sha256 checked, with the package's loaders) to run its ``examples``. :func:`check` loads every
version that may serve (every one not archived) as serving does: its recorded environment
judged by the model's ``compat`` policy, its artifact fetched and checked against its sha256,
deserialized by its loader. It then replays the version's examples and compares what the version
answers now with what it answered when they were recorded (:mod:`modelflags.registry.replay`).

A rollback is only as safe as the version rolled back to: run ``modelflags check`` in CI and in a
nightly job, so that a version that no longer loads or answers differently in today's
environment is found before it is needed.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, ParamSpec

from modelflags.artifacts import ArtifactStore, LoaderRegistry
from modelflags.errors import ModelFlagsError, RegistryError
from modelflags.registry import (
    ModelSpec,
    Registered,
    Registry,
    VersionSpec,
    check_compatibility,
    check_sklearn_warning,
    load_registry,
    running_environment,
)
from modelflags.registry import register as register_version
from modelflags.registry.examples import read_examples
from modelflags.registry.records import Stage
from modelflags.registry.replay import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    Comparison,
    compare,
    run_method,
)

__all__ = ["CheckReport", "VersionCheck", "check", "load_version", "register"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
Status = Literal["passed", "failed", "not checked"]


def load_version(
    model: str, version: str, spec: VersionSpec, *, store: ArtifactStore, loaders: LoaderRegistry
) -> Any:
    """The version's model object, through the artifact contract serving uses: the bytes fetched
    and checked against the registry's sha256, then deserialized by the version's loader.

    Raises a :class:`~modelflags.errors.VersionLoadError` (an ``ArtifactError`` subclass for
    bytes that cannot be had or trusted) or a :class:`~modelflags.errors.RegistryError` for an
    unknown loader name.
    """
    return store.load(model, version, spec, loaders).value


def _load_being_registered(model: str, version: str, spec: VersionSpec) -> Any:
    store = ArtifactStore()
    try:
        return load_version(model, version, spec, store=store, loaders=LoaderRegistry())
    finally:
        store.close()


def _loading_artifacts(register: Callable[P, Registered]) -> Callable[P, Registered]:
    @functools.wraps(register)
    def registering(*args: P.args, **kwargs: P.kwargs) -> Registered:
        if kwargs.get("load") is None:
            kwargs["load"] = _load_being_registered
        return register(*args, **kwargs)

    return registering


register = _loading_artifacts(register_version)


# -- the check ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionCheck:
    """What the check found for one version.

        ``status`` is ``passed`` (it loaded and answered its examples as recorded), ``failed`` (it
        did not load, or its examples could not be replayed, or an answer differs: ``reason`` says
        which) or ``not checked`` (it loaded but has no examples). ``load_seconds`` is the time to
        load it; ``seconds_per_row`` the time of each method on the examples divided by their rows
    (measured on a second run, after a first that warms caches and lazy imports);
        ``comparisons`` one per recorded method; ``warnings`` those raised while loading and
        replaying (and a compatibility warning). Immutable: safe to share between threads.
    """

    model: str
    version: str
    stage: Stage
    status: Status
    reason: str = ""
    loaded: bool = False
    load_seconds: float | None = None
    rows: int = 0
    seconds_per_row: dict[str, float] = field(default_factory=dict)
    comparisons: tuple[Comparison, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        """True when the version cannot be trusted to serve here."""
        return self.status == "failed"

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-able data."""
        return {
            "model": self.model,
            "version": self.version,
            "stage": self.stage,
            "status": self.status,
            "reason": self.reason,
            "loaded": self.loaded,
            "load_seconds": self.load_seconds,
            "rows": self.rows,
            "seconds_per_row": dict(self.seconds_per_row),
            "comparisons": [
                {
                    "method": c.method,
                    "equal": c.equal,
                    "exact": c.exact,
                    "mismatched_rows": c.mismatched,
                    "first_row": c.first_row,
                    "max_difference": c.max_difference,
                    "detail": c.detail,
                }
                for c in self.comparisons
            ],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class CheckReport:
    """The outcome of :func:`check`: one :class:`VersionCheck` per version that may serve.

    ``rtol`` and ``atol`` are the tolerances floats were compared with. Immutable: safe to share
    between threads.
    """

    registry: str
    versions: tuple[VersionCheck, ...]
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    @property
    def failed(self) -> tuple[VersionCheck, ...]:
        """The versions that failed."""
        return tuple(v for v in self.versions if v.status == "failed")

    @property
    def not_checked(self) -> tuple[VersionCheck, ...]:
        """The versions that loaded but have no examples to replay."""
        return tuple(v for v in self.versions if v.status == "not checked")

    def ok(self, *, strict: bool = False) -> bool:
        """True when no version failed (and, with ``strict``, every one had examples)."""
        return not self.failed and not (strict and self.not_checked)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        return {
            "registry": self.registry,
            "rtol": self.rtol,
            "atol": self.atol,
            "passed": sum(v.status == "passed" for v in self.versions),
            "failed": len(self.failed),
            "not_checked": len(self.not_checked),
            "versions": [v.to_dict() for v in self.versions],
        }


def check(
    registry: str | os.PathLike[str] | Registry,
    model: str | None = None,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    store: ArtifactStore | None = None,
    loaders: LoaderRegistry | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> CheckReport:
    """Load every version that may serve (not archived) of every model, or of ``model``, as
    serving does, and replay its examples (see the module's docstring).

    Labels are compared exactly, floats within ``rtol`` and ``atol`` (as :func:`numpy.isclose`).
    ``store`` fetches artifacts (default: a new :class:`ArtifactStore`, closed afterwards),
    ``loaders`` deserializes them, ``timer`` measures. Raises :class:`RegistryError` for an
    invalid registry or an unknown ``model``; every problem of a version is in the report.
    Warnings raised while loading and replaying are recorded, not shown: call it from one thread.
    """
    if rtol < 0 or atol < 0:
        raise ValueError("rtol and atol must be 0 or more")
    loaded = registry if isinstance(registry, Registry) else load_registry(registry)
    source = loaded.source or (os.fspath(registry) if not isinstance(registry, Registry) else "")
    names = _models(loaded, model, source)
    own_store = store is None
    artifacts = store if store is not None else ArtifactStore()
    known_loaders = loaders if loaders is not None else LoaderRegistry()
    results = []
    try:
        for name in names:
            spec = loaded.models[name]
            for version, version_spec in spec.versions.items():
                if version_spec.stage == "archived":
                    continue
                results.append(
                    _check_version(
                        spec, version, version_spec, artifacts, known_loaders, rtol, atol, timer
                    )
                )
    finally:
        if own_store:
            artifacts.close()
    return CheckReport(source, tuple(results), rtol, atol)


def _models(registry: Registry, model: str | None, source: str) -> list[str]:
    if model is None:
        return list(registry.models)
    if model not in registry.models:
        known = ", ".join(sorted(registry.models)) or "none"
        raise RegistryError(f"{source}: no model {model!r} (known: {known})", model=model)
    return [model]


def _check_version(
    model: ModelSpec,
    version: str,
    spec: VersionSpec,
    store: ArtifactStore,
    loaders: LoaderRegistry,
    rtol: float,
    atol: float,
    timer: Callable[[], float],
) -> VersionCheck:
    name = model.name
    base = VersionCheck(name, version, spec.stage, "failed")
    notes: list[str] = []
    recorded = spec.environment
    if recorded is not None:
        verdict = check_compatibility(
            recorded, running_environment(recorded.libraries), model.compat
        )
        if verdict.refused:
            return _with(base, reason=f"refused in this environment: {verdict.message}")
        if verdict.action == "warn":
            notes.append(verdict.message)
    started = timer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = load_version(name, version, spec, store=store, loaders=loaders)
        except Exception as exc:  # a check reports every failure, whatever raised it
            why = str(exc) if isinstance(exc, ModelFlagsError) else f"{type(exc).__name__}: {exc}"
            return _with(base, reason=f"cannot load: {why}", warnings=_texts(caught, notes))
    seconds = timer() - started
    refusal = _refusing_warning(caught, model)
    base = _with(base, loaded=True, load_seconds=seconds, warnings=_texts(caught, notes))
    if refusal is not None:
        return _with(base, reason=f"refused in this environment: {refusal}")
    if spec.examples is None:
        return _with(
            base, status="not checked", reason="no examples recorded (register with --examples)"
        )
    return _replay(base, value, spec, rtol, atol, timer)


def _replay(
    base: VersionCheck,
    value: Any,
    spec: VersionSpec,
    rtol: float,
    atol: float,
    timer: Callable[[], float],
) -> VersionCheck:
    assert spec.examples is not None
    try:
        examples = read_examples(spec.examples)
        given = examples.inputs.model_input()
    except ValueError as exc:
        return _with(base, reason=str(exc))
    rows = examples.rows
    base = _with(base, rows=rows)
    per_row: dict[str, float] = {}
    comparisons: list[Comparison] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for method, recorded in examples.outputs.items():
            if not callable(getattr(value, method, None)):
                return _with(base, reason=f"{method} was recorded; the model has no {method} now")
            try:
                now = run_method(value, method, given, rows)
                started = timer()  # timed on a second run: the first warms caches and imports
                run_method(value, method, given, rows)
                per_row[method] = (timer() - started) / rows
            except ValueError as exc:
                return _with(base, reason=str(exc), seconds_per_row=per_row)
            comparisons.append(compare(method, recorded, now, rtol=rtol, atol=atol))
    different = [c.detail for c in comparisons if not c.equal]
    return _with(
        base,
        status="failed" if different else "passed",
        reason="; ".join(different),
        seconds_per_row=per_row,
        comparisons=tuple(comparisons),
        warnings=base.warnings + _texts(caught, []),
    )


def _with(check: VersionCheck, **changes: Any) -> VersionCheck:
    return replace(check, **changes)


def _texts(caught: list[warnings.WarningMessage], notes: list[str]) -> tuple[str, ...]:
    texts = [*notes, *(f"{w.category.__name__}: {w.message}" for w in caught)]
    return tuple(dict.fromkeys(texts))


def _refusing_warning(caught: list[warnings.WarningMessage], model: ModelSpec) -> str | None:
    """The message of a scikit-learn version warning the model's compat policy refuses."""
    for item in caught:
        verdict = check_sklearn_warning(item.message, model.compat)
        if verdict is not None and verdict.refused:
            return verdict.message
    return None
