"""HiDe-LLaVA: task-specific LoRA in the top layer, chosen per test sample by image and text anchors;
the other layers' per-task LoRAs fused into one.

Source: H. Guo, F. Zeng, Z. Xiang, F. Zhu, D.-H. Wang, X.-Y. Zhang, C.-L. Liu, "HiDe-LLaVA:
Hierarchical Decoupling for Continual Instruction Tuning of Multimodal Large Language Model", ACL
2025 (arXiv 2503.12941), and the authors' code (github.com/Ghy0501/HiDe-LLaVA, commit 4dd0793;
the same in MCITlib's ``HiDe/``): ``llava/model/llava_arch.py`` (anchors, matching) and
``HiDe/peft/tuners/clitmoelora.py`` (LoRA experts, fusion).

What the authors do, and mmcit with it:

* Task t trains its own LoRA in every LoRA layer, started fresh (A ~ N(0, 0.01^2), B = 0); the
  earlier tasks' LoRAs are not in the forward while it trains. The projector trains with the task
  and is one projector for all tasks.
* Anchors: per task, the mean CLIP image feature and the mean CLIP text feature (of the prompt) of
  its training samples.
* Test time, top layer (task-specific expansion): the LoRA of the task matched by
  ``(cos(image, image anchor) + cos(text, text anchor)) / 2``.
* Test time, every other layer (task-general fusion): one LoRA whose A is the sum of every trained
  task's A and whose B is the sum of their B (``merge_weight = 1.0`` in their code), so the layer
  adds ``scale * (sum_i B_i) (sum_i A_i) x``.

Choices (where mmcit differs, or the description leaves a choice open):

* **How the fusion merges.** The authors' code sums the A matrices and the B matrices separately
  (``fusion: sum``, the default); ``mean`` divides both sums by the number of tasks (each factor's
  average: the "uniform merging" a reader of the paper may expect). Merging the factors rather than
  the products ``B_i A_i`` keeps the fused LoRA at rank r, so it lives in every adapter's own LoRA
  slots without a larger adapter; it includes the cross terms ``B_i A_j`` (i != j) that averaging
  ``B_i A_i`` would not, exactly as the authors' inference does. Only the sum over tasks is needed,
  so after task t trains, every adapter's lower layers are overwritten with the fused factors
  (the previous fusion plus task t's own, or their mean): each task's adapter then holds the fused
  lower layers and its own top layer, which is what answers a sample routed to that task.
* **Hard choice.** The authors weight every task's top-layer LoRA by ``softmax(sim / 0.1)``
  (over trained tasks here; their code also spreads weight over untrained slots); mmcit gives each
  sample the most similar task's, the limit as the temperature goes to 0, so that evaluation
  batches by adapter. ``mean_chosen_weight`` in the report is the weight their softmax would have
  given the chosen task.
* **Features.** Image: the frozen tower's output mean-pooled over tokens (mmcit's backends do not
  load CLIP's projection head whose ``image_embeds`` the authors use). Text: an mmcit embedder
  (``method.anchors.embedder``) instead of CLIP's text encoder. Anchors are exact means computed
  after the task trains (their running mean starts from a random vector counted as one sample).
* **Top layers.** ``top_layers`` (1, the paper's) counts the decoder layers that keep task LoRAs;
  a model with no more layers than that has no fused part (then it reduces to choosing whole LoRAs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from mmcit.errors import ConfigError, MmcitError
from mmcit.methods._per_task import AnchoredAdapters
from mmcit.methods.base import METHODS, MethodConfig, RunContext, Stage
from mmcit.models.task_adapters import init_lora, layer_index, lora_tensors, set_trainable, share_projector
from mmcit.routing.anchors import AnchorSettings

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel

INIT_STD = 0.01  # the authors' A initialisation (normal, std 0.01)
TEMPERATURE = 0.1  # the authors' softmax temperature, for the report only
FUSIONS = ("sum", "mean")


@dataclass
class HiDeConfig(MethodConfig):
    """``hide_llava``: how many top decoder layers keep per-task LoRAs, how the others fuse, and the
    features that choose the top layers' LoRA (``method.anchors``)."""

    type: str = "hide_llava"
    top_layers: int = 1
    fusion: str = "sum"  # sum (the authors' code) | mean
    anchors: AnchorSettings = field(default_factory=AnchorSettings)

    def validate(self) -> None:
        """At least one top layer; a known fusion (the anchors validate themselves)."""
        if self.top_layers < 1:
            raise ConfigError(f"method.top_layers must be >= 1, got {self.top_layers}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"method.fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")


def split_layers(names: list[str], top_layers: int) -> tuple[list[int], list[int]]:
    """``(lower, top)`` decoder-layer indices of the LoRA tensors ``names``: the ``top_layers``
    highest indices are the top."""
    indices = sorted({i for i in map(layer_index, names) if i is not None})
    if not indices:
        raise MmcitError("hide_llava: no LoRA tensor sits in a decoder layer named like '...layers.N...'")
    if top_layers > len(indices):
        raise ConfigError(f"method.top_layers={top_layers}, but the language model has LoRA in only "
                          f"{len(indices)} decoder layers")
    return indices[:-top_layers], indices[-top_layers:]


@torch.no_grad()
def fuse_lower(model: "MMModel", adapters: list[str], lower: set[int], fusion: str) -> None:
    """Fold the newest adapter's lower-layer LoRA into the fusion: every adapter's lower-layer A and B
    become the sum (or mean) over the ``len(adapters)`` tasks. The earlier adapters hold the fusion of
    the tasks before (all equal); the newest holds its own trained factors."""
    n = len(adapters)
    own = {k: p for k, p in lora_tensors(model, adapters[-1]).items() if layer_index(k) in lower}
    if n > 1:
        prev = lora_tensors(model, adapters[0])
        for key, p in own.items():
            before = prev[key.replace(f".{adapters[-1]}.", f".{adapters[0]}.")]
            total = before * (n - 1) + p if fusion == "mean" else before + p
            p.copy_(total / n if fusion == "mean" else total)
    for name in adapters[:-1]:
        theirs = lora_tensors(model, name)
        for key, p in own.items():
            theirs[key.replace(f".{adapters[-1]}.", f".{name}.")].copy_(p)


@METHODS.register
class HiDeLlava(AnchoredAdapters):
    """Per-task LoRAs; at test time the top layer's comes from the task matched by image and text
    anchors, the other layers' are fused over all tasks."""

    name = "hide_llava"
    config_cls = HiDeConfig
    temperature = TEMPERATURE

    def __init__(self, cfg: HiDeConfig):
        super().__init__(cfg)
        self.lower: list[int] = []
        self.top: list[int] = []

    def setup(self, model: "MMModel", ctx: RunContext) -> None:
        """Keep the model and find the top and lower decoder layers of its LoRA."""
        super().setup(model, ctx)
        self.lower, self.top = split_layers(list(lora_tensors(model, model.active_adapter)), self.cfg.top_layers)

    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """The stage's own adapter with a fresh LoRA; only it and the projector train."""
        name, added = self.adapters.begin(stage.index, [t.name for t in stage.train], model)
        if added:
            init_lora(model, name, INIT_STD)
        set_trainable(model, name)

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """Store the task's anchors, fuse the lower layers over the tasks so far, share the projector."""
        names = self.adapters.names[: stage.index + 1]
        self.fit_anchors(stage, model)
        fuse_lower(model, names, set(self.lower), self.cfg.fusion)
        share_projector(model, names[-1])

    def state_dict(self) -> dict:
        """The layer split, the adapters (names, tasks) and the selector (anchors, counts)."""
        return {"top_layer_indices": list(self.top), "fused_layer_indices": list(self.lower), **super().state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the caller restored the adapters, fused layers included)."""
        self.top = list(state.get("top_layer_indices", self.top))
        self.lower = list(state.get("fused_layer_indices", self.lower))
        super().load_state_dict(state)

    def summary(self) -> dict:
        """Layers (top and fused), fusion, adapters with their tasks, anchors and assignments."""
        return {"top_layer_indices": self.top, "fused_layer_indices": self.lower, "fusion": self.cfg.fusion,
                **super().summary()}
