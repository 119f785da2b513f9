"""Can the tiny model still learn from its prompt? A diagnostic for the synthetic benchmark.

The probe task is "Say <word>.", followed by CoIN's short-answer instruction, answered with the
word (a colour or shape name, drawn at random: the image is irrelevant): copying one word from the
prompt. It is trained for ``--steps`` steps and scored on held-out samples, from two starting points:

- the demo's caption-pretrained tiny base (configs/demo, loaded from the cache or built), and
- the same model with random language-model and projector weights (``model.pretrain.enabled=false``),

on two kinds of image: the base's pretraining scenes (all eight scene kinds) and the GQA-like
scenes (coloured shapes, whose colour and shape words are what the base learnt to say), each
with full fine-tuning (language model, output layer and projector) and with the continual stage's
LoRA + projector. Prints one held-out accuracy per (start, images, training). Generation drops
special tokens, so an answer followed only by them counts as exact.

    python benchmarks/prompt_following.py [--steps 150] [--train 400] [--test 60] [key=value ...]

Extra ``key=value`` arguments override configs/demo/lora_ft.yaml (for example a different seed).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


SUFFIX = "Answer the question using a single word or phrase."  # CoIN's short-answer instruction


def _samples(images, n_train: int, n_test: int, seed: int):
    from data_recipes.synthetic.vocab import COLOUR_NAMES, SHAPES
    from mmcit.data.sample import Sample

    if len(images) < n_train + n_test:
        raise SystemExit(f"only {len(images)} images; ask for fewer samples")
    rng = random.Random(seed)
    words = COLOUR_NAMES + SHAPES
    out = []
    for i, image in enumerate(images[: n_train + n_test]):
        word = rng.choice(words)
        out.append(Sample(task="Probe", id=f"probe_{i}", image=image, turns=[(f"Say {word}.\n{SUFFIX}", word)]))
    return out[:n_train], out[n_train:]


def _train_and_score(model, train, test, mode: str, steps: int, lr: float, seed: int) -> tuple[float, float]:
    import torch

    from mmcit.data.collate import collate
    from mmcit.evaluation.generate import generate_answers
    from mmcit.models.tower_cache import cached_tower_tokens, with_image_tokens

    base = model.peft.get_base_model()
    if mode == "full":  # the whole language model and its output layer as well as the projector
        for name, p in base.named_parameters():
            if "language_model" in name or "lm_head" in name:
                p.requires_grad_(True)
    params = [p for p in model.peft.parameters() if p.requires_grad]
    encoder = model.encoder()
    features = [encoder.encode_train(s) for s in train]
    tokens = cached_tower_tokens(base, [f["pixel_values"] for f in features], batch_size=1)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rng = random.Random(seed)
    pad = model.tokenizer.pad_token_id
    model.train()
    loss = float("nan")
    for _ in range(steps):
        idx = rng.sample(range(len(features)), min(16, len(features)))
        batch = collate([features[i] for i in idx], pad, "right")
        out = model(**with_image_tokens(base, batch, tokens[idx])) if tokens is not None else model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.item()
    model.eval()
    preds = generate_answers(model, test, [None] * len(test), 64, 8, progress=False)
    acc = 100.0 * sum(p.strip() == s.answer for p, s in zip(preds, test)) / len(test)
    return acc, loss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--lr-full", type=float, default=1e-3, help="learning rate of full fine-tuning")
    parser.add_argument("--lr-lora", type=float, default=2e-3, help="learning rate of LoRA (the demo's)")
    parser.add_argument("--threads", type=int, default=1)
    args, overrides = parser.parse_known_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from mmcit.config import load_config
    from mmcit.data.stream import load_data
    from mmcit.data.config import default_cache_dir
    from mmcit.models.factory import build_model

    rows = []
    for start, extra in (("caption-pretrained base", []), ("random LM", ["model.pretrain.enabled=false"])):
        cfg = load_config(REPO / "configs" / "demo" / "lora_ft.yaml", [*overrides, *extra])
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
        data = load_data(cfg.data, cache, log=lambda m: None)
        gqa = next(t for t in data.tasks if t.name == "GQA")
        sources = {"pretraining scenes": [c.image for c in data.captions],
                   "GQA scenes": [s.image for s in gqa.train + gqa.test]}
        for images, mode, lr in ((k, m, lr) for k in sources
                                 for m, lr in (("full", args.lr_full), ("lora", args.lr_lora))):
            train, test = _samples(sources[images], args.train, args.test, cfg.seed)
            model = build_model(cfg, data, cache, log=lambda m: None, progress=False)
            t0 = time.perf_counter()
            acc, loss = _train_and_score(model, train, test, mode, args.steps, lr, cfg.seed)
            rows.append((start, images, mode, acc, loss, time.perf_counter() - t0))
            print(f"{start:>24} | {images:>18} | {mode:>4} | held-out accuracy {acc:5.1f}% | last loss {loss:.3f} | "
                  f"{rows[-1][5]:.0f}s", flush=True)
    print(f"\n'Say <word>.' probe, {args.steps} steps of batch 16, {args.train} training / {args.test} "
          "held-out samples:")
    print("| start | images | training | held-out accuracy | last loss |\n|---|---|---|---|---|")
    for start, images, mode, acc, loss, _ in rows:
        print(f"| {start} | {images} | {mode} | {acc:.1f} | {loss:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
