"""Training-step time of replay, EWC and LwF against lora_ft's, on the same model and batches.

    python benchmarks/bench_methods.py                       # the demo's tiny model (configs/demo)
    python benchmarks/bench_methods.py --rounds 40 model.pretrain.steps=50 data.sample_factor=0.25

Prints figures only (no assertions). One optimizer step is what ``mmcit.training.loop`` does per
step: forward and backward of the global batch (with the method's ``extra_loss``), clipping,
``optimizer.step()`` and the method's ``after_optimizer_step``. The methods are timed interleaved,
one step each per round in a rotating order, on the same global batch within a round, so a shared
machine's changing speed hits them alike; the figure per method is the median over rounds of its
time divided by lora_ft's in the same round. Each method is in the state it trains the second task
in: replay with a buffer of the first task (its share of the batch drawn from it), EWC with the
first task's Fisher, LwF with the kept weights. EWC's Fisher passes after a task (``consolidate``)
are timed too, per sample, since they are a cost outside the steps. Replay's batch holds rows of
an earlier task, whose lengths differ from the task's own (the batch is padded to its longest row):
``lora_ft`` is also timed on replay's rows, which separates that cost of the data from the method's. ``key=value`` arguments
override the demo config (a shorter pretraining of the base does not change a step's cost).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mmcit, installed or not

from mmcit.config import load_config  # noqa: E402
from mmcit.data.stream import load_data  # noqa: E402
from mmcit.methods.base import RunContext, Stage, build_method  # noqa: E402
from mmcit.models.factory import build_model  # noqa: E402
from mmcit.training.loop import StageInputs, _accumulate, mixed_rows  # noqa: E402
from mmcit.training.optim import make_optimizer  # noqa: E402
from mmcit.training.sample_pass import SamplePass  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("lora_ft", "replay", "ewc", "lwf")
MIXED = "lora_ft on replay's rows"  # the same rows as replay: what the mixed batch itself costs


def setup(overrides: list[str]):
    """The demo model, its first two tasks and each method in its second-task state."""
    cfg = load_config(REPO / "configs" / "demo" / "base.yaml", ["threads=1", *overrides])
    torch.set_num_threads(cfg.threads)
    data = load_data(cfg.data, cfg.data.cache_path(), print)
    model = build_model(cfg, data, cfg.data.cache_path(), print, progress=True)
    first, second = data.tasks[0], data.tasks[1]
    methods = {}
    for name in METHODS:  # each with its demo config's options
        m = build_method(load_config(REPO / "configs" / "demo" / f"{name}.yaml").method)
        m.setup(model, RunContext(run_dir=Path("."), task_names=[t.name for t in data.tasks], seed=0))
        stages = m.plan(data.tasks)
        methods[name] = (m, stages)
    # The states of the second task: the buffer and Fisher of the first, the LwF copy.
    ewc, stages = methods["ewc"]
    t0 = time.perf_counter()
    ewc.consolidate(stages[0], model, SamplePass(model, cfg.train))
    fisher_seconds = (time.perf_counter() - t0) / ewc.records[-1]["fisher_samples"]
    replay, stages = methods["replay"]
    replay.after_stage(stages[0], model)
    lwf, stages = methods["lwf"]
    lwf.before_stage(stages[1], model)
    return cfg, model, second, methods, fisher_seconds


def main() -> None:
    """Time the steps, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="key=value overrides of configs/demo/base.yaml")
    args = ap.parse_args()
    cfg, model, task, methods, fisher_seconds = setup(args.overrides)
    replay = methods["replay"][0]
    extra, share = replay.mixed_in(methods["replay"][1][1])
    batch = cfg.train.batch_size
    k = mixed_rows(share, batch)
    inputs = StageInputs(model, task.train + extra, cfg.train)  # the tower's tokens, computed once
    n_task = len(task.train)
    optimizer = make_optimizer(model, cfg.train)
    params = [p for _, p in model.trainable_named_parameters()]
    pad = model.tokenizer.pad_token_id
    rng = random.Random(0)
    model.train()

    def step(name: str, rows: list[int]) -> float:
        method = methods["lora_ft" if name == MIXED else name][0]
        start = time.perf_counter()
        _accumulate(model, method, [inputs[i] for i in rows], pad, cfg.train.micro_batch_size, inputs.via_tokens)
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        optimizer.step()
        method.after_optimizer_step(model)
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    names = (*METHODS, MIXED)
    times: dict[str, list[float]] = {m: [] for m in names}
    for r in range(args.warmup + args.rounds):
        own = rng.sample(range(n_task), batch)
        mixed = own[: batch - k] + [n_task + j for j in rng.sample(range(len(extra)), k)]
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            seconds = step(name, mixed if name in ("replay", MIXED) else own)
            if r >= args.warmup:
                times[name].append(seconds)
    base = times["lora_ft"]
    print(f"\ntiny model ({model.num_parameters()[0]:,} trainable values), batch {batch} "
          f"({k} replayed rows), {args.rounds} interleaved rounds, {torch.get_num_threads()} thread(s)")
    print("| method | median step ms | ratio to lora_ft (median of per-round ratios) |\n|---|---|---|")
    for name in names:
        ratios = [t / b for t, b in zip(times[name], base)]
        print(f"| {name} | {1000 * statistics.median(times[name]):.1f} | {statistics.median(ratios):.2f} |")
    own_cost = statistics.median(t / b for t, b in zip(times["replay"], times[MIXED]))
    print(f"\nreplay against lora_ft on the same mixed rows (the method's own cost): {own_cost:.2f}")
    print(f"\nEWC Fisher after a task: {1000 * fisher_seconds:.1f} ms per sample "
          f"({fisher_seconds / statistics.median(base):.2f} lora_ft steps)")


if __name__ == "__main__":
    main()
