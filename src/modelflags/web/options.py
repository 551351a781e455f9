"""What a caller may set on the status page (``flags.web_app(**options)``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypedDict

__all__ = ["WebOptions"]


class WebOptions(TypedDict, total=False):
    """Options of :meth:`ModelFlags.web_app <modelflags.ModelFlags.web_app>` and
    :meth:`~modelflags.ModelFlags.serve_status`.

    - ``token``: the secret that opens the page and its actions, as identity ``"operator"``.
    - ``tokens``: secrets by identity (``{"alice": "...", "bob": "..."}``); the identity of the
      token used is who did an action in the audit trail. ``token`` and ``tokens`` combine.
    - ``public_read``: read-only pages and the JSON API without a token (actions still need one).
    - ``sample_s``: seconds between two snapshots (default 2); ``history_s``: how much history the
      charts keep (default 3600).
    - ``trusted_origins``: origins (``"https://ops.example.com"``) allowed to post actions besides
      the page's own host, for proxies that rewrite ``Host``.
    - ``session_s``: how long a browser session lasts after signing in (default 12 hours).
    - ``clock``: wall-clock seconds since the epoch (injectable for tests).
    """

    token: str | None
    tokens: Mapping[str, str] | None
    public_read: bool
    sample_s: float
    history_s: float
    trusted_origins: Sequence[str]
    session_s: float
    clock: Callable[[], float]
