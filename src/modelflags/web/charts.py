"""Charts drawn on the server as inline SVG: no script, no font, nothing fetched.

Every text that comes from users (version names, outcome names) is escaped; numbers are formatted
here. Colours follow the version's place among the model's versions, so one version keeps its
colour across the charts of a page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["IntervalRow", "colors", "interval_chart", "line_chart", "split_bar"]

PALETTE = ("#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777")
MAX_POINTS = 300
"""Points drawn per line at most (longer series are thinned evenly)."""


def colors(versions: Sequence[str]) -> dict[str, str]:
    """A colour per version, by its place in ``versions``."""
    return {version: PALETTE[i % len(PALETTE)] for i, version in enumerate(versions)}


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float | None]]],
    *,
    title: str,
    fmt: Callable[[float], str],
    palette: Mapping[str, str],
    now: float,
    width: int = 560,
    height: int = 170,
) -> Markup:
    """Lines over time, one per version: ``series`` maps versions to ``(time, value)`` pairs
    (``None``: no value then, a gap). The x axis ends at ``now``; the y axis starts at zero."""
    pad_l, pad_r, pad_t, pad_b = 56, 10, 22, 34
    inner_w, inner_h = width - pad_l - pad_r, height - pad_t - pad_b
    values = [v for points in series.values() for _, v in points if v is not None]
    times = [t for points in series.values() for t, _ in points]
    parts = [_svg_open(width, height, title), _text(pad_l, 14, title, "chart-title")]
    if not values or not times:
        parts.append(_text(pad_l + inner_w / 2, pad_t + inner_h / 2, "no data yet", "muted"))
        return Markup("".join([*parts, "</svg>"]))
    start = min(times)
    span = max(now - start, 1.0)
    top = _nice(max(values))

    def x(t: float) -> float:
        return pad_l + (t - start) / span * inner_w

    def y(v: float) -> float:
        return pad_t + inner_h - (v / top) * inner_h

    for tick in (0.0, top / 2, top):
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + inner_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'class="grid"/>'
        )
        parts.append(_text(pad_l - 6, y(tick) + 4, fmt(tick), "tick", anchor="end"))
    parts.append(_text(pad_l, height - 18, f"-{_ago(span)}", "tick"))
    parts.append(_text(pad_l + inner_w, height - 18, "now", "tick", anchor="end"))
    legend_x = pad_l
    for version, points in series.items():
        color = palette.get(version, PALETTE[0])
        path = _path([(x(t), y(v) if v is not None else None) for t, v in _thin(points)])
        if path:
            parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.append(
            f'<rect x="{legend_x}" y="{height - 10}" width="10" height="10" fill="{color}"/>'
        )
        parts.append(_text(legend_x + 14, height - 1, version, "legend"))
        legend_x += 24 + 7 * min(len(version), 24)
    parts.append("</svg>")
    return Markup("".join(parts))


def split_bar(
    parts: Sequence[tuple[str, int]], *, palette: Mapping[str, str], width: int = 260
) -> Markup:
    """A horizontal bar cut in proportion to ``(version, count)`` pairs."""
    height = 16
    total = sum(count for _, count in parts)
    pieces = [_svg_open(width, height, "traffic split")]
    if total <= 0:
        pieces.append(f'<rect width="{width}" height="{height}" class="empty"/>')
    else:
        left = 0.0
        for version, count in parts:
            share = count / total * width
            pieces.append(
                f'<rect x="{left:.2f}" width="{share:.2f}" height="{height}" '
                f'fill="{palette.get(version, PALETTE[0])}"><title>{escape(version)} '
                f"{count / total:.0%}</title></rect>"
            )
            left += share
    pieces.append("</svg>")
    return Markup("".join(pieces))


@dataclass(frozen=True, slots=True)
class IntervalRow:
    """One version's figure for one outcome: the estimate, its interval when known, the LKG's
    figure and the rule's limit."""

    label: str
    estimate: float | None
    lower: float | None
    upper: float | None
    lkg: float | None
    limit: float | None


def interval_chart(
    rows: Sequence[IntervalRow],
    *,
    title: str,
    palette: Mapping[str, str],
    width: int = 560,
) -> Markup:
    """Estimates with their confidence intervals (a point alone when there is none), against the
    LKG's figure (a solid line) and the rule's limit (a dashed line)."""
    row_h, pad_l, pad_r, pad_t = 26, 90, 16, 26
    height = pad_t + row_h * max(len(rows), 1) + 20
    figures = [
        v
        for row in rows
        for v in (row.estimate, row.lower, row.upper, row.lkg, row.limit)
        if v is not None and math.isfinite(v)
    ]
    parts = [_svg_open(width, height, title), _text(8, 16, title, "chart-title")]
    if not figures:
        parts.append(_text(width / 2, pad_t + 14, "no estimate yet", "muted"))
        return Markup("".join([*parts, "</svg>"]))
    low, high = min(figures), max(figures)
    margin = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
    low, high = low - margin, high + margin
    inner = width - pad_l - pad_r

    def x(v: float) -> float:
        return pad_l + (v - low) / (high - low) * inner

    bottom = pad_t + row_h * len(rows)
    reference = next((row.lkg for row in rows if row.lkg is not None), None)
    limit = next((row.limit for row in rows if row.limit is not None), None)
    if reference is not None:
        parts.append(_vline(x(reference), pad_t - 4, bottom, "reference", f"LKG {reference:.4g}"))
    if limit is not None:
        parts.append(_vline(x(limit), pad_t - 4, bottom, "limit", f"limit {limit:.4g}"))
    for i, row in enumerate(rows):
        mid = pad_t + row_h * i + row_h / 2
        color = palette.get(row.label, PALETTE[0])
        parts.append(_text(pad_l - 8, mid + 4, row.label, "legend", anchor="end"))
        if row.lower is not None and row.upper is not None:
            parts.append(
                f'<line x1="{x(row.lower):.1f}" x2="{x(row.upper):.1f}" y1="{mid}" y2="{mid}" '
                f'stroke="{color}" stroke-width="3"/>'
            )
        if row.estimate is not None:
            parts.append(f'<circle cx="{x(row.estimate):.1f}" cy="{mid}" r="5" fill="{color}"/>')
    parts.append(_text(pad_l, height - 4, f"{low:.4g}", "tick"))
    parts.append(_text(width - pad_r, height - 4, f"{high:.4g}", "tick", anchor="end"))
    parts.append("</svg>")
    return Markup("".join(parts))


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )


def _text(x: float, y: float, text: str, cls: str, *, anchor: str = "start") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{escape(text)}</text>'
    )


def _vline(x: float, top: float, bottom: float, cls: str, label: str) -> str:
    return f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" class="{cls}"/>' + _text(
        x + 3, top + 2, label, f"{cls}-label"
    )


def _path(points: Sequence[tuple[float, float | None]]) -> str:
    """An SVG path through ``points``, lifted over ``None`` values."""
    out: list[str] = []
    pen_down = False
    for px, py in points:
        if py is None or not math.isfinite(py):
            pen_down = False
            continue
        out.append(f"{'L' if pen_down else 'M'}{px:.1f},{py:.1f}")
        pen_down = True
    return " ".join(out)


def _thin(points: Sequence[tuple[float, float | None]]) -> Sequence[tuple[float, float | None]]:
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    return [points[int(i * step)] for i in range(MAX_POINTS - 1)] + [points[-1]]


def _nice(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten at or above ``value`` (1 for nothing)."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
