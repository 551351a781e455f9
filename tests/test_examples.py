"""The README's examples run as documented and tell the story they promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_tells_its_story_without_a_failed_request() -> None:
    """The quickstart shows the canary split, the beta user, the live edit and a safe fallback."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    first = re.search(r"canary at 10% .* v2: ([\d.]+)%", out)
    assert first is not None and 7.0 <= float(first.group(1)) <= 13.0
    assert "beta user 'ada' -> v1 (PREWARMING) while v3 loads, then v3 (TARGETING_MATCH)" in out
    edited = re.search(r"edited to 50/50 .* v2: ([\d.]+)%", out)
    assert edited is not None and 45.0 <= float(edited.group(1)) <= 55.0
    assert re.search(r"v4 flagged to everyone: \{'v\d': 1000\} served, 0 failed requests", out)


def _readme_block(language: str) -> str:
    """The first fenced block of ``language`` in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"```{language}\n(.*?)```", text, re.S)
    assert found is not None, f"no {language} block in the README"
    return found.group(1)


@pytest.mark.slow
def test_the_readmes_first_code_runs_as_shown(tmp_path: Path) -> None:
    """The README's first flag file and program, run in a folder of their own, register two
    versions and serve one through flagd's provider: no step left for the reader to guess."""
    (tmp_path / "flags.json").write_text(_readme_block("json"), encoding="utf-8")
    (tmp_path / "first.py").write_text(_readme_block("python"), encoding="utf-8")
    for _ in range(2):  # a second run registers the same bytes again: nothing changes
        result = subprocess.run(
            [sys.executable, "first.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"v[12] TARGETING_MATCH \[[01]\]\n", result.stdout), result.stdout
    assert "WARNING" not in result.stderr, result.stderr
