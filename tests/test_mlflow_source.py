"""MLflow's Model Registry as a source of versions, against a real ``mlflow server``.

Models are logged and registered through MLflow's own client, flags come from flagd's provider in
FILE mode, and MLflow "goes down" by closing a relay in front of it (the server keeps serving the
other tests).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from mlflow_fixtures import (
    MlflowServer,
    Relay,
    flag_file,
    mlflow_quietly,
    mlflow_server,
    use_flagd,
    wait_for,
)
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from modelflags import ModelFlags
from modelflags.cli import main
from modelflags.errors import ModelUnavailableError
from modelflags.options import CacheOptions
from modelflags.registry.mlflow import PIN_TAG

__all__ = ["mlflow_server"]  # the session fixture, imported for pytest

pytestmark = pytest.mark.slow

MODEL = "rec"


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.RandomState(3).rand(80, 3)


def classifier(X: np.ndarray, column: int) -> LogisticRegression:
    return LogisticRegression().fit(X, (X[:, column] > 0.5).astype(int))


def write_registry(path: Path, name: str, url: str, **table: Any) -> Path:
    model: dict[str, Any] = {"mlflow": {"name": name, "tracking_uri": url, "refresh_s": 0.2}}
    model["mlflow"].update({k: v for k, v in table.items() if k != "default_version"})
    if "default_version" in table:
        model["default_version"] = table["default_version"]
    path.write_text(tomli_w.dumps({"models": {MODEL: model}}))
    return path


class World:
    """One test's registered model, registry file, flag file and cache."""

    def __init__(self, server: MlflowServer, tmp_path: Path, data: np.ndarray) -> None:
        self.server = server
        self.tmp = tmp_path
        self.X = data
        self.name = server.unique_name("rec")
        self.cache = tmp_path / "cache"
        self.flags_path = tmp_path / "flags.json"
        self.models: dict[str, LogisticRegression] = {}

    def log(self, column: int, *, pin: bool = True, **options: Any) -> str:
        model = classifier(self.X, column)
        version = self.server.log_version(self.name, model, self.X, **options)
        self.models[version] = model
        if pin:
            self.server.pin(self.name, version, cache_dir=self.tmp / "pin-cache")
        return version

    def registry(self, url: str | None = None, **table: Any) -> Path:
        return write_registry(
            self.tmp / "registry.toml", self.name, url or self.server.url, **table
        )

    def flag(self, version: str) -> None:
        flag_file(self.flags_path, MODEL, sorted({*self.models, version, "99"}), version)

    def open(self, registry: Path, **options: Any) -> ModelFlags:
        return ModelFlags(registry, cache=CacheOptions(cache_dir=self.cache), **options)


@pytest.fixture
def world(mlflow_server: MlflowServer, tmp_path: Path, data: np.ndarray) -> Iterator[World]:
    yield World(mlflow_server, tmp_path, data)


def served(flags: ModelFlags, version: str, timeout: float = 10.0) -> Any:
    """Wait until the flag's choice ``version`` is what serves; the handle."""
    return wait_for(
        lambda: (h := flags.get_model(MODEL, "user-1")).version == version and h,
        timeout,
        f"version {version} to serve",
    )


def test_serves_the_aliased_default_with_its_mlflow_lineage(world: World) -> None:
    """``default_version = "@champion"`` resolves at start; run params, metrics, git commit and
    signature are the version's metadata; a flag change serves another MLflow version."""
    first = world.log(0, params={"C": 1.0}, metrics={"auc": 0.91}, git_commit="4e1d0c2abcde")
    second = world.log(1)
    world.server.set_alias(world.name, "champion", first)
    world.flag(first)
    with (
        use_flagd(world.flags_path),
        world.open(world.registry(default_version="@champion")) as flags,
    ):
        assert flags.registry.models[MODEL].default_version == first
        handle = served(flags, first)
        X = world.X[:10]
        assert (handle.predict(X) == world.models[first].predict(X)).all()
        info = handle.metadata["mlflow"]
        assert info["aliases"] == ["champion"] and info["version"] == first
        assert info["run"]["params"] == {"C": "1.0"}
        assert info["run"]["metrics"] == {"auc": 0.91}
        assert info["run"]["tags"]["mlflow.source.git.commit"] == "4e1d0c2abcde"
        assert info["signature"]["inputs"][0]["tensor-spec"]["shape"] == [-1, 3]
        assert info["pinned_by"] == "tag"
        lineage = flags.registry.models[MODEL].versions[first].lineage
        assert lineage is not None and lineage.git is not None
        assert lineage.git.commit == "4e1d0c2abcde" and lineage.metrics == {"auc": 0.91}
        world.flag(second)
        handle = served(flags, second)
        assert (handle.predict(X) == world.models[second].predict(X)).all()
        status = flags.status()[MODEL].extra["mlflow"]
        assert status["last_error"] is None and status["refreshed_at"] is not None
        assert status["aliases"] == {"champion": first}


def test_a_version_registered_after_start_serves_without_a_restart(world: World) -> None:
    """A version logged, registered and pinned in MLflow while serving becomes servable at the
    next refresh; until then the flag naming it is answered by the default."""
    first = world.log(0)
    world.flag(str(int(first) + 1))
    with use_flagd(world.flags_path), world.open(world.registry(default_version=first)) as flags:
        early = flags.get_model(MODEL, "user-1")
        assert early.version == first and early.fell_back
        second = world.log(1)
        wait_for(lambda: second in flags.registry.models[MODEL].versions, 30, "the new version")
        handle = served(flags, second)
        assert (handle.predict(world.X) == world.models[second].predict(world.X)).all()


def test_an_unpinned_version_is_refused_until_it_is_pinned(world: World) -> None:
    """MLflow stores no digest: a version without a pin is never loaded, and serves as soon as
    ``modelflags mlflow pin`` pins it."""
    first = world.log(0)
    second = world.log(1, pin=False)
    world.flag(second)
    with use_flagd(world.flags_path), world.open(world.registry(default_version=first)) as flags:
        handle = flags.get_model(MODEL, "user-1")
        assert handle.version == first and handle.fell_back
        status = flags.status()[MODEL]
        assert status.extra["mlflow"]["unpinned"] == [second]
        (quarantine,) = status.quarantined
        assert quarantine.version == second and "no pinned digest" in quarantine.cause
        assert f"modelflags mlflow pin {world.name} {second}" in quarantine.cause
        # only the default's files were fetched, nothing of the unpinned version
        assert len(list((world.cache / "folders").glob("*/*"))) == 1
        world.server.pin(world.name, second, cache_dir=world.tmp / "pin-cache")
        handle = served(flags, second, timeout=30)
        assert handle.metadata["mlflow"]["pinned_by"] == "tag"


def test_a_tampered_file_in_the_artifact_store_is_refused(world: World) -> None:
    """Files changed after the pin are a digest mismatch: not loaded, the LKG serves."""
    first = world.log(0)
    second = world.log(1)
    target = world.server.files_of(world.name, second) / "model.skops"
    target.write_bytes(target.read_bytes() + b"\0")
    world.flag(second)
    with use_flagd(world.flags_path), world.open(world.registry(default_version=first)) as flags:
        handle = flags.get_model(MODEL, "user-1")
        assert handle.version == first and handle.fell_back
        (quarantine,) = flags.status()[MODEL].quarantined
        assert quarantine.version == second
        assert "folder digest" in quarantine.cause and "pinned digest" in quarantine.cause


def test_mlflow_down_at_start_serves_the_lkg_from_state_dir(world: World) -> None:
    """A restart while MLflow is unreachable serves the versions saved under state_dir and the
    last known good version from the cache; the error is in status() until MLflow is back."""
    first = world.log(0)
    second = world.log(1)
    relay = Relay(("127.0.0.1", int(world.server.url.rsplit(":", 1)[1])))
    state = world.tmp / "state"
    registry = world.registry(relay.url, default_version=first)
    world.flag(second)
    try:
        with use_flagd(world.flags_path):
            with world.open(registry, state_dir=state) as flags:
                served(flags, second).predict(world.X)  # proves itself: the LKG
                assert flags.status()[MODEL].lkg == second
            relay.stop()
            world.flag("99")  # a flag naming nothing known: the LKG answers
            with world.open(registry, state_dir=state) as flags:
                handle = flags.get_model(MODEL, "user-1")
                assert handle.version == second
                assert (handle.predict(world.X) == world.models[second].predict(world.X)).all()
                status = flags.status()[MODEL].extra["mlflow"]
                assert status["from_snapshot"] and status["last_error"]
                assert "did not answer" in status["last_error"]
                relay.start()
                wait_for(
                    lambda: flags.status()[MODEL].extra["mlflow"]["last_error"] is None,
                    30,
                    "the refresh to succeed again",
                )
                assert not flags.status()[MODEL].extra["mlflow"]["from_snapshot"]
    finally:
        relay.stop()


def test_versions_already_known_keep_serving_while_mlflow_is_down(world: World) -> None:
    """Once MLflow stops answering, every known version still serves (even one loaded only
    afterwards, from the artifact store); status() shows the error, which clears when it is
    back."""
    first = world.log(0)
    second = world.log(1)
    relay = Relay(("127.0.0.1", int(world.server.url.rsplit(":", 1)[1])))
    world.flag(first)
    try:
        with (
            use_flagd(world.flags_path),
            world.open(world.registry(relay.url, default_version=first)) as flags,
        ):
            served(flags, first)
            relay.stop()
            wait_for(
                lambda: flags.status()[MODEL].extra["mlflow"]["last_error"],
                30,
                "a refresh to fail",
            )
            world.flag(second)
            handle = served(flags, second)
            assert (handle.predict(world.X) == world.models[second].predict(world.X)).all()
            assert set(flags.registry.models[MODEL].versions) == {first, second}
            relay.start()
            wait_for(
                lambda: flags.status()[MODEL].extra["mlflow"]["last_error"] is None,
                30,
                "the refresh to succeed again",
            )
    finally:
        relay.stop()


def test_a_version_deleted_in_mlflow_stops_serving_but_the_lkg_stays(world: World) -> None:
    """A deleted version leaves the version set (its flag is answered by the LKG), except the
    LKG itself, which stays, marked deleted."""
    first = world.log(0)
    second = world.log(1)
    third = world.log(2)
    world.flag(second)
    with use_flagd(world.flags_path), world.open(world.registry(default_version=first)) as flags:
        served(flags, second).predict(world.X)
        assert flags.status()[MODEL].lkg == second
        world.server.delete_version(world.name, second)
        world.server.delete_version(world.name, third)
        wait_for(lambda: third not in flags.registry.models[MODEL].versions, 30, "the deletion")
        kept = flags.registry.models[MODEL].versions[second]
        assert kept.metadata["mlflow"]["deleted"] is True
        world.flag(third)
        handle = wait_for(
            lambda: (h := flags.get_model(MODEL, "user-1")).requested_version == third and h,
            10,
            "the flag to name the deleted version",
        )
        assert handle.version == second and handle.fell_back


def test_trust_on_first_use_pins_at_the_first_download_and_says_so(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """With trust_on_first_use, an unpinned version is pinned in the pin file when first
    downloaded, with a warning in the log."""
    first = world.log(0, pin=False)
    registry = world.registry(default_version=first, trust_on_first_use=True)
    with (
        caplog.at_level(logging.WARNING, logger="modelflags.sources.mlflow"),
        world.open(registry) as flags,
    ):
        handle = flags.get_model(MODEL, "user-1")
        assert handle.version == first
        assert handle.metadata["mlflow"]["pinned_by"] == "first use"
        handle.predict(world.X)
    pins = (world.tmp / "mlflow-pins.toml").read_text()
    assert world.name in pins
    assert any(
        "trusting" in r.getMessage() and "first use" in r.getMessage() for r in caplog.records
    )


def test_the_pin_file_wins_over_the_mlflow_tag(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong tag does not unpin a version pinned in the local file (logged); a wrong local pin
    refuses the version whatever the tag says."""
    first = world.log(0)
    second = world.log(1)
    right = world.server.pin(world.name, first, cache_dir=world.tmp / "pin-cache")
    with mlflow_quietly():
        world.server.client().set_model_version_tag(world.name, first, PIN_TAG, "0" * 64)
    (world.tmp / "mlflow-pins.toml").write_text(
        f'["{world.name}"]\n{first} = "{right}"\n{second} = "{"1" * 64}"\n'
    )
    world.flag(second)
    with (
        caplog.at_level(logging.WARNING),
        use_flagd(world.flags_path),
        world.open(world.registry(default_version=first)) as flags,
    ):
        handle = flags.get_model(MODEL, "user-1")
        assert handle.version == first and handle.fell_back
        assert handle.metadata["mlflow"]["pinned_by"] == "pin file"
        (quarantine,) = flags.status()[MODEL].quarantined
        assert quarantine.version == second and "1" * 64 in quarantine.cause
    assert any("the pin file wins" in r.getMessage() for r in caplog.records)


def test_a_proxied_artifact_store_is_read_through_mlflows_client(world: World) -> None:
    """Versions whose files live behind the server's mlflow-artifacts proxy are downloaded with
    MLflow's own client, verified the same way."""
    first = world.log(0, experiment=f"proxied-{world.name}")
    with world.open(world.registry(default_version=first)) as flags:
        spec = flags.registry.models[MODEL].versions[first]
        assert spec.location.startswith("mlflow-artifacts:")
        handle = flags.get_model(MODEL, "user-1")
        assert (handle.predict(world.X) == world.models[first].predict(world.X)).all()


def test_a_random_forest_saved_with_skops_loads_with_the_types_its_mlmodel_trusts(
    world: World,
) -> None:
    """MLflow's default skops format with trusted types recorded at logging time loads through
    the package's skops loader."""
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(
        world.X, (world.X[:, 0] > 0.5).astype(int)
    )
    version = world.server.log_version(
        world.name, forest, world.X, trusted_types=["sklearn.tree._tree.Tree"]
    )
    world.server.pin(world.name, version, cache_dir=world.tmp / "pin-cache")
    with world.open(world.registry(default_version=version)) as flags:
        handle = flags.get_model(MODEL, "user-1")
        assert (handle.predict_proba(world.X) == forest.predict_proba(world.X)).all()


def test_a_missing_alias_stops_the_start_with_the_aliases_there_are(world: World) -> None:
    """``default_version = "@champion"`` without such an alias is an error naming the model."""
    first = world.log(0)
    world.server.set_alias(world.name, "staging", first)
    with pytest.raises(ModelUnavailableError, match=r"no alias 'champion' \(aliases: @staging\)"):
        world.open(world.registry(default_version="@champion"))


def test_without_a_default_the_newest_pinned_version_is_the_default(world: World) -> None:
    """No default_version: the highest pinned version id."""
    world.log(0)
    second = world.log(1)
    world.log(2, pin=False)
    with world.open(world.registry()) as flags:
        assert flags.registry.models[MODEL].default_version == second


def test_register_mlflow_pins_and_show_prints_the_mlflow_lineage(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """``modelflags register REGISTRY MODEL VERSION --mlflow`` sets the pin tag;
    ``modelflags show`` lists the versions with their pins and shows a version's run and
    signature."""
    first = world.log(0, pin=False, git_commit="abcdef1234567")
    registry = world.registry(default_version=first)
    argv = ["register", str(registry), MODEL, first, "--mlflow", "--cache-dir", str(world.cache)]
    capsys.readouterr()  # what MLflow printed while logging
    assert main([*argv, "--json"]) == 0
    pinned = json.loads(capsys.readouterr().out)
    with mlflow_quietly():
        tags = world.server.client().get_model_version(world.name, first).tags
    assert tags[PIN_TAG] == pinned["sha256"]
    assert main(argv) == 0
    assert "already pinned to these files" in capsys.readouterr().out
    assert main(["show", str(registry), MODEL]) == 0
    listing = capsys.readouterr().out
    assert pinned["sha256"][:12] in listing
    assert main(["show", str(registry), MODEL, first]) == 0
    shown = capsys.readouterr().out
    assert "abcdef1234567" in shown and "pinned by  tag" in shown
    assert "inputs     tensor float64 [-1, 3]" in shown
    assert main(["show", str(registry), MODEL, first, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["metadata"]["mlflow"]["run"]["tags"]["mlflow.source.git.commit"] == (
        "abcdef1234567"
    )


def test_a_folder_hash_matches_the_pin(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """``modelflags hash DIR`` prints the folder digest a pin holds."""
    first = world.log(0, pin=False)
    digest = world.server.pin(world.name, first, cache_dir=world.cache)
    capsys.readouterr()
    assert main(["hash", str(world.server.files_of(world.name, first)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"][0]["sha256"] == digest


def test_a_local_artifact_root_is_served_without_importing_mlflow(world: World) -> None:
    """With MLflow's files on this machine, serving reads the REST API and the files directly:
    the ``mlflow`` package is never imported (it is needed only for other artifact stores)."""
    first = world.log(0)
    registry = world.registry(default_version=first)
    code = (
        "import sys; import numpy as np; from modelflags import ModelFlags; "
        "from modelflags.options import CacheOptions; "
        f"cache = CacheOptions(cache_dir={str(world.cache)!r}); "
        f"flags = ModelFlags({str(registry)!r}, cache=cache); "
        "print(flags.get_model('rec').predict(np.zeros((1, 3))).tolist()); flags.close(); "
        "print('mlflow' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    predicted, imported = result.stdout.strip().splitlines()[-2:]
    assert predicted == str(world.models[first].predict(np.zeros((1, 3))).tolist())
    assert imported == "False"


def test_mlflows_own_load_model_writing_into_the_folder_does_not_unpin_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mlflow.sklearn.load_model("models:/...")`` writes ``registered_model_meta`` into a
    local artifact folder; that bookkeeping file is not part of the pinned folder."""
    first = world.log(0)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    with mlflow_quietly() as mlflow:
        mlflow.set_registry_uri(world.server.url)
        mlflow.sklearn.load_model(f"models:/{world.name}/{first}")
    assert (world.server.files_of(world.name, first) / "registered_model_meta").is_file()
    with world.open(world.registry(default_version=first)) as flags:
        handle = flags.get_model(MODEL, "user-1")
        assert (handle.predict(world.X) == world.models[first].predict(world.X)).all()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_refreshes_the_versions_on_its_own_thread(world: World) -> None:
    """After ``os.fork()`` the refresh thread runs again in the child, with its own connections."""
    from test_fork import run_in_child

    first = world.log(0)
    with world.open(world.registry(default_version=first)) as flags:
        flags.get_model(MODEL, "user-1")

        def checks() -> None:
            def refreshed_at() -> float:
                return float(flags.status()[MODEL].extra["mlflow"]["refreshed_at"])

            before = refreshed_at()
            wait_for(lambda: refreshed_at() > before, 30, "a refresh in the child")
            assert any(t.name == "modelflags-versions" for t in threading.enumerate())
            flags.get_model(MODEL, "user-1").predict(world.X)

        run_in_child(checks, world.tmp / "child-report.txt")
