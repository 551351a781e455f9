"""The ``modelflags`` command: a version's life from the shell.

::

    modelflags hash FILE...                          sha256 and size, as a registry snippet
    modelflags register REGISTRY MODEL VERSION FILE  add a version with its lineage
    modelflags register REGISTRY MODEL VERSION --mlflow   pin an MLflow version of MODEL
    modelflags mlflow pin NAME VERSION               pin an MLflow model version's digest
    modelflags promote REGISTRY MODEL VERSION --to STAGE [--by NAME] [--reason TEXT]
    modelflags show REGISTRY MODEL [VERSION]         lineage, stage history, compatibility
    modelflags validate REGISTRY [--flags FILE]      schema, artifacts, digests, a flagd file
    modelflags check REGISTRY [--model M]            every version that may serve loads and
                                                     answers its examples as recorded
    modelflags prefetch REGISTRY                     download remote artifacts into the cache
    modelflags cache ls | prune                      the artifact cache, and its retention
    modelflags status --url URL                      a running application's status page
    modelflags rollout REGISTRY --model M --candidate V --actuator flagd:PATH|unleash:URL
               --prometheus URL                      roll a candidate out on fleet metrics

Every command takes ``--help`` and ``--json``. Exit status: 0 when everything is fine, 1 when the
command found problems (each is listed), 2 for invalid arguments, an unreadable or invalid
registry, or a refused edit. ``python -m modelflags`` runs the same command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modelflags.cli import (
    cache,
    check,
    hashing,
    mlflow,
    prefetch,
    rollout,
    show,
    status,
    validate,
    versions,
)
from modelflags.cli.output import USAGE, Output, common_options
from modelflags.errors import ModelFlagsError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the process arguments); returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else USAGE
    output = Output(json_mode=args.json, out=sys.stdout, err=sys.stderr)
    try:
        status: int = args.run(args, output)
    except ModelFlagsError as exc:
        return output.error(str(exc))
    except KeyboardInterrupt:
        return output.error("interrupted", 130)
    return status


def _parser() -> argparse.ArgumentParser:
    from modelflags import __version__

    parser = argparse.ArgumentParser(
        prog="modelflags",
        description="Serve model versions chosen by OpenFeature flags: registry and cache tools.",
        epilog="Exit status: 0 fine, 1 problems found, 2 invalid arguments or input.",
    )
    parser.add_argument("--version", action="version", version=f"modelflags {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    for module in (
        hashing,
        versions,
        mlflow,
        show,
        validate,
        check,
        prefetch,
        cache,
        status,
        rollout,
    ):
        module.add_commands(commands, common)
    return parser
