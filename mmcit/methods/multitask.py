"""Joint training on all tasks at once: the upper bound, trained and evaluated once."""
from __future__ import annotations

from dataclasses import dataclass

from mmcit.methods.base import Method, MethodConfig, Stage, register


@dataclass
class MultitaskConfig(MethodConfig):
    type: str = "multitask"


@register
class Multitask(Method):
    name = "multitask"
    config_cls = MultitaskConfig
    joint = True  # the accuracy matrix has a single row

    def plan(self, tasks):
        return [Stage(name="all_tasks", train=list(tasks), evaluate=list(tasks), index=0)]
