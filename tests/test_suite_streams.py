"""A 2-task stream of each MCITlib suite through the real runner with the tiny model (one tree holds
all three suites, so the three runs share one tiny base), the order and suite recorded in
results.json, and the general-skill sets scored on the base and after the stream."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmcit.recipe import run
from tests.suite_trees import write_acl, write_dcl, write_general, write_ucit
from tests.test_integration import tiny_cfg


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suites-tree")
    write_ucit(root)
    write_dcl(root)
    write_acl(root)
    return root


def _cfg(tmp_path, cache_dir, tree, suite, tasks, *extra):
    return tiny_cfg(tmp_path, cache_dir, "data.source=suite", f"data.suite={suite}", f"data.tasks=[{tasks}]",
                    f"data.instruction_root={tree}", f"data.image_root={tree}", "train.max_steps=1",
                    "eval.max_new_tokens=4", *extra)


@pytest.mark.parametrize("suite, tasks, order, trained", [
    ("mllm_dcl", "RS, Fin", "reverse", ["Fin", "RS"]),
    ("mllm_acl", "OCR, APP", "origin", ["OCR", "APP"]),
])
def test_two_task_stream(suite, tasks, order, trained, tree, tmp_path, cache_dir):
    res = run(_cfg(tmp_path, cache_dir, tree, suite, tasks, f"data.order={order}"), progress=False, log=lambda m: None)
    assert res["tasks"] == trained and res["order"] == order and res["suite"] == suite
    m = res["accuracy_matrix"]
    assert len(m) == 2 and len(m[1]) == 2 and all(v is not None for row in m for v in row)
    answers = tmp_path / "run" / "answers" / f"02_{trained[1]}" / f"{trained[0]}.jsonl"
    assert len(answers.read_text().splitlines()) >= 1


def test_ucit_stream_with_captions_and_general_retention(tree, tmp_path, cache_dir):
    files = write_general(tmp_path / "general")
    general = ", ".join("{set: %s, %s}" % (name, ", ".join(f"{k}: {v}" for k, v in d.items()))
                        for name, d in files.items() if name in ("pope", "mmbench"))
    cfg = _cfg(tmp_path, cache_dir, tree, "ucit", "ImageNet-R, VizWiz", f"eval.general=[{general}]")
    res = run(cfg, progress=False, log=lambda m: None)
    assert res["tasks"] == ["ImageNet-R", "VizWiz"] and res["order"] == "origin"
    assert res["accuracy_matrix"][1][1] >= 0  # CIDEr x 100 of the tiny model's captions
    g = res["general"]
    assert set(g["base"]) == set(g["final"]) == {"pope", "mmbench"}
    assert set(g["retention"]["pope"]) == {"f1", "accuracy"} and "circular_accuracy" in g["retention"]["mmbench"]
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "general" / "base.json").read_text())["pope"]["questions"] == 5
    assert len((run_dir / "general" / "final" / "mmbench.jsonl").read_text().splitlines()) == 5
    assert "General skills (retention against the base model)" in (run_dir / "report.md").read_text()
