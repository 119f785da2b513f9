"""Training-step time of every training method against lora_ft's, on the same batches.

    python benchmarks/bench_methods.py                       # the demo's tiny model (configs/demo)
    python benchmarks/bench_methods.py --rounds 40 model.pretrain.steps=50 data.sample_factor=0.25
    python benchmarks/bench_methods.py --methods replay,ewc,lwf     # a subset (lora_ft is always in)

Prints figures only (no assertions). One optimizer step is what ``mmcit.training.loop`` does per
step: forward and backward of the global batch (with the method's ``extra_loss``), clipping,
``optimizer.step()`` and the method's ``after_optimizer_step``. The methods are timed interleaved,
one step each per round in a rotating order, on the same global batch within a round, so a shared
machine's changing speed hits them alike; the figure per method is the median over rounds of its
time divided by lora_ft's in the same round.

Each method has its own copy of the model, built from the same cached base (so every copy starts
from the same weights), with the options of its demo config, and is put in the state it trains the
second task in: the first stage's ``before_stage``, ``after_stage`` and ``consolidate`` run
(without training in between: a step's cost does not depend on the weights' values), then the
second stage's ``before_stage``. So replay has a buffer of the first task (its share of the batch
drawn from it), EWC the first task's Fisher, LwF the kept weights, O-LoRA and SEFE a frozen first
LoRA, the per-task methods a second adapter (or projector), LCIA and the EMAs their averages.
EWC's Fisher passes after a task (``consolidate``) are timed too, per sample, since they are a
cost outside the steps. Replay's batch holds rows of an earlier task, whose lengths differ from the
task's own (the batch is padded to its longest row): ``lora_ft`` is also timed on replay's rows,
which separates that cost of the data from the method's. ``key=value`` arguments override the demo
config (a shorter pretraining of the base does not change a step's cost). ``multitask`` steps as
``lora_ft`` does and ``zero_shot`` does not train; neither is timed.
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mmcit, installed or not

from mmcit.config import load_config  # noqa: E402
from mmcit.data.stream import load_data  # noqa: E402
from mmcit.methods.base import RunContext, build_method  # noqa: E402
from mmcit.models.factory import build_model  # noqa: E402
from mmcit.training.loop import StageInputs, _accumulate, mixed_rows  # noqa: E402
from mmcit.training.optim import make_optimizer  # noqa: E402
from mmcit.training.sample_pass import SamplePass  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("lora_ft", "lcia", "adaptive_ema", "ema", "replay", "ewc", "lwf", "moelora", "olora", "sefe", "eproj",
           "disco", "hide_llava")
MIXED = "lora_ft on replay's rows"  # the same rows as replay: what the mixed batch itself costs


class Bench:
    """One method on its own model copy, in its second-task state, with its own optimizer."""

    def __init__(self, name: str, cfg, data, run_dir: Path) -> None:
        self.name = name
        self.model = build_model(cfg, data, cfg.data.cache_path(), print, progress=False)
        self.method = build_method(load_config(REPO / "configs" / "demo" / f"{name}.yaml").method)
        self.method.setup(self.model, RunContext(run_dir=run_dir / name, task_names=[t.name for t in data.tasks], seed=0))
        self.stages = self.method.plan(data.tasks)
        first, second = self.stages[0], self.stages[1]
        self.method.before_stage(first, self.model)
        self.method.after_stage(first, self.model)
        t0 = time.perf_counter()
        self.method.consolidate(first, self.model, SamplePass(self.model, cfg.train))
        self.consolidate_seconds = time.perf_counter() - t0
        self.method.before_stage(second, self.model)
        self.optimizer = make_optimizer(self.model, cfg.train)
        self.params = [p for _, p in self.model.trainable_named_parameters()]
        self.model.train()


def main() -> None:
    """Time the steps, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated; lora_ft is always timed")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of configs/demo/base.yaml")
    args = ap.parse_args()
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    names = ["lora_ft", *(m for m in METHODS if m in wanted and m != "lora_ft")]

    cfg = load_config(REPO / "configs" / "demo" / "base.yaml", ["threads=1", *args.overrides])
    torch.set_num_threads(cfg.threads)
    data = load_data(cfg.data, cfg.data.cache_path(), print)
    task = data.tasks[1]
    benches = {}
    # What a method writes into its run folder (LCIA's codebook and alpha trace) goes to a temporary one.
    run_root = Path(tempfile.mkdtemp(prefix="bench_methods-"))
    for name in names:
        print(f"setting up {name}", flush=True)
        benches[name] = Bench(name, cfg, data, run_root)
    batch = cfg.train.batch_size
    extra, k = [], 0
    if "replay" in benches:
        replay = benches["replay"]
        extra, share = replay.method.mixed_in(replay.stages[1])
        k = mixed_rows(share, batch)
        names.append(MIXED)
    # The tower's tokens, computed once; every copy's tower is the same frozen base tower.
    inputs = StageInputs(benches["lora_ft"].model, task.train + extra, cfg.train)
    n_task = len(task.train)
    pad = benches["lora_ft"].model.tokenizer.pad_token_id
    rng = random.Random(0)

    def step(name: str, rows: list[int]) -> float:
        b = benches["lora_ft" if name == MIXED else name]
        start = time.perf_counter()
        _accumulate(b.model, b.method, [inputs[i] for i in rows], pad, cfg.train.micro_batch_size, inputs.via_tokens,
                    cfg.train)
        torch.nn.utils.clip_grad_norm_(b.params, cfg.train.max_grad_norm)
        b.optimizer.step()
        b.method.after_optimizer_step(b.model)
        b.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {m: [] for m in names}
    for r in range(args.warmup + args.rounds):
        own = rng.sample(range(n_task), batch)
        mixed = own[: batch - k] + [n_task + j for j in rng.sample(range(len(extra)), k)] if k else own
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            seconds = step(name, mixed if name in ("replay", MIXED) else own)
            if r >= args.warmup:
                times[name].append(seconds)
    base = times["lora_ft"]
    lora = benches["lora_ft"].model
    print(f"\ntiny model ({lora.num_parameters()[0]:,} trainable values in lora_ft), batch {batch}"
          + (f" ({k} replayed rows)" if k else "")
          + f", second task {task.name}, {args.rounds} interleaved rounds, {torch.get_num_threads()} thread(s)")
    print("| method | median step ms | ratio to lora_ft (median of per-round ratios) |\n|---|---|---|")
    for name in names:
        ratios = [t / b for t, b in zip(times[name], base)]
        print(f"| {name} | {1000 * statistics.median(times[name]):.1f} | {statistics.median(ratios):.2f} |")
    if k:
        own_cost = statistics.median(t / b for t, b in zip(times["replay"], times[MIXED]))
        print(f"\nreplay against lora_ft on the same mixed rows (the method's own cost): {own_cost:.2f}")
    if "ewc" in benches:
        ewc = benches["ewc"]
        per_sample = ewc.consolidate_seconds / ewc.method.records[-1]["fisher_samples"]
        print(f"\nEWC Fisher after a task: {1000 * per_sample:.1f} ms per sample "
              f"({per_sample / statistics.median(base):.2f} lora_ft steps)")
    shutil.rmtree(run_root, ignore_errors=True)


if __name__ == "__main__":
    main()
