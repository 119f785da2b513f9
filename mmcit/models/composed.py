"""``composed``: an open_clip vision encoder + an ``mlp2x_gelu`` projector + any local causal LM.

This is how LLaVA-1.5 is built from parts (CLIP ViT-L/14-336, features of the second-to-last
layer, a two-layer GELU MLP, Vicuna), and how a user builds a new stack. Weights come from local
files only: the open_clip checkpoint, the projector file (LLaVA's ``mm_projector.bin`` or a
safetensors file; pickles are read with ``weights_only``, which executes no code) and the LM folder
(or a ``.gguf`` file, which transformers dequantises).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mmcit.data.templates import build_template
from mmcit.errors import ConfigError
from mmcit.models.base import (BACKENDS, Backend, BuildContext, Built, PretrainedConfig, quantization_config,
                               require_folder, resolve_device, torch_dtype)

IMAGE_TOKEN = "<image>"


@dataclass
class ComposedConfig(PretrainedConfig):
    """``model`` settings of ``composed``: the open_clip tower, the projector and the LM."""

    type: str = "composed"
    chat_template: str = "tokenizer"
    # open_clip model name (e.g. ViT-L-14-336) or "local-dir:FOLDER" holding open_clip_config.json
    vision_model: str = "ViT-L-14-336"
    vision_checkpoint: str | None = None  # local open_clip weights; None: random (tests only)
    feature_layer: int = -2  # hidden state to take, as in HF CLIP's hidden_states (-2: second-to-last block)
    feature_select: str = "patch"  # patch (drop the class token, LLaVA's "default") | full
    projector: str = "mlp2x_gelu"
    projector_checkpoint: str | None = None  # LLaVA mm_projector.bin / .safetensors to start from
    lm_path: str | None = None  # a local causal-LM folder (config, weights, tokenizer) or a .gguf file

    def problems(self) -> list[str]:
        """Problems with the values, one line each (empty when fine)."""
        problems = super().problems()
        if not self.lm_path:
            problems.append("model.lm_path is required for composed: a local causal-LM folder or .gguf file")
        if self.feature_select not in ("patch", "full"):
            problems.append("model.feature_select must be patch or full")
        if self.projector != "mlp2x_gelu":
            problems.append("model.projector: only mlp2x_gelu is available")
        if self.chat_template == "processor":
            problems.append("model.chat_template: composed models have no processor template; use tokenizer or vicuna_v1")
        if self.feature_layer == 0:
            problems.append("model.feature_layer 0 is the patch embedding; use -1 (last block), -2, ... or 1..N")
        return problems


def mlp2x_gelu(vision_width: int, hidden: int) -> nn.Sequential:
    # Sequential indices 0 and 2 match the keys of LLaVA's mm_projector.bin.
    """LLaVA-1.5's projector: Linear, GELU, Linear."""
    return nn.Sequential(nn.Linear(vision_width, hidden), nn.GELU(), nn.Linear(hidden, hidden))


class ComposedVLM(nn.Module):
    """Vision tower -> projector -> causal LM, with LLaVA's interface (inputs with expanded image
    tokens whose embeddings are replaced by the projected image features)."""

    def __init__(self, vision_tower: nn.Module, projector: nn.Module, language_model: nn.Module,
                 image_token_id: int, block_index: int, keep_class_token: bool):
        super().__init__()
        self.vision_tower = vision_tower
        self.multi_modal_projector = projector
        self.language_model = language_model
        self.image_token_id = image_token_id
        self.block_index = block_index
        self.keep_class_token = keep_class_token
        self.config = language_model.config  # what peft and generation helpers look at

    def tower_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tower's tokens as the projector receives them: (B, tokens, tower width)."""
        out = self.vision_tower.forward_intermediates(
            pixel_values.to(next(self.vision_tower.parameters()).dtype), indices=[self.block_index],
            stop_early=True, intermediates_only=True, output_fmt="NLC", output_extra_tokens=self.keep_class_token)
        feats = out["image_intermediates"][0]
        if self.keep_class_token:
            feats = torch.cat([out["image_intermediates_prefix"][0], feats], dim=1)
        return feats

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The projected image tokens of a batch of images: (B, tokens, LM width)."""
        # In bf16/fp16 runs the caller's autocast reconciles the tower's dtype with the float32 projector.
        return self.multi_modal_projector(self.tower_features(pixel_values))

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """The LM's input embeddings with the image tokens' rows replaced by the image features."""
        mask = input_ids == self.image_token_id
        embeds = self.language_model.get_input_embeddings()(input_ids)
        if pixel_values is None:
            if mask.any():
                raise ValueError("the input has image tokens but no pixel_values")
            return embeds
        feats = self.image_features(pixel_values)
        if int(mask.sum()) != feats.shape[0] * feats.shape[1]:
            raise ValueError(f"image tokens and image features do not match: {int(mask.sum())} tokens, "
                             f"{feats.shape[0]} x {feats.shape[1]} features")
        return embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, labels=None, **kwargs):
        """The language model's forward on the merged embeddings (loss when ``labels`` is given)."""
        kwargs.pop("inputs_embeds", None)
        return self.language_model(inputs_embeds=self.embed(input_ids, pixel_values), attention_mask=attention_mask,
                                   labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, pixel_values=None, **kwargs):
        """Prompt ids followed by the new tokens, like LlavaForConditionalGeneration.generate."""
        new = self.language_model.generate(inputs_embeds=self.embed(input_ids, pixel_values),
                                           attention_mask=attention_mask, **kwargs)
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None) -> None:
        """Gradient checkpointing in the language model."""
        self.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)


class ComposedProcessor:
    """LLaVA-processor interface over the open_clip image transform and the LM's tokenizer:
    ``<image>`` in the text becomes ``num_image_tokens`` image tokens."""

    def __init__(self, image_transform, tokenizer, num_image_tokens: int, image_mean=(0.5, 0.5, 0.5)):
        self.image_transform = image_transform
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.image_token = IMAGE_TOKEN
        self.image_mean = tuple(image_mean)  # the padding colour of image_aspect: pad

    def __call__(self, images=None, text=None, return_tensors="pt", add_special_tokens=False, **_):
        texts = [text] if isinstance(text, str) else list(text)
        expanded = [t.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.num_image_tokens) for t in texts]
        enc = self.tokenizer(expanded, add_special_tokens=add_special_tokens, padding=True, return_tensors="pt")
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if images is not None:
            out["pixel_values"] = torch.stack([self.image_transform(im.convert("RGB")) for im in images])
        return out


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch pickle without executing any code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def projector_state(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """LLaVA's ``model.mm_projector.{0,2}.*`` or HF's ``multi_modal_projector.linear_{1,2}.*`` -> ``{0,2}.*``."""
    out = {}
    for key, value in state.items():
        for marker, names in (("mm_projector.", {"0": "0", "2": "2"}),
                              ("multi_modal_projector.", {"linear_1": "0", "linear_2": "2"})):
            if marker in key:
                layer, _, param = key.split(marker, 1)[1].partition(".")
                if layer in names:
                    out[f"{names[layer]}.{param}"] = value
    if sorted(out) != ["0.bias", "0.weight", "2.bias", "2.weight"]:
        raise ConfigError(f"model.projector_checkpoint: {path} holds no mlp2x_gelu projector "
                          f"(keys like model.mm_projector.0.weight); found {sorted(state)[:4]}")
    return out


def _block_index(visual, feature_layer: int) -> int:
    blocks = len(visual.transformer.resblocks) if hasattr(visual, "transformer") else None
    if blocks is None:
        raise ValueError("the open_clip vision tower has no transformer blocks; use a ViT model")
    index = blocks + feature_layer if feature_layer < 0 else feature_layer - 1
    if not 0 <= index < blocks:
        raise ConfigError(f"model.feature_layer {feature_layer} is outside the tower's {blocks} blocks")
    return index


def load_language_model(cfg: ComposedConfig, device: str):
    """The local causal LM (folder or .gguf file), its tokenizer, and whether it is quantized."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(cfg.lm_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"model.lm_path: {path} is not a file")
        where, extra = path.parent, {"gguf_file": path.name}
    else:
        where, extra = require_folder(cfg.lm_path, "model.lm_path", "a causal LM and its tokenizer"), {}
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
    quant = quantization_config(cfg, skip=["lm_head"])
    lm = AutoModelForCausalLM.from_pretrained(
        where, dtype=torch_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation, quantization_config=quant,
        local_files_only=True, **extra, **({"device_map": {"": device}} if quant is not None else {}))
    return lm, tokenizer, quant is not None


@BACKENDS.register
class Composed(Backend):
    """An open_clip vision tower + mlp2x_gelu projector + any local causal LM (LLaVA-1.5 from parts)."""

    name = "composed"
    config_cls = ComposedConfig

    def build(self, cfg: ComposedConfig, ctx: BuildContext) -> Built:
        """The composed model from local weights only (nothing is downloaded)."""
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2

        device = resolve_device(cfg.device)
        dtype = torch_dtype(cfg.dtype)
        local_dir = cfg.vision_model.startswith("local-dir:")
        if cfg.vision_checkpoint is not None and not Path(cfg.vision_checkpoint).expanduser().is_file():
            raise ConfigError(f"model.vision_checkpoint: {cfg.vision_checkpoint} is not a file (nothing is downloaded)")
        if local_dir and cfg.vision_checkpoint is not None:
            raise ConfigError("model.vision_checkpoint: a local-dir: vision model takes its weights from its folder; "
                              "leave vision_checkpoint unset")
        if cfg.vision_checkpoint is None and not local_dir:
            ctx.log(f"model.vision_checkpoint is not set: the {cfg.vision_model} tower has random weights")
        # A local-dir: folder brings its own weights (open_clip_model.safetensors); nothing is downloaded.
        clip = open_clip.create_model(cfg.vision_model, pretrained=None if local_dir else cfg.vision_checkpoint,
                                      pretrained_text=False, pretrained_image=False,
                                      load_weights=local_dir or cfg.vision_checkpoint is not None)
        visual = clip.visual
        transform = image_transform_v2(PreprocessCfg(**visual.preprocess_cfg), is_train=False)
        lm, tokenizer, quantized = load_language_model(cfg, device)
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
        if len(tokenizer) > lm.get_input_embeddings().weight.shape[0]:
            lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the row is never read
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        block = _block_index(visual, cfg.feature_layer)
        keep_cls = cfg.feature_select == "full"
        with torch.no_grad():
            side = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
            probe = visual.forward_intermediates(torch.zeros(1, 3, side, side), indices=[block], stop_early=True,
                                                 intermediates_only=True, output_fmt="NLC")
        tokens, width = probe["image_intermediates"][0].shape[1:]
        projector = mlp2x_gelu(width, lm.config.hidden_size)
        if cfg.projector_checkpoint is not None:
            path = Path(cfg.projector_checkpoint).expanduser()
            if not path.is_file():
                raise ConfigError(f"model.projector_checkpoint: {path} is not a file")
            projector.load_state_dict(projector_state(load_weights(path), path))
        model = ComposedVLM(visual.to(dtype), projector.to(dtype), lm, image_token_id, block, keep_cls)
        model.vision_tower.to(device)
        model.multi_modal_projector.to(device)
        if not quantized:
            model.language_model.to(device)
        processor = ComposedProcessor(transform, tokenizer, tokens + int(keep_cls), visual.preprocess_cfg["mean"])
        template = build_template(cfg.chat_template, tokenizer=tokenizer, processor=processor)
        ctx.log(f"composed {cfg.vision_model} (block {block + 1}, {tokens + int(keep_cls)} tokens of width {width}) "
                f"+ {cfg.projector} + {cfg.lm_path} ({cfg.dtype}) on {device}")
        return Built(model, processor, template)
