"""One factory for the model of a run, used by the recipe, ``predict``, the API and the benchmarks."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from mmcit.models.base import BACKENDS, BuildContext
from mmcit.models.wrapper import LoraSettings, MMModel

if TYPE_CHECKING:
    from mmcit.config import RunConfig
    from mmcit.data.stream import StreamData


def build_model(cfg: "RunConfig", data: "StreamData", cache_dir: Path | None = None,
                log: Callable[[str], None] = print, progress: bool = True) -> MMModel:
    """The run's model: the backend's base (``model.type``) with its first LoRA adapter, seeded by
    ``cfg.seed`` (LoRA A matrices are random: same seed, same start)."""
    built = BACKENDS.get(cfg.model.type, "model.type")().build(
        cfg.model, BuildContext(data=data, cache_dir=cache_dir or cfg.data.cache_path(), seed=cfg.seed,
                                log=log, progress=progress, tower_token_cache=cfg.train.tower_token_cache))
    lora = LoraSettings(r=cfg.model.lora_r, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout,
                        target_modules=list(cfg.model.lora_targets))
    torch.manual_seed(cfg.seed)
    model = MMModel.from_base(built.model, built.processor, lora, template=built.template,
                              gradient_checkpointing=getattr(cfg.model, "gradient_checkpointing", False),
                              parts=built.parts)
    model.pad_to_square = cfg.model.image_aspect == "pad"
    return model
