"""A small stoppable daemon thread that calls a function at a fixed interval."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class PollingThread:
    """Run ``poll`` every ``interval`` seconds on a daemon thread until :meth:`stop`."""

    def __init__(self, poll: Callable[[], None], *, interval: float, name: str) -> None:
        self._poll = poll
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def name(self) -> str:
        """The thread's name."""
        return self._thread.name

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def is_alive(self) -> bool:
        """Tell whether the thread is still running."""
        return self._thread.is_alive()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it to end.

        Returns:
            ``True`` when the thread has ended.
        """
        self._stopping.set()
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self._poll()
            except Exception:  # keep watching whatever happens in one poll
                logger.exception("Unexpected error while polling in %s", self._thread.name)
