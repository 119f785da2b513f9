"""Zero-shot: no training; the base model answers every task (the first row of LCIA's table).

The method trains nothing, so the model after any number of stages is the base model: one stage
that trains no task and evaluates every task gives the whole result, a single row like
``multitask``'s. The base's first adapter is the LoRA every method starts from, whose B matrices are
zero, and the projector copy equals the base's: the answers are the base model's own.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmcit.methods.base import METHODS, Method, MethodConfig, Stage


@dataclass
class ZeroShotConfig(MethodConfig):
    """``zero_shot`` has no options."""

    type: str = "zero_shot"


@METHODS.register
class ZeroShot(Method):
    """No training: the base model evaluated once on every task (one row)."""

    name = "zero_shot"
    config_cls = ZeroShotConfig
    joint = True  # one row: nothing changes between stages

    def plan(self, tasks):
        """One stage that trains nothing and evaluates every task."""
        return [Stage(name="zero_shot", train=[], evaluate=list(tasks), index=0)]
