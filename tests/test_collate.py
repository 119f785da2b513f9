import torch
from PIL import Image

from mmcit.data.collate import IGNORE_INDEX, Encoder, collate
from mmcit.data.sample import Sample
from mmcit.models.tiny_llava.build import build_processor
from mmcit.models.tiny_llava.tokenizer import train_tokenizer


def make_encoder(image_size=64, patch_size=16):
    tok = train_tokenizer(["USER: What color is it? ASSISTANT: red blue", "Describe the image."] * 20, 300)
    return Encoder(build_processor(tok, image_size, patch_size)), tok


def sample(tmp_path, turns, name="a"):
    path = tmp_path / f"{name}.png"
    Image.new("RGB", (40, 50), (200, 10, 10)).save(path)
    return Sample(task="T", id=name, image=path, turns=turns)


def test_image_token_expansion_matches_vision_tower(tmp_path):
    for size, patch in [(64, 16), (64, 8), (48, 8)]:
        enc, tok = make_encoder(size, patch)
        f = enc.encode_prompt(sample(tmp_path, [("What color is it?", "red")]))
        image_id = tok.convert_tokens_to_ids("<image>")
        assert f["input_ids"].count(image_id) == (size // patch) ** 2  # CLS added, then dropped
        assert tuple(f["pixel_values"].shape) == (3, size, size)  # resized to the tower's input


def test_labels_mask_everything_but_answers(tmp_path):
    enc, tok = make_encoder()
    s = sample(tmp_path, [("What color is it?", "red"), ("And now?", "blue")])
    f = enc.encode_train(s)
    ids, labels = f["input_ids"], f["labels"]
    assert len(ids) == len(labels)
    kept = [t for t, l in zip(ids, labels) if l != IGNORE_INDEX]
    assert all(l in (IGNORE_INDEX, t) for t, l in zip(ids, labels))
    # exactly the two answers with their end-of-sequence tokens are learnt
    assert tok.decode(kept) == " red</s> blue</s>"
    assert ids[0] == tok.bos_token_id and ids.count(tok.convert_tokens_to_ids("<image>")) == 16
    context = tok.decode([t for t, l in zip(ids, labels) if l == IGNORE_INDEX]).replace("<image>", "")
    assert context == "<s>USER: \nWhat color is it? ASSISTANT:USER: And now? ASSISTANT:"


def test_collate_pads_right_for_training_and_left_for_generation(tmp_path):
    enc, tok = make_encoder()
    a = enc.encode_train(sample(tmp_path, [("What color is it?", "red")], "a"))
    b = enc.encode_train(sample(tmp_path, [("What color is it? Describe the image.", "blue")], "b"))
    pad = tok.pad_token_id
    right = collate([a, b], pad, "right")
    n = len(a["input_ids"])
    assert right["input_ids"].shape[1] == len(b["input_ids"]) > n
    assert right["attention_mask"][0, :n].all() and not right["attention_mask"][0, n:].any()
    assert (right["labels"][0, n:] == IGNORE_INDEX).all()
    assert (right["input_ids"][0, n:] == pad).all()
    left = collate([a, b], pad, "left")
    k = left["input_ids"].shape[1] - n
    assert (left["input_ids"][0, :k] == pad).all() and left["input_ids"][0, k:].tolist() == a["input_ids"]
    assert left["pixel_values"].shape == (2, 3, 64, 64) and left["pixel_values"].dtype == torch.float32


def test_cached_prompt_encoding_equals_a_fresh_encoding(tmp_path):
    """The encoder reuses context ids per prompt and pixels for repeated images; outputs must not change."""
    enc, _ = make_encoder()
    images = []
    for k, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 200, 10)]):
        path = tmp_path / f"c{k}.png"
        Image.new("RGB", (64, 64), colour).save(path)
        images.append(path)
    samples = [Sample(task="T", id=str(k), image=p, turns=[("What color is it?", "red")]) for k, p in enumerate(images)]
    cached = [enc.encode_train(s) for s in samples]  # 2nd and 3rd: cached ids; 3rd: same pixels as 2nd
    for s, got in zip(samples, cached):
        fresh, _ = make_encoder()
        want = fresh.encode_train(s)
        assert got["input_ids"] == want["input_ids"] and got["labels"] == want["labels"]
        assert torch.equal(got["pixel_values"], want["pixel_values"])
    assert not torch.equal(cached[0]["pixel_values"], cached[1]["pixel_values"])
    prompt = enc.encode_prompt(samples[0])
    assert torch.equal(prompt["pixel_values"], cached[0]["pixel_values"])
