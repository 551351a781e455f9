"""``modelflags check REGISTRY [--model M]``: does every version that may serve still load here,
and answer its examples as it did when they were recorded? (see :mod:`modelflags.golden`)."""

from __future__ import annotations

import argparse
from typing import Any

from modelflags.cli.output import FINDINGS, OK, USAGE, Output, plural
from modelflags.golden import CheckReport, VersionCheck, check
from modelflags.registry.replay import DEFAULT_ATOL, DEFAULT_RTOL

__all__ = ["add_commands"]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``check`` to the command's subparsers."""
    parser = commands.add_parser(
        "check",
        parents=[common],
        help="load every version that may serve and replay its examples (for CI and nightly)",
        description=(
            "Load every version that is not archived as serving does (compatibility with this "
            "environment, sha256, loader), replay the examples recorded at registration and "
            "compare the answers: labels exactly, floats within --rtol and --atol. Reports per "
            "version whether it loads, whether its answers are equal, and the time per row. "
            "Exit 1 when any version fails (or, with --strict, has no examples)."
        ),
    )
    parser.add_argument("registry", metavar="REGISTRY", help="registry file (.toml, .json, .yaml)")
    parser.add_argument("--model", metavar="MODEL", help="check this model only")
    parser.add_argument(
        "--rtol",
        type=float,
        default=DEFAULT_RTOL,
        help=f"relative tolerance for float outputs (default: {DEFAULT_RTOL:g})",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help=f"absolute tolerance for float outputs (default: {DEFAULT_ATOL:g})",
    )
    parser.add_argument(
        "--strict", action="store_true", help="a version without examples fails the check"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, output: Output) -> int:
    """Check; print one line per version, then the failures."""
    if args.rtol < 0 or args.atol < 0:
        return output.error("--rtol and --atol must be 0 or more", USAGE)
    report = check(args.registry, args.model, rtol=args.rtol, atol=args.atol)
    ok = report.ok(strict=args.strict)
    data = {**report.to_dict(), "strict": args.strict, "ok": ok}
    output.result(data, _lines(report, strict=args.strict))
    return OK if ok else FINDINGS


def _lines(report: CheckReport, *, strict: bool) -> list[str]:
    lines = []
    for item in report.versions:
        lines.append(f"{item.model} {item.version:<12} {item.stage:<10} {_summary(item, strict)}")
        if item.status != "passed" and item.reason:
            lines.append(f"    {item.reason}")
        lines.extend(f"    warning: {text}" for text in item.warnings)
    passed = sum(v.status == "passed" for v in report.versions)
    lines.append(
        f"{plural(len(report.versions), 'version')}: {passed} passed, {len(report.failed)} "
        f"failed, {len(report.not_checked)} not checked (rtol={report.rtol:g}, "
        f"atol={report.atol:g})"
    )
    return lines


def _summary(item: VersionCheck, strict: bool) -> str:
    if not item.loaded:
        return "FAILED  does not load"
    loaded = f"loads in {item.load_seconds or 0:.3f} s"
    if item.status == "not checked":
        return f"{'FAILED' if strict else 'NOT CHECKED':<7} {loaded}; no examples"
    timing = ", ".join(f"{m} {s * 1e6:.1f} us/row" for m, s in item.seconds_per_row.items())
    verdict = "ok" if item.status == "passed" else "FAILED"
    answers = "answers equal" if item.status == "passed" else "answers differ"
    if item.status == "failed" and not item.comparisons:
        answers = "examples not replayed"
    return f"{verdict:<7} {loaded}; {item.rows} rows, {answers}" + (f"; {timing}" if timing else "")
