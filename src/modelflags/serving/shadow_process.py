"""Shadow inference in worker processes, so a CPU-heavy shadow does not share the interpreter lock.

With ``ShadowOptions(executor="process")`` each shadow thread of
:class:`~modelflags.serving.shadow.ShadowRunner` hands its calls to a worker process of its own
(started with ``spawn`` on first use, so nothing of the parent's threads or locks is inherited).
The queue bound, the drop counting and the comparison stay in the parent: a worker only loads the
shadow version and runs the method. It loads the version itself, through the same verified path as
the parent (:func:`load_version`: the artifact store checks the sha256, then the loader
deserializes), and keeps the few versions it served last.

Arguments and results cross the process boundary pickled: both must be picklable, and so must
custom loaders (module-level functions are; lambdas are not). A call that raises in the worker is
a shadow error; a version that cannot load there is quarantined as in the parent. A worker that
dies or does not answer within ``timeout`` seconds is replaced on the next call, and the call it
was running counts as an error. Nothing a worker does reaches the primary call.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from modelflags.artifacts import ArtifactStore, Loader, LoaderRegistry
from modelflags.errors import ModelFlagsError
from modelflags.registry import ModelSpec

__all__ = ["ProcessShadow", "ShadowWorkerError", "WorkerSetup", "load_version"]

logger = logging.getLogger(__name__)


class ShadowWorkerError(ModelFlagsError):
    """A shadow worker process failed: it died, did not answer in time, or could not start."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process needs to load shadow versions itself (pickled across once).

    ``specs``: the registry's models; ``cache_dir`` and ``max_artifact_bytes``: the artifact
    store's settings; ``loaders``: the loaders added by name; ``keep``: how many loaded versions
    a worker keeps.
    """

    specs: Mapping[str, ModelSpec]
    cache_dir: str | None = None
    max_artifact_bytes: int | None = None
    loaders: Mapping[str, Loader] | None = None
    keep: int = 2

    def check(self) -> None:
        """Raise ``ValueError`` naming what cannot be sent to a worker process."""
        for name, loader in (self.loaders or {}).items():
            try:
                pickle.dumps(loader)
            except Exception as exc:
                raise ValueError(
                    f"the shadow executor 'process' sends loaders to its worker by pickling; "
                    f"loader {name!r} cannot be pickled ({type(exc).__name__}: {exc}): make it "
                    "a module-level function"
                ) from exc


def load_version(
    store: ArtifactStore, loaders: LoaderRegistry, spec: ModelSpec, version: str
) -> Any:
    """The one place a worker loads a version: fetch (sha256 checked), then deserialize."""
    item = spec.versions[version]
    path = store.fetch(spec.name, version, item)
    return loaders.load(spec.name, version, item, path)


def _serve(connection: Connection, setup: WorkerSetup) -> None:
    """A worker's loop: load (once) and call, until asked to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    store = ArtifactStore(cache_dir=setup.cache_dir, max_bytes=setup.max_artifact_bytes)
    loaders = LoaderRegistry(setup.loaders)
    kept: OrderedDict[tuple[str, str], Any] = OrderedDict()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        model, version, method, args, kwargs = request
        key = (model, version)
        instance = kept.get(key)
        if instance is None:
            try:
                instance = load_version(store, loaders, setup.specs[model], version)
            except Exception as exc:
                cause = str(exc) if isinstance(exc, ModelFlagsError) else _described(exc)
                connection.send(("load", cause))
                continue
            kept[key] = instance
            while len(kept) > setup.keep:
                kept.popitem(last=False)
        kept.move_to_end(key)
        started = time.perf_counter()
        try:
            output = getattr(instance, method)(*args, **kwargs)
        except Exception as exc:
            connection.send(("error", _described(exc)))
            continue
        elapsed = time.perf_counter() - started
        try:
            connection.send(("ok", output, elapsed))
        except Exception as exc:  # an output that cannot be pickled
            connection.send(("error", f"the output cannot be sent back: {exc}"))


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Worker:
    """One worker process and the pipe to it; used by one shadow thread at a time."""

    def __init__(self, context: Any, setup: WorkerSetup, index: int) -> None:
        ours, theirs = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(theirs, setup), name=f"modelflags-shadow-{index}", daemon=True
        )
        self.process.start()
        theirs.close()
        self.connection: Connection = ours

    def call(self, request: tuple[Any, ...], timeout: float) -> tuple[Any, ...]:
        try:
            self.connection.send(request)
        except (pickle.PicklingError, TypeError, AttributeError):
            raise  # arguments that cannot be pickled: the worker is fine
        except OSError as exc:
            raise ShadowWorkerError(f"the shadow worker process is gone ({exc})") from exc
        try:
            ready = self.connection.poll(timeout)
            if not ready:
                raise ShadowWorkerError(f"the shadow worker did not answer within {timeout:g} s")
            reply: tuple[Any, ...] = self.connection.recv()
        except (EOFError, OSError) as exc:
            code = self.process.exitcode
            raise ShadowWorkerError(
                f"the shadow worker process died (exit code {code})"
                if code is not None
                else f"the shadow worker process is gone ({type(exc).__name__})"
            ) from exc
        return reply

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(Exception):  # a dead worker cannot be asked
            self.connection.send(None)
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        self.connection.close()


LoadFailed = Callable[[str, str, str], None]
"""(model, version, cause): a version could not load in a worker (the parent quarantines it)."""


class ProcessShadow:
    """Runs shadow calls in worker processes, one per calling thread, started on first use.

    Safe to share between threads: each thread has its own worker, and the list of workers (for
    :meth:`close`) is guarded by a lock.
    """

    def __init__(
        self,
        setup: WorkerSetup,
        *,
        load_failed: LoadFailed,
        timeout: float = 30.0,
        start_method: str = "spawn",
    ) -> None:
        setup.check()
        self._setup = setup
        self._load_failed = load_failed
        self._timeout = timeout
        self._context = multiprocessing.get_context(start_method)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._closed = False
        self.restarts = 0

    def run(
        self, model: str, version: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, float]:
        """The shadow's output and its inference seconds; raises when the call failed."""
        worker = self._worker()
        try:
            reply = worker.call((model, version, method, args, kwargs), self._timeout)
        except ShadowWorkerError:
            self._discard(worker)
            raise
        kind = reply[0]
        if kind == "ok":
            return reply[1], reply[2]
        if kind == "load":
            self._load_failed(model, version, reply[1])
            raise ShadowWorkerError(
                f"model {model!r} version {version!r} cannot load in the shadow worker: {reply[1]}"
            )
        raise ShadowWorkerError(reply[1])

    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        with self._lock:
            return [w.process.pid for w in self._workers if w.process.pid is not None]

    def close(self, timeout: float = 5.0) -> None:
        """Stop every worker (asked first, killed after ``timeout`` seconds)."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop(timeout)

    def reset_after_fork(self) -> None:
        """In a child process just forked: the workers are the parent's children, so the child
        closes its copies of their pipes (their replies stay the parent's) without asking them
        anything; its own first shadow call starts its own worker."""
        workers, self._workers = self._workers, []
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.connection.close()
        self._lock = threading.Lock()
        self._local = threading.local()

    def _worker(self) -> _Worker:
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is not None and worker.process.is_alive():
            return worker
        if worker is not None:
            self._discard(worker)
        with self._lock:
            if self._closed:
                raise ShadowWorkerError("the shadow executor is closed")
            index = len(self._workers)
        worker = _Worker(self._context, self._setup, index)
        with self._lock:
            self._workers.append(worker)
        self._local.worker = worker
        logger.info("shadow worker process %d started", worker.process.pid)
        return worker

    def _discard(self, worker: _Worker) -> None:
        """Forget a worker that died or hangs; the next call starts a new one."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
                self.restarts += 1
        self._local.worker = None
        logger.warning(
            "shadow worker process %s failed (exit code %s); a new one starts on the next call",
            worker.process.pid,
            worker.process.exitcode,
        )
        worker.stop(1.0)
