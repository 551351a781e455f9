"""RemoteFetcher against a real HTTP server on 127.0.0.1 (and moto's S3 server), faults injected."""

from __future__ import annotations

import hashlib
import logging
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import filelock
import httpx
import pytest

from modelflags.artifacts.remote import (
    ProgressEvent,
    RemoteFetcher,
    RetryPolicy,
    default_cache_dir,
)
from modelflags.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    DigestMismatchError,
    FetchError,
)

from support.artifact_server import (
    ArtifactServer,
    cut,
    not_found,
    stall,
    status,
    wrong_bytes,
    wrong_range,
)

MiB = 1 << 20
FAST = httpx.Timeout(5.0, connect=1.0)
SHORT_READ = httpx.Timeout(5.0, connect=1.0, read=0.3)


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Sleeps(list[float]):
    """An injected sleep that records the delays instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def shared_client() -> Iterator[httpx.Client]:
    """One client for the module's tests: making one (its TLS context) costs ~0.1 s."""
    with httpx.Client(follow_redirects=True) as client:
        yield client


@pytest.fixture
def make_fetcher(
    cache: Path, sleeps: Sleeps, shared_client: httpx.Client
) -> Iterator[Callable[..., RemoteFetcher]]:
    """Fetchers on the test's cache folder, with recorded sleeps; ``own_client=True`` for a
    fetcher that makes (and closes) its own client."""
    made: list[RemoteFetcher] = []

    def make(*, own_client: bool = False, **options: Any) -> RemoteFetcher:
        if not own_client and "transport" not in options:
            options.setdefault("client", shared_client)
        options.setdefault("cache_dir", cache)
        options.setdefault("sleep", sleeps)
        options.setdefault("timeout", FAST)
        fetcher = RemoteFetcher(**options)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


def fetch(fetcher: RemoteFetcher, url: str, data: bytes, **kwargs: Any) -> Path:
    options: dict[str, Any] = {"model": "m", "version": "v1", "uri": url, "sha256": sha(data)}
    options.update(kwargs)
    return fetcher.fetch(**options)


def causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


# -- downloads and the cache ----------------------------------------------------------------


def test_downloads_artifact_into_content_addressed_cache(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(3000)
    url = artifact_server.add("/a.joblib", data)
    path = fetch(make_fetcher(), url, data)
    digest = sha(data)
    assert path == cache / "sha256" / digest[:2] / digest
    assert path.read_bytes() == data
    assert not list((cache / "partial").iterdir())


def test_a_version_is_downloaded_once_per_machine(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(3000)
    url = artifact_server.add("/a.joblib", data)
    first = fetch(make_fetcher(), url, data)
    again = fetch(make_fetcher(), url, data, model="other", version="v9")
    assert first == again
    assert artifact_server.count("/a.joblib") == 1


def test_planted_cache_entry_is_hashed_removed_and_downloaded_again(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(100)
    url = artifact_server.add("/a", data)
    fetcher = make_fetcher()
    placed = fetcher.cache_path(sha(data))
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"a file is not trusted by its name")
    assert fetch(fetcher, url, data) == placed
    assert placed.read_bytes() == data
    assert artifact_server.count("/a") == 1


def test_requests_ask_for_identity_encoding(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(10)
    fetch(make_fetcher(), artifact_server.add("/a", data), data)
    assert artifact_server.requests("/a")[0].headers["accept-encoding"] == "identity"


def test_uppercase_digest_is_accepted(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(10)
    path = fetch(make_fetcher(), artifact_server.add("/a", data), data, sha256=sha(data).upper())
    assert path.name == sha(data)


def test_invalid_digest_is_refused(make_fetcher: Callable[..., RemoteFetcher]) -> None:
    with pytest.raises(ArtifactError, match="not a sha256 digest"):
        make_fetcher().fetch(model="m", version="v1", uri="http://127.0.0.1/", sha256="abc")


def test_local_uri_is_refused_as_not_remote(make_fetcher: Callable[..., RemoteFetcher]) -> None:
    with pytest.raises(ArtifactError, match="only http, https and s3"):
        make_fetcher().fetch(model="m", version="v1", uri="file:///tmp/x", sha256="0" * 64)


def test_unusable_cache_folder_raises_artifact_error(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data = blob(10)
    with pytest.raises(ArtifactError, match="cannot use cache folder") as info:
        fetch(make_fetcher(cache_dir=blocker / "cache"), artifact_server.add("/a", data), data)
    assert info.value.model == "m"
    assert artifact_server.count("/a") == 0


def test_cache_folder_defaults_follow_the_environment(tmp_path: Path) -> None:
    assert default_cache_dir({"MODELFLAGS_CACHE_DIR": str(tmp_path / "x")}) == tmp_path / "x"
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "modelflags"
    assert default_cache_dir({}) == Path.home() / ".cache" / "modelflags"


def test_cache_folder_is_read_from_the_environment_at_construction(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELFLAGS_CACHE_DIR", str(tmp_path / "env-cache"))
    fetcher = RemoteFetcher()
    monkeypatch.setenv("MODELFLAGS_CACHE_DIR", str(tmp_path / "later"))
    assert fetcher.cache_dir == tmp_path / "env-cache"


def test_passing_both_client_and_transport_is_an_error() -> None:
    with httpx.Client() as client, pytest.raises(ValueError, match="either client= or transport="):
        RemoteFetcher(client=client, transport=httpx.HTTPTransport())


def test_a_given_client_is_used_and_left_open(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(10)
    with httpx.Client(headers={"X-From-Client": "yes"}) as client:
        fetcher = make_fetcher(client=client)
        fetch(fetcher, artifact_server.add("/a", data), data)
        fetcher.close()
        assert not client.is_closed
    assert artifact_server.requests("/a")[0].headers["x-from-client"] == "yes"


def test_close_releases_its_own_client_and_fetching_again_reopens_one(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    one, two = blob(10, 1), blob(10, 2)
    fetcher = make_fetcher(own_client=True)
    fetch(fetcher, artifact_server.add("/one", one), one)
    fetcher.close()
    fetch(fetcher, artifact_server.add("/two", two), two)
    assert artifact_server.count("/two") == 1


# -- HTTP statuses and retries --------------------------------------------------------------


def test_not_found_raises_artifact_not_found_at_once(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    data = blob(10)
    url = artifact_server.add("/gone", data)
    artifact_server.fail("/gone", not_found())
    with pytest.raises(ArtifactNotFoundError) as info:
        fetch(make_fetcher(), url, data)
    assert (info.value.model, info.value.version, info.value.uri) == ("m", "v1", url)
    assert "404" in str(info.value)
    assert artifact_server.count("/gone") == 1
    assert sleeps == []


def test_client_error_raises_fetch_error_with_its_status_at_once(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    data = blob(10)
    url = artifact_server.add("/forbidden", data)
    artifact_server.fail("/forbidden", status(403))
    with pytest.raises(FetchError, match="HTTP 403") as info:
        fetch(make_fetcher(), url, data)
    assert info.value.status == 403
    assert artifact_server.count("/forbidden") == 1
    assert sleeps == []


def test_unexpected_success_status_raises_fetch_error(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(10)
    url = artifact_server.add("/empty", data)
    artifact_server.fail("/empty", status(204))
    with pytest.raises(FetchError, match="HTTP 204") as info:
        fetch(make_fetcher(), url, data)
    assert info.value.status == 204


def test_server_errors_are_retried_with_backoff_until_success(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    data = blob(1000)
    url = artifact_server.add("/flaky", data)
    artifact_server.fail("/flaky", status(500), status(503))
    path = fetch(make_fetcher(), url, data)
    assert path.read_bytes() == data
    assert artifact_server.count("/flaky") == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] < 0.2 and 0 <= sleeps[1] < 0.4


def test_backoff_doubles_with_full_jitter_then_gives_up_naming_model_version_and_uri(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    data = blob(10)
    url = artifact_server.add("/down", data)
    artifact_server.fail("/down", *[status(502)] * 4)
    fetcher = make_fetcher(random=lambda: 0.5)
    with pytest.raises(FetchError) as info:
        fetch(fetcher, url, data, model="recommender", version="v3")
    assert sleeps == [0.1, 0.2, 0.4]
    assert artifact_server.count("/down") == 4
    message = str(info.value)
    assert "'recommender'" in message and "'v3'" in message and url in message
    assert "after 4 attempts" in message
    assert info.value.status == 502


def test_backoff_delay_is_capped_at_max_delay() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=3.0)
    assert [policy.delay(n, 1.0) for n in range(4)] == [1.0, 2.0, 3.0, 3.0]
    assert policy.delay(5, 0.0) == 0.0


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_delay=-1)


def test_retries_stop_when_the_fetch_deadline_has_passed(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:  # each pause, with the request after it, takes 4 s
        sleeps.append(seconds)
        now[0] += 4.0

    data = blob(10)
    url = artifact_server.add("/slow", data)
    artifact_server.fail("/slow", *[status(500)] * 10)
    fetcher = make_fetcher(
        retry=RetryPolicy(attempts=10, max_total=10.0),
        clock=lambda: now[0],
        sleep=sleep,
        random=lambda: 0.5,
    )
    with pytest.raises(FetchError, match=r"deadline of a fetch \(10 s\) passed after 12\.0 s"):
        fetch(fetcher, url, data)
    assert artifact_server.count("/slow") == 3  # no request starts past the deadline
    assert len(sleeps) == 3


def test_no_retry_starts_when_its_pause_would_end_past_the_deadline(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    data = blob(10)
    url = artifact_server.add("/slow", data)
    artifact_server.fail("/slow", *[status(503, retry_after=4)] * 10)
    fetcher = make_fetcher(
        retry=RetryPolicy(attempts=10, max_delay=4.0, max_total=10.0),
        clock=lambda: now[0],
        sleep=sleep,
    )
    with pytest.raises(
        FetchError, match=r"after 3 attempts in 8\.0 s; the deadline of a fetch \(10 s\) leaves"
    ):
        fetch(fetcher, url, data)
    assert sleeps == [4.0, 4.0]


def test_too_many_requests_is_retried_after_the_server_asked_delay(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    data = blob(10)
    url = artifact_server.add("/busy", data)
    artifact_server.fail("/busy", status(429, retry_after=2))
    fetch(make_fetcher(random=lambda: 0.0), url, data)
    assert sleeps == [2.0]


def test_connection_refused_is_retried_then_raises_fetch_error(
    make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    with pytest.raises(FetchError, match="ConnectError") as info:
        fetch(make_fetcher(), url, blob(1))
    assert len(sleeps) == 3
    assert info.value.status is None
    assert info.value.uri == url


@pytest.mark.slow
def test_read_timeout_before_headers_is_retried(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    data = blob(1000)
    url = artifact_server.add("/stall", data)
    artifact_server.fail("/stall", stall(1.0))
    path = fetch(make_fetcher(timeout=SHORT_READ), url, data)
    assert path.read_bytes() == data
    assert artifact_server.count("/stall") == 2
    assert len(sleeps) == 1


@pytest.mark.slow
def test_read_timeouts_that_persist_raise_fetch_error_naming_the_timeout(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(1000)
    url = artifact_server.add("/stall", data)
    artifact_server.fail("/stall", stall(0.8), stall(0.8))
    fetcher = make_fetcher(timeout=SHORT_READ, retry=RetryPolicy(attempts=2))
    with pytest.raises(FetchError, match="ReadTimeout"):
        fetch(fetcher, url, data)


# -- integrity, size and resumption ---------------------------------------------------------


def test_wrong_bytes_raise_digest_mismatch_and_leave_no_file(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(5000)
    url = artifact_server.add("/a", data)
    artifact_server.fail("/a", wrong_bytes())
    fetcher = make_fetcher()
    with pytest.raises(DigestMismatchError) as info:
        fetch(fetcher, url, data)
    assert info.value.expected == sha(data)
    assert info.value.actual != sha(data)
    assert not fetcher.cache_path(sha(data)).exists()
    assert not list((cache / "partial").iterdir())
    assert artifact_server.count("/a") == 1


def test_downloads_that_skip_the_disk_sync_are_verified_all_the_same(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    good, bad = blob(3 * MiB), blob(100)
    fetcher = make_fetcher(durable=False)
    assert fetch(fetcher, artifact_server.add("/good", good), good).read_bytes() == good
    artifact_server.fail(
        artifact_server.add("/bad", bad).removeprefix(artifact_server.base_url), wrong_bytes()
    )
    with pytest.raises(DigestMismatchError):
        fetch(fetcher, artifact_server.url("/bad"), bad)


def test_max_bytes_refuses_from_content_length_before_downloading(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(5000)
    url = artifact_server.add("/big", data)
    with pytest.raises(ArtifactTooLargeError, match="5000 bytes, over the limit of 4096"):
        fetch(make_fetcher(max_bytes=4096), url, data)
    assert not (cache / "partial" / f"{sha(data)}.partial").exists()


def test_max_bytes_is_enforced_while_streaming_a_body_without_length(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(3 * MiB)
    url = artifact_server.add("/unsized", data, content_length=False)
    with pytest.raises(ArtifactTooLargeError, match="over the limit"):
        fetch(make_fetcher(max_bytes=MiB + 1), url, data)
    assert not list((cache / "partial").iterdir())


def test_body_without_length_is_downloaded_to_its_end(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(MiB + 77)
    path = fetch(make_fetcher(), artifact_server.add("/unsized", data, content_length=False), data)
    assert path.read_bytes() == data


def test_cut_connection_resumes_with_a_range_request(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    data = blob(3 * MiB + 123)
    url = artifact_server.add("/a", data)
    artifact_server.fail("/a", cut(after_bytes=2 * MiB + MiB // 2))
    path = fetch(make_fetcher(), url, data)
    assert path.read_bytes() == data
    first, second = artifact_server.requests("/a")
    assert first.range is None
    assert second.range == f"bytes={2 * MiB + MiB // 2}-"  # every byte that arrived is kept
    assert len(sleeps) == 1


@pytest.mark.slow
def test_stall_in_the_middle_of_the_body_times_out_and_resumes(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(2 * MiB + 5)
    url = artifact_server.add("/a", data)
    artifact_server.fail("/a", stall(1.0, after_bytes=MiB + 10))
    path = fetch(make_fetcher(timeout=SHORT_READ), url, data)
    assert path.read_bytes() == data
    assert [r.range for r in artifact_server.requests("/a")] == [None, f"bytes={MiB + 10}-"]


def test_download_restarts_from_zero_when_the_server_ignores_range(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(3 * MiB)
    url = artifact_server.add("/a", data, ranges=False)
    artifact_server.fail("/a", cut(after_bytes=2 * MiB + 1))
    path = fetch(make_fetcher(), url, data)
    assert path.read_bytes() == data
    assert [r.range for r in artifact_server.requests("/a")] == [None, f"bytes={2 * MiB + 1}-"]


def test_partial_file_left_by_an_earlier_run_is_rehashed_and_continued(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(100_000)
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.partial").write_bytes(data[:40_000])
    path = fetch(make_fetcher(), artifact_server.add("/a", data), data)
    assert path.read_bytes() == data
    assert [r.range for r in artifact_server.requests("/a")] == ["bytes=40000-"]


def test_corrupt_partial_file_is_dropped_and_downloaded_again_from_zero(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(100_000)
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.partial").write_bytes(b"x" * 40_000)
    path = fetch(make_fetcher(), artifact_server.add("/a", data), data)
    assert path.read_bytes() == data
    assert [r.range for r in artifact_server.requests("/a")] == ["bytes=40000-", None]


def test_partial_file_longer_than_the_artifact_is_dropped_after_416(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(1000)
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.partial").write_bytes(b"x" * 5000)
    path = fetch(make_fetcher(), artifact_server.add("/a", data), data)
    assert path.read_bytes() == data
    assert [r.range for r in artifact_server.requests("/a")] == ["bytes=5000-", None]


def test_a_server_that_keeps_answering_the_wrong_range_gets_a_fetch_error(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(1000)
    url = artifact_server.add("/a", data)
    artifact_server.fail("/a", *[wrong_range()] * 3)
    with pytest.raises(FetchError, match="answered a different range"):
        fetch(make_fetcher(), url, data)
    assert artifact_server.count("/a") == 3
    assert not list((cache / "partial").iterdir())


def test_a_wrong_range_once_restarts_the_download_from_zero(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(1000)
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.partial").write_bytes(data[:400])
    url = artifact_server.add("/a", data)
    artifact_server.fail("/a", wrong_range())
    assert fetch(make_fetcher(), url, data).read_bytes() == data
    assert [r.range for r in artifact_server.requests("/a")] == ["bytes=400-", None]


def test_partial_file_is_kept_for_a_later_run_when_retries_run_out(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(2 * MiB + 9)
    url = artifact_server.add("/a", data)
    artifact_server.fail("/a", cut(after_bytes=MiB + 1), status(503))
    with pytest.raises(FetchError):
        fetch(make_fetcher(retry=RetryPolicy(attempts=2)), url, data)
    assert (cache / "partial" / f"{sha(data)}.partial").stat().st_size == MiB + 1
    fetch(make_fetcher(), url, data)
    assert artifact_server.requests("/a")[-1].range == f"bytes={MiB + 1}-"


@pytest.fixture
def small_file_size_limit() -> Iterator[int]:
    """Files of this process cannot grow past 512 KiB (writes fail with EFBIG) for the test."""
    limit = MiB // 2
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_failing_disk_write_raises_artifact_error_and_removes_the_partial_file(
    artifact_server: ArtifactServer,
    make_fetcher: Callable[..., RemoteFetcher],
    cache: Path,
    small_file_size_limit: int,
) -> None:
    data = blob(MiB)
    url = artifact_server.add("/a", data)
    fetcher = make_fetcher()
    with pytest.raises(ArtifactError, match="cannot write") as info:
        fetch(fetcher, url, data)
    assert isinstance(info.value.__cause__, OSError)
    assert not (cache / "partial" / f"{sha(data)}.partial").exists()
    assert not fetcher.cache_path(sha(data)).exists()


@pytest.mark.slow
def test_memory_stays_flat_while_downloading_a_large_artifact(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(30 * MiB)
    url = artifact_server.add("/large", data)
    fetcher = make_fetcher()
    tracemalloc.start()
    try:
        fetch(fetcher, url, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB


@pytest.mark.slow
def test_open_keeps_no_more_of_an_unbounded_download_in_memory_than_its_allowance(
    artifact_server: ArtifactServer,
    make_fetcher: Callable[..., RemoteFetcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a declared size or max_bytes, open() holds at most KEEP_UNBOUNDED bytes while
    downloading (a server sending wrong or endless bytes cannot fill memory); past it the
    published entry is read back, and the bytes handed over are still the verified ones."""
    from modelflags.artifacts import transfer

    monkeypatch.setattr(transfer, "KEEP_UNBOUNDED", MiB)
    data = blob(30 * MiB)
    url = artifact_server.add("/large", data)
    fetcher = make_fetcher()
    tracemalloc.start()
    try:  # 30 MiB that are not the registered artifact
        with pytest.raises(DigestMismatchError):
            fetcher.open(model="m", version="v1", uri=url, sha256=sha(b"another artifact"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB
    artifact = fetcher.open(model="m", version="v1", uri=url, sha256=sha(data))
    assert artifact.read_bytes() == data and artifact.sha256 == sha(data)


def test_open_hands_over_the_downloaded_bytes_without_reading_them_back(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    """A bounded download keeps its bytes: the loader gets them even if the entry is gone."""
    data = blob(2 * MiB + 3)
    url = artifact_server.add("/a", data)
    fetcher = make_fetcher(max_bytes=4 * MiB)
    artifact = fetcher.open(model="m", version="v1", uri=url, sha256=sha(data))
    fetcher.cache_path(sha(data)).unlink()
    assert artifact.read_bytes() == data and artifact.size == len(data)


# -- headers and secrets --------------------------------------------------------------------


def test_configured_and_per_call_headers_are_sent(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(10)
    url = artifact_server.add("/a", data)
    fetcher = make_fetcher(headers={"X-Team": "search", "Authorization": "Bearer static"})
    fetch(fetcher, url, data, headers={"Authorization": "Bearer per-call"})
    sent = artifact_server.requests("/a")[0].headers
    assert sent["x-team"] == "search"
    assert sent["authorization"] == "Bearer per-call"


def test_header_values_never_reach_logs_or_errors(
    artifact_server: ArtifactServer,
    make_fetcher: Callable[..., RemoteFetcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret, configured = "s3cr3t-per-call-token", "c0nfigured-token"
    data = blob(10)
    url = artifact_server.add("/a", data)
    artifact_server.fail("/a", status(500), status(500), status(401))
    fetcher = make_fetcher(headers={"X-Api-Key": configured})
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    for _ in range(2):  # a retried failure, then a success
        try:
            fetch(fetcher, url, data, headers={"Authorization": f"Bearer {secret}"})
        except FetchError as exc:
            errors.append(exc)
    for bad in (f"Bearer {secret}\n", f"Bearer {secret}\u00e9", f" Bearer {secret}"):
        with pytest.raises(ArtifactError, match="not valid HTTP") as info:
            fetch(fetcher, url, blob(11), headers={"Authorization": bad})
        errors.append(info.value)
    assert [type(e) for e in errors] == [FetchError, ArtifactError, ArtifactError, ArtifactError]
    assert artifact_server.requests("/a")[0].headers["authorization"] == f"Bearer {secret}"
    for text in [r.getMessage() for r in caplog.records] + [caplog.text]:
        assert secret not in text and configured not in text
    for error in errors:
        for link in causes(error):
            assert secret not in str(link) and secret not in repr(link)
            assert configured not in str(link)


def test_credentials_in_the_uri_are_not_shown_in_errors(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(10)
    artifact_server.add("/a", data)
    artifact_server.fail("/a", status(403))
    url = artifact_server.url("/a?signature=p4ssw0rd").replace("http://", "http://user:hunter2@")
    with pytest.raises(FetchError) as info:
        fetch(make_fetcher(), url, data)
    assert "hunter2" not in str(info.value) and "p4ssw0rd" not in str(info.value)
    assert "/a?..." in str(info.value)
    # The error's uri attribute is redacted too.
    assert info.value.uri == artifact_server.url("/a?...")


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.slow
def test_eight_threads_asking_for_one_digest_cause_one_download(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(2 * MiB)
    url = artifact_server.add("/shared", data)
    artifact_server.fail("/shared", stall(0.3))  # the first download is slow; the others must wait
    fetcher = make_fetcher()
    barrier = threading.Barrier(8)
    paths: list[Path] = []
    failures: list[BaseException] = []

    def work() -> None:
        barrier.wait()
        try:
            paths.append(fetch(fetcher, url, data))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert failures == []
    assert len(paths) == 8 and len(set(paths)) == 1
    assert artifact_server.count("/shared") == 1


CHILD = """
import sys
from modelflags.artifacts.remote import RemoteFetcher
fetcher = RemoteFetcher(cache_dir=sys.argv[1])
path = fetcher.fetch(model="m", version="v1", uri=sys.argv[2], sha256=sys.argv[3], headers={})
fetcher.close()
print(path)
"""


@pytest.mark.slow
def test_three_processes_asking_for_one_digest_cause_one_download(
    artifact_server: ArtifactServer, cache: Path
) -> None:
    data = blob(2 * MiB)
    url = artifact_server.add("/shared", data)
    artifact_server.fail("/shared", stall(1.0))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(cache), url, sha(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], outputs
    assert {out.strip() for out, _ in outputs} == {
        str(RemoteFetcher(cache_dir=cache).cache_path(sha(data)))
    }
    assert artifact_server.count("/shared") == 1


@pytest.mark.slow
def test_waiting_longer_than_lock_timeout_raises_fetch_error(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(10)
    url = artifact_server.add("/a", data)
    (cache / "locks").mkdir(parents=True)
    holder = filelock.FileLock(str(cache / "locks" / f"{sha(data)}.lock"))
    with holder, pytest.raises(FetchError, match="gave up waiting"):
        fetch(make_fetcher(lock_timeout=0.1), url, data)
    assert artifact_server.count("/a") == 0


# -- progress -------------------------------------------------------------------------------


def test_progress_is_logged_and_reported_about_every_tenth(
    artifact_server: ArtifactServer,
    make_fetcher: Callable[..., RemoteFetcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = blob(12 * MiB)
    url = artifact_server.add("/big", data)
    events: list[ProgressEvent] = []
    caplog.set_level(logging.INFO, logger="modelflags.artifacts")
    fetch(make_fetcher(progress=events.append, progress_min_bytes=MiB), url, data)
    assert 6 <= len(events) <= 11
    assert [e.received for e in events] == sorted(e.received for e in events)
    assert all(e.total == len(data) and e.uri == url for e in events)
    assert events[-1].done and events[-1].received == len(data)
    assert not any(e.done for e in events[:-1])
    percent = [r for r in caplog.records if "%%" in str(r.msg)]
    assert len(percent) == len(events)
    assert percent[-1].getMessage().startswith("model 'm' version 'v1': 100% of ")


def test_small_downloads_report_no_progress(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(1000)
    events: list[ProgressEvent] = []
    fetch(make_fetcher(progress=events.append), artifact_server.add("/a", data), data)
    assert events == []


def test_progress_of_a_body_without_length_counts_bytes(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(3 * MiB + 1)
    url = artifact_server.add("/a", data, content_length=False)
    events: list[ProgressEvent] = []
    fetch(make_fetcher(progress=events.append, progress_min_bytes=0), url, data)
    assert [e.total for e in events] == [None] * len(events)
    assert events[-1].done and events[-1].received == len(data)


def test_a_failing_progress_callback_does_not_stop_the_download(
    artifact_server: ArtifactServer,
    make_fetcher: Callable[..., RemoteFetcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: ProgressEvent) -> None:
        raise RuntimeError("display is gone")

    data = blob(2 * MiB)
    path = fetch(
        make_fetcher(progress=broken, progress_min_bytes=0), artifact_server.add("/a", data), data
    )
    assert path.read_bytes() == data
    assert "the progress callback raised" in caplog.text


# -- S3 -------------------------------------------------------------------------------------


def test_s3_without_s3fs_asks_to_install_the_extra(
    make_fetcher: Callable[..., RemoteFetcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(ArtifactError, match=r"pip install 'modelflags\[s3\]'"):
        make_fetcher().fetch(model="m", version="v1", uri="s3://bucket/key", sha256="0" * 64)


def _s3_ready() -> str | None:
    # Looked up, not imported: importing them costs about a second for every test run.
    missing = [name for name in ("boto3", "s3fs", "moto", "flask") if find_spec(name) is None]
    if missing:
        return f"S3 tests need s3fs, boto3 and moto[server]: {', '.join(missing)} not installed"
    return None


_S3_MISSING = _s3_ready()
_S3_PACKAGES = pytest.mark.skipif(_S3_MISSING is not None, reason=_S3_MISSING or "")


def needs_s3(test: Any) -> Any:
    """An S3 test: it runs against moto's S3 server, a service, so it is marked slow (the fast
    inner loop leaves it out); skipped without s3fs, boto3 and moto[server]."""
    return pytest.mark.slow(_S3_PACKAGES(test))


BUCKET = "models"
CREDENTIALS = {"key": "testing", "secret": "testing"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto_server.start()
    host, port = moto_server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        moto_server.stop()


@pytest.fixture
def s3_put(s3_endpoint: str) -> Callable[[str, bytes], str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)

    def put(key: str, data: bytes) -> str:
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
        return f"s3://{BUCKET}/{key}"

    return put


@pytest.fixture
def s3_fetcher(
    make_fetcher: Callable[..., RemoteFetcher], s3_endpoint: str
) -> Callable[..., RemoteFetcher]:
    def make(**options: Any) -> RemoteFetcher:
        s3_options = {"endpoint_url": s3_endpoint, **CREDENTIALS}
        return make_fetcher(s3_options=s3_options, **options)

    return make


@needs_s3
def test_s3_object_is_downloaded_into_the_cache_once(
    s3_put: Callable[[str, bytes], str], s3_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(5 * MiB + 3)
    uri = s3_put("recommender/v1.joblib", data)
    fetcher = s3_fetcher()
    path = fetch(fetcher, uri, data)
    assert path.read_bytes() == data
    assert path == fetcher.cache_path(sha(data))
    assert fetch(s3_fetcher(), uri, data) == path


@needs_s3
def test_s3_missing_object_raises_artifact_not_found(
    s3_put: Callable[[str, bytes], str], s3_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    with pytest.raises(ArtifactNotFoundError, match="not found"):
        fetch(s3_fetcher(), f"s3://{BUCKET}/no/such/key", blob(1))
    assert sleeps == []


@needs_s3
def test_s3_object_with_wrong_bytes_raises_digest_mismatch(
    s3_put: Callable[[str, bytes], str], s3_fetcher: Callable[..., RemoteFetcher]
) -> None:
    uri = s3_put("wrong.bin", b"not the registered bytes")
    fetcher = s3_fetcher()
    with pytest.raises(DigestMismatchError):
        fetch(fetcher, uri, b"the registered bytes")
    assert not fetcher.cache_path(sha(b"the registered bytes")).exists()


@needs_s3
def test_s3_object_over_max_bytes_is_refused(
    s3_put: Callable[[str, bytes], str], s3_fetcher: Callable[..., RemoteFetcher]
) -> None:
    data = blob(5000)
    uri = s3_put("big.bin", data)
    with pytest.raises(ArtifactTooLargeError):
        fetch(s3_fetcher(max_bytes=1000), uri, data)


@needs_s3
def test_s3_partial_file_is_continued_from_its_end(
    s3_put: Callable[[str, bytes], str], s3_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(2 * MiB + 17)
    uri = s3_put("resume.bin", data)
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.partial").write_bytes(data[:MiB])
    assert fetch(s3_fetcher(), uri, data).read_bytes() == data


@needs_s3
def test_s3_partial_file_longer_than_the_object_is_dropped(
    s3_put: Callable[[str, bytes], str], s3_fetcher: Callable[..., RemoteFetcher], cache: Path
) -> None:
    data = blob(1000, seed=3)
    uri = s3_put("short.bin", data)
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.partial").write_bytes(b"x" * 5000)
    assert fetch(s3_fetcher(), uri, data).read_bytes() == data


@needs_s3
def test_s3_access_denied_raises_fetch_error_with_403_at_once(
    artifact_server: ArtifactServer, make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    artifact_server.add("/models/denied.bin", b"")
    artifact_server.fail("/models/denied.bin", *[status(403)] * 5)  # an S3 endpoint that says no
    options = {"endpoint_url": artifact_server.base_url, **CREDENTIALS}
    with pytest.raises(FetchError, match=r"access to s3://models/denied\.bin denied") as info:
        fetch(make_fetcher(s3_options=options), "s3://models/denied.bin", blob(1))
    assert info.value.status == 403
    assert sleeps == []


@needs_s3
def test_s3_endpoint_is_taken_from_aws_endpoint_url(
    s3_put: Callable[[str, bytes], str],
    make_fetcher: Callable[..., RemoteFetcher],
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = blob(1000, seed=7)
    uri = s3_put("env/v1.bin", data)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert fetch(make_fetcher(), uri, data).read_bytes() == data


@needs_s3
def test_s3_unreachable_endpoint_raises_fetch_error_after_retries(
    make_fetcher: Callable[..., RemoteFetcher], sleeps: Sleeps
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "retries": 0,
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
        **CREDENTIALS,
    }
    fetcher = make_fetcher(s3_options=options, retry=RetryPolicy(attempts=2))
    with pytest.raises(FetchError, match="after 2 attempts"):
        fetch(fetcher, f"s3://{BUCKET}/x", blob(1))
    assert len(sleeps) == 1
