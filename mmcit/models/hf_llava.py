"""``hf_llava``: a local LLaVA checkpoint in the transformers layout (e.g. a download of
llava-hf/llava-1.5-7b-hf), with its processor; nothing is downloaded."""
from __future__ import annotations

from dataclasses import dataclass

from mmcit.data.templates import build_template
from mmcit.errors import ConfigError
from mmcit.models.base import (BACKENDS, Backend, BuildContext, Built, PretrainedConfig, quantization_config,
                                 require_folder, resolve_device, torch_dtype)


@dataclass
class HFLlavaConfig(PretrainedConfig):
    """``model`` settings of ``hf_llava``: the checkpoint folder."""

    type: str = "hf_llava"
    path: str | None = None  # the checkpoint folder: config.json, weights, processor / tokenizer files

    def problems(self) -> list[str]:
        """Problems with the values, one line each (empty when fine)."""
        problems = super().problems()
        if not self.path:
            problems.append("model.path is required for hf_llava: a local LLaVA checkpoint folder")
        return problems


def check_processor(processor, model_config, folder) -> None:
    """The processor must expand ``<image>`` to exactly the vision tower's token count."""
    from PIL import Image

    vision = model_config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    strategy = getattr(model_config, "vision_feature_select_strategy", "default")
    want = patches if strategy == "default" else patches + 1
    image_token = getattr(processor, "image_token", "<image>")
    enc = processor(images=[Image.new("RGB", (vision.image_size, vision.image_size))], text=[image_token],
                    return_tensors="pt", add_special_tokens=False)
    got = int((enc["input_ids"] == model_config.image_token_id).sum())
    if got != want:
        raise ConfigError(f"{folder}: the processor expands {image_token} to {got} tokens but the vision tower "
                          f"gives {want}; set patch_size and num_additional_image_tokens in its "
                          "processor_config.json")


@BACKENDS.register
class HFLlava(Backend):
    """A local LLaVA checkpoint in the transformers layout, with its processor."""

    name = "hf_llava"
    config_cls = HFLlavaConfig

    def build(self, cfg: HFLlavaConfig, ctx: BuildContext) -> Built:
        """The checkpoint and its processor, checked to expand the image tag to the tower's token count."""
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        folder = require_folder(cfg.path, "model.path", "a LLaVA checkpoint in the transformers layout")
        device = resolve_device(cfg.device)
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        # Full module names: transformers 5 matches the skip list against them.
        quant = quantization_config(cfg, skip=["model.vision_tower", "model.multi_modal_projector", "lm_head"])
        model = LlavaForConditionalGeneration.from_pretrained(
            folder, dtype=torch_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation,
            quantization_config=quant, local_files_only=True,
            **({"device_map": {"": device}} if quant is not None else {}),
        )
        if quant is None:
            model.to(device)
        check_processor(processor, model.config, folder)
        tok = processor.tokenizer
        if tok.pad_token is None:  # batching needs one; it is always masked out
            tok.pad_token = tok.unk_token or tok.eos_token
        template = build_template(cfg.chat_template, tokenizer=tok, processor=processor)
        ctx.log(f"loaded {folder} ({cfg.dtype}{', ' + cfg.quantization if cfg.quantization else ''}) on {device}")
        return Built(model, processor, template)
