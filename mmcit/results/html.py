"""Self-contained HTML reports: one file per run folder (``report.html``, beside report.md) and per
comparison, with every picture inlined as a base64 PNG so that the file can be mailed or archived
alone.

A run's report holds its metrics, the accuracy matrix (a coloured table), the accuracy of each task
along the stream, the routing of test samples, the EMA's alpha trace and a gallery of forgotten
samples (their images re-encoded as small thumbnails). The page follows the reader's light or dark
colour scheme (``prefers-color-scheme``); the pictures carry their own opaque background.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcit.io import write_text
from mmcit.results import plots, svg
from mmcit.results.metrics import METRIC_KEYS

if TYPE_CHECKING:
    import pandas as pd

    from mmcit.results.run import Run

__all__ = ["write_run_html", "write_comparison_html", "GALLERY_SIZE"]

GALLERY_SIZE = 12  # forgotten samples shown
THUMBNAIL = 192  # pixels, longest side
MAX_POINTS = 600  # steps drawn in the alpha chart; longer streams are averaged over runs of steps

STYLE = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1a1a1a; --muted: #666; --line: #ddd; --card: #f6f6f6; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #161616; --fg: #e8e8e8; --muted: #aaa; --line: #3a3a3a; --card: #222; } }
body { background: var(--bg); color: var(--fg); font: 15px/1.45 system-ui, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid var(--line); padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid var(--line); padding: .3em .6em; }
th { background: var(--card); text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); } img.plot { max-width: 100%; border-radius: 4px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
.gallery figure { background: var(--card); border: 1px solid var(--line); border-radius: 6px; margin: 0;
                  padding: 8px; } .gallery img { width: 100%; image-rendering: pixelated; border-radius: 3px; }
figcaption { font-size: .85em; } figcaption b { font-weight: 600; }
"""


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{_e(title)}</title>\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{anchor}">\n<h2>{_e(title)}</h2>\n{content}\n</section>'


def _shade(value: float, vmax: float) -> str:
    """A cell background whose strength grows with ``value`` (readable in both colour schemes)."""
    return f"background:rgba(0,114,178,{0.08 + 0.72 * max(0.0, min(1.0, value / vmax)):.2f})"


def _grid_table(frame: "pd.DataFrame", corner: str, vmax: float, digits: int) -> str:
    """A table of numbers with shaded cells (empty where NaN)."""
    head = f"<tr><th>{_e(corner)}</th>" + "".join(f"<th>{_e(c)}</th>" for c in frame.columns) + "</tr>"
    rows = []
    for label, values in frame.iterrows():
        cells = ["<td></td>" if v != v else f'<td class="num" style="{_shade(float(v), vmax)}">{v:.{digits}f}</td>'
                 for v in values]
        rows.append(f"<tr><th>{_e(label)}</th>" + "".join(cells) + "</tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def _curves(matrix: "pd.DataFrame") -> str:
    series = {task: [(float(j), None if v != v else float(v)) for j, v in enumerate(matrix[task])]
              for task in matrix.columns}
    chart = svg.Chart(series, x_label="after training", y_label="accuracy %", y_range=(0.0, 100.0),
                      x_ticks=[(float(j), str(s)) for j, s in enumerate(matrix.index)])
    return svg.line_chart(chart, "Accuracy of each task along the stream")


def _alpha(trace: "pd.DataFrame") -> str:
    wide = plots.alpha_wide(trace)
    bucket = max(1, len(wide) // MAX_POINTS)  # a long stream: the mean of each run of steps
    if bucket > 1:
        wide = wide.groupby((wide.index - 1) // bucket).mean()
        wide.index = wide.index * bucket + 1
    xs = [float(x) for x in wide.index]
    steps = trace.groupby(["stage_index", "stage"])["step"].max().sort_index()
    starts, total = [], 0
    for (_, stage), n in steps.items():
        starts.append((total + 0.5, str(stage)))
        total += int(n)
    chart = svg.Chart({}, x_label="optimizer step (stages in order)", y_label="alpha (log)", log=True,
                      separators=starts)
    if wide.shape[1] <= plots.MAX_LINES:
        chart.series = {str(g): [(x, _pos(v)) for x, v in zip(xs, wide[g])] for g in wide.columns}
    else:
        q = wide.quantile([0.1, 0.5, 0.9], axis=1).T
        chart.band = [(x, lo, hi) for x, lo, hi in zip(xs, q[0.1], q[0.9]) if lo == lo and lo > 0 and hi > 0]
        chart.band_label = f"10-90% of {wide.shape[1]} groups"
        chart.series = {"median": [(x, _pos(v)) for x, v in zip(xs, q[0.5])]}
    return svg.line_chart(chart, "EMA balance weight per step")


def _pos(value: float) -> float | None:
    return float(value) if value == value and value > 0 else None


def _routing(routing: "pd.DataFrame") -> str:
    vmax = float(routing.to_numpy().max()) or 1.0
    parts = []
    for stage in dict.fromkeys(routing.index.get_level_values(0)):
        block = routing.xs(stage, level=0)
        parts.append(f"<h3>after {_e(stage)}</h3>" + _grid_table(block, f"task \\ {routing.columns.name}", vmax, 0))
    return "".join(parts)


def _thumbnail(path: str | None) -> str | None:
    """A data URL of the image shrunk to ``THUMBNAIL`` pixels, or None when it cannot be read."""
    if not path or not Path(path).is_file():
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            im.save(buffer, format="PNG")
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _gallery(flips: "pd.DataFrame") -> str:
    if flips.empty:
        return '<p class="muted">No sample that was right after its own task is wrong at the end.</p>'
    items = []
    for _, r in flips.head(GALLERY_SIZE).iterrows():
        src = _thumbnail(r["image"])
        picture = f'<img alt="{_e(r["question_id"])}" src="{src}">' if src else '<p class="muted">image not found</p>'
        items.append(f"<figure>{picture}<figcaption><b>{_e(r['task'])}</b> {_e(r['prompt'])}<br>"
                     f"gold: <b>{_e(r['gold'])}</b><br>after {_e(r['stage_before'])}: {_e(r['before'])}<br>"
                     f"at the end: {_e(r['after'])}</figcaption></figure>")
    more = f'<p class="muted">{len(flips)} forgotten samples; the first {GALLERY_SIZE} are shown.</p>' \
        if len(flips) > GALLERY_SIZE else ""
    return more + '<div class="gallery">' + "".join(items) + "</div>"


def _metrics_table(metrics: dict) -> str:
    rows = "".join(f"<tr><th>{_e(k.replace('_', ' '))}</th><td class=\"num\">{_fmt(metrics.get(k))}</td></tr>"
                   for k in METRIC_KEYS)
    return f'<table class="metrics">{rows}</table>'


def _kv_table(values: dict) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in values.items()
                   if not isinstance(v, (dict, list)))
    return f"<table>{rows}</table>" if rows else '<p class="muted">not recorded</p>'


def write_run_html(run: "Run", path: Path) -> Path:
    """Write ``run``'s report to ``path`` (see the module docstring); returns the path."""
    matrix = run.matrix
    flips = run.flips()
    forgotten = flips[flips["kind"] == "forgotten"]
    trace = run.alpha_trace()
    routing = run.routing()
    state = "complete" if run.complete else f"interrupted after {len(run.stages)} of {len(run.tasks)} tasks"
    body = [f"<h1>{_e(run.method)} &mdash; {_e(run.name)}</h1>",
            f'<p class="muted">{_e(state)}; tasks: {_e(", ".join(run.tasks))}; seed {_e(run.seed)}. '
            f"Accuracies in %.</p>",
            _section("metrics", "Metrics", _metrics_table(run.metrics)),
            _section("matrix", "Accuracy matrix", _grid_table(matrix, "after \\ on", 100.0, 1)
                     + '<p class="muted">Row: after training that stage; column: the task evaluated.</p>'),
            _section("curves", "Accuracy along the stream", _curves(matrix)),
            _section("routing", "Routing of test samples",
                     _routing(routing) if len(routing) else '<p class="muted">not recorded</p>'),
            _section("alpha", "EMA balance weight (alpha)",
                     _alpha(trace) if trace["alpha"].notna().any() else '<p class="muted">no EMA blends in this run</p>'),
            _section("forgotten", "Forgotten samples", _gallery(forgotten)),
            _section("costs", "Costs", _kv_table({**run.costs,
                                                  "total_seconds": (run.results.get("timing") or {}).get("total_seconds")})),
            _section("environment", "Environment", _kv_table(run.results.get("environment") or {}))]
    write_text(path, _page(f"{run.method} - {run.name}", body))
    return path


def write_comparison_html(table: "pd.DataFrame", formatted: "pd.DataFrame", png: bytes, runs: list["Run"],
                          path: Path) -> Path:
    """A comparison's report: the mean ± std table, its plot (PNG bytes, inlined) and the runs it
    summarises."""
    head = "<tr><th>method</th>" + "".join(f"<th>{_e(c)}</th>" for c in formatted.columns) + "</tr>"
    rows = "".join(f"<tr><th>{_e(m)}</th>" + "".join(f'<td class="num">{_e(v)}</td>' for v in r) + "</tr>"
                   for m, r in formatted.iterrows())
    listing = "".join(
        f"<tr><td>{_e(r.method)}</td><td>{_e(r.seed)}</td><td>{_e(r.path)}</td><td class=\"num\">"
        f"{_fmt((r.metrics or {}).get('average_accuracy'))}</td></tr>" for r in runs)
    body = [f"<h1>mmcit comparison of {len(table)} method(s) over {len(runs)} run(s)</h1>",
            '<p class="muted">Mean ± sample standard deviation over the runs of each method (seeds).</p>',
            _section("table", "Methods", f"<table>{head}{rows}</table>"),
            _section("plot", "Plot", _img(png, "comparison")),
            _section("runs", "Runs", "<table><tr><th>method</th><th>seed</th><th>folder</th><th>average "
                                     f"accuracy</th></tr>{listing}</table>")]
    write_text(path, _page("mmcit comparison", body))
    return path
