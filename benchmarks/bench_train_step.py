"""Training tokens per second with the speed options, side by side in one run on one model, on a
CoIN-like mix of sample lengths: the default step against packing (``train.packing``), the
answer-only and fused losses (``train.loss``), and both together.

    python benchmarks/bench_train_step.py            # CPU, the demo's tiny model shapes (random weights)
    python benchmarks/bench_train_step.py --quick    # a few steps (the test runs this)

``benchmarks/gpu_check.py`` calls the same functions on LLaVA-1.5-7B shapes. A step is what
``train_stage`` does per optimizer step (forward and backward of the batch, clip, AdamW, zero_grad) on
the tower's output tokens computed once, as ``train_stage`` does. The variants run interleaved, one
run of each per round; a figure is real (unpadded) tokens over the median seconds per step. On a
shared machine only the ratios mean much.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mmcit, installed or not

from mmcit.data.sample import Sample  # noqa: E402
from mmcit.methods.base import MethodConfig, build_method  # noqa: E402
from mmcit.models.wrapper import MMModel  # noqa: E402
from mmcit.training.config import TrainConfig  # noqa: E402
from mmcit.training.loop import StageInputs, _accumulate  # noqa: E402
from mmcit.training.optim import make_optimizer  # noqa: E402

WORDS = ("red green blue cat dog house tree what where which colour shape left right answer question "
         "image picture object small large count how many is there a the of on in").split()
#: train.* changes of each variant.
VARIANTS = {
    "default": {},
    "packing": {"packing": True},
    "loss=answer": {"loss": "answer"},
    "loss=fused": {"loss": "fused"},
    "packing + loss=fused": {"packing": True, "loss": "fused"},
}


def coin_like_samples(folder: Path, n: int, image_size: int, scale: float = 1.0, seed: int = 0) -> list[Sample]:
    """Samples whose text lengths mix as CoIN's tasks do: mostly short questions with one-word
    answers (VQAv2, GQA, TextVQA, VizWiz, ImageNet), some with a long context (ScienceQA), some
    long answers (captions, grounding boxes, OCR-VQA titles). ``scale`` stretches every length."""
    from PIL import Image

    rng = random.Random(seed)
    out = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.new("RGB", (image_size, image_size), tuple(rng.randrange(256) for _ in range(3))).save(path)
        kind = rng.random()
        question = rng.randrange(5, 25) if kind < 0.7 else rng.randrange(60, 200)
        answer = rng.randrange(1, 4) if rng.random() < 0.8 else rng.randrange(10, 40)
        words = lambda k: " ".join(rng.choice(WORDS) for _ in range(max(1, int(k * scale))))  # noqa: E731
        out.append(Sample(task="bench", id=str(i), image=path, turns=[(words(question), words(answer))]))
    return out


def step_rates(model: MMModel, features: list[dict], via_tokens: bool, batch_size: int, steps: int, rounds: int,
               variants: dict[str, dict], sync: Callable[[], None] = lambda: None,
               warmup: int | None = None) -> dict[str, float]:
    """Real tokens per second of each variant's training step (median over interleaved rounds)."""
    method = build_method(MethodConfig(type="lora_ft"))
    pad = model.tokenizer.pad_token_id
    params = [p for _, p in model.trainable_named_parameters()]
    model.train()
    base = TrainConfig(batch_size=batch_size)
    optimizers = {name: make_optimizer(model, base) for name in variants}
    batches = [features[k:k + batch_size] for k in range(0, len(features) - batch_size + 1, batch_size)]

    def run(name: str, n: int = steps) -> float:
        cfg, opt = replace(base, **variants[name]), optimizers[name]
        times = []
        for s in range(n):
            rows = batches[s % len(batches)]
            sync()
            t0 = time.perf_counter()
            _accumulate(model, method, rows, pad, None, via_tokens, cfg)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    tokens = statistics.mean(sum(len(f["input_ids"]) for f in b) for b in batches)
    for name in variants:  # warm-up
        run(name, warmup or steps)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name in variants:
            seconds[name].append(run(name))
    return {name: tokens / statistics.median(v) for name, v in seconds.items()}


def padding_share(features: list[dict], batch_size: int) -> float:
    """Share of a padded batch's positions that are padding, over the benchmark's batches."""
    real = padded = 0
    for k in range(0, len(features) - batch_size + 1, batch_size):
        lengths = [len(f["input_ids"]) for f in features[k:k + batch_size]]
        real += sum(lengths)
        padded += max(lengths) * len(lengths)
    return 1 - real / padded


def report(rates: dict[str, float]) -> None:
    """The table of tokens/s and the ratio to the default step."""
    print(f"{'step':24s} {'tokens/s':>10s} {'vs default':>10s}")
    for name, r in rates.items():
        print(f"{name:24s} {r:10.0f} {r / rates['default']:9.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="8 samples, batch 4, 2 steps, 1 round")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.samples, args.batch, args.steps, args.rounds = 8, 4, 2, 1
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_eval import tiny_model  # the same model as the evaluation benchmark

    model = tiny_model()
    samples = coin_like_samples(Path(tempfile.mkdtemp()), args.samples, 64)
    inputs = StageInputs(model, samples, TrainConfig())
    features = [inputs[i] for i in range(len(samples))]
    rates = step_rates(model, features, inputs.via_tokens, args.batch, args.steps, args.rounds, VARIANTS)
    lengths = sorted(len(f["input_ids"]) for f in features)
    print(f"CPU, {torch.get_num_threads()} thread(s), the demo's tiny model shapes; batch {args.batch}, sample "
          f"lengths {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), padding "
          f"{100 * padding_share(features, args.batch):.0f}% of a padded batch; median of {args.rounds} rounds")
    report(rates)


if __name__ == "__main__":
    main()
