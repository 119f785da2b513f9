"""Evaluation speed options answer as the default path does; a merged adapter is unmerged bit for bit."""
import pytest
import torch

from mmcit.data.collate import collate
from mmcit.evaluation.config import EvalConfig
from mmcit.evaluation.generate import generate_answers
from tests.test_perf_train import samples, tiny_model


@pytest.fixture(scope="module")
def two_adapters():
    model = tiny_model()
    model.add_adapter("second", copy_from="default")
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in model.peft.named_parameters():
            if ".second." in n and ("lora_" in n or "modules_to_save" in n):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    model.set_adapter("default")
    return model


def test_merged_adapter_is_unmerged_bit_for_bit(two_adapters, tmp_path):
    model = two_adapters
    before = {n: p.detach().clone() for n, p in model.peft.named_parameters()}
    prompts = [model.encoder().encode_prompt(s) for s in samples(tmp_path, 3)]
    batch = model.to_device(collate(prompts, model.tokenizer.pad_token_id, "left"))
    model.set_adapter("second")
    with torch.no_grad():
        plain = model.peft(**batch).logits
        with model.merged():
            assert any(not torch.equal(p, before[n]) for n, p in model.peft.named_parameters())
            merged = model.peft(**batch).logits
    torch.testing.assert_close(merged, plain, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(p, before[n]) for n, p in model.peft.named_parameters())
    assert not any(getattr(m, "merged", False) for m in model.peft.modules())
    model.set_adapter("default")


def test_speed_options_give_the_default_answers(two_adapters, tmp_path):
    model = two_adapters
    data = samples(tmp_path, 7, text_only=2)
    routed = ["second", None, "default", "second", "second", None, "default"]
    default = generate_answers(model, data, routed, 3, 5, progress=False)
    assert model.active_adapter == "default" and any(default)
    for changes in ({"merge_adapters": True}, {"static_cache": True},
                    {"image_cache": True, "merge_adapters": True}):
        got = generate_answers(model, data, routed, 3, 5, progress=False, options=EvalConfig(**changes))
        assert got == default, changes
    assert len(model.image_tokens) == 5  # one per image, reused by the next evaluation
    again = generate_answers(model, data, routed, 3, 5, progress=False, options=EvalConfig(image_cache=True))
    assert again == default and len(model.image_tokens) == 5


@pytest.mark.parametrize("vision", ["efficientnet_lite0", "clip"])
def test_prompts_encoded_together_equal_one_by_one(tmp_path, vision):
    """A first evaluation encodes a batch's new prompts in one processor call: the same ids and the
    same pixels, bit for bit, as one call per sample (text-only and odd-sized images included)."""
    from PIL import Image

    from mmcit.data.sample import Sample

    model = tiny_model(vision)
    data = samples(tmp_path, 9, text_only=2)
    Image.new("RGB", (20, 44), (10, 200, 30)).save(tmp_path / "odd.png")
    data.insert(4, Sample(task="t", id="odd", image=tmp_path / "odd.png", turns=[("what colour is it", "green")]))
    one_by_one = [model.encoder().encode_prompt(s) for s in data]
    together = model.encoder().encode_prompts(data)
    assert len(together) == len(one_by_one) == 10
    for a, b in zip(one_by_one, together):
        assert a["input_ids"] == b["input_ids"]
        if a["pixel_values"] is None:
            assert b["pixel_values"] is None
        else:
            assert a["pixel_values"].dtype == b["pixel_values"].dtype
            assert torch.equal(a["pixel_values"], b["pixel_values"])


@pytest.mark.parametrize("vision", ["efficientnet_lite0", "clip"])
def test_training_samples_encoded_in_chunks_equal_one_by_one(tmp_path, vision):
    """Pretraining and every stage encode their samples with ``encode_train_many`` (answers tokenised
    together, distinct images through one image-processor call per chunk): ids, labels and pixels equal
    ``encode_train``'s bit for bit, across chunk borders, for records sharing an image, several turns,
    text-only records and an odd-sized image."""
    from PIL import Image

    from mmcit.data.sample import Sample

    model = tiny_model(vision)
    data = samples(tmp_path, 7, text_only=2)
    Image.new("RGB", (20, 44), (10, 200, 30)).save(tmp_path / "odd.png")
    data.insert(3, Sample(task="t", id="odd", image=tmp_path / "odd.png", turns=[("what colour is it", "green")]))
    shared = next(s for s in data if s.image is not None)
    data.insert(1, Sample(task="t", id="again", image=shared.image, turns=[("describe it", "a shape"),
                                                                          ("and its colour", "green")]))
    data.insert(2, Sample(task="t", id="again2", image=shared.image, turns=[("describe it", "a shape")]))
    one_by_one = [model.encoder().encode_train(s) for s in data]
    for chunk in (3, 1024):
        together = model.encoder().encode_train_many(data, chunk=chunk)
        assert len(together) == len(one_by_one) == 10
        for a, b in zip(one_by_one, together):
            assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
            if a["pixel_values"] is None:
                assert b["pixel_values"] is None
            else:
                assert torch.equal(a["pixel_values"], b["pixel_values"])
