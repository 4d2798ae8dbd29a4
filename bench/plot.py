"""Line charts as SVG, for benchmark figures that people would rather read as a curve than a table.

A pure function of its data (no plotting library, no fonts to install): panels side by side, each
with its x and y axes from zero, a legend, and optional horizontal limits (a memory limit, drawn
dashed) and dotted reference lines (a linear extrapolation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
WIDTH, HEIGHT = 440, 320  # one panel
LEFT, RIGHT, TOP, BOTTOM = 62, 16, 34, 46


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    dotted: bool = False


@dataclass(frozen=True)
class Limit:
    label: str
    y: float


@dataclass(frozen=True)
class Panel:
    title: str
    x_label: str
    y_label: str
    series: Sequence[Series]
    limits: Sequence[Limit] = field(default_factory=tuple)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least ``value`` (an axis's end)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10 * power  # unreachable: 10 * power > value


def _ticks(end: float) -> list[float]:
    return [end * i / 5 for i in range(6)]


def _label(value: float) -> str:
    return f"{value:g}" if value < 1e4 else f"{value:,.0f}"


def svg(panels: Sequence[Panel], title: str) -> str:
    """The panels side by side under ``title``, as an SVG document."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH * len(panels)}" height="{HEIGHT + 24}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="8" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    labels = list(dict.fromkeys(s.label for p in panels for s in p.series))
    color = {label: COLORS[i % len(COLORS)] for i, label in enumerate(labels)}
    for i, panel in enumerate(panels):
        out.append(f'<g transform="translate({i * WIDTH},24)">')
        out.extend(_panel(panel, color))
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _panel(panel: Panel, color: dict[str, str]) -> list[str]:
    xs = [x for s in panel.series for x, _ in s.points]
    ys = [y for s in panel.series for _, y in s.points] + [limit.y for limit in panel.limits]
    x_end, y_end = nice_ceiling(max(xs, default=1)), nice_ceiling(max(ys, default=1) * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(x: float, y: float) -> tuple[float, float]:
        return LEFT + plot_w * x / x_end, TOP + plot_h * (1 - y / y_end)

    out = [f'<text x="{LEFT}" y="20" font-size="12" font-weight="bold">{escape(panel.title)}</text>']
    for tick in _ticks(x_end):
        x = LEFT + plot_w * tick / x_end
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">{_label(tick)}</text>')
    for tick in _ticks(y_end):
        y = TOP + plot_h * (1 - tick / y_end)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#555"/>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(panel.x_label)}</text>')
    out.append(
        f'<text transform="translate(14,{TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(panel.y_label)}</text>"
    )
    for limit in panel.limits:
        y = TOP + plot_h * (1 - limit.y / y_end)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#000" stroke-dasharray="6,4"/>'
        )
        out.append(f'<text x="{LEFT + plot_w - 4}" y="{y - 4:.1f}" text-anchor="end">{escape(limit.label)}</text>')
    for series in panel.series:
        if not series.points:
            continue
        points = [xy(x, y) for x, y in sorted(series.points)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        out.append(f'<polyline class="series" points="{path}" fill="none" {_stroke(series, color)}/>')
        if not series.dotted:
            out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color[series.label]}"/>' for x, y in points)
    for row, series in enumerate(panel.series):  # the legend, top left
        y = TOP + 12 + 14 * row
        out.append(f'<line x1="{LEFT + 8}" y1="{y - 4}" x2="{LEFT + 26}" y2="{y - 4}" {_stroke(series, color)}/>')
        out.append(f'<text x="{LEFT + 30}" y="{y}">{escape(series.label)}</text>')
    return out


def _stroke(series: Series, color: dict[str, str]) -> str:
    dash = ' stroke-dasharray="2,3"' if series.dotted else ""
    return f'stroke="{color[series.label]}" stroke-width="2"{dash}'
