"""Adaptive EMA on every task (LCIA's section 1 without instruction grouping).

An EMA of the trainable weights is started before each task, updated after every optimizer step
with LCIA's adaptive balance weight, and copied into the live weights after the task: what is
saved, evaluated and carried into the next task are the EMA weights. (LCIA turns the EMA on only
for tasks that re-train an existing parameter group; that needs instruction grouping, which is
``lcia``'s, so here it is on for every task.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mmcit.ema.component import EMAComponent, EMASettings
from mmcit.ema.trace import trace_file
from mmcit.methods.base import METHODS, Method, MethodConfig, Stage
from mmcit.training.distributed import is_main

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel


@dataclass
class AdaptiveEMAConfig(MethodConfig):
    """``adaptive_ema``: the EMA settings (``method.ema``)."""

    type: str = "adaptive_ema"
    ema: EMASettings = field(default_factory=EMASettings)


@METHODS.register
class AdaptiveEMAMethod(Method):
    """LCIA's adaptive EMA of the trainable weights on every task, copied in after each task."""

    name = "adaptive_ema"
    config_cls = AdaptiveEMAConfig

    def __init__(self, cfg: AdaptiveEMAConfig):
        super().__init__(cfg)
        self.ema = EMAComponent(cfg.ema)

    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """A fresh EMA over the trainable weights."""
        self.ema.start(model)

    def after_optimizer_step(self, model: "MMModel") -> None:
        """Blend the live weights into the EMA."""
        self.ema.update()

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """Copy the EMA weights in; the stage's alpha trace goes to the run folder."""
        main = self.ctx is not None and self.ctx.run_dir is not None and is_main()
        self.ema.finish(stage.name, trace_file(self.ctx.run_dir, stage.index, stage.name) if main else None)

    def state_dict(self) -> dict:
        """The EMA's counters (and, inside a stage, its tensors)."""
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.ema.load_state_dict(state)

    def summary(self) -> dict:
        """Fallbacks, skipped updates and mean alpha per stage."""
        return self.ema.summary()
