"""The status page: every model's versions, their health and guardrails, and the actions an
operator takes on them, in a browser and as JSON.

``flags.web_app(token=...)`` makes the ASGI app to mount in a Starlette or FastAPI application;
``flags.serve_status(port=...)`` runs it on a server thread of its own. Importing this package
imports nothing heavy: Starlette, Jinja2 and uvicorn are imported by the modules that use them
(:mod:`modelflags.web.app`, :mod:`modelflags.web.server`), and :mod:`modelflags.web.remote`, the
reading side of ``modelflags status --url``, needs only httpx.

Modules: ``options`` (what a caller may set), ``auth`` (tokens, sessions, CSRF), ``sampler``
(snapshots off the request path), ``views`` (what a page shows, from a snapshot), ``charts``
(server-rendered SVG), ``actions`` (rollback, release, confirm, dismiss, with an audit trail),
``app`` (routes), ``server`` (the server thread), ``remote`` (reading a status page's JSON).
"""
