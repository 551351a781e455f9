"""Reading a status page from elsewhere: the reading side of ``modelflags status --url URL``.

:func:`fetch_status` asks a running status page for its JSON (``GET {url}/api/status``, with the
token as ``Authorization: Bearer``); :func:`format_status` turns that JSON into lines for a
terminal. Only httpx is needed. Redirects are not followed, so the token goes to the address
given and nowhere else, and it never appears in an error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from modelflags.errors import ModelFlagsError

__all__ = ["fetch_status", "format_status"]


def fetch_status(
    url: str,
    token: str | None = None,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """The JSON of the status page at ``url`` (where it is mounted: ``http://host:8000/modelflags``).

    Raises :class:`~modelflags.errors.ModelFlagsError` naming the address and what went wrong:
    no answer, a status other than 200 (401: the token is missing or wrong), or a body that is
    not the status page's JSON.
    """
    address = url.rstrip("/") + "/api/status"
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with httpx.Client(timeout=timeout, transport=transport, follow_redirects=False) as client:
            response = client.get(address, headers=headers)
    except httpx.HTTPError as exc:
        raise ModelFlagsError(f"{address}: no answer ({type(exc).__name__}: {exc})") from exc
    if response.status_code == 401:
        given = "the token was refused" if token else "it needs a token"
        raise ModelFlagsError(f"{address}: 401 Unauthorized ({given})")
    if response.status_code != 200:
        raise ModelFlagsError(f"{address}: HTTP {response.status_code} {_excerpt(response)}")
    try:
        data = response.json()
    except ValueError as exc:
        raise ModelFlagsError(f"{address}: the answer is not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ModelFlagsError(f"{address}: the answer is not a modelflags status page's JSON")
    return data


def format_status(data: Mapping[str, Any]) -> str:
    """The status page's JSON (:func:`fetch_status`) as plain text, one block per model."""
    lines = [f"snapshot at {data.get('sampled_at') or '?'} UTC"]
    source = data.get("flag_source")
    if isinstance(source, Mapping):
        text = f"flag source {source.get('provider')}: {source.get('state')}"
        if source.get("errors"):
            text += f" ({source.get('errors')} errors; last: {source.get('last_error')})"
        lines.append(text)
    if data.get("error"):
        lines.append(f"the last snapshot failed: {data['error']}")
    for name, model in sorted(data.get("models", {}).items()):
        lines.append("")
        lines.extend(_model_lines(name, model))
    return "\n".join(lines)


def _model_lines(name: str, model: Mapping[str, Any]) -> list[str]:
    verdict = (model.get("guardrails") or {}).get("verdict")
    head = f"{name}  flag {model.get('flag')}  LKG {model.get('lkg')}"
    lines = [head + (f"  guardrails {verdict}" if verdict else "")]
    split = model.get("split") or []
    if split:
        shares = ", ".join(f"{part['version']} {_pct(part.get('share'))}" for part in split)
        window = model.get("window_s")
        span = f" in {window:g} s" if isinstance(window, int | float) else ""
        lines.append(f"  answered: {shares} ({model.get('requests')} requests{span})")
    elif not model.get("metrics"):
        lines.append("  no metrics kept")
    lines.append(
        f"  {'version':<12} {'stage':<11} {'state':<24} {'asked':>7} {'errors':>7} {'p95 ms':>8}"
    )
    for version in model.get("versions", []):
        lines.append(
            f"  {version['version']:<12} {version.get('stage') or '':<11} "
            f"{_state(version):<24} {_pct(version.get('asked_share')):>7} "
            f"{_pct(version.get('error_rate')):>7} {_num(version.get('p95_ms')):>8}"
        )
    for quarantine in model.get("quarantined", []):
        lines.append(f"  quarantined {quarantine['version']}: {quarantine.get('cause')}")
    for proposal in model.get("proposals", []):
        lines.append(
            f"  rollback of {proposal['version']} proposed ({proposal.get('rule')} "
            f"{_num(proposal.get('observed'))} against {_num(proposal.get('threshold'))})"
        )
    return lines


def _state(version: Mapping[str, Any]) -> str:
    words = [
        word
        for word, on in (
            ("LKG", version.get("lkg")),
            ("rolled back", version.get("rolled_back")),
            ("quarantined", version.get("quarantined")),
            ("proposed", version.get("proposed")),
            ("loaded", version.get("loaded") and not version.get("lkg")),
        )
        if on
    ]
    return ", ".join(words) or "-"


def _pct(value: object) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) else "-"


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _excerpt(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])[:200]
    return str(body)[:200]
