"""The per-sample scorers of UCIT, MLLM-DCL and MLLM-ACL, as MCITlib's evaluation scripts apply them.

MCITlib copied its QA scorers unchanged from MLLM-CL (``llava/eval/CoIN/eval_*.py``); each rule is
restated here (docs/suites.md, "Scoring"). ``reference`` mode gives, sample for sample, what those
scripts give, quirks included. ``default`` mode differs only where a rule is a plain bug:

* ``mcit_ai2d`` (RS, AD): the reference removes every "." from a one-word gold (meant for a final
  period), so a decimal gold such as ``3.5`` can never match; default removes only final periods.
* ``mcit_fin``: the reference removes spaces and "." from the prediction but not from the gold, so a
  gold with either can never match; default normalises both sides alike.
* ``mcit_ocr``: the reference's task number is hits / 10 (OCRBench's "Final Score Norm", a % only for
  its 1000 questions); default is hits / questions x 100.
* ``mcit_math``: the reference takes an answer without its LLM judge only when it can be parsed, and
  an integer gold of 0 is never taken (a falsy result reads as "not parsed"); default takes it.

Everything else (substring matches that let ``13`` match ``3``, the ``Unanswerable`` skip, Sci's
MapQA fractions, IconQA's digit options) defines the published numbers and is the same in both modes.
Caption tasks (VizWiz, Flickr30k) are scored by ``scorers/captions.py``.
"""
from __future__ import annotations

import string
from pathlib import PurePosixPath

from mmcit.data.sample import Sample
from mmcit.evaluation.scoring import SCORERS, Scorer, pct_count

__all__ = ["can_infer_option", "can_infer_text", "ocr_hit", "sci_subset"]

#: Sci's exact-match sub-datasets, read off the image file name's prefix before its first "_".
SCI_EXACT = ("AI2D", "TQA", "VQA", "SciVerse")
HMER = "Handwritten Mathematical Expression Recognition"


def _upper_exact(pred: str, sample: Sample, reference: bool) -> float:
    # eval_deepseek_r1.py: no strip, no letter parsing; Python's upper() ("straße" == "STRASSE").
    return float(pred.upper() == sample.answer.upper())


def _ai2d(pred: str, sample: Sample, reference: bool) -> float:
    if "Unanswerable" in pred:  # skipped by the reference, but still in its total: wrong
        return 0.0
    p, g = pred.lower(), sample.answer.lower()
    if " " in g:
        return float(g in p)
    g = g.replace(".", "") if reference else g.rstrip(".")
    if " " in p:
        return float(any(x in p for x in (" " + g, g + " ", g + ".", g + ",")))
    return float(g in p)


def _pvqa(pred: str, sample: Sample, reference: bool) -> float:
    if "Unanswerable" in pred:
        return 0.0
    return float(sample.answer.lower() in pred.lower())


def sci_subset(image: str) -> str:
    """Sci's sub-dataset from an image path: the file name's prefix before "_" if it is one of
    ``SCI_EXACT`` (case-sensitive), else ``MapQA``."""
    prefix = PurePosixPath(image.replace("\\", "/")).name.split("_")[0]
    return prefix if prefix in SCI_EXACT else "MapQA"


def _sci(pred: str, sample: Sample, reference: bool) -> float:
    if "Unanswerable" in pred:
        return 0.0
    p, g = pred.lower(), sample.answer.lower()
    if sci_subset(str(sample.meta.get("image", sample.image or ""))) != "MapQA":
        return float(p == g)
    if "Which states" in sample.meta.get("question", sample.prompt):
        # A fraction: gold items found among the prediction's comma-separated items, unstripped.
        items, found = g.split(","), p.split(",")
        return sum(item in found for item in items) / len(items)
    return float(g in p)


def _fin(pred: str, sample: Sample, reference: bool) -> float:
    if "Unanswerable" in pred:
        return 0.0
    p = pred.lower().replace(" ", "").replace(".", "")
    g = sample.answer.lower()
    if not reference:
        g = g.replace(" ", "").replace(".", "")
    return float(p == g)


def ocr_hit(pred: str, golds: list[str], category: str) -> bool:
    """OCRBench's hit: any gold is a substring of the prediction, after removing spaces and newlines
    (case-sensitive) for handwritten maths, else after lower-casing, stripping and removing newlines."""
    for gold in golds:
        if category == HMER:
            g = gold.strip().replace(" ", "").replace("\n", "")
            p = pred.strip().replace(" ", "").replace("\n", "")
        else:
            g = gold.lower().strip().replace("\n", "")
            p = pred.lower().strip().replace("\n", "")
        if g in p:
            return True
    return False


def _ocr(pred: str, sample: Sample, reference: bool) -> float:
    golds = sample.answers if sample.answers else [sample.answer]
    return float(ocr_hit(pred, list(golds), str(sample.meta.get("answer_type", ""))))


def _sat(pred: str, sample: Sample, reference: bool) -> float:
    def norm(text: str) -> str:
        return text.lower().strip().replace(" ", "").replace("\n", "").replace(".", "")
    return float(norm(sample.answer) in norm(pred))


def can_infer_option(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit's option reading: the single choice letter standing alone among the answer's words
    (after ``.()[],:;!*#{}`` become spaces); ``Z`` for a refusal; None when not readable."""
    refusals = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
                "I'm sorry, but without the image provided", "Cannot determine the answer")
    if "Failed to obtain answer via API" in answer:
        return None
    if any(r in answer for r in refusals):
        return "Z"
    mod = answer
    for c in ".()[],:;!*#{}":
        mod = mod.replace(c, " ")
    words = [w.strip() for w in mod.split()]
    letters = [c for c in choices if c in words]
    if len(letters) == 1:
        return letters[0]
    if not letters and sum(z in words for z in ("Z", "")) == 1:
        return "Z"
    return None


def can_infer_text(answer: str, choices: dict[str, str]) -> str | None:
    """The letter of the only choice whose text (lower-cased) occurs in the answer, else None."""
    low = answer.lower()
    hits = [k for k, v in choices.items() if str(v).lower() in low]
    return hits[0] if len(hits) == 1 else None


def _math(pred: str, sample: Sample, reference: bool) -> float:
    meta = sample.meta
    if meta.get("question_type") == "multi_choice":
        choices = {string.ascii_uppercase[i]: str(c) for i, c in enumerate(meta.get("choices") or [])}
        got = can_infer_option(pred, choices) or can_infer_text(pred, choices)
        return float(got is not None and got == meta.get("answer_option"))
    kind = meta.get("answer_type") or _number_kind(sample.answer)
    try:
        if kind == "integer":
            got, gold = int(pred), int(sample.answer)
        elif kind == "float":
            got, gold = float(pred), float(sample.answer)
        else:
            # Free-form text goes to the reference's LLM judge: not taken without it. Default mode
            # takes a case-insensitive exact match.
            return 0.0 if reference else float(pred.lower().rstrip(".") == sample.answer.lower())
    except ValueError:
        return 0.0
    if reference and not got:  # the reference's "if post_check(...)" reads a parsed 0 as a failure
        return 0.0
    return float(got == gold)


def _number_kind(text: str) -> str:
    for kind, convert in (("integer", int), ("float", float)):
        try:
            convert(text)
            return kind
        except ValueError:
            pass
    return "text"


def _letter(pred: str, sample: Sample, reference: bool) -> float:
    # APP (MMT-Bench) is scored by its server from the stripped, upper-cased prediction ("Z" when
    # missing); locally: that letter against the gold letter.
    return float(pred.upper() == sample.answer.strip().upper())


def _pct_ocrbench(total: float, n: int) -> float:
    """OCRBench's "Final Score Norm": hits / 10 (a % for its 1000 questions only)."""
    return float(total) / 10


SCORER_DOC: dict[str, str] = {
    "mcit_upper_exact": "Both modes: correct iff prediction.upper() == gold.upper() (UCIT's QA tasks).",
    "mcit_ai2d": ("'Unanswerable' in the prediction -> wrong; lower-case both; a gold with a space must be a "
                  "substring; else the gold without '.' (reference: every '.', default: final ones) must occur "
                  "as ' g', 'g ', 'g.' or 'g,' in a multi-word prediction, or as a substring of a one-word one."),
    "mcit_pvqa": "Both modes: 'Unanswerable' -> wrong; correct iff gold.lower() is a substring of pred.lower().",
    "mcit_sci": ("Both modes: 'Unanswerable' -> wrong; lower-case both; AI2D/TQA/VQA/SciVerse images: exact "
                 "match; MapQA: 'Which states' questions score the fraction of comma-separated gold items "
                 "among the prediction's, others need the gold as a substring."),
    "mcit_fin": ("'Unanswerable' -> wrong; prediction lower-cased without spaces and '.' must equal the gold "
                 "lower-cased (reference) or normalised alike (default)."),
    "mcit_ocr": ("Both modes: a hit iff any gold is a substring of the prediction (handwritten maths: spaces and "
                 "newlines removed, case kept; else lower-cased, stripped, newlines removed). Task number: "
                 "hits / 10 (reference) or hits / questions x 100 (default)."),
    "mcit_sat": "Both modes: lower, strip, remove spaces, newlines and '.' from both; correct iff gold in pred.",
    "mcit_math": ("MathVista without the LLM judge: multi-choice by VLMEvalKit's can_infer, integer/float by "
                  "int()/float(); free-form text: wrong (reference) or exact match (default); a parsed 0 "
                  "is wrong in reference mode."),
    "mcit_letter": "Both modes: correct iff the prediction upper-cased equals the gold letter (APP; mmcit's rule).",
}

_SHORT = {
    "mcit_upper_exact": "UCIT QA (ImageNet-R, ArxivQA, IconQA, CLEVR-Math): upper-cased exact match",
    "mcit_ai2d": "MLLM-DCL RS, AD: lower-cased word / substring match (eval_ai2d.py)",
    "mcit_pvqa": "MLLM-DCL Med: gold is a substring of the prediction, lower-cased (eval_pvqa.py)",
    "mcit_sci": "MLLM-DCL Sci: exact (AI2D, TQA, VQA, SciVerse) or MapQA substring / fraction (eval_sci.py)",
    "mcit_fin": "MLLM-DCL Fin: exact after removing spaces and '.' (eval_finvis.py)",
    "mcit_ocr": "MLLM-ACL OCR: OCRBench hits, any gold a substring (eval_ocr.py)",
    "mcit_sat": "MLLM-ACL VP: gold a substring after removing spaces, newlines, '.' (eval_sat.py)",
    "mcit_math": "MLLM-ACL Math: MathVista answers read without the LLM judge",
    "mcit_letter": "MLLM-ACL APP: the prediction's letter equals the gold letter (mmcit's local rule)",
}
for _name, _fn in (("mcit_upper_exact", _upper_exact), ("mcit_ai2d", _ai2d), ("mcit_pvqa", _pvqa),
                   ("mcit_sci", _sci), ("mcit_fin", _fin), ("mcit_sat", _sat), ("mcit_math", _math),
                   ("mcit_letter", _letter), ("mcit_ocr", _ocr)):
    SCORERS.register(Scorer(_name, _fn, SCORER_DOC[_name], pct_count,
                            percent_reference=_pct_ocrbench if _name == "mcit_ocr" else None),
                     name=_name, doc=_SHORT[_name])
