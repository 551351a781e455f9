"""``modelflags rollout``: move a candidate through stages on the fleet's metrics in Prometheus.

::

    modelflags rollout REGISTRY --model M --candidate V --actuator flagd:PATH|unleash:URL
        --prometheus URL [--stages 1,10,50,100] [--stage-seconds S] [--poll-seconds S]
        [--baseline VERSION] [--state FILE] [--audit FILE]
    modelflags rollout REGISTRY --model M --candidate V --confirm|--dismiss [--by NAME]
        [--reason TEXT] [--state FILE]

The rules are the model's guardrails table; the baseline defaults to its ``default_version``.
The Unleash admin token comes from ``MODELFLAGS_UNLEASH_ADMIN_TOKEN`` (never a flag: flags end up
in shell histories and process lists); ``--unleash-project`` and ``--unleash-environment`` say
where the flag lives. Exit status: 0 when the candidate reached its last stage, 1 when it was
rolled back, 2 for invalid arguments or a state file of another rollout, 130 when interrupted
(the flag and the state stay as they are; run the same command again to resume).
"""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path
from typing import Any

from modelflags.cli.output import FINDINGS, OK, USAGE, Output

__all__ = ["TOKEN_ENV", "add_commands", "run"]

TOKEN_ENV = "MODELFLAGS_UNLEASH_ADMIN_TOKEN"


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``rollout`` to the command's subparsers."""
    parser = commands.add_parser(
        "rollout",
        parents=[common],
        help="roll a candidate out in stages, judged on the fleet's metrics in Prometheus",
        description=(
            "Move the model's flag to the candidate stage by stage, reading every instance's "
            "metrics from Prometheus and judging them with the model's guardrails; roll back, "
            "hold or ask for a decision on a breach. Resumes from its state file after a "
            f"restart. The Unleash admin token comes from ${TOKEN_ENV}."
        ),
    )
    parser.add_argument("registry", help="the registry file")
    parser.add_argument("--model", required=True, help="the model to roll out")
    parser.add_argument("--candidate", required=True, help="the version rolled out")
    parser.add_argument("--baseline", help="the version compared with (default_version)")
    parser.add_argument(
        "--actuator", help="where the flag lives: flagd:PATH (a flag file) or unleash:URL"
    )
    parser.add_argument("--prometheus", help="Prometheus' address, e.g. http://127.0.0.1:9090")
    parser.add_argument("--stages", default="1,10,50,100", help="percents (default 1,10,50,100)")
    parser.add_argument("--stage-seconds", type=float, default=300.0, metavar="S")
    parser.add_argument("--poll-seconds", type=float, default=5.0, metavar="S")
    parser.add_argument("--state", type=Path, help="state file (default rollout-M-V.json)")
    parser.add_argument("--audit", type=Path, help="audit file (default STATE.audit.jsonl)")
    parser.add_argument("--prefix", default="modelflags", help="metric name prefix")
    parser.add_argument("--unleash-project", default="default")
    parser.add_argument("--unleash-environment", default="development")
    decide = parser.add_mutually_exclusive_group()
    decide.add_argument("--confirm", action="store_true", help="roll back the proposed version")
    decide.add_argument("--dismiss", action="store_true", help="go on despite the proposal")
    parser.add_argument("--by", default=None, help="who decides (default: the user name)")
    parser.add_argument("--reason", default="", help="why")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, output: Output) -> int:
    """Run the rollout, or answer its proposal."""
    from modelflags.registry import load_registry
    from modelflags.rollout.rollout_state import request_decision

    registry = load_registry(args.registry)
    spec = registry.model(args.model)
    state_path = args.state or Path(f"rollout-{args.model}-{args.candidate}.json")
    if args.confirm or args.dismiss:
        by = args.by or getpass.getuser()
        decision = request_decision(
            state_path, "confirm" if args.confirm else "dismiss", by=by, reason=args.reason
        )
        output.result(
            {"decision": decision.action, "candidate": decision.candidate, "by": decision.by},
            [f"{decision.action} of {args.candidate} recorded; the controller acts on it next"],
        )
        return OK
    if spec.guardrails is None:
        return output.error(f"{args.registry}: model {args.model!r} has no guardrails table")
    for version in (args.candidate, args.baseline):
        if version is not None and version not in spec.versions:
            known = ", ".join(sorted(spec.versions))
            return output.error(f"model {args.model!r} has no version {version!r} ({known})")
    if spec.decisions != "fleet":
        output.warn(
            f'model {args.model!r} has decisions = "{spec.decisions}": each instance may also '
            'act on its own guardrails; set decisions = "fleet" in its table'
        )
    if not args.actuator or not args.prometheus:
        return output.error("--actuator and --prometheus are needed to run a rollout")
    try:
        stages = [int(part) for part in args.stages.split(",")]
        actuator = _actuator(args)
    except ValueError as exc:
        return output.error(str(exc))
    return _run(args, output, spec.flag_key, spec.guardrails, stages, actuator, state_path,
                args.baseline or spec.default_version)  # fmt: skip


def _run(
    args: argparse.Namespace,
    output: Output,
    flag_key: str,
    rules: Any,
    stages: list[int],
    actuator: Any,
    state_path: Path,
    baseline: str,
) -> int:
    from modelflags.rollout.controller import RolloutController
    from modelflags.rollout.promql import PrometheusSource

    source = PrometheusSource(args.prometheus, prefix=args.prefix)

    def progress(line: str) -> None:
        (output.err if args.json else output.out).write(line + "\n")
        (output.err if args.json else output.out).flush()

    try:
        controller = RolloutController(
            actuator,
            source,
            model=args.model,
            flag_key=flag_key,
            candidate=args.candidate,
            baseline=baseline,
            rules=rules,
            state_path=state_path,
            audit_path=args.audit,
            stages=stages,
            stage_seconds=args.stage_seconds,
            poll_s=args.poll_seconds,
            progress=progress,
        )
        result = controller.run()
    except ValueError as exc:
        return output.error(str(exc))
    finally:
        source.close()
        close = getattr(actuator, "close", None)
        if close is not None:
            close()
    output.result(
        {"outcome": result.outcome, "percent": result.percent, "reason": result.reason},
        [f"{result.outcome}: {result.reason}"],
    )
    if result.outcome == "completed":
        return OK
    return FINDINGS if result.outcome == "rolled_back" else USAGE


def _actuator(args: argparse.Namespace) -> Any:
    kind, _, where = str(args.actuator).partition(":")
    if kind == "flagd" and where:
        from modelflags.rollout.actuators.flagd import FlagdFileActuator

        if not Path(where).is_file():
            raise ValueError(f"--actuator flagd:{where}: no such flag file")
        return FlagdFileActuator(where)
    if kind == "unleash" and where:
        from modelflags.rollout.actuators.unleash import UnleashActuator

        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise ValueError(f"--actuator unleash: set the admin token in ${TOKEN_ENV}")
        return UnleashActuator(
            where, token, project=args.unleash_project, environment=args.unleash_environment
        )
    raise ValueError(f"--actuator is flagd:PATH or unleash:URL, not {args.actuator!r}")
