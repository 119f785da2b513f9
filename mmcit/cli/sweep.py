"""``mmcit sweep CONFIG key=a,b,c ... --seeds 0,1,2 [--select-on val]``: a grid over seeds.

Every combination of the grid axes (``key=a,b`` overrides) runs once per seed; the summary is mean ±
std over the seeds (``sweep.md``, ``sweep.json``, and ``tradeoff.png``: forgetting against new
accuracy). With ``--select-on val`` the grid is evaluated on the validation split only, the best
combination on ``--metric`` is selected there, and the selected setting is then run on the test split
with the same seeds: the test figures are reported after selection, never used for it.
``--orders origin,reverse,alphabet`` adds the task order as an axis (``data.order``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from mmcit.cli.pool import default_jobs, run_all
from mmcit.config import load_config
from mmcit.errors import ConfigError
from mmcit.io import write_json, write_text
from mmcit.results.sweep import Summary, grid, label, plot_tradeoff, select, split_overrides, summarise, table


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be integers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must name distinct seeds, got {text!r}")
    return seeds


def _phase(args: argparse.Namespace, fixed: list[str], combos: list[dict], seeds: list[int], split: str | None,
           folder: Path, log) -> list[Summary]:
    """Run every combination on every seed (evaluating on ``split``) and summarise each."""
    jobs, keys = [], []
    for combo in combos:
        for seed in seeds:
            out = folder / label(combo) / f"seed{seed}"
            overrides = [*fixed, *(f"{k}={v}" for k, v in combo.items()), f"seed={seed}", f"output_dir={out}",
                         "threads=1", *([f"eval.split={split}"] if split else [])]
            load_config(args.config, overrides)  # every setting is checked before anything runs
            jobs.append((args.config, overrides))
            keys.append((label(combo), seed))
    n_jobs = args.jobs or default_jobs(len(jobs))
    distinct = {seed: job for job, (_, seed) in zip(jobs, keys)}  # one base per seed: build them first
    run_all(list(distinct.values()), n_jobs, log, prepare=True)
    results = run_all(jobs, n_jobs, log)
    by_combo: dict[str, list[dict]] = {}
    for (name, _), res in zip(keys, results):
        by_combo.setdefault(name, []).append(res)
    return [summarise(combo, seeds, by_combo[label(combo)]) for combo in combos]


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweep; writes sweep.md, sweep.json and tradeoff.png into the output folder."""
    start = time.perf_counter()
    fixed, axes = split_overrides(list(args.overrides))
    if args.orders:
        axes["data.order"] = [o.strip() for o in args.orders.split(",") if o.strip()]
    combos, seeds = grid(axes), _parse_seeds(args.seeds)
    out = Path(args.output or Path("runs") / "sweep" / Path(args.config).stem)
    selecting = args.select_on == "val"
    log = tqdm.write
    summaries = _phase(args, fixed, combos, seeds, "val" if selecting else None, out / ("val" if selecting else "runs"),
                       log)
    parts = [f"# sweep of {args.config}\n", f"Seeds: {', '.join(map(str, seeds))}. Mean ± sample std over seeds.\n",
             table(summaries, "validation split" if selecting else "as configured")]
    record = {"config": str(args.config), "seeds": seeds, "fixed": fixed, "axes": axes,
              "grid": [s.__dict__ for s in summaries]}
    if selecting:
        best = select(summaries, args.metric)
        log(f"selected on val by {args.metric}: {best.combination or 'as configured'}")
        test = _phase(args, fixed, [best.combination], seeds, "test", out / "test", log)
        parts += [f"Selected on the validation split by {args.metric}: "
                  f"{', '.join(f'{k}={v}' for k, v in best.combination.items()) or 'as configured'}.\n",
                  table(test, "test split, selected setting")]
        record.update(selected=best.combination, metric=args.metric, test=[s.__dict__ for s in test])
    plot_tradeoff(summaries, out / "tradeoff.png", f"{Path(args.config).stem}: {', '.join(axes) or 'seeds'}")
    parts.append("![forgetting against new accuracy](tradeoff.png)\n")
    record["seconds"] = time.perf_counter() - start
    write_text(out / "sweep.md", "\n".join(parts))
    write_json(out / "sweep.json", record)
    print("\n".join(parts[2:]))
    print(f"sweep finished in {record['seconds']:.0f} s; report: {out / 'sweep.md'}")
    return 0


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    """Adds ``sweep``."""
    p = sub.add_parser("sweep", help="run a grid of settings over seeds; select on validation, report test")
    p.add_argument("config", help="a YAML config")
    p.add_argument("overrides", nargs="*", help="key=value (fixed) and key=a,b,c (a grid axis) overrides")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--select-on", choices=["val"], default=None,
                   help="evaluate the grid on the validation split, select there, then run the selection on test")
    p.add_argument("--metric", default="average_accuracy", help="what --select-on maximises (forgetting: minimises)")
    p.add_argument("--orders", default=None, help="task orders as a grid axis, e.g. origin,reverse,alphabet")
    p.add_argument("--output", default=None, help="output folder (default: runs/sweep/<config name>)")
    p.add_argument("--jobs", type=int, default=0, help="runs in parallel (default: up to 1.5 per CPU core)")
    p.set_defaults(func=cmd_sweep)
