"""The ``modelflags`` command, run in process and once as ``python -m modelflags.cli``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelflags.cli import main

from support.artifact_server import ArtifactServer, not_found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_registry(folder: Path, models: dict[str, Any], name: str = "registry.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({"models": models}))
    return path


@pytest.fixture
def registry(tmp_path: Path, artifact_server: ArtifactServer) -> Path:
    """Two models: one with two remote versions, one with a local version."""
    one, two, local = b"recommender v1" * 1000, b"recommender v2" * 1000, b"ranker v1"
    (tmp_path / "ranker-v1.joblib").write_bytes(local)
    return write_registry(
        tmp_path,
        {
            "recommender": {
                "default_version": "v1",
                "shadow_flag": "recommender.shadow",
                "versions": {
                    "v1": {"uri": artifact_server.add("/rec/v1.joblib", one), "sha256": sha(one)},
                    "v2": {"uri": artifact_server.add("/rec/v2.joblib", two), "sha256": sha(two)},
                },
            },
            "ranker": {
                "default_version": "v1",
                "versions": {"v1": {"uri": "ranker-v1.joblib", "sha256": sha(local)}},
            },
        },
    )


def test_validate_prints_a_summary_of_models_and_versions(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(registry)]) == 0
    out = capsys.readouterr().out
    assert "valid registry with 2 models and 3 versions (2 remote)" in out
    assert "recommender: v1, v2 (default v1, flag 'recommender', shadow flag" in out
    assert "ranker: v1 (default v1, flag 'ranker')" in out


def test_validate_reports_an_invalid_registry_with_exit_status_2_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_registry(tmp_path, {"m": {"default_version": "v9", "versions": {"v1": {}}}})
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelflags: ")
    assert "registry.json" in err and "'m'" in err
    assert "Traceback" not in err


def test_validate_reports_a_missing_registry_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "nope.toml")]) == 2
    assert "registry file not found" in capsys.readouterr().err


def test_prefetch_downloads_remote_versions_and_verifies_local_ones(
    registry: Path,
    artifact_server: ArtifactServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    assert main(["prefetch", str(registry), "--cache-dir", str(cache)]) == 0
    captured = capsys.readouterr()
    assert f"prefetched 3 versions of 2 models into {cache}" in captured.out
    assert "[1/3] ranker/v1 ok (local, verified)" in captured.err
    assert "recommender/v1 [########################] 100% 14.0 kB/14.0 kB ok" in captured.err
    assert len(list((cache / "sha256").glob("*/*"))) == 2
    assert artifact_server.count("/rec/v1.joblib") == artifact_server.count("/rec/v2.joblib") == 1


def test_prefetch_again_finds_everything_cached(
    registry: Path,
    artifact_server: ArtifactServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = str(tmp_path / "cache")
    assert main(["prefetch", str(registry), "--cache-dir", cache]) == 0
    assert main(["prefetch", str(registry), "--cache-dir", cache]) == 0
    assert "recommender/v2 ok (cached)" in capsys.readouterr().err
    assert artifact_server.count("/rec/v2.joblib") == 1


def test_prefetch_uses_the_cache_folder_of_the_environment(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFLAGS_CACHE_DIR", str(tmp_path / "env-cache"))
    assert main(["prefetch", str(registry), "--model", "recommender"]) == 0
    assert len(list((tmp_path / "env-cache" / "sha256").glob("*/*"))) == 2


def test_prefetch_of_named_models_fetches_only_theirs(
    registry: Path,
    artifact_server: ArtifactServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = str(tmp_path / "cache")
    assert main(["prefetch", str(registry), "--model", "ranker", "--cache-dir", cache]) == 0
    assert "prefetched 1 version of 1 model" in capsys.readouterr().out
    assert artifact_server.requests() == []


def test_prefetch_lists_every_failure_and_exits_with_1(
    tmp_path: Path, artifact_server: ArtifactServer, capsys: pytest.CaptureFixture[str]
) -> None:
    good, gone, local = b"good", b"gone", b"local bytes"
    (tmp_path / "tampered.joblib").write_bytes(b"tampered")
    artifact_server.fail(
        artifact_server.add("/gone", gone).removeprefix(artifact_server.base_url), not_found()
    )
    path = write_registry(
        tmp_path,
        {
            "a": {
                "default_version": "ok",
                "versions": {
                    "ok": {"uri": artifact_server.add("/good", good), "sha256": sha(good)},
                    "gone": {"uri": artifact_server.url("/gone"), "sha256": sha(gone)},
                },
            },
            "b": {
                "default_version": "v1",
                "versions": {
                    "v1": {"uri": "tampered.joblib", "sha256": sha(local)},
                    "v2": {"uri": "missing.joblib"},
                    "v3": {
                        "uri": artifact_server.add("/secret", good),
                        "sha256": sha(good),
                        "headers_env": {"Authorization": "MODELFLAGS_TEST_UNSET_TOKEN"},
                    },
                },
            },
        },
    )
    assert main(["prefetch", str(path), "--cache-dir", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert "4 of 5 versions failed:" in err
    assert f"  a/gone: {artifact_server.url('/gone')} not found (HTTP 404)" in err
    assert "  b/v1: artifact " in err and "has sha256" in err
    assert "  b/v2: artifact file not found" in err
    assert "  b/v3: environment variable 'MODELFLAGS_TEST_UNSET_TOKEN'" in err
    assert "a/ok" in err and "a/ok:" not in err


def test_prefetch_of_an_unknown_model_exits_with_2(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prefetch", str(registry), "--model", "nope"]) == 2
    assert "unknown model(s) nope (known: ranker, recommender)" in capsys.readouterr().err


def test_prefetch_of_an_invalid_registry_exits_with_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("models = [")
    assert main(["prefetch", str(path)]) == 2
    assert "invalid TOML" in capsys.readouterr().err


def test_usage_errors_exit_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert "usage: modelflags" in capsys.readouterr().err


def test_help_exits_with_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prefetch", "--help"]) == 0
    assert "--cache-dir DIR" in capsys.readouterr().out


def test_module_runs_as_a_program(registry: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelflags.cli", "validate", str(registry)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid registry with 2 models and 3 versions" in result.stdout
