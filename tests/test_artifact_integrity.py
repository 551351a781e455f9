"""Only verified bytes are deserialized, the cache trusts nothing it did not check, and every
download is bounded: hostile files, racing swaps, planted cache entries, lying sizes, slow servers.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelflags import ModelFlags
from modelflags.artifacts.loaders import LoaderRegistry
from modelflags.artifacts.remote import RemoteFetcher, RetryPolicy
from modelflags.artifacts.store import ArtifactStore
from modelflags.errors import (
    ArtifactError,
    ArtifactTooLargeError,
    DigestMismatchError,
    FetchError,
)
from modelflags.registry import Registry, VersionSpec

from models import Constant
from support import Workspace
from support.artifact_server import ArtifactServer, stall, trickle

MiB = 1 << 20


class WritesOnUnpickle:
    """Unpickling this object creates a file: proof that code from the pickle ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.target,))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def twins(proof: Path) -> tuple[bytes, bytes]:
    """A good pickle (Constant(2)) and an evil one that touches ``proof``, of the same size.

    pickle stops at its STOP opcode, so trailing padding is ignored by the unpickler.
    """
    good = pickle.dumps(Constant(2))
    evil = pickle.dumps(WritesOnUnpickle(proof))
    size = max(len(good), len(evil)) + 16
    return good + b"\0" * (size - len(good)), evil + b"\0" * (size - len(evil))


def spec_of(uri: str, data: bytes, **fields: Any) -> VersionSpec:
    registry = Registry.from_mapping(
        {
            "models": {
                "m": {
                    "default_version": "v2",
                    "versions": {"v2": {"uri": uri, "sha256": sha(data), **fields}},
                }
            }
        }
    )
    return registry.models["m"].versions["v2"]


def fetch_then_load(store: ArtifactStore, loaders: LoaderRegistry, spec: VersionSpec) -> Any:
    """The two calls of earlier releases: a checked path, then the loader registry on it."""
    return loaders.load("m", "v2", spec, store.fetch("m", "v2", spec))


def load_in_one_call(store: ArtifactStore, loaders: LoaderRegistry, spec: VersionSpec) -> Any:
    """The load contract: one call, verified bytes in, model out."""
    return store.load("m", "v2", spec, loaders).value


CALLS = [
    pytest.param(fetch_then_load, id="fetch-then-load"),
    pytest.param(load_in_one_call, id="load"),
]


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as running:
        yield running


# -- what is deserialized is what was hashed ------------------------------------------------


def test_a_file_swapped_after_hashing_is_not_what_a_path_loader_reads(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """A path loader that finds the registered file replaced (an os.replace racing the load)
    still reads the verified bytes: it is given a private copy, never the registered file."""
    proof = tmp_path / "code-ran"
    good, evil = twins(proof)
    workspace.add("m", "v1", Constant(1))
    path = workspace.add("m", "v2", raw=good, suffix=".pkl", loader="racing")
    seen: list[Path] = []

    def racing(given: Path) -> object:
        swap = tmp_path / "swap.pkl"
        swap.write_bytes(evil)
        os.replace(swap, path)  # after the sha256 check, before the loader opens its file
        seen.append(given)
        with open(given, "rb") as stream:
            return pickle.load(stream)

    set_flags(m="v2")
    with ModelFlags(workspace.write(), loaders={"racing": racing}) as flags:
        model = flags.get_model("m")
        assert (model.version, model.fell_back) == ("v2", False)
        assert model.model.label == 2
    assert not proof.exists()
    assert seen[0] != path and not seen[0].exists()  # a private copy, removed after the call


def test_a_path_loader_gets_a_private_copy_only_its_user_can_reach(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The copy lives in a fresh folder of mode 0700, keeps the URI's suffix, and is removed."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"label=2", suffix=".txt", loader="text")
    seen: list[tuple[Path, int, bytes]] = []

    def text(given: Path) -> Constant:
        seen.append((given, stat.S_IMODE(given.parent.stat().st_mode), given.read_bytes()))
        return Constant(int(given.read_text().split("=")[1]))

    set_flags(m="v2")
    with ModelFlags(workspace.write(), loaders={"text": text}) as flags:
        assert flags.get_model("m").model.label == 2
    (given, mode, data) = seen[0]
    assert (given.suffix, mode, data) == (".txt", 0o700, b"label=2")
    assert not given.parent.exists()


@pytest.mark.slow
@pytest.mark.parametrize("call", CALLS)
def test_a_file_flipping_between_good_and_evil_bytes_never_runs_the_evil_pickle(
    tmp_path: Path, call: Callable[..., Any]
) -> None:
    """A thread replaces the artifact with an evil pickle and back, as fast as it can, while
    loads run with the built-in pickle loader: every load that succeeds returns the good model,
    the others are digest mismatches, and the evil pickle never runs."""
    proof = tmp_path / "code-ran"
    good, evil = twins(proof)
    path = tmp_path / "model.pkl"
    path.write_bytes(good)
    spec = spec_of(str(path), good)
    store, loaders = ArtifactStore(), LoaderRegistry()
    stop = threading.Event()

    def flip() -> None:
        for n in range(1_000_000):
            if stop.is_set():
                return
            swap = tmp_path / f"swap-{n % 2}"
            swap.write_bytes(evil if n % 2 == 0 else good)
            os.replace(swap, path)

    flipper = threading.Thread(target=flip)
    flipper.start()
    loaded = refused = 0
    try:
        ends = time.monotonic() + 10.0
        while time.monotonic() < ends and not proof.exists() and (loaded < 1000 or refused < 5):
            try:
                model = call(store, loaders, spec)
            except DigestMismatchError:
                refused += 1
                continue
            assert isinstance(model, Constant) and model.label == 2
            loaded += 1
    finally:
        stop.set()
        flipper.join(10)
    assert not proof.exists()
    assert loaded > 0 and refused > 0  # both sides of the race were seen


@pytest.mark.parametrize("call", CALLS)
def test_a_file_rewritten_in_place_with_its_mtime_restored_is_hashed_again(
    tmp_path: Path, call: Callable[..., Any]
) -> None:
    """Same inode, same size, same modification time after an in-place rewrite: the reload
    hashes the bytes again and refuses them."""
    proof = tmp_path / "code-ran"
    good, evil = twins(proof)
    path = tmp_path / "model.pkl"
    path.write_bytes(good)
    spec = spec_of(str(path), good)
    store, loaders = ArtifactStore(), LoaderRegistry()
    assert call(store, loaders, spec).label == 2
    before = path.stat()
    with open(path, "r+b") as stream:
        stream.write(evil)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    with pytest.raises(DigestMismatchError):
        call(store, loaders, spec)
    assert not proof.exists()


def test_an_evicted_version_rewritten_in_place_falls_back_when_it_reloads(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """Served, evicted, rewritten in place with its mtime restored, asked for again: the LKG
    serves and the evil pickle never runs."""
    proof = tmp_path / "code-ran"
    good, evil = twins(proof)
    workspace.add("m", "v1", Constant(1))
    path = workspace.add("m", "v2", raw=good, suffix=".pkl")
    workspace.add("m", "v3", Constant(3))
    set_flags(m="v2")
    with ModelFlags(workspace.write(), max_models=1) as flags:
        assert flags.get_model("m").model.label == 2
        set_flags(m="v3")
        assert flags.get_model("m").model.label == 3  # v2 is evicted
        assert "v2" not in flags.status()["m"].loaded
        before = path.stat()
        with open(path, "r+b") as stream:
            stream.write(evil)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        set_flags(m="v2")
        model = flags.get_model("m")
        assert (model.version, model.requested_version) == ("v1", "v2")
    assert not proof.exists()


@pytest.mark.slow
def test_a_cache_entry_rewritten_after_download_is_hashed_again_and_downloaded_again(
    tmp_path: Path, server: ArtifactServer, set_flags: Callable[..., None]
) -> None:
    """A file in the cache changed after its download (same size, mtime restored) is detected
    by the next load, removed, and downloaded again; the evil pickle never runs."""
    proof = tmp_path / "code-ran"
    good, evil = twins(proof)
    local = tmp_path / "v1.pkl"
    local.write_bytes(pickle.dumps(Constant(1)))
    url = server.add("/v2.pkl", good)
    registry = {
        "models": {
            "m": {
                "default_version": "v1",
                "versions": {
                    "v1": {"uri": str(local), "sha256": sha(local.read_bytes())},
                    "v2": {"uri": url, "sha256": sha(good)},
                },
            }
        }
    }
    cache = tmp_path / "cache"
    set_flags(m="v2")
    with ModelFlags(registry, cache_dir=cache) as flags:
        assert flags.get_model("m").model.label == 2
    entry = RemoteFetcher(cache_dir=cache).cache_path(sha(good))
    before = entry.stat()
    with open(entry, "r+b") as stream:
        stream.write(evil)
    os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns))
    with ModelFlags(registry, cache_dir=cache) as flags:  # a restart: nothing in memory
        model = flags.get_model("m")
        assert (model.version, model.model.label) == ("v2", 2)
    assert not proof.exists()
    assert entry.read_bytes() == good
    assert server.count("/v2.pkl") == 2


def test_a_verified_loader_sees_exactly_the_bytes_that_were_hashed(tmp_path: Path) -> None:
    """A loader of verified bytes records what it reads: the hashed bytes, whatever the file
    became meanwhile."""
    from modelflags.artifacts import VerifiedArtifact, verified_loader

    good = random.Random(1).randbytes(3 * MiB + 5)
    path = tmp_path / "model.bin"
    path.write_bytes(good)
    seen: list[bytes] = []

    @verified_loader
    def recording(artifact: VerifiedArtifact) -> str:
        path.write_bytes(b"changed")
        seen.append(artifact.read_bytes())
        seen.append(artifact.open().read())
        seen.append(artifact.consume().read())
        return "ok"

    spec = spec_of(str(path), good, loader="recording")
    loaded = ArtifactStore().load("m", "v2", spec, LoaderRegistry({"recording": recording}))
    assert (loaded.value, loaded.nbytes, loaded.sha256) == ("ok", len(good), sha(good))
    assert seen == [good, good, good]


# -- declared sizes --------------------------------------------------------------------------


def size_mismatch(error: ArtifactError) -> tuple[int, int]:
    """The expected and actual sizes of a SizeMismatchError (and proof that it is one)."""
    from modelflags.artifacts import SizeMismatchError

    assert isinstance(error, SizeMismatchError)
    return error.expected, error.actual


def test_a_local_file_larger_or_smaller_than_its_declared_size_is_refused(
    tmp_path: Path,
) -> None:
    """The registry's size is checked for local files too, before their digest."""
    data = b"x" * 1000
    path = tmp_path / "a.pkl"
    path.write_bytes(data)
    with pytest.raises(ArtifactTooLargeError, match="more than the 999") as big:
        ArtifactStore().fetch("m", "v2", spec_of(str(path), data, size=999))
    with pytest.raises(ArtifactError, match="fewer than the 1001") as small:
        ArtifactStore().fetch("m", "v2", spec_of(str(path), data, size=1001))
    assert size_mismatch(small.value) == (1001, 1000)
    for error in (big.value, small.value):
        assert (error.model, error.version) == ("m", "v2") and str(path) in str(error)


def test_a_remote_body_over_its_declared_size_is_refused_from_its_length(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """A Content-Length over the declared size stops the download before any byte is kept."""
    data = random.Random(2).randbytes(5000)
    url = server.add("/a.pkl", data)
    store = ArtifactStore(cache_dir=tmp_path / "cache")
    with pytest.raises(ArtifactTooLargeError, match="5000 bytes, more than the 4000"):
        store.fetch("m", "v2", spec_of(url, data, size=4000))
    assert not list((tmp_path / "cache" / "partial").iterdir())


def test_a_remote_body_without_length_is_cut_off_at_its_declared_size(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """Without a Content-Length the download stops as soon as it passes the declared size."""
    data = random.Random(3).randbytes(3 * MiB)
    url = server.add("/a.pkl", data, content_length=False)
    store = ArtifactStore(cache_dir=tmp_path / "cache")
    with pytest.raises(ArtifactTooLargeError, match=f"more than the {MiB} bytes"):
        store.fetch("m", "v2", spec_of(url, data, size=MiB))
    assert not list((tmp_path / "cache" / "partial").iterdir())


def test_a_remote_body_shorter_than_its_declared_size_is_a_size_mismatch(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """Fewer bytes than declared, announced or not, is a SizeMismatchError naming both."""
    data = random.Random(4).randbytes(1000)
    store = ArtifactStore(cache_dir=tmp_path / "cache")
    for path, length in (("/sized.pkl", True), ("/unsized.pkl", False)):
        url = server.add(path, data, content_length=length)
        with pytest.raises(ArtifactError, match="1000 bytes, fewer than the 1200") as info:
            store.fetch("m", "v2", spec_of(url, data, size=1200))
        assert size_mismatch(info.value) == (1200, 1000)
        assert info.value.uri == url


# -- deadlines -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_trickling_server_cannot_hold_a_fetch_past_its_deadline(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """One byte every half second: the fetch ends at its one-second deadline, not after the
    ten seconds the body would take, and keeps what arrived for the next try."""
    data = random.Random(5).randbytes(20)
    url = server.add("/slow.pkl", data)
    server.fail("/slow.pkl", trickle(0.5))
    fetcher = RemoteFetcher(
        cache_dir=tmp_path / "cache",
        retry=RetryPolicy(max_total=1.0),
        timeout=httpx.Timeout(5.0, connect=1.0),
    )
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"deadline of a fetch \(1 s\)") as info:
        fetcher.fetch(model="m", version="v2", uri=url, sha256=sha(data))
    took = time.monotonic() - started
    fetcher.close()
    assert took < 5.0, took  # the body alone takes 10 s
    assert (info.value.model, info.value.version, info.value.uri) == ("m", "v2", url)
    kept = tmp_path / "cache" / "partial" / f"{sha(data)}.partial"
    assert 1 <= kept.stat().st_size < len(data)


@pytest.mark.slow
def test_a_server_that_stalls_before_its_headers_is_abandoned_at_the_deadline(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """The read timeout (10 s) is capped at the time left: a 2 s stall outlasts a 0.5 s
    deadline, and the fetch gives up without retrying past it."""
    data = random.Random(6).randbytes(20)
    url = server.add("/stalled.pkl", data)
    server.fail("/stalled.pkl", stall(2.0))
    fetcher = RemoteFetcher(
        cache_dir=tmp_path / "cache",
        retry=RetryPolicy(max_total=0.5),
        timeout=httpx.Timeout(10.0, connect=1.0),
    )
    with pytest.raises(FetchError, match="deadline of a fetch"):  # not the answer after 2 s
        fetcher.fetch(model="m", version="v2", uri=url, sha256=sha(data))
    fetcher.close()
    assert server.count("/stalled.pkl") == 1


# -- the cache trusts only what it made ------------------------------------------------------


def unsafe_cache_path(error: ArtifactError) -> str:
    """The folder or entry an UnsafeCacheError names (and proof that it is one)."""
    from modelflags.artifacts import UnsafeCacheError

    assert isinstance(error, UnsafeCacheError)
    return error.path


def cached_fetch(cache: Path, url: str, data: bytes) -> Path:
    fetcher = RemoteFetcher(cache_dir=cache)
    try:
        return fetcher.fetch(model="m", version="v2", uri=url, sha256=sha(data))
    finally:
        fetcher.close()


def test_a_new_cache_folder_is_private(tmp_path: Path, server: ArtifactServer) -> None:
    """The cache folder and the folders in it are created with mode 0700."""
    data = b"some bytes"
    cache = tmp_path / "cache"
    path = cached_fetch(cache, server.add("/a", data), data)
    for folder in (cache, cache / "sha256", path.parent, cache / "partial", cache / "locks"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.slow
@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_cache_folder_others_can_write_to_is_refused(
    tmp_path: Path, server: ArtifactServer, mode: int
) -> None:
    """A group- or world-writable cache folder is refused with an error that says how to fix
    it, before any request."""
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    data = b"some bytes"
    url = server.add("/a", data)
    with pytest.raises(ArtifactError, match=r"can be written by its group or by others") as e:
        cached_fetch(cache, url, data)
    assert f"{mode:04o}" in str(e.value) and f"chmod go-w {cache}" in str(e.value)
    assert unsafe_cache_path(e.value) == str(cache)
    assert (e.value.model, e.value.version, e.value.uri) == ("m", "v2", url)
    assert server.count("/a") == 0


def test_a_cache_folder_of_another_user_is_refused(tmp_path: Path, server: ArtifactServer) -> None:
    """A cache folder owned by someone else is refused (its owner could swap its files)."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    other = os.geteuid() + 4242
    os.chown(cache, other, -1)
    data = b"some bytes"
    with pytest.raises(ArtifactError, match=f"belongs to user id {other}") as e:
        cached_fetch(cache, server.add("/a", data), data)
    assert unsafe_cache_path(e.value) == str(cache)


def test_a_link_in_place_of_a_cache_subfolder_is_refused(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """The cache never walks through a link inside itself."""
    cache, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    cache.mkdir()
    elsewhere.mkdir()
    (cache / "sha256").symlink_to(elsewhere)
    data = b"some bytes"
    with pytest.raises(ArtifactError, match="is a symbolic link, not a folder") as e:
        cached_fetch(cache, server.add("/a", data), data)
    assert unsafe_cache_path(e.value) == str(cache / "sha256")
    assert list(elsewhere.iterdir()) == []


def test_a_link_planted_as_the_partial_file_is_removed_not_followed(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """Bytes of a download are never written through a link: the link's target is untouched
    and the artifact is downloaded from its first byte."""
    data = random.Random(7).randbytes(10_000)
    url = server.add("/a", data)
    cache = tmp_path / "cache"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    partial = cache / "partial" / f"{sha(data)}.partial"
    partial.parent.mkdir(parents=True)
    partial.symlink_to(victim)
    assert cached_fetch(cache, url, data).read_bytes() == data
    assert victim.read_bytes() == b"precious"
    assert [r.range for r in server.requests("/a")] == [None]
    assert not partial.is_symlink()


@pytest.mark.slow
@pytest.mark.parametrize("call", CALLS)
def test_a_link_planted_as_a_cache_entry_is_removed_not_followed(
    tmp_path: Path, server: ArtifactServer, call: Callable[..., Any]
) -> None:
    """An entry that is a link to an evil pickle is never read: it is removed and the artifact
    downloaded."""
    proof = tmp_path / "code-ran"
    good, evil = twins(proof)
    target = tmp_path / "evil.pkl"
    target.write_bytes(evil)
    url = server.add("/v2.pkl", good)
    cache = tmp_path / "cache"
    entry = RemoteFetcher(cache_dir=cache).cache_path(sha(good))
    entry.parent.mkdir(parents=True)
    entry.symlink_to(target)
    store = ArtifactStore(cache_dir=cache)
    spec = spec_of(url, good)
    assert call(store, LoaderRegistry(), spec).label == 2
    store.close()
    assert not entry.is_symlink() and entry.read_bytes() == good
    assert target.read_bytes() == evil and not proof.exists()


@pytest.mark.slow
def test_a_fifo_or_a_folder_planted_in_the_cache_is_handled(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """A FIFO where an entry belongs is removed without blocking; a folder there is an
    UnsafeCacheError (the cache will not delete a folder it did not make)."""
    data = b"some bytes"
    url = server.add("/a", data)
    cache = tmp_path / "cache"
    fetcher = RemoteFetcher(cache_dir=cache)
    entry = fetcher.cache_path(sha(data))
    entry.parent.mkdir(parents=True)
    os.mkfifo(entry)
    assert cached_fetch(cache, url, data).read_bytes() == data
    entry.unlink()
    entry.mkdir()
    with pytest.raises(ArtifactError, match="is a folder where the cache keeps a file") as e:
        cached_fetch(cache, url, data)
    assert unsafe_cache_path(e.value) == str(entry)


def test_a_link_planted_as_the_lock_file_is_removed_not_followed(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """The lock file is opened without following links; the link's target keeps its bytes."""
    data = b"some bytes"
    url = server.add("/a", data)
    cache = tmp_path / "cache"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    lock = cache / "locks" / f"{sha(data)}.lock"
    lock.parent.mkdir(parents=True)
    lock.symlink_to(victim)
    assert cached_fetch(cache, url, data).read_bytes() == data
    assert victim.read_bytes() == b"precious"
    assert not lock.is_symlink()


@pytest.mark.slow
def test_a_cache_entry_of_another_user_is_not_trusted(
    tmp_path: Path, server: ArtifactServer
) -> None:
    """An entry owned by someone else (only root could put it there) is replaced."""
    data = b"some bytes"
    url = server.add("/a", data)
    cache = tmp_path / "cache"
    path = cached_fetch(cache, url, data)
    os.chown(path, os.geteuid() + 4242, -1)
    assert cached_fetch(cache, url, data).stat().st_uid == os.geteuid()
    assert server.count("/a") == 2


def test_an_unusable_cache_folder_is_an_artifact_error(tmp_path: Path) -> None:
    """Operating-system errors in the cache become ArtifactError naming model and version."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ArtifactError, match="cannot use cache folder") as info:
        cached_fetch(blocker / "cache", "http://127.0.0.1:9/a", b"x")
    assert (info.value.model, info.value.version) == ("m", "v2")
