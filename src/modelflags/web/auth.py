"""Who is asking, and whether a post really comes from the status page.

**Tokens.** The page is opened by a secret token: ``token=`` (identity ``"operator"``) or
``tokens={"alice": ..., "bob": ...}`` (the identity is the token's name, and goes to the audit
trail with each action). A script sends it as ``Authorization: Bearer <token>``; a browser signs
in once with a form. Tokens are compared in constant time, on their SHA-256 digests so that their
lengths do not show, against every known token without stopping at the first match. A token is
never logged, put in a cookie, or rendered.

**Sessions.** Signing in sets a cookie ``identity.expires.nonce.mac`` where ``mac`` is an
HMAC-SHA256 keyed by a key derived from the identity's token. Nothing is kept on the server, so
every worker process with the same tokens accepts the cookie, and changing a token ends its
sessions. The cookie is ``HttpOnly`` and ``SameSite=Strict`` (``Secure`` over HTTPS).

**Cross-site requests.** A post that acts must show it comes from the page itself: its
``Origin`` header (or, without one, its ``Referer``) names the page's own host or a trusted
origin, and a form post made with the session cookie carries a ``csrf`` field equal to an HMAC of
that session (a token bound to the session, the "signed double submit" pattern of OWASP's CSRF
prevention cheat sheet). A post made with a bearer token needs no form token (a browser never
adds that header to a cross-site request), but a foreign ``Origin`` is refused all the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

__all__ = ["COOKIE", "MIN_TOKEN_LENGTH", "OPERATOR", "Credentials", "origin_verdict"]

COOKIE = "modelflags_session"
"""The name of the session cookie."""

MIN_TOKEN_LENGTH = 16
"""Shorter tokens are refused: use ``secrets.token_urlsafe()``."""

OPERATOR = "operator"
"""The identity of ``token=``."""

_MAX_NAME = 64


class Credentials:
    """The tokens that open a status page, and the sessions and form tokens made from them.

    ``session_s``: how long a session lasts; ``clock``: wall-clock seconds. Immutable after
    construction; safe to share between threads.
    """

    def __init__(
        self,
        token: str | None = None,
        tokens: Mapping[str, str] | None = None,
        *,
        session_s: float = 12 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        named = dict(tokens or {})
        if token is not None:
            if OPERATOR in named:
                raise ValueError(f"token= is identity {OPERATOR!r}, also named in tokens=")
            named[OPERATOR] = token
        seen: set[str] = set()
        for name, secret in named.items():
            _check(name, secret)
            if secret in seen:
                raise ValueError(f"identity {name!r} shares its token with another identity")
            seen.add(secret)
        if not session_s > 0:
            raise ValueError(f"session_s must be positive, not {session_s!r}")
        self._digests = [(name, hashlib.sha256(s.encode()).digest()) for name, s in named.items()]
        self._keys = {
            name: hmac.new(digest, b"modelflags status page", hashlib.sha256).digest()
            for name, digest in self._digests
        }
        self.session_s = session_s
        self._clock = clock

    @property
    def identities(self) -> tuple[str, ...]:
        """The names of the known tokens."""
        return tuple(self._keys)

    def from_token(self, given: str) -> str | None:
        """The identity whose token is ``given``, or ``None``; constant time in ``given``."""
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
        found: str | None = None
        for name, known in self._digests:
            if hmac.compare_digest(digest, known):
                found = name
        return found

    def from_header(self, authorization: str | None) -> str | None:
        """The identity of an ``Authorization: Bearer <token>`` header, or ``None``."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return self.from_token(value.strip())

    def issue(self, identity: str) -> str:
        """A session cookie value for ``identity`` (a known one)."""
        expires = int(self._clock() + self.session_s)
        name = _b64(identity.encode())
        nonce = secrets.token_urlsafe(12)
        body = f"{name}.{expires}.{nonce}"
        return f"{body}.{self._mac(identity, body.encode())}"

    def from_session(self, cookie: str | None) -> str | None:
        """The identity of a session cookie that is genuine and not expired, or ``None``."""
        if not cookie or cookie.count(".") != 3:
            return None
        name, expires, nonce, mac = cookie.split(".")
        try:
            identity = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
            ends = int(expires)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if identity not in self._keys or ends < self._clock():
            return None
        expected = self._mac(identity, f"{name}.{expires}.{nonce}".encode())
        return identity if hmac.compare_digest(expected, mac) else None

    def csrf(self, cookie: str) -> str:
        """The form token bound to a session cookie (valid: check with :meth:`from_session`)."""
        identity = self.from_session(cookie)
        if identity is None:
            raise ValueError("no valid session")
        return self._mac(identity, b"csrf\0" + cookie.encode())

    def csrf_matches(self, cookie: str | None, given: str | None) -> bool:
        """True when ``given`` is the form token of the valid session ``cookie``."""
        if not cookie or not given:
            return False
        identity = self.from_session(cookie)
        if identity is None:
            return False
        return hmac.compare_digest(self._mac(identity, b"csrf\0" + cookie.encode()), given)

    def _mac(self, identity: str, message: bytes) -> str:
        return _b64(hmac.new(self._keys[identity], message, hashlib.sha256).digest())


def origin_verdict(
    origin: str | None, referer: str | None, host: str | None, trusted: Iterable[str] = ()
) -> bool | None:
    """Whether a request comes from the page's own site: ``True`` when its ``Origin`` (or, without
    one, its ``Referer``) names ``host`` or one of the ``trusted`` origins, ``False`` when it names
    another (or is ``"null"``), ``None`` when the request carries neither header."""
    source = origin if origin else referer
    if not source:
        return None
    if source.strip().lower() == "null":
        return False
    parts = urlsplit(source.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    netloc = parts.netloc.lower()
    if f"{parts.scheme}://{netloc}" in {item.rstrip("/").lower() for item in trusted}:
        return True
    return host is not None and netloc == host.strip().lower()


def _check(name: object, secret: object) -> None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise ValueError(f"identity {name!r}: a name of 1 to {_MAX_NAME} characters")
    if not name.isprintable():
        raise ValueError(f"identity {name!r}: printable characters only")
    if not isinstance(secret, str) or len(secret) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"the token of identity {name!r} must be a string of at least {MIN_TOKEN_LENGTH} "
            "characters (secrets.token_urlsafe() makes one)"
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
