"""HTTP(S) artifact bodies: requests, redirects, and where configured headers may go.

**Headers and redirects.** Configured headers (``RemoteFetcher(headers=...)`` and a version's
``headers_env``) are sent only to the origin of the artifact's URI: the same scheme, host and
port. Redirects are followed here, not by httpx (at most 10 of them). A redirect within the
origin keeps every header; a redirect to another origin is followed without them, without the
URI's user info and without the ``auth``, cookies and default headers of a client you passed, so a
presigned URL on an object store or CDN still works while a token never leaves its origin. The
artifact's sha256 protects what comes back, wherever it comes from. A redirect to anything but
``http`` or ``https`` is a :class:`~modelflags.errors.FetchError`.

**Logs.** httpx logs every request's full URL at INFO (user info and query string included) and
httpcore logs response headers at DEBUG (a presigned ``Location`` included). While this module
makes a request, records of the ``httpx`` and ``httpcore`` loggers are dropped by a filter that
the first :class:`HttpSource` installs on those loggers (records of other clients in the process
pass untouched); it logs each response itself at DEBUG, with the URI redacted.

Errors of httpx are translated here, at one boundary, into :mod:`modelflags.errors`, with the
job's secrets masked.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

import httpx

from modelflags.artifacts.naming import redact_uri
from modelflags.artifacts.retry import Deadline, Restart, Retryable
from modelflags.artifacts.transfer import Body, DeadlinePassed, Job, describe
from modelflags.errors import ArtifactNotFoundError, FetchError

__all__ = ["DEFAULT_TIMEOUT", "HttpSource", "install_log_guard"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=5.0)
"""Connect within 5 s; every other wait (each read, write, pool) within 10 s."""

_MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({408, 429})
_NOT_FOUND_STATUSES = frozenset({404, 410})
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HTTPX_DEFAULT_HEADERS = frozenset({"accept", "accept-encoding", "connection", "user-agent"})
_HTTP_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)

_OWN_REQUEST: ContextVar[bool] = ContextVar("modelflags_own_request", default=False)


class _DropOwnRequests(logging.Filter):
    """Drops records logged while this module's own request runs in the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _OWN_REQUEST.get()


_GUARD = _DropOwnRequests()
_GUARD_LOCK = threading.Lock()


def install_log_guard() -> None:
    """Install, once per process, the filter that keeps our requests out of httpx's logs."""
    with _GUARD_LOCK:
        for name in _HTTP_LOGGERS:
            target = logging.getLogger(name)
            if _GUARD not in target.filters:
                target.addFilter(_GUARD)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    scheme = url.scheme.lower()
    return scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(scheme)


class HttpSource:
    """Opens the body of an HTTP(S) artifact, from an offset, following redirects safely.

    ``client`` is used as given (and left open); otherwise one is made on first use, with
    ``transport`` if given, and closed by :meth:`close`. ``timeout`` applies to every request,
    each of its waits capped at the time left before the fetch's deadline. Safe to share between
    threads (httpx clients are).
    """

    def __init__(
        self,
        *,
        client: httpx.Client | None,
        transport: httpx.BaseTransport | None,
        timeout: httpx.Timeout,
    ) -> None:
        self._client = client
        self._owns_client = client is None
        self._transport = transport
        self._timeout = timeout
        self._lock = threading.Lock()
        install_log_guard()

    def close(self) -> None:
        """Close the client this source made (a client you passed stays open)."""
        with self._lock:
            client = self._client if self._owns_client else None
            if self._owns_client:
                self._client = None
        if client is not None:
            client.close()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(transport=self._transport, timeout=self._timeout)
            return self._client

    @contextmanager
    def open(self, job: Job, offset: int, deadline: Deadline) -> Iterator[Body]:
        """The response body from byte ``offset``; raises Retryable, Restart or FetchError."""
        token = _OWN_REQUEST.set(True)
        try:
            response = self._send(job, offset, deadline)
            try:
                start = _check_response(job, response, offset)
                yield Body(start, _total(response, start), response.iter_bytes())
            finally:
                response.close()
        except httpx.LocalProtocolError:
            # its message may quote a header value; do not chain it
            raise FetchError(
                f"{job.where()}: cannot send the request for {job.shown}: a header name or "
                "value is not valid HTTP",
                **job.error_args(),
            ) from None
        except httpx.TransportError as exc:
            raise Retryable(describe(exc, job)) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError(
                f"{job.where()}: cannot fetch {job.shown}: {describe(exc, job)}",
                **job.error_args(),
            ) from exc
        finally:
            _OWN_REQUEST.reset(token)

    def _send(self, job: Job, offset: int, deadline: Deadline) -> httpx.Response:
        client = self._http()
        first = url = httpx.URL(job.uri)
        origin = _origin(first)
        for _ in range(_MAX_REDIRECTS + 1):
            if deadline.passed():
                raise DeadlinePassed(offset)
            home = _origin(url) == origin
            headers = {"Accept-Encoding": "identity", **(job.headers if home else {})}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            timeout = self._capped(deadline)
            request = client.build_request("GET", url, headers=headers, timeout=timeout)
            if home:
                response = client.send(request, stream=True, follow_redirects=False)
            else:
                kept = _HTTPX_DEFAULT_HEADERS | {name.lower() for name in headers}
                for name in list(client.headers):
                    if name.lower() not in kept:
                        del request.headers[name]
                request.headers.pop("Cookie", None)  # the client's cookies stay home too
                response = client.send(request, stream=True, follow_redirects=False, auth=None)
            shown = redact_uri(str(url))
            logger.debug("%s: GET %s -> HTTP %d", job.where(), shown, response.status_code)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or location is None:
                return response
            response.close()
            url = url.join(location)
            if url.scheme not in _DEFAULT_PORTS:
                raise FetchError(
                    f"{job.where()}: {job.shown} redirects to a URI that is not http or https "
                    f"({redact_uri(str(url))})",
                    **job.error_args(),
                )
            if _origin(url) == origin and first.userinfo and not url.userinfo:
                url = url.copy_with(userinfo=first.userinfo)
            elif _origin(url) != origin and home:
                logger.info(
                    "%s: %s redirects to another origin (%s); configured headers are not sent "
                    "there",
                    job.where(),
                    job.shown,
                    redact_uri(str(url)),
                )
        raise FetchError(
            f"{job.where()}: cannot fetch {job.shown}: more than {_MAX_REDIRECTS} redirects",
            **job.error_args(),
        )

    def _capped(self, deadline: Deadline) -> httpx.Timeout:
        t = self._timeout
        return httpx.Timeout(
            connect=deadline.cap(t.connect),
            read=deadline.cap(t.read),
            write=deadline.cap(t.write),
            pool=deadline.cap(t.pool),
        )


def _check_response(job: Job, response: httpx.Response, offset: int) -> int:
    """The offset the response body starts at; raises for statuses that carry no artifact."""
    status = response.status_code
    if status in _NOT_FOUND_STATUSES:
        raise ArtifactNotFoundError(
            f"{job.where()}: {job.shown} not found (HTTP {status})", **job.error_args()
        )
    if status == 416 and offset:
        raise Restart(f"the server cannot resume at byte {offset} (HTTP 416)")
    if status >= 500 or status in _RETRY_STATUSES:
        raise Retryable(f"HTTP {status}", status=status, retry_after=_retry_after(response))
    if status == 200:
        if offset:
            logger.info("%s: the server ignored the range request; starting over", job.where())
        return 0
    if status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is not None and int(match.group(1)) == offset:
            return offset
        raise Restart(f"the server answered a different range than bytes={offset}-")
    raise FetchError(
        f"{job.where()}: cannot fetch {job.shown}: HTTP {status}",
        status=status,
        **job.error_args(),
    )


def _total(response: httpx.Response, start: int) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is not None and match.group(3) != "*":
            return int(match.group(3))
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return None
    return start + int(length)


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return 0.0  # an HTTP date, or nothing: the back-off decides
