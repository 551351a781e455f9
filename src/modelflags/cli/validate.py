"""``modelflags validate REGISTRY [--flags FILE] [--offline] [--strict]``.

Checks, in order: the registry's schema (an invalid registry exits 2); each local artifact
(exists, has the recorded size and sha256; ``--offline`` skips reading artifacts); versions of a
model that share one digest (a warning: "v3 has the same bytes as v1", usually a copy-paste
mistake); a default version that is archived; and with ``--flags`` a flagd flag file, alone and
against the registry (see :mod:`modelflags.cli.flagfile`). Errors exit 1; warnings alone exit 0,
or 1 with ``--strict``.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from modelflags.cli import flagfile
from modelflags.cli.output import FINDINGS, OK, Output, plural
from modelflags.registry import Registry, VersionSpec, load_registry

__all__ = ["add_commands", "findings"]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``validate`` to the command's subparsers."""
    parser = commands.add_parser(
        "validate",
        parents=[common],
        help="check a registry, its local artifacts and a flagd flag file",
        description=(
            "Check a registry: its schema, local artifacts (exist, size, sha256), versions "
            "sharing a digest, and optionally a flagd flag file against it."
        ),
    )
    parser.add_argument("registry", metavar="REGISTRY", help="registry file (.toml, .json, .yaml)")
    parser.add_argument(
        "--flags", metavar="FILE", help="a flagd flag file (JSON) to check against the registry"
    )
    parser.add_argument(
        "--offline", action="store_true", help="do not read artifacts (schema and flags only)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, output: Output) -> int:
    """Validate; print a summary and each finding."""
    registry = load_registry(args.registry)
    found = findings(registry, read_artifacts=not args.offline)
    if args.flags:
        found += [
            {"severity": "error", "model": None, "version": None, "message": f"{args.flags}: {p}"}
            for p in flagfile.check_file(args.flags, registry)
        ]
    errors = [f for f in found if f["severity"] == "error"]
    warnings = [f for f in found if f["severity"] == "warning"]
    versions = sum(len(model.versions) for model in registry.models.values())
    remote = sum(
        spec.is_remote for model in registry.models.values() for spec in model.versions.values()
    )
    verdict = "invalid" if errors else "valid"
    lines = [
        f"{args.registry}: {verdict} registry with {plural(len(registry.models), 'model')} and "
        f"{plural(versions, 'version')} ({remote} remote)"
    ]
    for name, model in sorted(registry.models.items()):
        shadow = f", shadow flag {model.shadow_flag!r}" if model.shadow_flag else ""
        lines.append(
            f"  {name}: {', '.join(model.versions)} (default {model.default_version}, "
            f"flag {model.flag_key!r}{shadow})"
        )
    for finding in found:
        lines.append(f"{finding['severity']}: {finding['message']}")
    if args.offline:
        lines.append("artifacts not read (--offline)")
    output.result(
        {
            "registry": args.registry,
            "valid": not errors,
            "models": {
                name: {
                    "flag": model.flag_key,
                    "shadow_flag": model.shadow_flag,
                    "default_version": model.default_version,
                    "versions": {v: spec.stage for v, spec in model.versions.items()},
                }
                for name, model in sorted(registry.models.items())
            },
            "findings": found,
            "artifacts_checked": not args.offline,
        },
        lines,
    )
    return FINDINGS if errors or (warnings and args.strict) else OK


def findings(registry: Registry, *, read_artifacts: bool = True) -> list[dict[str, Any]]:
    """Problems of a valid registry: artifacts, shared digests, archived defaults."""
    found: list[dict[str, Any]] = []

    def add(severity: str, model: str, version: str | None, message: str) -> None:
        found.append({"severity": severity, "model": model, "version": version, "message": message})

    for name, model in sorted(registry.models.items()):
        if read_artifacts:
            for version, spec in model.versions.items():
                problem = _artifact_problem(spec)
                if problem is not None:
                    add("error", name, version, f"{name}/{version}: {problem}")
        first_with: dict[str, str] = {}
        for version, spec in model.versions.items():
            if spec.sha256 is None:
                continue
            if spec.sha256 in first_with:
                add(
                    "warning",
                    name,
                    version,
                    f"{name}/{version} has the same bytes as {first_with[spec.sha256]} "
                    f"(sha256 {spec.sha256[:12]}...)",
                )
            else:
                first_with[spec.sha256] = version
        default = model.versions.get(model.default_version)  # MLflow models list none here
        if default is not None and default.stage == "archived":
            add(
                "warning",
                name,
                model.default_version,
                f"{name}: default_version {model.default_version!r} is archived "
                "(archived versions never serve)",
            )
    return found


def _artifact_problem(spec: VersionSpec) -> str | None:
    if spec.is_remote:
        return None
    path = Path(spec.location)
    if not path.is_file():
        return f"artifact file not found: {path}"
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        return f"artifact {path} has {size} bytes, the registry says {spec.size}"
    if spec.sha256 is None:
        return None
    with path.open("rb") as stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    if digest != spec.sha256:
        return f"artifact {path} has sha256 {digest}, the registry says {spec.sha256}"
    return None
