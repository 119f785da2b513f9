"""DISCO as MCITlib implements it: a fresh LoRA per task, chosen per test sample by text features.

Source: H. Guo, F. Zeng, F. Zhu, W. Liu, D.-H. Wang, J. Xu, X.-Y. Zhang, C.-L. Liu, "Federated
Continual Instruction Tuning", ICCV 2025 (arXiv 2503.12897), whose DISCO keeps one LoRA subspace
per task and activates a test sample's subspace by the similarity of its features to each task's
stored features; and MCITlib's centralised version (github.com/Ghy0501/MCITlib, ``DISCO/``, commit
2956dfd: ``llava/model/llava_arch.py``, ``CoIN/peft/tuners/clitmoelora.py``), which this follows.

What MCITlib's DISCO does, and mmcit with it:

* Task t trains its own LoRA in every LoRA layer, started fresh (A ~ N(0, 0.01^2), B = 0, as
  ``reset_lora_parameters`` there); the earlier tasks' LoRAs are not in the forward and stay frozen.
  The projector trains with the task (LLaVA's LoRA recipe) and is one projector for all tasks.
* While task t trains, the text feature of every training sample is added to task t's stored
  feature. The text is the sample's prompt (question and instruction), through CLIP's text encoder.
* At test time each sample's text feature is compared with every trained task's stored feature by
  cosine similarity.

Choices (where mmcit differs, or the description leaves a choice open):

* **Hard choice.** MCITlib weights every task's LoRA by ``softmax(cos / 0.05)`` and sums them
  (block-diagonal weights between the experts' A and B); mmcit gives each sample the LoRA of the
  most similar task, the limit of that softmax as its temperature goes to 0, so that evaluation
  batches samples by adapter. The report's ``mean_chosen_weight`` is the weight MCITlib's softmax
  would have given the chosen LoRA (1.0: no difference).
* **Text features** come from an mmcit embedder (``method.anchors.embedder``: ``hashing`` by default,
  ``sentence`` for the local MiniLM) instead of CLIP's text encoder, which mmcit's backends do not
  load. The stored feature is the mean over the task's training samples (MCITlib keeps a running
  sum; the cosine is the same), computed after the task trains rather than during its forward passes
  (the same samples, each once, whatever the number of epochs).
* **One projector.** Each mmcit adapter has its own projector copy; after every task the trained
  copy is copied into every adapter's, so whichever LoRA answers uses the latest projector, as in
  MCITlib's single model.
* MCITlib splits one rank-R LoRA into ``expert_num`` blocks of rank R / expert_num; mmcit's per-task
  LoRA has rank ``model.lora_r`` and alpha ``model.lora_alpha``. MCITlib scales each block by
  alpha / R, so its setting (R = 96, alpha = 192, 6 tasks) is rank 16 with alpha 32 here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mmcit.methods._per_task import AnchoredAdapters
from mmcit.methods.base import METHODS, MethodConfig, Stage
from mmcit.models.task_adapters import init_lora, set_trainable, share_projector
from mmcit.routing.anchors import AnchorSettings

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel

INIT_STD = 0.01  # MCITlib's A initialisation (normal, std 0.01)
TEMPERATURE = 0.05  # MCITlib's softmax temperature, for the report only


def _text_only() -> AnchorSettings:
    return AnchorSettings(modalities=["text"])


@dataclass
class DiscoConfig(MethodConfig):
    """``disco``: the features of the test-time choice (``method.anchors``; text only, as MCITlib)."""

    type: str = "disco"
    anchors: AnchorSettings = field(default_factory=_text_only)


@METHODS.register
class Disco(AnchoredAdapters):
    """A fresh LoRA per task (one shared projector); each test sample answered by the LoRA of the task
    whose stored text feature is the most similar to its own."""

    name = "disco"
    config_cls = DiscoConfig
    temperature = TEMPERATURE

    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """The stage's own adapter, with a fresh LoRA; only it and the projector train."""
        name, added = self.adapters.begin(stage.index, [t.name for t in stage.train], model)
        if added:
            init_lora(model, name, INIT_STD)
        set_trainable(model, name)

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """Store the task's mean text feature; give every adapter the trained projector."""
        self.fit_anchors(stage, model)
        share_projector(model, self.adapters.names[stage.index])
