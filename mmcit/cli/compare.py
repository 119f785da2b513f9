"""``mmcit compare RUN_DIR ... [--output DIR]``: mean ± std per method over the given runs (seeds).

Each RUN_DIR is a run folder or a folder holding run folders (a ``mmcit demo`` or ``mmcit sweep``
output, searched recursively). The table (final average accuracy, forgetting, new accuracy, MAA,
BWT, trainable and stored parameters, peak memory, wall time) is printed and written with its plot
into the output folder: report.md, comparison.json, comparison.png and report.html.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mmcit.errors import ConfigError
from mmcit.results.compare import comparison


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare the runs; write the report into ``--output``."""
    try:
        table = comparison(list(args.run_dirs), by=args.by)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    out = Path(args.output)
    html = table.write(out)
    print(table.markdown())
    print(f"{len(table.runs)} run(s) of {len(table)} method(s); report: {out / 'report.md'} (and {html})")
    return 0


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    """Adds ``compare``."""
    p = sub.add_parser("compare", help="mean ± std per method over runs (seeds): metrics, costs, a plot, reports")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or folders holding run folders")
    p.add_argument("--output", default="runs/compare", help="folder for report.md, comparison.json/png, report.html")
    p.add_argument("--by", choices=["method", "name"], default="method",
                   help="group runs by method (default) or by run name")
    p.set_defaults(func=cmd_compare)
