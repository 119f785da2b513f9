"""MoELoRA: each LoRA layer is a dense mixture of E low-rank experts weighted by a token-wise router.

Source: C. Chen, J. Zhu, X. Luo, H. T. Shen, J. Song, L. Gao, "CoIN: A Benchmark of Continual
Instruction tuNing for Multimodel Large Language Model", NeurIPS 2024 Datasets and Benchmarks
(arXiv 2403.08350), section "MoELoRA", and its code (github.com/zackschen/CoIN:
``CoIN/peft/tuners/coinmoelora.py``, ``scripts/LLaVA/Train_MOE``).

Every LoRA layer of rank r becomes E experts of rank r / E. Expert e has a down-projection A_e
((r/E) x d_in) and an up-projection B_e (d_out x (r/E)), and the layer has a bias-free linear router
R (E x d_in):

    h = W x + scaling * sum_e g_e(x) B_e A_e dropout(x),    g(x) = softmax(R x) over the experts, per token

Every expert contributes to every token (a dense mixture; no top-k). One set of experts and routers
is trained task after task, as CoIN trains it, with the projector, as in ``lora_ft``. At test time
the routers weigh the experts per token: nothing selects an adapter and no task label is read.
CoIN's LLaVA setting is E = 8, r = 128 (``method.experts``, ``model.lora_r``).

How it sits in the model: ``setup`` swaps the down-projection of peft's LoRA in every LoRA layer
(``lora_A.<adapter>``) for an :class:`ExpertDown` holding the E experts' A stacked as one
``weight`` (r x d_in: expert e owns rows e*r/E to (e+1)*r/E) and the layer's ``router``. It returns
``g_e(x) * A_e dropout(x)`` for each expert, side by side. peft's unchanged up-projection
``lora_B.<adapter>`` (d_out x r: expert e owns the matching columns) then sums
``sum_e g_e B_e A_e dropout(x)``, and peft applies the scaling. The parameters are therefore named
``...lora_A.<adapter>.weight``, ``...lora_A.<adapter>.router.weight`` and
``...lora_B.<adapter>.weight``. Every name holds ``lora_`` and the adapter's name, which is how
mmcit's adapter state, checkpoints, optimizer and EMA find a LoRA's tensors. The trainable size is
plain LoRA's at rank r plus E * d_in per layer for the router. The dropout moves into
``ExpertDown`` because the router reads the token without dropout, as in CoIN's code.

Choices where the published description leaves one open:

* Initialisation as in CoIN's code: each A_e ~ N(0, 0.01^2), each B_e = 0 (so the model starts
  as the base), the router as torch's default for a linear layer.
* Scaling alpha / r with the total rank r, as in CoIN's code (LoRA's at rank r).
* The router's weights are softmax-normalised in float32 when the model computes in bf16 (autocast).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmcit.errors import ConfigError
from mmcit.methods.base import METHODS, Method, MethodConfig, RunContext

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel


@dataclass
class MoELoRAConfig(MethodConfig):
    """``moelora``: the number of experts per LoRA layer (each of rank ``model.lora_r / experts``)."""

    type: str = "moelora"
    experts: int = 4

    def validate(self) -> None:
        """At least one expert."""
        if self.experts < 1:
            raise ConfigError(f"method.experts must be >= 1, got {self.experts}")

    def validate_run(self, run: Any) -> None:
        """The experts split the LoRA rank evenly."""
        if run.model.lora_r % self.experts:
            raise ConfigError(f"method.experts={self.experts} must divide model.lora_r={run.model.lora_r} "
                              "(each expert has rank lora_r / experts)")


class ExpertDown(nn.Module):
    """The down-projections of E experts (stacked in ``weight``, r x d_in) and their router.

    ``forward(x)`` returns the r-vector whose e-th block of r/E entries is ``g_e(x) * A_e dropout(x)``.
    """

    def __init__(self, in_features: int, rank: int, experts: int, dropout: float = 0.0) -> None:
        super().__init__()
        if rank % experts:
            raise ValueError(f"{experts} experts do not split rank {rank}")
        self.experts = experts
        self.router = nn.Linear(in_features, experts, bias=False)
        self.weight = nn.Parameter(torch.empty(rank, in_features))
        nn.init.normal_(self.weight, mean=0.0, std=0.01)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def expert_rank(self) -> int:
        """r / E."""
        return self.weight.shape[0] // self.experts

    def expert(self, e: int) -> torch.Tensor:
        """Expert ``e``'s down-projection A_e ((r/E) x d_in), a view of ``weight``."""
        k = self.expert_rank
        return self.weight[e * k:(e + 1) * k]

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Each token's weights over the experts (softmax of the router's output; they sum to 1)."""
        return torch.softmax(self.router(x).float(), dim=-1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``g_e(x) * A_e dropout(x)`` for every expert e, side by side."""
        down = nn.functional.linear(self.dropout(x), self.weight)
        return down * self.gates(x).repeat_interleave(self.expert_rank, dim=-1)


def install_experts(model: "MMModel", experts: int, adapter: str | None = None) -> int:
    """Swap ``adapter``'s LoRA down-projection in every LoRA layer for an :class:`ExpertDown` and
    zero its up-projection; returns the number of layers (a layer swapped before is left alone)."""
    adapter = adapter or model.active_adapter
    layers = 0
    for _, layer in model.lora_layers():
        old = layer.lora_A[adapter]
        if not isinstance(old, ExpertDown):
            rank, in_features = old.weight.shape
            dropout = layer.lora_dropout[adapter]
            p = dropout.p if isinstance(dropout, nn.Dropout) else 0.0
            layer.lora_A[adapter] = ExpertDown(in_features, rank, experts, p).to(old.weight.device)
            layer.lora_dropout[adapter] = nn.Identity()  # ExpertDown drops out for the experts only
            with torch.no_grad():
                layer.lora_B[adapter].weight.zero_()
        layers += 1
    return layers


@METHODS.register
class MoELoRA(Method):
    """A dense mixture of LoRA experts per layer with token-wise routers, trained task after task."""

    name = "moelora"
    config_cls = MoELoRAConfig

    def __init__(self, cfg: MoELoRAConfig):
        super().__init__(cfg)
        self.installed: dict[str, int] = {}  # layers, expert_rank, router_parameters (from setup)

    def setup(self, model: "MMModel", ctx: RunContext) -> None:
        """Turn every LoRA layer of the model's adapter into E experts with a router."""
        super().setup(model, ctx)
        layers = install_experts(model, self.cfg.experts)
        downs = [layer.lora_A[model.active_adapter] for _, layer in model.lora_layers()]
        self.installed = {"layers": layers, "expert_rank": downs[0].expert_rank if downs else 0,
                          "router_parameters": sum(d.router.weight.numel() for d in downs)}

    def state_dict(self) -> dict:
        """What ``setup`` installed (for the report; a resume installs the same again)."""
        return dict(self.installed)

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the experts themselves are the adapter's tensors)."""
        self.installed = {k: int(v) for k, v in state.items()}

    def summary(self) -> dict:
        """The number of experts, their rank, and the layers and router parameters installed."""
        return {"experts": self.cfg.experts, **self.installed}
