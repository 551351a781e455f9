"""The guardrails table of a model in the registry: rules a candidate version must keep.

::

    [models.recommender.guardrails]
    max_error_rate = 0.02                             # share of calls that raise, 0..1
    max_p95_latency_ms = 100                          # 95th percentile of call latency
    max_outcome_drop = { name = "click", relative = 0.05 }  # mean 5% below the LKG's
    min_requests = 200                                # no verdict on less traffic than this
    sustained_s = 60                                  # a breach must last this long to fire
    action = "rollback"                               # or "alert"
    window_s = 60                                     # the sliding window the rules look at

How the rules are judged is :mod:`modelflags.rollout.guardrails`' job; this module only says what
a valid table is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelflags.registry.messages import registry_error

__all__ = ["RULES", "GuardrailRules", "OutcomeDrop", "Rule"]

Rule = Literal["max_error_rate", "max_p95_latency_ms", "max_outcome_drop"]
RULES: tuple[Rule, ...] = ("max_error_rate", "max_p95_latency_ms", "max_outcome_drop")
"""The rule names, in the order they are evaluated and reported."""


class OutcomeDrop(BaseModel):
    """The candidate's mean of outcome ``name`` may not fall more than ``relative`` below the
    last known good version's (0.05: by more than 5%)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    relative: float = Field(ge=0.0, le=1.0)


class GuardrailRules(BaseModel):
    """The guardrails of one model, as written in its registry entry (see the module docs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    max_p95_latency_ms: float | None = Field(default=None, gt=0.0)
    max_outcome_drop: OutcomeDrop | None = None
    min_requests: int = Field(default=200, ge=1)
    sustained_s: float = Field(default=60.0, ge=0.0)
    action: Literal["rollback", "alert", "confirm"] = "rollback"
    confirm_timeout_s: float | None = Field(default=None, gt=0.0)
    on_timeout: Literal["rollback", "keep"] = "keep"
    window_s: float = Field(default=60.0, gt=0.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _needs_a_rule(self) -> GuardrailRules:
        if all(getattr(self, rule) is None for rule in RULES):
            raise ValueError(f"guardrails need at least one rule: {', '.join(RULES)}")
        if self.confirm_timeout_s is not None and self.action != "confirm":
            raise ValueError('confirm_timeout_s needs action = "confirm"')
        return self

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
