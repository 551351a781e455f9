"""The status page's ASGI application: routes, who may see and do what, and the answers.

Routes, relative to where the app is mounted::

    GET  /                                          overview of every model
    GET  /models/{name}                             one model in full
    POST /models/{name}/versions/{version}/{action} a form action (rollback, release, confirm,
                                                    dismiss), with a reason
    GET  /login, POST /login, POST /logout          sign in with a token, sign out
    GET  /api/status, GET /api/models/{name}        the same data as JSON
    POST /api/models/{name}/versions/{version}/{action}  an action as JSON ({"reason": ...}),
                                                    with Authorization: Bearer only
    GET  /static/...                                the stylesheet and the refresh script

Pages need a token (or a session) unless ``public_read``; actions always do, and are checked
against cross-site requests (:mod:`modelflags.web.auth`). Statuses: 401 without valid
credentials, 403 for a cross-site post or a bad form token, 404 for an unknown model, version or
action (listing the known ones), 409 for an action the version cannot take (saying why), 413 and
415 for a body too large or of the wrong type, 422 for a missing reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from modelflags.web.actions import Actions, Refused
from modelflags.web.auth import COOKIE, Credentials, origin_verdict
from modelflags.web.options import WebOptions
from modelflags.web.pages import Pages
from modelflags.web.sampler import Sampler
from modelflags.web.views import model_detail, overview

if TYPE_CHECKING:
    from modelflags.client import ModelFlags

__all__ = ["COOKIE", "StatusApp", "WebOptions"]

logger = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
"""Bytes a posted form or JSON body may have."""
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class StatusApp:
    """The status page of one :class:`~modelflags.ModelFlags`, as an ASGI application.

    Mount it (``app.mount("/modelflags", flags.web_app(token=...))``) or serve it
    (:meth:`ModelFlags.serve_status <modelflags.ModelFlags.serve_status>`). The options are those
    of :class:`~modelflags.web.options.WebOptions`; without any token, ``public_read=True`` is
    needed (a page nobody can act on). Its sampling thread starts with the first request and
    stops with :meth:`close` (called by the lifespan's shutdown, and by ``flags.close()``). Safe
    to share between threads and event loops.
    """

    def __init__(
        self,
        flags: ModelFlags,
        *,
        token: str | None = None,
        tokens: Mapping[str, str] | None = None,
        public_read: bool = False,
        sample_s: float = 2.0,
        history_s: float = 3600.0,
        trusted_origins: Sequence[str] = (),
        session_s: float = 12 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = Credentials(token, tokens, session_s=session_s, clock=clock)
        if not self.credentials.identities and not public_read:
            raise ValueError(
                "the status page needs token= or tokens= (or public_read=True for a read-only "
                "page on which nobody can act)"
            )
        self.flags = flags
        self.public_read = public_read
        self.trusted_origins = tuple(trusted_origins)
        self.sampler = Sampler(flags, interval=sample_s, history_s=history_s, clock=clock)
        self.actions = Actions(flags, clock=clock)
        self.pages = Pages(
            self.sampler, self.credentials, sorted(flags.registry.models), clock=clock
        )
        self._app = Starlette(
            routes=[
                Route("/", self._overview, name="overview"),
                Route("/models/{name}", self._model, name="model"),
                Route("/models/{name}/versions/{version}/{action}", self._act, methods=["POST"]),
                Route("/login", self._login_form, methods=["GET"]),
                Route("/login", self._login, methods=["POST"]),
                Route("/logout", self._logout, methods=["POST"]),
                Route("/api/status", self._api_status),
                Route("/api/models/{name}", self._api_model),
                Route(
                    "/api/models/{name}/versions/{version}/{action}",
                    self._api_act,
                    methods=["POST"],
                ),
                Mount("/static", StaticFiles(packages=[("modelflags.web", "static")])),
            ],
            lifespan=self._lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        static = "/static/" in scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *_HEADERS]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_with_headers)

    def close(self) -> None:
        """Stop the sampling thread. Idempotent."""
        self.sampler.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(self.close)

    # -- who is asking -------------------------------------------------------------------------

    def _viewer(self, request: Request) -> str | None:
        """The identity of a token or session; ``None`` for nobody."""
        credentials = self.credentials
        return credentials.from_header(request.headers.get("authorization")) or (
            credentials.from_session(request.cookies.get(COOKIE))
        )

    def _may_read(self, request: Request) -> bool:
        return self.public_read or self._viewer(request) is not None

    def _from_here(self, request: Request) -> bool | None:
        headers = request.headers
        return origin_verdict(
            headers.get("origin"),
            headers.get("referer"),
            headers.get("host"),
            self.trusted_origins,
        )

    # -- pages ----------------------------------------------------------------------------------

    def _overview(self, request: Request) -> Response:
        if not self._may_read(request):
            return self.pages.login(request, status_code=401)
        snapshot = self.sampler.latest()
        data = overview(snapshot, self.flags.registry, self.actions.recent())
        return self.pages.overview(request, data, self._viewer(request))

    def _model(self, request: Request) -> Response:
        if not self._may_read(request):
            return self.pages.login(request, status_code=401)
        name = request.path_params["name"]
        if name not in self.flags.registry.models:
            return self.pages.not_found(request, f"unknown model {name!r}", self._models())
        data = self._detail(name)
        return self.pages.model(request, data, self._viewer(request))

    def _detail(self, name: str) -> dict[str, Any]:
        snapshot = self.sampler.latest()
        history = self.sampler.history(name)
        return model_detail(snapshot, self.flags.registry, name, history, self.actions.recent())

    def _models(self) -> tuple[str, ...]:
        return tuple(sorted(self.flags.registry.models))

    def _login_form(self, request: Request) -> Response:
        return self.pages.login(request)

    async def _login(self, request: Request) -> Response:
        if self._from_here(request) is not True:
            return self.pages.error(request, 403, "sign-in refused: it did not come from this page")
        form = await _form(request)
        if isinstance(form, Response):
            return form
        identity = self.credentials.from_token(form.get("token", ""))
        if identity is None:
            return self.pages.login(request, status_code=401, failed=True)
        response = RedirectResponse(self.pages.safe_next(request, form.get("next")), 303)
        response.set_cookie(
            COOKIE,
            self.credentials.issue(identity),
            max_age=int(self.credentials.session_s),
            path=self.pages.root(request) + "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def _logout(self, request: Request) -> Response:
        refused = await self._refuse_form(request)
        if isinstance(refused, Response):
            return refused
        response = RedirectResponse(self.pages.root(request) + "/login", 303)
        response.delete_cookie(COOKIE, path=self.pages.root(request) + "/")
        return response

    async def _refuse_form(self, request: Request) -> Response | tuple[str, dict[str, str]]:
        """The refusal of a form post (401, 403, 413, 415), or its identity and fields."""
        bearer = self.credentials.from_header(request.headers.get("authorization"))
        cookie = request.cookies.get(COOKIE)
        identity = bearer or self.credentials.from_session(cookie)
        if identity is None:
            return self.pages.login(request, status_code=401)
        verdict = self._from_here(request)
        if verdict is False or (verdict is None and bearer is None):
            return self.pages.error(request, 403, "cross-site request refused")
        form = await _form(request)
        if isinstance(form, Response):
            return form
        if bearer is None and not self.credentials.csrf_matches(cookie, form.get("csrf")):
            return self.pages.error(request, 403, "the form token is missing or stale; reload")
        return identity, form

    async def _act(self, request: Request) -> Response:
        checked = await self._refuse_form(request)
        if isinstance(checked, Response):
            return checked
        identity, form = checked
        params = request.path_params
        name, version, action = params["name"], params["version"], params["action"]
        try:
            await run_in_threadpool(
                self.actions.run, action, name, version, by=identity, reason=form.get("reason")
            )
        except Refused as refused:
            return self.pages.error(request, refused.status, refused.message, refused.known)
        await run_in_threadpool(self._after_action)
        target = f"{self.pages.root(request)}/models/{quote(name, safe='')}#actions"
        return RedirectResponse(target, 303)

    def _after_action(self) -> None:
        """Show the action's effect at once: a fresh snapshot (the action's decision-log line is
        written before the action returns), then the events and lines it led to."""
        self.sampler.sample_now()
        self.flags.flush(1.0)

    # -- the JSON API ---------------------------------------------------------------------------

    def _api_status(self, request: Request) -> Response:
        if not self._may_read(request):
            return _unauthorized()
        snapshot = self.sampler.latest()
        return JSONResponse(overview(snapshot, self.flags.registry, self.actions.recent()))

    def _api_model(self, request: Request) -> Response:
        if not self._may_read(request):
            return _unauthorized()
        name = request.path_params["name"]
        if name not in self.flags.registry.models:
            return _error(404, f"unknown model {name!r}", self._models())
        return JSONResponse(self._detail(name))

    async def _api_act(self, request: Request) -> Response:
        identity = self.credentials.from_header(request.headers.get("authorization"))
        if identity is None:
            return _unauthorized("actions in the API need Authorization: Bearer <token>")
        if self._from_here(request) is False:
            return _error(403, "cross-site request refused")
        body = await _json(request)
        if isinstance(body, Response):
            return body
        params = request.path_params
        reason = body.get("reason")
        try:
            detail = await run_in_threadpool(
                self.actions.run,
                params["action"],
                params["name"],
                params["version"],
                by=identity,
                reason=reason if isinstance(reason, str) else None,
            )
        except Refused as refused:
            return _error(refused.status, refused.message, refused.known)
        await run_in_threadpool(self._after_action)
        return JSONResponse({"ok": True, "by": identity, "detail": detail})


def _unauthorized(message: str = "a token is needed") -> Response:
    response = _error(401, message)
    response.headers["www-authenticate"] = 'Bearer realm="modelflags"'
    return response


def _error(status: int, message: str, known: Sequence[str] = ()) -> Response:
    body: dict[str, Any] = {"error": message}
    if known:
        body["known"] = list(known)
    return JSONResponse(body, status_code=status)


async def _body(request: Request) -> bytes | Response:
    """The request body, at most :data:`MAX_BODY` bytes (413 beyond)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return _error(413, f"the body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request) -> dict[str, str] | Response:
    """An URL-encoded form's fields (the first value of each); 415 for another body type."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return _error(415, "send a form (application/x-www-form-urlencoded)")
    body = await _body(request)
    if isinstance(body, Response):
        return body
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return _error(400, "the form cannot be read")
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


async def _json(request: Request) -> dict[str, Any] | Response:
    """A JSON object body; 415 for another body type, 400 when it is not an object."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        return _error(415, 'send JSON (application/json): {"reason": "..."}')
    body = await _body(request)
    if isinstance(body, Response):
        return body
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return _error(400, "the body is not JSON")
    if not isinstance(data, dict):
        return _error(400, 'the body must be a JSON object: {"reason": "..."}')
    return data
