"""Serving versions whose artifacts live on an HTTP server: cached once, failures fall back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import joblib
import pytest

from modelflags import ModelFlags, RegistryError

from models import Constant
from support import sha256_of
from support.artifact_server import ArtifactServer, status


def remote_registry(tmp_path: Path, artifact_server: ArtifactServer) -> dict[str, object]:
    local = tmp_path / "v1.joblib"
    joblib.dump(Constant(1), local)
    remote = tmp_path / "served" / "v2.joblib"
    remote.parent.mkdir()
    joblib.dump(Constant(2), remote)
    url = artifact_server.add("/models/v2.joblib", remote.read_bytes())
    return {
        "models": {
            "m": {
                "default_version": "v1",
                "versions": {
                    "v1": {"uri": str(local), "sha256": sha256_of(local)},
                    "v2": {"uri": url, "sha256": sha256_of(remote)},
                },
            }
        }
    }


def test_remote_version_is_downloaded_once_and_shared_through_the_cache_folder(
    tmp_path: Path, artifact_server: ArtifactServer, set_flags: Callable[..., None]
) -> None:
    """Two processes' worth of ModelFlags sharing a cache folder download the artifact once."""
    registry = remote_registry(tmp_path, artifact_server)
    set_flags(m="v2")
    for _ in range(2):
        with ModelFlags(registry, cache_dir=tmp_path / "cache") as flags:
            model = flags.get_model("m", "u1")
            assert (model.version, model.predict([[0]]).tolist()) == ("v2", [2])
    assert artifact_server.count("/models/v2.joblib") == 1


def test_failing_fetch_serves_the_lkg_and_quarantines_the_version(
    tmp_path: Path, artifact_server: ArtifactServer, set_flags: Callable[..., None]
) -> None:
    """HTTP 500 on every attempt is a load failure: the LKG answers and v2 is quarantined."""
    registry = remote_registry(tmp_path, artifact_server)
    artifact_server.fail("/models/v2.joblib", *[status(500)] * 10)
    set_flags(m="v2")
    from modelflags.artifacts.remote import RemoteFetcher, RetryPolicy
    from modelflags.artifacts.store import ArtifactStore

    fetcher = RemoteFetcher(
        cache_dir=tmp_path / "cache",
        retry=RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0),
        sleep=lambda seconds: None,
    )
    with ModelFlags(registry, artifacts=ArtifactStore(remote=fetcher)) as flags:
        model = flags.get_model("m", "u1")
        assert (model.version, model.requested_version, model.fell_back) == ("v1", "v2", True)
        (quarantine,) = flags.status()["m"].quarantined
        assert quarantine.version == "v2" and "500" in quarantine.cause
    assert artifact_server.count("/models/v2.joblib") == 2


def test_remote_uri_without_digest_is_rejected_when_the_registry_loads() -> None:
    """A remote artifact must be pinned by its sha256: the registry names model and version."""
    data = {
        "models": {
            "m": {"default_version": "v1", "versions": {"v1": {"uri": "https://host/a.joblib"}}}
        }
    }
    with pytest.raises(RegistryError, match=r"model 'm', field 'versions\.v1'.*needs a sha256"):
        ModelFlags(data)


def test_artifacts_and_cache_options_exclude_each_other(tmp_path: Path) -> None:
    """artifacts= is a complete store; cache_dir= configures the default one."""
    from modelflags.artifacts.store import ArtifactStore

    data = {"models": {"m": {"default_version": "v1", "versions": {"v1": {"uri": "/x.joblib"}}}}}
    with pytest.raises(ValueError, match="not both"):
        ModelFlags(data, artifacts=ArtifactStore(), cache_dir=tmp_path)
