"""A 2-task stream read from a CoIN tree on disk (the exact layout of COIN.md, images drawn in the
test) through the real reader, with the tiny model."""
import json

from data_recipes.synthetic import generate
from mmcit.config import load_config
from mmcit.runner import run


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
