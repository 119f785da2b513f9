"""Joint training on all tasks at once: the upper bound, trained and evaluated once."""
from __future__ import annotations

from dataclasses import dataclass

from mmcit.methods.base import METHODS, Method, MethodConfig, Stage


@dataclass
class MultitaskConfig(MethodConfig):
    """``multitask`` has no options."""

    type: str = "multitask"


@METHODS.register
class Multitask(Method):
    """All tasks trained jointly in one stage and evaluated once (the upper bound)."""

    name = "multitask"
    config_cls = MultitaskConfig
    joint = True  # the accuracy matrix has a single row

    def plan(self, tasks):
        """One stage that trains every task and evaluates every task."""
        return [Stage(name="all_tasks", train=list(tasks), evaluate=list(tasks), index=0)]
