"""End to end: a 2-task stream through the real runner, the CLI, and bad input."""
import json
import shutil

import pytest
from safetensors.torch import load_file

from data_recipes.coin import DataError
from mmcit.cli import main
from mmcit.config import load_config
from data_recipes.synthetic import synthetic_root
from mmcit.recipe import run

TINY = [
    "data.tasks=[TextVQA, GQA]", "data.sample_factor=0.05", "train.max_steps=3", "train.batch_size=4",
    "model.pretrain.steps=4", "model.pretrain.vision_steps=2", "model.text_layers=1", "model.vision_layers=1",
    "model.lora_r=4", "eval.max_new_tokens=6", "threads=1",
]


def tiny_cfg(tmp_path, cache_dir, *extra):
    return load_config(None, [*TINY, f"output_dir={tmp_path / 'run'}", f"data.cache_dir={cache_dir}", *extra])


def test_two_task_stream_end_to_end(tmp_path, cache_dir):
    cfg = tiny_cfg(tmp_path, cache_dir)
    res = run(cfg, progress=False, log=lambda m: None)
    d = tmp_path / "run"
    saved = json.loads((d / "results.json").read_text())
    assert saved["tasks"] == ["TextVQA", "GQA"]
    m = saved["accuracy_matrix"]
    assert len(m) == 2 and len(m[0]) == 1 and len(m[1]) == 2  # lower-triangular
    assert all(0 <= v <= 100 for row in m for v in row)
    assert set(saved["metrics"]) == {"average_accuracy", "forgetting", "new_accuracy", "bwt", "maa"}
    assert saved["metrics"]["average_accuracy"] == pytest.approx((m[1][0] + m[1][1]) / 2)
    assert saved["metrics"]["forgetting"] == pytest.approx(m[0][0] - m[1][0])
    assert res["accuracy_matrix"] == m
    # answers for every (after-stage, task) pair, in CoIN's answer-file layout
    rows = [json.loads(l) for l in (d / "answers" / "02_GQA" / "TextVQA.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and set(rows[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert not (d / "answers" / "01_TextVQA" / "GQA.jsonl").exists()  # not seen yet after stage 1
    tensors = load_file(d / "checkpoints" / "02_GQA" / "adapters.safetensors")
    assert any("lora_B" in k for k in tensors) and any("multi_modal_projector" in k for k in tensors)
    assert (d / "report.md").read_text().startswith("# lora_ft")
    assert (d / "accuracy_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert load_config(d / "config.yaml").train.max_steps == 3  # the resolved config reloads
    assert saved["eval_split"] == "test"


def test_eval_split_val_answers_the_validation_samples(tmp_path, cache_dir):
    from data_recipes.synthetic.writer import VAL_ID_OFFSET

    res = run(tiny_cfg(tmp_path, cache_dir, "eval.split=val", "data.val_limit=2"), progress=False, log=lambda m: None)
    assert res["eval_split"] == "val"
    for stage, task in (("01_TextVQA", "TextVQA"), ("02_GQA", "TextVQA"), ("02_GQA", "GQA")):
        rows = [json.loads(l) for l in (tmp_path / "run" / "answers" / stage / f"{task}.jsonl").read_text().splitlines()]
        assert [int(r["question_id"]) for r in rows] == [VAL_ID_OFFSET, VAL_ID_OFFSET + 1]


def test_multitask_is_one_joint_row(tmp_path, cache_dir):
    res = run(tiny_cfg(tmp_path, cache_dir, "method={type: multitask}"), progress=False, log=lambda m: None)
    assert res["joint"] and len(res["accuracy_matrix"]) == 1 and len(res["accuracy_matrix"][0]) == 2
    assert res["metrics"]["forgetting"] is None


def test_cli_rejects_unknown_key_with_exit_2(tmp_path, capsys):
    assert main(["run", "configs/demo/lora_ft.yaml", "train.learning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key learning_rate" in err and "valid keys" in err


def test_missing_image_stops_before_touching_the_run_folder(tmp_path, cache_dir):
    cfg = tiny_cfg(tmp_path, cache_dir)
    run(cfg, progress=False, log=lambda m: None)
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    # a broken copy of the generated benchmark, used as a "coin" source
    src = synthetic_root(cfg.data, cache_dir, log=lambda m: None)
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    test_file = broken / "instructions" / "Instructions" / "GQA" / "test.json"
    victim = json.loads(test_file.read_text())[1]["image"]
    (broken / "images" / victim).unlink()
    bad = tiny_cfg(tmp_path, cache_dir, "data.source=coin", f"data.instruction_root={broken / 'instructions'}",
                   f"data.image_root={broken / 'images'}")
    with pytest.raises(DataError) as e:
        run(bad, progress=False, log=lambda m: None)
    assert "GQA/test.json" in str(e.value) and "record 1" in str(e.value)
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before
