"""``modelflags status --url URL``: what a running application's status page says, as text or JSON.

The token comes from ``--token`` or ``MODELFLAGS_STATUS_TOKEN`` (an environment variable keeps it
out of shell history and process lists). Exit status 1 when the page cannot be read.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from modelflags.cli.output import FINDINGS, OK, Output

__all__ = ["TOKEN_ENV", "add_commands"]

TOKEN_ENV = "MODELFLAGS_STATUS_TOKEN"


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``status`` to the command's subparsers."""
    parser = commands.add_parser(
        "status",
        parents=[common],
        help="read a running application's status page",
        description=(
            "Read the JSON behind a status page (flags.web_app() or flags.serve_status()) and "
            f"print every model's versions, health and guardrails. The token comes from --token "
            f"or ${TOKEN_ENV}."
        ),
    )
    parser.add_argument(
        "--url", required=True, help="the page's address, e.g. http://127.0.0.1:8077"
    )
    parser.add_argument("--token", help=f"access token (default: ${TOKEN_ENV})")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds to wait (default 10)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, output: Output) -> int:
    """Fetch and print the status; the reader's errors name the address, never the token."""
    from modelflags.web.remote import fetch_status, format_status

    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        data = fetch_status(args.url, token, timeout=args.timeout)
    except Exception as exc:
        output.problem(str(exc))
        return FINDINGS
    output.result(data, format_status(data).splitlines())
    return OK
