"""``tiny_llava``: the tiny LLaVA of the built-in benchmark, in one subpackage.

``build.py`` builds the model from its spec (a frozen ImageNet EfficientNet-Lite0 tower, or a random
CLIP ViT, + projector + a small Llama); ``tokenizer.py`` trains its byte-level BPE tokenizer on the
benchmark's training and pretraining text (never its test or validation files); ``pretrain.py``
pretrains the base once on the benchmark's captions and caches it;
``config.py`` holds its settings. The backend below ties them together.
"""
from __future__ import annotations

from mmcit.data.templates import build_template
from mmcit.models.base import BACKENDS, Backend, BuildContext, Built
from mmcit.models.tiny_llava.config import PretrainConfig, TinyLlavaConfig
from mmcit.models.tiny_llava.pretrain import load_or_pretrain
from mmcit.models.tiny_llava.tokenizer import corpus_texts

__all__ = ["PretrainConfig", "TinyLlava", "TinyLlavaConfig"]


@BACKENDS.register
class TinyLlava(Backend):
    """The demo's tiny LLaVA: random weights from config, pretrained on the benchmark's captions, cached."""

    name = "tiny_llava"
    config_cls = TinyLlavaConfig

    def build(self, cfg: TinyLlavaConfig, ctx: BuildContext) -> Built:
        """The cached pretrained base for this data and config (pretrained now on a miss)."""
        data = ctx.data
        template = build_template(cfg.chat_template)
        model, processor = load_or_pretrain(
            cfg, lambda: corpus_texts(data.instruction_root), lambda: data.captions, data_key=data.key, seed=ctx.seed,
            cache_dir=ctx.cache_dir, progress=ctx.progress, log=ctx.log, template=template,
            token_store=ctx.tower_token_cache,
        )
        return Built(model, processor, template)
