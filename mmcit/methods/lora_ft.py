"""Sequential LoRA fine-tuning: one shared adapter (and projector) trained task after task.

The lower baseline of continual instruction tuning: every hook of `Method` is a no-op.
"""
from dataclasses import dataclass

from mmcit.methods.base import Method, MethodConfig, register


@dataclass
class LoraFTConfig(MethodConfig):
    type: str = "lora_ft"


@register
class LoraFT(Method):
    name = "lora_ft"
    config_cls = LoraFTConfig
