"""The embedded default: flagd's provider in FILE mode, real targeting and fractional splits."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType

from modelflags import ModelFlags

from models import Constant
from support import Workspace, wait_until


def flag_file(path: Path, targeting: dict[str, Any], default: str = "v1") -> None:
    """Write a flagd flag file atomically (write, then rename), as the docs advise."""
    document = {
        "flags": {
            "recommender": {
                "state": "ENABLED",
                "variants": {"v1": "v1", "v2": "v2", "v3": "v3"},
                "defaultVariant": default,
                "targeting": targeting,
            }
        }
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


@pytest.fixture
def flagd(tmp_path: Path):
    path = tmp_path / "flags.json"
    flag_file(path, {"fractional": [["v1", 90], ["v2", 10]]})
    provider = FlagdProvider(
        resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=50
    )
    api.set_provider_and_wait(provider)
    yield path
    api.shutdown()


@pytest.fixture
def registry(workspace: Workspace) -> Path:
    for label, version in enumerate(["v1", "v2", "v3"], start=1):
        workspace.add("recommender", version, Constant(label))
    return workspace.write()


@pytest.mark.slow
def test_fractional_split_is_served_as_flagged(flagd: Path, registry: Path) -> None:
    """A 90/10 fractional flag serves about 90/10 over 2,000 users, stable per user."""
    with ModelFlags(registry) as flags:
        served = Counter(flags.get_model("recommender", f"user-{i}").version for i in range(2000))
        assert served["v1"] + served["v2"] == 2000
        assert 0.08 <= served["v2"] / 2000 <= 0.12
        first = [flags.get_model("recommender", f"user-{i}").version for i in range(50)]
        again = [flags.get_model("recommender", f"user-{i}").version for i in range(50)]
        assert first == again


def test_targeting_rule_gives_beta_users_their_version(flagd: Path, registry: Path) -> None:
    """A flagd targeting rule on a context attribute picks the beta version for beta users."""
    flag_file(flagd, {"if": [{"==": [{"var": "plan"}, "beta"]}, "v3", "v1"]})
    with ModelFlags(registry) as flags:
        wait_until(
            lambda: flags.get_model("recommender", {"id": "b", "plan": "beta"}).version == "v3",
            5.0,
            "the beta rule",
        )
        assert flags.get_model("recommender", {"id": "b", "plan": "beta"}).version == "v3"
        assert flags.get_model("recommender", {"id": "f", "plan": "free"}).version == "v1"


def test_atomic_flag_file_edit_switches_within_a_second(flagd: Path, registry: Path) -> None:
    """Rewriting the flag file moves every user to the new version within 1 s."""
    with ModelFlags(registry) as flags:
        assert flags.get_model("recommender", "user-1").version in {"v1", "v2"}
        flag_file(flagd, {}, default="v3")
        changed = time.monotonic()
        wait_until(lambda: flags.get_model("recommender", "user-1").version == "v3", 1.0, "v3")
        assert flags.get_model("recommender", "user-1").version == "v3"
        assert time.monotonic() - changed < 1.0
