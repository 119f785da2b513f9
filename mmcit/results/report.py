"""Results of a run: results.json, report.md, report.html, the accuracy-matrix heatmap, the combined report."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from mmcit.io import atomic_path, write_json, write_text
from mmcit.results.metrics import continual_metrics
from mmcit.training.distributed import world_size

METRIC_NAMES = {
    "average_accuracy": "Average accuracy (final)",
    "forgetting": "Forgetting",
    "new_accuracy": "New accuracy (plasticity)",
    "bwt": "Backward transfer (BWT)",
    "maa": "Mean average accuracy (MAA)",
}


def environment() -> dict:
    """Versions, hardware and git commit, stamped on every report."""
    import peft
    import torch
    import transformers

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "processes": world_size(),  # data-parallel processes (accelerate launch)
        "git_commit": commit,
    }


def fmt(x: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals, or ``n/a``."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def matrix_table(tasks: list[str], rows: list[str], matrix: list[list[float | None]]) -> str:
    """The accuracy matrix as a Markdown table."""
    head = "| after \\ on | " + " | ".join(tasks) + " |\n|---|" + "---|" * len(tasks) + "\n"
    body = ""
    for label, row in zip(rows, matrix):
        cells = [fmt(row[i]) if i < len(row) else "" for i in range(len(tasks))]
        body += f"| {label} | " + " | ".join(cells) + " |\n"
    return head + body


def save_heatmap(path: Path, tasks: list[str], rows: list[str], matrix: list[list[float | None]], title: str) -> None:
    """The accuracy matrix as a PNG heatmap (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.full((len(rows), len(tasks)), np.nan)
    for j, row in enumerate(matrix):
        for i, v in enumerate(row):
            if v is not None:
                data[j, i] = v
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(tasks), 1.2 + 0.6 * len(rows)))
    im = ax.imshow(data, vmin=0, vmax=100, cmap="viridis")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("after training")
    for j in range(len(rows)):
        for i in range(len(tasks)):
            if not np.isnan(data[j, i]):
                ax.text(i, j, f"{data[j, i]:.0f}", ha="center", va="center",
                        color="white" if data[j, i] < 60 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy %")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def build_results(method: str, tasks: list[str], rows: list[str], matrix, joint: bool, extra: dict) -> dict:
    """The results dict: tasks, stages, matrix, continual metrics and ``extra``."""
    return {
        "method": method,
        "tasks": tasks,
        "stages": rows,
        "accuracy_matrix": matrix,
        "joint": joint,
        "metrics": continual_metrics(matrix, joint=joint) if matrix else None,
        **extra,
    }


def write_run_report(run_dir: Path, results: dict) -> None:
    """report.md, report.html and accuracy_matrix.png for one run (results.json is written by the
    runner)."""
    tasks, rows, matrix = results["tasks"], results["stages"], results["accuracy_matrix"]
    m = results["metrics"] or {}
    save_heatmap(run_dir / "accuracy_matrix.png", tasks, rows, matrix, results["method"])
    lines = [
        f"# {results['method']} — {results.get('name', '')}\n",
        f"Scoring mode: `{results.get('scoring_mode', 'default')}`, evaluated on the "
        f"`{results.get('eval_split', 'test')}` split. Accuracies in %. "
        f"Row j = after training stage j; column i = task i.\n",
        matrix_table(tasks, rows, matrix),
        "![accuracy matrix](accuracy_matrix.png)\n",
        "| metric | value |\n|---|---|",
        *[f"| {label} | {fmt(m.get(k))} |" for k, label in METRIC_NAMES.items()],
        "",
    ]
    if results.get("general"):
        lines += [general_section(results["general"])]
    timing = results.get("timing", {})
    if timing:
        lines += ["## Time", "", "| stage | train s | steps | eval s |", "|---|---|---|---|"]
        for t in timing.get("stages", []):
            lines.append(f"| {t['stage']} | {t['train_seconds']:.1f} | {t['steps']} | {t['eval_seconds']:.1f} |")
        lines += ["", f"Total: {timing.get('total_seconds', 0):.1f} s", ""]
    if results.get("method_summary"):
        lines += ["## Method", "", "```", _pretty(results["method_summary"]), "```", ""]
    env = results.get("environment", {})
    lines += ["## Environment", "", *[f"- {k}: {v}" for k, v in env.items()], ""]
    write_text(run_dir / "report.md", "\n".join(lines))
    from mmcit.results.run import Run  # lazy: pandas (heavy), needed only once the run has ended

    Run(run_dir, results).write_html()


def general_section(general: dict) -> str:
    """The general-skill retention table (``mmcit/evaluation/general.py``) in Markdown."""
    lines = ["## General skills (retention against the base model)", "",
             "| set | metric | base | final | change | retained % |", "|---|---|---|---|---|---|"]
    for name, metrics in general.get("retention", {}).items():
        for metric, v in metrics.items():
            lines.append(f"| {name} | {metric} | {v['base']:.2f} | {v['final']:.2f} | {v['change']:+.2f} | "
                         f"{fmt(v['retained'])} |")
    return "\n".join(lines) + "\n"


def _pretty(obj) -> str:
    import json

    return json.dumps(obj, indent=2, ensure_ascii=False)


def write_combined_report(out_dir: Path, results: list[dict]) -> str:
    """DIR/report.md comparing the methods of a demo; returns the one-screen summary text."""
    header = "| method | " + " | ".join(METRIC_NAMES.values()) + " | time s |\n|---|" + "---|" * (len(METRIC_NAMES) + 1)
    rows = []
    for r in results:
        m = r["metrics"] or {}
        rows.append(
            f"| {r['method']} | " + " | ".join(fmt(m.get(k)) for k in METRIC_NAMES)
            + f" | {r.get('timing', {}).get('total_seconds', 0):.0f} |"
        )
    table = header + "\n" + "\n".join(rows) + "\n"
    parts = ["# mmcit comparison\n\n", f"Tasks: {', '.join(results[0]['tasks'])}\n\n", table]
    for r in results:
        parts += [f"\n## {r['method']}\n\n", matrix_table(r["tasks"], r["stages"], r["accuracy_matrix"]),
                  f"\n![{r['method']}]({r['method']}/accuracy_matrix.png)\n"]
    env = results[0].get("environment", {})
    parts += ["\n## Environment\n\n", *[f"- {k}: {v}\n" for k, v in env.items()]]
    write_text(out_dir / "report.md", "".join(parts))
    write_json(out_dir / "summary.json", [{"method": r["method"], "metrics": r["metrics"]} for r in results])
    return table
