"""Caption metrics: the Python PTB tokenizer against the Java one's recorded output, coco-caption's
scorers, and the caption scorers on a task."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmcit.data.sample import Sample
from mmcit.errors import ConfigError
from mmcit.evaluation.captions import PUNCTUATION, caption_scores, coco_tokenize, java_available, ptb_tokenize
from mmcit.evaluation.scoring import score_task

DATA = Path(__file__).parent / "data"
# Captions the Python tokenizer splits differently from Stanford's PTBTokenizer 3.4.1 (after
# coco-caption drops punctuation): PTB splits "w/" and "y'all", mmcit keeps them whole.
KNOWN_DIFFERENT = {"A photo w/ a dog.", "Y'all come back now."}


def _java_lines() -> list[tuple[str, str]]:
    # tests/data/ptb_cases.java-3.4.1.txt is what `java -cp stanford-corenlp-3.4.1.jar
    # edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase` (pycocoevalcap 1.2's jar)
    # printed for tests/data/ptb_cases.txt, line by line.
    cases = (DATA / "ptb_cases.txt").read_text(encoding="utf-8").splitlines()
    java = (DATA / "ptb_cases.java-3.4.1.txt").read_text(encoding="utf-8").splitlines()
    assert len(cases) == len(java) == 112
    return list(zip(cases, java))


def test_python_tokens_equal_java_ptb_after_punctuation_removal():
    different = set()
    for caption, java in _java_lines():
        expected = " ".join(w for w in java.rstrip().split(" ") if w not in PUNCTUATION)
        if coco_tokenize(caption) != expected:
            different.add(caption)
    assert different == KNOWN_DIFFERENT  # 110 of 112 hand-made captions agree


@pytest.mark.parametrize("text, tokens", [
    ("The dog's ball isn't here.", ["the", "dog", "'s", "ball", "is", "n't", "here", "."]),
    ("A close-up (sleeping).", ["a", "close-up", "-lrb-", "sleeping", "-rrb-", "."]),  # kept: lower-case brackets
    ("It costs $5.99, about 50% off!?", ["it", "costs", "$", "5.99", ",", "about", "50", "%", "off", "!?"]),
    ("A photo taken in the U.S.", ["a", "photo", "taken", "in", "the", "u.s.", "."]),
    ("I cannot, gonna try", ["i", "can", "not", ",", "gon", "na", "try"]),
])
def test_ptb_rules(text, tokens):
    assert ptb_tokenize(text) == tokens


def test_scores_match_pycocoevalcap_on_the_same_tokens():
    from pycocoevalcap.cider.cider import Cider

    preds = ["a dog runs on grass", "a can of soup", "nothing here"]
    refs = [["a dog running on the grass", "a brown dog"], ["a can of tomato soup", "soup can"],
            ["a blurry photo", "an empty table"]]
    corpus, per = caption_scores(preds, refs, ("CIDEr", "Bleu_1", "ROUGE_L"))
    direct = Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [p] for i, p in enumerate(preds)})
    assert corpus["CIDEr"] == pytest.approx(float(direct[0]))
    assert per["CIDEr"] == pytest.approx([float(x) for x in direct[1]])
    assert 0 < corpus["Bleu_1"] <= 1 and 0 < corpus["ROUGE_L"] <= 1
    with pytest.raises(ConfigError, match="unknown caption metric"):
        caption_scores(preds, refs, ("SPICE",))


def _samples(refs: list[list[str]]) -> list[Sample]:
    return [Sample("VizWiz", str(i), None, [("caption?", r[0])], answers=r) for i, r in enumerate(refs)]


def test_caption_scorer_on_a_task():
    refs = [["a dog runs on the grass", "a brown dog running", "dog running outside"],
            ["a can of soup on a table", "a red can of soup", "soup can on a counter"]]
    perfect, per = score_task("caption_cider", [r[0] for r in refs], _samples(refs), "reference")
    assert perfect > 100 and len(per) == 2  # CIDEr x 100 of a reference caption
    worse, _ = score_task("caption_cider", ["a cat", None], _samples(refs), "default")  # None: empty caption
    assert 0 <= worse < perfect
    avg6, _ = score_task("caption_average6", [r[0] for r in refs], _samples(refs), "default")
    assert 0 < avg6 < perfect


@pytest.mark.slow
@pytest.mark.skipif(not java_available(), reason="METEOR 1.5 is a Java jar")
def test_ucit_average_with_meteor_needs_java_and_runs_with_it():
    refs = [["a dog runs on the grass", "a brown dog running"], ["a can of soup", "a red can of soup"]]
    avg, _ = score_task("caption_average", ["a dog runs", "a can of soup"], _samples(refs), "reference")
    corpus, _ = caption_scores(["a dog runs", "a can of soup"], refs, ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4",
                                                                       "METEOR", "ROUGE_L", "CIDEr"))
    assert 0 < corpus["METEOR"] <= 1 and avg == pytest.approx(100 * sum(corpus.values()) / 7)
