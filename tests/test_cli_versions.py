"""A version's life from the shell: register, promote, show, and the cache's ls and prune, with a
real git repository, real scikit-learn models and a real HTTP artifact server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
import joblib
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

from modelflags import load_registry
from modelflags.cli import main

from support.artifact_server import ArtifactServer


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, trained: dict[str, LogisticRegression]) -> Path:
    """A git repository with a commit, two real models and a training data file."""
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "ada@example.com")
    git(folder, "config", "user.name", "Ada")
    (folder / "train.csv").write_text("x,y\n1,0\n")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "data")
    for version, model in trained.items():
        joblib.dump(model, folder / f"{version}.joblib")
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_register_promote_and_show_a_version_from_the_shell(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole life of v1: registered with lineage, promoted twice, shown with its history."""
    monkeypatch.chdir(repo)
    registry = str(repo / "registry.toml")
    status, out, _ = run(
        capsys,
        "register", registry, "recommender", "v1", "v1.joblib",
        "--metric", "auc=0.91", "--param", "C=1.0", "--param", "note=baseline",
        "--data", "train.csv", "--by", "ada",
    )  # fmt: skip
    assert status == 0
    assert out.startswith(f"registered recommender v1 in {registry}")
    assert f"git     {git(repo, 'rev-parse', 'HEAD')[:12]}" in out
    assert f"scikit-learn {sklearn.__version__}" in out

    assert (
        run(capsys, "promote", registry, "recommender", "v1", "--to", "staging", "--by", "bo")[0]
        == 0
    )
    status, out, _ = run(
        capsys, "promote", registry, "recommender", "v1", "--to", "production",
        "--by", "grace", "--reason", "AUC +2% on the May holdout",
    )  # fmt: skip
    assert (status, out.strip()) == (
        0,
        "recommender v1: staging -> production by grace (AUC +2% on the May holdout)",
    )

    status, out, _ = run(capsys, "show", registry, "recommender", "v1")
    assert status == 0
    assert "recommender v1: production" in out
    assert "metrics    auc=0.91" in out and "note=baseline" in out
    assert "candidate by ada: registered" in out
    assert "staging -> production by grace: AUC +2% on the May holdout" in out
    assert "compatibility here: ok: same versions as at registration" in out

    status, out, _ = run(capsys, "show", registry, "recommender", "v1", "--json")
    shown = json.loads(out)
    assert shown["lineage"]["metrics"] == {"auc": 0.91}
    assert shown["lineage"]["params"]["note"] == "baseline"
    assert [h["stage"] for h in shown["history"]] == ["candidate", "staging", "production"]
    assert shown["compatibility"]["action"] == "ok"

    status, out, _ = run(capsys, "show", registry, "recommender")
    assert status == 0 and "v1" in out and "production" in out and "ada" in out


def test_register_json_gives_the_digest_and_lineage(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json``: the recorded digest and lineage, for tools."""
    status, out, _ = run(
        capsys, "register", str(repo / "r.json"), "m", "v1", str(repo / "v1.joblib"),
        "--source-dir", str(repo), "--json",
    )  # fmt: skip
    result = json.loads(out)
    assert status == 0 and result["created"] is True
    assert result["sha256"] == hashlib.sha256((repo / "v1.joblib").read_bytes()).hexdigest()
    assert result["lineage"]["git"]["dirty"] is False


def test_registering_the_same_bytes_twice_is_reported_as_unchanged_and_copies_are_warned(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Idempotent for the same bytes; another id for them is allowed with a warning."""
    registry = str(repo / "registry.toml")
    assert run(capsys, "register", registry, "m", "v1", str(repo / "v1.joblib"))[0] == 0
    status, out, _ = run(capsys, "register", registry, "m", "v1", str(repo / "v1.joblib"))
    assert status == 0 and "already registered with these bytes; nothing changed" in out
    status, _, err = run(capsys, "register", registry, "m", "v3", str(repo / "v1.joblib"))
    assert status == 0 and "warning: m/v3 has the same bytes as v1" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["m", "v1", "missing.joblib"], "artifact file not found"),
        (["m", "v 1", "v1.joblib"], "invalid version id 'v 1'"),
        (["m", "v1", "v1.joblib", "--stage", "live"], "invalid choice: 'live'"),
        (["m", "v1", "v1.joblib", "--metric", "auc=high"], "metric 'auc' must be a number"),
        (["m", "v1", "v1.joblib", "--data", "nope.csv"], "data file not found: nope.csv"),
    ],
)
def test_register_refusals_exit_2_and_write_nothing(
    repo: Path,
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each bad input is one clear line on stderr; no registry file is created."""
    monkeypatch.chdir(repo)
    status, _, err = run(capsys, "register", "registry.toml", *argv)
    assert status == 2
    assert needle in err and "Traceback" not in err
    assert not (repo / "registry.toml").exists()


def test_register_other_bytes_under_an_existing_id_exits_2(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ids are immutable from the shell too."""
    registry = str(repo / "registry.toml")
    assert run(capsys, "register", registry, "m", "v1", str(repo / "v1.joblib"))[0] == 0
    before = Path(registry).read_bytes()
    status, _, err = run(capsys, "register", registry, "m", "v1", str(repo / "v2.joblib"))
    assert status == 2 and "a version id always names the same bytes" in err
    assert Path(registry).read_bytes() == before


def test_promotion_to_production_needs_another_person_when_approval_is_required(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --by, or the registrant as approver: refused (exit 2); another person: promoted."""
    registry = repo / "registry.toml"
    assert (
        run(capsys, "register", str(registry), "m", "v1", str(repo / "v1.joblib"), "--by", "ada")[0]
        == 0
    )
    registry.write_text(
        registry.read_text().replace("[models.m]\n", "[models.m]\nrequire_approval = true\n", 1)
    )
    status, _, err = run(capsys, "promote", str(registry), "m", "v1", "--to", "production")
    assert status == 2 and "requires an approver for production" in err
    status, _, err = run(
        capsys, "promote", str(registry), "m", "v1", "--to", "production", "--by", "ada"
    )
    assert status == 2 and "registered by ada, who cannot approve it" in err
    assert (
        run(capsys, "promote", str(registry), "m", "v1", "--to", "production", "--by", "grace")[0]
        == 0
    )
    assert load_registry(registry).models["m"].versions["v1"].stage == "production"


def test_show_reports_a_version_this_environment_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A version recorded with another scikit-learn minor: exit 1, both versions named."""
    other = "0.24.2"
    path = tmp_path / "registry.toml"
    path.write_text(
        '[models.m]\ndefault_version = "v1"\n[models.m.versions.v1]\nuri = "v1.joblib"\n'
        f'[models.m.versions.v1.lineage.environment.libraries]\nscikit-learn = "{other}"\n'
    )
    status, out, _ = run(capsys, "show", str(path), "m", "v1")
    assert status == 1
    assert f"refuse: scikit-learn {other} at registration, {sklearn.__version__} here" in out
    status, _, err = run(capsys, "show", str(path), "m", "v9")
    assert status == 2 and "has no version 'v9'" in err


# -- the cache --------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as running:
        yield running


@pytest.fixture
def cached(
    tmp_path: Path, server: ArtifactServer, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """Three remote versions prefetched into a cache: v1 archived long ago, v2 archived, v3 live;
    plus an entry no registry knows."""
    blobs = {v: f"{v} bytes".encode() * 100 for v in ("v1", "v2", "v3")}
    versions = {
        v: {"uri": server.add(f"/{v}", data), "sha256": hashlib.sha256(data).hexdigest()}
        for v, data in blobs.items()
    }

    def archived(day: int) -> dict[str, Any]:
        moved = {"stage": "archived", "previous": "production", "by": "ops"}
        return {"stage": "archived", "history": [{**moved, "at": f"2024-05-0{day}T00:00:00Z"}]}

    versions["v1"].update(archived(1))
    versions["v2"].update(archived(2))
    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps({"models": {"m": {"default_version": "v3", "versions": versions}}})
    )
    cache = tmp_path / "cache"
    assert main(["prefetch", str(registry), "--cache-dir", str(cache)]) == 0
    stray = hashlib.sha256(b"stray").hexdigest()
    (cache / "sha256" / stray[:2]).mkdir(parents=True, exist_ok=True)
    (cache / "sha256" / stray[:2] / stray).write_bytes(b"stray")
    capsys.readouterr()
    digests = {v: spec["sha256"] for v, spec in versions.items()}
    return {"registry": str(registry), "cache": str(cache), "digests": digests, "stray": stray}


def entries(cache: str) -> set[str]:
    return {path.name for path in Path(cache, "sha256").glob("*/*")}


def test_cache_ls_lists_entries_with_the_versions_using_them(
    cached: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(
        capsys,
        "cache",
        "ls",
        "--cache-dir",
        cached["cache"],
        "--registry",
        cached["registry"],
        "--json",
    )
    assert status == 0
    listed = {entry["sha256"]: entry["used_by"] for entry in json.loads(out)["entries"]}
    assert listed[cached["stray"]] == []
    assert [(u["version"], u["stage"]) for u in listed[cached["digests"]["v1"]]] == [
        ("v1", "archived")
    ]
    status, out, _ = run(
        capsys, "cache", "ls", "--cache-dir", cached["cache"], "--registry", cached["registry"]
    )
    assert f"{cached['stray'][:16]}" in out and "unused" in out and "m/v3 (candidate)" in out


def test_cache_prune_removes_what_no_registry_uses_and_archived_versions_past_the_policy(
    cached: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Unused entries go; with --keep-archived N only the N latest archived versions stay."""
    base = ["cache", "prune", "--cache-dir", cached["cache"], "--registry", cached["registry"]]
    status, out, _ = run(capsys, *base, "--dry-run")
    assert status == 0 and "would remove 1 entry" in out
    assert len(entries(cached["cache"])) == 4

    assert run(capsys, *base)[0] == 0
    assert entries(cached["cache"]) == set(cached["digests"].values())

    status, out, _ = run(capsys, *base, "--keep-archived", "1", "--json")
    result = json.loads(out)
    assert [r["sha256"] for r in result["removed"]] == [cached["digests"]["v1"]]
    assert entries(cached["cache"]) == {cached["digests"]["v2"], cached["digests"]["v3"]}
    assert run(capsys, *base, "--keep-archived", "0")[0] == 0
    assert entries(cached["cache"]) == {cached["digests"]["v3"]}


def test_cache_prune_older_than_spares_recent_entries(
    cached: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """--older-than 30 removes an unused entry only once it is 31 days old."""
    stray = Path(cached["cache"], "sha256", cached["stray"][:2], cached["stray"])
    base = ["cache", "prune", "--cache-dir", cached["cache"], "--older-than", "30"]
    assert run(capsys, *base, "--registry", cached["registry"])[0] == 0
    assert stray.exists()
    old = time.time() - 31 * 86_400
    os.utime(stray, (old, old))
    assert run(capsys, *base, "--registry", cached["registry"])[0] == 0
    assert not stray.exists()


def test_cache_prune_skips_an_entry_whose_download_lock_is_held(
    cached: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same lock a download takes: held elsewhere, the entry stays and the exit is 1."""
    lock = Path(cached["cache"], "locks", f"{cached['stray']}.lock")
    with filelock.FileLock(str(lock)):
        status, out, _ = run(
            capsys,
            "cache",
            "prune",
            "--cache-dir",
            cached["cache"],
            "--registry",
            cached["registry"],
        )
    assert status == 1 and "in use, skipped" in out
    assert cached["stray"] in entries(cached["cache"])


def test_cache_prune_without_a_criterion_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pruning with neither --registry nor --older-than would empty the cache: refused."""
    status, _, err = run(capsys, "cache", "prune", "--cache-dir", str(tmp_path))
    assert status == 2 and "needs --registry R" in err
