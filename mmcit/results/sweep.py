"""Sweeps: a grid of settings over seeds, summarised as mean ± std, with selection on validation.

``split_overrides`` separates the fixed ``key=value`` overrides from the grid axes (``key=a,b,c``);
``grid`` enumerates the combinations; ``summarise`` turns the results.json of every (combination,
seed) run into mean ± std per metric and combination; ``select`` picks the best combination on one
metric (higher is better, except for forgetting). Standard deviations are sample standard deviations
(ddof 1) over the seeds; with one seed they are 0.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from mmcit.errors import ConfigError
from mmcit.io import atomic_path

#: Metrics of results.json summarised by a sweep, and whether lower is better.
METRICS: dict[str, bool] = {"average_accuracy": False, "forgetting": True, "new_accuracy": False,
                            "bwt": False, "maa": False}


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``(fixed, axes)``: ``key=a,b`` with two or more comma-separated values is a grid axis; a value
    that is a YAML list or mapping (``[A, B]``, ``{x: 1}``) or has no comma is a fixed override."""
    fixed, axes = [], {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        values = [v.strip() for v in value.split(",")]
        if value.strip()[:1] in "[{" or len(values) < 2:
            fixed.append(item)
        elif any(not v for v in values):
            raise ConfigError(f"{key}: empty value in the grid {value!r}")
        elif key in axes:
            raise ConfigError(f"{key} is given twice")
        else:
            axes[key] = values
    return fixed, axes


def grid(axes: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the axes' values, in order (one empty combination without axes)."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def label(combination: dict[str, str]) -> str:
    """A folder-safe name of a combination, e.g. ``method.ema.scale=0.1`` -> ``scale-0.1``."""
    if not combination:
        return "default"
    parts = [f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in combination.items()]
    return "_".join("".join(c if c.isalnum() or c in "-." else "_" for c in p) for p in parts)


@dataclass
class Summary:
    """Mean ± std of each metric over the seeds of one combination."""

    combination: dict[str, str]
    seeds: list[int]
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)
    per_seed: dict[str, list[float | None]] = field(default_factory=dict)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; 0 for one value); (None, None) for no values."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(combination: dict[str, str], seeds: list[int], results: list[dict[str, Any]]) -> Summary:
    """The summary of one combination from the results dicts of its seeds (in ``seeds``' order)."""
    out = Summary(combination, list(seeds))
    for metric in METRICS:
        values = [(r.get("metrics") or {}).get(metric) for r in results]
        out.per_seed[metric] = values
        out.mean[metric], out.std[metric] = mean_std([v for v in values if v is not None])
    return out


def select(summaries: list[Summary], metric: str) -> Summary:
    """The combination with the best mean ``metric`` (ties: the first in grid order)."""
    if metric not in METRICS:
        raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    scored = [s for s in summaries if s.mean.get(metric) is not None]
    if not scored:
        raise ConfigError(f"no run of the sweep has a value for {metric}")
    sign = -1.0 if METRICS[metric] else 1.0
    return max(scored, key=lambda s: sign * s.mean[metric])  # max keeps the first of equal values


def fmt_mean_std(mean: float | None, std: float | None) -> str:
    """``12.3 ± 0.4`` (``n/a`` without a value)."""
    return "n/a" if mean is None else f"{mean:.1f} ± {std:.1f}"


def table(summaries: list[Summary], title: str) -> str:
    """A Markdown table: one row per combination, mean ± std of every metric."""
    head = f"### {title}\n\n| setting | seeds | " + " | ".join(METRICS) + " |\n|---|---|" + "---|" * len(METRICS)
    rows = [f"| {', '.join(f'{k}={v}' for k, v in s.combination.items()) or 'as configured'} | "
            f"{len(s.seeds)} | " + " | ".join(fmt_mean_std(s.mean[m], s.std[m]) for m in METRICS) + " |"
            for s in summaries]
    return "\n".join([head, *rows, ""])


def plot_tradeoff(summaries: list[Summary], path, title: str) -> None:
    """Forgetting against new accuracy, one point per combination (mean, with ± std bars): the
    plasticity-stability trade-off of a sweep. Written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for s in summaries:
        x, y = s.mean.get("new_accuracy"), s.mean.get("forgetting")
        if x is None or y is None:
            continue
        ax.errorbar(x, y, xerr=s.std["new_accuracy"], yerr=s.std["forgetting"], fmt="o", capsize=3)
        ax.annotate(", ".join(f"{v}" for v in s.combination.values()) or "as configured", (x, y),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("new accuracy (plasticity), %")
    ax.set_ylabel("forgetting, points")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
