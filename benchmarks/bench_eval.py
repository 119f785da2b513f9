"""Evaluation speed, side by side in one run on one model (tower included): mmcit's evaluation with
routed adapters (``generate_answers``, default and with each speed option), a plain transformers +
peft batched loop, and the reference batch-1 loop.

    python benchmarks/bench_eval.py              # CPU, the demo's tiny model shapes (random weights)
    python benchmarks/bench_eval.py --quick      # fewer samples and rounds (the test runs this)

``benchmarks/gpu_check.py`` calls the same functions on LLaVA-1.5-7B shapes. Every loop reads the
images from disk and encodes the prompts itself, and generates exactly ``--new-tokens`` tokens
(``min_new_tokens``), so all do the same work. The loops run interleaved, one of each per round,
and each figure is the median over the rounds: on a shared machine only the ratios mean much.
mmcit routes the samples to two adapters (half each); the plain loops use one (peft's active one).
mmcit keeps each test sample's encoded prompt (and with ``eval.image_cache`` each image's tower
output) for the next evaluation of it, as every later stage of a stream evaluates a task again: the
variants time such a later evaluation, except "first evaluation", which starts with nothing kept.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mmcit, installed or not

from mmcit.data.sample import Sample  # noqa: E402
from mmcit.evaluation.config import EvalConfig  # noqa: E402
from mmcit.evaluation.generate import generate_answers  # noqa: E402
from mmcit.models.wrapper import MMModel  # noqa: E402

WORDS = ("red green blue cat dog house tree what where which colour shape left right answer question "
         "image picture object small large count how many is there a the of on in").split()
#: mmcit's evaluation variants: name -> eval options.
VARIANTS = {
    "mmcit default, first evaluation": {"first": True},
    "mmcit default": {},
    "mmcit merge_adapters": {"merge_adapters": True},
    "mmcit merge + image_cache": {"merge_adapters": True, "image_cache": True},
}


def tiny_model(seed: int = 0) -> MMModel:
    """The demo's tiny LLaVA at its default shapes (EfficientNet tower), random LM weights, two
    LoRA adapters (r 16) that differ."""
    from mmcit.models.tiny_llava.build import build_tiny_llava
    from mmcit.models.tiny_llava.config import TinyLlavaConfig
    from mmcit.models.tiny_llava.pretrain import spec_from_config
    from mmcit.models.tiny_llava.tokenizer import train_tokenizer
    from mmcit.models.wrapper import LoraSettings

    tok = train_tokenizer([" ".join(WORDS)] * 20 + ["USER: ASSISTANT:"], vocab_size=1024)
    base, processor = build_tiny_llava(spec_from_config(TinyLlavaConfig()), tok, seed=seed)
    base.model.vision_tower.requires_grad_(False)
    model = MMModel.from_base(base, processor, LoraSettings(r=16, alpha=32))
    second_adapter(model)
    return model


def second_adapter(model: MMModel, name: str = "second") -> None:
    """Add adapter ``name``: a copy of the active one with random LoRA B (both then differ from the base)."""
    first = model.active_adapter
    model.add_adapter(name, copy_from=first)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.peft.named_parameters():
            if "lora_B" in n:
                p.copy_((torch.randn(p.shape, generator=gen) * 1e-3).to(p))
    model.set_adapter(first)


def make_samples(folder: Path, n: int, image_size: int, text_words: int, per_image: int = 2) -> list[Sample]:
    """``n`` questions about ``n / per_image`` random images (CoIN asks several questions per image)."""
    from PIL import Image

    rng = random.Random(0)
    out = []
    for i in range(n):
        path = folder / f"{i // per_image}.png"
        if not path.exists():
            Image.new("RGB", (image_size, image_size), tuple(rng.randrange(256) for _ in range(3))).save(path)
        words = [rng.choice(WORDS) for _ in range(rng.randrange(text_words // 2, text_words + 1))]
        out.append(Sample(task="bench", id=str(i), image=path, turns=[(" ".join(words), "x")]))
    return out


def routed(samples: list[Sample], adapters: tuple[str, str]) -> list[str]:
    """Each sample's adapter: two adapters, alternating (half the samples each, so that grouping by
    adapter makes as many full batches as the plain loop's)."""
    return [adapters[i % 2] for i in range(len(samples))]


def plain_loop(model: MMModel, samples: list[Sample], batch_size: int, new_tokens: int) -> None:
    """A plain transformers + peft loop: the processor on the images and prompt texts, then
    ``generate`` of the peft model with its active adapter, nothing of mmcit's in between."""
    from PIL import Image

    processor, tok = model.processor, model.tokenizer
    tok.padding_side = "left"
    texts = [model.template.pieces(s.turns[:1], tok.bos_token, tok.eos_token)[0][0] for s in samples]
    for k in range(0, len(samples), batch_size):
        rows = range(k, min(k + batch_size, len(samples)))
        images = [Image.open(samples[i].image).convert("RGB") for i in rows]
        batch = processor(images=images, text=[texts[i] for i in rows], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(model.device)
        # Under autocast for a bf16 model: its adapters (projector copies included) are float32.
        with torch.no_grad(), model.autocast():
            model.peft.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                pad_token_id=tok.pad_token_id)


def mmcit_eval(model: MMModel, samples: list[Sample], adapters: list[str], batch_size: int, new_tokens: int,
               options: dict) -> None:
    """mmcit's evaluation of the routed samples with these eval options; with ``first``, as the first
    evaluation of these samples (nothing kept from an earlier one: prompts encoded, tower run)."""
    options = dict(options)
    if options.pop("first", False):
        model.encoded_prompts.clear()
        model.encoded_bytes = 0
        model.image_tokens.clear()
    generate_answers(model, samples, adapters, batch_size, new_tokens, progress=False, options=EvalConfig(**options))


def compare(model: MMModel, samples: list[Sample], batch_size: int, new_tokens: int, rounds: int,
            one_samples: int, variants: dict[str, dict], sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Samples per second of every loop (median over interleaved rounds)."""
    base_cfg = model.peft.get_base_model().generation_config
    base_cfg.min_new_tokens = new_tokens  # every loop generates exactly new_tokens tokens
    adapters = routed(samples, (model.adapters[0], model.adapters[1]))
    loops: dict[str, tuple[Callable[[], None], int]] = {
        name: ((lambda o=o: mmcit_eval(model, samples, adapters, batch_size, new_tokens, o)), len(samples))
        for name, o in variants.items()}
    loops[f"plain batched loop (batch {batch_size})"] = (
        lambda: plain_loop(model, samples, batch_size, new_tokens), len(samples))
    loops["reference batch-1 loop"] = (lambda: plain_loop(model, samples[:one_samples], 1, new_tokens), one_samples)
    for fn, _ in loops.values():  # warm-up: first-call costs (and the image cache's first fill) stay out
        fn()
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, (fn, n) in loops.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            rates[name].append(n / (time.perf_counter() - t0))
    base_cfg.min_new_tokens = None
    return {name: statistics.median(v) for name, v in rates.items()}


def report(rates: dict[str, float], batch_size: int) -> None:
    """The table of rates and the ratios the issue's targets are stated in."""
    plain = rates[f"plain batched loop (batch {batch_size})"]
    one = rates["reference batch-1 loop"]
    print(f"{'loop':36s} {'samples/s':>10s} {'vs plain':>9s} {'vs batch 1':>10s}")
    for name, r in rates.items():
        print(f"{name:36s} {r:10.2f} {r / plain:8.2f}x {r / one:9.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one-samples", type=int, default=8, help="samples of the batch-1 loop")
    ap.add_argument("--quick", action="store_true", help="8 samples, batch 4, 4 tokens, 1 round")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.samples, args.batch, args.new_tokens, args.rounds, args.one_samples = 8, 4, 4, 1, 2
    torch.set_num_threads(args.threads)
    model = tiny_model()
    model.eval()
    samples = make_samples(Path(tempfile.mkdtemp()), args.samples, 64, 24)
    rates = compare(model, samples, args.batch, args.new_tokens, args.rounds, args.one_samples, VARIANTS)
    print(f"CPU, {torch.get_num_threads()} thread(s), the demo's tiny model shapes; {args.samples} samples, "
          f"{args.new_tokens} new tokens, median of {args.rounds} interleaved rounds")
    report(rates, args.batch)


if __name__ == "__main__":
    main()
