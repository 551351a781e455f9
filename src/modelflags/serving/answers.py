"""The resolution cache: a flag's recent answers, per model, reused until the flags change.

For a given flag configuration a provider's answer for (flag, default value, context) cannot change
until the configuration does, and the providers :mod:`~modelflags.serving.cacheable` knows announce
every change. So most requests (from users seen moments ago) can be answered without asking the
provider. Correctness rests on four rules:

1. Only answers that are provably reusable are kept: the provider announces changes (or the user
   set a TTL, a staleness bound), the flag's rules read nothing but the context, the answer is no
   error, no user hook could see or change the evaluation, and no transaction context could add
   to it. Error answers are never kept.
2. A change event (for the flags it names), a provider error or stale state, a ready event (a new
   provider, or one that recovered), a new global or client evaluation context, a new hook or
   provider, a pin and an override change start a new *generation* of the affected tables: their
   entries are gone before any later request reads them.
3. An evaluation that started before a generation began never stores its answer: the generation is
   read before the provider is asked and checked again, under the table's lock, at store time.
4. The key is one flat tuple: the flag key, the default value (the last known good version), the
   targeting key, the attributes' names and values, and the values' types (``1``, ``1.0`` and
   ``True`` are equal in Python, not to a rule); the number of attributes fixes every position.
   Contexts with unhashable attribute values (lists, mappings) are not cached.

Each table holds at most ``max_entries`` answers. An answer is kept the second time its question
is asked, not the first (the "doorkeeper" of TinyLFU, Einziger, Friedman and Manes 2017: a set of
the hashes of questions asked once, emptied after 4 x ``max_entries`` of them), so users seen once
do not push out those who come back, and a stream of new users costs a hash and a set insert
instead of an entry. Entries are evicted by second chance (the CLOCK algorithm, Corbato 1968: a
hit marks its entry without taking a lock; on insert, the oldest entries that were hit since they
were last passed over are moved to the back once instead of being evicted). Hits and entries are
read without a lock (single dictionary operations, atomic under the interpreter lock); inserts
and clears take the table's lock, never around a provider. Hit counts are incremented without a
lock, so they are approximate under concurrency.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Mapping
from itertools import chain
from types import MappingProxyType
from typing import Any

from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails

from modelflags.serving.cacheable import Mode, Verdict, classify
from modelflags.serving.surroundings import Surroundings
from modelflags.telemetry.status import ResolutionCacheStatus

__all__ = ["AnswerCache", "AnswerTable"]

logger = logging.getLogger(__name__)

_UNCACHEABLE_REASONS = frozenset({"ERROR", "STALE"})
_NEVER, _STATIC, _KEYED = Mode.NEVER, Mode.STATIC, Mode.KEYED
_flat = chain.from_iterable
_DETAILS, _USED = 0, 1  # an entry is a two-item list: cheaper to make than an object
_DOORKEEPER_SPAN = 4  # questions asked once are remembered for about 4 x max_entries more
_SECOND_CHANCES = 32  # at most this many entries are passed over per insert (bounded work)


class AnswerTable:
    """The answers of one model's flags (its flag and shadow flag).

    Safe to share between threads: :meth:`lookup` takes no lock; :meth:`store` and :meth:`clear`
    take the table's lock and never call out while holding it.
    """

    __slots__ = (
        "_lock",
        "_owner",
        "_seen",
        "deadline",
        "entries",
        "generation",
        "hits",
        "invalidations",
        "misses",
        "model",
        "modes",
        "uncached",
    )

    def __init__(self, owner: AnswerCache, model: str) -> None:
        self._owner = owner
        self._lock = threading.Lock()
        self.model = model
        self.entries: OrderedDict[Hashable, list[Any]] = OrderedDict()  # [details, used]
        self.modes: dict[str, Mode] = {}
        self._seen: set[int] = set()  # hashes of questions asked once (the doorkeeper)
        self.generation = 0
        self.deadline: float | None = None
        self.hits = self.misses = self.uncached = self.invalidations = 0

    def lookup(
        self, flag_key: str, default: str, context: EvaluationContext
    ) -> tuple[FlagEvaluationDetails[Any] | None, Hashable | None]:
        """The kept answer for this question (or ``None``: then ask, and :meth:`store`), and the
        question's key when it may be kept (hand it to :meth:`store`).

        The hot path: what surrounds the flags is checked and the key built inline.
        """
        mode = self.modes.get(flag_key)
        if mode is None or mode is _NEVER:
            return None, None
        owner = self._owner
        surroundings = owner.surroundings
        if surroundings.moved() or not surroundings.safe:
            return None, None
        deadline = self.deadline
        if deadline is not None and owner.clock() >= deadline:
            self.clear()
            return None, None
        if mode is _STATIC:
            key: Hashable = (flag_key, default)
        else:
            targeting_key = context.targeting_key
            if targeting_key is None and mode is _KEYED:
                return None, None
            attributes = context.attributes
            if attributes:  # one flat tuple: names and values, then the values' types
                key = (
                    flag_key,
                    default,
                    targeting_key,
                    *_flat(attributes.items()),
                    *map(type, attributes.values()),
                )
            else:
                key = (flag_key, default, targeting_key)
        try:
            entry = self.entries.get(key)
        except TypeError:  # an attribute value that cannot be hashed
            return None, None
        if entry is None:
            return None, key
        entry[_USED] = True
        self.hits += 1
        return entry[_DETAILS], key

    def store(
        self,
        generation: int,
        flag_key: str,
        default: str,
        context: EvaluationContext,
        details: FlagEvaluationDetails[Any],
        key: Hashable | None = None,
    ) -> None:
        """Keep ``details`` if it may be reused and no generation began since ``generation``
        (``key``: the one :meth:`lookup` gave, if any).

        What surrounds the flags is not checked again here: a change that happened while the
        provider was asked is seen by the next lookup, which drops every answer.
        """
        owner = self._owner
        if details.error_code is not None or details.reason in _UNCACHEABLE_REASONS:
            self.uncached += 1
            return
        if owner._paused or not owner.surroundings.safe:
            owner.refused()
            self.uncached += 1
            return
        if key is None:
            mode = self.modes.get(flag_key)
            if mode is None:
                verdict = owner.verdict(flag_key)  # reads the provider: outside the lock
                with self._lock:
                    if generation != self.generation:
                        return
                    mode = self.modes.setdefault(flag_key, verdict.mode)
                    if verdict.bounded and self.deadline is None and owner.ttl is not None:
                        self.deadline = owner.clock() + owner.ttl
            key = None if mode is _NEVER else _key(mode, flag_key, default, context)
            if key is None:
                self.uncached += 1
                return
        if generation != self.generation:  # checked again under the lock before it is kept
            return
        try:
            fingerprint = hash(key)
        except TypeError:  # an attribute value that cannot be hashed
            self.uncached += 1
            return
        seen = self._seen
        if fingerprint not in seen:  # asked once so far: remember the question, not the answer
            self.misses += 1
            seen.add(fingerprint)
            if len(seen) > owner.max_entries * _DOORKEEPER_SPAN:
                seen.clear()  # a fresh window: questions asked once long ago are forgotten
            return
        seen.discard(fingerprint)
        metadata = details.flag_metadata
        if type(metadata) is dict:  # shared from now on: read-only (the SDK made it for this call)
            details.flag_metadata = MappingProxyType(metadata)
        entry = [details, False]
        with self._lock:
            if generation != self.generation:
                return
            entries = self.entries
            entries[key] = entry
            self.misses += 1
            if len(entries) > owner.max_entries:
                _evict(entries, owner.max_entries)

    def reset_after_fork(self) -> None:
        """In a child process just forked: a fresh lock and no kept answers."""
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Start a new generation: every kept answer and classification is dropped."""
        with self._lock:
            self.generation += 1
            self.entries = OrderedDict()  # questions asked once stay remembered: no answers
            self.modes = {}
            self.deadline = None
            self.invalidations += 1

    def __len__(self) -> int:
        return len(self.entries)


def _evict(entries: OrderedDict[Hashable, list[Any]], bound: int) -> None:
    """Evict down to ``bound`` by second chance (called under the table's lock)."""
    passes = 0
    while len(entries) > bound:
        key, entry = entries.popitem(last=False)
        if entry[_USED] and passes < _SECOND_CHANCES:
            entry[_USED] = False
            entries[key] = entry
            passes += 1


def _key(mode: Mode, flag_key: str, default: str, context: EvaluationContext) -> Hashable | None:
    """The key of a question (as :meth:`AnswerTable.lookup` builds it inline)."""
    if mode is Mode.STATIC:
        return (flag_key, default)
    targeting_key = context.targeting_key
    if targeting_key is None and mode is Mode.KEYED:
        return None
    attributes = context.attributes
    if not attributes:
        return (flag_key, default, targeting_key)
    return (
        flag_key,
        default,
        targeting_key,
        *_flat(attributes.items()),
        *map(type, attributes.values()),
    )


class AnswerCache:
    """The resolution cache of one :class:`~modelflags.ModelFlags`: a table per model.

    ``models`` maps each model to its flag keys (flag and shadow flag); ``client`` is the
    OpenFeature client whose provider answers; ``overrides`` says an override layer answers
    before it (its rules read the context, so no flag is static then). ``max_entries`` bounds each
    table; ``ttl`` bounds the age of answers of providers that announce no changes (``None``:
    those are not cached); ``trusted`` names providers the user vouches for; ``with_hooks`` keeps
    the cache on while API or client hooks are registered (they then do not run on a hit);
    ``probe`` is asked, while paused, whether the flag source recovered.

    Safe to share between threads.
    """

    def __init__(
        self,
        models: Mapping[str, Collection[str]],
        client: OpenFeatureClient,
        *,
        max_entries: int = 10_000,
        ttl: float | None = None,
        trusted: Collection[str] = (),
        with_hooks: bool = False,
        overrides: bool = False,
        probe: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("the resolution cache needs room for at least one answer per model")
        if ttl is not None and ttl <= 0:
            raise ValueError("the resolution cache's ttl must be positive (or None)")
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self.trusted = frozenset(trusted)
        self.with_hooks = with_hooks
        self._client = client
        self._overrides = overrides
        self._probe = probe
        self._flags = {name: frozenset(keys) for name, keys in models.items()}
        self._lock = threading.Lock()
        self._paused = False
        self.tables: dict[str, AnswerTable] = {}
        self.surroundings = Surroundings(client, with_hooks=with_hooks, on_change=self.forget)
        self.tables = {name: AnswerTable(self, name) for name in models}

    # -- the hot path ---------------------------------------------------------------------------

    def refused(self) -> None:
        """An answer was not kept (paused, or unsafe surroundings): look again for a change."""
        if self._paused:
            if self._probe is not None:
                self._probe()  # may resume
        else:
            self.surroundings.moved()

    def verdict(self, flag_key: str) -> Verdict:
        """How answers for ``flag_key`` may be reused, from the provider set now."""
        verdict = classify(self._client.provider, flag_key, ttl=self.ttl, trusted=self.trusted)
        if verdict.mode is Mode.STATIC and self._overrides:
            return Verdict(Mode.CONTEXT, verdict.bounded, verdict.why)
        return verdict

    # -- generations ----------------------------------------------------------------------------

    def flags_changed(self, changed: frozenset[str] | None) -> None:
        """A change event: drop the answers of the models whose flags it names (all: ``None``)."""
        for name, keys in self._flags.items():
            if changed is None or not keys.isdisjoint(changed):
                self.tables[name].clear()

    def forget(self, models: Collection[str] | None = None) -> None:
        """Drop the answers of ``models`` (all: ``None``): a pin or another local change."""
        for name, table in self.tables.items():
            if models is None or name in models:
                table.clear()

    def source_changed(self, state: str) -> None:
        """The flag source is ``"error"``, ``"stale"`` or ``"ready"`` (a new or recovered provider).

        Every answer is dropped; in error or stale, nothing is kept until the source is ready.
        """
        with self._lock:
            was = self._paused
            self._paused = state != "ready"
        self.forget()
        if was != self._paused:
            logger.info(
                "resolution cache %s (flag source %s)", "paused" if self._paused else "on", state
            )

    def reset_after_fork(self) -> None:
        """In a child process just forked: fresh locks, and every table emptied."""
        self._lock = threading.Lock()
        self.surroundings.reset_after_fork()
        for table in self.tables.values():
            table.reset_after_fork()

    # -- reporting ------------------------------------------------------------------------------

    def report(self, model: str) -> ResolutionCacheStatus:
        """The state of ``model``'s table now."""
        table = self.tables[model]
        if self._paused:
            state = "paused"
        elif not self.surroundings.safe:
            state = "bypassed"
        else:
            state = "on"
        return ResolutionCacheStatus(
            state,
            len(table),
            self.max_entries,
            table.hits,
            table.misses,
            table.uncached,
            table.invalidations,
            self.ttl,
        )
