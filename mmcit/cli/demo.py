"""``mmcit demo``: the built-in synthetic benchmark with several methods, compared in one report.

``--seeds 0,1,2`` runs every method once per seed (folders ``OUTPUT/seed<N>/<method>``) and ends
with the comparison over seeds (mean ± std per method: report.md, comparison.json, comparison.png,
report.html in ``OUTPUT``). Without it, every method runs once with its config's seed (folders
``OUTPUT/<method>``) and ``OUTPUT/report.md`` is the side-by-side report, with the comparison's
HTML report, JSON and plot beside it.
"""
from __future__ import annotations

import argparse
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from mmcit.cli.pool import WorkerPool, run_all
from mmcit.cli.sweep import _parse_seeds
from mmcit.config import load_config
from mmcit.data.stream import load_data, require_split
from mmcit.errors import ConfigError
from mmcit.models.factory import build_model
from mmcit.progress import Progress
from mmcit.results.compare import comparison
from mmcit.results.report import write_combined_report
from mmcit.results.run import Run

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIGS = REPO_ROOT / "configs" / "demo"
DEMO_METHODS = ["lcia", "lora_ft"]  # --methods adds multitask, ema, adaptive_ema, zero_shot


def _jobs(methods: list[str], seeds: list[int | None], out: Path, overrides: list[str], sample_factor: float | None,
          threads: int) -> list[tuple[str, list[str]]]:
    """``(config path, overrides)`` of every run, each config checked before anything runs."""
    jobs = []
    for seed in seeds:
        folder = out if seed is None else out / f"seed{seed}"
        for m in methods:
            path = DEMO_CONFIGS / f"{m}.yaml"
            if not path.exists():
                available = sorted(p.stem for p in DEMO_CONFIGS.glob("*.yaml") if p.stem != "base")
                raise ConfigError(f"no demo config for method {m!r} ({path}); available: {', '.join(available)}")
            extra = [f"output_dir={folder / m}", f"threads={threads}", *overrides,
                     *([f"data.sample_factor={sample_factor}"] if sample_factor is not None else []),
                     *([f"seed={seed}"] if seed is not None else [])]
            load_config(path, extra)
            jobs.append((str(path), extra))
    return jobs


def run_demo(out: Path, methods: list[str] | None = None, seeds: list[int] | None = None,
             overrides: list[str] | None = None, sample_factor: float | None = None, jobs: int = 0,
             log: Callable[[str], None] = tqdm.write) -> tuple[list[Run], str]:
    """Run the demo (see the module docstring); returns the runs and a summary table (Markdown),
    after writing the reports."""
    methods = methods or DEMO_METHODS
    per_seed: list[int | None] = list(seeds) if seeds else [None]
    n_runs = len(methods) * len(per_seed)
    # Up to 1.5 single-threaded processes per core: with one per core, the demo's three methods on
    # 2 cores ran two at a time and then the third alone, leaving a core idle for a third of the time.
    n_jobs = jobs or min(n_runs, max(1, (os.cpu_count() or 1) * 3 // 2))
    todo = _jobs(methods, per_seed, out, list(overrides or []), sample_factor, 1 if n_jobs > 1 else 0)
    with ExitStack() as stack:
        # Data and the pretrained base (one per seed) are shared by the methods: build them first.
        first = [todo[k * len(methods)] for k in range(len(per_seed))]
        if len(first) == 1:  # here, with its progress shown
            cfg0 = load_config(*first[0])
            data = load_data(cfg0.data, cfg0.data.cache_path(), log=log)
            require_split(data.tasks, cfg0.eval.split)  # before the base is pretrained
            # The method workers start now and import while the base pretrains (after generating
            # the data, which forks its own image workers): about 10 s of the demo's wall time.
            pool = stack.enter_context(WorkerPool(n_jobs)) if n_jobs > 1 else None
            if pool is not None:
                pool.warm()
            build_model(cfg0, data, cfg0.data.cache_path(), log=log)
        else:
            pool = stack.enter_context(WorkerPool(n_jobs)) if n_jobs > 1 else None
            run_all(first, 1 if pool is None else n_jobs, log, prepare=True, pool=pool)
        results = _run_methods(todo, methods, per_seed, n_jobs, pool, log)
    runs = [Run(Path(dict(o.split("=", 1) for o in extra)["output_dir"]), res)
            for (_, extra), res in zip(todo, results)]
    table = comparison(runs)
    if seeds:
        for k, seed in enumerate(per_seed):
            write_combined_report(out / f"seed{seed}", results[k * len(methods): (k + 1) * len(methods)])
        table.write(out)
        return runs, table.markdown()
    summary = write_combined_report(out, results)
    table.write(out, markdown=False)
    return runs, summary


def _run_methods(todo: list[tuple[str, list[str]]], methods: list[str], per_seed: list[int | None], n_jobs: int,
                 pool: WorkerPool | None, log: Callable[[str], None]) -> list[dict | None]:
    """Every run of the demo, with one progress bar over all their stages."""
    n_stages = len(per_seed) * sum(1 if m == "multitask" else len(load_config(*todo[0]).data.tasks) for m in methods)
    bar = Progress(n_stages, f"demo ({', '.join(methods)})")

    def forward(msg: str) -> None:
        log(msg)
        if "] after " in msg:
            bar.update(1)

    results = run_all(todo, n_jobs, forward, pool=pool)
    bar.close()
    return results


def cmd_demo(args: argparse.Namespace) -> int:
    """``mmcit demo``: every chosen method on the built-in benchmark, in parallel, then the reports."""
    start = time.perf_counter()
    out = Path(args.output)
    seeds = _parse_seeds(args.seeds) if args.seeds else None
    _, summary = run_demo(out, args.methods.split(",") if args.methods else None, seeds, list(args.overrides),
                          args.sample_factor, args.jobs)
    print()
    print(summary)
    print(f"demo finished in {time.perf_counter() - start:.0f} s; report: {out / 'report.md'} "
          f"(and {out / 'report.html'})")
    return 0


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    """Adds ``demo``."""
    p = sub.add_parser("demo", help="run the built-in synthetic benchmark with several methods and compare them")
    p.add_argument("--output", default="runs/demo", help="folder for the method run folders and the combined report")
    p.add_argument("--methods", default=None, help=f"comma-separated methods (default: {','.join(DEMO_METHODS)})")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds: every method once per seed (OUTPUT/seed<N>/<method>), then mean ± "
                        "std per method over the seeds")
    p.add_argument("--sample-factor", type=float, default=None,
                   help="multiply the benchmark's sample counts (data.sample_factor)")
    p.add_argument("--jobs", type=int, default=0, help="runs in parallel (default: up to 1.5 per CPU core)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every method's config")
    p.set_defaults(func=cmd_demo)
