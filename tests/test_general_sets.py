"""General-skill sets (MME, POPE, SEED-Bench, MMBench) read from tiny files in their standard layouts
and scored by their standard rules on hand-made answers; retention against the base."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmcit.config import load_config
from mmcit.errors import ConfigError
from mmcit.evaluation.config import GeneralSetConfig
from mmcit.evaluation.general import load_general_set, retention
from mmcit.evaluation.general_scores import mme_answer, mmbench_letter, pope_answer
from tests.suite_trees import write_general


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("general")
    return {k: {kk: str(v) for kk, v in d.items()} for k, d in write_general(root).items()}, root


def _load(sets, name):
    files, root = sets
    return load_general_set(GeneralSetConfig(set=name, **files[name]), root / "cache")


@pytest.mark.parametrize("text, answer", [("Yes", "yes"), ("no.", "no"), ("Yes, there is", "yes"),
                                          ("Not sure", "no"), ("None", "no"), ("There is a dog", "other")])
def test_mme_answer_rule(text, answer):
    assert mme_answer(text) == answer


def test_mme_scores(sets):
    samples, score = _load(sets, "mme")
    assert [s.answer for s in samples[:2]] == ["Yes", "No"] and samples[0].meta["category"] == "artwork"
    assert samples[0].image.parent.name == "images"  # artwork keeps its images in images/
    # artwork: all right (acc 100, acc+ 100); existence: image 0 half right, image 1 right.
    preds = ["Yes", "No", "yes", "no", "Yes", "Yes", "Yes", "No"]
    out = score(preds)
    assert out["categories"]["artwork"]["score"] == 200.0
    assert out["categories"]["existence"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert out["perception"] == 325.0 and out["cognition"] == 0


@pytest.mark.parametrize("text, answer", [("No, there is not.", "no"), ("NO", "yes"), ("Not.", "yes"),
                                          ("Nope", "yes"), ("No\ndog", "yes"), ("Yes. No.", "yes")])
def test_pope_answer_rule(text, answer):
    assert pope_answer(text) == answer


def test_pope_scores(sets):
    samples, score = _load(sets, "pope")
    assert [s.answer for s in samples] == ["yes", "no", "yes", "no", "yes"]
    out = score(["Yes", "Yes", "No", "No", "Yes"])
    adv = out["splits"]["adversarial"]  # tp 1, fp 1, fn 1, tn 0
    assert adv["accuracy"] == pytest.approx(1 / 3) and adv["precision"] == 0.5 and adv["recall"] == 0.5
    assert adv["yes_ratio"] == pytest.approx(2 / 3)
    assert out["splits"]["random"]["f1"] == 1.0 and out["f1"] == pytest.approx(100 * (0.5 + 1) / 2)


def test_seed_scores(sets):
    samples, score = _load(sets, "seed")
    assert [s.answer for s in samples] == ["A", "B", "A"]
    out = score(["A", "b", "A."])  # exact, case-sensitive
    assert out["image_accuracy"] == pytest.approx(100 / 3) and out["total_accuracy"] == 25.0
    assert out["question_types"] == {"Instance Identity": 0.0, "Scene Understanding": 50.0}


def test_mmbench_circular(sets):
    samples, score = _load(sets, "mmbench")
    assert len(samples) == 3 + 2  # three options, then two: one sample per circular shift
    assert samples[0].prompt.startswith("Look closely.\nWhat colour?\nA. red\nB. blue\nC. green")
    assert [s.answer for s in samples[:3]] == ["B", "A", "C"]  # blue moves with each shift
    assert "nan" not in samples[3].prompt
    assert mmbench_letter("The answer is (B).", ["x", "y"]) == "B" and mmbench_letter("y", ["x", "yes"]) is None
    out = score(["B", "A", "blue", "A", "A"])  # q0 right in every shift; q1 wrong in its second
    assert out["circular_accuracy"] == 50.0 and out["single_pass_accuracy"] == 100.0
    assert out["categories"] == {"color": 100.0, "count": 0.0}


def test_retention_and_config_checks():
    base = {"pope": {"set": "pope", "f1": 80.0, "accuracy": 70.0}}
    final = {"pope": {"set": "pope", "f1": 60.0, "accuracy": 70.0}}
    r = retention(base, final)["pope"]
    assert r["f1"] == {"base": 80.0, "final": 60.0, "change": -20.0, "retained": 75.0}
    with pytest.raises(ConfigError, match="anno required"):
        load_config(None, ["eval.general=[{set: pope, questions: q, images: i}]"])
    with pytest.raises(ConfigError, match="share a name"):
        load_config(None, ["eval.general=[{set: mmbench, questions: a}, {set: mmbench, questions: b}]"])
