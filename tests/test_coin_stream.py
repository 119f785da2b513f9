"""A 2-task stream read from a CoIN tree on disk (the exact layout of docs/coin.md, images drawn in the
test) through the real reader, with the tiny model."""
import json

import pytest

from data_recipes.synthetic import generate
from mmcit.config import load_config
from mmcit.recipe import run


def test_two_task_stream_from_a_coin_tree(tmp_path, cache_dir):
    generate(tmp_path / "coin", seed=3, scale=0.05, tasks=["ScienceQA", "ImageNet"])
    cfg = load_config(None, [
        "data.source=coin", f"data.instruction_root={tmp_path / 'coin' / 'instructions'}",
        f"data.image_root={tmp_path / 'coin' / 'images'}", "data.tasks=[ScienceQA, ImageNet]",
        "train.max_steps=2", "train.batch_size=4", "model.pretrain.steps=2", "model.pretrain.vision_steps=2",
        "model.text_layers=1", "model.vision_layers=1", "model.lora_r=4", "eval.max_new_tokens=4", "threads=1",
        f"output_dir={tmp_path / 'run'}", f"data.cache_dir={cache_dir}", "method={type: lcia}"])
    res = run(cfg, progress=False, log=lambda m: None)
    assert res["tasks"] == ["ScienceQA", "ImageNet"] and [len(r) for r in res["accuracy_matrix"]] == [1, 2]
    test = json.loads((tmp_path / "coin" / "instructions" / "Instructions" / "ImageNet" / "test.json").read_text())
    rows = (tmp_path / "run" / "answers" / "02_ImageNet" / "ImageNet.jsonl").read_text().splitlines()
    assert [json.loads(r)["question_id"] for r in rows] == [str(r["question_id"]) for r in test]
    # ScienceQA's and ImageNet's instructions differ: LCIA gives each its own group.
    assert len(res["method_summary"]["groups"]) == 2


def test_parsed_tasks_are_cached_as_arrow_and_reparsed_when_the_file_changes(tmp_path, monkeypatch):
    from data_recipes import coin

    generate(tmp_path / "coin", seed=3, scale=0.05, tasks=["TextVQA", "GQA"])
    instr, images, cache = tmp_path / "coin" / "instructions", tmp_path / "coin" / "images", tmp_path / "arrow"
    first = coin.load_task(instr, images, "Instructions", "TextVQA", cache_dir=cache)
    assert len(list(cache.iterdir())) == 3  # one entry per split (train, test, val)
    parse = coin._load_file

    def must_not_parse(*a, **k):
        raise AssertionError("a cached file was parsed again")

    monkeypatch.setattr(coin, "_load_file", must_not_parse)
    again = coin.load_task(instr, images, "Instructions", "TextVQA", cache_dir=cache)
    assert again == first and again.test[0].answers == first.test[0].answers
    assert again.val[0].answers == first.val[0].answers and len(again.val[0].answers) == 10
    assert isinstance(again.train[0].turns[0], tuple) and again.train[0].image.is_file()
    # A changed file is parsed again (and cached under a new key).
    path = instr / "Instructions" / "TextVQA" / "train.json"
    records = json.loads(path.read_text())
    path.write_text(json.dumps(records[:5]))
    with pytest.raises(AssertionError, match="parsed again"):
        coin.load_task(instr, images, "Instructions", "TextVQA", cache_dir=cache)
    monkeypatch.setattr(coin, "_load_file", parse)
    assert len(coin.load_task(instr, images, "Instructions", "TextVQA", cache_dir=cache).train) == 5
    # Skipped-image counts survive the cache.
    gqa = instr / "Instructions" / "GQA" / "test.json"
    recs = json.loads(gqa.read_text())
    recs[0]["image"] = "nowhere/missing.png"
    gqa.write_text(json.dumps(recs))
    for _ in range(2):
        skipped: dict = {}
        task = coin.load_task(instr, images, "Instructions", "GQA", cache_dir=cache, skip_missing_images=True,
                              skipped=skipped)
        assert skipped == {"GQA": {"train": 0, "test": 1, "val": 0}} and len(task.test) == len(recs) - 1
