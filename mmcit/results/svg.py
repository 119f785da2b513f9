"""Small inline SVG line charts for the HTML reports.

Written by hand rather than rendered by matplotlib because a report is written at the end of every
run: an SVG chart costs milliseconds where a rendered PNG costs about a second. Text and axes use
``currentColor``, so a chart follows the page's light or dark colours; lines use the Okabe-Ito
colours of :mod:`mmcit.results.plots`.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

__all__ = ["Chart", "line_chart"]

PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#999999", "#882255"]
WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 150, 26, 58


@dataclass
class Chart:
    """What :func:`line_chart` draws: named series of (x, y) points (y None: a gap), an optional
    band (x, low, high), x tick labels at positions, vertical separators with labels, and the
    y range (log scale when ``log``)."""

    series: dict[str, list[tuple[float, float | None]]]
    x_label: str = ""
    y_label: str = ""
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    separators: list[tuple[float, str]] = field(default_factory=list)
    band: list[tuple[float, float, float]] = field(default_factory=list)
    band_label: str = ""
    y_range: tuple[float, float] | None = None
    log: bool = False


def _e(text: object) -> str:
    return html.escape(str(text))


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0 ** k for k in range(math.floor(lo), math.ceil(hi) + 1)]
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-12)))
    step *= 2 if (hi - lo) / step > 5 else 1
    start = math.ceil(lo / step) * step
    return [start + k * step for k in range(int((hi - start) / step) + 1)]


class _Scale:
    """Data -> pixel coordinates of a chart's plot area."""

    def __init__(self, chart: Chart, xs: list[float], ys: list[float]) -> None:
        self.log = chart.log
        self.x0, x1 = min(xs), max(xs)
        self.x1 = x1 if x1 > self.x0 else self.x0 + 1
        y0, y1 = chart.y_range or (min(ys), max(ys))
        y0, y1 = self.f(y0), self.f(y1)
        if self.log:
            y0, y1 = math.floor(y0), math.ceil(y1)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)
        self.w, self.h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def f(self, y: float) -> float:
        return math.log10(y) if self.log else y

    def x(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * self.w

    def y(self, y: float) -> float:
        return TOP + self.h - (self.f(y) - self.y0) / (self.y1 - self.y0) * self.h


def _axes(chart: Chart, s: _Scale) -> list[str]:
    """Grid lines with y labels, x tick labels, stage separators, axis titles."""
    out = []
    for t in _ticks(s.y0, s.y1, s.log):
        y = s.y(t)
        if TOP - 0.5 <= y <= TOP + s.h + 0.5:
            out.append(f'<line x1="{LEFT}" x2="{LEFT + s.w}" y1="{y:.1f}" y2="{y:.1f}" stroke="currentColor" '
                       f'stroke-opacity="0.15"/><text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                       f'fill="currentColor">{t:g}</text>')
    for x, label in chart.x_ticks:
        out.append(f'<text transform="translate({s.x(x):.1f},{TOP + s.h + 12}) rotate(30)" fill="currentColor">'
                   f'{_e(label)}</text>')
    for x, label in chart.separators:
        out.append(f'<line x1="{s.x(x):.1f}" x2="{s.x(x):.1f}" y1="{TOP}" y2="{TOP + s.h}" stroke="currentColor" '
                   f'stroke-opacity="0.4" stroke-dasharray="4 3"/><text x="{s.x(x) + 3:.1f}" y="{TOP + 10}" '
                   f'fill="currentColor" font-size="10">{_e(label)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{s.w}" height="{s.h}" fill="none" stroke="currentColor" '
               f'stroke-opacity="0.5"/><text x="{LEFT + s.w / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle" '
               f'fill="currentColor">{_e(chart.x_label)}</text><text transform="translate(14,{TOP + s.h / 2:.0f}) '
               f'rotate(-90)" text-anchor="middle" fill="currentColor">{_e(chart.y_label)}</text>')
    return out


def _legend(entries: list[tuple[str, str, bool]], s: _Scale) -> list[str]:
    out = []
    for k, (name, color, is_band) in enumerate(entries[:16]):
        y = TOP + 8 + 15 * k
        mark = (f'<rect x="{LEFT + s.w + 10}" y="{y - 5}" width="14" height="8" fill="{color}" fill-opacity="0.35"/>'
                if is_band else f'<line x1="{LEFT + s.w + 10}" x2="{LEFT + s.w + 24}" y1="{y}" y2="{y}" '
                f'stroke="{color}" stroke-width="2"/>')
        out.append(mark + f'<text x="{LEFT + s.w + 28}" y="{y + 4}" fill="currentColor">{_e(name)}</text>')
    return out


def line_chart(chart: Chart, title: str) -> str:
    """An ``<svg>`` element drawing ``chart`` (see :class:`Chart`)."""
    xs = [x for pts in chart.series.values() for x, _ in pts] + [b[0] for b in chart.band] + [t for t, _ in chart.x_ticks]
    ys = [y for pts in chart.series.values() for _, y in pts if y is not None and math.isfinite(y)] + \
         [v for b in chart.band for v in b[1:]]
    if chart.log:
        ys = [y for y in ys if y > 0]
    if not xs or not ys:
        return f'<p class="muted">{_e(title)}: nothing to draw</p>'
    s = _Scale(chart, xs, ys)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{_e(title)}" style="max-width:100%;font:11px system-ui,sans-serif">',
           f'<text x="{LEFT}" y="16" fill="currentColor" font-weight="600">{_e(title)}</text>', *_axes(chart, s)]
    legend = []
    if chart.band:
        upper = " ".join(f"{s.x(x):.1f},{s.y(hi):.1f}" for x, _, hi in chart.band)
        lower = " ".join(f"{s.x(x):.1f},{s.y(lo):.1f}" for x, lo, _ in reversed(chart.band))
        out.append(f'<polygon points="{upper} {lower}" fill="{PALETTE[0]}" fill-opacity="0.25"/>')
        legend.append((chart.band_label, PALETTE[0], True))
    for k, (name, pts) in enumerate(chart.series.items()):
        color = PALETTE[k % len(PALETTE)]
        for run in _runs(pts, chart.log):
            path = " ".join(f"{s.x(x):.1f},{s.y(y):.1f}" for x, y in run)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>')
            if len(run) == 1 or len(pts) <= 30:
                out += [f'<circle cx="{s.x(x):.1f}" cy="{s.y(y):.1f}" r="2.5" fill="{color}"/>' for x, y in run]
        legend.append((name, color, False))
    return "".join([*out, *_legend(legend, s), "</svg>"])


def _runs(points: list[tuple[float, float | None]], log: bool) -> list[list[tuple[float, float]]]:
    """Consecutive points without gaps (None, non-finite y, or y <= 0 on a log scale)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or not math.isfinite(y) or (log and y <= 0):
            runs.append([])
        else:
            runs[-1].append((x, y))
    return [r for r in runs if r]
