"""A run on a CoIN tree with what real trees have: text-only records mixed in, a 0-byte image, TextVQA
without its ten-answer file. The run refuses before anything is trained (exit 2, one line per bad
image; reference mode also refuses TextVQA), or, with data.skip_bad_images and default scoring,
trains and evaluates (text-only samples included) and records what it skipped and warned about."""
from __future__ import annotations

import json

import pytest

from data_recipes.synthetic import generate
from mmcit.cli import main
from mmcit.errors import DataError
from mmcit.recipe import run
from tests.test_integration import tiny_cfg


@pytest.fixture
def tree(tmp_path):
    """GQA + TextVQA in CoIN's layout; half the GQA train records and one GQA test record text-only,
    one GQA train image empty (0 bytes), TextVQA's ten-answer file gone."""
    generate(tmp_path / "coin", seed=5, scale=0.05, tasks=["TextVQA", "GQA"])
    instr, images = tmp_path / "coin" / "instructions", tmp_path / "coin" / "images"
    gqa = instr / "Instructions" / "GQA"
    train = json.loads((gqa / "train.json").read_text())
    for rec in train[1::2]:
        del rec["image"]
        rec["conversations"][0]["value"] = rec["conversations"][0]["value"].replace("<image>\n", "")
    (gqa / "train.json").write_text(json.dumps(train))
    test = json.loads((gqa / "test.json").read_text())
    del test[0]["image"]
    (gqa / "test.json").write_text(json.dumps(test))
    (images / train[0]["image"]).write_bytes(b"")
    (images / "TextVQA" / "TextVQA_0.5.1_val.json").unlink()
    return instr, images, train[0]["image"]


def coin_args(tree) -> list[str]:
    return ["data.source=coin", f"data.instruction_root={tree[0]}", f"data.image_root={tree[1]}"]


def test_bad_image_and_reference_textvqa_refused_before_training(tmp_path, cache_dir, tree, capsys):
    cfg = tiny_cfg(tmp_path, cache_dir, *coin_args(tree))
    with pytest.raises(DataError) as info:
        run(cfg, progress=False, log=lambda m: None)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("1 image(s) missing or unreadable, used by 1 sample(s); "
                                                   "nothing was trained")
    assert "GQA/train.json, record 0: image " in lines[1] and f"{tree[2]!r} cannot be read" in lines[1]
    assert not (tmp_path / "run").exists()
    # The command line: exit 2, the same lines, no traceback; reference mode adds TextVQA's line.
    assert main(["run", "configs/demo/lora_ft.yaml", *coin_args(tree), f"output_dir={tmp_path / 'run'}",
                 f"data.cache_dir={cache_dir}", "data.tasks=[TextVQA, GQA]", "eval.scoring_mode=reference"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("mmcit: error: 1 image(s) missing or unreadable")
    assert "\nTextVQA: 3 of 3 test sample(s) cannot be scored in reference mode; first: TextVQA sample" in err
    assert "no ten gold answers" in err and f"{tree[2]!r} cannot be read" in err


def test_skip_bad_images_leaves_the_samples_out_and_says_so(tmp_path, cache_dir, tree):
    from mmcit.data.preflight import preflight
    from mmcit.data.stream import load_data

    cfg = tiny_cfg(tmp_path, cache_dir, *coin_args(tree), "data.skip_bad_images=true")
    data = load_data(cfg.data, cache_dir, log=lambda m: None)
    gqa = data.tasks[1]
    assert len(gqa.train) == 39 and sum(s.image is None for s in gqa.train) == 20  # the bad one was not
    assert gqa.test[0].image is None and len(gqa.test) == 3
    logs: list[str] = []
    checks = preflight(data, cfg.data, "default", logs.append).record()
    assert checks["skipped_samples"] == {"GQA": {"train": 1, "test": 0, "val": 0}}
    assert checks["skipped_images"]["count"] == 1
    assert f"{tree[2]!r} cannot be read" in checks["skipped_images"]["first"][0]
    assert checks["warnings"] == [f"TextVQA: 3 of 3 test sample(s): {_gap()}"]
    assert logs[0].startswith("skipping 1 sample(s)") and logs[1].startswith("warning: TextVQA: 3 of 3")
    with pytest.raises(DataError, match="TextVQA: 3 of 3 test sample"):
        preflight(data, cfg.data, "reference", logs.append)


@pytest.mark.slow
def test_skip_bad_images_trains_text_only_samples_and_records_what_it_skipped(tmp_path, cache_dir, tree):
    cfg = tiny_cfg(tmp_path, cache_dir, *coin_args(tree), "data.skip_bad_images=true", "train.max_steps=4")
    logs: list[str] = []
    res = run(cfg, progress=False, log=logs.append)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["complete"] and saved["data_checks"] == res["data_checks"]
    checks = saved["data_checks"]
    assert checks["skipped_samples"] == {"GQA": {"train": 1, "test": 0, "val": 0}}
    assert checks["skipped_images"]["count"] == 1 and tree[2] in checks["skipped_images"]["first"][0]
    assert checks["warnings"] == [f"TextVQA: 3 of 3 test sample(s): {_gap()}"]
    assert any(m.startswith("warning: TextVQA: 3 of 3") for m in logs)
    # Every GQA test question was answered, the text-only one included.
    rows = (tmp_path / "run" / "answers" / "02_GQA" / "GQA.jsonl").read_text().splitlines()
    assert len(rows) == 3


def _gap() -> str:
    from mmcit.evaluation.scorers.coin import TEXTVQA_GAP

    return TEXTVQA_GAP
