"""O-LoRA: a new LoRA per task, learned in a subspace orthogonal to the earlier tasks' LoRAs.

Source: X. Wang, T. Chen, Q. Ge, H. Xia, R. Bao, R. Zheng, Q. Zhang, T. Gui, X. Huang, "Orthogonal
Subspace Learning for Language Model Continual Learning", Findings of EMNLP 2023 (arXiv 2310.14152),
and the authors' code (github.com/cmnfriend/O-LoRA).

Every task trains a fresh LoRA while the earlier tasks' LoRAs stay frozen. All of them answer
together, with their updates summed (``mmcit.models.task_loras.TaskLoRAs``). The loss of task t adds

    lambda_orth * sum over LoRA layers, sum over earlier tasks i of  pen(A_i A_t^T)
  + lambda_l2   * sum over the new LoRA's A and B matrices of ||.||_F^2

where ``A`` is a LoRA's down-projection (r x d_in, peft's layout), so ``A_i A_t^T`` is the paper's
``A_i^T A_t`` for its column layout. At test time the summed LoRAs answer every sample: nothing
selects an adapter, and no task label is read.

Choices where the published description leaves one open:

* ``orth_penalty: squared`` (default) sums the squared entries of ``A_i A_t^T``, as in the paper's
  formula. ``abs`` sums their absolute values, as the authors' code does (``torch.abs(...).sum()``).
* The L2 term is the squared Frobenius norm. The authors' code adds the plain norm of each matrix,
  and its scripts set lambda_2 = 0 anyway, as does this default.
* Both terms are added once per optimizer step. The loop gives each micro-batch its share of the
  step, and the shares sum to 1. The authors' code adds them to every micro-batch's loss after
  dividing that loss by the accumulation steps.
* The projector is one projector trained through the stream, as LLaVA-based O-LoRA trains it
  (MCITlib). O-LoRA's own models (T5, LLaMA) have none. The earlier tasks' projector copies are
  frozen snapshots that nothing reads (see ``TaskLoRAs``).
* Defaults lambda_orth = 0.5 and lambda_l2 = 0 come from the authors' scripts (T5 and LLaMA).
  MCITlib's LLaVA version uses 0.05 with the absolute-value penalty
  (configs/coin/olora_original.yaml).
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

PENALTIES = ("squared", "abs")


@dataclass
class OLoRAConfig(MethodConfig):
    """``olora``: the weights of the orthogonality and L2 terms, and the orthogonality penalty."""

    type: str = "olora"
    lambda_orth: float = 0.5  # lambda_1
    lambda_l2: float = 0.0  # lambda_2
    orth_penalty: str = "squared"  # squared (the paper's formula) | abs (the authors' code)

    def validate(self) -> None:
        """Non-negative weights and a known penalty."""
        if self.lambda_orth < 0 or self.lambda_l2 < 0:
            raise ConfigError("method.lambda_orth and method.lambda_l2 must be >= 0")
        if self.orth_penalty not in PENALTIES:
            raise ConfigError(f"method.orth_penalty must be one of {', '.join(PENALTIES)}, got {self.orth_penalty!r}")


def orthogonality(earlier: list[torch.Tensor], new: torch.Tensor, penalty: str = "squared") -> torch.Tensor:
    """``sum_i pen(A_i new^T)`` over the earlier down-projections ``A_i`` (each r_i x d_in) and the
    new one (r x d_in). ``squared`` sums the squared entries of each product, ``abs`` their
    absolute values."""
    overlap = torch.cat(list(earlier), dim=0) @ new.T  # every earlier row against every new row
    return overlap.pow(2).sum() if penalty == "squared" else overlap.abs().sum()


@METHODS.register
class OLoRA(StackedLoRAs):
    """A fresh LoRA per task, orthogonal to the frozen earlier ones, all summed at test time."""

    name = "olora"
    config_cls = OLoRAConfig

    def penalty(self, model: "MMModel") -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(orthogonality, l2)`` of the newest LoRA (unweighted): each None when it has no term
        (no earlier task; no new LoRA)."""
        new = self.tasks.newest
        if new is None:
            return None, None
        orth, l2 = [], []
        for _, layer in model.lora_layers():
            a, b = layer.lora_A[new].weight, layer.lora_B[new].weight
            if self.tasks.earlier:
                orth.append(orthogonality([layer.lora_A[i].weight for i in self.tasks.earlier], a,
                                          self.cfg.orth_penalty))
            l2.append(a.pow(2).sum() + b.pow(2).sum())
        return (torch.stack(orth).sum() if orth else None), (torch.stack(l2).sum() if l2 else None)

    def extra_loss(self, model: "MMModel", batch: dict, outputs: Any) -> torch.Tensor | None:
        """lambda_orth * orthogonality + lambda_l2 * L2 (None when both are off or empty)."""
        orth, l2 = self.penalty(model)
        terms = []
        if orth is not None and self.cfg.lambda_orth > 0:
            terms.append(self.cfg.lambda_orth * orth)
        if l2 is not None and self.cfg.lambda_l2 > 0:
            terms.append(self.cfg.lambda_l2 * l2)
        return sum(terms[1:], terms[0]) if terms else None

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """Record the stage's final orthogonality to the earlier LoRAs (for the report)."""
        with torch.no_grad():
            orth, _ = self.penalty(model)
        self.records.append({"stage": stage.name, "adapter": self.tasks.newest,
                             "orthogonality": None if orth is None else float(orth)})

    def summary(self) -> dict:
        """The settings, the task adapters and each stage's final orthogonality."""
        return self.stack_summary(lambda_orth=self.cfg.lambda_orth, lambda_l2=self.cfg.lambda_l2,
                                  orth_penalty=self.cfg.orth_penalty)
