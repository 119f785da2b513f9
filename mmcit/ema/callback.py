"""Adaptive EMA for a Hugging Face ``Trainer``, as a callback:

    from mmcit.ema import AdaptiveEMACallback
    trainer.add_callback(AdaptiveEMACallback(scale=2.0, granularity="layer"))
    trainer.train()          # at the end the model holds the EMA weights

``on_optimizer_step`` is the hook: in transformers 5 the Trainer calls it right after
``optimizer.step()`` and before ``model.zero_grad()`` (trainer.py, inner training loop), so the
gradients the step used are still there. With gradient accumulation it fires once per optimizer
step. An optimizer step skipped by the fp16 grad scaler leaves inf/NaN gradients behind, which the
EMA counts as skipped instead of blending.

Distributed: under DDP every rank keeps an identical EMA (gradients are averaged before the step).
Under FSDP2 the parameters are sharded DTensors; the callback notices and builds the EMA with
``sharded=True`` unless told otherwise. DeepSpeed ZeRO keeps gradients outside ``param.grad`` and is
not supported.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from mmcit.ema.adaptive import AdaptiveEMA
from mmcit.ema.groups import is_sharded_dtensor

__all__ = ["AdaptiveEMACallback"]


class AdaptiveEMACallback(TrainerCallback):
    """Build an :class:`~mmcit.ema.AdaptiveEMA` at train begin and update it after every step.

    Args:
        copy_at_end: at train end, copy the EMA weights into the model (what is then saved or
            evaluated are the EMA weights).
        **ema_kwargs: passed to :class:`~mmcit.ema.AdaptiveEMA` (scale, fallback, granularity,
            group_fn, fixed_alpha, sharded, process_group, ...).
    """

    def __init__(self, *, copy_at_end: bool = True, **ema_kwargs: Any) -> None:
        self.copy_at_end = copy_at_end
        self.ema_kwargs = ema_kwargs
        self.ema: AdaptiveEMA | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """A fresh EMA over the model's trainable parameters."""
        model: torch.nn.Module = kwargs["model"]
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        ema_kwargs = dict(self.ema_kwargs)
        # FSDP2 shards parameters in place into DTensors: their norms need the cross-rank sum.
        ema_kwargs.setdefault("sharded", any(is_sharded_dtensor(p) for _, p in named))
        # A second train() call (another task) starts a fresh EMA over what is trainable now.
        self.ema = AdaptiveEMA(named, **ema_kwargs)

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Blend after every optimizer step (gradients still present)."""
        if self.ema is not None:
            self.ema.update()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Copy the EMA weights into the model (unless ``copy_at_end=False``)."""
        if self.ema is not None and self.copy_at_end:
            self.ema.copy_to()
