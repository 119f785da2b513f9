"""The optimizer, learning-rate schedule and step count of a training stage."""
from __future__ import annotations

import math

import torch

from mmcit.models.wrapper import MMModel
from mmcit.training.config import TrainConfig


def make_optimizer(model: MMModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the projector in its own group (LLaVA trains it with a smaller learning rate).

    ``foreach=True`` on every device: PyTorch picks it by itself only on GPUs, and on a CPU the
    per-tensor loop cost about a third more time per step for the same bits (tests/test_perf_train.py).
    """
    named = model.trainable_named_parameters()
    projector = model.projector_parameter_names()
    groups = [
        {"params": [p for n, p in named if n not in projector], "lr": cfg.lr},
        {"params": [p for n, p in named if n in projector], "lr": cfg.projector_lr},
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, foreach=True)


def lr_lambda(total: int, cfg: TrainConfig):
    """The learning-rate factor of each step: linear warmup, then cosine decay (or constant)."""
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
    """Optimizer steps of a stage: ``max_steps``, else ``epochs`` over the samples at the batch size."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(n_samples * cfg.epochs / cfg.batch_size))
