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


def test_unreadable_image_with_verify(tmp_path):
    instr, images, path = make_tree(tmp_path, "GQA", "train", [train_rec("d/bad.png")])
    (images / "d" / "bad.png").write_bytes(b"not a png")
    load_task(instr, images, "original", "GQA", splits=("train",))  # exists: fine without verify
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
    {"id": 1, "conversations": train_rec()["conversations"]},                 # no image
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
