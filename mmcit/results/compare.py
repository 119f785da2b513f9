"""Comparing methods over seeds: mean ± sample standard deviation per method of the continual
metrics and of what each run cost.

``comparison(runs)`` groups finished runs by method (or by run name) and returns a
:class:`Comparison`, a DataFrame with one row per method and ``(quantity, mean|std)`` columns:

* the metrics of results.json: average_accuracy, forgetting, new_accuracy, maa, bwt (in % / points);
* the costs, read from results.json's ``costs`` when the run recorded them (trainable_parameters,
  stored_parameters, peak_memory_bytes) and NaN otherwise ("n/a" in the tables);
* wall_seconds: ``costs.wall_seconds`` when recorded, else ``timing.total_seconds`` (always there).

Standard deviations are sample ones (ddof 1) over the runs of a method, 0 for a single run, as in
``mmcit sweep``. ``Comparison.write(folder)`` writes report.md, comparison.json, comparison.png and
report.html.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from mmcit.io import atomic_path, write_json, write_text
from mmcit.results import html, plots
from mmcit.results.metrics import METRIC_KEYS
from mmcit.results.run import Run
from mmcit.results.sweep import mean_std

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["COST_KEYS", "QUANTITIES", "Comparison", "comparison", "find_runs", "run_figures"]

COST_KEYS = ("trainable_parameters", "stored_parameters", "peak_memory_bytes", "wall_seconds")
QUANTITIES = (*METRIC_KEYS, *COST_KEYS)
PLOTTED = ("average_accuracy", "forgetting", "new_accuracy", "wall_seconds")
#: Column titles of the formatted table (peak memory is shown in MiB there).
LABELS = {"average_accuracy": "average accuracy", "forgetting": "forgetting", "new_accuracy": "new accuracy",
          "bwt": "BWT", "maa": "MAA", "trainable_parameters": "trainable params", "stored_parameters": "stored params",
          "peak_memory_bytes": "peak memory MiB", "wall_seconds": "wall time s"}


def find_runs(paths: list[str | Path | Run]) -> list[Run]:
    """Runs from run objects, run folders, or folders holding run folders (searched recursively,
    not inside a run folder), in the given order, each once."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for item in paths:
        if isinstance(item, Run):
            found = [item]
        else:
            root = Path(item)
            if not root.exists():
                raise FileNotFoundError(f"{root}: no such folder")
            found = [Run(p) for p in _run_folders(root)]
            if not found:
                raise FileNotFoundError(f"{root}: no run folder (a folder with results.json) in it")
        for run in found:
            key = run.path.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(run)
    return runs


def _run_folders(root: Path) -> list[Path]:
    if (root / "results.json").is_file():
        return [root]
    return [p for child in sorted(root.iterdir()) if child.is_dir() for p in _run_folders(child)]


def run_figures(run: Run) -> dict[str, float | None]:
    """The quantities of one run (None where it did not record them)."""
    out: dict[str, float | None] = {k: run.metrics.get(k) for k in METRIC_KEYS}
    costs = run.costs
    for key in ("trainable_parameters", "stored_parameters", "peak_memory_bytes"):
        value = costs.get(key)
        if isinstance(value, dict):  # a breakdown with its total
            value = value.get("total")
        out[key] = float(value) if isinstance(value, (int, float)) else None
    wall = costs.get("wall_seconds")
    out["wall_seconds"] = float(wall) if isinstance(wall, (int, float)) else \
        (run.results.get("timing") or {}).get("total_seconds")
    return out


class Comparison(pd.DataFrame):
    """Mean ± std per method (rows) of every quantity: ``(quantity, "mean"|"std")`` columns and
    ``("runs", "n")``. ``runs`` holds the :class:`Run` objects it was computed from."""

    _metadata = ["runs"]

    @property
    def _constructor(self) -> Callable[..., "Comparison"]:
        return Comparison

    def formatted(self) -> pd.DataFrame:
        """The table as text: ``mean ± std`` per quantity under a readable title (``n/a`` where no
        run recorded it)."""
        out = pd.DataFrame(index=self.index)
        out["runs"] = self[("runs", "n")].astype(int).astype(str)
        for q in QUANTITIES:
            out[LABELS[q]] = [_mean_std_text(q, m, s) for m, s in zip(self[(q, "mean")], self[(q, "std")])]
        return out

    def markdown(self) -> str:
        """The formatted table in Markdown."""
        text = self.formatted()
        head = "| method | " + " | ".join(text.columns) + " |\n|---|" + "---|" * len(text.columns)
        rows = [f"| {m} | " + " | ".join(r) + " |" for m, r in text.iterrows()]
        return "\n".join([head, *rows]) + "\n"

    def plot(self, quantities: list[str] | None = None, theme: str = "light") -> "Figure":  # type: ignore[override]
        """Bars of the mean per method with std error bars, one panel per quantity (default:
        average accuracy, forgetting, new accuracy, wall time)."""
        return plots.comparison_bars(pd.DataFrame(self), list(quantities or PLOTTED),
                                     f"{len(self)} method(s), mean ± std over runs", theme)

    def summary(self) -> dict[str, Any]:
        """Per method: runs, seeds, folders and each quantity's mean, std and per-run values."""
        out: dict[str, Any] = {"quantities": list(QUANTITIES), "std": "sample (ddof 1); 0 for one run", "methods": {}}
        for method in self.index:
            runs = [r for r in self.runs if _label(r, self.index.name) == method]
            figures = [run_figures(r) for r in runs]
            out["methods"][str(method)] = {
                "runs": len(runs), "seeds": [r.seed for r in runs], "folders": [str(r.path) for r in runs],
                **{q: {"mean": _none(self.loc[method, (q, "mean")]), "std": _none(self.loc[method, (q, "std")]),
                       "values": [f[q] for f in figures]} for q in QUANTITIES}}
        return out

    def write(self, folder: str | Path, markdown: bool = True) -> Path:
        """Write report.md (unless ``markdown`` is False), comparison.json, comparison.png and
        report.html into ``folder``; returns the HTML report's path."""
        folder = Path(folder)
        png = plots.png_bytes(self.plot(), dpi=110)
        with atomic_path(folder / "comparison.png") as tmp:
            tmp.write_bytes(png)
        write_json(folder / "comparison.json", self.summary())
        if markdown:
            listing = [f"- {r.method}, seed {r.seed}: `{r.path}`" for r in self.runs]
            write_text(folder / "report.md", "\n".join([
                "# mmcit comparison\n", "Mean ± sample standard deviation over the runs (seeds) of each method. "
                "Accuracies in %, forgetting and BWT in points; n/a: not recorded by the runs.\n",
                self.markdown(), "![comparison](comparison.png)\n", "## Runs\n", *listing, ""]))
        return html.write_comparison_html(pd.DataFrame(self), self.formatted(), png, self.runs,
                                          folder / "report.html")


def _label(run: Run, by: str | None) -> str:
    return run.name if by == "name" else run.method


def _none(value: Any) -> float | None:
    return None if value is None or value != value else float(value)


def _mean_std_text(quantity: str, mean: float, std: float) -> str:
    if mean != mean:
        return "n/a"
    if quantity == "peak_memory_bytes":
        return f"{mean / 2**20:.1f} ± {std / 2**20:.1f}"
    if quantity in ("trainable_parameters", "stored_parameters"):
        return f"{mean:,.0f} ± {std:,.0f}"
    return f"{mean:.1f} ± {std:.1f}"


def comparison(runs: list[str | Path | Run], by: str = "method") -> Comparison:
    """The :class:`Comparison` of ``runs`` (runs or folders, see :func:`find_runs`), one row per
    method (``by="method"``) or per run name (``by="name"``), in first-seen order."""
    if by not in ("method", "name"):
        raise ValueError(f"by must be 'method' or 'name', got {by!r}")
    found = find_runs(runs)
    if not found:
        raise ValueError("nothing to compare: no runs given")
    groups: dict[str, list[dict]] = {}
    for run in found:
        groups.setdefault(_label(run, by), []).append(run_figures(run))
    columns = pd.MultiIndex.from_tuples([("runs", "n"), *((q, s) for q in QUANTITIES for s in ("mean", "std"))])
    rows = []
    for figures in groups.values():
        row: list[float] = [float(len(figures))]
        for q in QUANTITIES:
            mean, std = mean_std([f[q] for f in figures if f[q] is not None])
            row += [float("nan") if mean is None else mean, float("nan") if std is None else std]
        rows.append(row)
    table = Comparison(rows, index=pd.Index(list(groups), name=by), columns=columns)
    table.runs = found
    return table
