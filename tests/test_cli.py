"""The ``modelflags`` command: ``validate`` and ``prefetch``, the shared options and exit codes,
run in process through ``main`` and as a real ``python -m modelflags`` subprocess."""

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
    assert (
        f"prefetched 3 versions of 2 models: downloaded 2 artifacts (28.0 kB) into {cache}; "
        "1 local, verified in place (nothing written)"
    ) in captured.out
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


def test_prefetch_of_local_artifacts_writes_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A local-only registry is verified in place: no cache folder is made, and none is named."""
    (tmp_path / "a.joblib").write_bytes(b"local")
    model = {
        "default_version": "v1",
        "versions": {"v1": {"uri": "a.joblib", "sha256": sha(b"local")}},
    }
    path = write_registry(tmp_path, {"m": model})
    cache = tmp_path / "cache"
    assert main(["prefetch", str(path), "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "prefetched 1 version of 1 model: 1 local, verified in place (nothing written)" in out
    assert str(cache) not in out
    assert not cache.exists()


def test_prefetch_json_reports_each_version_and_where_it_is(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json``: what each version needed (downloaded, cached, local) and its path."""
    cache = tmp_path / "cache"
    assert main(["prefetch", str(registry), "--cache-dir", str(cache), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cache_dir"] == str(cache)
    actions = {(v["model"], v["version"]): v["action"] for v in result["versions"]}
    assert actions == {
        ("ranker", "v1"): "local",
        ("recommender", "v1"): "downloaded",
        ("recommender", "v2"): "downloaded",
    }
    assert result["failures"] == []


# -- validate: artifacts, digests, findings ---------------------------------------------------


@pytest.fixture
def local_registry(tmp_path: Path) -> Path:
    """One model, two local versions with their recorded sizes and digests."""
    one, two = b"model one", b"model two"
    (tmp_path / "v1.joblib").write_bytes(one)
    (tmp_path / "v2.joblib").write_bytes(two)
    versions = {
        "v1": {"uri": "v1.joblib", "sha256": sha(one), "size": len(one)},
        "v2": {"uri": "v2.joblib", "sha256": sha(two), "size": len(two)},
    }
    return write_registry(tmp_path, {"m": {"default_version": "v1", "versions": versions}})


def edit_versions(path: Path, **changes: dict[str, Any]) -> None:
    document = json.loads(path.read_text())
    for version, fields in changes.items():
        document["models"]["m"]["versions"][version].update(fields)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"v2": {"uri": "gone.joblib"}}, "m/v2: artifact file not found"),
        ({"v2": {"size": 3}}, "has 9 bytes, the registry says 3"),
        ({"v2": {"sha256": "ab" * 32}}, f"has sha256 {sha(b'model two')}, the registry says"),
    ],
    ids=["missing", "size", "sha256"],
)
def test_validate_finds_missing_and_altered_artifacts(
    local_registry: Path, change: dict[str, Any], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing artifact, another size or another digest is an error: exit status 1."""
    edit_versions(local_registry, **change)
    assert main(["validate", str(local_registry)]) == 1
    out = capsys.readouterr().out
    assert "invalid registry with 1 model" in out
    assert needle in out
    assert main(["validate", str(local_registry), "--offline"]) == 0


def test_validate_warns_about_versions_with_the_same_bytes(
    local_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """v2 pointing at v1's bytes is a warning (exit 0), an error with --strict."""
    edit_versions(local_registry, v2={"uri": "v1.joblib", "sha256": sha(b"model one"), "size": 9})
    assert main(["validate", str(local_registry)]) == 0
    assert "warning: m/v2 has the same bytes as v1" in capsys.readouterr().out
    assert main(["validate", str(local_registry), "--strict"]) == 1


def test_validate_json_lists_findings_with_model_and_version(
    local_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json`` gives the summary and each finding's severity, model and version."""
    edit_versions(local_registry, v2={"uri": "gone.joblib"})
    assert main(["validate", str(local_registry), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] is False
    assert result["models"]["m"]["versions"] == {"v1": "candidate", "v2": "candidate"}
    (finding,) = result["findings"]
    assert (finding["severity"], finding["model"], finding["version"]) == ("error", "m", "v2")


def test_validate_of_a_registry_that_is_not_utf8_exits_2_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Latin-1 bytes give one line naming the file and the byte, never a traceback."""
    path = tmp_path / "registry.toml"
    path.write_bytes(b"# caf\xe9\n[models]\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"modelflags: {path}: not valid UTF-8 at byte 5 (line 1)" in err
    assert "Traceback" not in err


def test_validate_suggests_the_field_that_was_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt field reaches the command's error with its suggestion."""
    path = tmp_path / "registry.toml"
    path.write_text('[models.m]\ndefualt_version = "v1"\n[models.m.versions.v1]\nurl = "a"\n')
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'defualt_version' (did you mean 'default_version'?)" in err
    assert "unknown field 'url' (did you mean 'uri'?)" in err


def test_errors_are_json_documents_with_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--json`` a failing command still prints one JSON document."""
    assert main(["validate", str(tmp_path / "nope.toml"), "--json"]) == 2
    result = json.loads(capsys.readouterr().out)
    assert result["exit_code"] == 2 and "registry file not found" in result["error"]


# -- hash ---------------------------------------------------------------------------------------


def test_hash_prints_a_registry_snippet_ready_to_paste(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The snippet is valid TOML with the file's uri, sha256 and size."""
    import tomllib

    artifact = tmp_path / "v3.joblib"
    artifact.write_bytes(b"v3 bytes")
    assert main(["hash", str(artifact)]) == 0
    snippet = tomllib.loads(capsys.readouterr().out)
    assert snippet == {"uri": artifact.as_posix(), "sha256": sha(b"v3 bytes"), "size": 8}


def test_hash_of_a_missing_file_exits_2_after_hashing_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Readable files are still printed; the missing one is named on stderr."""
    (tmp_path / "a.bin").write_bytes(b"a")
    assert main(["hash", str(tmp_path / "a.bin"), str(tmp_path / "nope"), "--json"]) == 2
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert [f["sha256"] for f in result["files"]] == [sha(b"a")]
    assert "cannot read" in captured.err and "nope" in captured.err


# -- the command as a whole ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["hash"],
        ["register"],
        ["promote"],
        ["show"],
        ["validate"],
        ["prefetch"],
        ["cache"],
        ["cache", "ls"],
        ["cache", "prune"],
    ],
    ids=lambda c: " ".join(c) or "modelflags",
)
def test_every_command_has_help_and_exits_0(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--help`` works on every command and says how to use it."""
    assert main([*command, "--help"]) == 0
    assert "usage: modelflags" in capsys.readouterr().out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``--version`` names the installed package's version."""
    import modelflags

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"modelflags {modelflags.__version__}"


@pytest.mark.slow
def test_module_runs_as_a_program(registry: Path) -> None:
    """``python -m modelflags`` is the same command, exit status included."""
    result = subprocess.run(
        [sys.executable, "-m", "modelflags", "validate", str(registry), "--offline"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid registry with 2 models and 3 versions" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "modelflags", "validate", str(registry) + ".nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert "registry file not found" in missing.stderr and "Traceback" not in missing.stderr
