"""A real HTTP artifact server on 127.0.0.1 for tests, with faults injected per path.

::

    with ArtifactServer() as server:
        url = server.add("/models/v1.joblib", data)
        server.fail("/models/v1.joblib", status(503), cut(after_bytes=1000))
        ...                                   # the first GET gets 503, the second is cut short
        assert server.count("/models/v1.joblib") == 3

Each path has a queue of faults; every request to the path takes the next one (requests after the
queue is empty are served normally). Faults: :func:`status`, :func:`stall` (before the headers or
in the middle of the body), :func:`cut` (a Content-Length is promised, the connection closes
early), :func:`wrong_bytes`, :func:`wrong_range`, :func:`redirect` (to any URL, another server's
included) and :func:`trickle` (one byte at a time, slowly). Per path, ``ranges=False`` makes the
server ignore ``Range`` (answering 200), and ``content_length=False`` sends the body without a
length, closing the connection after it.
Every request is recorded (method, path, headers, range) for assertions.

Stalls are bounded (at most :data:`MAX_STALL` seconds) and end early when the server stops.
Safe to share between threads.

The ``artifact_server`` fixture (registered by :mod:`support.plugin`) is one server per test
process, emptied for each test.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import pytest

__all__ = [
    "MAX_STALL",
    "ArtifactServer",
    "Fault",
    "RecordedRequest",
    "artifact_server",
    "cut",
    "not_found",
    "redirect",
    "running_artifact_server",
    "stall",
    "status",
    "trickle",
    "wrong_bytes",
    "wrong_range",
]

MAX_STALL = 2.0
_WRITE = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one request. Build it with the functions below."""

    kind: str
    code: int = 0
    seconds: float = 0.0
    after_bytes: int | None = None
    headers: tuple[tuple[str, str], ...] = ()


def status(code: int, *, retry_after: float | None = None) -> Fault:
    """Answer ``code`` with an empty body (and a ``Retry-After`` header when given)."""
    headers = (("Retry-After", f"{retry_after:g}"),) if retry_after is not None else ()
    return Fault("status", code=code, headers=headers)


def not_found() -> Fault:
    """Answer 404 although the path is registered."""
    return status(404)


def stall(seconds: float, *, after_bytes: int | None = None) -> Fault:
    """Sleep before the headers, or after ``after_bytes`` of the body, then carry on."""
    if not 0 <= seconds <= MAX_STALL:
        raise ValueError(f"a stall lasts at most {MAX_STALL} s")
    return Fault("stall", seconds=seconds, after_bytes=after_bytes)


def cut(after_bytes: int) -> Fault:
    """Promise the whole body, send ``after_bytes`` of it, and close the connection."""
    return Fault("cut", after_bytes=after_bytes)


def redirect(location: str, *, code: int = 302) -> Fault:
    """Answer ``code`` with a ``Location`` header (and no body)."""
    return Fault("status", code=code, headers=(("Location", location),))


def trickle(seconds: float) -> Fault:
    """Send the body one byte every ``seconds`` (each wait at most MAX_STALL, ended by stop)."""
    if not 0 < seconds <= MAX_STALL:
        raise ValueError(f"a trickle waits at most {MAX_STALL} s a byte")
    return Fault("trickle", seconds=seconds)


def wrong_range() -> Fault:
    """Answer 206 for a range one byte later than asked (or than the start, when none was)."""
    return Fault("wrong_range")


def wrong_bytes() -> Fault:
    """Serve bytes of the right length that are not the registered ones."""
    return Fault("wrong_bytes")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    range: str | None


@dataclass
class _Entry:
    data: bytes
    ranges: bool
    content_length: bool
    faults: deque[Fault] = field(default_factory=deque)


class ArtifactServer:
    """Serves registered byte blobs on ``http://127.0.0.1:<port>``, with injectable faults."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._log: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ArtifactServer:
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end stalls, close open connections and the listening socket."""
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ArtifactServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._httpd is not None, "the server is not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        return self.base_url + path

    def add(
        self, path: str, data: bytes, *, ranges: bool = True, content_length: bool = True
    ) -> str:
        """Serve ``data`` at ``path``; returns its URL."""
        with self._lock:
            self._entries[path] = _Entry(data, ranges, content_length)
        return self.url(path)

    def reset(self) -> None:
        """Forget every path, queued fault and recorded request (to reuse one server)."""
        with self._lock:
            self._entries.clear()
            self._log.clear()

    def fail(self, path: str, *faults: Fault) -> None:
        """Queue faults for the next requests to ``path``, one a request."""
        with self._lock:
            self._entries[path].faults.extend(faults)

    def requests(
        self, path: str | None = None, method: str | None = "GET"
    ) -> list[RecordedRequest]:
        """The recorded requests, optionally only those to ``path`` and with ``method``."""
        with self._lock:
            log = list(self._log)
        return [
            r
            for r in log
            if (path is None or r.path == path) and (method is None or r.method == method)
        ]

    def count(self, path: str, method: str = "GET") -> int:
        """How many ``method`` requests reached ``path``."""
        return len(self.requests(path, method))

    # -- used by the handler -----------------------------------------------------------------

    def _take(self, request: RecordedRequest) -> tuple[_Entry | None, Fault | None]:
        with self._lock:
            self._log.append(request)
            entry = self._entries.get(request.path)
            if entry is None:
                return None, None
            return entry, (entry.faults.popleft() if entry.faults else None)

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(min(seconds, MAX_STALL))

    def _track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ArtifactServer

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._track(request, open_=True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.owner._track(request, open_=False)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _serve(self, *, send_body: bool) -> None:
        owner = self.server.owner
        headers = {name.lower(): value for name, value in self.headers.items()}
        path = urlsplit(self.path).path
        recorded = RecordedRequest(self.command, path, headers, headers.get("range"))
        entry, fault = owner._take(recorded)
        try:
            if entry is None or (fault is not None and fault.kind == "status"):
                code = 404 if fault is None else fault.code
                self.send_response(code)
                for name, value in fault.headers if fault is not None else ():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if fault is not None and fault.kind == "stall" and fault.after_bytes is None:
                owner._wait(fault.seconds)
            self._send(entry, fault, recorded.range, send_body=send_body)
        except OSError:  # the client went away (it timed out, or the server is stopping)
            self.close_connection = True

    def _send(
        self, entry: _Entry, fault: Fault | None, range_: str | None, *, send_body: bool
    ) -> None:
        data = entry.data
        if fault is not None and fault.kind == "wrong_bytes":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:] if data else b"?"
        start, end = 0, len(data)
        match = _RANGE.match(range_ or "") if entry.ranges else None
        if fault is not None and fault.kind == "wrong_range":
            match = _RANGE.match(f"bytes={int(match.group(1)) + 1 if match else 1}-")
        if match is not None:
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1, len(data)) if match.group(2) else len(data)
            if start >= len(data) or start >= end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            self.send_response(200)
        if entry.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if entry.content_length:
            self.send_header("Content-Length", str(end - start))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not send_body:
            return
        body = memoryview(data)[start:end]
        for piece in _pieces(body, fault):
            if piece is None:
                if fault is not None and fault.kind == "cut":
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                owner = self.server.owner
                self.wfile.flush()
                owner._wait(fault.seconds if fault is not None else 0.0)
                if owner._stopping.is_set():
                    self.close_connection = True
                    return
                continue
            self.wfile.write(piece)
        self.wfile.flush()


def _pieces(body: memoryview, fault: Fault | None) -> Iterator[memoryview | None]:
    """The body in pieces, with ``None`` where a mid-body fault (cut, stall, trickle) waits."""
    if fault is not None and fault.kind == "trickle":
        for offset in range(len(body)):
            yield body[offset : offset + 1]
            yield None
        return
    at = None
    if fault is not None and fault.kind in {"cut", "stall"} and fault.after_bytes is not None:
        at = min(fault.after_bytes, len(body))
    offset = 0
    while offset < len(body):
        if at is not None and offset == at:
            yield None
            at = None
            continue
        stop = min(offset + _WRITE, len(body))
        if at is not None and offset < at < stop:
            stop = at
        yield body[offset:stop]
        offset = stop
    if at is not None:
        yield None


@pytest.fixture(scope="session")
def running_artifact_server() -> Iterator[ArtifactServer]:
    """One artifact server for the test process, stopped at its end."""
    with ArtifactServer() as running:
        yield running


@pytest.fixture
def artifact_server(running_artifact_server: ArtifactServer) -> ArtifactServer:
    """A real HTTP artifact server on 127.0.0.1, emptied for this test."""
    running_artifact_server.reset()
    return running_artifact_server
