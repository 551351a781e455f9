"""HTML pages of the status page: Jinja2 templates shipped in the package, escaped throughout,
with charts drawn on the server (:mod:`modelflags.web.charts`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from modelflags.web.auth import COOKIE, Credentials
from modelflags.web.charts import IntervalRow, colors, interval_chart, line_chart, split_bar
from modelflags.web.sampler import Sampler

__all__ = ["Pages"]

_REFRESH_BOUNDS = (1, 300)


class Pages:
    """Renders the pages. Safe to share between threads (the Jinja2 environment is)."""

    def __init__(
        self,
        sampler: Sampler,
        credentials: Credentials,
        names: Sequence[str],
        *,
        clock: Callable[[], float],
    ) -> None:
        self._sampler = sampler
        self._names = tuple(names)
        self._credentials = credentials
        self._clock = clock
        env = Environment(
            loader=PackageLoader("modelflags.web", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(pct=_pct, ms=_ms, num=_num, url=_url, ago=self._ago)
        self._env = env

    # -- helpers for the app --------------------------------------------------------------------

    @staticmethod
    def root(request: Request) -> str:
        """Where the app is mounted (``""`` at the root)."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def safe_next(self, request: Request, target: str | None) -> str:
        """``target`` when it is a path inside this app, else the overview (no open redirect)."""
        root = self.root(request)
        if target and "\\" not in target and not target.startswith("//"):
            parts = urlsplit(target)
            inside = parts.path == root or parts.path.startswith(root + "/")
            if not parts.scheme and not parts.netloc and inside:
                return target
        return root + "/"

    # -- pages ----------------------------------------------------------------------------------

    def overview(self, request: Request, data: Mapping[str, Any], viewer: str | None) -> Response:
        """Every model at a glance."""
        splits = {
            name: split_bar(
                [(part["version"], part["answered"]) for part in model["split"]],
                palette=colors([v["version"] for v in model["versions"]]),
            )
            for name, model in data["models"].items()
        }
        context = {"data": data, "splits": splits, "title": "Models"}
        return self._render(request, "overview.html", context, viewer=viewer)

    def model(self, request: Request, data: Mapping[str, Any], viewer: str | None) -> Response:
        """One model in full, with its charts."""
        palette = colors([v["version"] for v in data.get("versions", [])])
        context = {
            "data": data,
            "title": data["name"],
            "palette": palette,
            "split": split_bar(
                [(part["version"], part["answered"]) for part in data.get("split", [])],
                palette=palette,
            ),
            "charts": self._charts(data, palette),
            "intervals": _intervals(data, palette),
        }
        return self._render(request, "model.html", context, viewer=viewer)

    def login(self, request: Request, *, status_code: int = 200, failed: bool = False) -> Response:
        """The sign-in form (401 when a page was asked for without credentials)."""
        asked = request.url.path if request.method == "GET" else None
        target = asked if asked and not asked.endswith("/login") else None
        context = {"title": "Sign in", "failed": failed, "next": target or self.root(request) + "/"}
        response = self._render(request, "login.html", context, status_code=status_code)
        if status_code == 401:
            response.headers["www-authenticate"] = 'Bearer realm="modelflags"'
        return response

    def error(
        self, request: Request, status: int, message: str, known: Sequence[str] = ()
    ) -> Response:
        """An error page: what went wrong, and the known names when a name was unknown."""
        context = {"title": f"Error {status}", "status": status, "message": message}
        context.update(known=list(known), models=[])
        return self._render(request, "error.html", context, status_code=status)

    def not_found(self, request: Request, message: str, models: Sequence[str]) -> Response:
        """404 for an unknown model, with links to the known ones."""
        context = {"title": "Not found", "status": 404, "message": message, "known": []}
        context["models"] = list(models)
        return self._render(request, "error.html", context, status_code=404)

    # -- rendering ------------------------------------------------------------------------------

    def _render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        viewer: str | None = None,
        status_code: int = 200,
    ) -> Response:
        cookie = request.cookies.get(COOKIE)
        session = self._credentials.from_session(cookie)
        csrf = self._credentials.csrf(cookie) if cookie and session is not None else None
        base = {
            "root": self.root(request),
            "viewer": viewer,
            "session": session,
            "csrf": csrf,
            "refresh": _refresh(request, self._sampler.interval),
            "nav_models": self._names,
        }
        html = self._env.get_template(template).render({**base, **context})
        return HTMLResponse(html, status_code=status_code)

    def _charts(self, data: Mapping[str, Any], palette: Mapping[str, str]) -> list[Markup]:
        series: Mapping[str, list[list[Any]]] = data.get("series", {})
        now = self._clock()

        def chart(title: str, column: int, fmt: Callable[[float], str]) -> Markup:
            lines = {
                version: [(row[0], row[column]) for row in rows] for version, rows in series.items()
            }
            return line_chart(lines, title=title, fmt=fmt, palette=palette, now=now)

        window = data.get("window_s")
        span = f" (last {window:g} s, at each moment)" if window else ""
        charts = [
            chart(f"Requests{span}", 1, lambda v: f"{v:g}"),
            chart("Error rate", 3, _pct),
            chart("p50 latency (ms)", 4, lambda v: f"{v:.3g}"),
            chart("p95 latency (ms)", 5, lambda v: f"{v:.3g}"),
        ]
        outcomes = sorted({name for rows in series.values() for row in rows for name in row[6]})
        for outcome in outcomes:
            lines = {
                version: [(row[0], row[6].get(outcome)) for row in rows]
                for version, rows in series.items()
            }
            charts.append(
                line_chart(
                    lines,
                    title=f"Mean of {outcome}",
                    fmt=lambda v: f"{v:.3g}",
                    palette=palette,
                    now=now,
                )
            )
        return charts

    def _ago(self, moment: float | None) -> str:
        if moment is None:
            return ""
        seconds = max(0.0, self._clock() - moment)
        return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _intervals(data: Mapping[str, Any], palette: Mapping[str, str]) -> list[Markup]:
    """Per outcome, each version's mean with its confidence interval against the LKG: from the
    guardrail rules watching the outcome when there are, from the window's means otherwise."""
    charts: list[Markup] = []
    lkg = data.get("lkg")
    ruled: dict[str, list[Mapping[str, Any]]] = {}
    for rule in data.get("guardrails", {}).get("rules", []):
        if rule.get("metric"):
            ruled.setdefault(rule["metric"], []).append(rule)
    for metric, rules in sorted(ruled.items()):
        rows = [
            IntervalRow(
                r["version"], r["estimate"], r["lower"], r["upper"], r["lkg_estimate"], r["limit"]
            )
            for r in rules
        ]
        reference = next((r["lkg_estimate"] for r in rules if r["lkg_estimate"] is not None), None)
        if lkg is not None:
            rows.insert(0, IntervalRow(str(lkg), reference, None, None, reference, None))
        charts.append(
            interval_chart(rows, title=f"{metric}: candidates against the LKG", palette=palette)
        )
    means: dict[str, dict[str, float]] = {}
    for version, outcomes in data.get("outcomes", {}).items():
        for name, stats in outcomes.items():
            if name not in ruled and stats.get("mean") is not None:
                means.setdefault(name, {})[version] = stats["mean"]
    for name, by_version in sorted(means.items()):
        reference = by_version.get(str(lkg))
        rows = [
            IntervalRow(version, mean, None, None, reference, None)
            for version, mean in sorted(by_version.items())
        ]
        charts.append(interval_chart(rows, title=f"{name}: mean per version", palette=palette))
    return charts


def _refresh(request: Request, interval: float) -> int:
    """Seconds between two refreshes of a page: ``?refresh=N`` (1 to 300; 0 turns it off), else
    the sampling interval."""
    asked = request.query_params.get("refresh")
    if asked is not None:
        try:
            value = int(asked)
        except ValueError:
            value = -1
        if value == 0:
            return 0
        if value > 0:
            return min(max(value, _REFRESH_BOUNDS[0]), _REFRESH_BOUNDS[1])
    return max(_REFRESH_BOUNDS[0], math.ceil(interval))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3g} ms"


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _url(value: object) -> str:
    """A path segment: every character but unreserved ones percent-encoded."""
    return quote(str(value), safe="")
