"""``hf_vlm``: a local checkpoint of one of today's vision-language families (Qwen2-VL, Qwen2.5-VL,
LLaVA-OneVision, Idefics3, InternVL, Gemma 3, LLaVA) through transformers'
``AutoModelForImageTextToText`` and ``AutoProcessor``; nothing is downloaded.

What differs per family (where the parts sit, how images batch) is the table in
``mmcit.models.families``; a checkpoint of another family is refused with one line naming the
supported ones, before any weights load. Samples are encoded through the processor
(``mmcit.data.processor_encoder``) with the processor's own chat template, so image-token counts
are always the processor's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcit.data.processor_encoder import ProcessorTemplate
from mmcit.errors import ConfigError
from mmcit.models.base import (BACKENDS, Backend, BuildContext, Built, ModelParts, PretrainedConfig,
                               quantization_config, require_folder, resolve_device, torch_dtype)
from mmcit.models.families import FAMILIES, Family, supported


@dataclass
class HFVLMConfig(PretrainedConfig):
    """``model`` settings of ``hf_vlm``: the checkpoint folder, processor options, tower LoRA."""

    type: str = "hf_vlm"
    path: str | None = None  # the checkpoint folder: config.json, weights, processor / tokenizer files
    chat_template: str = "processor"  # the only one: the processor's own template
    # Passed to AutoProcessor.from_pretrained, e.g. {min_pixels: 3136, max_pixels: 451584} to bound
    # Qwen2-VL's dynamic resolution, or {max_patches: 6} for InternVL's tiling.
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    # Linear layers of the vision tower that get LoRA too (e.g. [qkv, proj] for Qwen's tower);
    # empty: the tower stays frozen.
    vision_lora: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Problems with the values, one line each (empty when fine); reads the folder's config.json."""
        problems = super().problems()
        if not self.path:
            problems.append("model.path is required for hf_vlm: a local image-text-to-text checkpoint folder")
        elif (Path(self.path).expanduser() / "config.json").is_file():
            try:
                family_of(Path(self.path).expanduser())
            except ConfigError as e:
                problems.append(str(e))
        if self.chat_template != "processor":
            problems.append("model.chat_template: hf_vlm uses the checkpoint processor's own template (processor)")
        return problems


def family_of(folder: Path) -> Family:
    """The family of the checkpoint in ``folder``, read from its config.json (no weights loaded)."""
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"model.path: cannot read {folder / 'config.json'} ({e})") from None
    if model_type not in FAMILIES:
        raise ConfigError(f"model.path: {folder} holds a {model_type!r} model; hf_vlm supports {supported()}")
    return FAMILIES[model_type]


def check_layout(model, family: Family, vision_lora: list[str], folder: Path) -> None:
    """The loaded model has the family's modules where the table says, and the tower the LoRA layers asked for."""
    names = dict(model.named_modules())
    for path in (family.vision, family.projector, family.language_model):
        if path not in names:
            raise ConfigError(f"{folder}: no module {path} in this {family.name} model (transformers' layout "
                              "differs from mmcit's family table)")
    tower = {n.rsplit(".", 1)[-1] for n in names if n.startswith(family.vision + ".")
             and not n.startswith(family.projector + ".")}
    missing = [m for m in vision_lora if m not in tower]
    if missing:
        raise ConfigError(f"model.vision_lora: {family.name}'s vision tower has no layer named {missing[0]}")


def model_parts(family: Family, vision_lora: list[str], eos_ids: list[int]) -> ModelParts:
    """The wrapper's view of a family: module names, tower LoRA, batch layout, stop tokens."""
    return ModelParts(vision=family.vision, projector=family.projector_key, language_model=family.language_model_key,
                      vision_lora=list(vision_lora), batch=dict(family.batch), eos_ids=list(eos_ids))


def stop_ids(model, tokenizer) -> list[int]:
    """Token ids generation stops at: the generation config's eos ids (end-of-turn included) and
    the tokenizer's eos."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return [i for i in dict.fromkeys([*ids, tokenizer.eos_token_id]) if i is not None]


@BACKENDS.register
class HFVLM(Backend):
    """A local image-text-to-text checkpoint of a supported family, with its processor."""

    name = "hf_vlm"
    config_cls = HFVLMConfig

    def build(self, cfg: HFVLMConfig, ctx: BuildContext) -> Built:
        """The checkpoint, its processor and chat template, and the family's parts."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder = require_folder(cfg.path, "model.path", "an image-text-to-text checkpoint")
        family = family_of(folder)  # before any weights load
        device = resolve_device(cfg.device)
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True, **cfg.processor_kwargs)
        if not getattr(processor, "chat_template", None):
            raise ConfigError(f"{folder}: the processor has no chat template (chat_template.jinja or "
                              "chat_template.json); hf_vlm renders conversations with it")
        # Full module names: transformers 5 matches the skip list against them.
        quant = quantization_config(cfg, skip=[family.vision, family.projector, "lm_head"])
        model = AutoModelForImageTextToText.from_pretrained(
            folder, dtype=torch_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation,
            quantization_config=quant, local_files_only=True,
            **({"device_map": {"": device}} if quant is not None else {}),
        )
        if quant is None:
            model.to(device)
        check_layout(model, family, cfg.vision_lora, folder)
        tok = processor.tokenizer
        if tok.pad_token is None:  # batching needs one; it is always masked out
            tok.pad_token = tok.unk_token or tok.eos_token
        eos = stop_ids(model, tok)
        template = ProcessorTemplate(processor, stops=tok.convert_ids_to_tokens(eos))
        parts = model_parts(family, cfg.vision_lora, eos)
        ctx.log(f"loaded {folder} ({family.name}, {cfg.dtype}{', ' + cfg.quantization if cfg.quantization else ''}) "
                f"on {device}")
        return Built(model, processor, template, parts)
