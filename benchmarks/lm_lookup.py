"""Can the tiny language model learn in-context lookup from text? A diagnostic for the synthetic benchmark.

GQA-like questions whose scene is given as text, "Scene: red star, blue circle.\\nWhat color is
the star?" -> "red" (or "What shape is the blue object?" -> "circle"), 2-3 objects with distinct
colours and shapes in random order. A causal LM of the tiny model's shape (``--layers``,
``--hidden``, 4 heads, MLP 3 x hidden), random weights, is trained on freshly drawn samples at
every step (so it cannot memorise), and every ``--eval-every`` steps scored on 300 held-out
samples by its first answer token. Chance is about 42% (the answer is one of the scene's 2-3
words of the asked kind). The tokenizer is trained on the samples' text, as the demo's is on the
benchmark's.

    python benchmarks/lm_lookup.py [--steps 4000] [--lr 1e-3] [--layers 3] [--hidden 128]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def sample(rng: random.Random) -> tuple[str, str]:
    from data_recipes.synthetic.vocab import COLOUR_NAMES, SHAPES

    n = rng.choice([2, 3])
    shapes, colours = rng.sample(SHAPES, n), rng.sample(COLOUR_NAMES, n)
    k = rng.randrange(n)
    scene = ", ".join(f"{c} {s}" for c, s in zip(colours, shapes))
    if rng.random() < 0.5:
        question, answer = f"What color is the {shapes[k]}?", colours[k]
    else:
        question, answer = f"What shape is the {colours[k]} object?", shapes[k]
    return f"USER: Scene: {scene}.\n{question} ASSISTANT:", f" {answer}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmcit.models.tiny_llava.tokenizer import train_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    corpus_rng = random.Random(args.seed + 1)
    tok = train_tokenizer(["".join(sample(corpus_rng)) for _ in range(5000)], vocab_size=1024)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(config)

    def encode(batch):
        ids, labels = [], []
        for prompt, answer in batch:
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            a = tok(answer, add_special_tokens=False)["input_ids"]
            ids.append([tok.bos_token_id, *p, *a])
            labels.append([-100] * (1 + len(p)) + a)
        longest = max(map(len, ids))
        mask = [[1] * len(x) + [0] * (longest - len(x)) for x in ids]
        ids = [x + [tok.pad_token_id] * (longest - len(x)) for x in ids]
        labels = [x + [-100] * (longest - len(x)) for x in labels]
        return torch.tensor(ids), torch.tensor(mask), torch.tensor(labels)

    test_rng = random.Random(args.seed + 2)
    test = [sample(test_rng) for _ in range(300)]

    @torch.no_grad()
    def held_out_accuracy() -> float:
        model.eval()
        right = 0
        for k in range(0, len(test), 100):
            ids, mask, labels = encode(test[k:k + 100])
            logits = model(input_ids=ids, attention_mask=mask).logits
            for r in range(ids.shape[0]):
                pos = int((labels[r] != -100).nonzero()[0])
                right += int(logits[r, pos - 1].argmax()) == int(labels[r, pos])
        model.train()
        return 100.0 * right / len(test)

    rng = random.Random(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    start = time.perf_counter()
    print(f"held-out first-token accuracy before training: {held_out_accuracy():.1f}%", flush=True)
    for step in range(1, args.steps + 1):
        ids, mask, labels = encode([sample(rng) for _ in range(args.batch_size)])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % args.eval_every == 0 or step == args.steps:
            print(f"step {step}: loss {loss.item():.3f}, held-out accuracy {held_out_accuracy():.1f}% "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
