"""``mmcit demo``: the built-in synthetic benchmark with several methods, compared in one report."""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from mmcit.cli.errors import fail
from mmcit.config import load_config
from mmcit.data.stream import load_data, require_split
from mmcit.models.factory import build_model
from mmcit.recipe import run
from mmcit.results.report import write_combined_report

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIGS = REPO_ROOT / "configs" / "demo"
DEMO_METHODS = ["lcia", "lora_ft"]  # --methods adds multitask, ema, adaptive_ema, zero_shot


def _demo_worker(config_path: str, overrides: list[str], queue) -> dict:
    """One method of the demo, in its own single-threaded process; reports progress on ``queue``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = load_config(config_path, overrides)
    return run(cfg, progress=False, log=lambda msg: queue.put(msg))


def cmd_demo(args: argparse.Namespace) -> int:
    """``mmcit demo``: every chosen method on the built-in benchmark, in parallel, then one report."""
    methods = args.methods.split(",") if args.methods else DEMO_METHODS
    out = Path(args.output)
    # Up to 1.5 single-threaded processes per core: with one per core, the demo's three methods on
    # 2 cores ran two at a time and then the third alone, leaving a core idle for a third of the time.
    jobs = args.jobs or min(len(methods), max(1, (os.cpu_count() or 1) * 3 // 2))
    start = time.perf_counter()
    per_method = []
    for m in methods:
        path = DEMO_CONFIGS / f"{m}.yaml"
        if not path.exists():
            available = sorted(p.stem for p in DEMO_CONFIGS.glob("*.yaml") if p.stem != "base")
            return fail(f"no demo config for method {m!r} ({path}); available: {', '.join(available)}")
        overrides = [f"output_dir={out / m}", f"threads={1 if jobs > 1 else 0}", *args.overrides]
        if args.sample_factor is not None:
            overrides.append(f"data.sample_factor={args.sample_factor}")
        per_method.append((str(path), overrides, load_config(path, overrides)))

    # Data and the pretrained base are shared by every method: build them once, here, first.
    cfg0 = per_method[0][2]
    cache = cfg0.data.cache_path()
    data = load_data(cfg0.data, cache, log=tqdm.write)
    require_split(data.tasks, cfg0.eval.split)  # before the base is pretrained
    build_model(cfg0, data, cache, log=tqdm.write)
    n_stages = sum(1 if m == "multitask" else len(cfg0.data.tasks) for m in methods)

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue()
        bar = tqdm(total=n_stages, desc=f"demo ({', '.join(methods)})", dynamic_ncols=True)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(_demo_worker, p, o, queue) for p, o, _ in per_method]
            while not all(f.done() for f in futures) or not queue.empty():
                try:
                    msg = queue.get(timeout=0.5)
                except Exception:  # queue.Empty from the manager proxy
                    continue
                tqdm.write(msg)
                if "] after " in msg:
                    bar.update(1)
            results = [f.result() for f in futures]
        bar.close()
    table = write_combined_report(out, results)
    print()
    print(table)
    print(f"demo finished in {time.perf_counter() - start:.0f} s; report: {out / 'report.md'}")
    return 0


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    """Adds ``demo``."""
    p = sub.add_parser("demo", help="run the built-in synthetic benchmark with several methods and compare them")
    p.add_argument("--output", default="runs/demo", help="folder for the method run folders and the combined report")
    p.add_argument("--methods", default=None, help=f"comma-separated methods (default: {','.join(DEMO_METHODS)})")
    p.add_argument("--sample-factor", type=float, default=None,
                   help="multiply the benchmark's sample counts (data.sample_factor)")
    p.add_argument("--jobs", type=int, default=0, help="methods run in parallel (default: up to 1.5 per CPU core)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every method's config")
    p.set_defaults(func=cmd_demo)
