"""The frozen tower's output tokens, computed once, give what the model's own forward computes; the
EfficientNet tower survives the save / load round trip of the cached base."""
import pytest
import torch
from PIL import Image

from mmcit.models.tiny_llava.build import TinyModelSpec, build_tiny_llava, truncate_tower
from mmcit.models.tiny_llava.tokenizer import train_tokenizer
from mmcit.models.tower_cache import cacheable, tower_tokens, with_image_tokens


def _model(vision: str):
    tok = train_tokenizer(["USER: ASSISTANT: a red circle top left, 1 object"], vocab_size=300)
    spec = TinyModelSpec(vision=vision, image_size=32, patch_size=16, vision_hidden=32, vision_layers=1,
                         vision_heads=2, text_hidden=32, text_layers=1, text_heads=2, text_intermediate=64)
    model, processor = build_tiny_llava(spec, tok)
    images = [Image.new("RGB", (32, 32), c) for c in ((200, 30, 30), (30, 30, 200))]
    batch = processor(images=images, text=["USER: <image>\nwhat? ASSISTANT: red circle"] * 2, return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    model.model.vision_tower.requires_grad_(False)  # as in every stage that caches its outputs
    return model.eval(), dict(batch)


@pytest.mark.parametrize("vision", ["efficientnet_lite0", "clip"])
def test_tokens_computed_once_give_the_models_own_loss(vision):
    model, batch = _model(vision)
    assert cacheable(model)
    own = model(**batch).loss
    tokens = tower_tokens(model, batch["pixel_values"])
    via = model(**with_image_tokens(model, batch, tokens)).loss
    assert via.item() == pytest.approx(own.item(), rel=1e-5)


def test_efficientnet_tower_is_pretrained_and_survives_a_reload(tmp_path):
    from transformers import AutoModelForImageTextToText

    model, batch = _model("efficientnet_lite0")
    stem = model.model.vision_tower.timm_model.conv_stem.weight
    assert stem.abs().sum() > 0 and len(model.model.vision_tower.timm_model.blocks) == 5  # cut after stage 3
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    truncate_tower(loaded)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_training_leaves_the_frozen_towers_batchnorm_statistics_alone():
    from mmcit.models.wrapper import LoraSettings, MMModel

    model, batch = _model("efficientnet_lite0")
    tower = model.model.vision_tower
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    mm = MMModel.from_base(model, _processor_stub(), LoraSettings(r=2, alpha=4))
    mm.train()
    assert not tower.training
    mm(**batch).loss.backward()
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())


def _processor_stub():
    class Stub:  # MMModel only reads the tokenizer from its processor here
        tokenizer = None
    return Stub()
