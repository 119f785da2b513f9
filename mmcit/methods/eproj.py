"""EProj: a new projector per task, chosen per test sample by task anchors; the LLM stays frozen.

Source: J. He, H. Guo, M. Tang, J. Wang, "Continual Instruction Tuning for Large Multimodal Models",
arXiv 2311.16206 (2023), the model-expansion baseline of its study ("EProj"): every new task adds a
task-specific projection layer between the frozen image encoder and the frozen LLM, the earlier
tasks' projections are frozen, and at test time the projection of one task answers each sample.

In mmcit the projection layer is the projector (``multi_modal_projector``), and each task's adapter
carries its own projector copy: task k trains adapter k's copy and nothing else.

* **LLM adapter, as in their setting:** none. He et al. tune InstructBLIP-style models whose LLM
  is frozen; so here every LoRA stays frozen at its initial value (B = 0, so it adds nothing) and
  the LLM answers as the base does. Only the projector copies train, at ``train.projector_lr``.
* **Test-time choice:** the task is identified from the sample itself, by comparing its features
  with each task's key, the mean feature of the task's training samples
  (``mmcit.routing.anchors``): by default the frozen tower's image feature and the prompt's text
  feature, the mean of their two cosines, and the most similar task's projector answers. The task
  label is never read. He et al.'s text was not available to check while this was written: the
  key-matching rule here (features, their mean, argmax) is mmcit's choice, set by
  ``method.anchors`` (``modalities: [image]`` compares images only).
* **Initialisation** (``init``): a new task's projector starts as a copy of the previous task's
  (``previous``, the default: the stream so far is the natural starting point of an expansion) or
  of the base model's projector (``base``: every task starts from the same point).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mmcit.errors import ConfigError
from mmcit.methods._per_task import AnchoredAdapters
from mmcit.methods.base import METHODS, MethodConfig, Stage
from mmcit.models.task_adapters import projector_from_base, set_trainable
from mmcit.routing.anchors import AnchorSettings

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel

INITS = ("previous", "base")


@dataclass
class EProjConfig(MethodConfig):
    """``eproj``: where a new projector starts (``init``) and the features that choose one at test
    time (``method.anchors``)."""

    type: str = "eproj"
    init: str = "previous"  # previous (a copy of the last task's projector) | base (the base's)
    anchors: AnchorSettings = field(default_factory=AnchorSettings)

    def validate(self) -> None:
        """``init`` must be one of INITS (the anchors validate themselves)."""
        if self.init not in INITS:
            raise ConfigError(f"method.init must be one of {', '.join(INITS)}, got {self.init!r}")


@METHODS.register
class EProj(AnchoredAdapters):
    """A projector per task (the LLM frozen); each test sample answered by the projector of the task
    whose anchors are the most similar to its features."""

    name = "eproj"
    config_cls = EProjConfig

    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """The stage's own adapter; only its projector copy trains."""
        name, added = self.adapters.begin(stage.index, [t.name for t in stage.train], model)
        if added and self.cfg.init == "base":
            projector_from_base(model, name)
        set_trainable(model, name, lora=False, projector=True)

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """Store the task's key (anchors)."""
        self.fit_anchors(stage, model)

    def summary(self) -> dict:
        """The projectors' start, adapters with their tasks, anchor sizes and how test samples were
        assigned."""
        return {"init": self.cfg.init, **super().summary()}
