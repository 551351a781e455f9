"""The cache of loaded versions: bounded by count and bytes, LKG pinned, evictions reload lazily."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from modelflags import ModelFlags
from modelflags.serving.cache import CacheEntry, ModelCache

from models import Constant
from support import Workspace, wait_until


def entry(nbytes: int) -> Callable[[], CacheEntry]:
    return lambda: CacheEntry(object(), nbytes)


def test_count_bound_evicts_least_recently_used() -> None:
    """With room for two, a third entry evicts the least recently used one."""
    cache = ModelCache(max_models=2)
    cache.get_or_load("a", entry(1))
    cache.get_or_load("b", entry(1))
    cache.get("a")  # a is now more recent than b
    cache.get_or_load("c", entry(1))
    assert sorted(cache.snapshot()) == ["a", "c"]


def test_byte_bound_evicts_until_it_fits() -> None:
    """Entries are sized by artifact bytes; inserting past max_bytes evicts the oldest."""
    cache = ModelCache(max_models=10, max_bytes=100)
    cache.get_or_load("a", entry(40))
    cache.get_or_load("b", entry(40))
    cache.get_or_load("c", entry(40))
    assert sorted(cache.snapshot()) == ["b", "c"]


def test_oversized_entry_is_served_but_not_stored() -> None:
    """An artifact larger than the whole cache is returned to its caller without evicting others."""
    cache = ModelCache(max_models=10, max_bytes=100)
    cache.get_or_load("a", entry(40))
    big = cache.get_or_load("big", entry(500))
    assert big.nbytes == 500
    assert sorted(cache.snapshot()) == ["a"]
    assert cache.oversized == 1


def test_pinned_entries_are_never_evicted_and_unpin_restores_them() -> None:
    """A pinned key survives any amount of churn; unpinned, it is evictable again."""
    cache = ModelCache(max_models=1, max_bytes=50)
    cache.pin("lkg")
    cache.get_or_load("lkg", entry(40))
    for key in "abcdef":
        cache.get_or_load(key, entry(40))
    assert cache.snapshot() == {"lkg": (40, True), "f": (40, False)}
    cache.unpin("lkg")
    cache.get_or_load("g", entry(40))
    assert sorted(cache.snapshot()) == ["g"]


@pytest.mark.slow
def test_failed_load_is_shared_by_concurrent_callers() -> None:
    """All callers that joined a failing load get the same error, and nothing is cached."""
    cache = ModelCache()
    started = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def failing() -> CacheEntry:
        started.set()
        release.wait(5)
        raise OSError("disk gone")

    def call() -> None:
        try:
            cache.get_or_load("k", failing)
        except OSError as exc:
            with lock:
                errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    assert started.wait(5)
    rest = [threading.Thread(target=call) for _ in range(3)]
    for thread in rest:
        thread.start()
    wait_until(lambda: cache.joiners("k") == 3, 5.0, "the three joiners waiting on the load")
    release.set()
    for thread in [first, *rest]:
        thread.join(5)
    assert len(errors) == 4 and len({id(e) for e in errors}) == 1
    assert cache.get("k") is None and cache.loads == 0


def test_invalid_bounds_are_rejected() -> None:
    """Bounds must be positive."""
    with pytest.raises(ValueError):
        ModelCache(max_models=0)
    with pytest.raises(ValueError):
        ModelCache(max_bytes=0)


def test_evicted_version_reloads_lazily_and_lkg_stays(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """With room for one unpinned version, switching evicts and reloads; the LKG stays pinned."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    workspace.add("m", "v3", Constant(3))
    loaded: list[str] = []
    with ModelFlags(
        workspace.write(),
        max_models=1,
        listeners=[lambda e: loaded.append(getattr(e, "version", ""))],
    ) as flags:
        for version in ["v2", "v3", "v2"]:
            set_flags(m=version)
            assert flags.get_model("m").version == version
        set_flags(m="v1")
        flags.get_model("m")
        assert sorted(flags.status()["m"].loaded) == ["v1", "v2"]
        assert flags.status()["m"].pinned == ("v1",)
        flags.flush(5)
    assert loaded == ["v2", "v3", "v2", "v1"]
