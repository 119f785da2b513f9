"""Every demo method with its hyperparameters selected on the validation split, then tested over seeds.

For each method of ``configs/demo/`` with a grid below, every grid point is trained and evaluated on
the *validation* split (``eval.split=val``) for the ``--val-seeds``; the point with the best final
average accuracy there (mean over those seeds; a tie keeps the earlier point, and each grid lists
first the value shipped when the grid was first run) is then trained and evaluated on the *test*
split for every ``--seeds``. Methods without a grid run their shipped config on test. The test
figures are never used for any choice.

    python benchmarks/demo_selection.py --out runs/selection                 # val seed 0, test 0,1,2
    python benchmarks/demo_selection.py --out runs/selection --methods lcia,lora_ft --quick

``--reuse DIR [DIR ...]`` takes a finished run from an earlier folder (``mmcit demo`` or ``mmcit
compare`` output) instead of training it again when its saved config equals the job's in everything
but the output folder and name. Runs go into ``--out`` (``val/<method>/<point>/seed<s>``,
``test/<method>/seed<s>``); the script writes ``selection.md`` (validation grid, selection, test
table as mean ± sample std) and ``selection.json``, and ``tradeoff_<method>.png`` (forgetting against
new accuracy over each grid on validation). One single-threaded process per job, ``--jobs`` at once.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mmcit, installed or not

from mmcit.cli.pool import _prepare_worker, _run_worker  # noqa: E402
from mmcit.config import load_config  # noqa: E402
from mmcit.config.loader import to_dict  # noqa: E402
from mmcit.results.sweep import Summary, label, plot_tradeoff, select, summarise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Grid per method (override -> values), the value shipped when the grid was first run first (the
#: configs now carry the selected ones). Methods not named run as shipped.
GRIDS: dict[str, list[dict[str, str]]] = {
    "lcia": [{"method.ema.scale": v} for v in ("0.1", "0.03", "0.3", "2")],
    # LCIA with the balance weight's L1 norms as means over elements (method.ema.alpha_norm: mean):
    # its own grid and its own row, beside the reference form above. Scale 1e-7 gave a mean alpha of
    # 0.064 on the demo's first task, 1e-5 only the fallback (every computed weight above 1).
    "lcia_mean": [{"method.ema.alpha_norm": "mean", "method.ema.scale": v} for v in ("3e-8", "1e-7")],
    # The baselines: the shipped value and one more, towards stability (forgetting is what the demo
    # stream punishes); two CPU-hours bound the whole campaign on 2 cores.
    "adaptive_ema": [{"method.ema.scale": v} for v in ("0.1", "0.03")],
    "ema": [{"method.ema.fixed_alpha": v} for v in ("0.01", "0.003")],
    "replay": [{"method.ratio": v} for v in ("0.25", "0.5")],
    "ewc": [{"method.lam": v} for v in ("1000", "10000")],
    "lwf": [{"method.weight": v} for v in ("1.0", "2.0")],
    "olora": [{"method.lambda_orth": v} for v in ("0.5", "2.0")],
    "sefe": [{"method.reg_weight": v} for v in ("2500", "10000")],
    # The field's methods without a penalty weight: the setting each one leaves open.
    "moelora": [{"method.experts": v} for v in ("4", "2", "8")],  # experts of rank 4, 8, 2 (lora_r 16)
    "eproj": [{"method.init": v} for v in ("previous", "base")],  # where a new task's projector starts
    "disco": [{"method.anchors.embedder": v} for v in ("hashing", "sentence")],  # what routes a sample
    "hide_llava": [{"method.fusion": v} for v in ("sum", "mean")],  # how the lower layers' LoRAs merge
}
METHODS = ("lora_ft", "lcia", "lcia_mean", "adaptive_ema", "ema", "replay", "ewc", "lwf", "moelora", "olora", "sefe",
           "eproj", "disco", "hide_llava", "multitask", "zero_shot")
#: Rows that run another method's config (with their grid's overrides).
CONFIG_OF = {"lcia_mean": "lcia"}
COLUMNS = ("average_accuracy", "forgetting", "new_accuracy", "maa", "bwt")  # the tables' order
IGNORED = ("output_dir", "name", "threads")


def _comparable(cfg) -> dict:
    d = to_dict(cfg)
    return {k: v for k, v in d.items() if k not in IGNORED}


class Finder:
    """Finished runs in earlier folders, looked up by their config."""

    def __init__(self, folders: list[Path]) -> None:
        self.runs = []
        for folder in folders:
            for results in Path(folder).rglob("results.json"):
                try:
                    if json.loads(results.read_text()).get("complete"):
                        self.runs.append((results.parent, _comparable(load_config(results.parent / "config.yaml"))))
                except Exception:  # an unreadable or foreign folder is simply not reused
                    continue

    def find(self, cfg) -> Path | None:
        want = _comparable(cfg)
        return next((path for path, have in self.runs if have == want), None)


def _job(method: str, point: dict[str, str], seed: int, split: str, out: Path, extra: list[str]):
    overrides = [*extra, *(f"{k}={v}" for k, v in point.items()), f"seed={seed}", f"output_dir={out}",
                 "threads=1", f"eval.split={split}"]
    config = CONFIG_OF.get(method, method)
    return str(ROOT / "configs" / "demo" / f"{config}.yaml"), overrides


def _result(folder: Path) -> dict | None:
    path = folder / "results.json"
    if path.exists():
        res = json.loads(path.read_text())
        if res.get("complete"):
            return res
    return None


class Campaign:
    """Submits val grids first, each method's test runs as soon as its selection is known."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, Path(args.out)
        self.finder = Finder([Path(p) for p in args.reuse])
        self.extra = ["train.epochs=0.05"] if args.quick else []
        self.val: dict[str, dict[str, list[dict]]] = {}
        self.selected: dict[str, dict[str, str]] = {}
        self.test: dict[str, list[dict]] = {}
        self.reused: list[str] = []

    def jobs_val(self, method: str) -> list[tuple]:
        grid = GRIDS.get(method, [{}])
        if len(grid) == 1:
            return []
        return [(("val", method, label(p), s), _job(method, p, s, "val", self.out / "val" / method / label(p) / f"seed{s}",
                                                    self.extra)) for p in grid for s in self.args.val_seeds]

    def select(self, method: str) -> dict[str, str]:
        grid = GRIDS.get(method, [{}])
        if len(grid) == 1:
            return grid[0]
        summaries = [summarise(p, self.args.val_seeds, self.val[method][label(p)]) for p in grid]
        return select(summaries, "average_accuracy").combination

    def jobs_test(self, method: str) -> list[tuple]:
        point = self.selected[method]
        return [(("test", method, label(point), s), _job(method, point, s, "test", self.out / "test" / method / f"seed{s}",
                                                         self.extra)) for s in self.args.seeds]

    def record(self, key: tuple, res: dict) -> None:
        phase, method, point, _ = key
        if phase == "val":
            self.val.setdefault(method, {}).setdefault(point, []).append(res)
        else:
            self.test.setdefault(method, []).append(res)

    def run(self) -> None:
        methods = self.args.methods
        pending: dict[str, int] = {}
        queue: list[tuple] = []
        for m in methods:
            jobs = self.jobs_val(m)
            pending[m] = len(jobs)
            if jobs:
                queue += jobs
            else:
                self.selected[m] = self.select(m)
        # The longest runs (multitask trains on every task at once) first, so none ends the campaign alone.
        for m in sorted((m for m in methods if m in self.selected), key=lambda m: m != "multitask"):
            if m == "multitask":
                queue[:0] = self.jobs_test(m)
            else:
                queue += self.jobs_test(m)
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager:
            lines = manager.Queue()
            with ProcessPoolExecutor(max_workers=self.args.jobs, mp_context=ctx) as pool:
                running: dict = {}
                prepared = False
                while queue or running:
                    while queue and len(running) < self.args.jobs:
                        key, job = queue.pop(0)
                        done = self._done(job)
                        if done is not None:
                            self._finish(key, done, pending, queue)
                            continue
                        if not prepared:  # the bases of every seed first, so that parallel runs share them
                            seeds = sorted(set(self.args.seeds) | set(self.args.val_seeds))
                            for f in [pool.submit(_prepare_worker, *_job("lora_ft", {}, s, "test", self.out / "prep",
                                                                         self.extra), lines) for s in seeds]:
                                f.result()
                            prepared = True
                        running[pool.submit(_run_worker, *job, lines)] = key
                    if not running:
                        continue
                    finished, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                    while not lines.empty():
                        line = lines.get()
                        if "stage" in line and "/" in line:  # stage starts only; the rest is noise here
                            print(line, flush=True)
                    for f in finished:
                        key = running.pop(f)
                        print(f"done {key}", flush=True)
                        self._finish(key, f.result(), pending, queue)

    def _done(self, job: tuple) -> dict | None:
        path, overrides = job
        out = Path(next(o for o in overrides if o.startswith("output_dir="))[len("output_dir="):])
        res = _result(out)
        if res is not None:
            return res
        found = self.finder.find(load_config(path, overrides))
        if found is not None:
            self.reused.append(f"{out} <- {found}")
            return json.loads((found / "results.json").read_text())
        return None

    def _finish(self, key: tuple, res: dict, pending: dict, queue: list) -> None:
        self.record(key, res)
        phase, method = key[0], key[1]
        if phase == "val":
            pending[method] -= 1
            if pending[method] == 0:
                self.selected[method] = self.select(method)
                print(f"selected for {method} on val: {self.selected[method]}", flush=True)
                queue[:0] = self.jobs_test(method)  # ahead of the remaining grids: results sooner


def _cell(s: Summary, q: str) -> str:
    if s.mean.get(q) is None:
        return "n/a"
    return f"{s.mean[q]:.1f} ± {s.std[q]:.1f}" if len(s.per_seed[q]) > 1 else f"{s.mean[q]:.1f}"


def _costs(results: list[dict]) -> str:
    """trainable | stored parameters | stored samples | peak MiB | wall s (the last two: means over seeds;
    the peak over the seeds whose runs counted it from their start)."""
    costs = [r.get("costs", {}) for r in results]
    c = costs[0]

    def mean(key: str) -> float | None:
        values = [x[key] for x in costs if x.get(key) is not None]
        return sum(values) / len(values) if values else None

    stored = c.get("stored_parameters", {}).get("total")
    samples = sum((c.get("stored_samples") or {}).values()) if isinstance(c.get("stored_samples"), dict) else 0
    # ru_maxrss cannot be reset: in a pooled worker it is the largest peak of every run the worker
    # did. Only peaks counted from the run's start (VmHWM after its reset, CUDA's statistics) count.
    peaks = [x["peak_memory_bytes"] for x in costs
             if x.get("peak_memory_bytes") is not None and x.get("peak_memory_source") != "ru_maxrss"]
    peak, wall = (sum(peaks) / len(peaks) if peaks else None), mean("wall_seconds")
    cells = [f"{c['trainable_parameters']:,}" if "trainable_parameters" in c else "n/a",
             f"{stored:,}" if stored is not None else "n/a", f"{samples:,}",
             f"{peak / 2**20:.0f}" if peak is not None else "n/a", f"{wall:.0f}" if wall is not None else "n/a"]
    return " | ".join(cells)


def report(c: Campaign) -> str:
    head = "| {} | final average | forgetting | new accuracy | MAA | BWT |"
    parts = ["# Demo methods: hyperparameters selected on validation, tested over seeds\n",
             f"Validation seeds: {c.args.val_seeds}; test seeds: {c.args.seeds}. Mean ± sample std over seeds "
             "(accuracy in %). Selection: best final average accuracy on the validation split.\n",
             "## Validation grids\n", head.format("method, setting"), "|---|---|---|---|---|---|"]
    record: dict = {"val_seeds": c.args.val_seeds, "seeds": c.args.seeds, "val": {}, "selected": c.selected,
                    "test": {}, "reused": c.reused}
    for m in c.args.methods:
        for p in GRIDS.get(m, [{}]) if m in c.val else []:
            s = summarise(p, c.args.val_seeds, c.val[m][label(p)])
            chosen = " (selected)" if p == c.selected.get(m) else ""
            parts.append(f"| {m} {label(p)}{chosen} | " + " | ".join(_cell(s, q) for q in COLUMNS) + " |")
            record["val"].setdefault(m, []).append(s.__dict__)
        if m in c.val:
            grid = [summarise(p, c.args.val_seeds, c.val[m][label(p)]) for p in GRIDS[m]]
            plot_tradeoff(grid, c.out / f"tradeoff_{m}.png", f"{m} on validation: forgetting against new accuracy")
    if "lcia" in c.val and "lcia_mean" in c.val:  # both norm forms of the balance weight in one picture
        both = [summarise(p, c.args.val_seeds, c.val[m][label(p)]) for m in ("lcia", "lcia_mean") for p in GRIDS[m]]
        plot_tradeoff(both, c.out / "tradeoff_lcia_scale.png", "lcia on validation: method.ema.scale (sum | mean)")
    parts += ["", "## Test split, selected settings\n",
              "| method | setting | final average | forgetting | new accuracy | MAA | BWT | trainable params | stored params "
              "| stored samples | peak MiB | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in c.args.methods:
        if m not in c.test:
            continue
        s = summarise(c.selected[m], c.args.seeds, c.test[m])
        parts.append(f"| {m} | {label(c.selected[m])} | " + " | ".join(_cell(s, q) for q in COLUMNS)
                     + f" | {_costs(c.test[m])} |")
        record["test"][m] = s.__dict__
    c.out.mkdir(parents=True, exist_ok=True)
    (c.out / "selection.json").write_text(json.dumps(record, indent=1))
    text = "\n".join(parts) + "\n"
    (c.out / "selection.md").write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/selection")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--val-seeds", default="0")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=3)
    p.add_argument("--reuse", nargs="*", default=[], help="earlier run folders whose finished runs may be reused")
    p.add_argument("--quick", action="store_true", help="a fraction of the data and of an epoch (a smoke run)")
    args = p.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    args.val_seeds = [int(s) for s in args.val_seeds.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    c = Campaign(args)
    c.run()
    print(report(c))
    print(f"finished in {time.perf_counter() - start:.0f} s; reused {len(c.reused)} runs; {c.out / 'selection.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
