"""The standard scoring of the general-skill sets (rules as LLaVA's and MCITlib's scripts apply them).

* MME (``calculation_mme.py``): an answer is "yes"/"no" if it is exactly that (lower-cased), else
  by its first four characters (containing "yes", else "no"), else "other" (wrong). Per category:
  acc = right / questions, acc+ = images whose two questions are both right / images; score =
  100 acc + 100 acc+. Perception = sum over its ten categories, cognition over its four.
* POPE (``eval_pope.py``): the answer is cut at its first ".", commas removed, split on spaces; "no"
  if any word is ``No``, ``not`` or ``no``, else "yes". Per split: accuracy, precision, recall and F1
  with "yes" positive, and the yes ratio (as fractions). Precision with no "yes" answer is 0 here
  (the reference divides by zero).
* SEED-Bench (``convert_seed_for_submission.py``): right iff the answer equals the gold letter
  exactly. Accuracy per question type over the asked questions; ``image_accuracy`` over every image
  question of SEED-Bench.json (unasked ones count wrong, as the reference's totals do).
* MMBench: mmcit's rule, since MCITlib and LLaVA leave MMBench to its server: the answer's letter is
  read as VLMEvalKit does without a judge (the one option letter standing alone, else the one option
  text it contains); a question is right only if every circular shift is (CircularEval).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from mmcit.data.sample import Sample
from mmcit.evaluation.scorers.mcitlib import can_infer_option, can_infer_text

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_answer(text: str) -> str:
    """``yes``, ``no`` or ``other`` by MME's rule."""
    low = text.lower().strip()
    if low in ("yes", "no"):
        return low
    head = low[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def score_mme(predictions: Sequence[str], samples: Sequence[Sample]) -> dict:
    """Per-category score (100 acc + 100 acc+), perception and cognition sums."""
    by_cat: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for pred, s in zip(predictions, samples):
        by_cat[s.meta["category"]].append((s.meta["image_key"], mme_answer(pred) == s.answer.strip().lower()))
    categories = {}
    for cat, rows in by_cat.items():
        acc = sum(ok for _, ok in rows) / len(rows)
        per_image: dict[str, list[bool]] = defaultdict(list)
        for key, ok in rows:
            per_image[key].append(ok)
        acc_plus = sum(all(v) for v in per_image.values()) / len(per_image)
        categories[cat] = {"acc": 100 * acc, "acc_plus": 100 * acc_plus, "score": 100 * acc + 100 * acc_plus}
    return {"perception": sum(c["score"] for k, c in categories.items() if k in MME_PERCEPTION),
            "cognition": sum(c["score"] for k, c in categories.items() if k in MME_COGNITION),
            "categories": categories}


def pope_answer(text: str) -> str:
    """``yes`` or ``no`` by POPE's rule (cut at the first ".", drop commas, look for a negation word)."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return "no" if any(w in ("No", "not", "no") for w in words) else "yes"


def score_pope(predictions: Sequence[str], samples: Sequence[Sample]) -> dict:
    """Per split: accuracy, precision, recall, F1 ("yes" positive) and yes ratio; mean F1 and accuracy."""
    splits: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pred, s in zip(predictions, samples):
        splits[s.meta["category"]].append((pope_answer(pred), s.answer.strip().lower()))
    out: dict = {}
    for name, pairs in sorted(splits.items()):
        tp = sum(p == "yes" and g == "yes" for p, g in pairs)
        fp = sum(p == "yes" and g == "no" for p, g in pairs)
        fn = sum(p == "no" and g == "yes" for p, g in pairs)
        tn = sum(p == "no" and g == "no" for p, g in pairs)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"accuracy": (tp + tn) / len(pairs), "precision": precision, "recall": recall, "f1": f1,
                     "yes_ratio": (tp + fp) / len(pairs)}
    return {"f1": 100 * sum(v["f1"] for v in out.values()) / len(out),
            "accuracy": 100 * sum(v["accuracy"] for v in out.values()) / len(out), "splits": out}


def score_seed(predictions: Sequence[str], samples: Sequence[Sample], totals: dict) -> dict:
    """Accuracy per question type, image accuracy and total accuracy (over SEED-Bench.json's counts)."""
    per_type: dict[str, list[bool]] = defaultdict(list)
    right = {"image": 0, "all": 0}
    for pred, s in zip(predictions, samples):
        ok = pred == s.answer
        per_type[s.meta["question_type"]].append(ok)
        right["all"] += ok
        right["image"] += ok and s.meta["data_type"] == "image"
    return {"image_accuracy": 100 * right["image"] / max(totals["image"], 1),
            "total_accuracy": 100 * right["all"] / max(totals["all"], 1),
            "asked_accuracy": 100 * right["all"] / len(samples),
            "question_types": {k: 100 * sum(v) / len(v) for k, v in sorted(per_type.items())}}


def mmbench_letter(pred: str, options: Sequence[str]) -> str | None:
    """The option letter an answer names (VLMEvalKit's reading without a judge), else None."""
    choices = {chr(65 + i): str(o) for i, o in enumerate(options)}
    return can_infer_option(pred, choices) or can_infer_text(pred, choices)


def score_mmbench(predictions: Sequence[str], samples: Sequence[Sample]) -> dict:
    """Circular accuracy overall and per category, and the accuracy of the unshifted pass."""
    questions: dict[str, list[bool]] = defaultdict(list)
    category: dict[str, str] = {}
    single = []
    for pred, s in zip(predictions, samples):
        ok = mmbench_letter(pred, s.meta["options"]) == s.answer
        questions[s.meta["index"]].append(ok)
        category[s.meta["index"]] = s.meta["category"]
        if s.meta["rotation"] == 0:
            single.append(ok)
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for index, oks in questions.items():
        by_cat[category[index]].append(all(oks))
    circular = [all(v) for v in questions.values()]
    return {"circular_accuracy": 100 * sum(circular) / len(circular),
            "single_pass_accuracy": 100 * sum(single) / max(len(single), 1),
            "categories": {k: 100 * sum(v) / len(v) for k, v in sorted(by_cat.items())}}
