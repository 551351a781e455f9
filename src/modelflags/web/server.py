"""The status page on a server thread of its own, for applications that are not ASGI.

uvicorn serves the :class:`~modelflags.web.app.StatusApp` on a socket bound here (so ``port=0``
gets a free port, known before the thread starts), with its own event loop on a daemon thread.
It never touches logging's configuration (``log_config=None``) nor signal handlers (those belong
to the main thread). :meth:`StatusServer.close` stops the server, its connections and the
sampling thread, and waits for them.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING, Unpack

from modelflags.web.app import StatusApp
from modelflags.web.options import WebOptions

if TYPE_CHECKING:
    from modelflags.client import ModelFlags

__all__ = ["StatusServer"]

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
"""Seconds the server may take to start listening."""


class StatusServer:
    """The status page of ``flags`` served on ``host``:``port`` (``port=0``: a free one).

    ``url`` is where it answers (``http://127.0.0.1:PORT``); ``app`` the ASGI app it serves.
    Options are those of :class:`~modelflags.web.options.WebOptions`. Raises ``OSError`` when
    the address cannot be bound, ``RuntimeError`` when the server does not start within
    :data:`START_TIMEOUT_S`. Safe to share between threads; :meth:`close` is idempotent.
    """

    def __init__(
        self,
        flags: ModelFlags,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Unpack[WebOptions],
    ) -> None:
        import uvicorn

        self.app = StatusApp(flags, **options)
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            self.app.close()
            raise
        self._socket = sock
        bound_host, bound_port = sock.getsockname()[:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown_host}:{bound_port}"
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="modelflags-status-server",
            daemon=True,
        )
        self._thread.start()
        if not self._wait_started(START_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"the status page did not start on {self.url}")
        logger.info("status page serving on %s", self.url)

    def _wait_started(self, timeout: float) -> bool:
        stop = threading.Event()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited >= timeout:
                return False
            stop.wait(0.01)  # uvicorn sets a flag, not an event: look at it every 10 ms
            waited += 0.01
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop serving, close the connections and the sampling thread, and wait for them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("status page on %s: server did not stop in %s s", self.url, timeout)
        self._socket.close()
        self.app.close()

    def __enter__(self) -> StatusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
