"""One adapter per task, one of them answering at a time: the part ``eproj``, ``disco`` and
``hide_llava`` hold.

Task k (k = 1, 2, ...) trains its own adapter (LoRA + projector copy, ``MMModel.add_adapter``). The
first task takes over the model's initial adapter (``default``): peft adapters cannot be renamed,
and an unused one would only cost memory. Task k > 1 gets ``task_k``, created as a copy of task
k-1's adapter; the method then decides what starts fresh (``init_lora``, ``projector_from_base``)
and what trains (``set_trainable``). At test time the method chooses one of these adapters per
sample, and evaluation batches the samples by adapter.

The helpers below act on one adapter's tensors by name; a LoRA tensor's name holds ``lora_A`` or
``lora_B`` and ``.<adapter>.``, a projector copy's ``modules_to_save.<adapter>.``, and the base's
frozen projector is ``original_module``.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel

__all__ = ["TaskAdapters", "init_lora", "layer_index", "lora_tensors", "projector_from_base", "projector_tensors",
           "set_trainable", "share_projector"]

_LAYER = re.compile(r"\.layers\.(\d+)\.")


def lora_tensors(model: "MMModel", adapter: str) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter of ``adapter``'s LoRA matrices (A and B of every LoRA layer)."""
    key = f".{adapter}."
    return {n: p for n, p in model.peft.named_parameters() if key in n and ("lora_A" in n or "lora_B" in n)}


def projector_tensors(model: "MMModel", adapter: str) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter of ``adapter``'s projector copy."""
    key = f"modules_to_save.{adapter}."
    return {n: p for n, p in model.peft.named_parameters() if key in n}


def layer_index(name: str) -> int | None:
    """The decoder layer a parameter belongs to (``...layers.N...``), or None."""
    found = _LAYER.findall(name)
    return int(found[-1]) if found else None


@torch.no_grad()
def init_lora(model: "MMModel", adapter: str, std: float) -> None:
    """A fresh LoRA for ``adapter``: every A drawn from N(0, std^2), every B zero (the adapter then
    adds nothing until it trains). Draws from torch's global generator."""
    for name, p in lora_tensors(model, adapter).items():
        if "lora_A" in name:
            p.normal_(0.0, std)
        else:
            p.zero_()


@torch.no_grad()
def projector_from_base(model: "MMModel", adapter: str) -> None:
    """Reset ``adapter``'s projector copy to the base model's own (frozen) projector."""
    params = dict(model.peft.named_parameters())
    for name, p in projector_tensors(model, adapter).items():
        p.copy_(params[name.replace(f"modules_to_save.{adapter}.", "original_module.")])


@torch.no_grad()
def share_projector(model: "MMModel", source: str) -> None:
    """Copy ``source``'s projector copy into every other adapter's: one projector for all tasks, as
    LLaVA-style continual training has, whichever adapter answers."""
    src = projector_tensors(model, source)
    for adapter in model.adapters:
        if adapter != source:
            for name, p in projector_tensors(model, adapter).items():
                p.copy_(src[name.replace(f"modules_to_save.{adapter}.", f"modules_to_save.{source}.")])


def set_trainable(model: "MMModel", adapter: str, lora: bool = True, projector: bool = True) -> None:
    """Exactly ``adapter``'s LoRA (if ``lora``) and projector copy (if ``projector``) train; every other
    adapter weight is frozen (peft's ``set_adapter`` would mark both parts of the active adapter)."""
    key = f".{adapter}."
    for name, p in model.peft.named_parameters():
        if "lora_" in name:
            p.requires_grad_(lora and key in name)
        elif "modules_to_save" in name:
            p.requires_grad_(projector and key in name)


class TaskAdapters:
    """The adapter of each trained task, in order, with the tasks each one holds."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.tasks: list[list[str]] = []

    def begin(self, index: int, tasks: list[str], model: "MMModel") -> tuple[str, bool]:
        """The adapter of stage ``index`` (0-based), made active; added (as a copy of the previous
        task's) unless it exists. Returns ``(name, added)``: a method initialises only what it added."""
        added = index >= len(self.names)
        if added:
            if not self.names:
                name = model.active_adapter  # the first task trains the initial adapter
            else:
                name = f"task_{len(self.names) + 1}"
                model.add_adapter(name, copy_from=self.names[-1])
            self.names.append(name)
            self.tasks.append(list(tasks))
        name = self.names[index]
        model.set_adapter(name)
        return name, added

    @property
    def newest(self) -> str | None:
        """The adapter of the most recent task (None before the first)."""
        return self.names[-1] if self.names else None

    def state_dict(self) -> dict:
        """The adapters' names and tasks, in order."""
        return {"adapters": list(self.names), "adapter_tasks": [list(t) for t in self.tasks]}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict` (the caller restored the adapters themselves)."""
        self.names = list(state.get("adapters", []))
        self.tasks = [list(t) for t in state.get("adapter_tasks", [])]
