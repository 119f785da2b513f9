"""One global feature vector per image from a model's frozen vision tower, for methods that compare
images with stored task anchors (``mmcit.routing.anchors``).

The vector is the tower's output tokens, averaged: for a ViT the configured hidden layer's patch
tokens (``tower_cache.tower_tokens`` drops the class token; ``composed`` keeps it when its
``feature_select`` is ``full``), for the tiny model's CNN one token per cell of its feature map. It comes before the
projector on purpose: the projector trains, and differs between adapters, so features taken after
it would move while the anchors they are compared with stay put. Every backend of mmcit has such a
tower: ``tiny_llava`` and ``hf_llava`` (transformers LLaVA-style models, through
``tower_cache.tower_tokens``) and ``composed`` (``ComposedVLM.tower_features``).
"""
from __future__ import annotations

import torch

from mmcit.errors import MmcitError
from mmcit.models.tower_cache import tower_tokens

__all__ = ["pooled_image_features"]


@torch.no_grad()
def pooled_image_features(base, pixels: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``(N, D)`` float32 on the CPU: the mean over tokens of the frozen tower's output for each of
    ``pixels`` (``(N, 3, H, W)`` as the model's processor gives them). ``base`` is the backend's
    model (``MMModel.peft.get_base_model()``), not the peft wrapper."""
    if hasattr(base, "tower_features"):  # composed: open_clip tower
        chunks = [base.tower_features(pixels[k:k + batch_size]) for k in range(0, len(pixels), batch_size)]
        tokens = torch.cat(chunks)
    else:
        cfg = getattr(base, "config", None)
        kind = getattr(cfg, "model_type", None)
        if kind not in ("llava", "fast_vlm") or not hasattr(getattr(base, "model", None), "vision_tower"):
            raise MmcitError(f"image features: the {type(base).__name__} model has no vision tower mmcit can read; "
                             "use method.anchors.modalities=[text]")
        if kind == "llava" and not isinstance(cfg.vision_feature_layer, int):
            raise MmcitError("image features: vision_feature_layer must be one layer (an int), got "
                             f"{cfg.vision_feature_layer}; use method.anchors.modalities=[text]")
        tokens = tower_tokens(base, pixels, batch_size)
    return tokens.float().mean(dim=1).cpu()
