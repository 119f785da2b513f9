"""LCIA: instruction grouping + adaptive EMA (docs/method.md).

Before each task the task's instruction set is compared with the codebook of every parameter group
(a LoRA adapter plus its projector copy). When the best similarity is accepted (at least
``routing.tau``) that group is re-trained, with the adaptive EMA on; otherwise a new group is opened
whose adapter starts as a copy of the most recently trained group's, trained without EMA
(``ema_when: on_reuse``, the reference) or with it (``always``). At test time every sample is routed
to a group by its own prompt, never its task label (``routing.mode: per_instance``), by its task
(``per_task``, an oracle) or per test file (``per_file``, the reference); the routing rule and
embedder can differ from the grouping ones (``method.routing``, docs/routing.md).

The method holds two parts: an ``InstructionRouter`` (codebook, threshold rule, routing) and an
``EMAComponent``. Group names are ``group_1``, ``group_2``, ...; a mapping group -> adapter name is
kept because the first group takes over the model's initial adapter (``default``) instead of adding
a fresh one: renaming peft adapters is not a public operation, and an unused ``default`` adapter
would only cost memory. Every later group's adapter is named after the group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmcit.ema.component import EMAComponent, EMASettings
from mmcit.ema.trace import trace_file
from mmcit.errors import ConfigError
from mmcit.io import write_json
from mmcit.methods.base import METHODS, Method, MethodConfig, Stage
from mmcit.routing.component import InstructionRouter, RouterSettings
from mmcit.training.distributed import is_main

if TYPE_CHECKING:
    from mmcit.data.sample import Sample
    from mmcit.models.wrapper import MMModel

EMA_WHEN = ("on_reuse", "always")


@dataclass
class LCIAConfig(MethodConfig):
    """``lcia``: routing settings (``method.routing``), EMA settings (``method.ema``) and when the
    EMA is on (``ema_when``)."""

    type: str = "lcia"
    routing: RouterSettings = field(default_factory=RouterSettings)
    ema: EMASettings = field(default_factory=EMASettings)
    ema_when: str = "on_reuse"  # on_reuse (reference) | always

    def validate(self) -> None:
        """``ema_when`` must be one of EMA_WHEN (the parts validate themselves)."""
        if self.ema_when not in EMA_WHEN:
            raise ConfigError(f"method.ema_when must be one of {', '.join(EMA_WHEN)}, got {self.ema_when!r}")


def train_only(model: "MMModel", adapter: str) -> None:
    """Make exactly ``adapter``'s LoRA matrices and projector copy trainable.

    peft 0.21's ``set_adapter`` already does this; setting it explicitly keeps the optimizer (built
    from ``trainable_named_parameters``) and the EMA off other groups' weights with any peft
    version. Frozen base weights (vision tower, LLM, the projector's original copy) are untouched.
    """
    key = f".{adapter}."
    for name, p in model.peft.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            p.requires_grad_(key in name)


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


@METHODS.register
class LCIA(Method):
    """Instruction-grouped parameter allocation with the adaptive EMA on re-trained groups."""

    name = "lcia"
    config_cls = LCIAConfig

    def __init__(self, cfg: LCIAConfig):
        super().__init__(cfg)
        self.routing = InstructionRouter(cfg.routing)
        self.ema = EMAComponent(cfg.ema)
        self.group_adapters: dict[str, str] = {}  # group -> adapter name
        self.records: list[dict[str, Any]] = []  # one per trained stage

    # -- hooks ------------------------------------------------------------------------------------
    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """Choose the stage's group (re-train or expand), switch to its adapter, arm the EMA."""
        instructions = stage.instructions
        best, sim, sims = self.routing.match(instructions)
        if not self.routing.groups:
            group, decision = "group_1", "first"
            self.group_adapters[group] = model.active_adapter  # the model's initial adapter
        elif best is not None:
            group, decision = best, "reused"
        else:  # also a task without instructions: nothing to match, so it gets its own group
            group, decision = f"group_{len(self.routing.groups) + 1}", "expanded"
            model.add_adapter(group, copy_from=self.group_adapters[self.routing.latest])
            self.group_adapters[group] = group
        adapter = self.group_adapters[group]
        model.set_adapter(adapter)
        train_only(model, adapter)
        self.routing.assign(group, instructions, [t.name for t in stage.train],
                            [[s.prompt for s in t.train] for t in stage.train])
        ema_on = decision == "reused" or self.cfg.ema_when == "always"
        self.records.append({
            "stage": stage.name, "tasks": [t.name for t in stage.train], "group": group, "adapter": adapter,
            "decision": decision, "similarity": _round(sim),
            "similarities": {g: _round(s) for g, s in sims.items()}, "ema": ema_on,
        })
        if ema_on:
            self.ema.start(model)  # a fresh adaptive EMA over the active adapter

    def after_optimizer_step(self, model: "MMModel") -> None:
        """Blend into the EMA when it is on for this stage."""
        if self.ema.active:
            self.ema.update()

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """Copy the EMA weights in (when on), write the codebook, label the coming routing counts."""
        if self.ema.active:
            main = self.ctx is not None and self.ctx.run_dir is not None and is_main()
            self.ema.finish(stage.name, trace_file(self.ctx.run_dir, stage.index, stage.name) if main else None)
        self.routing.router.label = stage.name  # the evaluation that follows is counted under this stage
        if self.ctx is not None and is_main():  # data parallel: rank 0 writes the run's files
            write_json(self.ctx.run_dir / "codebook.json", self.codebook_json())

    def select_adapter(self, samples: list["Sample"]) -> list[str | None]:
        """The adapter of each sample's routed group (None before the first task)."""
        if not self.routing.groups:
            return [None] * len(samples)
        return [None if g is None else self.group_adapters[g] for g in self.routing.route(samples)]

    def route_prompt(self, prompt: str) -> dict[str, Any]:
        """The group, adapter, similarity and deciding span for one free prompt, by its text alone
        (prediction)."""
        d = self.routing.route_prompt(prompt)
        return {"group": d.group, "adapter": self.group_adapters.get(d.group) if d.group else None,
                "similarity": _round(d.similarity), "instruction": d.instruction, "fell_back": d.fell_back}

    # -- persistence and reporting ----------------------------------------------------------------
    def codebook_json(self) -> dict[str, Any]:
        """The codebook as written to ``codebook.json``; ``Codebook.load`` reads it back."""
        return {**self.routing.codebook.to_dict(), "tau": self.cfg.routing.tau,
                "adapters": dict(self.group_adapters), "tasks": [dict(r) for r in self.records]}

    def state_dict(self) -> dict:
        """Routing state, groups, records and the EMA's state."""
        return {**self.routing.state_dict(), "adapters": dict(self.group_adapters),
                "records": [dict(r) for r in self.records], "ema_on": self.ema.active,
                "adaptive_ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the codebook, groups and counters (the caller recreates the adapters)."""
        self.routing.load_state_dict(state)
        self.group_adapters = dict(state.get("adapters", {}))
        self.records = [dict(r) for r in state.get("records", [])]
        self.ema.load_state_dict(state.get("adaptive_ema", {}))

    def summary(self) -> dict:
        """Task -> group table with similarities, groups, EMA figures and routing counts."""
        groups = {g: {"adapter": self.group_adapters.get(g), "instructions": len(v),
                      "tasks": [t for r in self.records if r["group"] == g for t in r["tasks"]]}
                  for g, v in self.routing.groups.items()}
        s = self.cfg.routing
        return {"tau": s.tau, "embedder": s.embedder, "routing": s.mode, "route_rule": s.route_rule,
                "route_embedder": s.routing_embedder, "route_floor": s.bar, "ema_when": self.cfg.ema_when,
                "groups": groups, "tasks": [dict(r) for r in self.records], "ema": self.ema.summary(),
                "routing_counts": self.routing.state_dict()["routing_counts"]}
