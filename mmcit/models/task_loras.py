"""One LoRA per task, all of them summed: the part that ``olora`` and ``sefe`` hold.

The first task trains the model's initial adapter. Every later task gets a new adapter,
``task_<n>``. Its LoRA starts fresh (random A, zero B) and its projector copy starts as a copy of the
previous task's. From then on every task's LoRA answers, with their updates summed in each LoRA
layer (``MMModel.stack_adapters``). Only the newest LoRA and its projector copy train. The earlier
LoRAs are frozen, so their sum plus the new one is exactly what merging each finished LoRA into
the base weights would give. Unlike a merge, it stays exact in low precision, and the checkpoints
keep every task's LoRA.

The projector is one projector, trained task after task, as in LLaVA's LoRA training. peft keeps
one projector copy per adapter (``modules_to_save``), and only the newest copy is used. The earlier
copies are frozen snapshots that nothing reads, but they stay in the checkpoints and count as
stored parameters.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel

__all__ = ["TaskLoRAs"]


class TaskLoRAs:
    """The adapter of each trained task, in order, stacked on the model (see the module docstring)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.model: "MMModel | None" = None

    def attach(self, model: "MMModel") -> None:
        """Remember the model, so that :meth:`load_state_dict` can restore the stack on it."""
        self.model = model

    def begin(self, index: int, model: "MMModel") -> str:
        """Stage ``index`` (0-based) trains its own LoRA: it is added unless it exists, then all task
        LoRAs are stacked with it as the trainable one. Returns its adapter name."""
        if index >= len(self.names):
            if not self.names:
                self.names.append(model.active_adapter)  # the first task trains the initial adapter
            else:
                name = f"task_{len(self.names) + 1}"
                model.add_adapter(name, copy_from=self.names[-1], fresh_lora=True)
                self.names.append(name)
        model.stack_adapters(self.names)
        return self.names[-1]

    @property
    def newest(self) -> str | None:
        """The adapter that trains now (None before the first task)."""
        return self.names[-1] if self.names else None

    @property
    def earlier(self) -> list[str]:
        """The frozen adapters of the tasks before the newest one."""
        return self.names[:-1]

    def state_dict(self) -> dict:
        """The task adapters' names, in order."""
        return {"adapters": list(self.names)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the names and, on an attached model whose adapters were restored, the stack."""
        self.names = list(state.get("adapters", []))
        if self.model is not None and self.names:
            self.model.stack_adapters(self.names)
