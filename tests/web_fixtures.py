"""What the status page tests share: a model with two real classifiers and a guardrail that asks a
person, traffic with a business outcome, and reading form tokens from a page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from modelflags import ModelFlags

from support import Workspace

TOKEN = "operator-token-0123456789abcdef"
"""The token of identity "operator" in these tests."""
MODEL = "churn"
OUTCOME = "correct"
GUARDRAILS: dict[str, Any] = {
    "max_outcome_drop": {"name": OUTCOME, "relative": 0.1},
    "min_requests": 30,
    "sustained_s": 0,
    "window_s": 60,
    "action": "confirm",
}
"""A breach of the outcome rule is proposed, never acted on alone."""


def write_registry(
    workspace: Workspace,
    trained: dict[str, LogisticRegression],
    *,
    guardrails: dict[str, Any] | None = GUARDRAILS,
    **metadata: Any,
) -> Path:
    """``churn``: v1 (the default, right about its label) and v2 (trained on another column, so
    right about half of the time), both real scikit-learn classifiers."""
    workspace.add(MODEL, "v1", trained["v1"], metadata={"git_commit": "4e1d0c2", **metadata})
    workspace.add(MODEL, "v2", trained["v2"], metadata={"git_commit": "9a7b3f1"})
    if guardrails is not None:
        workspace.set(MODEL, guardrails=guardrails)
    return workspace.write()


def serve(flags: ModelFlags, count: int, *, seed: int = 0, prefix: str = "user") -> list[str]:
    """``count`` requests of distinct users, each reporting whether the answer was right (the
    truth is the first feature above 0.5); the versions that answered."""
    rng = np.random.RandomState(seed)
    served = []
    for i in range(count):
        row = rng.rand(1, 3)
        model = flags.get_model(MODEL, f"{prefix}-{seed}-{i}")
        label = int(model.predict(row)[0])
        flags.record_outcome(model, OUTCOME, float(label == int(row[0, 0] > 0.5)))
        served.append(model.version)
    return served


def propose_rollback(flags: ModelFlags) -> None:
    """Traffic on v1 (pinned) and v2 (flagged) side by side, as in a canary (the guardrails
    compare the versions over the time both served), until the guardrail proposes rolling v2
    back."""
    for round_ in range(30):
        with flags.override(**{MODEL: "v1"}):
            serve(flags, 10, seed=100 + round_, prefix="lkg")
        serve(flags, 10, seed=200 + round_)
        flags.flush(5)  # v2's background load, started by the first round, is done
    breaches = flags.check_guardrails()
    assert [(b.version, b.rule) for b in breaches] == [("v2", "max_outcome_drop")]
    assert [p.version for p in flags.status()[MODEL].proposals] == ["v2"]


def csrf_of(html: str) -> str:
    """The form token on a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "no form token on the page"
    return found.group(1)
