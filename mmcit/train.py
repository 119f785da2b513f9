"""Training one stage of a stream: the inner loop of DESIGN.md, with the method's hooks."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from mmcit.config import TrainConfig
from mmcit.data.collate import Encoder, collate
from mmcit.data.sample import Sample
from mmcit.methods.base import Method
from mmcit.model import MMModel


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the task is stopped before the weights are damaged further."""


@dataclass
class TrainStats:
    steps: int
    samples: int
    first_loss: float
    last_loss: float
    seconds: float


def make_optimizer(model: MMModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the projector in its own group (LLaVA trains it with a smaller learning rate)."""
    named = model.trainable_named_parameters()
    projector = model.projector_parameter_names()
    groups = [
        {"params": [p for n, p in named if n not in projector], "lr": cfg.lr},
        {"params": [p for n, p in named if n in projector], "lr": cfg.projector_lr},
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def lr_lambda(total: int, cfg: TrainConfig):
    warmup = int(math.ceil(cfg.warmup_ratio * total))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def num_steps(n_samples: int, cfg: TrainConfig) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(n_samples * cfg.epochs / cfg.batch_size))


def train_stage(
    model: MMModel,
    method: Method,
    samples: list[Sample],
    cfg: TrainConfig,
    *,
    seed: int,
    desc: str = "train",
    progress: bool = True,
) -> TrainStats:
    import time

    start = time.perf_counter()
    encoder = Encoder(model.processor, max_length=cfg.max_length)
    features = [encoder.encode_train(s) for s in samples]
    total = num_steps(len(features), cfg)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, cfg))
    params = [p for _, p in model.trainable_named_parameters()]
    rng = random.Random(seed)
    order: list[int] = []
    pad = model.tokenizer.pad_token_id
    model.train()
    first = last = float("nan")
    bar = tqdm(range(total), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        if len(order) < cfg.batch_size:  # epoch boundary: a fresh permutation
            perm = list(range(len(features)))
            rng.shuffle(perm)
            order += perm
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = collate([features[i] for i in idx], pad, "right")
        outputs = model(**batch)
        loss = outputs.loss
        extra = method.extra_loss(model, batch, outputs)
        if extra is not None:
            loss = loss + extra
        value = loss.item()  # one sync per step: the progress bar and the NaN guard need it
        if not math.isfinite(value):
            raise NonFiniteLoss(f"{desc}: loss is {value} at step {step + 1}/{total}; stopping this task")
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        method.after_optimizer_step(model)  # gradients are still present here
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        first = value if step == 0 else first
        last = value
        bar.set_postfix(loss=f"{value:.3f}")
    bar.close()
    return TrainStats(total, len(features), first, last, time.perf_counter() - start)
