"""The live version sets of models whose versions come from a source (MLflow's Model Registry).

The serving core keeps one spec and one request-path entry per model and reads each through one
reference, so a refreshed model is swapped in rather than edited: see :class:`Catalog`.
"""

from __future__ import annotations

from modelflags.registry import ModelSpec, Registry, VersionSpec
from modelflags.serving.health import Health
from modelflags.serving.policy import ModelEntry
from modelflags.serving.stages import StageGate

__all__ = ["Catalog"]


class Catalog:
    """The live version sets of the models whose versions come from a source (MLflow).

    :meth:`apply` swaps a refreshed model in: the parts read ``specs[name]`` and
    ``models[name]`` once per use, so each swap is one assignment and the request path stays as
    it is (no lock, one reference read). The last known good version and every proven one stay
    in the set even when the source no longer lists them (the source is asked to keep them; this
    is the safety net), and the specs the version keeper loads from keep every version ever
    known, so a request that chose a version just before it was dropped can still load it.
    Called only by the sources' refresh thread; the readers of :attr:`registry` get a complete
    registry, old or new.
    """

    def __init__(
        self,
        registry: Registry,
        specs: dict[str, ModelSpec],
        models: dict[str, ModelEntry],
        stages: StageGate,
        health: Health,
    ) -> None:
        self.registry = registry
        self._specs = specs
        self._models = models
        self._stages = stages
        self._health = health
        self._retired: dict[str, dict[str, VersionSpec]] = {}

    def apply(self, spec: ModelSpec) -> None:
        """Serve ``spec``'s versions from now on (see the class docstring)."""
        name = spec.name
        old = self._models[name].spec
        spec = self._keeping(old, spec)
        retired = self._retired.setdefault(name, {})
        retired.update((v, item) for v, item in old.versions.items() if v not in spec.versions)
        for version in spec.versions:
            retired.pop(version, None)
        # What may load is a superset of what may be chosen: a request that chose a version
        # from the entry it read before the swap still finds its spec.
        self._specs[name] = spec.model_copy(update={"versions": {**retired, **spec.versions}})
        self._stages.update(spec)
        entry = self._models[name]
        self._models[name] = ModelEntry.of(spec, ring=entry.ring)
        self.registry = self.registry.model_copy(
            update={"models": {**self.registry.models, name: spec}}
        )
        for version, item in spec.versions.items():
            before = old.versions.get(version)
            if item.sha256 is not None and before is not None and before.sha256 is None:
                self._health.release(name, version)  # refused while unpinned: try it now

    def _keeping(self, old: ModelSpec, spec: ModelSpec) -> ModelSpec:
        """``spec`` with the LKG and the proven versions it dropped put back."""
        name, health = spec.name, self._health
        known = {**self._retired.get(name, {}), **old.versions}
        wanted = {health.lkg(name), *(v for v in known if health.is_proven(name, v))}
        missing = {v: known[v] for v in wanted if v not in spec.versions and v in known}
        if not missing:
            return spec
        return spec.model_copy(update={"versions": {**spec.versions, **missing}})
