"""Calibration of the built-in synthetic benchmark: is every task learnable, does a sequential
fine-tune forget, does joint training reach the upper bound?

Runs, from the demo's configuration (configs/demo/base.yaml) and its cached pretrained base:
  1. each task trained alone (lora_ft on a one-task stream) -> accuracy after training;
  2. lora_ft over the whole stream -> final average accuracy and forgetting;
  3. multitask (all tasks jointly) -> average accuracy.
Prints a table (and writes it as JSON with --out). Extra ``key=value`` arguments override the
config of every run, e.g. ``train.epochs=4 data.sample_factor=2``.

    python benchmarks/calibrate_synthetic.py [--jobs 2] [--out calib.json] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "configs" / "demo" / "lora_ft.yaml"


def _run(overrides: list[str]) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    from mmcit.config import load_config
    from mmcit.recipe import run

    return run(load_config(BASE, overrides), progress=False, log=lambda m: None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip-single", action="store_true", help="only the stream runs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from mmcit.config import load_config
    from mmcit.data.stream import load_data
    from mmcit.data.config import default_cache_dir
    from mmcit.models.factory import build_model

    tmp = Path(tempfile.mkdtemp(prefix="mmcit-calib-"))
    common = [*args.overrides, f"threads={1 if args.jobs > 1 else 0}"]
    cfg = load_config(BASE, common)
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    t0 = time.perf_counter()
    build_model(cfg, load_data(cfg.data, cache), cache)  # pretrain (or load) the shared base once
    base_seconds = time.perf_counter() - t0
    tasks = cfg.data.tasks
    jobs = {}
    if not args.skip_single:
        for t in tasks:
            jobs[f"alone:{t}"] = [*common, f"data.tasks=[{t}]", f"output_dir={tmp / ('alone-' + t)}", f"name=alone-{t}"]
    jobs["lora_ft"] = [*common, f"output_dir={tmp / 'lora_ft'}", "name=calib-lora_ft"]
    jobs["multitask"] = [*common, "method.type=multitask", f"output_dir={tmp / 'multitask'}", "name=calib-multitask"]
    # method.type via override needs the method mapping replaced, not merged
    jobs["multitask"] = [o for o in jobs["multitask"] if not o.startswith("method.type")] + ["method={type: multitask}"]
    t1 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {k: pool.submit(_run, v) for k, v in jobs.items()}
        results = {k: f.result() for k, f in futures.items()}
    report = {"base_seconds": base_seconds, "runs_seconds": time.perf_counter() - t1, "overrides": args.overrides}
    print(f"pretrained base: {base_seconds:.0f} s; runs: {report['runs_seconds']:.0f} s with {args.jobs} jobs")
    if not args.skip_single:
        alone = {t: results[f"alone:{t}"]["accuracy_matrix"][0][0] for t in tasks}
        report["alone"] = alone
        print("each task trained alone (accuracy %):")
        for t in tasks:
            print(f"  {t:10s} {alone[t]:5.1f}")
    for k in ("lora_ft", "multitask"):
        m = results[k]["metrics"]
        report[k] = {"metrics": m, "matrix": results[k]["accuracy_matrix"]}
        print(f"{k}: " + ", ".join(f"{n}={v:.1f}" for n, v in m.items() if v is not None))
    print("lora_ft final row: " + ", ".join(f"{t}={v:.0f}" for t, v in zip(tasks, results["lora_ft"]["accuracy_matrix"][-1])))
    print("multitask row:     " + ", ".join(f"{t}={v:.0f}" for t, v in zip(tasks, results["multitask"]["accuracy_matrix"][0])))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
