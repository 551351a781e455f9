"""What MLflow knows of a model version, as the registry's lineage and ``metadata``.

From the model version (its tags, aliases, source, run id), its run (params, metrics, tags: the
git commit, the source file and kind, the user) and its ``MLmodel`` file (signature, flavors,
the Python and scikit-learn versions it was saved with) this builds:

- ``metadata["mlflow"]``: ``name``, ``version``, ``aliases``, ``run_id``, ``source``,
  ``status``, ``stage`` (MLflow's own, deprecated there), ``tags`` (the version's), ``run``
  (``params``, ``metrics``, ``tags``), ``signature`` (``inputs``, ``outputs``, ``params`` as
  MLflow's JSON lists), ``flavors`` and ``pinned_by`` (``"pin file"``, ``"tag"``,
  ``"first use"`` or None);
- a :class:`~modelflags.registry.records.Lineage`: registered when and by whom, the git commit,
  params and metrics, and the environment (Python, scikit-learn), which the model's ``compat``
  policy then judges before the version loads, as for any version;
- the stage: MLflow's ``Production``, ``Staging`` and ``Archived`` map to the registry's stages,
  anything else is ``candidate``.

The ``MLmodel`` read here is informational (shown, and used for the compatibility check): the
loader reads its own copy from the verified folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from modelflags.registry.records import Environment, GitState, Lineage, Stage

__all__ = ["describe", "mlmodel_summary", "stage_of"]

_GIT = re.compile(r"[0-9a-f]{7,64}")
_STAGES: dict[str, Stage] = {
    "production": "production",
    "staging": "staging",
    "archived": "archived",
}
_RUN_TAGS_SHOWN = 50
_TEXT_LIMIT = 500


def stage_of(version: Mapping[str, Any]) -> Stage:
    """The registry stage of an MLflow model version (from its ``current_stage``)."""
    return _STAGES.get(str(version.get("current_stage") or "").lower(), "candidate")


def mlmodel_summary(mlmodel: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an ``MLmodel`` worth showing: flavors, signature, versions it was saved with."""
    flavors = mlmodel.get("flavors") if isinstance(mlmodel.get("flavors"), Mapping) else {}
    assert isinstance(flavors, Mapping)
    summary: dict[str, Any] = {"flavors": sorted(str(name) for name in flavors)}
    signature = mlmodel.get("signature")
    if isinstance(signature, Mapping):
        summary["signature"] = {
            key: _json_or_text(signature.get(key))
            for key in ("inputs", "outputs", "params")
            if signature.get(key) is not None
        }
    pyfunc = flavors.get("python_function")
    sklearn = flavors.get("sklearn")
    if isinstance(pyfunc, Mapping) and pyfunc.get("python_version"):
        summary["python_version"] = str(pyfunc["python_version"])
    if isinstance(sklearn, Mapping):
        if sklearn.get("sklearn_version"):
            summary["sklearn_version"] = str(sklearn["sklearn_version"])
        if sklearn.get("serialization_format"):
            summary["serialization_format"] = str(sklearn["serialization_format"])
    if mlmodel.get("mlflow_version"):
        summary["mlflow_version"] = str(mlmodel["mlflow_version"])
    return summary


def describe(
    version: Mapping[str, Any],
    *,
    aliases: list[str],
    run: Mapping[str, Any] | None,
    mlmodel: Mapping[str, Any] | None,
    pinned_by: str | None,
) -> tuple[Lineage, dict[str, Any]]:
    """The lineage and ``metadata`` of one MLflow model version (see the module)."""
    data = (run or {}).get("data") or {}
    params = _pairs(data.get("params"))
    metrics = {
        key: float(value)
        for key, value in _pairs(data.get("metrics"), raw=True).items()
        if isinstance(value, int | float)
    }
    run_tags = _pairs(data.get("tags"))
    summary = dict(mlmodel or {})
    mlflow: dict[str, Any] = {
        "name": str(version.get("name", "")),
        "version": str(version.get("version", "")),
        "aliases": sorted(aliases),
        "run_id": version.get("run_id") or None,
        "source": version.get("source") or None,
        "status": version.get("status") or None,
        "stage": stage
        if (stage := version.get("current_stage")) not in (None, "", "None")
        else None,
        "description": _short(version.get("description")) or None,
        "tags": _pairs(version.get("tags")),
        "run": {
            "params": params,
            "metrics": metrics,
            "tags": dict(sorted(run_tags.items())[:_RUN_TAGS_SHOWN]),
        },
        "pinned_by": pinned_by,
        **{key: summary[key] for key in ("signature", "flavors") if key in summary},
    }
    commit = run_tags.get("mlflow.source.git.commit", "").strip().lower()
    environment = None
    libraries = {"scikit-learn": summary["sklearn_version"]} if "sklearn_version" in summary else {}
    if libraries or "python_version" in summary:
        environment = Environment(python=summary.get("python_version"), libraries=libraries)
    created = version.get("creation_timestamp")
    lineage = Lineage(
        registered_at=_time(created),
        registered_by=(version.get("user_id") or run_tags.get("mlflow.user") or None),
        git=GitState(commit=commit) if _GIT.fullmatch(commit) else None,
        environment=environment,
        params=params,
        metrics=metrics,
    )
    return lineage, {"mlflow": {key: value for key, value in mlflow.items() if value is not None}}


def _pairs(items: Any, *, raw: bool = False) -> dict[str, Any]:
    """MLflow's ``[{"key": k, "value": v}, ...]`` as a dict (values as text unless ``raw``)."""
    found: dict[str, Any] = {}
    for item in items or ():
        if isinstance(item, Mapping) and "key" in item:
            value = item.get("value")
            found[str(item["key"])] = value if raw else _short(value)
    return found


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "..."


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _time(milliseconds: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(milliseconds) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
