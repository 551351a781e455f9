"""Admission: what a version must pass to be loaded and served by this process.

Around each load (:meth:`~modelflags.serving.versions.VersionKeeper.entry`):

- **before** its bytes are fetched: its id must still name the sha256 first seen for it (recorded
  with the last known good version under ``state_dir``), and the library versions recorded at
  registration must be compatible with the running ones under the model's ``compat`` policy
  (:func:`~modelflags.registry.check_compatibility`);
- **while** it is deserialized: scikit-learn's ``InconsistentVersionWarning`` is judged by the same
  policy (:func:`~modelflags.registry.check_sklearn_warning`);
- **after**: what the loaded object expects (``feature_names_in_``, ``n_features_in_``, else the
  version's recorded ``input``) must fit the model's declared input, and its digest is recorded.

Each refusal is a :class:`~modelflags.errors.VersionRefusedError` naming both sides: a load
failure, so the last known good version serves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from modelflags.errors import VersionRefusedError
from modelflags.registry import (
    CompatVerdict,
    Environment,
    ModelSpec,
    VersionSpec,
    check_compatibility,
    check_sklearn_warning,
    running_environment,
)
from modelflags.registry.contracts import (
    InputContract,
    contract_of,
    input_mismatch,
    selects_by_name,
)
from modelflags.serving.health import Health
from modelflags.serving.unpickling import collect_version_warnings

__all__ = ["Admission"]

logger = logging.getLogger(__name__)


class Admission:
    """The checks before, while and after a version loads (see the module docs).

    ``environment`` returns the running versions of the libraries named (injectable for tests).
    Safe to share between threads: it keeps no state but the health's digest record.
    """

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        health: Health,
        *,
        environment: Callable[[Iterable[str]], Environment] = running_environment,
    ) -> None:
        self.specs = specs
        self.health = health
        self._environment = environment

    def before(self, name: str, version: str, spec: VersionSpec) -> None:
        """Refuse a re-pointed id or an incompatible environment before any byte is fetched."""
        self._check_digest(name, version, spec)
        recorded = spec.environment
        if recorded is None:
            return
        policy = self.specs[name].compat
        verdict = check_compatibility(recorded, self._environment(recorded.libraries), policy)
        self._judge(name, version, verdict, "its recorded environment")

    @contextlib.contextmanager
    def loading(self, name: str, version: str) -> Iterator[None]:
        """Around deserialization: scikit-learn's version warning judged by ``compat``."""
        policy = self.specs[name].compat
        if policy == "ignore":
            yield
            return
        with collect_version_warnings() as caught:
            yield
        for warning in caught:
            verdict = check_sklearn_warning(warning, policy)
            if verdict is not None:
                self._judge(name, version, verdict, "scikit-learn while unpickling")

    def after(self, name: str, version: str, spec: VersionSpec, value: Any) -> None:
        """Record the digest of a loaded version, then refuse it when its input does not fit."""
        if spec.sha256 is not None:
            self.health.record_digest(name, version, spec.sha256)
        declared = self.specs[name].input
        if declared is None:
            return
        expected = _expectation(contract_of(value), spec.input)
        if expected is None:
            return
        problem = input_mismatch(declared, expected, by_name=selects_by_name(value))
        if problem:
            raise VersionRefusedError(
                f"model {name!r} version {version!r} cannot take the model's declared input: "
                f"{problem}",
                model=name,
                version=version,
                check="input",
            )

    def _check_digest(self, name: str, version: str, spec: VersionSpec) -> None:
        first = self.health.first_digest(name, version)
        if first is None or first == spec.sha256:
            return
        where = self.health.state_path
        now = f"sha256 {spec.sha256}" if spec.sha256 else "no sha256"
        raise VersionRefusedError(
            f"model {name!r} version {version!r}: the registry now gives it {now}, but it was "
            f"first served with sha256 {first}"
            + (f" (recorded in {where})" if where is not None else "")
            + "; a version id always names the same bytes: register the new bytes under a new id",
            model=name,
            version=version,
            check="digest",
        )

    def _judge(self, name: str, version: str, verdict: CompatVerdict, source: str) -> None:
        if verdict.refused:
            raise VersionRefusedError(
                f"model {name!r} version {version!r} may not load here ({source}): "
                f"{verdict.message}",
                model=name,
                version=version,
                check="environment",
            )
        if verdict.action == "warn":
            logger.warning(
                "model %r version %r loads with a different environment (%s): %s",
                name,
                version,
                source,
                verdict.message,
            )


def _expectation(
    found: InputContract | None, recorded: InputContract | None
) -> InputContract | None:
    """What a loaded version expects: what the object says (its features), with the dtypes
    recorded at registration for them; the registry's record alone for objects that say nothing."""
    if found is None:
        return recorded
    if recorded is None or not recorded.dtypes or found.features is None:
        return found
    names = set(found.features)
    dtypes = {name: dtype for name, dtype in recorded.dtypes.items() if name in names}
    return InputContract(features=found.features, dtypes=dtypes)
