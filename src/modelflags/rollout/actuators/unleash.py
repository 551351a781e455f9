"""The Unleash actuator: drive an Unleash 8 flag through its admin API."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from modelflags.rollout.actuators.base import ActuatorError, checked_shares, percents

__all__ = ["UnleashActuator"]

logger = logging.getLogger(__name__)

#: Most characters of a response body quoted in an error message (before escaping).
_BODY_LIMIT = 200
#: ``"token": "..."``, ``apiKey=...``, ``Authorization: ...``: values of secret-looking fields.
_SECRET_FIELD = re.compile(
    r"""(?ix)
    ( ["']? [\w.-]* (?:token|secret|password|passwd|api[_-]?key|authorization|credential)
      [\w.-]* ["']? \s* [:=] \s* )
    ( "[^"]*" | '[^']*' | [^\s,;&}\]]+ )
    """
)


def _excerpt(text: str, secrets: tuple[str, ...]) -> str:
    """A short, printable excerpt of a response body, with secrets masked.

    Known secrets (the admin token) and values of secret-looking fields are replaced by ``***``
    before the body is cut to ``_BODY_LIMIT`` characters; control and other non-printable
    characters are escaped (``\\x1b``), so a body cannot forge log lines or terminal output.
    """
    for secret in secrets:
        if len(secret) >= 4:  # shorter ones are no secret, and would mangle the text
            text = text.replace(secret, "***")
    text = _SECRET_FIELD.sub(lambda m: f"{m.group(1)}***", text)
    if len(text) > _BODY_LIMIT:
        return f"{_printable(text[:_BODY_LIMIT])}... ({len(text)} characters in all)"
    return _printable(text)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class UnleashActuator:
    """Drives an Unleash 8 flag through its admin API (``/api/admin``) with an admin token.

    A model's flag serves its versions as variants of one ``flexibleRollout`` strategy in
    ``environment``: variant name = version id, string payload = version id (OpenFeature string
    evaluations return the payload).

    - :meth:`set_split` writes the variants into the environment's first ``flexibleRollout``
      strategy (creating one when there is none; its constraints, segments and stickiness are
      kept), sets its ``rollout`` to 100 (the split is carried by the variants; users outside the
      rollout would get each SDK's default), and turns the flag on in the environment. Weights are
      per mille: every variant but the last is ``fix`` with its exact weight, the last is
      ``variable`` and receives the remainder, which is its own share (Unleash refuses a list
      without a ``variable`` variant and evens out ``variable`` weights). Variant stickiness is
      the strategy's (``default`` for a new one).
    - :meth:`rollback` makes that strategy serve one variant, the last known good version, at
      100 %, also in any other strategy of the environment whose variants include
      ``from_version``, and keeps the flag on, so every SDK keeps serving the last known good
      version explicitly. The alternative, turning the flag off in the environment, makes each
      SDK serve its default value, which modelflags sets to the process's last known good
      version; during a canary that may be the candidate itself, hence the explicit variant.

    The flag must exist; a missing flag or environment is an :class:`ActuatorError` with status
    404. Other strategies are left alone. ``client`` is an ``httpx.Client`` to use (its owner
    closes it); otherwise one is made and :meth:`close` (or ``with``) closes it.

    Safe to share between threads: calls of one actuator take turns (a lock held across the
    HTTP calls, off the request path), so a rollback is never overwritten by a split that read
    the strategies before it. Between processes the last write wins.
    """

    name = "unleash"

    def __init__(
        self,
        url: str,
        admin_token: str,
        *,
        project: str = "default",
        environment: str = "development",
        client: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.project = project
        self.environment = environment
        self._token = admin_token
        self._headers = {"Authorization": admin_token, "Accept": "application/json"}
        self._owns_client = client is None
        self._http = client if client is not None else httpx.Client(timeout=timeout)
        self._timeout = timeout
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"UnleashActuator({self.url!r}, project={self.project!r}, "
            f"environment={self.environment!r})"
        )

    def close(self) -> None:
        """Close the HTTP client, if this actuator made it."""
        if self._owns_client:
            self._http.close()

    def __enter__(self) -> UnleashActuator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def current_split(self, flag_key: str) -> dict[str, int] | None:
        """The split of the environment's rollout strategy, from its variants' payloads and
        weights; ``None`` when that strategy is missing, does not reach every user
        (``rollout`` below 100) or has no variants."""
        with self._lock:
            main = _rollout_strategy(self._strategies(flag_key))
        if main is None or main.get("disabled"):
            return None
        if str((main.get("parameters") or {}).get("rollout", "100")) != "100":
            return None
        weights: dict[str, float] = {}
        for variant in main.get("variants") or []:
            payload = variant.get("payload") or {}
            version = str(payload.get("value", variant.get("name")))
            weight = variant.get("weight")
            if not isinstance(weight, int | float):
                return None
            weights[version] = weights.get(version, 0.0) + float(weight)
        return percents(weights)

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        shares = checked_shares(weights)
        with self._lock:
            strategies = self._strategies(flag_key)
            self._write_variants(flag_key, _rollout_strategy(strategies), shares, main=True)
            self._enable(flag_key)
        logger.info(
            "Unleash %s: flag %r split %s in %s",
            self.url,
            flag_key,
            dict(weights),
            self.environment,
        )

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        shares = checked_shares({to_version: 100})
        with self._lock:
            strategies = self._strategies(flag_key)
            main = _rollout_strategy(strategies)
            self._write_variants(flag_key, main, shares, main=True)
            for other in strategies:
                if other is not main and from_version in _served_versions(other):
                    self._write_variants(flag_key, other, shares, main=False)
            self._enable(flag_key)
        logger.warning(
            "Unleash %s: flag %r rolled back from %r to %r in %s",
            self.url,
            flag_key,
            from_version,
            to_version,
            self.environment,
        )

    # -- mechanism ------------------------------------------------------------------------------

    def _environment_path(self, flag_key: str) -> str:
        return (
            f"/api/admin/projects/{_segment(self.project)}/features/{_segment(flag_key)}"
            f"/environments/{_segment(self.environment)}"
        )

    def _strategies(self, flag_key: str) -> list[dict[str, Any]]:
        found = self._request(flag_key, "GET", f"{self._environment_path(flag_key)}/strategies")
        if not isinstance(found, list):
            raise ActuatorError(
                f"Unleash {self.url}: unexpected strategies of flag {flag_key!r}: {found!r:.200}",
                flag_key=flag_key,
                actuator=self.name,
            )
        return [item for item in found if isinstance(item, dict)]

    def _write_variants(
        self,
        flag_key: str,
        strategy: dict[str, Any] | None,
        shares: list[tuple[str, int]],
        *,
        main: bool,
    ) -> None:
        current = strategy or {}
        parameters = dict(current.get("parameters") or {})
        if main:
            parameters["rollout"] = "100"
            parameters.setdefault("groupId", flag_key)
            parameters.setdefault("stickiness", "default")
        stickiness = str(parameters.get("stickiness") or "default")
        body = {
            "name": current.get("name", "flexibleRollout"),
            "title": current.get("title"),
            "disabled": False if main else bool(current.get("disabled", False)),
            "constraints": current.get("constraints") or [],
            "segments": current.get("segments") or [],
            "parameters": parameters,
            "variants": _variants(shares, stickiness),
        }
        base = f"{self._environment_path(flag_key)}/strategies"
        if strategy is None:
            self._request(flag_key, "POST", base, body)
        else:
            self._request(flag_key, "PUT", f"{base}/{_segment(str(strategy['id']))}", body)

    def _enable(self, flag_key: str) -> None:
        self._request(flag_key, "POST", f"{self._environment_path(flag_key)}/on")

    def _request(self, flag_key: str, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.url}{path}"
        try:
            response = self._http.request(
                method, url, json=body, headers=self._headers, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise ActuatorError(
                f"Unleash admin API {method} {url} failed: {type(exc).__name__}: {exc}",
                flag_key=flag_key,
                actuator=self.name,
            ) from exc
        if not response.is_success:
            text = _excerpt(response.text, (self._token,))
            raise ActuatorError(
                f"Unleash admin API {method} {url} -> HTTP {response.status_code}: {text}",
                flag_key=flag_key,
                actuator=self.name,
                status=response.status_code,
            )
        logger.debug("%s %s -> %d", method, url, response.status_code)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text


def _segment(value: str) -> str:
    """``value`` as one URL path segment: ``/``, ``?``, ``#``, ``%`` and the like escaped, and
    ``.``/``..`` too (httpx would resolve them as dot segments and climb out of the path)."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in {".", ".."} else quoted


def _rollout_strategy(strategies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The environment's first enabled ``flexibleRollout`` strategy, else its first one."""
    rollouts = [s for s in strategies if s.get("name") == "flexibleRollout" and "id" in s]
    enabled = [s for s in rollouts if not s.get("disabled")]
    candidates = enabled or rollouts
    return candidates[0] if candidates else None


def _served_versions(strategy: Mapping[str, Any]) -> set[str]:
    served = set()
    for variant in strategy.get("variants") or []:
        payload = variant.get("payload") or {}
        served.add(str(payload.get("value", variant.get("name"))))
        served.add(str(variant.get("name")))
    return served


def _variants(shares: list[tuple[str, int]], stickiness: str) -> list[dict[str, Any]]:
    last = len(shares) - 1
    return [
        {
            "name": version,
            "weight": percent * 10,
            "weightType": "variable" if index == last else "fix",
            "stickiness": stickiness,
            "payload": {"type": "string", "value": version},
        }
        for index, (version, percent) in enumerate(shares)
    ]
