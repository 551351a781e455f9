"""The part of MLflow's REST API a version source needs, over httpx, with bounded waits.

Reading the Model Registry through MLflow's Python client would retry a server that is down for
about four minutes per call (its defaults, set only through environment variables that every
other MLflow call of the process shares). A serving process must instead notice in seconds and
go on with what it knows, so the few calls it makes go through this small client: each request
waits at most ``timeout`` seconds and is never retried here (the poller tries again at its next
refresh). Endpoints (MLflow REST API 2.0)::

    GET  /api/2.0/mlflow/registered-models/get             aliases
    GET  /api/2.0/mlflow/model-versions/search             versions, their tags (paged)
    GET  /api/2.0/mlflow/model-versions/get                one version
    GET  /api/2.0/mlflow/model-versions/get-download-uri   where a version's files are
    GET  /api/2.0/mlflow/runs/get                          the run's params, metrics, tags
    POST /api/2.0/mlflow/model-versions/set-tag            pinning a digest

Credentials are read as MLflow's client reads them: ``MLFLOW_TRACKING_TOKEN`` (bearer), else
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` (basic);
``MLFLOW_TRACKING_INSECURE_TLS=true`` turns certificate checks off and
``MLFLOW_TRACKING_SERVER_CERT_PATH`` names a CA bundle. They are sent only to the tracking
server, never logged, and never part of an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from modelflags.errors import VersionSourceError

__all__ = ["MlflowApi"]

_API = "/api/2.0/mlflow"
_PAGE = 1000
_MAX_PAGES = 100
_ERROR_TEXT = 300


class MlflowApi:
    """A client of one MLflow tracking server's registry and run endpoints.

    Every failure is a :class:`~modelflags.errors.VersionSourceError` (``status`` None when the
    server did not answer). ``transport`` is injectable for tests. Safe to share between
    threads (httpx's client is); make a new one in a forked child (:meth:`reset_after_fork`).
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self._timeout = timeout
        self._transport = transport
        env = os.environ if environ is None else environ
        headers: dict[str, str] = {}
        auth: httpx.Auth | None = None
        token = env.get("MLFLOW_TRACKING_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif env.get("MLFLOW_TRACKING_USERNAME") and env.get("MLFLOW_TRACKING_PASSWORD"):
            auth = httpx.BasicAuth(env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        verify: bool | str = True
        if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            verify = False
        elif env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            verify = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        self._options: dict[str, Any] = {"headers": headers, "auth": auth, "verify": verify}
        self._client = self._make_client()

    def _make_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.tracking_uri + _API,
            timeout=httpx.Timeout(self._timeout),
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
            **self._options,
        )

    # -- the calls ----------------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, str]:
        """The aliases of registered model ``name``: alias -> version."""
        body = self._get("/registered-models/get", {"name": name})
        model = body.get("registered_model") or {}
        return {
            str(item["alias"]): str(item["version"])
            for item in model.get("aliases") or ()
            if isinstance(item, Mapping) and "alias" in item and "version" in item
        }

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of registered model ``name`` as MLflow describes it (all pages)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"filter": _name_filter(name), "max_results": _PAGE}
        for _ in range(_MAX_PAGES):
            body = self._get("/model-versions/search", params)
            found.extend(
                item for item in body.get("model_versions") or () if isinstance(item, dict)
            )
            token = body.get("next_page_token")
            if not token:
                return found
            params = {**params, "page_token": token}
        raise VersionSourceError(
            f"MLflow at {self.tracking_uri}: model {name!r} has more than "
            f"{_PAGE * _MAX_PAGES} versions",
            url=self._shown("/model-versions/search"),
        )

    def version(self, name: str, version: str) -> dict[str, Any]:
        """Version ``version`` of ``name`` as MLflow describes it."""
        body = self._get("/model-versions/get", {"name": name, "version": version})
        found = body.get("model_version")
        return found if isinstance(found, dict) else {}

    def download_uri(self, name: str, version: str) -> str:
        """Where the files of version ``version`` of ``name`` are."""
        body = self._get("/model-versions/get-download-uri", {"name": name, "version": version})
        uri = body.get("artifact_uri")
        if not isinstance(uri, str) or not uri:
            raise VersionSourceError(
                f"MLflow at {self.tracking_uri} gave no artifact location for version "
                f"{version} of {name!r}",
                url=self._shown("/model-versions/get-download-uri"),
            )
        return uri

    def run(self, run_id: str) -> dict[str, Any]:
        """The run ``run_id`` (its ``info`` and ``data``)."""
        run = self._get("/runs/get", {"run_id": run_id}).get("run")
        return run if isinstance(run, dict) else {}

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        """Set tag ``key`` of version ``version`` of ``name``."""
        self._call(
            "POST",
            "/model-versions/set-tag",
            json={"name": name, "version": version, "key": key, "value": value},
        )

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def reset_after_fork(self) -> None:
        """In a child process just forked: a client of its own (connections are not shared)."""
        self._client = self._make_client()

    # -- requests -----------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("GET", path, params=params)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        shown = self._shown(path)
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise VersionSourceError(
                f"MLflow at {self.tracking_uri} did not answer {method} {path}: "
                f"{type(exc).__name__}: {exc}",
                url=shown,
            ) from exc
        if response.status_code != 200:
            raise VersionSourceError(
                f"MLflow at {self.tracking_uri} answered {method} {path} with HTTP "
                f"{response.status_code}: {_error_text(response)}",
                url=shown,
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise VersionSourceError(
                f"MLflow at {self.tracking_uri} answered {method} {path} with something that "
                "is not JSON",
                url=shown,
                status=response.status_code,
            ) from exc
        return body if isinstance(body, dict) else {}

    def _shown(self, path: str) -> str:
        parts = urlsplit(self.tracking_uri)
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{host}{parts.path}{_API}{path}"


def _name_filter(name: str) -> str:
    """MLflow's search filter for one model name, quoted with a quote the name lacks."""
    for quote in ("'", '"', "`"):
        if quote not in name:
            return f"name={quote}{name}{quote}"
    raise VersionSourceError(
        f"MLflow model name {name!r} contains every quote character a filter can use",
        url="",
    )


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        text = f"{body.get('error_code', '')}: {body['message']}".strip(": ")
    else:
        text = response.text
    text = " ".join(text.split())
    return text[:_ERROR_TEXT] + ("..." if len(text) > _ERROR_TEXT else "")
