"""The method-hook interface and the registry of methods.

A method is a config dataclass plus one implementation class, registered under a short name equal
to its module's file name and to the YAML ``method.type``. The runner calls the hooks in this
order (see mmcit/runner.py):

    method.setup(model, ctx)
    for stage in method.plan(tasks):
        method.before_task(stage, model)
        for each optimizer step:
            loss (+ method.extra_loss) -> backward -> clip -> optimizer.step()
            method.after_optimizer_step(model)      # gradients are still present here
        method.after_task(stage, model)
        checkpoint; evaluate stage.eval_tasks, routing each sample with method.select_adapter
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from mmcit.data.sample import Sample, TaskData
    from mmcit.model import MMModel


@dataclass
class Stage:
    """One training stage of a stream: the tasks trained together, then the tasks evaluated."""

    name: str
    train: list["TaskData"]
    evaluate: list["TaskData"]
    index: int = 0

    @property
    def instructions(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in self.train:
            for ins in t.instructions:
                seen.setdefault(ins, None)
        return list(seen)


@dataclass
class RunContext:
    """What a method may need to know about the run it is part of."""

    run_dir: Path
    task_names: list[str]
    seed: int = 0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """Base of every method's config; ``type`` selects the registered method."""

    type: str = "lora_ft"


class Method:
    """Base class: every hook is a no-op, so a method overrides only what it changes."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    # -- the stream ---------------------------------------------------------------------------
    def plan(self, tasks: list["TaskData"]) -> list[Stage]:
        """Sequential by default: train task i, then evaluate tasks 1..i."""
        return [Stage(name=t.name, train=[t], evaluate=tasks[: i + 1], index=i) for i, t in enumerate(tasks)]

    # -- hooks --------------------------------------------------------------------------------
    def setup(self, model: "MMModel", ctx: RunContext) -> None:
        self.ctx = ctx

    def before_task(self, stage: Stage, model: "MMModel") -> None:
        pass

    def extra_loss(self, model: "MMModel", batch: dict, outputs: Any) -> "torch.Tensor | None":
        return None

    def after_optimizer_step(self, model: "MMModel") -> None:
        pass

    def after_task(self, stage: Stage, model: "MMModel") -> None:
        pass

    def select_adapter(self, samples: list["Sample"]) -> list[str | None]:
        """The adapter each test sample is evaluated with; None keeps the active one."""
        return [None] * len(samples)

    # -- persistence and reporting ------------------------------------------------------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> dict:
        """Method-specific figures for the report (JSON-serialisable)."""
        return {}


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS[cls.name] = cls
    return cls


def build_method(cfg: MethodConfig) -> Method:
    if cfg.type not in METHODS:
        raise KeyError(f"unknown method {cfg.type!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[cfg.type](cfg)
