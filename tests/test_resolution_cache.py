"""The resolution cache follows every change exactly as an uncached instance does.

Real parts: flagd's provider in FILE mode on real flag files (polled every 50 ms, replaced
atomically), OpenFeature's in-memory provider through :class:`modelflags.testing.InMemoryFlags`,
a real override file, pins. Under 8 threads of traffic, every request that started after the
cached instance dropped its answers must get exactly what an uncached instance answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagResolutionDetails
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import AbstractProvider, Metadata

from modelflags import ModelFlags
from modelflags.options import ResolutionCacheOptions
from modelflags.serving.answers import AnswerCache
from modelflags.serving.cacheable import Mode, classify, uses_time
from modelflags.testing import FakeClock, InMemoryFlags, pinned

from models import Constant
from support import Workspace

FLAG = "recommender"
POLL_MS = 50
Answer = tuple[str, str | None, str | None]
"""What a request was told: (requested version, variant, the flag's reason)."""


def write_flag_file(
    path: Path, *, moved: tuple[str, ...] = (), percent: int = 10, state: str = "ENABLED"
) -> None:
    """``moved`` users get v2; the others are split ``percent`` % to v2 by targeting key."""
    split = {"fractional": [["v1", 100 - percent], ["v2", percent]]}
    document = {
        "flags": {
            FLAG: {
                "state": state,
                "variants": {version: version for version in ("v1", "v2", "v3")},
                "defaultVariant": "v1",
                "targeting": {"if": [{"in": [{"var": "targetingKey"}, list(moved)]}, "v2", split]},
            }
        }
    }
    write_json(path, document)


def write_json(path: Path, document: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:.1f} s")
        time.sleep(0.005)


def answer(flags: ModelFlags, context: EvaluationContext) -> Answer:
    handle = flags.get_model(FLAG, context)
    return handle.requested_version, handle.variant, handle.flag_reason


def invalidations(flags: ModelFlags) -> int:
    report = flags.status()[FLAG].resolution_cache
    assert report is not None
    return report.invalidations


CONTEXTS = [
    EvaluationContext(f"user-{i}", {"plan": "beta" if i % 5 == 0 else "free", "n": i % 3})
    for i in range(120)
]


@dataclass
class Traffic:
    """Threads asking for ``contexts`` in a loop; each answer is kept with when it was asked."""

    flags: ModelFlags
    contexts: list[EvaluationContext]
    threads: int = 8
    records: list[tuple[float, int, Answer]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        self.rounds = [0] * self.threads
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            self._workers.append(worker)
            worker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10.0)
        assert not any(worker.is_alive() for worker in self._workers), "a worker hangs"

    def _run(self, index: int) -> None:
        mine: list[tuple[float, int, Answer]] = []
        count = len(self.contexts)
        deadline = time.monotonic() + 60.0
        i = index * 7
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                position = i % count
                asked = time.monotonic()
                mine.append((asked, position, answer(self.flags, self.contexts[position])))
                i += 1
                if i % count == 0:
                    self.rounds[index] += 1
                if len(mine) >= 256:
                    with self._lock:
                        self.records.extend(mine)
                    mine = []
        except BaseException as exc:  # every failure is a finding
            with self._lock:
                self.errors.append(exc)
        with self._lock:
            self.records.extend(mine)

    def wait_rounds(self, rounds: int, timeout: float = 20.0) -> None:
        """Wait until every thread went ``rounds`` more times through the contexts."""
        target = [count + rounds for count in self.rounds]
        wait_until(
            lambda: all(now >= want for now, want in zip(self.rounds, target, strict=True)),
            timeout,
            f"{rounds} rounds of traffic",
        )

    def asked_between(self, start: float, end: float) -> list[tuple[int, Answer]]:
        with self._lock:
            return [(pos, got) for at, pos, got in self.records if start <= at < end]


def follow(
    cached: ModelFlags,
    uncached: ModelFlags,
    changes: list[Callable[[], None]],
    *,
    contexts: list[EvaluationContext] = CONTEXTS,
) -> int:
    """Apply ``changes`` one by one under traffic on ``cached``; after each, every request that
    started once the cached instance dropped its answers gets what ``uncached`` answers now.
    Returns the number of requests checked."""
    checked = 0
    with Traffic(cached, contexts) as traffic:
        traffic.wait_rounds(2)
        for change in changes:
            before = invalidations(cached)
            change()
            wait_until(
                lambda seen=before: invalidations(cached) > seen, 5.0, "the change reached it"
            )
            dropped = time.monotonic()
            traffic.wait_rounds(2)
            until = time.monotonic()
            truth = [answer(uncached, context) for context in contexts]
            assert [answer(cached, context) for context in contexts] == truth
            asked = traffic.asked_between(dropped, until)
            wrong = [(contexts[pos].targeting_key, got) for pos, got in asked if got != truth[pos]]
            assert wrong == [], f"{len(wrong)} of {len(asked)} answers differ: {wrong[:5]}"
            checked += len(asked)
    assert traffic.errors == []
    return checked


@pytest.fixture
def registry(workspace: Workspace) -> Path:
    for label, version in enumerate(("v1", "v2", "v3"), start=1):
        workspace.add(FLAG, version, Constant(label))
    return workspace.write()


@pytest.fixture
def flag_file(tmp_path: Path) -> Iterator[Path]:
    """A flag file served by flagd's provider in FILE mode (the default provider)."""
    path = tmp_path / "flags.json"
    write_flag_file(path)
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=POLL_MS
        )
    )
    yield path
    api.shutdown()


# -- following changes under traffic ------------------------------------------------------------


@pytest.mark.slow
def test_eight_threads_follow_flagd_targeting_changes_exactly_as_without_the_cache(
    registry: Path, flag_file: Path
) -> None:
    """A user moved from v1 to v2, a split moved 10 -> 50 %, the flag disabled: each followed."""
    with (
        ModelFlags(registry) as cached,
        ModelFlags(registry, resolution_cache=False) as uncached,
    ):
        checked = follow(
            cached,
            uncached,
            [
                lambda: write_flag_file(flag_file, moved=("user-3",)),
                lambda: write_flag_file(flag_file, moved=("user-3",), percent=50),
                lambda: write_flag_file(flag_file, moved=("user-3",), percent=50, state="DISABLED"),
                lambda: write_flag_file(flag_file, percent=10),
            ],
        )
        report = cached.status()[FLAG].resolution_cache
    assert report is not None and report.state == "on"
    assert checked > 1000
    assert report.hits > report.misses  # the answers came from the cache, mostly


@pytest.mark.slow
def test_eight_threads_follow_in_memory_flag_changes_exactly_as_without_the_cache(
    registry: Path,
) -> None:
    """Values set on the in-memory provider reach every request after their change event."""
    memory = InMemoryFlags(recommender="v1").install()
    with (
        ModelFlags(registry) as cached,
        ModelFlags(registry, resolution_cache=False) as uncached,
    ):
        follow(
            cached,
            uncached,
            [
                lambda: memory.set(recommender="v2"),
                lambda: memory.set(recommender="v3"),
                lambda: memory.set(recommender="v1"),
            ],
        )
        report = cached.status()[FLAG].resolution_cache
    assert report is not None and report.entries == 1  # a flag without rules: one answer for all


@pytest.mark.slow
def test_pins_are_followed_under_traffic_and_the_flags_answer_again_afterwards(
    registry: Path, flag_file: Path
) -> None:
    """An instance pin and a process-wide pin win at once; leaving them restores the flags."""
    with (
        ModelFlags(registry) as cached,
        ModelFlags(registry, resolution_cache=False) as uncached,
    ):
        pin = cached.override(recommender="v3")
        process_pin = pinned(recommender="v2")

        def enter() -> None:
            pin.__enter__()
            uncached_pin.__enter__()

        def leave() -> None:
            pin.__exit__(None, None, None)
            uncached_pin.__exit__(None, None, None)

        uncached_pin = uncached.override(recommender="v3")
        follow(cached, uncached, [enter, leave])
        with Traffic(cached, CONTEXTS) as traffic:
            traffic.wait_rounds(1)
            with process_pin:
                started = time.monotonic()
                traffic.wait_rounds(2)
                asked = traffic.asked_between(started, time.monotonic())
            assert {got[0] for _, got in asked} == {"v2"}
        assert traffic.errors == []


@pytest.mark.slow
def test_override_file_edits_are_followed_under_traffic(registry: Path, tmp_path: Path) -> None:
    """Edits of a watched override file (rules on an attribute) reach every later request."""
    InMemoryFlags(recommender="v1").install()
    overrides = tmp_path / "overrides.json"
    write_json(overrides, {FLAG: [{"value": "v2", "when": {"plan": "beta"}}]})

    def edit(rules: list[dict[str, Any]]) -> Callable[[], None]:
        def change() -> None:
            write_json(overrides, {FLAG: rules})
            # the uncached instance watches the same file: wait until it read the edit too
            expected = rules[0]["value"]
            wait_until(
                lambda: answer(uncached, CONTEXTS[0])[0] == expected, 5.0, "the uncached edit"
            )

        return change

    with (
        ModelFlags(registry, overrides=overrides) as cached,
        ModelFlags(registry, overrides=overrides, resolution_cache=False) as uncached,
    ):
        follow(
            cached,
            uncached,
            [
                edit([{"value": "v3", "when": {"plan": "beta"}}]),
                edit([{"value": "v2", "when": {"plan": ["beta", "free"]}}]),
            ],
        )


# -- the race a generation closes ----------------------------------------------------------------


class HoldAfter(Hook):
    """An OpenFeature hook that holds one evaluation (of ``key``) after the provider answered."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.answered = threading.Event()
        self.release = threading.Event()

    def after(
        self, hook_context: HookContext, details: FlagEvaluationDetails[Any], hints: HookHints
    ) -> None:
        if hook_context.evaluation_context.targeting_key == self.key:
            self.answered.set()
            self.release.wait(5.0)


def test_an_answer_computed_before_a_change_is_never_kept_after_it(registry: Path) -> None:
    """An evaluation that straddles a change event does not store its (old) answer."""
    memory = InMemoryFlags(recommender="v1").install()
    hold = HoldAfter("slow-user")
    api.add_hooks([hold])
    options = ResolutionCacheOptions(with_hooks=True)
    with ModelFlags(registry, resolution_cache=options) as flags:
        # Asked once: the question is remembered, so its next answer would be kept.
        assert answer(flags, EvaluationContext("other"))[0] == "v1"
        results: list[Answer] = []
        slow = threading.Thread(
            target=lambda: results.append(answer(flags, EvaluationContext("slow-user")))
        )
        slow.start()
        assert hold.answered.wait(5.0)
        before = invalidations(flags)
        memory.set(recommender="v2")
        wait_until(lambda: invalidations(flags) > before, 5.0, "the change reached the cache")
        hold.release.set()
        slow.join(5.0)
        assert results == [("v1", "v1", "STATIC")]  # it started before the change
        assert answer(flags, EvaluationContext("slow-user"))[0] == "v2"
        assert answer(flags, EvaluationContext("anyone"))[0] == "v2"


# -- what is never reused -----------------------------------------------------------------------


def test_flagd_rules_that_read_the_time_are_never_cached(registry: Path, flag_file: Path) -> None:
    """A rule on ``$flagd.timestamp`` is evaluated on every request."""
    rule = {"if": [{">": [{"var": "$flagd.timestamp"}, 0]}, "v2", "v1"]}
    document = {
        "flags": {
            FLAG: {
                "state": "ENABLED",
                "variants": {"v1": "v1", "v2": "v2"},
                "defaultVariant": "v1",
                "targeting": rule,
            }
        }
    }
    with ModelFlags(registry) as flags:
        write_json(flag_file, document)
        wait_until(lambda: answer(flags, CONTEXTS[1])[0] == "v2", 5.0, "the edit")
        before = flags.status()[FLAG].resolution_cache
        for _ in range(20):
            assert answer(flags, CONTEXTS[1])[0] == "v2"
        after = flags.status()[FLAG].resolution_cache
    assert before is not None and after is not None
    assert (after.hits, after.entries) == (before.hits, 0)
    assert after.uncached == before.uncached + 20


@pytest.mark.parametrize(
    ("rule", "reads_time"),
    [
        ({"var": "$flagd.timestamp"}, True),
        ({"<": [{"var": ["$flagd.timestamp", 0]}, 5]}, True),
        ({"var": ""}, True),
        ({"var": "$flagd"}, True),
        ({"var": [{"cat": ["$flagd.", "timestamp"]}]}, True),
        ({"var": []}, True),
        ({"var": "$flagd.flagKey"}, False),
        ({"fractional": [["v1", 50], ["v2", 50]]}, False),
        ({"if": [{"in": [{"var": "plan"}, ["beta"]]}, "v3", "v1"]}, False),
        ({"starts_with": [{"var": "email"}, "ada"]}, False),
    ],
)
def test_rules_that_may_read_the_time_are_recognised(rule: object, reads_time: bool) -> None:
    """``uses_time`` catches direct, defaulted, computed and whole-object reads of the time."""
    assert uses_time(rule) is reads_time


def test_error_answers_and_unhashable_contexts_are_answered_but_never_kept(
    registry: Path, flag_file: Path
) -> None:
    """A missing flag serves the LKG each time; a list attribute is evaluated, not cached."""
    listed = EvaluationContext("user-1", {"groups": ["a", "b"]})
    with ModelFlags(registry) as flags:
        assert answer(flags, CONTEXTS[0])[0] in {"v1", "v2"}  # the flag is now known
        for _ in range(3):
            assert answer(flags, listed)[0] in {"v1", "v2"}
        write_json(flag_file, {"flags": {"other": {"state": "ENABLED", "variants": {"a": "a"}}}})
        wait_until(lambda: answer(flags, CONTEXTS[0])[2] == "ERROR", 5.0, "the flag removed")
        for _ in range(3):
            assert flags.get_model(FLAG, CONTEXTS[0]).reason == "ERROR"
        report = flags.status()[FLAG].resolution_cache
    assert report is not None and report.entries == 0 and report.uncached >= 6


def test_attribute_types_are_part_of_the_key(registry: Path, flag_file: Path) -> None:
    """``True``, ``1`` and ``1.0`` are equal in Python but not the same context."""
    with ModelFlags(registry) as flags:
        contexts = [EvaluationContext("u", {"beta": value}) for value in (True, 1, 1.0, "1")]
        for context in contexts * 3:  # kept the second time each is asked, hit the third
            answer(flags, context)
        report = flags.status()[FLAG].resolution_cache
    assert report is not None and report.entries == 4 and report.hits == 4


# -- what drops every answer --------------------------------------------------------------------


@pytest.mark.slow
def test_a_broken_flag_file_pauses_the_cache_until_flagd_recovers(
    registry: Path, flag_file: Path
) -> None:
    """PROVIDER_ERROR drops every answer and keeps none; a good file makes it work again."""
    with ModelFlags(registry) as flags:
        for context in CONTEXTS[:10] * 2:  # kept the second time each is asked
            answer(flags, context)

        def cache() -> Any:
            return flags.status()[FLAG].resolution_cache

        assert cache().state == "on" and cache().entries == 10
        flag_file.write_text("{ not json")
        wait_until(lambda: cache().state == "paused", 5.0, "the provider error")
        for context in CONTEXTS[:10]:
            answer(flags, context)
        assert cache().entries == 0
        write_flag_file(flag_file, percent=50)
        wait_until(lambda: cache().state == "on", 5.0, "the recovery")

        def kept_again() -> bool:
            for context in CONTEXTS[:10]:
                answer(flags, context)
            return bool(cache().entries == 10)

        wait_until(kept_again, 5.0, "answers kept again")
        with ModelFlags(registry, resolution_cache=False) as uncached:
            truth = [answer(uncached, context) for context in CONTEXTS[:10]]
        assert [answer(flags, context) for context in CONTEXTS[:10]] == truth


def test_a_new_global_evaluation_context_drops_every_answer(registry: Path, tmp_path: Path) -> None:
    """The API-level context takes part in every evaluation: replacing it starts afresh."""
    path = tmp_path / "flags.json"
    rule = {"if": [{"==": [{"var": "region"}, "eu"]}, "v3", "v1"]}
    variants = {"v1": "v1", "v3": "v3"}
    flag = {"state": "ENABLED", "variants": variants, "defaultVariant": "v1", "targeting": rule}
    write_json(path, {"flags": {FLAG: flag}})
    api.set_provider_and_wait(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path))
    )
    try:
        with ModelFlags(registry) as flags:
            assert answer(flags, CONTEXTS[0])[0] == "v1"
            assert answer(flags, CONTEXTS[0])[0] == "v1"
            api.set_evaluation_context(EvaluationContext(attributes={"region": "eu"}))
            assert answer(flags, CONTEXTS[0])[0] == "v3"
            assert answer(flags, CONTEXTS[0])[0] == "v3"
    finally:
        api.shutdown()


class CountingHook(Hook):
    def __init__(self) -> None:
        self.calls = 0

    def before(self, hook_context: HookContext, hints: HookHints) -> None:
        self.calls += 1


def test_registered_hooks_turn_the_cache_off_unless_asked_to_keep_it(
    registry: Path, flag_file: Path
) -> None:
    """A hook sees every evaluation by default; ``with_hooks`` trades that for cache hits."""
    hook = CountingHook()
    api.add_hooks([hook])
    with ModelFlags(registry) as flags:
        for _ in range(10):
            answer(flags, CONTEXTS[0])
        report = flags.status()[FLAG].resolution_cache
        assert report is not None and report.state == "bypassed" and report.hits == 0
    assert hook.calls == 10
    options = ResolutionCacheOptions(with_hooks=True)
    with ModelFlags(registry, resolution_cache=options) as flags:
        for _ in range(10):
            answer(flags, CONTEXTS[0])
        report = flags.status()[FLAG].resolution_cache
        assert report is not None and report.state == "on" and report.hits == 8
    assert hook.calls == 12  # the hook ran on the two misses, not on the hits


# -- providers without events -------------------------------------------------------------------


class DictProvider(AbstractProvider):
    """A provider that announces nothing: its values change silently."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get_metadata(self) -> Metadata:
        return Metadata(name="dict")

    def resolve_boolean_details(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def resolve_integer_details(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def resolve_float_details(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def resolve_object_details(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return FlagResolutionDetails(self.values[flag_key], variant="x", reason="TARGETING_MATCH")


def test_a_provider_without_events_is_cached_only_with_a_ttl_and_at_most_that_long(
    registry: Path,
) -> None:
    """No TTL: every request asks. A TTL: answers are reused, and never older than the TTL."""
    provider = DictProvider({FLAG: "v1"})
    api.set_provider_and_wait(provider)
    clock = FakeClock()
    with ModelFlags(registry, clock=clock) as flags:
        for _ in range(5):
            answer(flags, CONTEXTS[0])
        report = flags.status()[FLAG].resolution_cache
        assert report is not None and report.hits == 0 and report.uncached == 5
    options = ResolutionCacheOptions(ttl=10.0)
    with ModelFlags(registry, clock=clock, resolution_cache=options) as flags:
        assert answer(flags, CONTEXTS[0])[0] == "v1"
        assert answer(flags, CONTEXTS[0])[0] == "v1"  # kept the second time it is asked
        provider.values[FLAG] = "v2"  # silently
        clock.advance(9.5)
        assert answer(flags, CONTEXTS[0])[0] == "v1"
        clock.advance(0.5)
        assert answer(flags, CONTEXTS[0])[0] == "v2"


def test_unleash_is_cached_only_when_trusted(tmp_path: Path) -> None:
    """Unleash counts evaluations and may use random stickiness: off unless vouched for."""
    from openfeature.contrib.provider.unleash import UnleashProvider
    from UnleashClient.cache import FileCache

    provider = UnleashProvider(
        url="http://127.0.0.1:9/api",
        app_name="modelflags-tests",
        api_token="token",
        cache=FileCache("modelflags-tests", directory=str(tmp_path)),
    )
    assert classify(provider, FLAG, ttl=None).mode is Mode.NEVER
    assert classify(provider, FLAG, ttl=60.0).mode is Mode.NEVER
    trusted = classify(provider, FLAG, ttl=None, trusted={"Unleash Provider"})
    assert trusted.mode is Mode.KEYED


# -- memory ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_million_distinct_users_stay_within_the_bound(flag_file: Path) -> None:
    """The table never holds more than ``max_entries`` answers, and its memory stops growing.

    Memory is traced over a stretch after the table filled: every traced entry replaces one
    made before, so what is traced stays flat when, and only when, old entries are freed.
    """
    cache = AnswerCache({FLAG: [FLAG]}, api.get_client(), max_entries=10_000)
    table = cache.tables[FLAG]
    details = api.get_client().get_string_details(FLAG, "v1", CONTEXTS[0])
    traced: list[int] = []
    try:
        for i in range(1_000_000):
            context = EvaluationContext(f"user-{i}", {"plan": "free"})
            table.store(table.generation, FLAG, "v1", context, details)  # remembered
            table.store(table.generation, FLAG, "v1", context, details)  # kept
            if i % 100_000 == 0:
                assert len(table) <= 10_000
            if i == 200_000:
                tracemalloc.start()
            elif i in (300_000, 400_000, 500_000):
                traced.append(tracemalloc.get_traced_memory()[0])
            elif i == 500_001:
                tracemalloc.stop()
    finally:
        tracemalloc.stop()
    assert len(table) == 10_000
    assert max(traced) < traced[0] * 1.05, traced  # flat: each new answer replaced an old one
    assert table.lookup(FLAG, "v1", EvaluationContext("user-999999", {"plan": "free"}))[0]
    assert table.lookup(FLAG, "v1", EvaluationContext("user-0", {"plan": "free"}))[0] is None


# -- async, anonymous requests, Unleash's own events ---------------------------------------------


def test_async_requests_use_and_follow_the_cache(registry: Path, flag_file: Path) -> None:
    """``get_model_async`` reads kept answers and sees a change like ``get_model``."""

    async def ask(flags: ModelFlags) -> list[str]:
        handles = [await flags.get_model_async(FLAG, context) for context in CONTEXTS[:20]]
        return [handle.requested_version for handle in handles]

    with ModelFlags(registry) as flags, ModelFlags(registry, resolution_cache=False) as plain:
        for _ in range(3):
            assert asyncio.run(ask(flags)) == asyncio.run(ask(plain))
        report = flags.status()[FLAG].resolution_cache
        assert report is not None and report.hits >= 20
        before = report.invalidations
        write_flag_file(flag_file, moved=tuple(c.targeting_key or "" for c in CONTEXTS[:20]))
        wait_until(lambda: invalidations(flags) > before, 5.0, "the edit")
        assert asyncio.run(ask(flags)) == ["v2"] * 20


def test_requests_without_a_targeting_key_do_not_make_flagd_look_broken(
    registry: Path, flag_file: Path
) -> None:
    """flagd logs a fractional split asked without a key at ERROR: one evaluation's input, not
    the source's health, so the source stays ready and the cache keeps working."""
    with ModelFlags(registry) as flags:
        for _ in range(3):
            assert flags.get_model(FLAG).requested_version == "v1"  # the default variant
            answer(flags, CONTEXTS[0])
        status = flags.status()[FLAG]
    assert status.flag_source is not None and status.flag_source.state == "ready"
    assert status.resolution_cache is not None and status.resolution_cache.state == "on"
    assert status.resolution_cache.hits >= 1


class Features(BaseHTTPRequestHandler):
    """The Unleash client API on 127.0.0.1: one features document, with an ETag."""

    document: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        body = json.dumps(Features.document).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def unleash_features(weights: dict[str, int]) -> dict[str, Any]:
    variants = [
        {
            "name": version,
            "weight": weight * 10,
            "weightType": "fix" if index < len(weights) - 1 else "variable",
            "stickiness": "default",
            "payload": {"type": "string", "value": version},
        }
        for index, (version, weight) in enumerate(weights.items())
    ]
    strategy = {
        "name": "flexibleRollout",
        "constraints": [],
        "parameters": {"rollout": "100", "stickiness": "default", "groupId": FLAG},
        "variants": variants,
    }
    feature = {"name": FLAG, "type": "release", "enabled": True, "strategies": [strategy]}
    return {"version": 2, "features": [{**feature, "project": "default", "variants": []}]}


@pytest.mark.slow
def test_trusted_unleash_answers_are_kept_until_its_next_fetch_changes_them(
    registry: Path, tmp_path: Path
) -> None:
    """Unleash's own fetched event (through the bridge) drops the answers it kept."""
    from openfeature.contrib.provider.unleash import UnleashProvider
    from UnleashClient.cache import FileCache

    Features.document = unleash_features({"v1": 100, "v2": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), Features)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    provider = UnleashProvider(
        url=f"http://127.0.0.1:{server.server_port}/api",
        app_name="modelflags-tests",
        api_token="token",
        cache=FileCache("modelflags-tests", directory=str(tmp_path / "unleash")),
    )
    provider.client.unleash_refresh_interval = 1
    provider.client.unleash_disable_metrics = True
    provider.client.unleash_disable_registration = True
    try:
        api.set_provider_and_wait(provider)
        trusted = ResolutionCacheOptions(trusted=frozenset({"Unleash Provider"}))
        with (
            ModelFlags(registry, resolution_cache=trusted) as cached,
            ModelFlags(registry, resolution_cache=False) as uncached,
        ):
            for _ in range(3):
                assert {answer(cached, c)[0] for c in CONTEXTS[:20]} == {"v1"}
            report = cached.status()[FLAG].resolution_cache
            assert report is not None and report.hits >= 20
            before = report.invalidations
            Features.document = unleash_features({"v1": 0, "v2": 100})
            wait_until(lambda: answer(uncached, CONTEXTS[0])[0] == "v2", 10.0, "the new features")

            def follows() -> bool:
                truth = [answer(uncached, c) for c in CONTEXTS[:20]]
                return [answer(cached, c) for c in CONTEXTS[:20]] == truth

            wait_until(follows, 5.0, "the cached instance following Unleash")
            assert invalidations(cached) > before  # the fetched event dropped what it kept
            assert follows()
    finally:
        api.shutdown()
        server.shutdown()
        server.server_close()
