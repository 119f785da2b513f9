"""The method-hook interface and the registry of methods.

A method is a config dataclass plus one implementation class, registered in ``METHODS`` under a
short name equal to its module's file name and to the YAML ``method.type``. Behaviour that several
methods share lives in parts they hold (``mmcit.ema.EMAComponent``, ``mmcit.routing.InstructionRouter``),
not in base classes. The recipe (``mmcit/recipe.py``) calls the hooks in this order:

    method.setup(model, ctx)
    stages = method.plan(tasks)
    for stage in stages:
        method.before_stage(stage, model)
        samples, share = method.mixed_in(stage)       (only when the stage trains something)
        for each optimizer step:                       (none when the stage trains nothing)
            the global batch: its stage rows, plus round(share * batch) rows of ``samples``
            loss (+ method.extra_loss(model, batch, outputs)) -> backward -> clip -> optimizer.step()
            method.after_optimizer_step(model)         # gradients are still present here
        method.after_stage(stage, model)
        method.consolidate(stage, model, passes)       # final weights; passes over samples allowed
        method.select_adapter(task.split(eval.split)) for each task of stage.evaluate, then generation
        checkpoint: method.state_dict()
    (a resume calls method.load_state_dict(state) after setup, or after before_stage mid-stage)
    method.summary() goes into results.json whenever it is written, with the run's costs, which
    count method.stored_tensors() and method.stored_samples() besides the adapters
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mmcit.registry import Registry

if TYPE_CHECKING:
    import torch

    from mmcit.data.sample import Sample, TaskData
    from mmcit.models.wrapper import MMModel
    from mmcit.training.sample_pass import SamplePass

__all__ = ["METHODS", "Method", "MethodConfig", "RunContext", "Stage", "build_method"]


@dataclass
class Stage:
    """One training stage of a stream: the tasks trained together, then the tasks evaluated."""

    name: str
    train: list["TaskData"]
    evaluate: list["TaskData"]
    index: int = 0

    @property
    def instructions(self) -> list[str]:
        """The distinct instructions of the stage's training samples, in first-seen order."""
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
    __registry__: ClassVar[Registry]  # set below: ``type`` resolves through METHODS

    def validate_run(self, run: Any) -> None:
        """Checks of the method's options against the rest of the run's config (``run`` is the
        RunConfig), raising ConfigError; called by ``RunConfig.validate``. Default: none."""


class Method:
    """Base class: every hook is a no-op, so a method overrides only what it changes."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    #: True for a method whose accuracy matrix has one row (it is evaluated once, on every task).
    joint: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg
        self.ctx: RunContext | None = None

    # -- the stream ---------------------------------------------------------------------------
    def plan(self, tasks: list["TaskData"]) -> list[Stage]:
        """Sequential by default: train task i, then evaluate tasks 1..i."""
        return [Stage(name=t.name, train=[t], evaluate=tasks[: i + 1], index=i) for i, t in enumerate(tasks)]

    # -- hooks --------------------------------------------------------------------------------
    def setup(self, model: "MMModel", ctx: RunContext) -> None:
        """Once, before the first stage (and before a resume loads the method's state)."""
        self.ctx = ctx

    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """Before a stage trains (choose or add an adapter, start an EMA, ...)."""

    def mixed_in(self, stage: Stage) -> tuple[list["Sample"], float]:
        """Samples from outside the stage mixed into its training batches, and the share of each
        global batch they fill (replay); called after ``before_stage`` (and after a mid-stage
        resume loaded the state). Default: none, so batches hold the stage's samples only."""
        return [], 0.0

    def extra_loss(self, model: "MMModel", batch: dict, outputs: Any) -> "torch.Tensor | None":
        """A term added to the language-model loss of a micro-batch (None: nothing).

        ``batch`` is the collated micro-batch (``input_ids``, ``attention_mask``, ``pixel_values``,
        ``labels``); where the loop fed the model the frozen tower's cached output, it also holds
        those tokens as ``image_tokens``, for a method that runs a second forward (LwF).
        """
        return None

    def after_optimizer_step(self, model: "MMModel") -> None:
        """After every optimizer step, while the gradients the step used are still present."""

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """After a stage trained, before it is evaluated (copy EMA weights in, ...)."""

    def consolidate(self, stage: Stage, model: "MMModel", passes: "SamplePass") -> None:
        """After ``after_stage``, before evaluation: the stage's weights are final. ``passes``
        runs forward and backward over chosen samples the way training encodes them (EWC's
        Fisher); a method that uses it leaves the gradients cleared."""

    def select_adapter(self, samples: list["Sample"]) -> list[str | None]:
        """The adapter each test sample is evaluated with; None keeps the active one."""
        return [None] * len(samples)

    # -- persistence and reporting ------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a checkpoint keeps of the method (JSON, plus tensors inside a stage)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (the caller recreates the adapters)."""

    def summary(self) -> dict:
        """Method-specific figures for the report (JSON-serialisable)."""
        return {}

    # -- cost accounting ----------------------------------------------------------------------
    def stored_tensors(self) -> dict[str, list["torch.Tensor"]]:
        """Tensors the method keeps now besides the adapters, by kind (EWC: ``fisher``,
        ``anchor``); results.json counts their values under ``costs.stored_parameters.method``."""
        return {}

    def stored_samples(self) -> dict[str, int]:
        """Training samples the method keeps now (a replay buffer), counted by kind."""
        return {}


#: ``method.type`` -> method class; the built-in ones are the modules of ``mmcit.methods``.
METHODS: Registry[type[Method]] = Registry("methods", package="mmcit.methods", name_is_file=True,
                                           default="lora_ft")
MethodConfig.__registry__ = METHODS


def build_method(cfg: MethodConfig) -> Method:
    """The method ``cfg.type`` built from its config."""
    return METHODS.get(cfg.type, "method.type")(cfg)
