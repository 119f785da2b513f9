"""MCITlib's scoring rules (UCIT, MLLM-DCL, MLLM-ACL) on hand-made cases, quirks included, in both modes.

Each expected value is what the rule in docs/suites.md gives (restated from MLLM-CL's ``eval_*.py``);
(reference, default) pairs differ only where the docs name a plain bug."""
from __future__ import annotations

import pytest

from mmcit.data.sample import Sample
from mmcit.evaluation.scoring import score_sample, score_task


def mk(answer: str, prompt: str = "q", answers=None, **meta) -> Sample:
    return Sample(task="t", id="1", image=None, turns=[(prompt, answer)], answers=answers, meta=meta)


CASES = [
    # scorer, prediction, gold, (reference, default)
    ("mcit_upper_exact", "centipede", "Centipede", (1, 1)),
    ("mcit_upper_exact", "A.", "A", (0, 0)),  # no punctuation removal, no letter parsing
    ("mcit_upper_exact", "straße", "STRASSE", (1, 1)),  # Python's upper()
    ("mcit_ai2d", "there are 13", "3", (0, 0)),  # multi-word: ' 3', '3 ', '3.', '3,' not in it
    ("mcit_ai2d", "there are 13 cars", "3", (1, 1)),  # but '3 ' is in '13 cars'
    ("mcit_ai2d", "13", "3", (1, 1)),  # one-word prediction: substring
    ("mcit_ai2d", "not", "no", (1, 1)),
    ("mcit_ai2d", "3.5", "3.5", (0, 1)),  # reference removes every '.' from the gold: '35'
    ("mcit_ai2d", "the answer is 3.5 m", "3.5", (0, 1)),
    ("mcit_ai2d", "Unanswerable", "Unanswerable", (0, 0)),  # skipped but counted
    ("mcit_ai2d", "there is a truck.", "There is a truck.", (1, 1)),  # a gold sentence keeps its period
    ("mcit_ai2d", "a truck", "There is a truck.", (0, 0)),
    ("mcit_ai2d", "yes, it is", "Yes", (1, 1)),  # 'yes,' occurs
    ("mcit_pvqa", "Yes, the hand is present", "yes", (1, 1)),
    ("mcit_pvqa", "unanswerable yes", "yes", (1, 1)),  # only the case-sensitive word is skipped
    ("mcit_pvqa", "Unanswerable yes", "yes", (0, 0)),
    ("mcit_fin", "A.", "A", (1, 1)),
    ("mcit_fin", "Y e s", "Yes", (1, 1)),
    ("mcit_fin", "12.5", "12.5", (0, 1)),  # gold not normalised in the reference
    ("mcit_fin", "up trend", "up trend", (0, 1)),
    ("mcit_sat", "The answer is 1.", "1", (1, 1)),
    ("mcit_sat", "10", "1", (1, 1)),  # substring after removing spaces and '.'
    ("mcit_sat", "Unanswerable", "Unanswerable", (1, 1)),  # no skip rule in eval_sat
    ("mcit_letter", " b ", "B", (1, 1)),
    ("mcit_letter", "B. home", "B", (0, 0)),
]


@pytest.mark.parametrize("scorer, pred, gold, expected", CASES)
def test_rules_in_both_modes(scorer, pred, gold, expected):
    got = (score_sample(scorer, pred, mk(gold), "reference"), score_sample(scorer, pred, mk(gold), "default"))
    assert got == tuple(float(x) for x in expected)


@pytest.mark.parametrize("image, pred, gold, prompt, expected", [
    ("images/AI2D_3.png", "b", "B", "q", 1.0),  # exact after lower-casing
    ("images/AI2D_3.png", "b.", "B", "q", 0.0),
    ("images/TQA_1.png", "the b", "B", "q", 0.0),
    ("images/ai2d_3.png", "the b", "B", "q", 1.0),  # prefix is case-sensitive: 'ai2d' is MapQA, substring
    ("images/MapQA_1.png", "texas,ohio", "Texas,Ohio,Utah", "Which states have ...?", 2 / 3),
    ("images/MapQA_1.png", "texas, ohio", "Texas,Ohio", "Which states have ...?", 0.5),  # ' ohio' != 'ohio'
    ("images/MapQA_1.png", "the value is high", "high", "What is the value?", 1.0),
    ("images/SciVerse_9.png", "Unanswerable", "unanswerable", "q", 0.0),
])
def test_sci(image, pred, gold, prompt, expected):
    sample = mk(gold, prompt, image=image, question=prompt)
    assert score_sample("mcit_sci", pred, sample, "reference") == pytest.approx(expected)
    assert score_sample("mcit_sci", pred, sample, "default") == pytest.approx(expected)


def test_ocrbench_hits_and_task_number():
    kie = dict(answer_type="Key Information Extraction")
    hmer = dict(answer_type="Handwritten Mathematical Expression Recognition")
    samples = [mk("x", answers=["Asbestos", "ASB"], **kie), mk("x", answers=["a + b"], **hmer),
               mk("x", answers=["a + b"], **hmer), mk("x", answers=["Total"], **kie)]
    preds = ["CASE: asbestos\n", "a+b=c", "A+B", "tot"]
    ref, scores = score_task("mcit_ocr", preds, samples, "reference")
    assert scores == [1.0, 1.0, 0.0, 0.0]  # HMER keeps case; KIE lower-cases
    assert ref == pytest.approx(0.2)  # hits / 10: OCRBench's "Final Score Norm"
    assert score_task("mcit_ocr", preds, samples, "default")[0] == pytest.approx(50.0)


def test_mathvista_without_judge():
    mc = dict(question_type="multi_choice", answer_type="text", choices=["circle", "square"], answer_option="B")
    assert score_sample("mcit_math", "B", mk("square", **mc), "reference") == 1.0
    assert score_sample("mcit_math", "The answer is (B).", mk("square", **mc), "reference") == 1.0
    assert score_sample("mcit_math", "It is a square", mk("square", **mc), "reference") == 1.0  # option text
    assert score_sample("mcit_math", "A or B", mk("square", **mc), "reference") == 0.0  # two letters: not read
    integer = dict(question_type="free_form", answer_type="integer")
    assert score_sample("mcit_math", "14", mk("14", **integer), "reference") == 1.0
    assert score_sample("mcit_math", "14 cups", mk("14", **integer), "reference") == 0.0  # judge needed
    assert score_sample("mcit_math", "0", mk("0", **integer), "reference") == 0.0  # parsed 0 reads as a failure
    assert score_sample("mcit_math", "0", mk("0", **integer), "default") == 1.0
    fl = dict(question_type="free_form", answer_type="float")
    assert score_sample("mcit_math", "0.60", mk("0.6", **fl), "reference") == 1.0
    free = dict(question_type="free_form", answer_type="text")
    assert score_sample("mcit_math", "Blue", mk("blue", **free), "reference") == 0.0
    assert score_sample("mcit_math", "Blue", mk("blue", **free), "default") == 1.0
    assert score_sample("mcit_math", "3", mk("3"), "reference") == 1.0  # fields missing: kind from the gold


def test_upper_exact_task_percent_counts_unanswered_as_wrong():
    acc, scores = score_task("mcit_upper_exact", ["a", None, "c"], [mk("A"), mk("B"), mk("D")], "reference")
    assert scores == [1.0, 0.0, 0.0] and acc == pytest.approx(100 / 3)
