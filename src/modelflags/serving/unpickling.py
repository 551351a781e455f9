"""scikit-learn's version warnings raised while a version is deserialized, collected per thread.

Unpickling an estimator made by another scikit-learn warns (``InconsistentVersionWarning``,
"Trying to unpickle estimator ... from version ..."). The serving core turns that warning into
the model's ``compat`` decision, so it must see it, even where warnings are errors.
``warnings.catch_warnings`` cannot be used around each load: it swaps the process's warning
settings, and two loads on two threads would restore each other's settings. So this module owns
one process-wide hook (the only global state here, and it says so): while any load runs, a filter
lets that one warning through (``always``) and ``warnings.showwarning`` hands it to the thread that
raised it; every other warning, and this one raised by a thread that is not loading, goes where it
went before. The settings are restored when the last load ends.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ["collect_version_warnings"]

_MESSAGE = "Trying to unpickle estimator"
"""How scikit-learn's InconsistentVersionWarning starts (matched without importing sklearn)."""

ShowWarning = Callable[..., None]


class _VersionWarnings:
    """The process-wide hook. Safe to share between threads: entering and leaving take a short
    lock; loads run outside it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._saved: warnings.catch_warnings[None] | None = None
        self._previous: ShowWarning | None = None
        self._local = threading.local()

    @contextlib.contextmanager
    def collect(self) -> Iterator[list[Warning]]:
        caught: list[Warning] = []
        outer = getattr(self._local, "caught", None)
        self._local.caught = caught
        self._enter()
        try:
            yield caught
        finally:
            self._local.caught = outer
            self._leave()

    def _enter(self) -> None:
        with self._lock:
            self._active += 1
            if self._active > 1:
                return
            saved: warnings.catch_warnings[None] = warnings.catch_warnings()
            saved.__enter__()
            self._saved = saved
            self._previous = warnings.showwarning
            warnings.filterwarnings("always", message=_MESSAGE, category=UserWarning)
            warnings.showwarning = self._show

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active or self._saved is None:
                return
            saved, self._saved = self._saved, None
            saved.__exit__(None, None, None)

    def _show(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        caught: list[Warning] | None = getattr(self._local, "caught", None)
        if caught is not None and isinstance(message, Warning) and _is_version_warning(message):
            caught.append(message)
            return
        previous = self._previous
        if previous is not None:
            previous(message, category, filename, lineno, file, line)


def _is_version_warning(message: Any) -> bool:
    return hasattr(message, "original_sklearn_version") and hasattr(
        message, "current_sklearn_version"
    )


_HOOK = _VersionWarnings()


def collect_version_warnings() -> contextlib.AbstractContextManager[list[Warning]]:
    """A block whose scikit-learn version warnings, raised by this thread, are collected into
    the list it yields instead of being shown (or raised)."""
    return _HOOK.collect()
