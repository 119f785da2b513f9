"""Training one stage of a stream: the inner loop of DESIGN.md, with the method's hooks."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from mmcit.config import TrainConfig
from mmcit.data.collate import IGNORE_INDEX, collate
from mmcit.data.sample import Sample
from mmcit.methods.base import Method
from mmcit.model import MMModel
from mmcit.vision_cache import cacheable, cached_tower_tokens, tower_tokens, with_image_tokens


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the task is stopped before the weights are damaged further."""


@dataclass
class TrainStats:
    steps: int
    samples: int
    first_loss: float
    last_loss: float
    seconds: float


@dataclass
class TrainState:
    """Everything :func:`train_stage` needs to continue a stage exactly where it stopped.

    Taken after optimizer step ``step`` (1-based count of steps done) by the ``on_checkpoint``
    callback, and given back as ``resume``. The adapter weights and the method's state are not in
    here: the runner saves and restores those itself (mmcit/checkpoint.py).
    """

    step: int  # optimizer steps done in this stage
    total: int  # steps of the whole stage (a resume with another total would not be the same run)
    order: list[int]  # sample indices still to draw in the current epoch permutation
    rng: list  # random.Random(seed).getstate() of the shuffling RNG, as JSON-friendly lists
    first_loss: float
    last_loss: float
    seconds: float  # training time of this stage so far
    optimizer: dict[str, Any]  # optimizer.state_dict()
    scheduler: dict[str, Any]  # scheduler.state_dict() (LambdaLR: closures stored as None)
    global_rng: dict[str, Any] | None = None  # checkpoint.capture_rng(); restored just before the loop


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
    resume: TrainState | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
) -> TrainStats:
    """Train one stage; with ``cfg.checkpoint_every`` set, ``on_checkpoint`` gets a
    :class:`TrainState` every that many optimizer steps, and ``resume`` continues from one.

    A resumed stage draws the same batches, learning rates and random numbers as the uninterrupted
    stage would have, so its weights are bit-identical (given the caller restored the weights and
    the method state of the same moment).
    """
    import time

    from mmcit import distributed as dist

    start = time.perf_counter()
    world = dist.world_size()
    if cfg.batch_size % world:
        raise ValueError(f"{desc}: batch size {cfg.batch_size} does not split over {world} processes")
    encoder = model.encoder(cfg.max_length)
    # Small tasks are encoded once (images decoded, text tokenised); a large one (real CoIN) is
    # encoded batch by batch, so its images are read lazily and never all held in memory.
    cached = len(samples) <= cfg.encode_once_limit
    features = [encoder.encode_train(s) for s in samples] if cached else None

    # A frozen tower's output per image never changes during the stage: where the model allows,
    # steps go through the tower's output tokens (vision_cache.py), computed once here for a stage
    # encoded once (when they fit in memory), else batch by batch. Both run the tower one image at
    # a time: a CPU convolution's result depends on the batch it is in (by ~1e-5), and a stage
    # must train identically however it is encoded.
    base = model.peft.get_base_model()
    via_tokens = world == 1 and cacheable(base)
    if via_tokens and features is not None:
        with model._autocast():
            tokens = cached_tower_tokens(base, [f["pixel_values"] for f in features], batch_size=1)
        if tokens is not None:
            features = [{**f, "image_tokens": t} for f, t in zip(features, tokens)]

    def feature(i: int) -> dict:
        return features[i] if features is not None else encoder.encode_train(samples[i])

    total = num_steps(len(samples), cfg)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, cfg))
    params = [p for _, p in model.trainable_named_parameters()]
    rng = random.Random(seed)
    order: list[int] = []
    pad = model.tokenizer.pad_token_id
    model.train()
    first = last = float("nan")
    start_step, seconds_before = 0, 0.0
    if resume is not None:
        if resume.total != total:
            raise ValueError(f"{desc}: the step checkpoint was taken in a stage of {resume.total} steps, "
                             f"this stage has {total}")
        # Optimizer before scheduler: the scheduler's state refers to the groups' learning rates.
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
        order = list(resume.order)
        version, internal, gauss = resume.rng
        rng.setstate((version, tuple(internal), gauss))
        first, last, seconds_before, start_step = resume.first_loss, resume.last_loss, resume.seconds, resume.step
        if resume.global_rng is not None:  # last: nothing above may draw from it afterwards
            from mmcit.checkpoint import restore_rng

            restore_rng(resume.global_rng)
    every = cfg.checkpoint_every if on_checkpoint is not None else None
    bar = tqdm(range(start_step, total), desc=desc, disable=not progress, leave=False, dynamic_ncols=True,
               initial=start_step, total=total)
    for step in bar:
        if len(order) < cfg.batch_size:  # epoch boundary: a fresh permutation
            perm = list(range(len(samples)))
            rng.shuffle(perm)
            order += perm
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        value = _accumulate(model, method, [feature(i) for i in dist.shard(idx)], pad, cfg.micro_batch_size,
                            via_tokens)
        if not math.isfinite(value):
            raise NonFiniteLoss(f"{desc}: loss is {value} at step {step + 1}/{total}; stopping this task")
        dist.sum_gradients(params)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        method.after_optimizer_step(model)  # gradients are still present here
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        first = value if step == 0 else first
        last = value
        bar.set_postfix(loss=f"{value:.3f}")
        if every and (step + 1) % every == 0:
            version, internal, gauss = rng.getstate()
            on_checkpoint(TrainState(
                step=step + 1, total=total, order=list(order), rng=[version, list(internal), gauss],
                first_loss=first, last_loss=last, seconds=seconds_before + time.perf_counter() - start,
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict()))
    bar.close()
    return TrainStats(total, len(samples), first, last, seconds_before + time.perf_counter() - start)


def _accumulate(model: MMModel, method: Method, local: list[dict], pad: int, micro: int | None,
                via_tokens: bool = False) -> float:
    """Forward and backward this process's rows of the global batch, in micro-batches; returns the
    loss of the whole global batch (the same value on every process).

    Each micro-batch's mean token loss is weighted by its share of the global batch's label tokens,
    so the summed gradients equal those of one forward over the global batch whatever the
    micro-batch size and the number of processes. (One micro-batch on one process: weight 1.)
    """
    from mmcit import distributed as dist

    micro = micro or len(local)
    batches = [collate(local[k: k + micro], pad, "right") for k in range(0, len(local), micro)]
    counts = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches]
    single = len(batches) == 1 and dist.world_size() == 1
    if not single:
        total_tokens = dist.all_reduce_sum(torch.tensor(float(sum(counts)), device=model.device)).item()
    value = None
    base = model.peft.get_base_model()
    for k, (batch, count) in enumerate(zip(batches, counts)):
        rows = local[k * micro: (k + 1) * micro]
        if via_tokens:  # the tower's output tokens: computed once per stage, or here
            # Under the model's autocast, as its own forward runs the tower and projector: a bf16
            # model's float32 projector would otherwise meet the tower's bf16 tokens.
            with model._autocast():
                tokens = (torch.stack([f["image_tokens"] for f in rows]) if "image_tokens" in rows[0]
                          else tower_tokens(base, batch["pixel_values"], batch_size=1))
                inputs = with_image_tokens(base, batch, tokens)
            outputs = model(**inputs)
        else:
            outputs = model(**batch)
        loss = outputs.loss
        extra = method.extra_loss(model, batch, outputs)
        if extra is not None:
            loss = loss + extra
        if not single:
            loss = loss * (count / total_tokens)
        loss.backward()
        value = loss.detach().float() if value is None else value + loss.detach().float()
    # One sync per step: the progress bar and the NaN guard need the value, on every process alike.
    return float(dist.all_reduce_sum(value).item()) if not single else float(value.item())
