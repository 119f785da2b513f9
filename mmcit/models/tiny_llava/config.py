"""The ``model:`` settings of the tiny LLaVA (``type: tiny_llava``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from mmcit.models.base import ModelConfig
from mmcit.models.tiny_llava.build import EFFICIENTNET, VISION_TOWERS


@dataclass
class PretrainConfig:
    """``model.pretrain``: the base's caption stage (and, for the clip tower, its word stage)."""

    enabled: bool = True
    vision_steps: int = 2000  # stage 0 (clip tower only): the tower alone on caption words (no LM)
    steps: int = 1000  # stage 1: projector + LM (and the tower unless frozen) on the captions
    freeze_vision_in_captions: bool = True  # keep the tower from stage 0 during stage 1
    batch_size: int = 32
    lr: float = 2e-3
    # > 1: each step draws this many batches' worth of records, sorts them by length and trains on one
    # slice of batch_size of them (every record stays equally likely; a batch pads far less)
    length_pool: int = 1


@dataclass
class TinyLlavaConfig(ModelConfig):
    """``model`` settings of the tiny LLaVA (``type: tiny_llava``)."""

    type: str = "tiny_llava"
    chat_template: str = "vicuna_plain"
    # efficientnet_lite0: pretrained, frozen (patch_size and vision_* are then unused); clip: random ViT
    vision: str = "efficientnet_lite0"
    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_intermediate: int = 384
    vocab_size: int = 1024
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def problems(self) -> list[str]:
        """Problems with the values, one line each (empty when fine)."""
        problems = super().problems()
        if self.vision not in VISION_TOWERS:
            problems.append(f"model.vision must be one of {', '.join(VISION_TOWERS)}")
        if self.vision == "clip" and self.image_size % self.patch_size:
            problems.append("model.image_size must be a multiple of model.patch_size")
        if self.vision == EFFICIENTNET and self.image_size % 16:
            problems.append("model.image_size must be a multiple of 16 for the efficientnet_lite0 tower (its stride)")
        if self.pretrain.length_pool < 1:
            problems.append("model.pretrain.length_pool must be >= 1 (1: plain random batches)")
        if self.chat_template in ("tokenizer", "processor"):
            problems.append("model.chat_template: the tiny model's tokenizer has no chat template; "
                            "use vicuna_plain or vicuna_v1")
        return problems
