"""Loading: lazy, verified before deserializing, with pluggable loaders, once per version."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelflags import DeserializationError, DigestMismatchError, ModelFlags, RegistryError
from modelflags.artifacts.store import ArtifactStore
from modelflags.registry import Registry

from models import Constant
from support import Workspace, wait_until

MARKER = Path("/nonexistent")


class WritesOnUnpickle:
    """Unpickling this object creates a file: proof that code from the pickle ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.target,))


def test_versions_load_lazily_on_first_use(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Nothing loads at construction; each version loads when first served."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    loads: list[str] = []
    set_flags(m="v2")
    with ModelFlags(workspace.write(), listeners=[lambda e: loads.append(repr(e))]) as flags:
        flags.flush(5)
        assert loads == []
        assert flags.status()["m"].loaded == {}
        flags.get_model("m")
        flags.get_model("m")
        flags.flush(5)
        assert [e for e in loads if e.startswith("VersionLoaded(")] == [
            e for e in loads if "version='v2'" in e and e.startswith("VersionLoaded(")
        ]
        assert len([e for e in loads if e.startswith("VersionLoaded(")]) == 1
        assert list(flags.status()["m"].loaded) == ["v2"]


def test_digest_mismatch_is_never_unpickled(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """A file whose sha256 differs from the registry is rejected before any byte is unpickled."""
    workspace.add("m", "v1", Constant(1))
    proof = tmp_path / "code-ran"
    path = workspace.add("m", "v2", raw=pickle.dumps(WritesOnUnpickle(proof)), suffix=".pkl")
    # Register the digest of other bytes: the file on disk is not what was registered.
    workspace.models["m"]["versions"]["v2"]["sha256"] = "0" * 64
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        model = flags.get_model("m")
        assert (model.version, model.fell_back) == ("v1", True)
        assert not proof.exists()
        cause = flags.status()["m"].quarantined[0].cause
        assert "sha256" in cause and str(path) in cause
    # The same bytes with the right digest do run the pickle: the test above could fail.
    workspace.add("m", "v2", raw=pickle.dumps(WritesOnUnpickle(proof)), suffix=".pkl")
    with ModelFlags(workspace.write()) as flags:
        flags.get_model("m")
        assert proof.exists()


def test_artifact_store_raises_typed_digest_error(tmp_path: Path) -> None:
    """The store's error names model, version, file and both digests."""
    artifact = tmp_path / "a.joblib"
    artifact.write_bytes(b"abc")
    registry = Registry.from_mapping(
        {
            "models": {
                "m": {
                    "default_version": "v1",
                    "versions": {"v1": {"uri": str(artifact), "sha256": "1" * 64}},
                }
            }
        }
    )
    with pytest.raises(DigestMismatchError) as caught:
        ArtifactStore().fetch("m", "v1", registry.models["m"].versions["v1"])
    error = caught.value
    assert (error.model, error.version, error.expected) == ("m", "v1", "1" * 64)
    assert error.actual in str(error) and str(artifact) in str(error)


def test_every_fetch_hashes_the_file_again(tmp_path: Path) -> None:
    """Nothing is remembered as verified: a rewritten file is hashed (and rejected) again."""
    import hashlib

    artifact = tmp_path / "a.joblib"
    artifact.write_bytes(b"good bytes")
    digest = hashlib.sha256(b"good bytes").hexdigest()
    registry = Registry.from_mapping(
        {
            "models": {
                "m": {
                    "default_version": "v1",
                    "versions": {"v1": {"uri": str(artifact), "sha256": digest}},
                }
            }
        }
    )
    spec = registry.models["m"].versions["v1"]
    store = ArtifactStore()
    assert store.fetch("m", "v1", spec) == artifact
    assert store.fetch("m", "v1", spec) == artifact
    artifact.write_bytes(b"evil bytes")
    with pytest.raises(DigestMismatchError):
        store.fetch("m", "v1", spec)


def test_loader_is_chosen_by_suffix_or_by_name(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """.pkl loads with pickle, .joblib with joblib, and ``loader =`` picks a registered loader."""
    workspace.add("m", "v1", raw=pickle.dumps(Constant(1)), suffix=".pkl")
    workspace.add("m", "v2", raw=b"label=7", suffix=".txt", loader="text")

    def text_loader(path: Path) -> Constant:
        return Constant(int(path.read_text().split("=")[1]))

    set_flags(m="v2")
    with ModelFlags(workspace.write(), loaders={"text": text_loader}) as flags:
        assert flags.get_model("m").model.label == 7
        set_flags(m="v1")
        assert flags.get_model("m").model.label == 1


def test_unknown_loader_name_fails_the_version_not_the_call(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """A version naming an unregistered loader is a load failure: the LKG serves."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2), loader="onnx")
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        model = flags.get_model("m")
        assert (model.version, model.requested_version) == ("v1", "v2")
        assert "unknown loader 'onnx'" in flags.status()["m"].quarantined[0].cause


def test_loader_exception_becomes_deserialization_error(workspace: Workspace) -> None:
    """A loader's own exception is wrapped with model, version and loader named."""
    workspace.add("m", "v1", raw=b"x", suffix=".bin", loader="bad")

    def bad(path: Path) -> object:
        raise ValueError("unsupported format")

    from modelflags.artifacts.loaders import LoaderRegistry

    registry = Registry.from_mapping(workspace.data(), base_dir=workspace.root)
    spec = registry.models["m"].versions["v1"]
    expected = r"loader 'bad' failed .*unsupported format"
    with pytest.raises(DeserializationError, match=expected) as e:
        LoaderRegistry({"bad": bad}).load("m", "v1", spec, Path(spec.location))
    assert (e.value.model, e.value.version, e.value.loader) == ("m", "v1", "bad")
    assert isinstance(e.value.__cause__, ValueError)
    with pytest.raises(RegistryError, match="unknown loader"):
        LoaderRegistry().name_for("m", "v1", spec)


@pytest.mark.slow
def test_sixteen_threads_on_a_cold_version_deserialize_once(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Single flight: 16 racing threads cause exactly one deserialization, and all get it."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"label=2", suffix=".txt", loader="slow")
    calls: list[int] = []
    calls_lock = threading.Lock()
    gate = threading.Barrier(16)

    def slow(path: Path) -> Constant:
        with calls_lock:
            calls.append(1)
        # Every other thread joins this load before it ends (a synchronisation point, not a
        # pause): the cache counts the threads waiting on the load in flight.
        cache = flags._policy.keeper.cache
        wait_until(lambda: cache.joiners(("m", "v2")) == 15, 5.0, "15 threads joining the load")
        return Constant(2)

    set_flags(m="v2")
    results: list[object] = []
    errors: list[BaseException] = []
    with ModelFlags(workspace.write(), loaders={"slow": slow}) as flags:

        def worker() -> None:
            gate.wait()
            try:
                results.append(flags.get_model("m").model)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert errors == []
    assert len(calls) == 1
    assert len(results) == 16 and len({id(r) for r in results}) == 1


def test_no_lock_is_held_while_a_version_loads(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """While one version loads slowly, another (cached) version keeps serving at once."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"", suffix=".txt", loader="slow")
    started = threading.Event()
    release = threading.Event()

    def slow(path: Path) -> Constant:
        started.set()
        release.wait(10)
        return Constant(2)

    set_flags(m="v2")
    with ModelFlags(workspace.write(), loaders={"slow": slow}) as flags:
        from openfeature.evaluation_context import EvaluationContext

        loader = threading.Thread(target=flags.get_model, args=("m",))
        loader.start()
        assert started.wait(5)
        try:
            # The LKG is still served to others without waiting for the slow load.
            began = time.perf_counter()
            set_flags(m="v1")
            model = flags.get_model("m", EvaluationContext("someone"))
            assert model.version == "v1"
            assert model.predict([[0]]).tolist() == [1]
            assert time.perf_counter() - began < 2
        finally:
            release.set()
            loader.join(10)


def test_one_call_loads_verified_bytes_and_says_what_they_were(tmp_path: Path) -> None:
    """ArtifactStore.load returns the model, the artifact's size and the digest it matched; an
    unpinned local file is loaded unverified and says so with a None digest."""
    import hashlib

    import joblib

    from modelflags.artifacts import LoadedArtifact
    from modelflags.artifacts.loaders import LoaderRegistry

    pinned, unpinned = tmp_path / "a.joblib", tmp_path / "b.joblib"
    joblib.dump(Constant(4), pinned, compress=3)  # compressed: read through a forward stream
    joblib.dump(Constant(5), unpinned)
    digest = hashlib.sha256(pinned.read_bytes()).hexdigest()
    registry = Registry.from_mapping(
        {
            "models": {
                "m": {
                    "default_version": "v1",
                    "versions": {
                        "v1": {"uri": str(pinned), "sha256": digest},
                        "v2": {"uri": str(unpinned)},
                    },
                }
            }
        }
    )
    store, loaders = ArtifactStore(), LoaderRegistry()
    first = store.load("m", "v1", registry.models["m"].versions["v1"], loaders)
    second = store.load("m", "v2", registry.models["m"].versions["v2"], loaders)
    assert isinstance(first, LoadedArtifact)
    assert (first.value.label, first.nbytes, first.sha256) == (4, pinned.stat().st_size, digest)
    assert (second.value.label, second.nbytes, second.sha256) == (
        5,
        unpinned.stat().st_size,
        None,
    )


def test_a_consumed_artifact_cannot_be_read_again() -> None:
    """consume() hands the bytes over once; later reads say so instead of returning nothing."""
    from modelflags.artifacts import VerifiedArtifact

    artifact = VerifiedArtifact.from_bytes(b"x" * 3_000_000, model="m", version="v1")
    stream = artifact.open()
    stream.seek(2_999_999)
    assert stream.read() == b"x" and artifact.size == 3_000_000
    assert artifact.consume().read() == b"x" * 3_000_000
    with pytest.raises(ValueError, match="consumed by an earlier reader"):
        artifact.read_bytes()
