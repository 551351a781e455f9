"""Events: what happened, as small frozen records, and the dispatcher that delivers them.

Every event the package emits is one of the classes of :data:`Event` (a typed union), named for
what happened::

    VersionLoaded          a version was fetched, verified and deserialized
    VersionLoadFailed      a version could not be loaded
    FallbackServed         a call was answered by the last known good version after a fresh failure
    VersionQuarantined     a version will not be tried again until its back-off expires
    LastKnownGoodChanged   another version is now the last known good one
    PrewarmCompleted       a change event made a background pass load what flags now select
    ShadowCompared         a mirrored call ran on the shadow version and was compared
    GuardrailBreached      a guardrail's sequential test is confident a rule is broken (evidence)
    VersionRolledBack      a version was pinned away; the last known good version serves
    GuardrailAlerted       a guardrail whose action is "alert" fired; nothing was changed
    RollbackProposed       a guardrail whose action is "confirm" fired: a person decides
    RollbackDismissed      a person (or the confirmation timeout) kept a proposed version serving
    RollbackVerified       after a rollback, the breached figure is back at the LKG's level
    RollbackIneffective    after a rollback, the regression persists on the LKG too
    ActuatorFailed         changing a flag at its source failed; the local decision stands
    DriftDetected          a model's input has drifted from the training sample of the version

The names of earlier releases (``Loaded``, ``LoadFailed``, ``FellBack``, ``Quarantined``,
``BecameLKG``, ``Prewarmed``, ``ShadowResult``, ``Breach``, ``RolledBack``, ``GuardrailAlert``)
are aliases of these classes.

Events are queued (bounded; when full, new events are dropped and counted) and delivered on one
daemon thread, so a slow or failing listener never delays or breaks a request. A listener that
raises is logged, counted, and skipped. A listener may subscribe to some types only
(``types=(FallbackServed, VersionRolledBack)``), as OpenFeature handlers subscribe per event.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from modelflags.registry.guardrails import Rule
from modelflags.telemetry.evidence import Evidence

__all__ = [
    "ActuatorFailed",
    "BecameLKG",
    "Breach",
    "DriftDetected",
    "Event",
    "EventDispatcher",
    "FallbackServed",
    "FellBack",
    "GuardrailAlert",
    "GuardrailAlerted",
    "GuardrailBreached",
    "LastKnownGoodChanged",
    "Listener",
    "LoadFailed",
    "Loaded",
    "PrewarmCompleted",
    "Prewarmed",
    "Quarantined",
    "RollbackDismissed",
    "RollbackIneffective",
    "RollbackProposed",
    "RollbackVerified",
    "RolledBack",
    "ShadowCompared",
    "ShadowResult",
    "VersionLoadFailed",
    "VersionLoaded",
    "VersionQuarantined",
    "VersionRolledBack",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VersionLoaded:
    """A version was loaded (``seconds`` to fetch, verify and deserialize; artifact ``nbytes``)."""

    model: str
    version: str
    seconds: float
    nbytes: int


@dataclass(frozen=True, slots=True)
class VersionLoadFailed:
    """A version failed to load; ``error`` is the message of the typed error."""

    model: str
    version: str
    error: str
    error_type: str


@dataclass(frozen=True, slots=True)
class FallbackServed:
    """A call was served by ``served`` instead of ``requested`` after a fresh failure.

    ``stage`` is ``"load"`` or ``"inference"``; ``method`` names the inference method, if any.
    """

    model: str
    requested: str
    served: str
    stage: str
    cause: str
    method: str | None = None


@dataclass(frozen=True, slots=True)
class VersionQuarantined:
    """A version is quarantined until ``retry_at`` (clock seconds) after ``failures`` in a row."""

    model: str
    version: str
    cause: str
    failures: int
    retry_at: float


@dataclass(frozen=True, slots=True)
class LastKnownGoodChanged:
    """``version`` is now the last known good version of ``model`` (``previous`` was)."""

    model: str
    version: str
    previous: str


@dataclass(frozen=True, slots=True)
class PrewarmCompleted:
    """A prewarm pass for ``model`` after a flag change: what it loaded, and how long it took."""

    model: str
    versions: tuple[str, ...]
    failed: tuple[str, ...]
    contexts: int
    seconds: float


@dataclass(frozen=True, slots=True)
class ShadowCompared:
    """One compared (or failed) shadow call."""

    model: str
    primary: str
    shadow: str
    method: str
    agreed: float | None
    mean_abs_diff: float | None
    max_abs_diff: float | None
    primary_latency: float
    shadow_latency: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class GuardrailBreached:
    """A rule that ``version`` of ``model`` has broken: the evidence a decision rests on.

    ``evidence`` is the sequential test's verdict: the estimate and its confidence interval (in
    the test's own units, e.g. the relative change of the mean against the LKG), the tolerance,
    alpha, the counts on both sides and the method. The other fields give the same story in the
    rule's natural units: ``observed`` is the candidate's figure (error rate 0..1, p95 in
    milliseconds, outcome mean), ``threshold`` the figure it may not pass (for an outcome drop,
    the lowest acceptable mean: the LKG's mean less the tolerance; for an increase, the LKG's
    figure plus it), ``lkg_observed`` the LKG's figure over the same period. ``requests`` and
    ``lkg_requests`` count the observations behind them, ``window_s`` the seconds they cover
    (since the comparison started). ``since`` is the clock time the breach started, ``fired_at``
    the time it was reported (later by ``sustained_s`` when that is set). ``action`` is the
    rules' action (``"rollback"``, ``"alert"`` or ``"confirm"``).
    """

    model: str
    version: str
    lkg: str
    rule: Rule
    observed: float
    threshold: float
    lkg_observed: float | None
    window_s: float
    since: float
    fired_at: float
    requests: int
    lkg_requests: int
    action: str
    evidence: Evidence | None = None


@dataclass(frozen=True, slots=True)
class VersionRolledBack:
    """``version`` of ``model`` is pinned away; ``lkg`` serves. ``breach`` is the evidence (none
    for a rollback by hand)."""

    model: str
    version: str
    lkg: str
    reason: str
    breach: GuardrailBreached | None

    @property
    def evidence(self) -> Evidence | None:
        """The statistics behind the rollback (``breach.evidence``), if a breach caused it."""
        return None if self.breach is None else self.breach.evidence


@dataclass(frozen=True, slots=True)
class GuardrailAlerted:
    """A guardrail whose action is ``alert`` fired: nothing was changed."""

    model: str
    version: str
    breach: GuardrailBreached


@dataclass(frozen=True, slots=True)
class RollbackProposed:
    """A breach of ``version`` asks a person to confirm or dismiss its rollback.

    ``proposed_at`` and ``expires_at`` are clock seconds (``expires_at`` is ``None`` without a
    ``confirm_timeout_s``); ``on_timeout`` is what happens then (``"rollback"`` or ``"keep"``).
    """

    model: str
    version: str
    lkg: str
    breach: GuardrailBreached
    proposed_at: float
    expires_at: float | None
    on_timeout: str


@dataclass(frozen=True, slots=True)
class RollbackDismissed:
    """A proposed rollback was dismissed: ``version`` keeps serving. ``by`` is who decided
    (``"timeout"`` when nobody did in time)."""

    model: str
    version: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class RollbackVerified:
    """After ``version`` was rolled back, the served version's ``rule`` figure is back at the
    LKG's level: ``before`` is the LKG's figure over the comparison that breached, ``after`` its
    figure since the rollback (``requests`` observations). ``evidence`` is the rule's test of
    "after" against "before": its interval lies within the rule's tolerance."""

    model: str
    version: str
    lkg: str
    rule: str
    before: float | None
    after: float | None
    requests: int
    evidence: Evidence | None = None


@dataclass(frozen=True, slots=True)
class RollbackIneffective:
    """After ``version`` was rolled back, the regression persists on the LKG too: the cause is
    probably not the version (infrastructure, data). Fields as :class:`RollbackVerified`; here
    the rule's test finds "after" beyond the tolerance of "before" (or of the absolute limit)."""

    model: str
    version: str
    lkg: str
    rule: str
    before: float | None
    after: float | None
    requests: int
    evidence: Evidence | None = None


@dataclass(frozen=True, slots=True)
class ActuatorFailed:
    """The rollback at the flag's source failed; the local rollback stands."""

    model: str
    version: str
    flag_key: str
    error: str


@dataclass(frozen=True, slots=True)
class DriftDetected:
    """The input ``version`` of ``model`` was served has drifted from its training sample.

    ``features``: (feature, population stability index) of each feature above
    ``max_feature_psi``, largest first; ``missing``: (feature, reference share, observed share) of
    each feature whose missing share rose more than ``max_missing_increase``. ``rows`` sampled
    rows were in the window of ``window_s`` seconds; ``action`` is the drift rules' action
    (``"alert"`` or ``"rollback"``); ``detected_at`` is the clock time.
    """

    model: str
    version: str
    features: tuple[tuple[str, float], ...]
    missing: tuple[tuple[str, float, float], ...]
    max_feature_psi: float | None
    max_missing_increase: float | None
    rows: int
    window_s: float
    action: str
    detected_at: float


Event: TypeAlias = (
    VersionLoaded
    | VersionLoadFailed
    | FallbackServed
    | VersionQuarantined
    | LastKnownGoodChanged
    | PrewarmCompleted
    | ShadowCompared
    | GuardrailBreached
    | VersionRolledBack
    | GuardrailAlerted
    | RollbackProposed
    | RollbackDismissed
    | RollbackVerified
    | RollbackIneffective
    | ActuatorFailed
    | DriftDetected
)
"""Every event modelflags emits."""

EVENT_TYPES: tuple[type[Event], ...] = Event.__args__
"""The classes of :data:`Event`, for ``add_listener(fn, types=...)``."""

# The names of earlier releases.
Loaded = VersionLoaded
LoadFailed = VersionLoadFailed
FellBack = FallbackServed
Quarantined = VersionQuarantined
BecameLKG = LastKnownGoodChanged
Prewarmed = PrewarmCompleted
ShadowResult = ShadowCompared
Breach = GuardrailBreached
RolledBack = VersionRolledBack
GuardrailAlert = GuardrailAlerted

Listener = Callable[[Event], None]

_STOP = object()


class _Marker:
    """Queued by flush(); set when every event before it was delivered."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Subscription:
    __slots__ = ("listener", "types")

    def __init__(self, listener: Listener, types: tuple[type[Event], ...] | None) -> None:
        self.listener = listener
        self.types = types


class EventDispatcher:
    """Delivers events to listeners on a background thread.

    Safe to share between threads. The thread starts with the first event and stops on
    :meth:`close`; it is a daemon, so it never keeps the interpreter alive. ``listener_errors``
    counts the calls of listeners that raised.
    """

    def __init__(self, listeners: Iterable[Listener] = (), *, maxsize: int = 10_000) -> None:
        self._subscriptions: tuple[_Subscription, ...] = tuple(
            _Subscription(listener, None) for listener in listeners
        )
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0
        self.listener_errors = 0

    def add(self, listener: Listener, types: Iterable[type[Event]] | None = None) -> None:
        """Add a listener of every event, or of ``types`` only; it receives events from now on."""
        chosen = None if types is None else tuple(types)
        if chosen is not None:
            unknown = [kind for kind in chosen if kind not in EVENT_TYPES]
            if unknown:
                names = ", ".join(getattr(kind, "__name__", repr(kind)) for kind in unknown)
                raise TypeError(f"not modelflags event types: {names}")
        with self._lock:
            self._subscriptions = (*self._subscriptions, _Subscription(listener, chosen))

    def remove(self, listener: Listener) -> None:
        """Remove a listener (no error if it is absent)."""
        with self._lock:
            self._subscriptions = tuple(
                item for item in self._subscriptions if item.listener != listener
            )

    def emit(self, event: Event) -> None:
        """Queue ``event`` for the listeners; never blocks, never raises."""
        if not self._subscriptions or self._closed:
            return
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was delivered; False if ``timeout`` passed first."""
        if self._thread is None:
            return True
        marker = _Marker()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout``) and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)

    def reset_after_fork(self) -> None:
        """In a child process just forked: a fresh lock and queue, and no thread yet (one starts
        with the next event). Events queued before the fork are the parent's to deliver."""
        self._lock = threading.Lock()
        self._queue = queue.Queue(maxsize=self._queue.maxsize)
        self._thread = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="modelflags-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Marker):
                item.done.set()
                continue
            for subscription in self._subscriptions:
                if subscription.types is not None and not isinstance(item, subscription.types):
                    continue
                try:
                    subscription.listener(item)  # type: ignore[arg-type]
                except Exception:
                    self.listener_errors += 1
                    logger.exception(
                        "listener %r raised on %r; ignored", subscription.listener, item
                    )
