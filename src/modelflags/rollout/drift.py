"""Drift watch: is the input a version serves still like the sample it was trained on?

The request thread hands over a sampled share of the inputs (the model's ``drift.sample``, 1% by
default; drawn in :class:`~modelflags.serving.inputs.InputGate`, see :attr:`DriftWatch.rates`) to
:meth:`DriftWatch.offer`, which puts it on a bounded queue; when the queue is full the input is
dropped and counted, never waited for. One background thread bins each sampled
input with the version's reference statistics (:mod:`modelflags.registry.reference`) into a
sliding window (:class:`~modelflags.rollout.population.Window`) and judges the model's ``drift``
rules: the population stability index of each feature (``max_feature_psi``) and the rise of its
missing share (``max_missing_increase``), once the window holds ``min_samples`` rows.

A rule that fires emits one :class:`~modelflags.telemetry.events.DriftDetected` and logs an
error; it fires again only after the figures came back within the rules. Drift is about the
world, not the version, so the default action is ``"alert"``; with ``action = "rollback"`` a
version other than the last known good one is also rolled back. Versions without reference
statistics are not watched. The figures are in ``status()`` (``extra["drift"]``) and go to the
exporters that record them (``record_feature_drift``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, cast

from modelflags.registry import ModelSpec
from modelflags.registry.reference import DriftRules, ReferenceStats
from modelflags.rollout.population import FeatureFigures, Window, sample_columns
from modelflags.telemetry.events import DriftDetected, Event

__all__ = ["DriftExporter", "DriftWatch"]

logger = logging.getLogger(__name__)

_STOP = object()
_CHECK_INTERVAL_S = 1.0


class DriftExporter(Protocol):
    """An exporter that records drift figures (the Prometheus and OpenTelemetry bridges fit)."""

    def record_feature_drift(
        self, model: str, version: str, feature: str, psi: float | None, missing: float
    ) -> None:
        """The latest figures of one feature of ``version``."""


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Watched:
    """One (model, version): its window and bookkeeping; owned by the worker thread."""

    __slots__ = ("checked_at", "fired", "rows_since_check", "unreadable", "window")

    def __init__(self, reference: ReferenceStats, rules: DriftRules) -> None:
        self.window = Window(reference, window_s=rules.window_s)
        self.checked_at = float("-inf")
        self.rows_since_check = 0
        self.fired = False
        self.unreadable = 0


class DriftWatch:
    """Watches the input of every model with drift rules (see the module docs).

    ``rollback(model, version, reason)`` is called for ``action = "rollback"`` when the version
    is not the last known good one (``lkg``). Safe to share between threads: :meth:`offer` is
    lock-free but for the queue's own lock, taken on the sampled share only; everything else runs
    on the watch's one thread, and snapshots are taken under a short lock.
    """

    @classmethod
    def for_models(cls, specs: Mapping[str, ModelSpec], **parts: Any) -> DriftWatch | None:
        """The watch of a registry's models with drift rules, or None when there are none."""
        rules = {name: spec.drift for name, spec in specs.items() if spec.drift is not None}
        if not rules:
            return None
        references = {
            (name, version): spec.reference
            for name in rules
            for version, spec in specs[name].versions.items()
            if spec.reference is not None and spec.stage != "archived"
        }
        return cls(rules, references, **parts)

    def __init__(
        self,
        rules: Mapping[str, DriftRules],
        references: Mapping[tuple[str, str], ReferenceStats],
        *,
        emit: Callable[[Event], None],
        clock: Callable[[], float],
        lkg: Callable[[str], str],
        rollback: Callable[[str, str, str], None] | None = None,
        exporters: Iterable[object] = (),
        max_pending: int = 256,
    ) -> None:
        self.rules = dict(rules)
        self.references = dict(references)
        self.models = frozenset(self.rules)
        self._rates = {name: rule.sample for name, rule in self.rules.items()}
        self._emit = emit
        self._clock = clock
        self._lkg = lkg
        self._rollback = rollback
        self._exporters = [
            cast(DriftExporter, e) for e in exporters if hasattr(e, "record_feature_drift")
        ]
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()
        self._watched: dict[tuple[str, str], _Watched] = {}
        self._figures: dict[tuple[str, str], dict[str, Any]] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self.sampled: dict[str, int] = dict.fromkeys(self.rules, 0)
        self.dropped: dict[str, int] = dict.fromkeys(self.rules, 0)
        self.exporter_errors = 0

    # -- request path ---------------------------------------------------------------------------

    @property
    def rates(self) -> dict[str, float]:
        """The share of calls whose input is sampled, per watched model."""
        return dict(self._rates)

    def offer(self, model: str, version: str, data: Any) -> None:
        """Keep ``data`` (one sampled call's input) for the watch; never blocks, never raises."""
        if (model, version) not in self.references:
            return
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait((model, version, data))
        except queue.Full:
            self.dropped[model] += 1  # a lost increment under a race is one uncounted drop
        else:
            self.sampled[model] += 1

    # -- status and lifecycle -------------------------------------------------------------------

    def status(self, model: str) -> dict[str, Any]:
        """The model's drift figures per version, as plain values (for ``status()``)."""
        with self._lock:
            versions = {v: dict(f) for (m, v), f in sorted(self._figures.items()) if m == model}
        rules = self.rules[model]
        return {
            "max_feature_psi": rules.max_feature_psi,
            "max_missing_increase": rules.max_missing_increase,
            "sample": rules.sample,
            "window_s": rules.window_s,
            "min_samples": rules.min_samples,
            "action": rules.action,
            "sampled": self.sampled[model],
            "dropped": self.dropped[model],
            "versions": versions,
        }

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every input offered so far was counted and judged; False on timeout."""
        if self._thread is None:
            return True
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker thread (queued inputs are dropped)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_STOP)
        thread.join(timeout)

    def reset_after_fork(self) -> None:
        """In a child process just forked: a fresh lock and queue; the worker starts again on the
        next sampled input (the parent's thread does not exist here)."""
        self._lock = threading.Lock()
        self._queue = queue.Queue(maxsize=self._queue.maxsize)
        self._thread = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="modelflags-drift", daemon=True)
            self._thread.start()

    # -- the worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Flush):
                for key in list(self._watched):
                    self._check(key, force=True)
                item.done.set()
                continue
            try:
                self._observe(*item)
            except Exception:  # a bug here must never stop the watch
                logger.exception("drift watch failed on a sample of %r", item[0])

    def _observe(self, model: str, version: str, data: Any) -> None:
        key = (model, version)
        reference = self.references[key]
        watched = self._watched.get(key)
        if watched is None:
            watched = self._watched[key] = _Watched(reference, self.rules[model])
        try:
            columns = sample_columns(data, tuple(reference.features))
            rows = watched.window.add(self._clock(), columns)
        except (ValueError, TypeError) as exc:
            watched.unreadable += 1
            logger.debug("drift watch of %r %r cannot read a sample: %s", model, version, exc)
            return
        watched.rows_since_check += rows
        self._check(key)

    def _check(self, key: tuple[str, str], *, force: bool = False) -> None:
        model, version = key
        watched = self._watched[key]
        rules = self.rules[model]
        now = self._clock()
        due = now - watched.checked_at >= _CHECK_INTERVAL_S
        if not (force or due or watched.rows_since_check * 10 >= rules.min_samples):
            return
        watched.checked_at, watched.rows_since_check = now, 0
        rows, figures = watched.window.figures(now)
        drifted, missing = _breaches(rules, figures) if rows >= rules.min_samples else ((), ())
        with self._lock:
            self._figures[key] = _plain(rows, watched, figures, bool(drifted or missing))
        self._export(model, version, figures)
        if not (drifted or missing):
            if watched.fired:
                watched.fired = False
                logger.info("model %r version %r: its input is back within the drift rules", *key)
            return
        if watched.fired:
            return
        watched.fired = True
        self._fire(model, version, rules, rows, drifted, missing, now)

    def _fire(
        self,
        model: str,
        version: str,
        rules: DriftRules,
        rows: int,
        drifted: tuple[tuple[str, float], ...],
        missing: tuple[tuple[str, float, float], ...],
        now: float,
    ) -> None:
        parts = [f"{name} PSI {value:.3f}" for name, value in drifted]
        parts += [f"{name} missing {before:.1%} -> {after:.1%}" for name, before, after in missing]
        text = f"{'; '.join(parts)} over {rules.window_s:g} s ({rows} rows)"
        logger.error("model %r version %r: input drift: %s", model, version, text)
        self._emit(
            DriftDetected(
                model,
                version,
                drifted,
                missing,
                rules.max_feature_psi,
                rules.max_missing_increase,
                rows,
                rules.window_s,
                rules.action,
                now,
            )
        )
        if rules.action != "rollback":
            return
        if self._rollback is None or version == self._lkg(model):
            logger.error(
                "model %r: drift rule says rollback, but %r is the last known good version; "
                "alerting only",
                model,
                version,
            )
            return
        self._rollback(model, version, f"input drift: {text}")

    def _export(self, model: str, version: str, figures: Mapping[str, FeatureFigures]) -> None:
        """Send the figures to the exporters that record drift (isolated: failures counted)."""
        for exporter in self._exporters:
            try:
                for name, figure in figures.items():
                    exporter.record_feature_drift(model, version, name, figure.psi, figure.missing)
            except Exception:
                self.exporter_errors += 1
                if self.exporter_errors == 1 or self.exporter_errors % 1000 == 0:
                    logger.exception("exporter %r failed to record drift", exporter)


def _breaches(
    rules: DriftRules, figures: Mapping[str, FeatureFigures]
) -> tuple[tuple[tuple[str, float], ...], tuple[tuple[str, float, float], ...]]:
    drifted: list[tuple[str, float]] = []
    missing: list[tuple[str, float, float]] = []
    for name, figure in figures.items():
        if (
            rules.max_feature_psi is not None
            and figure.psi is not None
            and figure.psi > rules.max_feature_psi
        ):
            drifted.append((name, round(figure.psi, 6)))
        rise = rules.max_missing_increase
        if rise is not None and figure.missing - figure.reference_missing > rise:
            missing.append((name, figure.reference_missing, round(figure.missing, 6)))
    drifted.sort(key=lambda pair: -pair[1])
    return tuple(drifted), tuple(missing)


def _plain(
    rows: int, watched: _Watched, figures: Mapping[str, FeatureFigures], drifting: bool
) -> dict[str, Any]:
    return {
        "rows": rows,
        "reference_rows": watched.window.reference.rows,
        "unreadable": watched.unreadable,
        "drifting": drifting,
        "features": {
            name: {
                "psi": None if figure.psi is None else round(figure.psi, 6),
                "missing": round(figure.missing, 6),
                "reference_missing": figure.reference_missing,
            }
            for name, figure in figures.items()
        },
    }
