"""LCIA: instruction grouping + adaptive EMA (docs LCIA.md sections 1 and 2).

Before each task the task's instruction set is compared with the codebook of every parameter group
(a LoRA adapter plus its projector copy). At similarity >= ``tau`` the most similar group is
re-trained, with the adaptive EMA on; below it a new group is opened whose adapter starts as a copy
of the most recently trained group's, trained without EMA (``ema_when: on_reuse``, the reference)
or with it (``always``). At test time every sample is routed to a group by its own instruction
(``routing: per_instance``), by its task (``per_task``, an oracle) or per test file (``per_file``,
the reference).

Group names are ``group_1``, ``group_2``, ...; a mapping group -> adapter name is kept because the
first group simply takes over the model's initial adapter (``default``) instead of adding a fresh
one: renaming peft adapters is not a public operation, and an unused ``default`` adapter would
only cost memory. Every later group's adapter is named after the group.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmcit.embedders import EMBEDDERS, EmbedderUnavailable, build_embedder, check_embedder
from mmcit.distributed import is_main
from mmcit.io import write_json
from mmcit.methods.adaptive_ema import AdaptiveEMAMethod, _config_error
from mmcit.methods.base import MethodConfig, Stage, register
from mmcit.routing import ROUTING_MODES, Codebook, Router

if TYPE_CHECKING:
    from mmcit.data.sample import Sample
    from mmcit.model import MMModel

EMA_WHEN = ("on_reuse", "always")


@dataclass
class LCIAConfig(MethodConfig):
    type: str = "lcia"
    tau: float = 0.9  # reference: 0.9 for CoIN's original instructions, 0.3 for the diverse ones
    embedder: str = "tfidf"  # tfidf (reference) | sentence | hashing
    embedder_path: str | None = None  # sentence: a local sentence-transformers folder
    routing: str = "per_instance"  # per_instance | per_task | per_file
    ema_when: str = "on_reuse"  # on_reuse (reference) | always
    scale: float = 2.0
    fallback: float = 0.01
    granularity: str = "tensor"

    def validate(self) -> None:
        """Reject settings LCIA cannot run, including an embedder that is not available here."""
        if not -1.0 <= self.tau <= 1.0:  # also rejects NaN
            raise _config_error(f"method.tau must be a cosine similarity in [-1, 1], got {self.tau}")
        for key, value, valid in (("embedder", self.embedder, EMBEDDERS), ("routing", self.routing, ROUTING_MODES),
                                  ("ema_when", self.ema_when, EMA_WHEN), ("granularity", self.granularity,
                                                                         ("tensor", "layer"))):
            if value not in valid:
                raise _config_error(f"method.{key} must be one of {', '.join(valid)}, got {value!r}")
        if not 0.0 < self.fallback <= 1.0:
            raise _config_error(f"method.fallback must be in (0, 1], got {self.fallback}")
        try:  # cheap (no model load), and it fails here rather than after the base is pretrained
            check_embedder(self.embedder, self.embedder_path)
        except EmbedderUnavailable as e:
            raise _config_error(f"method.embedder: {e}") from None


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


@register
class LCIA(AdaptiveEMAMethod):
    """Instruction-grouped parameter allocation with the adaptive EMA on re-trained groups."""

    name = "lcia"
    config_cls = LCIAConfig

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)  # validates the config
        self.embedder = build_embedder(cfg.embedder, cfg.embedder_path)
        self.codebook = Codebook(self.embedder)
        self.router = Router(self.codebook, cfg.tau, cfg.routing)
        self.group_adapters: dict[str, str] = {}  # group -> adapter name
        self.records: list[dict[str, Any]] = []  # one per trained stage
        self._ema_on = False

    # -- hooks ------------------------------------------------------------------------------------
    def before_task(self, stage: Stage, model: "MMModel") -> None:
        """Choose the stage's group (re-train or expand), switch to its adapter, arm the EMA."""
        instructions = stage.instructions
        best, sim, sims = self.codebook.match(instructions, self.cfg.tau)
        if not self.codebook.groups:
            group, decision = "group_1", "first"
            self.group_adapters[group] = model.active_adapter  # the model's initial adapter
        elif best is not None:
            group, decision = best, "reused"
        else:  # also a task without instructions: nothing to match, so it gets its own group
            group, decision = f"group_{len(self.codebook.groups) + 1}", "expanded"
            model.add_adapter(group, copy_from=self.group_adapters[self.router.fallback])
            self.group_adapters[group] = group
        adapter = self.group_adapters[group]
        model.set_adapter(adapter)
        train_only(model, adapter)
        self.codebook.add(group, instructions)
        self.router.fallback = group  # the latest trained group, as the reference falls back to
        for task in stage.train:
            self.router.task_groups[task.name] = group
        self._ema_on = decision == "reused" or self.cfg.ema_when == "always"
        self.records.append({
            "stage": stage.name, "tasks": [t.name for t in stage.train], "group": group, "adapter": adapter,
            "decision": decision, "similarity": _round(sim),
            "similarities": {g: _round(s) for g, s in sims.items()}, "ema": self._ema_on,
        })
        if self._ema_on:
            super().before_task(stage, model)  # a fresh AdaptiveEMA over the active adapter

    def after_optimizer_step(self, model: "MMModel") -> None:
        if self._ema_on:
            super().after_optimizer_step(model)

    def after_task(self, stage: Stage, model: "MMModel") -> None:
        """Copy the EMA weights in (when on) and write the codebook; label routing counts."""
        if self._ema_on:
            super().after_task(stage, model)
            self._ema_on = False
        self.router.label = stage.name  # the evaluation that follows is counted under this stage
        ctx = getattr(self, "ctx", None)
        if ctx is not None:
            if is_main():  # data parallel: rank 0 writes the run's files
                write_json(ctx.run_dir / "codebook.json", self.codebook_json())

    def select_adapter(self, samples: list["Sample"]) -> list[str | None]:
        """The adapter of each sample's routed group (None before the first task)."""
        if not self.codebook.groups:
            return [None] * len(samples)
        return [None if g is None else self.group_adapters[g] for g in self.router.route(samples)]

    def route_instruction(self, instruction: str) -> tuple[str | None, str | None, float | None]:
        """``(group, adapter, similarity)`` for one free-standing instruction (prediction)."""
        group, sim, _ = self.router.decide([instruction])
        return group, self.group_adapters.get(group) if group else None, _round(sim)

    # -- persistence and reporting ----------------------------------------------------------------
    def codebook_json(self) -> dict[str, Any]:
        """The codebook as written to ``codebook.json``; ``Codebook.load`` reads it back."""
        return {**self.codebook.to_dict(), "tau": self.cfg.tau, "adapters": dict(self.group_adapters),
                "tasks": [dict(r) for r in self.records]}

    def state_dict(self) -> dict:
        return {"codebook": self.codebook.to_dict(), "adapters": dict(self.group_adapters),
                "records": [dict(r) for r in self.records], "fallback_group": self.router.fallback,
                "task_groups": dict(self.router.task_groups), "routing_counts": copy.deepcopy(self.router.counts),
                "ema_on": self._ema_on, "adaptive_ema": super().state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the codebook, groups and counters (the caller recreates the adapters)."""
        self.codebook = Codebook.from_dict(state.get("codebook", {}), self.embedder)
        self.router = Router(self.codebook, self.cfg.tau, self.cfg.routing, state.get("fallback_group"),
                             state.get("task_groups"))
        self.router.counts = copy.deepcopy(state.get("routing_counts", {}))
        if self.router.counts:
            self.router.label = list(self.router.counts)[-1]
        self.group_adapters = dict(state.get("adapters", {}))
        self.records = [dict(r) for r in state.get("records", [])]
        self._ema_on = bool(state.get("ema_on", False))
        super().load_state_dict(state.get("adaptive_ema", {}))

    def summary(self) -> dict:
        """Task -> group table with similarities, groups, EMA figures and routing counts."""
        groups = {g: {"adapter": self.group_adapters.get(g), "instructions": len(v),
                      "tasks": [t for r in self.records if r["group"] == g for t in r["tasks"]]}
                  for g, v in self.codebook.groups.items()}
        return {"tau": self.cfg.tau, "embedder": self.cfg.embedder, "routing": self.cfg.routing,
                "ema_when": self.cfg.ema_when, "groups": groups, "tasks": [dict(r) for r in self.records],
                "ema": super().summary(), "routing_counts": copy.deepcopy(self.router.counts)}
