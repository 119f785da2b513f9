"""Training one stage of a stream: the inner loop, with the method's hooks.

    for each optimizer step:
        draw the global batch (a seeded permutation per epoch), take this process's share
        (with ``mix``: its last rows drawn the same way from the mixed-in samples, e.g. replay)
        forward + loss (+ method.extra_loss) + backward, in micro-batches weighted by label tokens
        sum the gradients across processes, clip, optimizer.step()
        method.after_optimizer_step(model)      # gradients are still present here
        scheduler.step(), zero_grad
        every ``checkpoint_every`` steps: hand a TrainState to the caller

A resumed stage (``resume=TrainState``) draws the same batches, learning rates and random numbers
as the uninterrupted stage would have, so its weights are bit-identical (given the caller restored
the weights and the method state of the same moment).
"""
from __future__ import annotations

import math
import random
import time
from typing import Any, Callable

import torch

from mmcit.data.collate import IGNORE_INDEX, pack
from mmcit.data.sample import Sample
from mmcit.errors import NonFiniteLoss
from mmcit.methods.base import Method
from mmcit.models.tower_cache import attach_cached_tokens, batch_tower_tokens, cacheable, with_image_tokens
from mmcit.models.wrapper import MMModel
from mmcit.progress import Progress
from mmcit.training import distributed as dist
from mmcit.training.config import TrainConfig
from mmcit.training.loss import compute_loss
from mmcit.training.optim import lr_lambda, make_optimizer, num_steps
from mmcit.training.rng import restore_rng
from mmcit.training.state import TrainState, TrainStats

__all__ = ["NonFiniteLoss", "StageInputs", "forward", "mixed_rows", "train_stage"]


class StageInputs:
    """The encoded training samples of a stage, with the frozen tower's output where it can be cached.

    Small stages are encoded once (images decoded, text tokenised); a large one (real CoIN) is
    encoded batch by batch, so its images are read lazily and never all held in memory. A frozen
    tower's output per image never changes during the stage: where the model allows, steps go
    through the tower's output tokens (``mmcit.models.tower_cache``), computed once here for a stage
    encoded once (when they fit in memory), else batch by batch. Both run the tower one image at a
    time: a CPU convolution's result depends on the batch it is in (by ~1e-5), and a stage must
    train identically however it is encoded.
    """

    def __init__(self, model: MMModel, samples: list[Sample], cfg: TrainConfig) -> None:
        self.samples = samples
        self.encoder = model.encoder(cfg.max_length)
        self.features = (_encode_all(self.encoder, samples) if len(samples) <= cfg.encode_once_limit else None)
        base = model.peft.get_base_model()
        self.via_tokens = dist.world_size() == 1 and cacheable(base)
        # Samples without an image (text-only) go through the model's own forward, batch by batch.
        if self.via_tokens and self.features is not None and all(_has_image(f) for f in self.features):
            with model.autocast():
                store = getattr(model, "token_store", None) if cfg.tower_token_cache else None
                self.features = attach_cached_tokens(base, self.features, store)

    def __getitem__(self, i: int) -> dict:
        return self.features[i] if self.features is not None else self.encoder.encode_train(self.samples[i])


def _encode_all(encoder, samples: list[Sample]) -> list[dict]:
    """``encode_train`` of every sample, batched where the encoder can (``Encoder.encode_train_many``)."""
    many = getattr(encoder, "encode_train_many", None)
    return many(samples) if many is not None else [encoder.encode_train(s) for s in samples]


def _has_image(feature: dict) -> bool:
    return feature.get("pixel_values") is not None


class _Cursor:
    """Where a stage stands: steps done, the data order left in this epoch, the shuffling RNG, the
    losses and the training seconds before this process took over."""

    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.step = 0
        self.first = self.last = float("nan")
        self.seconds_before = 0.0

    def restore(self, resume: TrainState) -> None:
        self.order = list(resume.order)
        version, internal, gauss = resume.rng
        self.rng.setstate((version, tuple(internal), gauss))
        self.first, self.last = resume.first_loss, resume.last_loss
        self.seconds_before, self.step = resume.seconds, resume.step

    def order_and_rng(self) -> dict:
        """The data order left and the shuffling RNG's state, JSON-friendly."""
        version, internal, gauss = self.rng.getstate()
        return {"order": list(self.order), "rng": [version, list(internal), gauss]}

    def restore_order(self, saved: dict) -> None:
        """Inverse of :meth:`order_and_rng`."""
        self.order = list(saved["order"])
        version, internal, gauss = saved["rng"]
        self.rng.setstate((version, tuple(internal), gauss))

    def next_batch(self, n_samples: int, batch_size: int) -> list[int]:
        if len(self.order) < batch_size:  # epoch boundary: a fresh permutation
            perm = list(range(n_samples))
            self.rng.shuffle(perm)
            self.order += perm
        idx, self.order = self.order[:batch_size], self.order[batch_size:]
        return idx

    def record(self, value: float) -> None:
        self.first = value if self.step == 0 else self.first
        self.last = value
        self.step += 1


def mixed_rows(share: float, batch_size: int) -> int:
    """Rows of a global batch that mixed-in samples fill: ``share * batch_size`` rounded half up,
    at least 1 for a positive share and at most ``batch_size - 1`` (a batch keeps a row of the
    stage's own samples)."""
    if share <= 0 or batch_size < 2:
        return 0
    return min(batch_size - 1, max(1, math.floor(share * batch_size + 0.5)))


def train_stage(model: MMModel, method: Method, samples: list[Sample], cfg: TrainConfig, *, seed: int,
                desc: str = "train", progress: bool = True, resume: TrainState | None = None,
                on_checkpoint: Callable[[TrainState], None] | None = None,
                mix: tuple[list[Sample], float] | None = None,
                on_step: Callable[[int, float, float], None] | None = None) -> TrainStats:
    """Train one stage (see the module docstring); with ``cfg.checkpoint_every`` set,
    ``on_checkpoint`` gets a :class:`TrainState` every that many optimizer steps, and ``resume``
    continues from one. ``mix = (extra samples, share)`` fills ``mixed_rows(share, batch)`` rows
    of every global batch with extra samples, drawn by a second seeded permutation; the number of
    steps is the stage's own, so a step costs what it costs without the mix. ``on_step(step, loss,
    lr)`` is called after every optimizer step (a tracker)."""
    start = time.perf_counter()
    if cfg.batch_size % dist.world_size():
        raise ValueError(f"{desc}: batch size {cfg.batch_size} does not split over {dist.world_size()} processes")
    extra, share = mix if mix is not None else ([], 0.0)
    k = mixed_rows(share, cfg.batch_size) if extra else 0
    inputs = StageInputs(model, samples + extra if k else samples, cfg)
    total = num_steps(len(samples), cfg)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, cfg))
    params = [p for _, p in model.trainable_named_parameters()]
    cursor = _Cursor(seed)
    mixer = _Cursor(f"mix-{seed}") if k else None  # its own stream: the stage's draws stay as without
    model.train()
    if resume is not None:
        _resume(resume, total, desc, optimizer, scheduler, cursor, mixer)
    every = cfg.checkpoint_every if on_checkpoint is not None else None
    pad = model.tokenizer.pad_token_id
    bar = Progress(total, desc, enabled=progress, initial=cursor.step)
    for step in range(cursor.step, total):
        idx = cursor.next_batch(len(samples), cfg.batch_size - k)
        if mixer is not None:
            idx += [len(samples) + j for j in mixer.next_batch(len(extra), k)]
        value = _accumulate(model, method, [inputs[i] for i in dist.shard(idx)], pad, cfg.micro_batch_size,
                            inputs.via_tokens, cfg)
        if not math.isfinite(value):
            raise NonFiniteLoss(f"{desc}: loss is {value} at step {step + 1}/{total}; stopping this task")
        if dist.world_size() > 1:  # text-only rows leave the projector without a gradient; the sum needs every rank's
            for p in params:
                p.grad = torch.zeros_like(p) if p.grad is None else p.grad
        dist.sum_gradients(params)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        method.after_optimizer_step(model)  # gradients are still present here
        lr = optimizer.param_groups[0]["lr"]  # this step's (the scheduler moves it on next)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        cursor.record(value)
        bar.update(1, loss=value)
        if on_step is not None:
            on_step(cursor.step, value, lr)
        if every and cursor.step % every == 0:
            on_checkpoint(_state(cursor, mixer, total, time.perf_counter() - start, optimizer, scheduler))
    bar.close()
    return TrainStats(total, len(samples), cursor.first, cursor.last,
                      cursor.seconds_before + time.perf_counter() - start)


def _resume(resume: TrainState, total: int, desc: str, optimizer, scheduler, cursor: _Cursor,
            mixer: _Cursor | None) -> None:
    """Put the optimizer, scheduler, data order and random state of ``resume`` back."""
    if resume.total != total:
        raise ValueError(f"{desc}: the step checkpoint was taken in a stage of {resume.total} steps, "
                         f"this stage has {total}")
    # Optimizer before scheduler: the scheduler's state refers to the groups' learning rates.
    optimizer.load_state_dict(resume.optimizer)
    scheduler.load_state_dict(resume.scheduler)
    cursor.restore(resume)
    if mixer is not None and resume.mix is not None:
        mixer.restore_order(resume.mix)
    if resume.global_rng is not None:  # last: nothing above may draw from it afterwards
        restore_rng(resume.global_rng)


def _state(cursor: _Cursor, mixer: _Cursor | None, total: int, seconds: float, optimizer, scheduler) -> TrainState:
    """The TrainState of this moment (``seconds``: this process's training time of the stage)."""
    saved = cursor.order_and_rng()
    return TrainState(step=cursor.step, total=total, order=saved["order"], rng=saved["rng"],
                      first_loss=cursor.first, last_loss=cursor.last, seconds=cursor.seconds_before + seconds,
                      optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                      mix=mixer.order_and_rng() if mixer is not None else None)


def _accumulate(model: MMModel, method: Method, local: list[dict], pad: int, micro: int | None,
                via_tokens: bool = False, cfg: TrainConfig | None = None) -> float:
    """Forward and backward this process's rows of the global batch, in micro-batches; returns the
    loss of the whole global batch (the same value on every process).

    Each micro-batch's mean token loss is weighted by its share of the global batch's label tokens,
    so the summed gradients equal those of one forward over the global batch whatever the
    micro-batch size and the number of processes. (One micro-batch on one process: weight 1.)
    """
    micro = micro or len(local)
    chunks = [local[k: k + micro] for k in range(0, len(local), micro)]
    batches, chunks = _batches(model, chunks, pad, cfg)
    counts = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches]
    single = len(batches) == 1 and dist.world_size() == 1
    if not single:
        total_tokens = dist.all_reduce_sum(torch.tensor(float(sum(counts)), device=model.device)).item()
    value = None
    for batch, count, rows in zip(batches, counts, chunks):
        outputs, batch = forward(model, rows, batch, via_tokens, cfg.loss if cfg else "model")
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


def forward(model: MMModel, rows: list[dict], batch: dict, via_tokens: bool,
            loss: str = "model") -> tuple[Any, dict]:
    """The model's outputs on ``batch``, the collated encoded ``rows``; returns ``(outputs, batch)``.

    With ``via_tokens`` the frozen tower's output tokens are used (cached in the rows, or computed
    here) and the batch comes back with them as ``image_tokens``, for a method's second forward.
    ``loss`` is ``train.loss`` (mmcit.training.loss.compute_loss).
    """
    if not (via_tokens and all(_has_image(f) for f in rows)):  # text-only rows: the model's own forward
        return compute_loss(model, batch, loss), batch
    base = model.peft.get_base_model()
    # Under the model's autocast, as its own forward runs the tower and projector: a bf16
    # model's float32 projector would otherwise meet the tower's bf16 tokens.
    with model.autocast():
        tokens = batch_tower_tokens(base, rows, batch)  # cached, or computed here
        inputs = with_image_tokens(base, batch, tokens)
    return compute_loss(model, inputs, loss), {**batch, "image_tokens": tokens}


def _batches(model: MMModel, chunks: list[list[dict]], pad: int,
             cfg: TrainConfig | None) -> tuple[list[dict], list[list[dict]]]:
    """Each micro-batch's padded batch, or its packed one with its rows in packing order."""
    if cfg is None or not cfg.packing:
        return [model.collate(c, "right") for c in chunks], chunks
    packed = [pack(c, pad, cfg.pack_length) for c in chunks]
    return [b for b, _ in packed], [[c[i] for i in order] for c, (_, order) in zip(chunks, packed)]
