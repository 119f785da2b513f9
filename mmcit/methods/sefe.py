"""SEFE's RegLoRA: a new LoRA per task, kept off the elements where earlier tasks' LoRAs mattered most.

Source: J. Chen, R. Cong, Y. Zhao, H. Yang, G. Hu, H. H. S. Ip, S. Kwong, "SEFE: Superficial and
Essential Forgetting Eliminator for Multimodal Continual Instruction Tuning", ICML 2025 (arXiv
2505.02486), and the authors' code (github.com/jinpeng0528/SEFE: ``key_elements_identification.py``,
and the regularisation in ``llava/model/language_model/modeling_llama.py`` and ``llava_llama.py``).

After each task the authors merge its LoRA into the base weights and train a fresh LoRA on the next
task. Before that they record, in every LoRA layer, the positions of the largest ``top_fraction``
of the elements of ``|B A|``, the task's weight update. While a later task trains, its own update
``B_t A_t`` is penalised at the positions that any earlier task recorded:

    loss = LM loss + reg_weight * mean over LoRA layers of  mean over recorded positions p of |(B_t A_t)[p]|

mmcit does the same without merging. Every finished task's LoRA stays as a frozen adapter and all of
them are summed (``mmcit.models.task_loras.TaskLoRAs``), which gives the merged weights exactly.
A task's recorded positions are a function of its frozen LoRA, so they are computed from it when
the next stage begins. Nothing about them has to be checkpointed, and a resume recomputes the same
positions. At test time the summed LoRAs answer every sample: no task label is read.

Choices where the published description leaves one open:

* ``B A`` without LoRA's scaling (alpha / r), as in the authors' code: the scaling changes neither
  the ranking nor, beyond a constant that reg_weight absorbs, the penalty.
* The positions of the earlier tasks form a set: a position that two tasks recorded counts once.
  The authors' code concatenates the tasks' index lists, so such a position weighs double in the
  mean.
* Each layer records ``floor(top_fraction * elements)`` positions (at least one), as the code does
  with ``int(0.02 * rows * cols)``.
* The mean runs over the LoRA layers that have positions (the code divides by 224, the number of
  LoRA layers of LLaVA-7B).
* The penalty is added once per optimizer step: each micro-batch adds its share, and the shares sum
  to 1.
* The projector is one projector trained through the stream, as the merged LLaVA of the authors'
  scripts trains it (see ``TaskLoRAs`` for the projector copies).

SEFE's other half, answer-style diversification (ASD), rewrites a share of each task's training
answers into other answer styles with a large model. The authors release the rewritten CoIN
training files (CoIN-ASD). A copy of CoIN's tree with those as ``train.json`` of a variant folder is
read by the ``coin`` reader like any variant (docs/field_baselines.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mmcit.errors import ConfigError
from mmcit.methods._per_task import StackedLoRAs
from mmcit.methods.base import METHODS, MethodConfig, Stage

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel


@dataclass
class SEFEConfig(MethodConfig):
    """``sefe``: the share of each task's update recorded per layer, and the penalty's weight."""

    type: str = "sefe"
    top_fraction: float = 0.02  # the authors' 2 %
    reg_weight: float = 2500.0  # the authors' 2.5e3

    def validate(self) -> None:
        """``top_fraction`` in (0, 1] and a non-negative weight."""
        if not 0 < self.top_fraction <= 1:
            raise ConfigError(f"method.top_fraction must be in (0, 1], got {self.top_fraction}")
        if self.reg_weight < 0:
            raise ConfigError("method.reg_weight must be >= 0")


def key_positions(update: torch.Tensor, fraction: float) -> torch.Tensor:
    """Flat indices (int64, ascending) of the ``floor(fraction * numel)`` (at least 1) elements of
    largest magnitude of ``update``."""
    k = max(1, int(fraction * update.numel()))
    return torch.topk(update.detach().abs().flatten(), k).indices.sort().values


def penalty(updates: list[torch.Tensor], positions: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean ``|update|`` at each layer's positions (layers without positions
    are left out)."""
    terms = [u.flatten().index_select(0, p).abs().mean() for u, p in zip(updates, positions) if p.numel()]
    return torch.stack(terms).mean()


@METHODS.register
class SEFE(StackedLoRAs):
    """RegLoRA: per-task LoRAs, each kept small where the earlier tasks' updates were largest."""

    name = "sefe"
    config_cls = SEFEConfig

    def __init__(self, cfg: SEFEConfig):
        super().__init__(cfg)
        self.positions: list[torch.Tensor] = []  # per LoRA layer: the earlier tasks' positions

    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """Add the stage's fresh LoRA (after the first stage), stack every task's LoRA, and collect
        the positions that the earlier tasks' updates recorded."""
        super().before_stage(stage, model)
        self.positions = []
        if not self.tasks.earlier:
            return
        with torch.no_grad():
            for _, layer in model.lora_layers():
                found = [key_positions(layer.lora_B[i].weight @ layer.lora_A[i].weight, self.cfg.top_fraction)
                         for i in self.tasks.earlier]
                self.positions.append(torch.unique(torch.cat(found)))

    def extra_loss(self, model: "MMModel", batch: dict, outputs: Any) -> torch.Tensor | None:
        """reg_weight times the penalty on the newest LoRA's update (None before the second task)."""
        if not self.positions or self.cfg.reg_weight == 0:
            return None
        new = self.tasks.newest
        updates = [layer.lora_B[new].weight @ layer.lora_A[new].weight for _, layer in model.lora_layers()]
        return self.cfg.reg_weight * penalty(updates, self.positions)

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """Record how many positions the stage was held to and its final penalty (for the report)."""
        value = None
        if self.positions:
            with torch.no_grad():
                new = self.tasks.newest
                value = float(penalty([layer.lora_B[new].weight @ layer.lora_A[new].weight
                                       for _, layer in model.lora_layers()], self.positions))
        self.records.append({"stage": stage.name, "adapter": self.tasks.newest,
                             "positions": int(sum(p.numel() for p in self.positions)), "penalty": value})

    def summary(self) -> dict:
        """The settings, the task adapters, and per stage the positions held and the final penalty."""
        return self.stack_summary(top_fraction=self.cfg.top_fraction, reg_weight=self.cfg.reg_weight)
