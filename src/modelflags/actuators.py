"""Actuators: change a model's flag at its source, so every instance follows.

A guardrail that fires inside one process only protects that process. An actuator writes the
decision where the flag lives, so every instance reading the flag serves the same versions::

    Actuator                the protocol: set_split() and rollback()
     ├── FlagdFileActuator  a flagd flag file (FILE mode), rewritten atomically under a file lock
     └── UnleashActuator    the Unleash 8 admin API: variants of a flexibleRollout strategy

Weights map version ids to percents that sum to 100. Failures raise :class:`ActuatorError` with
what a person needs (the file path; the HTTP method, URL, status and body); the callers (the
guardrail policy and the canary driver) catch, report and carry on. Actuators are never called on
the request path. Invalid arguments (weights that do not sum to 100) raise ``ValueError``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import filelock
import httpx

from .errors import ModelFlagsError

__all__ = [
    "Actuator",
    "ActuatorError",
    "FlagdFileActuator",
    "UnleashActuator",
]

logger = logging.getLogger(__name__)

#: Longest response body quoted in an error message.
_BODY_LIMIT = 500


class ActuatorError(ModelFlagsError):
    """An actuator could not change flag ``flag_key``.

    ``actuator`` names the kind (``"flagd-file"``, ``"unleash"``); ``status`` is the HTTP status
    of a refused request, when there was one.
    """

    def __init__(
        self, message: str, *, flag_key: str, actuator: str, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.flag_key = flag_key
        self.actuator = actuator
        self.status = status


@runtime_checkable
class Actuator(Protocol):
    """Changes which model versions a flag serves, at the flag's source."""

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        """Serve the versions of ``weights`` (version id -> percent, summing to 100).

        A version at 100 may be written as the flag's plain default.
        """
        ...

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        """Serve ``to_version`` to everyone; ``from_version`` is the version being abandoned."""
        ...


def _shares(weights: Mapping[str, int]) -> list[tuple[str, int]]:
    """Validated (version, percent) pairs in the given order, without the zero ones."""
    if not weights:
        raise ValueError("weights must name at least one version")
    for version, percent in weights.items():
        if not isinstance(version, str) or not version:
            raise ValueError(f"version ids must be non-empty strings, got {version!r}")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"weight of {version!r} must be an integer in 0..100, got {percent!r}")
    total = sum(weights.values())
    if total != 100:
        raise ValueError(f"weights must sum to 100, got {total}: {dict(weights)}")
    return [(version, percent) for version, percent in weights.items() if percent > 0]


# -- flagd files --------------------------------------------------------------------------------


class FlagdFileActuator:
    """Rewrites one flag of a flagd flag file (JSON), as flagd's FILE mode reads it.

    Only the named flag changes; other flags and the file's other keys (``$schema``,
    ``$evaluators``, metadata) are kept as they are. Each change reads the file, edits the flag
    and writes the whole document back atomically: a temporary file in the same folder, fsync,
    ``os.replace`` (readers see the old file or the new one, never a mix), under a
    ``filelock.FileLock`` on ``<path>.lock`` so that writers in several threads or processes take
    turns and no change is lost. The new file keeps the old one's permission bits, and its
    modification time always moves forward (flagd's file watcher reloads on a newer mtime, and two
    writes within one tick of a coarse file-system clock would otherwise look like one).

    - :meth:`set_split` sets ``"state": "ENABLED"`` and replaces the flag's ``targeting`` with
      ``{"fractional": [[variant, percent], ...]}`` (flagd buckets by flag key + targeting key).
      A single version at 100 is written as ``defaultVariant`` with ``targeting: {}``.
    - :meth:`rollback` sets ``"state": "ENABLED"``, ``defaultVariant`` to the last known good
      version and ``targeting`` to ``{}``: everyone gets it, with or without a targeting key.
      (Disabling the flag would make each SDK serve its own default, the process's last known
      good version, which during a canary may be the very version being rolled back.)

    Versions are found among the flag's variants by name (with the version id as value) or by
    value; a version the flag lacks is added as ``{version: version}``. Any rule the targeting
    held before (a beta rule, for example) is replaced. JSON only (not YAML).

    Safe to share between threads and processes.
    """

    name = "flagd-file"

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def __repr__(self) -> str:
        return f"FlagdFileActuator({str(self.path)!r})"

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        shares = _shares(weights)

        def edit(flag: dict[str, Any]) -> None:
            names = [self._variant(flag_key, flag, version) for version, _ in shares]
            flag["state"] = "ENABLED"
            if len(shares) == 1:
                flag["defaultVariant"] = names[0]
                flag["targeting"] = {}
            else:
                pairs = [[name, percent] for name, (_, percent) in zip(names, shares, strict=True)]
                flag["targeting"] = {"fractional": pairs}

        self._edit(flag_key, edit)
        logger.info("%s: flag %r split %s", self.path, flag_key, dict(weights))

    def rollback(self, flag_key: str, *, to_version: str, from_version: str) -> None:
        def edit(flag: dict[str, Any]) -> None:
            flag["state"] = "ENABLED"
            flag["defaultVariant"] = self._variant(flag_key, flag, to_version)
            flag["targeting"] = {}

        self._edit(flag_key, edit)
        logger.warning(
            "%s: flag %r rolled back from %r to %r", self.path, flag_key, from_version, to_version
        )

    # -- mechanism ------------------------------------------------------------------------------

    def _error(self, flag_key: str, message: str) -> ActuatorError:
        return ActuatorError(f"{self.path}: {message}", flag_key=flag_key, actuator=self.name)

    def _variant(self, flag_key: str, flag: dict[str, Any], version: str) -> str:
        """The name of the variant serving ``version``, added to the flag when missing."""
        variants = flag.setdefault("variants", {})
        if not isinstance(variants, dict):
            raise self._error(flag_key, f"flag {flag_key!r} has variants that are not an object")
        if variants.get(version) == version:
            return version
        for name, value in variants.items():
            if value == version:
                return str(name)
        if version in variants:
            raise self._error(
                flag_key,
                f"flag {flag_key!r} has a variant {version!r} whose value is "
                f"{variants[version]!r}, not the version id",
            )
        variants[version] = version
        return version

    def _edit(self, flag_key: str, edit: Callable[[dict[str, Any]], None]) -> None:
        try:
            with filelock.FileLock(str(self._lock_path), timeout=self.lock_timeout):
                before = os.stat(self.path)
                document = self._read(flag_key)
                flags = document.get("flags")
                flag = flags.get(flag_key) if isinstance(flags, dict) else None
                if not isinstance(flag, dict):
                    raise self._error(flag_key, f"no flag {flag_key!r} in this flag file")
                edit(flag)
                self._write(document, before)
        except filelock.Timeout as exc:
            raise self._error(
                flag_key, f"another writer held {self._lock_path} for {self.lock_timeout:g} s"
            ) from exc
        except OSError as exc:
            raise self._error(flag_key, f"cannot update the flag file: {exc}") from exc

    def _read(self, flag_key: str) -> dict[str, Any]:
        text = self.path.read_text(encoding="utf-8")
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise self._error(flag_key, f"not a valid JSON flag file: {exc}") from exc
        if not isinstance(document, dict):
            raise self._error(flag_key, "not a flagd flag file (the top level is not an object)")
        return document

    def _write(self, document: dict[str, Any], before: os.stat_result) -> None:
        folder = self.path.parent
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(tmp, stat.S_IMODE(before.st_mode))
            mtime = max(time.time_ns(), before.st_mtime_ns + 1_000_000)
            os.utime(tmp, ns=(mtime, mtime))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with contextlib.suppress(OSError):  # durability of the rename; not every system allows it
            folder_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(folder_fd)
            finally:
                os.close(folder_fd)


# -- Unleash ------------------------------------------------------------------------------------


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

    def set_split(self, flag_key: str, weights: Mapping[str, int]) -> None:
        shares = _shares(weights)
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
        shares = _shares({to_version: 100})
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
            f"/api/admin/projects/{self.project}/features/{flag_key}"
            f"/environments/{self.environment}"
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
            self._request(flag_key, "PUT", f"{base}/{strategy['id']}", body)

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
            text = response.text
            if len(text) > _BODY_LIMIT:
                text = text[:_BODY_LIMIT] + "..."
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
