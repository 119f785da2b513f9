"""Sequential LoRA fine-tuning: one shared adapter (and projector) trained task after task.

The lower baseline of continual instruction tuning: every hook of `Method` is a no-op.
"""
from dataclasses import dataclass

from mmcit.methods.base import METHODS, Method, MethodConfig


@dataclass
class LoraFTConfig(MethodConfig):
    """``lora_ft`` has no options."""

    type: str = "lora_ft"


@METHODS.register
class LoraFT(Method):
    """One shared LoRA adapter and projector, fine-tuned task after task (the lower bound)."""

    name = "lora_ft"
    config_cls = LoraFTConfig
