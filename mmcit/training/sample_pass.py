"""Forward and backward passes over chosen samples outside the training loop (EWC's Fisher).

A method's ``consolidate`` hook gets a :class:`SamplePass` for the stage just trained. It encodes
samples as that stage's training did (the same encoder and maximum length, the frozen tower's
cached output tokens where training used them) and runs one sample at a time, in evaluation mode:
no dropout, so the passes draw no random numbers and a run's random stream is the same with or
without them. After each sample's backward the caller reads the gradients of the trainable
tensors; they are cleared between samples and after the last one.

Data parallel: each process takes its share of the samples (rows ``rank::world``), and every
process makes the same number of passes (a process with a shorter share repeats a sample with
weight 0), because the forward of sharded frozen weights (FSDP) is a collective that all processes
must enter together. What the caller accumulates per process is summed across processes by it.
"""
from __future__ import annotations

import math
from typing import Callable

from mmcit.data.sample import Sample
from mmcit.models.wrapper import MMModel
from mmcit.training import distributed as dist
from mmcit.training.config import TrainConfig
from mmcit.training.loop import StageInputs, forward

__all__ = ["SamplePass"]


class SamplePass:
    """Per-sample gradients of the training loss on chosen samples; see the module docstring."""

    def __init__(self, model: MMModel, cfg: TrainConfig) -> None:
        self.model = model
        self.cfg = cfg

    def local_share(self, samples: list[Sample]) -> list[tuple[Sample, float]]:
        """This process's ``(sample, weight)`` pairs: its rows of ``samples`` with weight 1, padded
        with weight-0 repeats to the same count on every process."""
        share = [(s, 1.0) for s in dist.shard(samples)]
        count = math.ceil(len(samples) / dist.world_size())
        filler = share[0][0] if share else samples[0]
        return share + [(filler, 0.0)] * (count - len(share))

    def per_sample_gradients(self, samples: list[Sample], on_sample: Callable[[float], None]) -> int:
        """For each of this process's pairs (``local_share``): forward the sample alone, backward
        its mean answer-token negative log-likelihood (the training loss of a batch of one), then
        ``on_sample(weight)`` while the trainable tensors' ``.grad`` hold that sample's gradient.
        Returns the number of passes made (the same on every process). The model is left in
        training mode with no gradients."""
        if not samples:
            return 0
        model = self.model
        pairs = self.local_share(samples)
        inputs = StageInputs(model, [s for s, _ in pairs], self.cfg)
        params = [p for _, p in model.trainable_named_parameters()]
        model.eval()  # no dropout: the passes are deterministic and draw no random numbers
        try:
            for i, (_, weight) in enumerate(pairs):
                for p in params:
                    p.grad = None
                row = inputs[i]
                outputs, _ = forward(model, [row], model.collate([row], "right"), inputs.via_tokens)
                outputs.loss.backward()
                on_sample(weight)
        finally:
            for p in params:
                p.grad = None
            model.train()
        return len(pairs)
