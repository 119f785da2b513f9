"""The scorers of the eight CoIN task kinds, in two modes.

``reference`` mode gives, sample for sample, the result of the original CoIN / LLaVA evaluation
scripts, quirks included (docs/coin.md, "Scoring"), so that numbers can be compared with
published ones. ``default`` mode differs only where docs/coin.md marks a plain bug:

* ImageNet: an empty prediction is wrong (the reference counts it correct, because "" is a
  substring of every gold label).
* Grounding: the box is parsed robustly as four numbers (the reference drops the first and last
  characters of the bracket-stripped string, which cuts a digit off the last coordinate).
* TextVQA: a question without its ten gold answers is scored against ten copies of its single
  ``answer`` (``Scorer.gap`` says so, and runs record it); reference mode refuses it, as the
  original script, which looks every question up in TextVQA_0.5.1_val.json, cannot score it.

Every other rule, including the odd ones (ScienceQA's first one-character word, the TextVQA
normaliser's 32-period cap and hyphen rule, GQA's case-sensitive gold), is the same in both modes:
they define the metric rather than being bugs of one script.

Whitespace (``mmcit.evaluation.scoring``): default mode strips the prediction first; reference mode
reads it exactly as given, as the original scripts read the answer file ("yes " is wrong for GQA,
"[0.2, 0.2, 0.6, 0.6]\n" keeps its last digit for Grounding). Gold answers are used as given.

A prediction of ``None`` means "no prediction" and scores 0 in every scorer and mode (as the reference: a
problem with no prediction counts as wrong).
"""
from __future__ import annotations

import math
import re
from typing import Sequence

from mmcit.data.sample import Sample
from mmcit.evaluation.scoring import SCORERS, Scorer, pct_avg_scaled, pct_count, pct_mean
from mmcit.evaluation.vqa_normalize import normalize_answer

__all__ = ["SCORER_DOC", "box_iou", "count_options", "parse_box", "parse_box_reference", "parse_scienceqa_letter",
           "scienceqa_gold_index", "textvqa_soft_accuracy"]

SCIENCEQA_OPTIONS: tuple[str, ...] = ("A", "B", "C", "D", "E")
TEXTVQA_NUM_ANSWERS = 10
GROUNDING_IOU_THRESHOLD = 0.5


# --------------------------------------------------------------------------------------------
# ScienceQA


def parse_scienceqa_letter(prediction: str) -> str:
    """Extract the answer letter from a ScienceQA prediction, as the reference script does.

    Rules, in order: the whole string is one of "A".."E"; else a string of at least 3 characters
    starting with one of "A".."E" followed by ". " gives that letter; else the first
    one-character word (``\\b\\w\\b``: any word character, digits included) upper-cased; else
    "FAILED". The result may be a letter that is not an option ("I think it is B" -> "I",
    "It's B" -> "S"); the caller decides whether it is among the choices.
    """
    if prediction in SCIENCEQA_OPTIONS:
        return prediction
    if len(prediction) >= 3 and prediction[0] in SCIENCEQA_OPTIONS and prediction[1:3] == ". ":
        return prediction[0]
    match = re.search(r"\b(\w)\b", prediction)
    if match is not None:
        return match.group(1).upper()
    return "FAILED"


# Option markers of a ScienceQA prompt, in the layouts in use: "A. x" (one per line, or inline after
# a space or a colon: "Options: A. x B. y") and "(A) x" (LLaVA's conversion script).
_DOT_OPTION = re.compile(r"(?:^|(?<=[\s:]))([A-E])\.(?=\s|$)", re.MULTILINE)
_PAREN_OPTION = re.compile(r"\(([A-E])\)(?=\s|$)", re.MULTILINE)


def count_options(prompt: str) -> int:
    """Number of options a ScienceQA prompt lists (0 if none is found).

    For each marker layout ("A. x" on its own line or inline, "(A) x"), the markers A, B, C, ... are
    taken in order of appearance, each after the one before, and the longest such run counts: a
    stray "C." in the context before the options, or a "D. " after only two options, adds nothing.
    """
    best = 0
    for pattern in (_DOT_OPTION, _PAREN_OPTION):
        n = 0
        for m in pattern.finditer(prompt):
            if n < len(SCIENCEQA_OPTIONS) and m.group(1) == SCIENCEQA_OPTIONS[n]:
                n += 1
        best = max(best, n)
    return best


def _scienceqa_num_choices(sample: Sample) -> int:
    """Number of options: ``meta["num_choices"]`` (the reader's), else counted from the prompt."""
    n = sample.meta.get("num_choices")
    if n is None:
        n = count_options(sample.prompt)
        if n == 0:
            raise ValueError(
                f"ScienceQA sample {sample.id!r}: meta['num_choices'] is missing and no options "
                "('A. x' lines, inline 'A. x B. y' or '(A) x') were found in the prompt"
            )
        return n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"ScienceQA sample {sample.id!r}: num_choices must be a positive int, got {n!r}")
    return n


def scienceqa_gold_index(answer: str) -> int | None:
    """Index of a ScienceQA gold answer: the bare letter "B", or the option form "B. cat"; None
    for anything else."""
    gold = answer.strip()
    if gold[:1] in SCIENCEQA_OPTIONS and (len(gold) == 1 or gold[1] == "."):
        return SCIENCEQA_OPTIONS.index(gold[0])
    return None


def _scienceqa_gold_index(sample: Sample) -> int:
    index = scienceqa_gold_index(sample.answer)
    if index is None:
        raise ValueError(f"ScienceQA sample {sample.id!r}: gold answer {sample.answer.strip()!r} is not a letter A-E")
    return index


def _score_scienceqa(prediction: str, sample: Sample, reference: bool) -> float:
    letter = parse_scienceqa_letter(prediction)
    valid = SCIENCEQA_OPTIONS[: _scienceqa_num_choices(sample)]
    # A letter beyond the number of options is wrong even if it equals the gold letter (the
    # reference maps it to index -1).
    pred_index = SCIENCEQA_OPTIONS.index(letter) if letter in valid else -1
    return 1.0 if pred_index == _scienceqa_gold_index(sample) else 0.0


# --------------------------------------------------------------------------------------------
# TextVQA


#: Why a TextVQA question is scored with a fallback in default mode (``Scorer.gap``).
TEXTVQA_GAP = ("no ten gold answers (TextVQA_0.5.1_val.json is not in the image root's TextVQA folder, or "
               "lacks the question_id): default mode scores against the single 'answer' ten times, "
               "reference mode refuses")


def _textvqa_gold(sample: Sample, reference: bool) -> list[str]:
    if sample.answers is None:
        if reference:
            raise ValueError(f"TextVQA sample {sample.id!r}: {TEXTVQA_GAP}")
        return [sample.answer] * TEXTVQA_NUM_ANSWERS
    if len(sample.answers) != TEXTVQA_NUM_ANSWERS:
        raise ValueError(
            f"TextVQA sample {sample.id!r}: exactly {TEXTVQA_NUM_ANSWERS} gold answers are required "
            f"(the soft accuracy is defined on 10), got {len(sample.answers)}"
        )
    return list(sample.answers)


def _textvqa_gap(sample: Sample) -> str | None:
    return TEXTVQA_GAP if sample.answers is None else None


def textvqa_soft_accuracy(prediction: str, gold_answers: Sequence[str]) -> float:
    """Soft VQA accuracy of one prediction against exactly 10 gold answers (EvalAI rules).

    Both sides are normalised with :func:`mmcit.evaluation.vqa_normalize.normalize_answer`. For each gold
    answer k, min(1, (number of the *other* 9 equal to the prediction) / 3); the result is the mean
    of the 10 values. Matches: 0 -> 0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1.0.
    """
    if len(gold_answers) != TEXTVQA_NUM_ANSWERS:
        raise ValueError(f"exactly {TEXTVQA_NUM_ANSWERS} gold answers are required, got {len(gold_answers)}")
    pred = normalize_answer(prediction)
    gold = [normalize_answer(a) for a in gold_answers]
    if pred not in gold:
        return 0.0
    matches = sum(g == pred for g in gold)
    # Summed in gold order with the same float operations as the original, so that per-sample
    # values are bit-identical (3 matches gives sum([2/3]*3 + [1]*7) / 10, not exactly 0.9).
    accs = [min(1, float(matches - (g == pred)) / 3) for g in gold]
    return sum(accs) / len(accs)


def _score_textvqa(prediction: str, sample: Sample, reference: bool) -> float:
    return textvqa_soft_accuracy(prediction, _textvqa_gold(sample, reference))


# --------------------------------------------------------------------------------------------
# ImageNet, GQA, VizWiz, VQAv2, OCR-VQA


def _score_imagenet(prediction: str, sample: Sample, reference: bool) -> float:
    if not prediction and not reference:
        # "" is a substring of every label, so the reference counts an empty answer as correct.
        return 0.0
    gold = sample.answer
    return 1.0 if (gold in prediction or prediction in gold) else 0.0


def _score_gqa(prediction: str, sample: Sample, reference: bool) -> float:
    # Only the prediction is normalised; the gold is compared as given (case-sensitive).
    return 1.0 if prediction.rstrip(".").lower() == sample.answer else 0.0


def _score_upper_exact(prediction: str, sample: Sample, reference: bool) -> float:
    return 1.0 if prediction.upper() == sample.answer.upper() else 0.0


def _score_ocrvqa(prediction: str, sample: Sample, reference: bool) -> float:
    # The reference skips any prediction containing "Unanswerable" (case-sensitive) but keeps it
    # in the total, i.e. it is wrong even when the gold is "Unanswerable" too.
    if "Unanswerable" in prediction:
        return 0.0
    return 1.0 if prediction.lower() == sample.answer.lower() else 0.0


# --------------------------------------------------------------------------------------------
# Grounding

# A decimal number: optional sign, digits with optional fraction or a bare fraction, optional
# exponent. Deliberately no "nan"/"inf": a box with those is not a box.
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_box(text: str) -> list[float] | None:
    """Parse "[x1, y1, x2, y2]" robustly: the 4 numbers of the first bracketed group.

    If ``text`` has a "[", only the part up to the next "]" (or the end) is read, so surrounding
    prose ("The box is [0.1, 0.2, 0.3, 0.4].") is ignored; without brackets the whole text is read.
    Returns None unless exactly 4 finite numbers are found.
    """
    start = text.find("[")
    if start >= 0:
        end = text.find("]", start + 1)
        text = text[start + 1 : end if end >= 0 else len(text)]
    numbers = [float(x) for x in _NUMBER.findall(text)]
    if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def parse_box_reference(text: str) -> list[float] | None:
    """Parse a predicted box exactly as the reference script does, quirk included.

    Remove every "[" and "]", drop the first and the last character, split on "," and convert each
    part with ``float``; None if a part does not convert or there are not 4 parts.
    "[0.1, 0.2, 0.3, 0.45]" gives [0.1, 0.2, 0.3, 0.4]; "[0.1, 0.2, 0.3, 0.6]" gives a last
    coordinate of 0.0 ("0." is what is left of "0.6"), while "[0.1, 0.2, 0.3, 0.6]\n" keeps it
    (the newline is the character dropped).
    """
    text = text.replace("[", "").replace("]", "")
    try:
        box = [float(x) for x in text[1:-1].split(",")]
    except ValueError:
        return None
    return box if len(box) == 4 else None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes, with the reference script's arithmetic.

    The intersection is clamped at 0 per axis; areas are not clamped, so an inverted box has no
    intersection and gets IoU 0; a non-positive union gives 0.
    """
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0


def _grounding_gold(sample: Sample) -> tuple[list[float], float]:
    bbox = sample.meta.get("bbox")
    if bbox is None:
        # The test file's answer_bbox is a clean "[x1, y1, x2, y2]"; the reference parses it in
        # full (no character cut), so the robust parser is the faithful one here.
        bbox = parse_box(sample.answer)
        if bbox is None:
            raise ValueError(
                f"Grounding sample {sample.id!r}: no meta['bbox'] and the answer {sample.answer!r} "
                "is not a box '[x1, y1, x2, y2]'"
            )
    bbox = [float(v) for v in bbox]
    if len(bbox) != 4:
        raise ValueError(f"Grounding sample {sample.id!r}: gold box needs 4 numbers, got {bbox!r}")
    size = sample.meta.get("size")
    if size is None or len(size) != 2:
        raise ValueError(f"Grounding sample {sample.id!r}: meta['size'] = [width, height] is required")
    max_wh = max(size)
    if not max_wh > 0:
        raise ValueError(f"Grounding sample {sample.id!r}: image size {size!r} is not positive")
    return bbox, max_wh


def _score_grounding(prediction: str, sample: Sample, reference: bool) -> float:
    gold, max_wh = _grounding_gold(sample)
    pred = parse_box_reference(prediction) if reference else parse_box(prediction)
    if pred is None:
        return 0.0
    # Both boxes are scaled to pixels of the padded square before the IoU, as in the reference:
    # this only matters for float rounding, which decides cases at exactly 0.5.
    iou = box_iou([x * max_wh for x in pred], [x * max_wh for x in gold])
    return 1.0 if iou > GROUNDING_IOU_THRESHOLD else 0.0


# --------------------------------------------------------------------------------------------
# Registry

SCORER_DOC: dict[str, str] = {
    "scienceqa": (
        "Both modes: letter = the prediction if it is exactly A-E; else its first character if it is "
        "A-E followed by '. ' (length >= 3); else the first one-character word upper-cased ('I think "
        "it is B' -> I, 'It's B' -> S); else FAILED. Correct if the letter is among the first "
        "num_choices options and equals the gold letter."
    ),
    "textvqa": (
        "Both modes: EvalAI-normalised soft accuracy against exactly 10 gold answers: mean over k of "
        "min(1, #other-9-matching / 3). The normaliser's quirks (32-period cap, ' -' removes every "
        "hyphen) are kept in both modes. Without the 10 answers: default scores against "
        "[sample.answer]*10 (and says so), reference refuses."
    ),
    "imagenet": (
        "Correct if gold is a substring of the prediction or vice versa (case-sensitive). "
        "reference: an empty prediction is correct (quirk). default: an empty prediction is wrong."
    ),
    "gqa": (
        "Both modes: prediction lower-cased and all trailing periods stripped, then exact match "
        "with the gold as given (gold is not lower-cased)."
    ),
    "vizwiz": "Both modes: exact match after upper-casing prediction and the single gold answer.",
    "vqav2": "Both modes: exact match after upper-casing prediction and the single gold answer.",
    "ocrvqa": (
        "Both modes: wrong if the prediction contains 'Unanswerable' (case-sensitive); otherwise "
        "exact match after lower-casing both sides."
    ),
    "grounding": (
        "Correct if IoU(pred, gold) > 0.5 strictly, both boxes scaled by max(width, height) of "
        "meta['size']. reference: the box string has '[' and ']' removed and its first and last "
        "characters dropped (cuts the last digit), then is split on ','; not 4 floats -> wrong. "
        "default: the 4 numbers of the first '[...]' group (or of the whole text) are read; not "
        "exactly 4 -> wrong."
    ),
}

for _name, _fn, _percent, _gap in (
    ("scienceqa", _score_scienceqa, pct_avg_scaled, None),
    ("textvqa", _score_textvqa, pct_mean, _textvqa_gap),
    ("imagenet", _score_imagenet, pct_count, None),
    ("gqa", _score_gqa, pct_avg_scaled, None),
    ("vizwiz", _score_upper_exact, pct_count, None),
    ("vqav2", _score_upper_exact, pct_count, None),
    ("ocrvqa", _score_ocrvqa, pct_count, None),
    ("grounding", _score_grounding, pct_count, None),
):
    SCORERS.register(Scorer(_name, _fn, SCORER_DOC[_name], _percent, _gap), name=_name,
                     doc=f"CoIN {_name}: " + SCORER_DOC[_name].split(". ")[0].rstrip(".") + ".")
