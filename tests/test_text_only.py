"""Text-only samples (no image) next to image samples: encoded without the image tag or pixels,
batched with the pixels of the image rows only, trained through the plain forward and through the
tower-token cache alike, answered by generation; on the tiny LLaVA (CLIP and EfficientNet towers)
and on the composed backend (its own embedding merge)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmcit.data.collate import collate
from mmcit.data.sample import Sample
from mmcit.data.templates import ChatTemplate
from mmcit.models.tiny_llava.build import TinyModelSpec, build_tiny_llava
from mmcit.models.tiny_llava.tokenizer import train_tokenizer
from mmcit.models.tower_cache import attach_cached_tokens, batch_tower_tokens, with_image_tokens
from mmcit.models.wrapper import LoraSettings, MMModel


def samples(tmp_path) -> list[Sample]:
    """Image, text-only, image (two different images)."""
    out = []
    for k, colour in enumerate([(200, 30, 30), None, (30, 30, 200)]):
        path = None
        if colour is not None:
            path = tmp_path / f"{k}.png"
            Image.new("RGB", (40, 30), colour).save(path)
        out.append(Sample(task="T", id=str(k), image=path, turns=[("what colour is it?", "red circle")]))
    return out


def tiny(vision: str) -> MMModel:
    tok = train_tokenizer(["USER: ASSISTANT: what colour is it? red circle blue"] * 4, vocab_size=300)
    spec = TinyModelSpec(vision=vision, image_size=32, patch_size=16, vision_hidden=32, vision_layers=1,
                         vision_heads=2, text_hidden=32, text_layers=1, text_heads=2, text_intermediate=64)
    model, processor = build_tiny_llava(spec, tok)
    return MMModel.from_base(model, processor, LoraSettings(r=2, alpha=4), template=ChatTemplate())


@pytest.mark.parametrize("vision", ["clip", "efficientnet_lite0"])
def test_mixed_batch_on_the_tiny_llava(tmp_path, vision):
    mm = tiny(vision)
    mm.eval()
    enc, pad = mm.encoder(), mm.tokenizer.pad_token_id
    image_id = mm.tokenizer.convert_tokens_to_ids("<image>")
    feats = [enc.encode_train(s) for s in samples(tmp_path)]
    assert feats[1]["pixel_values"] is None and image_id not in feats[1]["input_ids"]
    assert all(image_id in f["input_ids"] for f in (feats[0], feats[2]))
    batch = collate(feats, pad, "right")
    assert batch["pixel_values"].shape[0] == 2  # the image rows only, in row order
    assert torch.equal(batch["pixel_values"][1], feats[2]["pixel_values"])
    base = mm.peft.get_base_model()
    with torch.no_grad():
        plain = mm(**batch)
        # The tower-token path of the training loop: tokens of the image rows, cached or not.
        cached = attach_cached_tokens(base, feats)
        assert "image_tokens" not in cached[1] and "image_tokens" in cached[0]
        tokens = batch_tower_tokens(base, cached, batch)
        torch.testing.assert_close(tokens, batch_tower_tokens(base, feats, batch))
        via = mm(**with_image_tokens(base, batch, tokens))
        assert via.loss.item() == pytest.approx(plain.loss.item(), rel=1e-5)
        # The text-only row sees no image: its logits are those it has alone.
        alone = mm(**collate([feats[1]], pad, "right"))
        n = len(feats[1]["input_ids"])
        torch.testing.assert_close(plain.logits[1, :n], alone.logits[0], atol=1e-5, rtol=1e-5)
        text_batch = collate([feats[1]], pad, "right")
        assert "pixel_values" not in text_batch and batch_tower_tokens(base, [feats[1]], text_batch) is None
        assert mm(**with_image_tokens(base, text_batch, None)).loss.item() == pytest.approx(alone.loss.item(), rel=1e-6)
    answers = mm.generate(collate([enc.encode_prompt(s) for s in samples(tmp_path)], pad, "left"), 3)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


def test_mixed_batch_on_the_composed_backend(tmp_path):
    from mmcit.models.composed import Composed, ComposedConfig
    from mmcit.models.base import BuildContext
    from tests.tiny_checkpoints import write_causal_lm, write_open_clip

    cfg = ComposedConfig(vision_model=f"local-dir:{write_open_clip(tmp_path / 'clip')}",
                         lm_path=str(write_causal_lm(tmp_path / 'lm')), dtype="float32", device="cpu",
                         gradient_checkpointing=False)
    built = Composed().build(cfg, BuildContext(log=lambda m: None))
    mm = MMModel.from_base(built.model, built.processor, LoraSettings(r=2, alpha=4), template=built.template)
    enc, pad = mm.encoder(), mm.tokenizer.pad_token_id
    feats = [enc.encode_train(s) for s in samples(tmp_path)]
    assert feats[1]["pixel_values"] is None
    assert built.model.image_token_id not in feats[1]["input_ids"]
    # The ChatML template rendered the text-only turn without the image tag.
    assert "<image>" not in mm.tokenizer.decode(feats[1]["input_ids"])
    loss = mm(**collate(feats, pad, "right")).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in mm.trainable_named_parameters() if "multi_modal_projector" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    answers = mm.generate(collate([enc.encode_prompt(s) for s in samples(tmp_path)], pad, "left"), 2)
    assert len(answers) == 3
    assert len(mm.generate(collate([enc.encode_prompt(samples(tmp_path)[1])], pad, "left"), 2)) == 1


def test_training_loop_with_text_only_rows(tmp_path, monkeypatch):
    """One row per micro-batch, so some micro-batches have no image at all; encoded batch by batch
    (as a large real stage is), the tower-token path trains exactly as the plain forward does."""
    from mmcit.methods.lora_ft import LoraFT, LoraFTConfig
    from mmcit.training import loop
    from mmcit.training.config import TrainConfig

    data = samples(tmp_path) + samples(tmp_path)[1:2]
    cfg = TrainConfig(max_steps=2, batch_size=4, micro_batch_size=1, encode_once_limit=0)
    states = []
    for via_tokens in (True, False):
        monkeypatch.setattr(loop, "cacheable", lambda base, on=via_tokens: on)
        torch.manual_seed(0)
        mm = tiny("clip")
        stats = loop.train_stage(mm, LoraFT(LoraFTConfig()), data, cfg, seed=0, progress=False)
        assert stats.steps == 2 and stats.first_loss == stats.first_loss
        states.append(mm.adapter_state())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], atol=1e-6, rtol=1e-5)
