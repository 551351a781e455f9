"""``modelflags mlflow pin NAME VERSION``: pin an MLflow model version's folder digest.

The version's files are downloaded into the verified cache, their folder digest computed, and
the digest recorded as the version's MLflow tag ``modelflags.sha256`` (default) or in a local
pin file (``--pin-file``). A serving process serves only pinned versions (see
:mod:`modelflags.sources.mlflow`). ``modelflags register REGISTRY MODEL VERSION --mlflow`` does
the same for a model of a registry, reading the tracking server and pin file from its ``mlflow``
table.
"""

from __future__ import annotations

import argparse
from typing import Any

from modelflags.cli.output import OK, USAGE, Output, plural, size_text
from modelflags.errors import RegistryError
from modelflags.registry import load_registry
from modelflags.registry.mlflow import PIN_TAG, TRACKING_URI_ENV, MlflowModel

__all__ = ["add_commands", "pin_and_report", "register_mlflow"]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``mlflow pin`` to the command's subparsers."""
    mlflow = commands.add_parser(
        "mlflow",
        help="pin MLflow model versions so that they may serve",
        description="MLflow's Model Registry as a source of versions.",
    )
    actions = mlflow.add_subparsers(dest="action", required=True, metavar="ACTION")
    pin = actions.add_parser(
        "pin",
        parents=[common],
        help="compute a version's folder digest and pin it (MLflow tag or pin file)",
        description=(
            "Download version VERSION of MLflow model NAME into the verified cache, compute "
            f"its folder digest and set it as the version's tag {PIN_TAG} (or write it to "
            "--pin-file). A version pinned to another digest is refused."
        ),
    )
    pin.add_argument("name", metavar="NAME", help="the registered model's name in MLflow")
    pin.add_argument("version", metavar="VERSION", help="the model version (1, 2, ...)")
    pin.add_argument(
        "--tracking-uri", metavar="URI", help=f"the tracking server (default: ${TRACKING_URI_ENV})"
    )
    pin.add_argument(
        "--pin-file", metavar="FILE", help="write the pin to this file instead of MLflow's tag"
    )
    _cache_options(pin)
    pin.set_defaults(run=run_pin)


def _cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache folder (default: $MODELFLAGS_CACHE_DIR, else the user cache folder)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="per request to MLflow"
    )


def run_pin(args: argparse.Namespace, output: Output) -> int:
    """Pin; print the digest and where it was written."""
    try:
        config = MlflowModel(name=args.name, tracking_uri=args.tracking_uri)
        uri = config.resolved_tracking_uri()
    except ValueError as exc:
        return output.error(str(exc), USAGE)
    if uri is None:
        return output.error(f"give --tracking-uri or set {TRACKING_URI_ENV}", USAGE)
    return pin_and_report(
        output,
        tracking_uri=uri,
        name=args.name,
        version=args.version,
        pin_file=args.pin_file,
        cache_dir=args.cache_dir,
        timeout=args.timeout,
    )


def register_mlflow(args: argparse.Namespace, output: Output) -> int:
    """``register REGISTRY MODEL VERSION --mlflow``: pin VERSION of the model's MLflow model."""
    registry = load_registry(args.registry)
    model = registry.models.get(args.model)
    if model is None or model.mlflow is None:
        raise RegistryError(
            f"{args.registry}: model {args.model!r} has no mlflow table (register --mlflow pins "
            "a version of a model whose versions come from MLflow)",
            file=args.registry,
            model=args.model,
        )
    config = model.mlflow
    uri = config.resolved_tracking_uri()
    if uri is None:
        return output.error(
            f"model {args.model!r}: its mlflow table has no tracking_uri and {TRACKING_URI_ENV} "
            "is not set",
            USAGE,
        )
    return pin_and_report(
        output,
        tracking_uri=uri,
        name=config.name,
        version=args.version,
        pin_file=(config.pin_path or None) if args.local else None,
        cache_dir=args.cache_dir,
        timeout=config.timeout_s,
    )


def pin_and_report(
    output: Output,
    *,
    tracking_uri: str,
    name: str,
    version: str,
    pin_file: str | None,
    cache_dir: str | None,
    timeout: float,
) -> int:
    """Pin a version and print what was done."""
    from modelflags.artifacts.folder_cache import FolderFetcher
    from modelflags.sources.mlflow_api import MlflowApi
    from modelflags.sources.mlflow_pin import pin_version

    api = MlflowApi(tracking_uri, timeout=timeout)
    try:
        pinned = pin_version(
            api, name, version, folders=FolderFetcher(cache_dir=cache_dir), pin_file=pin_file
        )
    finally:
        api.close()
    where = f"MLflow tag {PIN_TAG}" if pinned.where == "tag" else pinned.where
    head = (
        f"pinned models:/{name}/{version}"
        if pinned.created
        else f"models:/{name}/{version} was already pinned to these files"
    )
    output.result(
        {
            "tracking_uri": tracking_uri,
            "name": name,
            "version": version,
            "sha256": pinned.sha256,
            "size": pinned.size,
            "files": pinned.files,
            "pinned_in": pinned.where,
            "created": pinned.created,
            "location": pinned.location,
        },
        [
            head,
            f"  sha256  {pinned.sha256} ({plural(pinned.files, 'file')}, {size_text(pinned.size)})",
            f"  in      {where}",
            f"  files   {pinned.location}",
        ],
    )
    return OK
