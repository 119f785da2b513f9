"""LCIA against sequential LoRA fine-tuning on the demo stream, over seeds and adaptive-EMA scales.

For every seed: `lora_ft` (configs/demo/lora_ft.yaml) and `lcia` (configs/demo/lcia.yaml) at each
``--scales`` value of ``method.ema.scale``. Prints per run the final average accuracy, forgetting,
new accuracy and the mean EMA blend weight (alpha) of the re-trained tasks, the ratio of lcia's
forgetting to lora_ft's for the same seed, and the means over seeds. Each seed pretrains (or loads
from the cache) its own tiny base first.

    python benchmarks/lcia_vs_lora_ft.py [--seeds 0,1,2] [--scales 2,0.1] [--jobs 2] [--out f.json] [key=value ...]

Extra ``key=value`` arguments override the config of every run.
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
DEMO = REPO / "configs" / "demo"


def _build_base(overrides: list[str]) -> float:
    os.environ["OMP_NUM_THREADS"] = "1"
    from mmcit.config import load_config
    from mmcit.data.stream import load_data
    from mmcit.data.config import default_cache_dir
    from mmcit.models.factory import build_model

    cfg = load_config(DEMO / "lora_ft.yaml", overrides)
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    start = time.perf_counter()
    build_model(cfg, load_data(cfg.data, cache, log=lambda m: None), cache, log=lambda m: None, progress=False)
    return time.perf_counter() - start


def _run(config: str, overrides: list[str]) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    from mmcit.config import load_config
    from mmcit.recipe import run

    result = run(load_config(DEMO / config, overrides), progress=False, log=lambda m: None)
    ema = (result.get("method_summary") or {}).get("ema") or {}
    alphas = [t["mean_alpha"] for t in ema.get("per_task", []) if t.get("mean_alpha") is not None]
    return {"metrics": result["metrics"], "matrix": result["accuracy_matrix"],
            "mean_alpha": sum(alphas) / len(alphas) if alphas else None,
            "fallbacks": ema.get("fallbacks"), "updates": sum(t["updates"] for t in ema.get("per_task", []))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scales", default="2,0.1", help="method.ema.scale values for lcia")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    seeds = [int(s) for s in args.seeds.split(",")]
    scales = [float(s) for s in args.scales.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="mmcit-lcia-"))
    common = [*args.overrides, "threads=1"]
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        t0 = time.perf_counter()
        bases = dict(zip(seeds, pool.map(_build_base, [[*common, f"seed={s}"] for s in seeds])))
        print("bases: " + ", ".join(f"seed {s} {t:.0f} s" for s, t in bases.items()), flush=True)
        t1 = time.perf_counter()
        jobs = {}
        for s in seeds:
            jobs[(s, "lora_ft")] = ("lora_ft.yaml", [*common, f"seed={s}", f"output_dir={tmp / f'lora_ft-{s}'}"])
            for sc in scales:
                jobs[(s, f"lcia@{sc:g}")] = ("lcia.yaml", [*common, f"seed={s}", f"method.ema.scale={sc}",
                                                       f"output_dir={tmp / f'lcia-{sc:g}-{s}'}"])
        futures = {k: pool.submit(_run, *v) for k, v in jobs.items()}
        results = {k: f.result() for k, f in futures.items()}
    print(f"runs: {time.perf_counter() - t1:.0f} s with {args.jobs} jobs (bases {t1 - t0:.0f} s)")
    names = ["lora_ft"] + [f"lcia@{sc:g}" for sc in scales]
    print(f"{'seed':>4} {'method':12} {'avg':>6} {'forget':>6} {'new':>6} {'ratio':>6} {'alpha':>7}")
    for s in seeds:
        ref = results[(s, "lora_ft")]["metrics"]["forgetting"]
        for n in names:
            r = results[(s, n)]
            m = r["metrics"]
            ratio = "" if n == "lora_ft" or not ref else f"{m['forgetting'] / ref:6.2f}"
            alpha = "" if r["mean_alpha"] is None else f"{r['mean_alpha']:7.4f}"
            print(f"{s:>4} {n:12} {m['average_accuracy']:6.1f} {m['forgetting']:6.1f} {m['new_accuracy']:6.1f} {ratio:>6} {alpha:>7}")
    print("mean over seeds:")
    summary = {}
    for n in names:
        ms = [results[(s, n)]["metrics"] for s in seeds]
        mean = {k: sum(m[k] for m in ms) / len(ms) for k in ("average_accuracy", "forgetting", "new_accuracy")}
        summary[n] = mean
        print(f"     {n:12} {mean['average_accuracy']:6.1f} {mean['forgetting']:6.1f} {mean['new_accuracy']:6.1f}")
    for n in names[1:]:
        print(f"{n}: forgetting / lora_ft's = {summary[n]['forgetting'] / summary['lora_ft']['forgetting']:.2f} "
              f"(of the means over seeds)")
    if args.out:
        Path(args.out).write_text(json.dumps({"seeds": seeds, "scales": scales, "overrides": args.overrides,
                                              "runs": {f"{s}/{n}": r for (s, n), r in results.items()},
                                              "mean": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
