"""Calibration of the built-in synthetic benchmark: is every task learnable, does a sequential
fine-tune forget, does joint training reach the upper bound? Measured on the VALIDATION split
(``eval.split=val``), so that settings chosen from these figures never looked at the test split.

Runs, from the demo's configuration (configs/demo/base.yaml) and its cached pretrained base:
  1. each task trained alone (lora_ft on a one-task stream) -> accuracy after training;
  2. lora_ft over the whole stream -> final average accuracy and forgetting;
  3. multitask (all tasks jointly) -> average accuracy.
Prints a table with the aims (alone >= 80, Grounding >= 60, multitask >= 80 on average, lora_ft
forgetting >= 20) and writes it as JSON with --out. Extra ``key=value`` arguments override the
config of every run, e.g. ``train.epochs=2 model.pretrain.steps=600``.

    python benchmarks/calibrate_synthetic.py [--jobs 2] [--alone ScienceQA,GQA] [--skip-stream]
                                             [--out calib.json] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "configs" / "demo" / "lora_ft.yaml"
#: The calibration's aims (accuracy in %); Grounding's alone aim is lower.
AIMS = {"alone": 80.0, "alone:Grounding": 60.0, "multitask": 80.0, "lora_ft_forgetting": 20.0}


def _run(overrides: list[str]) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    from mmcit.config import load_config
    from mmcit.recipe import run

    start = time.perf_counter()
    res = run(load_config(BASE, overrides), progress=False, log=lambda m: None)
    return {**res, "wall_seconds": time.perf_counter() - start}


def _half_width(p: float, n: int) -> float:
    """Half-width of a 95% normal interval for an accuracy of ``p`` % over ``n`` samples, in points."""
    q = min(max(p / 100, 0.0), 1.0)
    return 196 * math.sqrt(q * (1 - q) / n) if n else float("nan")


def _jobs(args: argparse.Namespace, common: list[str], tasks: list[str], tmp: Path) -> dict[str, list[str]]:
    jobs = {}
    alone = tasks if args.alone is None else [t for t in args.alone.split(",") if t]
    for t in alone:
        jobs[f"alone:{t}"] = [*common, f"data.tasks=[{t}]", f"output_dir={tmp / ('alone-' + t)}", f"name=alone-{t}"]
    if not args.skip_stream:
        jobs["lora_ft"] = [*common, f"output_dir={tmp / 'lora_ft'}", "name=calib-lora_ft"]
        # method.type via override needs the method mapping replaced, not merged
        jobs["multitask"] = [*common, "method={type: multitask}", f"output_dir={tmp / 'multitask'}",
                             "name=calib-multitask"]
    return jobs


def _report(results: dict[str, dict], tasks: list[str], n_eval: dict[str, int]) -> dict:
    report: dict = {"alone": {}, "run_seconds": {k: round(r["wall_seconds"], 1) for k, r in results.items()}}
    print(f"each task trained alone (accuracy %, on val, +- = 95% interval half-width):")
    for key, res in results.items():
        if key.startswith("alone:"):
            t = key.split(":", 1)[1]
            acc = res["accuracy_matrix"][0][0]
            aim = AIMS.get(key, AIMS["alone"])
            report["alone"][t] = acc
            print(f"  {t:10s} {acc:5.1f} +-{_half_width(acc, n_eval[t]):4.1f}  aim >= {aim:.0f}: "
                  f"{'met' if acc >= aim else 'MISSED'}   ({res['wall_seconds']:.0f} s)")
    for k in ("lora_ft", "multitask"):
        if k in results:
            m = results[k]["metrics"]
            report[k] = {"metrics": m, "matrix": results[k]["accuracy_matrix"]}
            print(f"{k}: " + ", ".join(f"{n}={v:.1f}" for n, v in m.items() if v is not None)
                  + f"   ({results[k]['wall_seconds']:.0f} s)")
    if "lora_ft" in results:
        f = results["lora_ft"]["metrics"]["forgetting"]
        print("lora_ft final row: " + ", ".join(f"{t}={v:.0f}" for t, v in zip(tasks, results["lora_ft"]["accuracy_matrix"][-1])))
        print(f"  forgetting {f:.1f}, aim >= {AIMS['lora_ft_forgetting']:.0f}: {'met' if f >= AIMS['lora_ft_forgetting'] else 'MISSED'}")
    if "multitask" in results:
        avg = results["multitask"]["metrics"]["average_accuracy"]
        print("multitask row:     " + ", ".join(f"{t}={v:.0f}" for t, v in zip(tasks, results["multitask"]["accuracy_matrix"][0])))
        print(f"  average {avg:.1f}, aim >= {AIMS['multitask']:.0f}: {'met' if avg >= AIMS['multitask'] else 'MISSED'}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--alone", default=None, help="comma-separated tasks to train alone (default: all; '' for none)")
    parser.add_argument("--skip-stream", action="store_true", help="no lora_ft / multitask stream runs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from mmcit.config import load_config
    from mmcit.data.stream import load_data, require_split
    from mmcit.models.factory import build_model

    tmp = Path(tempfile.mkdtemp(prefix="mmcit-calib-"))
    common = ["eval.split=val", *args.overrides, f"threads={1 if args.jobs > 1 else 0}"]
    cfg = load_config(BASE, common)
    cache = cfg.data.cache_path()
    t0 = time.perf_counter()
    data = load_data(cfg.data, cache)
    require_split(data.tasks, cfg.eval.split)
    data_seconds = time.perf_counter() - t0
    build_model(cfg, data, cache)  # pretrain (or load) the shared base once
    base_seconds = time.perf_counter() - t0 - data_seconds
    tasks = cfg.data.tasks
    jobs = _jobs(args, common, tasks, tmp)
    t1 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {k: pool.submit(_run, v) for k, v in jobs.items()}
        results = {k: f.result() for k, f in futures.items()}
    runs_seconds = time.perf_counter() - t1
    print(f"data: {data_seconds:.0f} s; pretrained base: {base_seconds:.0f} s (0 if cached); "
          f"runs: {runs_seconds:.0f} s with {args.jobs} jobs; overrides: {' '.join(args.overrides) or 'none'}")
    n_eval = {t.name: len(t.split(cfg.eval.split)) for t in data.tasks}
    report = {"data_seconds": data_seconds, "base_seconds": base_seconds, "runs_seconds": runs_seconds,
              "overrides": args.overrides, "eval_split": cfg.eval.split, "eval_samples": n_eval,
              **_report(results, tasks, n_eval)}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
