"""The pictures of a run and of a comparison, as matplotlib Figures.

Every function takes the DataFrames of :class:`mmcit.results.run.Run` (or of a comparison) and
returns a ``matplotlib.figure.Figure`` built without pyplot, so nothing is registered globally: a
notebook shows the returned figure once (as a PNG), and a script can ``fig.savefig(...)`` it. ``theme`` is
``light`` (an opaque white background, dark text) or ``dark`` (an opaque dark background, light
text); either stays readable whatever the page behind it, and the colours (Okabe-Ito lines,
viridis maps) read on both.
"""
from __future__ import annotations

import io
import math
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pandas as pd

from mmcit.errors import ConfigError
from mmcit.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["THEMES", "matrix_heatmap", "task_curves", "alpha_trace", "alpha_wide", "routing_heatmaps", "flip_grid",
           "comparison_bars", "png_bytes", "save_png"]

# Okabe-Ito without black and yellow (each unreadable on one of the two backgrounds).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#999999", "#882255"]
_INK = {"light": ("#ffffff", "#1a1a1a", "#555555", "#dddddd"), "dark": ("#1e1e1e", "#e8e8e8", "#aaaaaa", "#3a3a3a")}
THEMES = tuple(_INK)
MAX_LINES = 8  # more groups than this are summarised as a median and a band


@contextmanager
def _theme(theme: str) -> Iterator[None]:
    if theme not in _INK:
        raise ConfigError(f"theme must be one of {', '.join(THEMES)}, got {theme!r}")
    import matplotlib
    from cycler import cycler

    face, ink, edge, grid = _INK[theme]
    rc = {"figure.facecolor": face, "axes.facecolor": face, "savefig.facecolor": face, "text.color": ink,
          "axes.labelcolor": ink, "axes.titlecolor": ink, "xtick.color": ink, "ytick.color": ink,
          "axes.edgecolor": edge, "grid.color": grid, "legend.facecolor": face, "legend.edgecolor": edge,
          "legend.labelcolor": ink, "axes.prop_cycle": cycler(color=PALETTE), "font.size": 9}
    with matplotlib.rc_context(rc):
        yield


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure

    class ShownFigure(Figure):
        """A Figure that Jupyter shows as a PNG (pyplot's inline backend, which would otherwise do
        it, only knows the figures pyplot made)."""

        def _repr_png_(self) -> bytes:
            return png_bytes(self)

    return ShownFigure(figsize=(width, height), layout="constrained")


def _annotated_heatmap(fig: "Figure", ax, data, xlabels: list[str], ylabels: list[str], vmax: float, fmt: str,
                       label: str) -> None:
    import numpy as np

    im = ax.imshow(data, vmin=0, vmax=vmax, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=45, ha="right")
    ax.set_yticks(range(len(ylabels)), ylabels)
    for j in range(data.shape[0]):
        for i in range(data.shape[1]):
            if not np.isnan(data[j, i]):
                ax.text(i, j, format(data[j, i], fmt), ha="center", va="center", fontsize=8,
                        color="white" if data[j, i] < 0.6 * vmax else "black")
    fig.colorbar(im, ax=ax, label=label)


def matrix_heatmap(matrix: pd.DataFrame, title: str = "accuracy (%)", theme: str = "light") -> "Figure":
    """The accuracy matrix: rows = after training a stage, columns = evaluated task, cells in %."""
    with _theme(theme):
        fig = _figure(2.0 + 0.8 * max(1, matrix.shape[1]), 1.6 + 0.5 * max(1, matrix.shape[0]))
        ax = fig.add_subplot()
        _annotated_heatmap(fig, ax, matrix.to_numpy(dtype=float), list(matrix.columns), list(matrix.index), 100.0,
                           ".0f", "accuracy %")
        ax.set_xlabel("evaluated on")
        ax.set_ylabel("after training")
        ax.set_title(title)
    return fig


def task_curves(matrix: pd.DataFrame, title: str = "accuracy along the stream", theme: str = "light") -> "Figure":
    """One line per task: its accuracy after each stage, from the first stage that evaluated it."""
    with _theme(theme):
        fig = _figure(6.5, 3.8)
        ax = fig.add_subplot()
        x = list(range(len(matrix.index)))
        for task in matrix.columns:
            values = matrix[task].to_numpy(dtype=float)
            ax.plot(x, values, marker="o", label=task)
        ax.set_xticks(x, list(matrix.index), rotation=30, ha="right")
        ax.set_ylim(-2, 102)
        ax.set_xlabel("after training")
        ax.set_ylabel("accuracy %")
        ax.set_title(title)
        ax.grid(alpha=0.6)
        ax.legend(fontsize=7, ncol=2 if len(matrix.columns) > 4 else 1, loc="best")
    return fig


def alpha_trace(trace: pd.DataFrame, title: str = "EMA balance weight", theme: str = "light",
                groups: list[str] | None = None) -> "Figure":
    """alpha per optimizer step over the stream, stages side by side (log scale): one line per
    group when there are at most 8 (or the ``groups`` named), else the median over groups and the
    band between their 10% and 90% quantiles."""
    with _theme(theme):
        fig = _figure(7.5, 3.6)
        ax = fig.add_subplot()
        ax.set_title(title)
        ax.set_xlabel("optimizer step (stages in order)")
        ax.set_ylabel("alpha")
        data = trace.dropna(subset=["alpha"])
        if data.empty:
            ax.text(0.5, 0.5, "no EMA blends recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            return fig
        wide = alpha_wide(trace)
        shown = groups if groups is not None else (list(wide.columns) if wide.shape[1] <= MAX_LINES else None)
        if shown is not None:
            for group in shown:
                ax.plot(wide.index, wide[group], lw=1, label=group)
            ax.legend(fontsize=7, ncol=2, loc="best")
        else:
            q = wide.quantile([0.1, 0.5, 0.9], axis=1).T
            ax.fill_between(wide.index, q[0.1], q[0.9], alpha=0.3, color=PALETTE[0], lw=0,
                            label=f"10-90% of {wide.shape[1]} groups")
            ax.plot(wide.index, q[0.5], lw=1.2, color=PALETTE[0], label="median")
            ax.legend(fontsize=7, loc="best")
        from matplotlib.ticker import MaxNLocator

        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _stage_separators(ax, trace)
        ax.grid(alpha=0.6)
    return fig


def alpha_wide(trace: pd.DataFrame) -> pd.DataFrame:
    """(global step, group) -> alpha, steps numbered across the stages in order (from 1)."""
    steps = trace.groupby("stage_index")["step"].max().sort_index()
    offset = (steps.cumsum() - steps).to_dict()
    x = trace["step"] + trace["stage_index"].map(offset)
    wide = trace.assign(x=x).pivot_table(index="x", columns="group", values="alpha", sort=False, dropna=False)
    return wide.sort_index()


def _stage_separators(ax, trace: pd.DataFrame) -> None:
    steps = trace.groupby(["stage_index", "stage"])["step"].max().sort_index()
    start = 0
    for (_, stage), n in steps.items():
        if start:
            ax.axvline(start + 0.5, color="#888888", lw=0.8, ls="--")
        ax.text(start + n / 2, 0.98, stage, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=7)
        start += n


def routing_heatmaps(routing: pd.DataFrame, title: str = "routing of test samples", theme: str = "light",
                     stage: str | None = None) -> "Figure":
    """One heatmap per evaluated stage (or only ``stage``): test samples of each task (rows) sent
    to each group or adapter (columns)."""
    stages = list(dict.fromkeys(routing.index.get_level_values(0))) if len(routing) else []
    if stage is not None:
        stages = [s for s in stages if s == stage]
    with _theme(theme):
        if not stages:
            fig = _figure(5, 2.5)
            ax = fig.add_subplot()
            ax.text(0.5, 0.5, "no routing recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            ax.set_title(title)
            return fig
        cols = min(len(stages), 4)
        rows = math.ceil(len(stages) / cols)
        n_groups, n_tasks = routing.shape[1], routing.index.get_level_values(1).nunique()
        fig = _figure(cols * (2.2 + 0.55 * n_groups), rows * (1.4 + 0.35 * n_tasks))
        vmax = float(routing.to_numpy().max()) or 1.0
        for k, name in enumerate(stages):
            ax = fig.add_subplot(rows, cols, k + 1)
            block = routing.xs(name, level=0)
            _annotated_heatmap(fig, ax, block.to_numpy(dtype=float), [str(c) for c in block.columns],
                               list(block.index), vmax, ".0f", "samples")
            ax.set_title(f"after {name}", fontsize=9)
            ax.set_xlabel(routing.columns.name or "group")
        fig.suptitle(title)
    return fig


def flip_grid(flips: pd.DataFrame, title: str = "flipped samples", theme: str = "light") -> "Figure":
    """A grid of flipped samples (rows of :meth:`Run.flips`): image, task, question, gold answer,
    answer before -> after."""
    with _theme(theme):
        if flips.empty:
            fig = _figure(5, 2)
            ax = fig.add_subplot()
            ax.text(0.5, 0.5, "no such samples", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            ax.set_title(title)
            return fig
        cols = min(len(flips), 4)
        rows = math.ceil(len(flips) / cols)
        fig = _figure(3.1 * cols, 3.9 * rows)
        for k, (_, r) in enumerate(flips.iterrows()):
            ax = fig.add_subplot(rows, cols, k + 1)
            image = load_image(r["image"])
            if image is not None:
                ax.imshow(image)
            else:
                ax.text(0.5, 0.5, "image not found", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{r['task']}: {_short(r['prompt'], 70)}", fontsize=7, wrap=True)
            ax.set_xlabel(f"gold: {_short(r['gold'], 30)}\nbefore: {_short(r['before'], 30)}\n"
                          f"after: {_short(r['after'], 30)}", fontsize=7, loc="left")
        fig.suptitle(title)
    return fig


def load_image(path: str | None):
    """The image at ``path`` as an RGB array, or None when it cannot be read."""
    if not path or not Path(path).is_file():
        return None
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError:
        return None


def _short(text: object, width: int) -> str:
    text = " ".join(str(text if text is not None else "").split())
    text = textwrap.shorten(text, width=width, placeholder="...") if len(text) > width else text
    return "\n".join(textwrap.wrap(text, 36)) or '""'


def comparison_bars(table: pd.DataFrame, quantities: list[str], title: str = "methods compared",
                    theme: str = "light") -> "Figure":
    """One panel per quantity: the mean per method, with the standard deviation over runs as an
    error bar. ``table`` has (quantity, mean|std) columns and one row per method."""
    present = [q for q in quantities if (q, "mean") in table.columns and table[(q, "mean")].notna().any()]
    with _theme(theme):
        fig = _figure(2.6 * max(1, len(present)), 3.4)
        for k, q in enumerate(present):
            ax = fig.add_subplot(1, len(present), k + 1)
            means, stds = table[(q, "mean")].astype(float), table[(q, "std")].astype(float)
            ax.bar(range(len(table)), means.fillna(0), yerr=stds.fillna(0), capsize=3,
                   color=[PALETTE[i % len(PALETTE)] for i in range(len(table))])
            ax.set_xticks(range(len(table)), [str(m) for m in table.index], rotation=30, ha="right")
            ax.set_title(q.replace("_", " "), fontsize=9)
            ax.grid(axis="y", alpha=0.6)
        fig.suptitle(title)
    return fig


def png_bytes(fig: "Figure", dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for inlining in HTML)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_png(fig: "Figure", path: str | Path, dpi: int = 110) -> None:
    """Write the figure as a PNG file, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(png_bytes(fig, dpi))
