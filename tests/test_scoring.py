"""Hand-made cases for every CoIN scorer rule and quirk, in both modes."""
from __future__ import annotations

import pytest

from mmcit.data.sample import Sample
from mmcit.evaluation.scoring import MODES, SCORERS, check_samples, sample_problem, score_sample, score_task
from mmcit.evaluation.scorers.coin import (
    SCORER_DOC,
    box_iou,
    count_options,
    parse_box,
    parse_box_reference,
    parse_scienceqa_letter,
    textvqa_soft_accuracy,
)
from mmcit.evaluation.vqa_normalize import normalize_answer, process_punctuation

BOTH = pytest.mark.parametrize("mode", ["default", "reference"])


def mk(task: str, answer: str, prompt: str = "q", answers=None, **meta) -> Sample:
    return Sample(task=task, id=f"{task}-1", image=None, turns=[(prompt, answer)], answers=answers, meta=meta)


# --------------------------------------------------------------------------------------------
# Registry, errors, task aggregation


def test_registry_names_and_docs():
    coin = {"scienceqa", "textvqa", "imagenet", "gqa", "vizwiz", "vqav2", "ocrvqa", "grounding"}
    assert set(SCORER_DOC) == coin  # CoIN's module documents its eight; other modules add their own
    assert coin <= set(SCORERS.names())
    assert set(MODES) == {"default", "reference"}


def test_unknown_scorer_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown scorer .coco.; registered: .*gqa, grounding, imagenet"):
        score_sample("coco", "x", mk("gqa", "x"))


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="default.*reference"):
        score_sample("gqa", "x", mk("gqa", "x"), mode="strict")
    with pytest.raises(ValueError, match="default"):
        score_task("gqa", ["x"], [mk("gqa", "x")], mode="strict")


def test_score_task_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions for 1 samples"):
        score_task("gqa", ["a", "b"], [mk("gqa", "a")])


def test_score_task_empty():
    with pytest.raises(ValueError, match="empty"):
        score_task("gqa", [], [])


def test_score_task_accuracy_percent():
    samples = [mk("gqa", "cat"), mk("gqa", "dog"), mk("gqa", "yes"), mk("gqa", "no")]
    acc, scores = score_task("gqa", ["cat", "Dog.", "no", None], samples)
    assert scores == [1.0, 1.0, 0.0, 0.0]
    assert acc == 50.0


def test_score_task_textvqa_averages_soft_scores():
    gold = ["dog"] * 2 + ["cat"] * 8
    acc, scores = score_task("textvqa", ["dog", "cat"], [mk("textvqa", "dog", answers=gold)] * 2)
    assert scores == pytest.approx([0.6, 1.0])
    assert acc == pytest.approx(80.0)


@BOTH
def test_none_prediction_is_wrong_everywhere(mode):
    assert score_sample("imagenet", None, mk("imagenet", "cat"), mode) == 0.0
    assert score_sample("scienceqa", None, mk("scienceqa", "A", num_choices=2), mode) == 0.0


def test_non_string_prediction_rejected():
    with pytest.raises(TypeError):
        score_sample("gqa", 3, mk("gqa", "3"))


# --------------------------------------------------------------------------------------------
# ScienceQA (same in both modes)


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),            # whole string is an option
        ("B. cat", "B"),       # "<letter>. " prefix
        ("E. ", "E"),          # exactly 3 characters still qualifies
        ("B.cat", "B"),        # no space: falls to the one-character-word rule
        ("I think it is B", "I"),  # first one-character word, not the letter meant
        ("It's B", "S"),       # apostrophe makes "s" a word
        ("the answer is b", "B"),  # upper-cased
        ("F", "F"),            # not an option, returned as parsed
        ("42", "FAILED"),      # no one-character word
        ("7 apples", "7"),     # any word character counts
        ("", "FAILED"),
        ("Answer: C", "C"),
    ],
)
def test_scienceqa_parse(text, letter):
    assert parse_scienceqa_letter(text) == letter


@BOTH
@pytest.mark.parametrize(
    "pred, expected",
    [
        ("B", 1.0),
        ("C", 0.0),
        ("B. cat", 1.0),
        ("  B  ", 1.0),               # default: stripped; reference: "B" is the first one-character word
        ("b", 1.0),                   # "b" -> one-character word -> "B"
        ("I think it is B", 0.0),     # parsed as I
        ("It's B", 0.0),              # parsed as S
        ("The answer is B.", 1.0),
        ("", 0.0),                    # FAILED
        ("banana", 0.0),              # FAILED
    ],
)
def test_scienceqa_score(mode, pred, expected):
    assert score_sample("scienceqa", pred, mk("scienceqa", "B", num_choices=3), mode) == expected


@BOTH
def test_scienceqa_option_beyond_num_choices_is_wrong(mode):
    # Gold D is out of range for a 3-option problem: the prediction "D" maps to -1, never correct.
    assert score_sample("scienceqa", "D", mk("scienceqa", "D", num_choices=3), mode) == 0.0
    assert score_sample("scienceqa", "E", mk("scienceqa", "E", num_choices=5), mode) == 1.0
    assert score_sample("scienceqa", "E. x", mk("scienceqa", "A", num_choices=4), mode) == 0.0


@BOTH
def test_scienceqa_num_choices_from_prompt(mode):
    prompt = "Context: none\nWhich animal barks?\nA. cat\nB. dog\nAnswer with the option's letter from the given choices directly."
    s = mk("scienceqa", "B", prompt=prompt)
    assert score_sample("scienceqa", "B", s, mode) == 1.0
    # Only two options in the prompt: "C" is out of range even if it were the gold letter.
    s_c = mk("scienceqa", "C", prompt=prompt)
    assert score_sample("scienceqa", "C", s_c, mode) == 0.0


@pytest.mark.parametrize(
    "prompt, n",
    [
        ("Which?\nA. cat\nB. dog\nC. cow\nAnswer with the option's letter.", 3),   # one per line
        ("Which shape?\nOptions: A. square B. triangle C. circle\nAnswer with the letter.", 3),  # inline
        ("Question: Which?\nContext: N/A\nOptions: (A) yes (B) no\nAnswer.", 2),     # LLaVA's "(A) x"
        ("(A) a\n(B) b\n(C) c\n(D) d\n(E) e", 5),
        ("Context: vitamin C. is sour.\nWhich?\nA. x\nB. y", 2),   # a stray "C." before the options
        ("Which?\nA. x\nB. y\nD. note", 2),                        # "D." after two options
        ("Options:A. x B. y", 2),                                     # after a colon
        ("U.S.A. is big", 0),                                         # "A." inside a word
        ("no options here", 0),
    ],
)
def test_scienceqa_count_options(prompt, n):
    assert count_options(prompt) == n


@BOTH
def test_scienceqa_num_choices_from_inline_options(mode):
    s = mk("scienceqa", "C", prompt="Which shape?\nOptions: A. square B. triangle C. circle\nAnswer.")
    assert score_sample("scienceqa", "C", s, mode) == 1.0
    assert score_sample("scienceqa", "D", mk("scienceqa", "C", prompt=s.prompt), mode) == 0.0


def test_scienceqa_missing_choices_and_bad_gold():
    with pytest.raises(ValueError, match="num_choices"):
        score_sample("scienceqa", "A", mk("scienceqa", "A", prompt="no options here"))
    with pytest.raises(ValueError, match="not a letter"):
        score_sample("scienceqa", "A", mk("scienceqa", "cat", num_choices=2))
    # A gold written "B. dog" is accepted as B.
    assert score_sample("scienceqa", "B", mk("scienceqa", "B. dog", num_choices=2)) == 1.0


# --------------------------------------------------------------------------------------------
# TextVQA normalisation (EvalAI)


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("Two", "2"),
        ("none", "0"),
        ("ten", "10"),
        ("twenty", "twenty"),            # only none..ten are mapped
        ("the dog.", "dog"),
        ("A Dog", "dog"),
        ("an apple", "apple"),
        ("dont", "don't"),
        ("don't", "don't"),
        ("Yall", "y'all"),
        ("somebody'd", "somebodyd"),     # the table's reversed entry
        ("Im", "im"),                    # capitalised keys never match (text is lower-cased first)
        ("it's", "it 's"),               # "'s" is split off into its own word
        ("3.5", "3.5"),                  # period before a digit is kept
        ("version 2.", "version 2"),
        ("x-ray", "x ray"),              # hyphen touching no space -> becomes a space
        ("x-ray - film", "xray film"),   # one " -" anywhere deletes every hyphen
        ("x- ray", "x ray"),             # "- " also deletes it
        ("1,000", "1000"),               # commas are deleted in the first pass
        ("what?", "what"),
        ("hello!", "hello"),
        ("(hello)", "hello"),            # not next to a space: becomes a space, then split away
        ("a (b) c", "b c"),              # " (" present: parens deleted; article a dropped
        ("x/y", "x y"),
        ("a/b", "b"),                    # "/" becomes a space, then the article "a" goes
        ("a/b c/ d", "ab c d"),          # "/ " present somewhere: every "/" deleted
        ("  line\none\ttwo ", "line 1 2"),
        ("Coca-Cola", "coca cola"),
        ("e.g.", "eg"),
        ("St. John's", "st john 's"),
    ],
)
def test_textvqa_normalize(raw, norm):
    assert normalize_answer(raw) == norm


def test_textvqa_period_strip_capped_at_32():
    assert normalize_answer("wow" + "." * 32) == "wow"
    assert normalize_answer("wow" + "." * 33) == "wow."
    assert normalize_answer("a.b." * 20).count(".") == 40 - 32


def test_process_punctuation_comma_digit_rule():
    # Called on its own (the full pipeline deletes commas before this step), a digit-comma-digit
    # group makes every punctuation character be deleted instead of replaced by a space.
    assert process_punctuation("a/b 1,0") == "ab 10"
    assert process_punctuation("a/b") == "a b"


# --------------------------------------------------------------------------------------------
# TextVQA soft accuracy


def gold_with(pred: str, k: int) -> list[str]:
    return [pred] * k + [f"other{n}" for n in range(10 - k)]


@pytest.mark.parametrize(
    "k, expected",
    [
        # For each of the 10 gold answers, min(1, matches among the other 9 / 3), averaged:
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),   # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),   # 0.9: a left-out match leaves only 2 others
        (4, (4 * 1 + 6 * 1) / 10),         # 1.0
        (10, 1.0),
    ],
)
@BOTH
def test_textvqa_soft_accuracy(k, expected, mode):
    s = mk("textvqa", "dog", answers=gold_with("dog", k))
    assert score_sample("textvqa", "dog", s, mode) == pytest.approx(expected)


def test_textvqa_soft_accuracy_hand_values():
    assert textvqa_soft_accuracy("dog", gold_with("dog", 1)) == pytest.approx(0.3)
    assert textvqa_soft_accuracy("dog", gold_with("dog", 2)) == pytest.approx(0.6)
    assert textvqa_soft_accuracy("dog", gold_with("dog", 3)) == pytest.approx(0.9)
    assert textvqa_soft_accuracy("dog", gold_with("dog", 4)) == 1.0


@BOTH
def test_textvqa_normalises_both_sides(mode):
    gold = ["2"] * 2 + ["two dogs"] * 8
    assert score_sample("textvqa", "Two.", mk("textvqa", "2", answers=gold), mode) == pytest.approx(0.6)
    gold = ["The Dog"] * 4 + ["cat"] * 6
    assert score_sample("textvqa", " dog ", mk("textvqa", "dog", answers=gold), mode) == 1.0
    gold = ["don't"] * 3 + ["no"] * 7
    assert score_sample("textvqa", "dont", mk("textvqa", "no", answers=gold), mode) == pytest.approx(0.9)


def test_textvqa_answers_none_default_uses_single_answer_reference_refuses():
    assert score_sample("textvqa", "Coke", mk("textvqa", "coke", answers=None)) == 1.0
    assert score_sample("textvqa", "pepsi", mk("textvqa", "coke", answers=None)) == 0.0
    with pytest.raises(ValueError, match="no ten gold answers"):
        score_sample("textvqa", "coke", mk("textvqa", "coke", answers=None), mode="reference")


def test_textvqa_requires_ten_answers():
    with pytest.raises(ValueError, match="10"):
        score_sample("textvqa", "x", mk("textvqa", "x", answers=["x"] * 9))
    with pytest.raises(ValueError, match="10"):
        textvqa_soft_accuracy("x", ["x"] * 11)


# --------------------------------------------------------------------------------------------
# ImageNet


@BOTH
@pytest.mark.parametrize(
    "pred, expected",
    [
        ("golden retriever", 1.0),
        ("a golden retriever dog", 1.0),   # gold inside prediction
        ("retriever", 1.0),                # prediction inside gold
        ("Golden retriever", 0.0),         # case-sensitive
        ("labrador", 0.0),
    ],
)
def test_imagenet_substring(mode, pred, expected):
    assert score_sample("imagenet", pred, mk("imagenet", "golden retriever"), mode) == expected


def test_imagenet_empty_prediction_per_mode():
    s = mk("imagenet", "tabby cat")
    assert score_sample("imagenet", "", s, mode="reference") == 1.0   # "" is in every string
    assert score_sample("imagenet", "", s, mode="default") == 0.0
    assert score_sample("imagenet", "  \n", s, mode="reference") == 0.0  # read as written: not in the gold
    assert score_sample("imagenet", "  \n", s, mode="default") == 0.0  # stripped to "", then wrong
    acc_ref, _ = score_task("imagenet", ["", "dog"], [s, s], mode="reference")
    acc_def, _ = score_task("imagenet", ["", "dog"], [s, s])
    assert (acc_ref, acc_def) == (50.0, 0.0)


# --------------------------------------------------------------------------------------------
# GQA, VizWiz, VQAv2, OCR-VQA (same in both modes)


@BOTH
@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("yes", "yes", 1.0),
        ("Yes.", "yes", 1.0),       # lower-cased, trailing period stripped
        ("yes...", "yes", 1.0),     # all trailing periods
        ("yes", "Yes", 0.0),        # gold is not lower-cased
        ("yes .", "yes", 0.0),      # only periods are stripped from the end, not the space before
        (".yes", "yes", 0.0),
    ],
)
def test_gqa(mode, pred, gold, expected):
    assert score_sample("gqa", pred, mk("gqa", gold), mode) == expected


@BOTH
@pytest.mark.parametrize("scorer", ["vizwiz", "vqav2"])
@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("unanswerable", "Unanswerable", 1.0),
        ("Red", "red", 1.0),
        ("red.", "red", 0.0),       # no punctuation handling
        ("2", "two", 0.0),          # no number mapping
        ("a red car", "red car", 0.0),
    ],
)
def test_upper_exact(mode, scorer, pred, gold, expected):
    assert score_sample(scorer, pred, mk(scorer, gold), mode) == expected


@BOTH
@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("The Hobbit", "the hobbit", 1.0),
        ("Unanswerable", "Unanswerable", 0.0),   # always wrong, even when it is the gold
        ("Unanswerable question", "x", 0.0),
        ("unanswerable", "Unanswerable", 1.0),   # the check is case-sensitive
        ("Cookbooks", "Cookbook", 0.0),
    ],
)
def test_ocrvqa(mode, pred, gold, expected):
    assert score_sample("ocrvqa", pred, mk("ocrvqa", gold), mode) == expected


# --------------------------------------------------------------------------------------------
# Grounding


def ground(size=(100, 100), bbox=(0.0, 0.0, 0.5, 0.5), answer=None) -> Sample:
    meta = {"size": list(size)}
    if bbox is not None:
        meta["bbox"] = list(bbox)
    return mk("grounding", answer if answer is not None else str(list(bbox)), **meta)


def test_parse_box_reference_quirk():
    # Brackets removed, then the first and last characters dropped.
    assert parse_box_reference("[0.1, 0.2, 0.3, 0.45]") == [0.1, 0.2, 0.3, 0.4]
    assert parse_box_reference("[0.1, 0.2, 0.3, 0.6]") == [0.1, 0.2, 0.3, 0.0]   # "0." is left
    assert parse_box_reference(" [0.1, 0.2, 0.3, 0.45]") == [0.1, 0.2, 0.3, 0.4]  # the space is the cut
    assert parse_box_reference("[1.5, 0.2, 0.3, 0.6]\n") == [0.5, 0.2, 0.3, 0.6]  # the newline is the cut
    assert parse_box_reference(" [1.5, 0.2, 0.3, 0.6]") == [1.5, 0.2, 0.3, 0.0]
    assert parse_box_reference("[0.1, 0.2, 0.3]") is None
    assert parse_box_reference("box: [0.1, 0.2, 0.3, 0.45]") is None   # "ox: 0.1" is not a float
    assert parse_box_reference("") is None


def test_parse_box_robust():
    assert parse_box("[0.1, 0.2, 0.3, 0.45]") == [0.1, 0.2, 0.3, 0.45]
    assert parse_box("The box is [0.1,0.2,0.3,0.6].") == [0.1, 0.2, 0.3, 0.6]
    assert parse_box("0.1 0.2 0.3 0.4") == [0.1, 0.2, 0.3, 0.4]
    assert parse_box("[.5, 1, 1e-1, 0.25] and [9, 9, 9, 9]") == [0.5, 1.0, 0.1, 0.25]
    assert parse_box("[0.1, 0.2, 0.3]") is None
    assert parse_box("[0.1, 0.2, 0.3, 0.4, 0.5]") is None
    assert parse_box("no box") is None
    assert parse_box("[nan, 0.2, 0.3, 0.4]") is None
    assert parse_box("[1e999, 0.2, 0.3, 0.4]") is None


def test_box_iou():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0
    assert box_iou([10, 10, 0, 0], [0, 0, 10, 10]) == 0   # inverted box: no intersection
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0        # empty union


# Gold [0, 0, 0.5, 0.5] on a 100x100 image is 50x50 px (area 2500). A prediction [0, 0, 0.5, y]
# inside it has IoU = 50 * 100y / 2500 = 2y: y = 0.26 -> 0.52, 0.25 -> exactly 0.5, 0.24 -> 0.48.
# Reference mode reads one digit less at the end, so its strings carry an extra trailing digit.
@pytest.mark.parametrize(
    "pred, ref, default",
    [
        ("[0.0, 0.0, 0.5, 0.261]", 1.0, 1.0),   # ref reads 0.26 (IoU .52), default .261 (.522)
        ("[0.0, 0.0, 0.5, 0.249]", 0.0, 0.0),   # ref .24 (.48), default .249 (.498)
        ("[0.0, 0.0, 0.5, 0.259]", 0.0, 1.0),   # ref .25: IoU exactly 0.5, not > 0.5
        ("[0.0, 0.0, 0.5, 0.25]", 0.0, 0.0),    # default: exactly 0.5; ref .2 -> 0.4
        ("[0.0, 0.0, 0.5, 0.5]", 0.0, 1.0),     # ref's last coordinate "0." = 0.0: empty box
        ("[0.0, 0.0, 0.5, 0.55]", 1.0, 1.0),    # ref .5 -> IoU 1; default IoU 2500/2750
        ("[0.0, 0.0, 0.5, 0.6]", 0.0, 1.0),     # one-decimal 0.6 loses its digit in ref
        ("Box: [0.0, 0.0, 0.5, 0.5].", 0.0, 1.0),  # prose around the box: only default parses
        ("0.0, 0.0, 0.5, 0.5", 0.0, 1.0),       # no brackets: ref cuts "0" and "5" -> 0.0 last
        ("[0.0, 0.0, 0.5]", 0.0, 0.0),          # malformed: 3 numbers
        ("[0.0, 0.0, 0.5, 0.5, 0.5]", 0.0, 0.0),  # malformed: 5 numbers
        ("[a, b, c, d]", 0.0, 0.0),
        ("", 0.0, 0.0),
        ("[0.5, 0.5, 0.0, 0.0]", 0.0, 0.0),     # inverted box
        ("[0.6, 0.6, 0.9, 0.95]", 0.0, 0.0),    # disjoint
    ],
)
def test_grounding_iou_threshold_and_parse(pred, ref, default):
    s = ground()
    assert score_sample("grounding", pred, s, mode="reference") == ref
    assert score_sample("grounding", pred, s, mode="default") == default


@BOTH
def test_grounding_gold_from_answer_and_non_square(mode):
    # No meta["bbox"]: the gold box is parsed from the answer text. Non-square image: scale 200.
    s = ground(size=(200, 100), bbox=None, answer="[0.1, 0.2, 0.6, 0.7]")
    assert score_sample("grounding", "[0.1, 0.2, 0.6, 0.71]", s, mode) == 1.0
    assert score_sample("grounding", "[0.5, 0.5, 0.9, 0.91]", s, mode) == 0.0


def test_grounding_bad_gold():
    with pytest.raises(ValueError, match="size"):
        score_sample("grounding", "[0, 0, 1, 1]", mk("grounding", "[0, 0, 1, 1]"))
    with pytest.raises(ValueError, match="bbox"):
        score_sample("grounding", "[0, 0, 1, 1]", mk("grounding", "none", size=[10, 10]))


# --------------------------------------------------------------------------------------------
# Whitespace: default strips, reference reads the text as the original evaluators do. These are
# the decisions docs/real_data.md tabulates.


@pytest.mark.parametrize(
    "scorer, pred, gold, default, reference",
    [
        ("gqa", "yes ", "yes", 1.0, 0.0),          # rstrip('.').lower() keeps the space
        ("gqa", " left", "left", 1.0, 0.0),
        ("vizwiz", "yes ", "yes", 1.0, 0.0),       # upper() == upper()
        ("vqav2", "yes ", "yes", 1.0, 0.0),
        ("vqav2", "2\n", "2", 1.0, 0.0),
        ("ocrvqa", "yes ", "yes", 1.0, 0.0),       # lower() == lower()
        ("imagenet", " cat", "tabby cat", 1.0, 1.0),  # a substring either way
        ("imagenet", "cat\n", "tabby cat", 1.0, 0.0),
        ("scienceqa", "B ", "B", 1.0, 1.0),       # the one-character-word rule finds B
        ("scienceqa", " B. dog", "B", 1.0, 1.0),
    ],
)
def test_whitespace_per_mode(scorer, pred, gold, default, reference):
    s = mk(scorer, gold, num_choices=3) if scorer == "scienceqa" else mk(scorer, gold)
    assert score_sample(scorer, pred, s, mode="default") == default
    assert score_sample(scorer, pred, s, mode="reference") == reference


@pytest.mark.parametrize(
    "pred, default, reference",
    [
        ("[0.2, 0.2, 0.6, 0.6]", 1.0, 0.0),     # reference cuts "6" off the last coordinate: 0.0
        ("[0.2, 0.2, 0.6, 0.6]\n", 1.0, 1.0),   # reference cuts the newline instead
        (" [0.2, 0.2, 0.6, 0.6]", 1.0, 0.0),    # reference cuts the space and the last "6"
        (" [0.2, 0.2, 0.6, 0.65]", 1.0, 1.0),   # ... the space and the "5": 0.6 is left
    ],
)
def test_grounding_whitespace_per_mode(pred, default, reference):
    s = ground(bbox=(0.2, 0.2, 0.6, 0.6))
    assert score_sample("grounding", pred, s, mode="default") == default
    assert score_sample("grounding", pred, s, mode="reference") == reference


def test_textvqa_whitespace_is_the_normalisers_business():
    gold = ["dog"] * 10
    for mode in MODES:
        assert score_sample("textvqa", " dog\n", mk("textvqa", "dog", answers=gold), mode) == 1.0


def test_check_samples_errors_and_warnings():
    samples = [mk("textvqa", "a", answers=None), mk("textvqa", "b", answers=["b"] * 10), mk("textvqa", "c")]
    assert check_samples("textvqa", samples, "default") == (
        None, "2 of 3 test sample(s): " + SCORERS.get("textvqa").gap(samples[0]))
    error, warning = check_samples("textvqa", samples, "reference")
    assert warning is None and error.startswith("2 of 3 test sample(s) cannot be scored in reference mode; first: "
                                                "TextVQA sample 'textvqa-1': no ten gold answers")
    bad = [mk("scienceqa", "cat", num_choices=3), mk("scienceqa", "A", num_choices=3)]
    assert check_samples("scienceqa", bad) == (
        "1 of 2 test sample(s) cannot be scored in default mode; first: "
        "ScienceQA sample 'scienceqa-1': gold answer 'cat' is not a letter A-E", None)
    assert sample_problem("grounding", mk("grounding", "[0, 0, 1, 1]")) is not None
    assert sample_problem("gqa", mk("gqa", "x")) is None
