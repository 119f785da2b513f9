"""Tests of the CoIN reader (data_recipes.coin) on the synthetic tree and on hand-made files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from data_recipes.coin import (
    TASK_SCORERS, DataError, extract_instruction, load_stream, load_task, strip_image_tag,
)
from data_recipes.synthetic.writer import TRAIN_WEIGHT
from data_recipes.synthetic import (
    DIVERSE_INSTRUCTIONS, HELDOUT_INSTRUCTIONS, ORIGINAL_INSTRUCTIONS, TASKS, generate,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0, scale=0.05)
    return root / "instructions", root / "images"


# ---- the synthetic tree read back -------------------------------------------------------------

def test_reads_synthetic_stream(bench):
    instr, images = bench
    stream = load_stream(instr, images, "original", TASKS, verify_images=True)
    assert [t.name for t in stream] == TASKS
    for td in stream:
        assert td.scorer == TASK_SCORERS[td.name]
        assert (len(td.train), len(td.test), len(td.val)) == (20 * TRAIN_WEIGHT.get(td.name, 1), 3, 3)
        assert td.instructions == [ORIGINAL_INSTRUCTIONS[td.name]]
        for s in td.train + td.test + td.val:
            assert s.image.is_absolute() and s.image.is_file() and "<image>" not in s.prompt
            assert s.instruction == ORIGINAL_INSTRUCTIONS[td.name]
        assert all(s.meta == {} for s in td.train)
    by_name = {td.name: td for td in stream}
    for s in by_name["ScienceQA"].test:
        assert s.meta["num_choices"] == 4 and s.answer in "ABCD"
    for s in by_name["Grounding"].test:
        assert s.meta["size"] == [64, 64] and len(s.meta["bbox"]) == 4
        assert s.answer == "[" + ", ".join(f"{v:.2f}" for v in s.meta["bbox"]) + "]"
    for s in by_name["TextVQA"].test + by_name["TextVQA"].val:  # one gold file serves both splits
        assert len(s.answers) == 10 and s.answer in s.answers
    assert all(s.answers is None for s in by_name["GQA"].test)
    for s in by_name["Grounding"].val:  # validation records are read like test records
        assert s.meta["size"] == [64, 64] and s.answer == "[" + ", ".join(f"{v:.2f}" for v in s.meta["bbox"]) + "]"


def test_val_is_optional_and_explicit(bench, tmp_path):
    """A tree without val.json reads as before (val empty); a val asked for by name must exist."""
    import shutil

    instr, images = bench
    copy = tmp_path / "instructions"
    shutil.copytree(instr / "Instructions" / "GQA", copy / "Instructions" / "GQA")
    (copy / "Instructions" / "GQA" / "val.json").unlink()
    td = load_task(copy, images, "original", "GQA")
    assert (len(td.train), len(td.test), td.val) == (40, 3, [])
    assert load_task(copy, images, "original", "GQA", splits=("test",)).val == []
    with pytest.raises(DataError, match="val.json: file not found"):
        load_task(copy, images, "original", "GQA", splits=("val",))
    only_val = load_task(instr, images, "original", "GQA", splits=("val",))
    assert (only_val.train, only_val.test, len(only_val.val)) == ([], [], 3)


def test_reads_diverse_and_heldout(bench):
    instr, images = bench
    for td in load_stream(instr, images, "Instructions_Diverse", TASKS):
        assert set(td.instructions) <= set(DIVERSE_INSTRUCTIONS[td.name])
    held = load_stream(instr, images, "heldout", TASKS, splits=("test",))
    for td in held:
        assert td.train == [] and len(td.test) == 3
        assert {s.instruction for s in td.test} <= set(HELDOUT_INSTRUCTIONS[td.name])


def test_limit_and_reader_writes_nothing(bench):
    instr, images = bench
    root = instr.parent
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    td = load_task(instr, images, "original", "GQA", limit=5)
    assert (len(td.train), len(td.test)) == (5, 3)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


# ---- instruction extraction rules -------------------------------------------------------------

def test_extract_last_line():
    assert extract_instruction("GQA", "<image>\nWhat is it?\nAnswer briefly.") == "Answer briefly."
    assert extract_instruction("VQAv2", "What is it?\nAnswer briefly.\n") == "Answer briefly."
    sqa = "<image>\nWhich?\nA. x\nB. y\nAnswer with the option's letter."
    assert extract_instruction("ScienceQA", sqa) == "Answer with the option's letter."


def test_extract_imagenet_second_line():
    prompt = "<image>\nWhat is the object in the image?\nAnswer the question using a single word or phrase."
    assert extract_instruction("ImageNet", prompt) == "What is the object in the image?"
    assert extract_instruction("ImageNet", strip_image_tag(prompt)) == "What is the object in the image?"


def test_extract_grounding_prefix():
    prompt = "<image>\nPlease provide the bounding box: the man on the left: in red"
    assert extract_instruction("Grounding", prompt) == "Please provide the bounding box"


def test_strip_image_tag_variants():
    assert strip_image_tag("<image>\nQ\nI") == "Q\nI"
    assert strip_image_tag("Q\nI\n<image>") == "Q\nI"
    assert strip_image_tag("Q\nI") == "Q\nI"


# ---- hand-made files: multi-turn and errors ---------------------------------------------------

def make_tree(tmp_path: Path, task: str, split: str, content: object,
              raw: str | None = None) -> tuple[Path, Path, Path]:
    """Instruction root with one file (``content`` as JSON, or ``raw`` text) and one image."""
    instr, images = tmp_path / "instr", tmp_path / "images"
    path = instr / "Instructions" / task / f"{split}.json"
    path.parent.mkdir(parents=True)
    path.write_text(raw if raw is not None else json.dumps(content))
    (images / "d").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "d" / "a.png")
    return instr, images, path


def train_rec(image: str = "d/a.png", **kw) -> dict:
    rec = {"id": 1, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat?\nAnswer briefly."}, {"from": "gpt", "value": "x"}]}
    rec.update(kw)
    return rec


def test_multi_turn_record(tmp_path):
    rec = train_rec(conversations=[
        {"from": "human", "value": "<image>\nWhat colour?\nAnswer briefly."},
        {"from": "gpt", "value": "red"},
        {"from": "human", "value": "And the shape?\nAnswer briefly."},
        {"from": "gpt", "value": "circle"},
    ])
    instr, images, _ = make_tree(tmp_path, "VQAv2", "train", [rec])
    (s,) = load_task(instr, images, "original", "VQAv2", splits=("train",)).train
    assert s.turns == [("What colour?\nAnswer briefly.", "red"),
                       ("And the shape?\nAnswer briefly.", "circle")]
    assert s.instruction == "Answer briefly." and s.id == "1" and s.image == images / "d" / "a.png"


def expect_error(instr: Path, images: Path, task: str, split: str, *needles: str, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_task(instr, images, "original", task, splits=(split,), **kw)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_missing_image_names_file_and_record(tmp_path):
    instr, images, path = make_tree(tmp_path, "GQA", "train", [train_rec(), train_rec("d/missing.png")])
    msg = expect_error(instr, images, "GQA", "train", str(path), "record 1", "d/missing.png", "not found")
    assert isinstance(DataError(msg), ValueError)
    # Existence checks can be switched off (e.g. for a quick look at the files).
    td = load_task(instr, images, "original", "GQA", splits=("train",), check_images=False)
    assert len(td.train) == 2


def test_unreadable_images_header_and_verify(tmp_path):
    instr, images, path = make_tree(tmp_path, "GQA", "train", [train_rec("d/bad.png")])
    (images / "d" / "bad.png").write_bytes(b"not a png")
    expect_error(instr, images, "GQA", "train", str(path), "record 0", "cannot be read", "UnidentifiedImageError")
    (images / "d" / "bad.png").write_bytes(b"")  # a 0-byte file
    expect_error(instr, images, "GQA", "train", str(path), "record 0", "d/bad.png", "cannot be read")
    # A truncated body has a good header: only the full decode of verify_images finds it.
    Image.effect_noise((64, 64), 50).convert("RGB").save(images / "d" / "bad.png")
    data = (images / "d" / "bad.png").read_bytes()
    (images / "d" / "bad.png").write_bytes(data[: len(data) // 2])
    assert len(load_task(instr, images, "original", "GQA", splits=("train",)).train) == 1
    expect_error(instr, images, "GQA", "train", str(path), "record 0", "cannot be read", verify_images=True)


def test_bad_json(tmp_path):
    instr, images, path = make_tree(tmp_path, "GQA", "test", None, raw='[{"question_id": 1,')
    expect_error(instr, images, "GQA", "test", str(path), "invalid JSON", "line 1")


def test_empty_file(tmp_path):
    instr, images, path = make_tree(tmp_path, "GQA", "test", [])
    expect_error(instr, images, "GQA", "test", str(path), "empty")


def test_missing_file(tmp_path):
    instr, images, _ = make_tree(tmp_path, "GQA", "test", [])
    expect_error(instr, images, "GQA", "train", "GQA/train.json", "not found")


@pytest.mark.parametrize("bad", [
    {"id": 1, "image": "d/a.png"},                                            # no conversations
    train_rec(image=5),                                                       # image not a string
    train_rec(conversations=[{"from": "gpt", "value": "x"}, {"from": "human", "value": "q"}]),
    train_rec(conversations=[{"from": "human", "value": "<image>\nq"}]),     # no gpt turn
    train_rec(conversations=[{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]),
    train_rec(id=None),
    "not a record",
])
def test_malformed_train_record(tmp_path, bad):
    instr, images, path = make_tree(tmp_path, "GQA", "train", [train_rec(), train_rec(), bad])
    expect_error(instr, images, "GQA", "train", str(path), "record 2")


@pytest.mark.parametrize("bad", [
    {"question_id": 1, "image": "d/a.png", "text": "q\ni"},                       # no answer
    {"question_id": 1, "image": "d/a.png", "answer": "x"},                        # no text
    {"question_id": 1, "image": 5, "text": "q\ni", "answer": "x"},                # image not a string
])
def test_malformed_test_record(tmp_path, bad):
    instr, images, path = make_tree(tmp_path, "GQA", "test", [bad])
    expect_error(instr, images, "GQA", "test", str(path), "record 0")


def test_grounding_test_record(tmp_path):
    good = {"question_id": "g1", "image": "d/a.png", "answer": "[0.1, 0.2, 0.3, 0.4]",
            "text": "Locate it: the red circle", "answer_bbox": "[0.1, 0.2, 0.3, 0.4]", "size": [8, 8]}
    bad = dict(good, size=None)
    instr, images, path = make_tree(tmp_path, "Grounding", "test", [good, bad])
    expect_error(instr, images, "Grounding", "test", str(path), "record 1", "size")
    path.write_text(json.dumps([good]))
    (s,) = load_task(instr, images, "original", "Grounding", splits=("test",)).test
    assert s.meta == {"bbox": [0.1, 0.2, 0.3, 0.4], "size": [8, 8]} and s.instruction == "Locate it"


@pytest.mark.parametrize("image", ["../images/d/a.png", "/etc/passwd", "d/../../x.png", "C:\\x.png"])
def test_path_escaping_root(tmp_path, image):
    instr, images, path = make_tree(tmp_path, "GQA", "train", [train_rec(), train_rec(image)])
    expect_error(instr, images, "GQA", "train", str(path), "record 1", "escapes the image root")


def test_unknown_task_needs_scorer(tmp_path):
    instr, images, _ = make_tree(tmp_path, "MyTask", "train", [train_rec()])
    with pytest.raises(DataError):
        load_task(instr, images, "original", "MyTask", splits=("train",))
    td = load_task(instr, images, "original", "MyTask", splits=("train",), scorer="exact")
    assert td.scorer == "exact" and len(td.train) == 1


# ---- what real trees have: text-only records, ScienceQA's problems.json, TextVQA's answers -----

def test_text_only_records(tmp_path):
    text_only = {"id": 2, "conversations": [{"from": "human", "value": "Which is a mammal?\nAnswer briefly."},
                                            {"from": "gpt", "value": "cat"}]}
    instr, images, _ = make_tree(tmp_path, "VQAv2", "train", [train_rec(), text_only, dict(text_only, image=None)])
    a, b, c = load_task(instr, images, "original", "VQAv2", splits=("train",), verify_images=True).train
    assert a.image == images / "d" / "a.png" and b.image is None and c.image is None
    assert b.turns == [("Which is a mammal?\nAnswer briefly.", "cat")] and b.instruction == "Answer briefly."
    test = [{"question_id": 7, "text": "Which is a mammal?\nAnswer briefly.", "answer": "cat"}]
    instr, images, _ = make_tree(tmp_path / "t", "VQAv2", "test", test)
    (s,) = load_task(instr, images, "original", "VQAv2", splits=("test",)).test
    assert s.image is None and s.answer == "cat"


SQA_TEXT = "Which shape is it?\nOptions: A. square B. triangle C. circle\nAnswer with the option's letter."


def sqa_tree(tmp_path, records, problems=None):
    instr, images, path = make_tree(tmp_path, "ScienceQA", "test", records)
    if problems is not None:
        (images / "ScienceQA").mkdir()
        (images / "ScienceQA" / "problems.json").write_text(json.dumps(problems))
    return instr, images, path


def test_scienceqa_choices_from_problems_json_else_from_the_prompt(tmp_path):
    recs = [{"question_id": "11", "text": SQA_TEXT, "answer": "C"},                  # in problems.json: 4 choices
            {"question_id": "12", "image": "d/a.png", "text": SQA_TEXT, "answer": "B"},  # not in it: prompt's 3
            {"question_id": "13", "text": "Q?\n(A) yes (B) no\nAnswer.", "answer": "B"}]
    problems = {"11": {"choices": ["a", "b", "c", "d"], "answer": 2}, "99": {"choices": ["x"], "answer": 0}}
    instr, images, _ = sqa_tree(tmp_path, recs, problems)
    test = load_task(instr, images, "original", "ScienceQA", splits=("test",)).test
    assert [s.meta["num_choices"] for s in test] == [4, 3, 2]
    instr, images, _ = sqa_tree(tmp_path / "no-problems", recs)
    assert [s.meta["num_choices"] for s in load_task(instr, images, "original", "ScienceQA", splits=("test",)).test] \
        == [3, 3, 2]


@pytest.mark.parametrize("record, problems, needles", [
    ({"text": "Which shape?\nAnswer with the letter.", "answer": "A"}, None, ["cannot tell the number of choices",
                                                                              "no problems.json"]),
    ({"text": "Which shape?\nAnswer.", "answer": "A"}, {"5": {"choices": ["x", "y"], "answer": 0}},
     ["'1' not in problems.json"]),
    ({"text": SQA_TEXT, "answer": "D"}, None, ["'D' is not one of the 3 option letters A, B, C"]),
    ({"text": SQA_TEXT, "answer": "square"}, None, ["is not one of the 3 option letters"]),
    ({"text": SQA_TEXT, "answer": "A"}, {"1": {"choices": ["x", "y"], "answer": 1}}, ["disagrees with problems.json",
                                                                                      "problem '1': B"]),
    ({"text": SQA_TEXT, "answer": "A"}, {"1": {"choices": ["x", "y"], "answer": 2}}, ["no valid 'choices'"]),
])
def test_scienceqa_records_that_could_not_be_scored(tmp_path, record, problems, needles):
    instr, images, path = sqa_tree(tmp_path, [{"question_id": 1, **record}], problems)
    expect_error(instr, images, "ScienceQA", "test", str(path), "record 0", *needles)


def test_textvqa_answers_per_question(tmp_path):
    recs = [{"question_id": q, "image": "d/a.png", "text": "What does it say?\nAnswer briefly.", "answer": "stop"}
            for q in (1, 2)]
    instr, images, path = make_tree(tmp_path, "TextVQA", "test", recs)
    (images / "TextVQA").mkdir()
    golds = images / "TextVQA" / "TextVQA_0.5.1_val.json"
    golds.write_text(json.dumps({"data": [{"question_id": 1, "answers": ["stop"] * 10}]}))
    a, b = load_task(instr, images, "original", "TextVQA", splits=("test",)).test
    assert a.answers == ["stop"] * 10 and b.answers is None  # id 2 not in the file: the scorer's mode decides
    golds.write_text(json.dumps({"data": [{"question_id": 2, "answers": ["stop"] * 9}]}))
    expect_error(instr, images, "TextVQA", "test", str(path), "record 1", "has 9 answers for question_id 2")
