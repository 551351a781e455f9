"""Health of versions: the last known good version (LKG) of each model, and quarantine.

The LKG of a model is the version that most recently *proved* itself: it loaded and completed an
inference call without raising. Before any, it is the registry's ``default_version``. A version that
failed is quarantined: no request tries it again until its back-off expires (1 s, doubling, capped
at 5 minutes by default). When it proves itself again, its failure count is forgotten.

The LKG also follows a settled flag (:meth:`Health.settle`): when every recent request selects one
version that has proved itself and was the LKG before, it becomes the LKG again, so a rollback made
at the flag's source is not undone by the LKG (the version rolled back) answering the flag's
default. A version that was demoted (rolled back while it was the LKG) no longer counts as having
been the LKG.

State lives in memory; with a ``state_dir`` the LKG of every model is also written atomically to
``<state_dir>/modelflags-state.json`` (temporary file, then rename) and read back at start,
together with the sha256 first seen for each version id (so that an id re-pointed at other bytes
is refused after a restart too)::

    {"lkg": {"recommender": "v3"},
     "digests": {"recommender": {"v1": "9f2c...", "v3": "5e88..."}}}

Files written before digests were recorded (``lkg`` only) still load.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["STATE_FILE", "Backoff", "Health", "Quarantine"]

logger = logging.getLogger(__name__)

STATE_FILE = "modelflags-state.json"
_TEMP_PREFIX = ".modelflags-state-"
_LEFTOVER_AGE_S = 60.0
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Quarantine back-off: ``initial`` seconds, times ``factor`` a failure, at most ``maximum``."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0

    def delay(self, failures: int) -> float:
        """Seconds of quarantine after the ``failures``-th consecutive failure (1-based)."""
        return float(min(self.maximum, self.initial * self.factor ** max(0, failures - 1)))


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A quarantined version: why, how many failures in a row, and when it may be tried again.

    ``liftable``: a change event may still cut this back-off short; ``due``: when it would have
    ended had an event not lifted it (``None`` when no event did).
    """

    model: str
    version: str
    cause: str
    failures: int
    since: float
    until: float
    liftable: bool = True
    due: float | None = None


class Health:
    """LKG and quarantine bookkeeping for every model.

    Safe to share between threads. The hot-path reads (:meth:`lkg`, :meth:`blocked`,
    :meth:`is_proven`) are plain dictionary lookups; writes take a lock, and the state file is
    written outside it.
    """

    def __init__(
        self,
        defaults: Mapping[str, str],
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float],
        state_dir: str | os.PathLike[str] | None = None,
        known_versions: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._lkg: dict[str, str] = dict(defaults)
        # Versions that have been the LKG since they were last demoted, per model.
        self._former: dict[str, set[str]] = {
            model: {version} for model, version in defaults.items()
        }
        # Proven versions per model, in the order they proved themselves (an ordered set).
        self._proven: dict[str, dict[str, None]] = {model: {} for model in defaults}
        self._defaults = dict(defaults)
        self._quarantine: dict[str, dict[str, Quarantine]] = {}
        self._digests: dict[str, dict[str, str]] = {}
        self._state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        if self._state_path is not None:
            self._restore(known_versions or {})

    # -- hot path -------------------------------------------------------------------------------

    def lkg(self, model: str) -> str:
        """The last known good version of ``model``."""
        return self._lkg[model]

    def blocked(self, model: str, version: str) -> Quarantine | None:
        """The quarantine that keeps ``version`` from being tried now, if any."""
        entries = self._quarantine.get(model)
        if not entries:
            return None
        entry = entries.get(version)
        if entry is None or self._clock() >= entry.until:
            return None
        return entry

    def is_proven(self, model: str, version: str) -> bool:
        """True once ``version`` loaded and completed an inference call since its last failure."""
        return version in self._proven[model]

    # -- transitions ----------------------------------------------------------------------------

    def mark_good(self, model: str, version: str, *, promote: bool = True) -> str | None:
        """Record a completed inference call. Returns the previous LKG if ``version`` became LKG.

        With ``promote=False`` the version is proven but stays a candidate until :meth:`promote`
        (guardrails hold promotion back until they have seen enough healthy traffic).
        """
        with self._lock:
            proven = self._proven[model]
            if version in proven:
                return None
            proven[version] = None
            entries = self._quarantine.get(model)
            if entries:
                entries.pop(version, None)
            if not promote:
                return None
            previous = self._lkg[model]
            if previous == version:
                return None
            self._set(model, version)
        self._persist()
        return previous

    def proved_after(self, model: str, version: str, other: str) -> bool:
        """True when ``version`` proved itself after ``other`` did (or ``other`` never did)."""
        order = list(self._proven[model])
        if version not in order:
            return False
        return other not in order or order.index(version) > order.index(other)

    def promote(self, model: str, version: str) -> str | None:
        """Make a proven ``version`` the LKG; returns the previous LKG if it changed."""
        with self._lock:
            previous = self._lkg[model]
            if previous == version or version not in self._proven[model]:
                return None
            self._set(model, version)
        self._persist()
        return previous

    def settle(self, model: str, version: str) -> str | None:
        """The flag settled on ``version`` for all recent traffic: make it the LKG again if it
        has proved itself (since its last failure) and was the LKG before (and not demoted
        since). Returns the previous LKG if it changed."""
        with self._lock:
            previous = self._lkg[model]
            if (
                previous == version
                or version not in self._proven[model]
                or version not in self._former[model]
            ):
                return None
            # Counted as proved now, so a version that proved itself before it (the one the flag
            # moved away from) is not promoted back over it.
            proven = self._proven[model]
            del proven[version]
            proven[version] = None
            self._set(model, version)
        self._persist()
        return previous

    def demote(self, model: str, version: str) -> str:
        """Forget that ``version`` proved itself; if it was the LKG, the previous one takes over.

        The new LKG is the most recently proven other version, else ``default_version``. Returns
        the LKG after the change.
        """
        with self._lock:
            proven = self._proven[model]
            proven.pop(version, None)
            self._former[model].discard(version)
            if self._lkg[model] == version:
                others = [candidate for candidate in proven if candidate != version]
                self._set(model, others[-1] if others else self._defaults[model])
            lkg = self._lkg[model]
        self._persist()
        return lkg

    def quarantine(self, model: str, version: str, cause: str) -> Quarantine:
        """Quarantine ``version`` after a failure; each failure in a row doubles the back-off."""
        now = self._clock()
        with self._lock:
            self._proven[model].pop(version, None)
            entries = self._quarantine.setdefault(model, {})
            previous = entries.get(version)
            failures = previous.failures + 1 if previous is not None else 1
            # A failure inside a back-off that an event cut short waits out its own back-off in
            # full: events shorten each back-off at most once.
            liftable = previous is None or previous.due is None or now >= previous.due
            entry = Quarantine(
                model,
                version,
                cause,
                failures,
                now,
                now + self.backoff.delay(failures),
                liftable,
            )
            # Replace the mapping so lock-free readers never see it change under them.
            self._quarantine[model] = {**entries, version: entry}
        return entry

    def release(self, model: str, version: str | None = None) -> list[str]:
        """Lift the quarantine of one version, or of all versions of ``model``; returns them."""
        with self._lock:
            entries = self._quarantine.get(model) or {}
            if version is None:
                released = sorted(entries)
                self._quarantine[model] = {}
            else:
                released = [version] if version in entries else []
                self._quarantine[model] = {k: v for k, v in entries.items() if k != version}
        return released

    def lift(self, model: str) -> list[str]:
        """Let quarantined versions of ``model`` be tried again now (a flag changed).

        An event lifts each back-off at most once, and a version that fails again before that
        back-off would have ended waits out its next, longer one in full; failure counts stay
        until the version proves itself (:meth:`mark_good`) or a person releases it
        (:meth:`release`). So a provider emitting change events every few hundred milliseconds
        gets a failing version tried at most twice per back-off, never once per event.
        Returns the versions lifted.
        """
        now = self._clock()
        with self._lock:
            entries = self._quarantine.get(model) or {}
            waiting = sorted(
                version
                for version, entry in entries.items()
                if entry.until > now and entry.liftable
            )
            if waiting:
                self._quarantine[model] = {
                    version: (
                        replace(entry, until=now, liftable=False, due=entry.until)
                        if version in waiting
                        else entry
                    )
                    for version, entry in entries.items()
                }
        return waiting

    def set_lkg(self, model: str, version: str) -> str:
        """Make ``version`` the LKG by decision (not by proof); returns the previous one."""
        with self._lock:
            previous = self._lkg[model]
            self._set(model, version)
        if previous != version:
            self._persist()
        return previous

    def _set(self, model: str, version: str) -> None:
        """Make ``version`` the LKG (the lock is held)."""
        self._lkg[model] = version
        self._former[model].add(version)

    def quarantined(self, model: str) -> list[Quarantine]:
        """Every quarantine record of ``model``, expired ones included (they retry on next use)."""
        return sorted((self._quarantine.get(model) or {}).values(), key=lambda q: q.version)

    def now(self) -> float:
        """The injected clock's time."""
        return self._clock()

    def reset_after_fork(self) -> None:
        """In a child process just forked: fresh locks (another thread may have held them)."""
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()

    # -- digests first seen ---------------------------------------------------------------------

    @property
    def state_path(self) -> Path | None:
        """The state file, when there is one."""
        return self._state_path

    def first_digest(self, model: str, version: str) -> str | None:
        """The sha256 ``version`` was first loaded with here (or by an earlier process sharing
        the state file); None when it never was."""
        return (self._digests.get(model) or {}).get(version)

    def record_digest(self, model: str, version: str, sha256: str) -> None:
        """Remember that ``version`` loaded with ``sha256``; the first digest recorded stays."""
        with self._lock:
            known = self._digests.get(model) or {}
            if version in known:
                return
            # Replace the mapping so lock-free readers never see it change under them.
            self._digests[model] = {**known, version: sha256}
        self._persist()

    # -- persistence ----------------------------------------------------------------------------

    def _restore(self, known_versions: Mapping[str, frozenset[str]]) -> None:
        assert self._state_path is not None
        _remove_leftovers(self._state_path)
        try:
            raw = json.loads(self._state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:
            # RecursionError: a deeply nested document, which a state file never is.
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            logger.warning("ignoring unreadable state file %s: %s", self._state_path, reason)
            return
        self._restore_digests(raw.get("digests") if isinstance(raw, dict) else None)
        saved = raw.get("lkg") if isinstance(raw, dict) else None
        if not isinstance(saved, dict):
            logger.warning("ignoring state file %s: no 'lkg' table", self._state_path)
            return
        for model, version in saved.items():
            if model not in self._lkg:
                continue
            if not isinstance(version, str) or version not in known_versions.get(model, ()):
                logger.warning(
                    "state file %s: model %r has LKG %r, which the registry does not know; "
                    "starting from %r",
                    self._state_path,
                    model,
                    version,
                    self._lkg[model],
                )
                continue
            self._set(model, version)

    def _restore_digests(self, saved: object) -> None:
        """Digests of an older process; entries that are not a model -> version -> sha256 are
        skipped with a warning (files without any are from before digests were recorded)."""
        if saved is None:
            return
        if not isinstance(saved, dict):
            logger.warning("state file %s: 'digests' is not a table; ignored", self._state_path)
            return
        for model, versions in saved.items():
            if not isinstance(versions, dict):
                continue
            good = {
                version: digest
                for version, digest in versions.items()
                if isinstance(digest, str) and _SHA256.fullmatch(digest)
            }
            if len(good) != len(versions):
                logger.warning(
                    "state file %s: ignoring %d malformed digests of model %r",
                    self._state_path,
                    len(versions) - len(good),
                    model,
                )
            self._digests[str(model)] = good

    def _persist(self) -> None:
        path = self._state_path
        if path is None:
            return
        with self._write_lock:  # the snapshot is taken inside, so the newest state is written last
            with self._lock:
                state: dict[str, object] = {"lkg": dict(sorted(self._lkg.items()))}
                if self._digests:
                    state["digests"] = {
                        model: dict(sorted(versions.items()))
                        for model, versions in sorted(self._digests.items())
                    }
            payload = json.dumps(state, indent=2) + "\n"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as stream:
                        stream.write(payload)
                        stream.flush()
                        os.fsync(stream.fileno())
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            except OSError as exc:
                logger.error("cannot write state file %s: %s", path, exc)


def _remove_leftovers(path: Path) -> None:
    """Delete temporary state files a killed process left next to ``path``.

    Each write goes to a temporary file that is renamed over the state file; a process killed in
    between leaves the temporary file behind. Only files of that prefix older than a minute are
    touched, so another process's write in flight is left alone.
    """
    try:
        leftovers = list(path.parent.glob(_TEMP_PREFIX + "*"))
    except OSError:
        return
    cutoff = time.time() - _LEFTOVER_AGE_S
    for leftover in leftovers:
        try:
            if leftover.lstat().st_mtime > cutoff:
                continue
            leftover.unlink()
        except OSError as exc:
            logger.warning("cannot remove leftover state file %s: %s", leftover, exc)
        else:
            logger.info("removed leftover state file %s", leftover)
