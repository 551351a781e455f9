"""The guardrails table of a model in the registry: rules a candidate version must keep.

::

    [models.recommender.guardrails]
    # comparative rules: the candidate against the last known good version (LKG)
    max_outcome_drop = { name = "click", relative = 0.05 }      # mean at most 5% below the LKG's
    max_error_rate_increase = { relative = 0.5, absolute = 0.001 }  # errors per call
    max_latency_increase = { relative = 0.2, quantile = 0.95 }   # p95 at most 20% above
    # absolute limits (SLOs) on the candidate alone
    max_error_rate = 0.02                                       # share of calls that raise
    max_p95_latency_ms = 100                                    # 95th percentile, milliseconds
    alpha = 0.05                    # the model's false-rollback budget, shared among its rules
    action = "rollback"             # or "alert", or "confirm" (a person decides)
    promote_after_s = 60            # a candidate that held this long becomes the LKG

Every rule is a sequential test on everything recorded since the comparison started: a breach
needs the whole confidence interval beyond the tolerance, and the chance of a false breach over a
whole canary is at most ``alpha`` (see :mod:`modelflags.rollout.judges`). ``min_requests`` and
``sustained_s`` are optional extra conditions on a breach (both off by default).

How the rules are judged is :mod:`modelflags.rollout`' job; this module only says what a valid
table is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelflags.registry.messages import registry_error

__all__ = [
    "RULES",
    "ErrorRateIncrease",
    "GuardrailRules",
    "LatencyIncrease",
    "OutcomeDrop",
    "Rule",
]

Rule = Literal[
    "max_error_rate",
    "max_p95_latency_ms",
    "max_outcome_drop",
    "max_error_rate_increase",
    "max_latency_increase",
]
RULES: tuple[Rule, ...] = (
    "max_error_rate",
    "max_p95_latency_ms",
    "max_outcome_drop",
    "max_error_rate_increase",
    "max_latency_increase",
)
"""The rule names, in the order they are evaluated and reported."""


class OutcomeDrop(BaseModel):
    """The candidate's mean of outcome ``name`` may not fall more than ``relative`` below the
    last known good version's (0.05: by more than 5%).

    ``kind`` says what the values are: ``"binary"`` (0/1: a click, a conversion) or
    ``"continuous"`` (revenue per request; not assumed normal). Without it the outcome is judged
    as binary while every value recorded for it is 0 or 1, and as continuous from the first
    other value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    relative: float = Field(ge=0.0, lt=1.0)
    kind: Literal["binary", "continuous"] | None = None


class ErrorRateIncrease(BaseModel):
    """The candidate's error rate may exceed the LKG's by at most ``relative`` (0.5: up to 50%
    higher) and/or ``absolute`` (0.001: up to 0.1 percentage point higher). With both, a breach
    needs the excess to pass both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    relative: float | None = Field(default=None, ge=0.0)
    absolute: float | None = Field(default=None, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _needs_a_tolerance(self) -> ErrorRateIncrease:
        if self.relative is None and self.absolute is None:
            raise ValueError("give relative, absolute, or both")
        return self


class LatencyIncrease(BaseModel):
    """The candidate's latency may be higher than the LKG's by at most ``relative`` (0.2: 20%),
    judged on the ``quantile`` of the whole distribution (0.95: p95; ``None`` for none) and, with
    ``mean = true``, on the mean as well (a breach of either is a breach of the rule)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    relative: float = Field(ge=0.0)
    quantile: float | None = Field(default=0.95, gt=0.0, lt=1.0)
    mean: bool = False

    @model_validator(mode="after")
    def _needs_a_statistic(self) -> LatencyIncrease:
        if self.quantile is None and not self.mean:
            raise ValueError("judge a quantile, the mean (mean = true), or both")
        return self


class GuardrailRules(BaseModel):
    """The guardrails of one model, as written in its registry entry (see the module docs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_error_rate: float | None = Field(default=None, ge=0.0, lt=1.0)
    max_p95_latency_ms: float | None = Field(default=None, gt=0.0)
    max_outcome_drop: OutcomeDrop | None = None
    max_error_rate_increase: ErrorRateIncrease | None = None
    max_latency_increase: LatencyIncrease | None = None
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    min_requests: int = Field(default=0, ge=0)
    sustained_s: float = Field(default=0.0, ge=0.0)
    promote_after_s: float = Field(default=60.0, ge=0.0)
    action: Literal["rollback", "alert", "confirm"] = "rollback"
    confirm_timeout_s: float | None = Field(default=None, gt=0.0)
    on_timeout: Literal["rollback", "keep"] = "keep"
    window_s: float = Field(default=60.0, gt=0.0)

    @model_validator(mode="after")
    def _needs_a_rule(self) -> GuardrailRules:
        if not self.rules():
            raise ValueError(f"guardrails need at least one rule: {', '.join(RULES)}")
        if self.confirm_timeout_s is not None and self.action != "confirm":
            raise ValueError('confirm_timeout_s needs action = "confirm"')
        return self

    def rules(self) -> tuple[Rule, ...]:
        """The rules this table sets, in :data:`RULES` order."""
        return tuple(rule for rule in RULES if getattr(self, rule) is not None)

    @classmethod
    def parse(
        cls, data: Mapping[str, Any], *, model: str, source: str | None = None
    ) -> GuardrailRules:
        """Validate the guardrails table of ``model``; ``source`` (the registry file) names it
        in errors.

        Raises :class:`~modelflags.errors.RegistryError` naming the file, the model and the field
        (``guardrails.<field>``), like every registry error.
        """
        try:
            holder = _Models.model_validate({"models": {model: {"guardrails": data}}})
        except ValidationError as exc:
            raise registry_error(exc, source, root=_Models) from exc
        return holder.models[model].guardrails


class _Guarded(BaseModel):
    guardrails: GuardrailRules


class _Models(BaseModel):
    """The shape of a registry around one guardrails table, so errors locate like the registry's."""

    models: dict[str, _Guarded]
