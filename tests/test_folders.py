"""Folder artifacts: their digest, verified reads, and the cache's folder downloads."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from modelflags.artifacts.folder_cache import FolderFetcher, LocalFolderSource
from modelflags.artifacts.folders import folder_digest, manifest_digest, read_folder
from modelflags.artifacts.naming import Subject
from modelflags.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    DigestMismatchError,
    FetchError,
)

SUBJECT = Subject.of("m", "7", "models:/m/7")


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


FILES = {
    "MLmodel": b"flavors: {}\n",
    "model.pkl": b"\x80\x04K\x07.",
    "sub/dir/requirements.txt": b"scikit-learn\n",
    "Zeta": b"upper case sorts first",
}


def expected_digest(files: dict[str, bytes]) -> str:
    """The manifest as the docs define it, written out here independently."""
    lines = sorted(
        (name.encode(), f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode())
        for name, data in files.items()
    )
    return hashlib.sha256(b"".join(line for _, line in lines)).hexdigest()


def test_folder_digest_is_the_sha256_of_the_sorted_manifest(tmp_path: Path) -> None:
    """The digest hashes one "<sha256>  <path>" line per file, sorted by the path's bytes."""
    folder = make_folder(tmp_path / "model", FILES)
    found = folder_digest(folder)
    assert found.sha256 == expected_digest(FILES)
    assert found.size == sum(len(data) for data in FILES.values())
    assert list(found.files) == sorted(FILES)
    assert manifest_digest(found.files) == found.sha256


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="coreutils' sha256sum is missing")
def test_folder_digest_matches_the_documented_coreutils_pipeline(tmp_path: Path) -> None:
    """The shell command in the docs gives the same digest."""
    folder = make_folder(tmp_path / "model", FILES)
    command = "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum"
    result = subprocess.run(
        ["sh", "-c", command], cwd=folder, capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.split()[0] == folder_digest(folder).sha256


def test_empty_folders_do_not_change_the_digest(tmp_path: Path) -> None:
    """Only files count."""
    folder = make_folder(tmp_path / "model", FILES)
    before = folder_digest(folder).sha256
    (folder / "empty" / "nested").mkdir(parents=True)
    assert folder_digest(folder).sha256 == before


def test_renaming_a_file_changes_the_digest(tmp_path: Path) -> None:
    """The paths are part of what is pinned, not only the bytes."""
    folder = make_folder(tmp_path / "model", FILES)
    before = folder_digest(folder).sha256
    (folder / "model.pkl").rename(folder / "model2.pkl")
    assert folder_digest(folder).sha256 != before


@pytest.mark.parametrize("kind", ["link to a file", "link to a folder", "fifo"])
def test_a_folder_with_a_link_or_fifo_has_no_digest(tmp_path: Path, kind: str) -> None:
    """Links are never followed and odd files are refused, naming the entry."""
    folder = make_folder(tmp_path / "model", FILES)
    outside = make_folder(tmp_path / "outside", {"secret": b"x"})
    if kind == "link to a file":
        (folder / "evil").symlink_to(outside / "secret")
    elif kind == "link to a folder":
        (folder / "evil").symlink_to(outside)
    else:
        os.mkfifo(folder / "evil")
    with pytest.raises(ArtifactError, match="'evil'"):
        folder_digest(folder)
    with pytest.raises(ArtifactError, match="'evil'"):
        read_folder(folder, SUBJECT, sha256=None)


def test_a_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    """The folder itself is opened without following a link."""
    folder = make_folder(tmp_path / "model", FILES)
    (tmp_path / "alias").symlink_to(folder)
    with pytest.raises(ArtifactError, match="cannot open"):
        read_folder(tmp_path / "alias", SUBJECT, sha256=None)


def test_a_name_with_a_newline_has_no_digest(tmp_path: Path) -> None:
    """Names that would make the manifest ambiguous are refused."""
    folder = make_folder(tmp_path / "model", {"a\nb": b"x"})
    with pytest.raises(ArtifactError, match="newline"):
        folder_digest(folder)


def test_an_empty_or_missing_folder_has_no_digest(tmp_path: Path) -> None:
    """No files, no digest; a missing folder is not found."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no files"):
        folder_digest(tmp_path / "empty")
    with pytest.raises(ArtifactNotFoundError):
        read_folder(tmp_path / "missing", SUBJECT, sha256=None)


def test_read_folder_refuses_a_digest_mismatch(tmp_path: Path) -> None:
    """A changed byte anywhere is a mismatch naming both digests."""
    folder = make_folder(tmp_path / "model", FILES)
    pinned = folder_digest(folder).sha256
    (folder / "sub" / "dir" / "requirements.txt").write_bytes(b"scikit-learn==0.1\n")
    with pytest.raises(DigestMismatchError) as caught:
        read_folder(folder, SUBJECT, sha256=pinned)
    assert caught.value.expected == pinned
    assert pinned in str(caught.value) and "model 'm' version '7'" in str(caught.value)


def test_read_folder_refuses_a_folder_over_the_size_limit(tmp_path: Path) -> None:
    """max_bytes bounds the folder's total."""
    folder = make_folder(tmp_path / "model", FILES)
    with pytest.raises(ArtifactTooLargeError):
        read_folder(folder, SUBJECT, sha256=None, max_bytes=10)


def test_the_verified_bytes_are_what_a_loader_reads_after_the_file_changes(
    tmp_path: Path,
) -> None:
    """A file rewritten after verification is not what is loaded: the checked bytes are."""
    folder = make_folder(tmp_path / "model", FILES)
    verified = read_folder(folder, SUBJECT, sha256=folder_digest(folder).sha256)
    (folder / "model.pkl").write_bytes(b"tampered after the check")
    assert verified.read_bytes("model.pkl") == FILES["model.pkl"]
    with verified.private_copy() as copy:
        assert (copy / "model.pkl").read_bytes() == FILES["model.pkl"]
        assert (copy / "sub" / "dir" / "requirements.txt").read_bytes() == b"scikit-learn\n"
        assert (copy.stat().st_mode & 0o077) == 0
    assert not copy.exists()


class CountingSource(LocalFolderSource):
    """The local source, counting what it is asked (and optionally failing after N files)."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.downloads: list[str] = []
        self.lists = 0
        self.fail_after = fail_after
        self.lock = threading.Lock()

    def list_files(self, location: str) -> list[tuple[str, int | None]]:
        with self.lock:
            self.lists += 1
        return super().list_files(location)

    def download(self, location: str, path: str, target: Path) -> None:
        with self.lock:
            if self.fail_after is not None and len(self.downloads) >= self.fail_after:
                raise ConnectionError("the store went away")
            self.downloads.append(path)
        super().download(location, path, target)


def fetcher(tmp_path: Path) -> FolderFetcher:
    return FolderFetcher(cache_dir=tmp_path / "cache", lock_timeout=30)


def open_folder(
    fetch: FolderFetcher, source: CountingSource, location: Path, digest: str
) -> Sequence[str]:
    folder = fetch.open(
        model="m",
        version="7",
        uri="models:/m/7",
        location=str(location),
        sha256=digest,
        source=source,
    )
    return list(folder.files)


def test_a_folder_is_downloaded_once_then_read_from_the_cache(tmp_path: Path) -> None:
    """The second open finds the verified entry and asks the store nothing."""
    store = make_folder(tmp_path / "store", FILES)
    digest = folder_digest(store).sha256
    fetch, source = fetcher(tmp_path), CountingSource()
    assert open_folder(fetch, source, store, digest) == sorted(FILES)
    assert sorted(source.downloads) == sorted(FILES)
    assert fetch.entry(digest).is_dir()
    assert open_folder(fetch, source, store, digest) == sorted(FILES)
    assert source.lists == 1 and len(source.downloads) == len(FILES)


def test_a_tampered_store_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    """Files that do not match the pin never reach the cache."""
    store = make_folder(tmp_path / "store", FILES)
    digest = folder_digest(store).sha256
    (store / "model.pkl").write_bytes(b"evil")
    fetch = fetcher(tmp_path)
    with pytest.raises(DigestMismatchError):
        open_folder(fetch, CountingSource(), store, digest)
    assert not fetch.entry(digest).exists()
    assert not any((tmp_path / "cache" / "partial").iterdir())


def test_a_tampered_cache_entry_is_replaced_by_a_fresh_download(tmp_path: Path) -> None:
    """An entry that no longer matches its name is removed and downloaded again."""
    store = make_folder(tmp_path / "store", FILES)
    digest = folder_digest(store).sha256
    fetch, source = fetcher(tmp_path), CountingSource()
    open_folder(fetch, source, store, digest)
    (fetch.entry(digest) / "model.pkl").write_bytes(b"planted")
    assert open_folder(fetch, source, store, digest) == sorted(FILES)
    assert (fetch.entry(digest) / "model.pkl").read_bytes() == FILES["model.pkl"]
    assert len(source.downloads) == 2 * len(FILES)


def test_a_link_planted_in_a_cache_entry_is_never_followed(tmp_path: Path) -> None:
    """A link inside the entry makes it unusable; it is replaced, its target untouched."""
    store = make_folder(tmp_path / "store", FILES)
    digest = folder_digest(store).sha256
    fetch, source = fetcher(tmp_path), CountingSource()
    open_folder(fetch, source, store, digest)
    target = tmp_path / "target"
    target.write_bytes(FILES["model.pkl"])
    entry = fetch.entry(digest)
    (entry / "model.pkl").unlink()
    (entry / "model.pkl").symlink_to(target)
    assert open_folder(fetch, source, store, digest) == sorted(FILES)
    assert not (entry / "model.pkl").is_symlink()
    assert target.read_bytes() == FILES["model.pkl"]


def test_an_interrupted_download_resumes_with_the_files_it_has(tmp_path: Path) -> None:
    """Complete files of a failed try are kept; the next try fetches only the rest."""
    store = make_folder(tmp_path / "store", FILES)
    digest = folder_digest(store).sha256
    fetch = fetcher(tmp_path)
    failing = CountingSource(fail_after=2)
    with pytest.raises(FetchError, match="the store went away"):
        open_folder(fetch, failing, store, digest)
    kept = set(failing.downloads)
    assert len(kept) == 2
    resumed = CountingSource()
    assert open_folder(fetch, resumed, store, digest) == sorted(FILES)
    assert set(resumed.downloads) == set(FILES) - kept


def test_a_resumed_download_that_does_not_match_starts_again_from_nothing(
    tmp_path: Path,
) -> None:
    """A stale partial file of the same size is caught by the digest and fetched again."""
    store = make_folder(tmp_path / "store", FILES)
    digest = folder_digest(store).sha256
    fetch = fetcher(tmp_path)
    with pytest.raises(FetchError):
        open_folder(fetch, CountingSource(fail_after=2), store, digest)
    partial = tmp_path / "cache" / "partial" / f"{digest}.folder"
    damaged = next(path for path in partial.rglob("*") if path.is_file())
    damaged.write_bytes(b"\0" * damaged.stat().st_size)  # same size, other bytes
    again = CountingSource()
    assert open_folder(fetch, again, store, digest) == sorted(FILES)
    # the two missing files, then every file once more after the mismatch
    assert len(again.downloads) == (len(FILES) - 2) + len(FILES)
    assert set(again.downloads[-len(FILES) :]) == set(FILES)


def test_concurrent_opens_download_once(tmp_path: Path) -> None:
    """Threads asking for the same digest at once cause one download (single flight)."""
    store = make_folder(tmp_path / "store", {f"f{i}": os.urandom(2000) for i in range(20)})
    digest = folder_digest(store).sha256
    fetch, source = fetcher(tmp_path), CountingSource()
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            open_folder(fetch, source, store, digest)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(source.downloads) == 20


class ListingSource(LocalFolderSource):
    """A store whose listing says what the test wants."""

    def __init__(self, listing: list[tuple[str, int | None]]) -> None:
        super().__init__()
        self.listing = listing

    def list_files(self, location: str) -> list[tuple[str, int | None]]:
        return self.listing


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a//b", "a/./b", "a\\b"])
def test_a_listing_with_an_unsafe_path_is_refused_before_any_download(
    tmp_path: Path, path: str
) -> None:
    """The store cannot make the cache write outside its folder."""
    store = make_folder(tmp_path / "store", FILES)
    fetch = fetcher(tmp_path)
    with pytest.raises(ArtifactError, match="nothing was downloaded"):
        open_folder(fetch, ListingSource([(path, 1)]), store, "0" * 64)
    assert not (tmp_path / "escape").exists()


def test_pinning_downloads_and_caches_under_the_digest_found(tmp_path: Path) -> None:
    """With no digest known, the folder is cached under the one computed."""
    store = make_folder(tmp_path / "store", FILES)
    fetch = fetcher(tmp_path)
    folder = fetch.pin(
        model="m", version="7", uri="models:/m/7", location=str(store), source=CountingSource()
    )
    assert folder.sha256 == folder_digest(store).sha256
    assert fetch.entry(folder.sha256).is_dir()
    source = CountingSource()
    open_folder(fetch, source, store, folder.sha256)
    assert source.downloads == []


def test_a_store_path_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    """The local source refuses links in the artifact store too."""
    store = make_folder(tmp_path / "store", FILES)
    (store / "evil").symlink_to(tmp_path)
    with pytest.raises(ArtifactError, match="evil"):
        open_folder(fetcher(tmp_path), CountingSource(), store, "0" * 64)
