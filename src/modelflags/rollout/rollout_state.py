"""What a rollout controller keeps on disk: its state, its audit trail, and decisions asked of it.

- **State file** (JSON, default ``rollout-<model>-<candidate>.json``): where the rollout stands
  (stage, phase, the pending proposal) and the fleet totals since it started. Rewritten after
  every check, atomically (a temporary file in the same folder, fsync, ``os.replace``), so a
  controller killed at any moment leaves the previous state or the new one, never a mix, and a
  restarted controller resumes from it.
- **Audit file** (JSON lines, default ``<state>.audit.jsonl``): one line per decision (start,
  resume, split, check, hold, advance, breach, proposal, confirm, dismiss, rollback, alert,
  completed), each with the time, the stage and the evidence it was taken on. Appended and
  flushed line by line; never rewritten.
- **Decision file** (``<state>.decision.json``): how a person answers a proposal. ``modelflags
  rollout --confirm`` / ``--dismiss`` (or :func:`request_decision`) write it atomically, after
  checking that the state file shows a proposal; the controller reads it at its next check,
  carries it out, records it in the audit file and deletes it. The controller alone writes the
  state file, so a decision can never be lost to a concurrent rewrite; a decision written while
  the controller is down waits for its restart.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelflags.errors import InvalidActionError
from modelflags.rollout.evidence import Evidence

__all__ = [
    "AuditLog",
    "Decision",
    "Phase",
    "RolloutState",
    "decision_path",
    "evidence_json",
    "evidence_line",
    "read_decision",
    "request_decision",
    "write_json_atomically",
]

Phase = Literal["starting", "running", "proposed", "rolled_back", "completed"]
TERMINAL: frozenset[str] = frozenset({"rolled_back", "completed"})


@dataclass
class RolloutState:
    """Where one rollout stands. Mutable, owned by one controller: not safe to share between
    threads.

    ``stage``: index into ``stages`` of the split written last (-1 before the first);
    ``stage_started_at``: when it was written (unix seconds); ``breaching``: rule -> since when
    it has breached; ``proposal``: the pending proposal (rules and their evidence, when, until
    when); ``dismissed``: rules whose breach a person dismissed (not proposed again for this
    candidate); ``totals``: :meth:`FleetTotals.to_json` output.
    """

    model: str
    flag_key: str
    candidate: str
    baseline: str
    stages: list[int]
    stage_seconds: float
    phase: Phase = "starting"
    stage: int = -1
    started_at: float = 0.0
    stage_started_at: float = 0.0
    last_read_at: float | None = None
    breaching: dict[str, float] = field(default_factory=dict)
    proposal: dict[str, Any] | None = None
    dismissed: list[str] = field(default_factory=list)
    totals: dict[str, Any] | None = None

    @property
    def percent(self) -> int:
        """The candidate's share now (0 before the first stage and after a rollback)."""
        if self.phase == "rolled_back" or self.stage < 0:
            return 0
        return self.stages[self.stage]

    def save(self, path: Path) -> None:
        """Write the state atomically."""
        write_json_atomically(path, {"format": 1, **asdict(self)})

    @classmethod
    def load(cls, path: Path) -> RolloutState | None:
        """The state at ``path``; ``None`` when there is no file. ``ValueError`` naming the file
        when it is not a rollout state."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.pop("format", None) != 1:
                raise ValueError("not a rollout state (format 1)")
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON: readers see the old file or the new one."""
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1, default=_jsonable)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):  # pragma: no cover - json handles floats itself
        return value
    return str(value)


def evidence_json(evidence: Evidence) -> dict[str, Any]:
    """``evidence`` as JSON (infinite bounds as ``null``, with the one-line summary)."""
    data = asdict(evidence)
    for key in ("estimate", "lower", "upper"):
        value = data[key]
        if value is not None and not math.isfinite(value):
            data[key] = None
    data["summary"] = evidence.summary()
    return data


def evidence_line(evidence: Evidence) -> str:
    """``rule estimate [lower, upper] limit L: verdict``, short enough for a progress line."""
    estimate = "n/a" if evidence.estimate is None else f"{evidence.estimate:+.3g}"
    verdict = "BREACH" if evidence.breached else ("holds" if evidence.decided else "no verdict")
    return (
        f"{evidence.rule} {estimate} [{evidence.lower:+.3g}, {evidence.upper:+.3g}] "
        f"limit {evidence.limit:+.3g}: {verdict}"
    )


class AuditLog:
    """Appends one JSON line per decision to a file (flushed at once). Not safe to share
    between threads."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, decision: str, state: RolloutState, reason: str, **detail: Any) -> None:
        """Record ``decision`` taken in ``state`` because of ``reason``."""
        entry = {
            "time": self._clock(),
            "decision": decision,
            "model": state.model,
            "flag": state.flag_key,
            "candidate": state.candidate,
            "baseline": state.baseline,
            "percent": state.percent,
            "stage": state.stage,
            "phase": state.phase,
            "reason": reason,
            **detail,
        }
        line = json.dumps(entry, default=_jsonable, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(line + "\n")
            stream.flush()


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's answer to a proposal: ``action`` ``"confirm"`` (roll back) or ``"dismiss"``
    (keep going), by whom and why, for ``candidate``. Immutable."""

    action: Literal["confirm", "dismiss"]
    candidate: str
    by: str
    reason: str
    at: float


def decision_path(state_path: Path) -> Path:
    """Where decisions for the rollout of ``state_path`` are written."""
    return state_path.with_name(state_path.name + ".decision.json")


def request_decision(
    state_path: Path,
    action: Literal["confirm", "dismiss"],
    *,
    by: str,
    reason: str = "",
    clock: Callable[[], float] = time.time,
) -> Decision:
    """Answer the pending proposal of the rollout whose state is at ``state_path``.

    Raises :class:`InvalidActionError` when no proposal is pending (no state file, or a
    rollout that is not waiting), ``ValueError`` for an unreadable state file.
    """
    state = RolloutState.load(state_path)
    if state is None or state.phase != "proposed" or state.proposal is None:
        where = "no state file" if state is None else f"the rollout is {state.phase}"
        raise InvalidActionError(
            f"{state_path}: no rollback proposal waits for a decision ({where}), so there is "
            f"nothing to {action}",
            model="" if state is None else state.model,
            version=None if state is None else state.candidate,
        )
    decision = Decision(action, state.candidate, by, reason, clock())
    write_json_atomically(decision_path(state_path), asdict(decision))
    return decision


def read_decision(state_path: Path) -> Decision | None:
    """The decision waiting for the rollout of ``state_path``, removing its file; ``None`` when
    there is none, or it cannot be read (then the file is removed too, and ``ValueError``
    names it)."""
    path = decision_path(state_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    try:
        data = json.loads(text)
        decision = Decision(**data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a decision: {exc}") from exc
    if decision.action not in ("confirm", "dismiss"):
        raise ValueError(f"{path}: unknown action {decision.action!r}")
    return decision
