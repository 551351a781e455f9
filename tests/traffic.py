"""Simulated traffic through a real ``ModelFlags`` on a fake clock (importable as ``traffic``).

Each simulated second, users ask for model ``m``, run ``predict`` on the handle they got and
report a click with the probability of the version that answered; then the guardrails are
checked, as the background thread would, and the clock moves on. Versions are ``Chance`` models
that raise with a given probability (an outage, a bad dependency), drawn from a seeded
generator, so every run is the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags import ModelFlags
from modelflags.telemetry.events import Breach

from models import Constant
from support import FakeClock, Workspace

ROW = np.zeros((1, 2))


class Failures:
    """How often each version's calls raise, changeable while traffic runs (an outage)."""

    def __init__(self, seed: int = 0, **rates: float) -> None:
        self.rates: dict[str, float] = dict(rates)
        self.rng = np.random.default_rng(seed)

    def fails(self, version: str) -> bool:
        rate = self.rates.get(version, 0.0)
        return rate > 0.0 and bool(self.rng.random() < rate)


class Chance(Constant):
    """Answers like ``Constant``, and raises as often as ``failures`` says for its version."""

    def __init__(self, label: int, version: str, failures: Failures) -> None:
        super().__init__(label)
        self.version = version
        self.failures = failures

    def predict(self, X: Any) -> np.ndarray:
        if self.failures.fails(self.version):
            raise RuntimeError(f"{self.version}: feature store timeout")
        return super().predict(X)


def chance_registry(workspace: Workspace, guardrails: Mapping[str, Any] | None) -> Path:
    """Model ``m`` with versions v1 (the default) and v2, both loaded by the ``chance`` loader."""
    for version in ("v1", "v2"):
        workspace.add("m", version, raw=version.encode(), suffix=".bin", loader="chance")
    if guardrails is not None:
        workspace.set("m", guardrails=dict(guardrails))
    return workspace.write()


def chance_loaders(failures: Failures) -> dict[str, Any]:
    """The ``chance`` loader: the artifact's bytes name the version (``v2`` predicts 2)."""

    def load(path: Path) -> Chance:
        version = Path(path).read_bytes().decode()
        return Chance(int(version[1:]), version, failures)

    return {"chance": load}


class Split:
    """A flag ``m`` that sends users whose integer key modulo 100 is below ``share`` to v2 and
    the others to v1, through the real in-memory provider; ``share`` may change."""

    def __init__(self, share: int) -> None:
        self.share = share

    def provider(self) -> InMemoryProvider:
        def evaluate(flag: InMemoryFlag[str], context: EvaluationContext | None) -> Any:
            key = int((context.targeting_key if context else None) or 0)
            version = "v2" if key % 100 < self.share else "v1"
            return FlagResolutionDetails(value=version, variant=version)

        return InMemoryProvider({"m": InMemoryFlag("v1", {"v1": "v1"}, context_evaluator=evaluate)})


class Simulation:
    """Drives ``flags`` second by second: ``rate`` requests a second from random users, each
    clicking with the probability ``clicks`` gives the version that answered. ``served`` counts
    the requests each version answered, ``raised`` the calls whose error reached the caller."""

    def __init__(
        self,
        flags: ModelFlags,
        clock: FakeClock,
        *,
        rate: int,
        clicks: Mapping[str, float],
        seed: int = 0,
    ) -> None:
        self.flags = flags
        self.clock = clock
        self.rate = rate
        self.clicks = dict(clicks)
        self.rng = np.random.default_rng(seed)
        self.served: dict[str, int] = {}
        self.raised = 0

    def second(self) -> list[Breach]:
        """One second of traffic, then a guardrail check."""
        users = self.rng.integers(0, 10**6, size=self.rate).tolist()
        draws = self.rng.random(self.rate).tolist()
        for user, draw in zip(users, draws, strict=True):
            handle = self.flags.get_model("m", user)
            try:
                handle.predict(ROW)
            except RuntimeError:  # the LKG failed too: the caller sees it
                self.raised += 1
            self.served[handle.version] = self.served.get(handle.version, 0) + 1
            if self.clicks:
                clicked = draw < self.clicks.get(handle.version, 0.0)
                self.flags.record_outcome(handle, "click", 1.0 if clicked else 0.0)
        # A second is long enough for any background load a request started (the LKG answers
        # meanwhile) to finish: wait for it, so the run does not depend on thread scheduling.
        self.flags.flush()
        breaches = self.flags.check_guardrails()
        self.clock.advance(1.0)
        return breaches

    def run(self, seconds: int, *, until_breach: bool = False) -> list[Breach]:
        """``seconds`` of traffic (stopping at the first breach with ``until_breach``)."""
        fired: list[Breach] = []
        for _ in range(seconds):
            fired += self.second()
            if until_breach and fired:
                break
        return fired
