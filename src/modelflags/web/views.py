"""What the pages and the JSON API show, made from a :class:`~modelflags.web.sampler.Snapshot`
and the registry: plain dicts and lists of strings, numbers and ``None``, the same for both.

Nothing here reads live state; every figure comes from the snapshot it is given.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from modelflags.registry import ModelSpec, Registry
from modelflags.rollout.metrics import VersionMetrics
from modelflags.telemetry.status import ModelStatus, RuleState
from modelflags.web.sampler import Point, Snapshot, answered_by

__all__ = ["jsonable", "model_detail", "overview", "stamp", "worst_verdict"]

VERDICT_ORDER = ("fired", "breaching", "waiting", "holding")
"""Guardrail verdicts, the most urgent first."""
SERIES_POINTS = 300
"""Entries per version in a model's series at most (a longer history is thinned evenly)."""
_DEPTH = 6  # how deep user metadata is shown


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON types: dataclasses and mappings become objects (string keys), sequences
    lists, non-finite floats ``None``, pydantic models their JSON dump, anything else a string."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > _DEPTH:
        return "..."
    if isinstance(value, Enum):
        return jsonable(value.value, depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name: jsonable(getattr(value, f.name), depth + 1) for f in fields}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item, depth + 1) for item in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return jsonable(dump(mode="json"), depth + 1)
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    return str(value)


def stamp(seconds: float | None) -> str | None:
    """Wall-clock seconds as an ISO 8601 UTC time (to the second)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    moment = _dt.datetime.fromtimestamp(seconds, _dt.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def worst_verdict(rules: Iterable[RuleState]) -> str | None:
    """The most urgent verdict among ``rules``; ``None`` without rules."""
    seen = {rule.verdict for rule in rules}
    return next((verdict for verdict in VERDICT_ORDER if verdict in seen), None)


def overview(
    snapshot: Snapshot, registry: Registry, actions: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Every model at a glance, the flag source's health, and the actions taken on this page."""
    statuses = snapshot.status
    first = next(iter(statuses.values()), None)
    return {
        "sampled_at": stamp(snapshot.at),
        "error": snapshot.error,
        "flag_source": None if first is None else jsonable(first.flag_source),
        "extension_errors": {} if first is None else jsonable(first.extension_errors),
        "decision_log": snapshot.decisions is not None,
        "models": {
            name: _summary(status, registry.models[name], snapshot.metrics.get(name, {}))
            for name, status in sorted(statuses.items())
            if name in registry.models
        },
        "actions": list(actions),
    }


def model_detail(
    snapshot: Snapshot,
    registry: Registry,
    name: str,
    history: Sequence[tuple[float, Mapping[str, Point]]],
    actions: Sequence[Mapping[str, Any]],
    decisions: int = 20,
) -> dict[str, Any]:
    """One model in full: the summary, per-version series, guardrail evidence, shadow, drift,
    lineage, the decision log's last ``decisions`` serving decisions and actions of the model
    (from the snapshot's bounded read of the log), and the actions taken on it here."""
    spec = registry.models[name]
    status = snapshot.status.get(name)
    metrics = snapshot.metrics.get(name, {})
    summary = _summary(status, spec, metrics) if status is not None else {"name": name}
    mine = [e for e in snapshot.decisions or () if e.get("model") == name]
    return {
        **summary,
        "sampled_at": stamp(snapshot.at),
        "error": snapshot.error,
        "outcomes": {
            version: {key: jsonable(stats) for key, stats in sorted(m.outcomes.items())}
            for version, m in sorted(metrics.items())
        },
        "series": _series(history),
        "shadow": [jsonable(stats) for stats in snapshot.shadow.get(name, {}).values()],
        "drift": None if status is None else jsonable(status.extra.get("drift")),
        "lineage": {version: _lineage(item) for version, item in spec.versions.items()},
        "decision_log": snapshot.decisions is not None,
        "decisions": [dict(e) for e in mine if "action" not in e][-decisions:],
        "logged_actions": [dict(e) for e in snapshot.logged_actions if e.get("model") == name][
            -decisions:
        ],
        "actions": [action for action in actions if action.get("model") == name],
    }


def _summary(
    status: ModelStatus, spec: ModelSpec, metrics: Mapping[str, VersionMetrics]
) -> dict[str, Any]:
    answered = answered_by(metrics, status.lkg)
    asked_total = sum(m.requests for m in metrics.values())
    answered_total = sum(answered.values())
    quarantined = {q.version: q for q in status.quarantined}
    proposed = {p.version for p in status.proposals}
    versions = []
    for version, item in spec.versions.items():
        m = metrics.get(version)
        rules = [rule for rule in status.guardrails if rule.version == version]
        versions.append(
            {
                "version": version,
                "stage": _stage(item),
                "lkg": version == status.lkg,
                "default": version == status.default_version,
                "loaded": version in status.loaded,
                "bytes": status.loaded.get(version),
                "rolled_back": version in status.rolled_back,
                "quarantined": jsonable(quarantined.get(version)),
                "proposed": version in proposed,
                "requests": 0 if m is None else m.requests,
                "answered": answered.get(version, 0),
                "asked_share": _share(0 if m is None else m.requests, asked_total),
                "answered_share": _share(answered.get(version, 0), answered_total),
                "error_rate": None if m is None else m.error_rate,
                "p50_ms": _ms(None if m is None else m.latency_p50),
                "p95_ms": _ms(None if m is None else m.latency_p95),
                "verdict": worst_verdict(rules),
            }
        )
    window = next((m.window_s for m in metrics.values()), None)
    return {
        "name": status.name,
        "flag": status.flag,
        "lkg": status.lkg,
        "default_version": status.default_version,
        "metrics": bool(metrics),
        "window_s": window,
        "requests": asked_total,
        "split": [
            {"version": version, "answered": count, "share": _share(count, answered_total)}
            for version, count in sorted(answered.items())
        ],
        "versions": versions,
        "rolled_back": list(status.rolled_back),
        "quarantined": [jsonable(q) for q in status.quarantined],
        "proposals": [jsonable(p) for p in status.proposals],
        "guardrails": {
            "verdict": worst_verdict(status.guardrails),
            "rules": [jsonable(rule) for rule in status.guardrails],
        },
        "flag_errors": status.flag_errors,
        "last_flag_error": status.last_flag_error,
    }


def _series(history: Sequence[tuple[float, Mapping[str, Point]]]) -> dict[str, list[Any]]:
    """Per version, one entry per snapshot: ``[time, requests, answered, error rate, p50 ms,
    p95 ms, {outcome: mean}]`` (``None`` where the version had no figure then)."""
    if len(history) > SERIES_POINTS:
        step = len(history) / SERIES_POINTS
        history = [history[int(i * step)] for i in range(SERIES_POINTS - 1)] + [history[-1]]
    versions = sorted({version for _, points in history for version in points})
    series: dict[str, list[Any]] = {version: [] for version in versions}
    for at, points in history:
        for version in versions:
            point = points.get(version)
            if point is None:
                series[version].append([at, None, None, None, None, None, {}])
            else:
                series[version].append(
                    [
                        at,
                        point.requests,
                        point.answered,
                        point.error_rate,
                        _ms(point.p50),
                        _ms(point.p95),
                        dict(point.outcomes),
                    ]
                )
    return series


def _lineage(item: Any) -> dict[str, Any]:
    """What the registry says of where a version comes from: lineage, stage history, metadata."""
    found: dict[str, Any] = {}
    for key in ("lineage", "history", "metadata"):
        value = getattr(item, key, None)
        if value:
            found[key] = jsonable(value)
    uri = getattr(item, "uri", None)
    if isinstance(uri, str):
        parts = urlsplit(uri)  # never show credentials or a query string that came with it
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        found["uri"] = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    for key in ("sha256", "loader", "size"):
        value = getattr(item, key, None)
        if value is not None:
            found[key] = jsonable(value)
    return found


def _stage(item: Any) -> str | None:
    stage = getattr(item, "stage", None)
    return None if stage is None else str(stage)


def _share(count: int, total: int) -> float | None:
    return None if total <= 0 else count / total


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0
