"""``modelflags show REGISTRY MODEL [VERSION]``: a model's versions, or one version's lineage,
stage history and compatibility with this environment.

For a model whose versions come from MLflow, its versions are read from the tracking server now:
their pins, aliases, run params, metrics and tags (git commit, source) and signature."""

from __future__ import annotations

import argparse
from typing import Any

from modelflags.cli.output import FINDINGS, OK, Output, size_text
from modelflags.registry import (
    ModelSpec,
    Registry,
    VersionSpec,
    check_compatibility,
    load_registry,
)
from modelflags.registry.capture import running_environment

__all__ = ["add_commands"]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``show`` to the command's subparsers."""
    parser = commands.add_parser(
        "show",
        parents=[common],
        help="a model's versions, or a version's lineage, history and compatibility",
        description=(
            "Without VERSION: the model's versions with their stages. With VERSION: its "
            "lineage, stage history, and whether its recorded environment may load here "
            "(exit 1 when the model's compat policy would refuse it)."
        ),
    )
    parser.add_argument("registry", metavar="REGISTRY", help="registry file (.toml, .json, .yaml)")
    parser.add_argument("model", metavar="MODEL", help="model name")
    parser.add_argument("version", metavar="VERSION", nargs="?", help="version id")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, output: Output) -> int:
    """Show the model or the version."""
    registry = load_registry(args.registry)
    model = registry.models.get(args.model)
    if model is None:
        known = ", ".join(sorted(registry.models)) or "none"
        return output.error(f"no model {args.model!r} in {args.registry} (known: {known})")
    if model.mlflow is not None:
        model = _from_mlflow(model)
    if args.version is None:
        return _model(model, output)
    spec = model.versions.get(args.version)
    if spec is None:
        known = ", ".join(model.versions)
        return output.error(f"model {model.name!r} has no version {args.version!r} ({known})")
    return _version(model, args.version, spec, output)


def _from_mlflow(model: ModelSpec) -> ModelSpec:
    """The model with its versions read from MLflow now (nothing downloaded or trusted)."""
    from modelflags.artifacts.folder_cache import FolderFetcher
    from modelflags.sources import MlflowVersionSource, version_sources

    registry = Registry(models={model.name: model})
    sources = version_sources(registry, folders=FolderFetcher())
    assert sources is not None
    source = sources.sources[model.name]
    assert isinstance(source, MlflowVersionSource)
    try:
        versions, aliases = source.read_versions()
    finally:
        sources.close()
    default = model.default_version
    if default.startswith("@"):
        default = f"{aliases.get(default[1:], '?')} ({default})"
    return model.model_copy(update={"versions": versions, "default_version": default or "-"})


def _model(model: ModelSpec, output: Output) -> int:
    rows = []
    lines = [
        f"{model.name}: flag {model.flag_key!r}, default {model.default_version}, "
        f"compat {model.compat!r}"
        + (", approval required for production" if model.require_approval else "")
    ]
    for version, spec in model.versions.items():
        lineage = spec.lineage
        row = {
            "version": version,
            "stage": spec.stage,
            "sha256": spec.sha256,
            "size": spec.size,
            "registered_at": lineage.registered_at.isoformat()
            if lineage and lineage.registered_at
            else None,
            "registered_by": lineage.registered_by if lineage else None,
            "commit": lineage.git.commit if lineage and lineage.git else None,
            **_mlflow_row(spec),
        }
        rows.append(row)
        when = str(row["registered_at"] or "-")[:19]
        lines.append(
            f"  {version:<12} {spec.stage:<10} {(spec.sha256 or '-')[:12]:<12} "
            f"{size_text(spec.size) if spec.size is not None else '-':>9}  "
            f"{when:<19}  {row['registered_by'] or '-'}"
            + (f"  {row['aliases']}" if row.get("aliases") else "")
            + ("  (not pinned)" if spec.mlflow is not None and spec.sha256 is None else "")
        )
    output.result(
        {
            "model": model.name,
            "flag": model.flag_key,
            "default_version": model.default_version,
            "compat": model.compat,
            "require_approval": model.require_approval,
            "versions": rows,
        },
        lines,
    )
    return OK


def _version(model: ModelSpec, version: str, spec: VersionSpec, output: Output) -> int:
    recorded = spec.environment
    running = running_environment(recorded.libraries if recorded else ())
    verdict = check_compatibility(recorded, running, model.compat)
    lineage = spec.lineage
    lines = [
        f"{model.name} {version}: {spec.stage}",
        f"  uri        {spec.uri}",
        f"  sha256     {spec.sha256 or '-'}"
        + (f" ({size_text(spec.size)})" if spec.size is not None else ""),
    ]
    if lineage is not None:
        git = lineage.git
        lines += [
            f"  registered {lineage.registered_at or '-'} by {lineage.registered_by or '-'}",
            "  git        "
            + (f"{git.commit}{' (dirty)' if git.dirty else ''} {git.branch or ''}" if git else "-"),
        ]
        if lineage.estimator:
            lines.append(f"  estimator  {lineage.estimator}")
        for title, values in (("params", lineage.params), ("metrics", lineage.metrics)):
            if values:
                lines.append(f"  {title:<10} " + ", ".join(f"{k}={v}" for k, v in values.items()))
        for item in lineage.data:
            lines.append(f"  data       {item.path} sha256 {item.sha256[:12]}... ({item.size} B)")
        for dvc in lineage.dvc:
            lines.append(f"  dvc        {dvc.stage} {dvc.kind} {dvc.path} md5 {dvc.md5}")
        if recorded is not None:
            listed = ", ".join(f"{k} {v}" for k, v in recorded.libraries.items())
            lines.append(f"  python     {recorded.python or '-'} on {recorded.platform or '-'}")
            lines.append(f"  libraries  {listed or '-'}")
    lines += _mlflow_lines(spec)
    if spec.examples is not None:
        lines.append(f"  examples   {spec.examples.rows} rows in {spec.examples.uri}")
    lines.append("  history")
    for entry in spec.history or ():
        came = f"{entry.previous} -> " if entry.previous else ""
        why = f": {entry.reason}" if entry.reason else ""
        lines.append(f"    {entry.at.isoformat()}  {came}{entry.stage} by {entry.by}{why}")
    if not spec.history:
        lines.append("    (none recorded)")
    lines.append(f"  compatibility here: {verdict.action}: {verdict.message}")
    output.result(
        {
            "model": model.name,
            "version": version,
            "stage": spec.stage,
            "uri": spec.uri,
            "sha256": spec.sha256,
            "size": spec.size,
            "lineage": lineage.model_dump(mode="json", exclude_none=True) if lineage else None,
            "history": [entry.model_dump(mode="json") for entry in spec.history],
            "examples": spec.examples.model_dump(exclude={"location"}) if spec.examples else None,
            "metadata": spec.metadata,
            "compatibility": {
                "action": verdict.action,
                "message": verdict.message,
                "policy": model.compat,
                "running": running.model_dump(mode="json"),
            },
        },
        lines,
    )
    return FINDINGS if verdict.refused else OK


def _mlflow_row(spec: VersionSpec) -> dict[str, Any]:
    info = spec.metadata.get("mlflow") if spec.mlflow is not None else None
    if not isinstance(info, dict):
        return {}
    return {
        "aliases": " ".join(f"@{alias}" for alias in info.get("aliases", ())),
        "pinned_by": info.get("pinned_by"),
    }


def _mlflow_lines(spec: VersionSpec) -> list[str]:
    """What MLflow says of a version: aliases, pin, run, signature."""
    info = spec.metadata.get("mlflow") if spec.mlflow is not None else None
    if not isinstance(info, dict):
        return []
    run = info.get("run") or {}
    tags = run.get("tags") or {}
    lines = [
        f"  mlflow     {info.get('name')} version {info.get('version')}"
        + "".join(f" @{alias}" for alias in info.get("aliases", ()))
        + (" (deleted in MLflow)" if info.get("deleted") else ""),
        f"  pinned by  {info.get('pinned_by') or 'nothing: it does not serve'}",
        f"  run        {info.get('run_id') or '-'}",
        f"  source     {tags.get('mlflow.source.name', '-')} "
        f"({tags.get('mlflow.source.type', '-')})"
        + (
            f" at {tags['mlflow.source.git.commit']}"
            if tags.get("mlflow.source.git.commit")
            else ""
        ),
    ]
    signature = info.get("signature") or {}
    for part in ("inputs", "outputs"):
        if part in signature:
            lines.append(f"  {part:<10} {_signature_text(signature[part])}")
    return lines


def _signature_text(value: Any) -> str:
    if not isinstance(value, list):
        return str(value)
    shown = []
    for item in value[:20]:
        if not isinstance(item, dict):
            shown.append(str(item))
        elif "tensor-spec" in item:
            tensor = item["tensor-spec"]
            shown.append(f"tensor {tensor.get('dtype')} {tensor.get('shape')}")
        else:
            shown.append(f"{item.get('name', '?')}: {item.get('type', '?')}")
    return ", ".join(shown) + (" ..." if len(value) > 20 else "")
