"""The pretrained base of the tiny model, built once per configuration and cached.

Continual instruction tuning starts from a model that already sees (LLaVA-1.5 starts from its
pretraining stage). A random tiny LM would learn slowly through LoRA alone, so for the built-in
benchmark mmcit first trains the tiny model on a generic captioning task over the same kind of
scenes, and caches the result under a hash of everything that determines it. The continual stream
then trains only LoRA and the projector on top. With the pretrained EfficientNet tower (the default)
only the projector and the LM are trained, on tower outputs computed once per image; with the random
CLIP tower a cheap word-prediction stage first teaches the tower to see.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from mmcit.data.collate import Encoder, collate
from mmcit.data.config import default_cache_dir
from mmcit.data.sample import Sample
from mmcit.data.templates import Template
from mmcit.models.tiny_llava.build import (EFFICIENTNET, TinyModelSpec, build_processor, build_tiny_llava,
                                           truncate_tower)
from mmcit.models.tiny_llava.config import TinyLlavaConfig
from mmcit.models.tiny_llava.tokenizer import load_tokenizer, train_tokenizer
from mmcit.models.tower_cache import TokenStore, tower_tokens, with_image_tokens
from mmcit.progress import Progress, progress_mode

#: Images per tower batch in the caption stage (a CPU convolution's bits depend on it).
TOWER_BATCH = 64


def spec_from_config(cfg: TinyLlavaConfig) -> TinyModelSpec:
    """The model spec of a ``tiny_llava`` config."""
    return TinyModelSpec(
        vision=cfg.vision,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        vision_hidden=cfg.vision_hidden,
        vision_layers=cfg.vision_layers,
        vision_heads=cfg.vision_heads,
        text_hidden=cfg.text_hidden,
        text_layers=cfg.text_layers,
        text_heads=cfg.text_heads,
        text_intermediate=cfg.text_intermediate,
        vocab_size=cfg.vocab_size,
    )


def base_key(cfg: TinyLlavaConfig, data_key: str, seed: int) -> str:
    """The cache key of a pretrained base: its config, its data and its seed."""
    blob = json.dumps({"model": asdict(cfg), "data": data_key, "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_pretrain(
    cfg: TinyLlavaConfig,
    texts: Callable[[], list[str]],
    captions: Callable[[], list[Sample]],
    *,
    data_key: str,
    seed: int,
    cache_dir: Path | None = None,
    progress: bool = True,
    log=print,
    template: Template | None = None,
    token_store: bool = False,
):
    """Return (base model, processor), from the cache or freshly pretrained (captions in ``template``).
    ``texts`` and ``captions`` are called only to pretrain (a cached base needs neither). With
    ``token_store``, the frozen tower's tokens of the captions' images are kept in (and read from)
    the cache folder's ``tower_tokens/`` (``mmcit.models.tower_cache.TokenStore``): another seed's
    base on the same images skips the tower, with the same bits."""

    cache = (cache_dir or default_cache_dir()) / "bases" / base_key(cfg, data_key, seed)
    spec = spec_from_config(cfg)
    if (cache / "done").exists():
        return _load_cached(cache, spec)
    start = time.perf_counter()
    tok = train_tokenizer(["USER: ASSISTANT:", *texts()], vocab_size=cfg.vocab_size)
    model, processor = build_tiny_llava(spec, tok, seed=seed)
    records = captions() if cfg.pretrain.enabled else []
    if records:
        store = TokenStore((cache_dir or default_cache_dir()) / "tower_tokens") if token_store else None
        _pretrain(model, processor, records, cfg, seed, progress, template, store)
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    from transformers.utils import logging as hf_logging

    if not progress or progress_mode() != "bar":  # transformers' own shard-writing bar
        hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(tmp)
    finally:
        hf_logging.enable_progress_bar()
    tok.save_pretrained(tmp)
    (tmp / "done").write_text(json.dumps({"seconds": time.perf_counter() - start}))
    if cache.exists():  # another process finished first; keep its copy
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, cache)
    log(f"pretrained tiny base in {time.perf_counter() - start:.0f}s, cached at {cache}")
    return model, processor


def _load_cached(cache: Path, spec: TinyModelSpec):
    """(model, processor) of the base cached in ``cache``."""
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    tok = load_tokenizer(cache)
    hf_logging.disable_progress_bar()  # a per-weight loading bar for a tiny cached model is noise
    verbosity = hf_logging.get_verbosity()
    # The checkpoint has no weights for the layers cut from the EfficientNet tower: the load
    # report would list them as missing, and truncate_tower removes them again just below.
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForImageTextToText.from_pretrained(cache)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if spec.vision == EFFICIENTNET:
        truncate_tower(model)
    return model, build_processor(tok, spec.image_size, spec.patch_size, spec.vision)


def _pretrain(model, processor, captions: list[Sample], cfg: TinyLlavaConfig, seed: int, progress: bool,
              template: Template | None = None, store: TokenStore | None = None) -> None:
    """Train on the captions (the LLaVA pretraining stage, in miniature)."""
    encoder = Encoder(processor, template)
    features = encoder.encode_train_many(captions)
    pc = cfg.pretrain
    pretrained_tower = cfg.vision == EFFICIENTNET
    if pc.vision_steps > 0 and not pretrained_tower:
        _pretrain_vision(model, processor, captions, features, pc, seed, progress)
    tower = model.model.vision_tower
    image_tokens = None
    if pretrained_tower or (pc.vision_steps > 0 and pc.freeze_vision_in_captions):
        # Measured: captioning at this lr overwrites what the word stage taught the CLIP tower (task
        # accuracy roughly halves), and the pretrained tower needs no training; keep it frozen, and
        # since its output per image is then fixed, compute it once instead of at every step.
        tower.requires_grad_(False)
        # Several pretraining records may share an image (a caption and a focused description):
        # run the tower once per distinct image.
        first: dict = {}  # image -> index of its first record
        slot = [first.setdefault(s.image if s.image is not None else k, k) for k, s in enumerate(captions)]
        unique = sorted(set(slot))
        where = {k: j for j, k in enumerate(unique)}
        pixels = [features[k]["pixel_values"] for k in unique]
        tokens = store.tokens(model, pixels, TOWER_BATCH) if store is not None else None
        if tokens is None:  # no store, or more tokens than it keeps in memory
            tokens = tower_tokens(model, torch.stack(pixels), TOWER_BATCH)
        image_tokens = tokens[torch.tensor([where[k] for k in slot])]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=pc.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=pc.lr, total_steps=pc.steps, pct_start=0.05)
    rng = random.Random(seed)
    pad = processor.tokenizer.pad_token_id
    model.train()
    tower.train(image_tokens is None)  # a frozen tower's BatchNorm keeps its running statistics
    bar = Progress(pc.steps, "pretrain base", enabled=progress)
    lengths = [len(f["input_ids"]) for f in features]
    for _ in range(pc.steps):
        idx = _draw_batch(rng, lengths, pc.batch_size, pc.length_pool)
        batch = collate([features[i] for i in idx], pad, "right")
        if image_tokens is not None:
            batch = with_image_tokens(model, batch, image_tokens[idx])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        model.zero_grad(set_to_none=True)
        bar.update(1, loss=loss.item())
    bar.close()
    model.eval()


def _draw_batch(rng: random.Random, lengths: list[int], batch_size: int, pool: int) -> list[int]:
    """Indices of one caption batch: ``batch_size`` random records, or, with ``pool`` > 1, one of the
    ``pool`` equal slices of ``pool * batch_size`` random records sorted by length (picked at random,
    so each record is still drawn with the same probability; a batch then pads to a length close to
    its records' own: measured on the synthetic captions, 1.07x the real tokens with a pool of 4
    against 1.47x without, the batches still mixing 6.7 of the 8 scene kinds on average)."""
    n = len(lengths)
    if pool <= 1 or n < 2 * batch_size:
        return rng.sample(range(n), min(batch_size, n))
    drawn = sorted(rng.sample(range(n), min(pool * batch_size, n)), key=lambda i: lengths[i])
    start = rng.randrange(len(drawn) // batch_size) * batch_size
    return drawn[start:start + batch_size]


def _pretrain_vision(model, processor, captions, features, pc, seed: int, progress: bool) -> None:
    """Stage 0: teach the vision tower to see, cheaply, before any language is involved.

    The tower (mean-pooled, plus a throw-away linear head) learns to predict which words of the
    caption vocabulary describe the image (multi-label). This is the tiny stand-in for the
    recognition pretraining a real vision encoder (CLIP) brings, and costs a fraction of a
    captioning step because the language model is not run.
    """
    words = sorted({w for s in captions for w in _words(s.answer)})
    index = {w: i for i, w in enumerate(words)}
    targets = torch.zeros(len(captions), len(words))
    for k, s in enumerate(captions):
        for w in _words(s.answer):
            targets[k, index[w]] = 1.0
    pixels = torch.stack([f["pixel_values"] for f in features])
    tower = model.model.vision_tower
    head = torch.nn.Linear(tower.config.hidden_size, len(words))
    params = [*tower.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=pc.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=pc.lr, total_steps=pc.vision_steps, pct_start=0.05)
    rng = random.Random(seed + 1)
    tower.train()
    bar = Progress(pc.vision_steps, "pretrain vision", enabled=progress)
    for _ in range(pc.vision_steps):
        idx = rng.sample(range(len(captions)), min(pc.batch_size, len(captions)))
        hidden = tower(pixel_values=pixels[idx]).last_hidden_state  # (B, 1 + patches, D)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(hidden.mean(1)), targets[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.update(1, loss=loss.item())
    bar.close()


def _words(text: str) -> list[str]:
    return [w.strip(".,").lower() for w in text.split() if w.strip(".,")]
