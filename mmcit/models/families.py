"""What differs between the vision-language families the ``hf_vlm`` backend loads.

One row per family (its ``model_type`` in config.json, as transformers 5 names it), read from the
modules of the loaded ``*ForConditionalGeneration``: where the vision tower, the projector (also
called connector or merger) and the language model sit, how an image becomes tokens, how the
processor's per-sample outputs join into a batch, and whether mmcit's tower-token cache reproduces
the model's forward exactly. LoRA goes on the language model's linear layers only; every family
names them ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj`` under its language model.

How the processor's outputs (besides ``input_ids`` and ``attention_mask``) join into a batch
(``mmcit.data.processor_encoder.RULES``):

* ``image``: one image per sample, ``(3, H, W)``; stacked;
* ``cat``: rows of images, patches or sizes; concatenated along the first axis in sample order;
* ``pad_cat``: ``(1, tiles, ...)`` per sample; the tile axis zero-padded to the batch's longest,
  then concatenated (the model skips the padding tiles);
* ``tokens``: one value per token, ``(L,)``; padded with zeros like ``input_ids`` (zeros for a
  sample without an image).
"""
from __future__ import annotations

from dataclasses import dataclass, field

@dataclass(frozen=True)
class Family:
    """Where one family keeps its parts (module paths in the loaded model) and how its images batch."""

    name: str  # config.json's model_type
    vision: str  # the vision tower
    projector: str  # the trainable projector / connector / merger (one copy per adapter)
    language_model: str  # the language model whose linear layers get LoRA
    images: str  # how an image becomes tokens, in words
    batch: dict[str, str] = field(default_factory=dict)  # processor output -> one of RULES
    tower_cache: bool = False  # mmcit.models.tower_cache reproduces the forward exactly

    @property
    def projector_key(self) -> str:
        """The projector's module name as peft's ``modules_to_save`` matches it (last path part)."""
        return self.projector.rsplit(".", 1)[-1]

    @property
    def language_model_key(self) -> str:
        """The language model's module name, which the LoRA target pattern requires in a path."""
        return self.language_model.rsplit(".", 1)[-1]


_QWEN_BATCH = {"pixel_values": "cat", "image_grid_thw": "cat", "mm_token_type_ids": "tokens"}
_QWEN_IMAGES = ("dynamic resolution: 14 px patches merged 2x2, one token per 28x28 pixels within "
                "min_pixels..max_pixels; the batch carries image_grid_thw")

#: model_type -> Family: the families ``hf_vlm`` supports.
FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("qwen2_vl", "model.visual", "model.visual.merger", "model.language_model", _QWEN_IMAGES, _QWEN_BATCH),
    Family("qwen2_5_vl", "model.visual", "model.visual.merger", "model.language_model",
           _QWEN_IMAGES + " (window attention in most vision blocks)", _QWEN_BATCH),
    Family("llava_onevision", "model.vision_tower", "model.multi_modal_projector", "model.language_model",
           "anyres: a base view plus the crops of the best-fitting grid, one newline token per row; several "
           "images in one sample take the base view only",
           {"pixel_values": "pad_cat", "image_sizes": "cat", "batch_num_images": "cat"}),
    Family("idefics3", "model.vision_model", "model.connector", "model.text_model",
           "tiles: the image resized, split into tiles plus a global view; each becomes a fixed run of "
           "<image> tokens after a pixel shuffle, with row/column marker tokens",
           {"pixel_values": "pad_cat", "pixel_attention_mask": "pad_cat"}),
    # SmolVLM: Idefics3's layout; its processor needs the num2words package (the smolvlm extra).
    Family("smolvlm", "model.vision_model", "model.connector", "model.text_model",
           "tiles: as Idefics3 (tiles plus a global view, a fixed run of <image> tokens each after a pixel "
           "shuffle)", {"pixel_values": "pad_cat", "pixel_attention_mask": "pad_cat"}),
    Family("internvl", "model.vision_tower", "model.multi_modal_projector", "model.language_model",
           "tiles: 1..max_patches crops (plus a thumbnail when more than one), a fixed run of "
           "<IMG_CONTEXT> tokens each after a pixel shuffle",
           {"pixel_values": "cat"}),
    Family("gemma3", "model.vision_tower", "model.multi_modal_projector", "model.language_model",
           "fixed: one square view, pooled to mm_tokens_per_image soft tokens",
           {"pixel_values": "image", "token_type_ids": "tokens"}),
    Family("llava", "model.vision_tower", "model.multi_modal_projector", "model.language_model",
           "fixed: one view, one token per patch", {"pixel_values": "image"}, tower_cache=True),
]}


def supported() -> str:
    """The supported model_type names, comma-separated (for error messages)."""
    return ", ".join(sorted(FAMILIES))
