"""``modelflags register`` and ``modelflags promote``: a version into the registry, and through
its stages (see :mod:`modelflags.registry.versions`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from modelflags.cli.output import OK, USAGE, Output, size_text
from modelflags.golden import register
from modelflags.registry import STAGES, promote
from modelflags.registry.reference import read_sample

__all__ = ["add_commands"]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``register`` and ``promote`` to the command's subparsers."""
    parser = commands.add_parser(
        "register",
        parents=[common],
        help="add a version to a registry, with its digest and lineage",
        description=(
            "Add VERSION of MODEL to REGISTRY (created when missing): the artifact's sha256 and "
            "size, and its lineage (git commit and dirty flag, Python and library versions, data "
            "digests, dvc.lock entries, metrics, params, time and user). An id already "
            "registered with other bytes is refused. With --mlflow, MODEL's versions come from "
            "MLflow: VERSION's folder digest is computed and pinned (its MLflow tag, or with "
            "--local the model's pin file); no ARTIFACT is given."
        ),
    )
    parser.add_argument("registry", metavar="REGISTRY", help="registry file (.toml or .json)")
    parser.add_argument("model", metavar="MODEL", help="model name")
    parser.add_argument("version", metavar="VERSION", help="new version id")
    parser.add_argument(
        "artifact", metavar="ARTIFACT", nargs="?", help="the artifact file (not with --mlflow)"
    )
    parser.add_argument(
        "--mlflow",
        action="store_true",
        help="pin MLflow version VERSION of MODEL (a model with an mlflow table)",
    )
    parser.add_argument(
        "--local", action="store_true", help="with --mlflow: write the model's pin file, not a tag"
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="with --mlflow: the cache folder")
    parser.add_argument(
        "--metric", action="append", default=[], metavar="NAME=NUMBER", help="repeatable"
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="repeatable (JSON)"
    )
    parser.add_argument(
        "--data", action="append", default=[], metavar="PATH", help="a data file (repeatable)"
    )
    parser.add_argument(
        "--reference",
        metavar="FILE",
        help="the training sample (.npy, or .csv with a header): feature statistics for drift",
    )
    parser.add_argument("--stage", default="candidate", choices=STAGES, help="default: candidate")
    parser.add_argument("--uri", help="write this URI instead of the artifact's path")
    parser.add_argument("--loader", help="joblib, pickle or skops (default: by suffix)")
    parser.add_argument(
        "--library", action="append", default=[], metavar="DIST", help="also record this library"
    )
    parser.add_argument(
        "--source-dir", metavar="DIR", help="where git and dvc.lock are read (default: here)"
    )
    parser.add_argument("--by", metavar="NAME", help="who registers (default: the login name)")
    parser.add_argument(
        "--examples",
        metavar="FILE",
        help=(
            "a small sample of inputs (.npy, .csv, or .parquet with pyarrow): the version is "
            "loaded and run on them, and inputs and outputs are kept for `modelflags check`"
        ),
    )
    parser.set_defaults(run=run_register)

    parser = commands.add_parser(
        "promote",
        parents=[common],
        help="move a version to another stage, recording who, when and why",
        description=(
            "Move VERSION of MODEL to stage --to, recording who (--by), when and why (--reason) "
            "in the version's history. With require_approval in the registry, production needs "
            "--by naming someone other than the person who registered the version."
        ),
    )
    parser.add_argument("registry", metavar="REGISTRY", help="registry file (.toml or .json)")
    parser.add_argument("model", metavar="MODEL", help="model name")
    parser.add_argument("version", metavar="VERSION", help="version id")
    parser.add_argument("--to", required=True, choices=STAGES, help="the new stage")
    parser.add_argument("--by", metavar="NAME", help="who promotes (default: the login name)")
    parser.add_argument("--reason", default="", metavar="TEXT", help="why, for the history")
    parser.set_defaults(run=run_promote)


def run_register(args: argparse.Namespace, output: Output) -> int:
    """Register; print what was recorded."""
    if args.mlflow:
        if args.artifact is not None:
            return output.error("register --mlflow takes no ARTIFACT: MLflow has the files", USAGE)
        from modelflags.cli.mlflow import register_mlflow

        return register_mlflow(args, output)
    if args.artifact is None:
        return output.error("register needs ARTIFACT (or --mlflow)", USAGE)
    try:
        metrics = {k: _number(k, v) for k, v in map(_pair, args.metric)}
        params = {k: _json_or_text(v) for k, v in map(_pair, args.param)}
        reference = None if args.reference is None else read_sample(args.reference)
    except ValueError as exc:
        return output.error(str(exc), USAGE)
    result = register(
        args.registry,
        args.model,
        args.version,
        args.artifact,
        uri=args.uri,
        loader=args.loader,
        stage=args.stage,
        metrics=metrics,
        params=params,
        data=args.data,
        libraries=args.library,
        source_dir=args.source_dir,
        user=args.by,
        examples=args.examples,
        reference=reference,
    )
    lineage = result.lineage
    git = lineage.git
    libraries = lineage.environment.libraries if lineage.environment else {}
    head = (
        f"registered {result.model} {result.version} in {result.registry}"
        if result.created
        else f"{result.model} {result.version} is already registered with these bytes; "
        + ("examples added" if result.examples_added else "nothing changed")
    )
    lines = [
        head,
        f"  uri     {result.uri}",
        f"  sha256  {result.sha256} ({size_text(result.size)})",
        f"  stage   {result.stage}",
        f"  git     {git.commit[:12] + (' (dirty)' if git.dirty else '') if git else '-'}",
        f"  libs    {', '.join(f'{k} {v}' for k, v in libraries.items()) or '-'}",
    ]
    examples = result.examples
    if examples is not None:
        lines.append(f"  examples {examples.rows} rows in {examples.uri}")
    if result.reference is not None:
        stats = result.reference
        lines.append(f"  sample  {stats.rows} rows, {len(stats.features)} features")
    if result.same_bytes_as:
        output.warn(
            f"{result.model}/{result.version} has the same bytes as "
            f"{', '.join(result.same_bytes_as)}"
        )
    output.result(
        {
            "registry": result.registry,
            "model": result.model,
            "version": result.version,
            "created": result.created,
            "uri": result.uri,
            "sha256": result.sha256,
            "size": result.size,
            "stage": result.stage,
            "same_bytes_as": list(result.same_bytes_as),
            "lineage": lineage.model_dump(mode="json", exclude_none=True),
            "examples": examples.model_dump(exclude={"location"}) if examples else None,
            "examples_added": result.examples_added,
            "reference_rows": None if result.reference is None else result.reference.rows,
        },
        lines,
    )
    return OK


def run_promote(args: argparse.Namespace, output: Output) -> int:
    """Promote; print the move."""
    result = promote(
        args.registry, args.model, args.version, to=args.to, by=args.by, reason=args.reason
    )
    why = f" ({result.reason})" if result.reason else ""
    moved = f"{result.model} {result.version}: {result.previous} -> {result.stage}"
    output.result(
        {
            "registry": result.registry,
            "model": result.model,
            "version": result.version,
            "previous": result.previous,
            "stage": result.stage,
            "by": result.by,
            "at": result.at.isoformat(),
            "reason": result.reason,
        },
        [f"{moved} by {result.by}{why}"],
    )
    return OK


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected NAME=VALUE, not {text!r}")
    return name.strip(), value.strip()


def _number(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"metric {name!r} must be a number, not {value!r}") from None


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value
