"""Test helpers for the local Unleash 8 stack: start/stop it and drive its admin API.

    from unleash_stack import UnleashAdmin, start_stack

    stack = start_stack()                      # reuses a healthy running stack
    with UnleashAdmin(stack.url, stack.admin_token) as admin:
        admin.create_flag("churn-model")
        admin.set_variants_rollout("churn-model", {"v1": 90, "v2": 10})
        admin.enable("churn-model")

Import it with ``services/unleash`` on ``sys.path`` (the tests' ``support.unleash`` does that).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import httpx

__all__ = [
    "MissingPrerequisites",
    "StackError",
    "StackInfo",
    "UnleashAdmin",
    "UnleashAdminError",
    "default_dir",
    "missing_prerequisites",
    "running_processes",
    "start_stack",
    "stop_stack",
]

LOG = logging.getLogger("modelflags.unleash.admin")
HERE = Path(__file__).resolve().parent


def _load(script: str) -> ModuleType:
    name = f"modelflags_unleash_{script}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{script}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_start = _load("start")
_stop = _load("stop")

StackError: type[RuntimeError] = _start.StackError
MissingPrerequisites: type[RuntimeError] = _start.MissingPrerequisites


def default_dir() -> Path:
    """The stack folder used when none is given: ``$MODELFLAGS_UNLEASH_DIR`` or
    ``/tmp/modelflags-unleash``."""
    folder: Path = _start.default_dir()
    return folder


def missing_prerequisites() -> list[str]:
    """What is not installed for the stack to start (empty when everything is there)."""
    missing: list[str] = _start.missing_prerequisites()
    return missing


@dataclass(frozen=True)
class StackInfo:
    """Where the running stack answers, and its tokens."""

    url: str
    admin_token: str
    client_token: str
    pg_port: int = 0
    dir: str = ""
    ui_username: str = "admin"
    ui_password: str = "unleash4all"
    #: True when start_stack found the stack already running and healthy.
    reused: bool = field(default=False, compare=False)


def start_stack(
    dir: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 90.0,
) -> StackInfo:
    """Start the stack in ``dir`` (default: ``$MODELFLAGS_UNLEASH_DIR`` or
    ``/tmp/modelflags-unleash``), or reuse it when it already runs and is healthy.

    Raises ``MissingPrerequisites`` before starting anything when programs are not installed,
    and ``StackError`` (both are ``RuntimeError``) when it cannot be started; what a failed start
    started is stopped again.
    """
    info: dict[str, Any] = _start.ensure_stack(dir, timeout=timeout)
    return StackInfo(
        url=str(info["url"]),
        admin_token=str(info["admin_token"]),
        client_token=str(info["client_token"]),
        pg_port=int(info.get("pg_port", 0)),
        dir=str(info.get("dir", "")),
        ui_username=str(info.get("ui_username", "admin")),
        ui_password=str(info.get("ui_password", "unleash4all")),
        reused=bool(info.get("reused", False)),
    )


def running_processes(dir: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """The stack's processes that run now, by name (``postgres``, ``unleash``) -> pid."""
    paths = _start.stack_paths(dir)
    found: dict[str, int] = {}
    postgres = _start.postgres_status(paths)
    if postgres is not None:
        found["postgres"] = int(postgres[0])
    unleash = _start.unleash_status(paths)
    if unleash is not None:
        found["unleash"] = int(unleash)
    return found


def stop_stack(
    dir: str | os.PathLike[str] | None = None,
    *,
    purge: bool = False,
) -> dict[str, bool]:
    """Stop the stack in ``dir`` (idempotent); ``purge`` also removes the folder."""
    result: dict[str, bool] = _stop.stop_stack(dir, purge=purge)
    return result


class UnleashAdminError(RuntimeError):
    """The Unleash admin API answered with a non-2xx status."""

    def __init__(self, method: str, url: str, status_code: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status_code}: {body}")
        self.method = method
        self.url = url
        self.status_code = status_code
        self.body = body


class UnleashAdmin:
    """A small client of the Unleash 8 admin API (``/api/admin``), authenticated by an admin
    API token.

    Flags are created in one project (``default`` unless given); variants are set as
    strategy variants of a single ``flexibleRollout`` strategy per environment.
    """

    def __init__(
        self,
        url: str,
        admin_token: str,
        *,
        project: str = "default",
        timeout: float = 10.0,
    ) -> None:
        self.project = project
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": admin_token, "Accept": "application/json"},
            timeout=timeout,
        )

    @classmethod
    def for_stack(cls, stack: StackInfo, **kwargs: Any) -> UnleashAdmin:
        return cls(stack.url, stack.admin_token, **kwargs)

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> UnleashAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, json: Any | None = None) -> Any:
        response = self._http.request(method, path, json=json)
        if not response.is_success:
            raise UnleashAdminError(method, str(response.url), response.status_code, response.text)
        LOG.debug("%s %s -> %d", method, path, response.status_code)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def _feature_path(self, name: str, project: str | None) -> str:
        return f"/api/admin/projects/{project or self.project}/features/{name}"

    # -- flags ------------------------------------------------------------------------------

    def create_flag(
        self,
        name: str,
        project: str = "default",
        *,
        description: str = "",
        flag_type: str = "release",
        impression_data: bool = False,
    ) -> dict[str, Any]:
        """Create a feature flag (disabled in every environment, no strategy yet)."""
        body = {
            "name": name,
            "type": flag_type,
            "description": description,
            "impressionData": impression_data,
        }
        result: dict[str, Any] = self._request(
            "POST", f"/api/admin/projects/{project}/features", json=body
        )
        return result

    def get_flag(self, name: str, *, project: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", self._feature_path(name, project))
        return result

    def set_variants_rollout(
        self,
        name: str,
        variants: Mapping[str, int],
        environment: str = "development",
        stickiness: str = "default",
        rollout: int = 100,
        *,
        project: str | None = None,
        payloads: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Make ``name`` serve ``variants`` (variant name -> percent, summing to 100) to
        ``rollout`` percent of the users in ``environment``.

        Each variant's payload is a string: ``payloads[variant]`` when given, else the variant
        name (OpenFeature string evaluations return the payload). The environment ends up with one
        ``flexibleRollout`` strategy (an existing one is updated, other strategies are
        removed). Unleash rewrites ``variable`` weights to an even split and refuses a list
        without any ``variable`` variant, so all variants but the last are ``fix`` with their
        exact weight and the last is ``variable``: it gets the remainder, which is its own
        share. Returns the strategy as stored.
        """
        strategy = {
            "name": "flexibleRollout",
            "constraints": [],
            "parameters": {
                "rollout": str(_percent(rollout, "rollout")),
                "stickiness": stickiness,
                "groupId": name,
            },
            "variants": _strategy_variants(variants, stickiness, payloads or {}),
        }
        base = f"{self._feature_path(name, project)}/environments/{environment}/strategies"
        existing: list[dict[str, Any]] = self._request("GET", base) or []
        target = next((s for s in existing if s.get("name") == "flexibleRollout"), None)
        for other in existing:
            if other is not target:
                self._request("DELETE", f"{base}/{other['id']}")
        if target is None:
            result: dict[str, Any] = self._request("POST", base, json=strategy)
        else:
            result = self._request("PUT", f"{base}/{target['id']}", json=strategy)
        return result

    def enable(
        self, name: str, environment: str = "development", *, project: str | None = None
    ) -> None:
        """Turn the flag on in ``environment``."""
        self._request("POST", f"{self._feature_path(name, project)}/environments/{environment}/on")

    def disable(
        self, name: str, environment: str = "development", *, project: str | None = None
    ) -> None:
        """Turn the flag off in ``environment`` (SDKs then serve their default value)."""
        self._request("POST", f"{self._feature_path(name, project)}/environments/{environment}/off")

    def delete_flag(
        self,
        name: str,
        *,
        project: str | None = None,
        missing_ok: bool = True,
        purge: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Archive the flag; with ``purge`` also delete it from the archive, so its name can be
        reused.

        unleash-server 8 records each flag's lifecycle stages in the background, about a second
        after the flag is created and after it is archived. Deleting a flag from the archive
        before both are recorded makes that background write fail, and the server exits. So
        ``purge`` first waits (at most ``timeout`` seconds) until both stages are recorded;
        without it the flag stays in the archive, which is enough for flags with unique names.
        """
        try:
            self._request("DELETE", self._feature_path(name, project))
        except UnleashAdminError as exc:
            if exc.status_code != 404 or not missing_ok:
                raise
            return
        if purge:
            self._wait_for_stages(name, project, {"initial", "archived"}, timeout)
            self._request("DELETE", f"/api/admin/archive/{name}")

    def _wait_for_stages(
        self, name: str, project: str | None, stages: set[str], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        path = f"{self._feature_path(name, project)}/lifecycle"
        while True:
            recorded = {entry.get("stage") for entry in self._request("GET", path) or []}
            if stages <= recorded:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"flag {name!r}: lifecycle stages {sorted(stages - recorded)} not recorded "
                    f"by Unleash within {timeout:.0f} s"
                )
            time.sleep(0.1)


def _percent(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"{what} must be an integer percent in 0..100, got {value!r}")
    return value


def _strategy_variants(
    variants: Mapping[str, int], stickiness: str, payloads: Mapping[str, str]
) -> list[dict[str, Any]]:
    if not variants:
        raise ValueError("at least one variant is needed")
    shares = {name: _percent(share, f"weight of {name!r}") for name, share in variants.items()}
    if sum(shares.values()) != 100:
        raise ValueError(f"variant weights must sum to 100, got {sum(shares.values())}")
    names = list(shares)
    unknown = set(payloads) - set(names)
    if unknown:
        raise ValueError(f"payloads for unknown variants: {sorted(unknown)}")
    return [
        {
            "name": name,
            "weight": shares[name] * 10,  # Unleash weights are per mille
            "weightType": "variable" if name == names[-1] else "fix",
            "stickiness": stickiness,
            "payload": {"type": "string", "value": payloads.get(name, name)},
        }
        for name in names
    ]
