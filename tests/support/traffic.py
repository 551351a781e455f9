"""Traffic for tests: background threads serving a model in a loop, as an application would."""

from __future__ import annotations

import threading
import time
from collections import Counter
from types import TracebackType
from typing import Any

import numpy as np

__all__ = ["Traffic"]

KEPT_ERRORS = 20
"""How many of the exceptions that reached the caller are kept for the test to look at."""


class Traffic:
    """``threads`` threads calling ``flags.get_model(model, user).predict(row)`` in a loop until
    :meth:`stop` (or leaving the ``with`` block) or ``limit_s`` seconds.

    Users are ``user-<n % users>``; each row is drawn uniformly from [0, 1)^2 (seeded per thread);
    ``pause_s`` paces each thread. An exception that reaches the caller is counted in ``raised``
    (the first ones are kept in ``errors``) and the loop goes on: fallbacks should prevent them.

    ``latest`` holds each thread's last serving version and ``calls`` counts the requests so far:
    both can be read while the traffic runs. ``answers`` counts (serving version, first predicted
    label) and ``reasons`` the serving reasons: they are complete once the traffic stopped (each
    thread counts on its own and adds its counts when it ends, so the requests share no lock).
    """

    def __init__(
        self,
        flags: Any,
        model: str,
        *,
        threads: int = 8,
        limit_s: float = 15.0,
        users: int = 10_000,
        pause_s: float = 0.0,
    ) -> None:
        self.flags = flags
        self.model = model
        self.threads = threads
        self.limit_s = limit_s
        self.users = users
        self.pause_s = pause_s
        self.answers: Counter[tuple[str, int]] = Counter()
        self.reasons: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self.raised = 0
        self.latest: dict[int, str] = {}
        self._calls = [0] * threads
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(target=self._run, args=(index,), name=f"traffic-{index}", daemon=True)
            for index in range(threads)
        ]

    def __enter__(self) -> Traffic:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def calls(self) -> int:
        """Requests made so far (answered or raised)."""
        return sum(self._calls)

    def stop(self) -> None:
        """Stop sending requests and wait for the threads (idempotent)."""
        self._stop.set()
        for worker in self._workers:
            worker.join(5.0)
        assert not any(worker.is_alive() for worker in self._workers), "a traffic thread hangs"

    def all_on(self, version: str) -> bool:
        """True when every thread's latest answer came from ``version``."""
        latest = dict(self.latest)
        return len(latest) == self.threads and set(latest.values()) == {version}

    def _run(self, index: int) -> None:
        rng = np.random.default_rng(index)
        answers: Counter[tuple[str, int]] = Counter()
        reasons: Counter[str] = Counter()
        deadline = time.monotonic() + self.limit_s
        n = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                n += 1
                try:
                    handle = self.flags.get_model(self.model, f"user-{n % self.users}")
                    label = int(np.asarray(handle.predict(rng.random((1, 2))))[0])
                except Exception as exc:  # every exception a caller would see is a finding
                    with self._lock:
                        self.raised += 1
                        if len(self.errors) < KEPT_ERRORS:
                            self.errors.append(exc)
                else:
                    answers[(handle.version, label)] += 1
                    reasons[str(handle.reason)] += 1
                    self.latest[index] = handle.version
                self._calls[index] += 1
                if self.pause_s:
                    self._stop.wait(self.pause_s)
        finally:
            with self._lock:
                self.answers.update(answers)
                self.reasons.update(reasons)
