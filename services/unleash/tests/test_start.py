"""start.py checks every prerequisite before it starts anything, and stops what it started when a
later step fails: a failed start leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from unleash_stack import StackError, missing_prerequisites, running_processes, start_stack

from support.services import unavailable
from support.unleash import SERVICE_DIR

BROKEN_UNLEASH = """
// Stands in for unleash-server: the server process starts, then fails before it is healthy.
exports.start = () =>
  new Promise((resolve, reject) => setTimeout(() => reject(new Error('broken on purpose')), 1500));
"""


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    """An empty stack folder under /tmp (every parent searchable by the postgres user)."""
    folder = Path(tempfile.mkdtemp(prefix="modelflags-unleash-test-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_start_names_every_missing_prerequisite_and_starts_nothing(
    stack_dir: Path, tmp_path: Path
) -> None:
    """Without PostgreSQL and unleash-server, start.py exits 1 naming both, and creates no
    database and no process."""
    env = {
        **os.environ,
        "MODELFLAGS_PG_BIN": str(tmp_path / "no-postgresql"),
        "MODELFLAGS_UNLEASH_NODE_DIR": str(tmp_path / "no-node-modules"),
    }
    result = subprocess.run(
        [sys.executable, str(SERVICE_DIR / "start.py"), "--dir", str(stack_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not installed" in result.stderr
    assert f"PostgreSQL 15 (initdb, pg_ctl, psql, postgres not in {tmp_path}" in result.stderr
    assert "unleash-server 8.x in" in result.stderr and "install.sh" in result.stderr
    assert not (stack_dir / "pg").exists() and not (stack_dir / "secrets.json").exists()
    assert running_processes(stack_dir) == {}


@pytest.mark.unleash
@pytest.mark.slow
def test_a_failed_start_stops_the_postgresql_it_started(
    stack_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Unleash dies before it is healthy, the PostgreSQL started for it is stopped again."""
    package = tmp_path / "node" / "node_modules" / "unleash-server"
    package.mkdir(parents=True)
    (package / "package.json").write_text(
        json.dumps({"name": "unleash-server", "version": "8.0.0", "main": "index.js"})
    )
    (package / "index.js").write_text(BROKEN_UNLEASH)
    monkeypatch.setenv("MODELFLAGS_UNLEASH_NODE_DIR", str(tmp_path / "node"))
    missing = missing_prerequisites()
    if missing:
        unavailable(f"PostgreSQL or Node is not installed: {'; '.join(missing)}")

    with pytest.raises(StackError, match="exited before it was healthy") as caught:
        start_stack(stack_dir, timeout=30)
    assert "broken on purpose" in str(caught.value)
    assert (stack_dir / "pg" / "data" / "PG_VERSION").exists()  # PostgreSQL did start
    assert running_processes(stack_dir) == {}
