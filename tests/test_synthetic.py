"""Tests of the synthetic CoIN-shaped benchmark generator (data_recipes.synthetic)."""
from __future__ import annotations

import json
import sys
import math
import re
from pathlib import Path

import pytest
from PIL import Image

from data_recipes.synthetic import (
    AUTHORS, COLOUR_NAMES, DIVERSE_INSTRUCTIONS, HELDOUT_INSTRUCTIONS, ICONS, ORIGINAL_INSTRUCTIONS,
    PRETRAIN_PROMPT, SHAPES, TASKS, WORDS, generate,
)
from data_recipes.synthetic.instructions import IMAGENET_LAST_LINE, VQA_INSTRUCTION
from data_recipes.synthetic.overlap import overlap_report
from data_recipes.synthetic.scenes import BOX_PROMPT, KIND_QUESTION, Obj, REGIONS, Scene, focused_descriptions
from data_recipes.synthetic.splits import HELD_OUT_EVERY, dealt_pools, pool_of, scene_key, small_spaces
from data_recipes.synthetic.tasks import SAMPLERS, SQA_OPTIONS, UNANSWERABLE
from data_recipes.synthetic.writer import TRAIN_WEIGHT, VAL_ID_OFFSET
from data_recipes.synthetic.vocab import cell_box, format_box

SCALE = 0.05  # 20 train, 3 val, 3 test per task, 8 pretraining scenes per kind: well under a second
EVALUATED = ("val", "test")
VQA_LIKE = ["TextVQA", "GQA", "VizWiz", "VQAv2", "OCRVQA"]
VARIANTS = {"Instructions": ORIGINAL_INSTRUCTIONS, "Instructions_Diverse": DIVERSE_INSTRUCTIONS}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, generate(root, seed=0, scale=SCALE)


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def allowed(variant: str, task: str) -> set[str]:
    t = VARIANTS[variant][task]
    return {t} if isinstance(t, str) else set(t)


def test_determinism_byte_identical(bench, tmp_path):
    root, _ = bench
    generate(tmp_path / "again", seed=0, scale=SCALE)
    first, second = tree_bytes(root), tree_bytes(tmp_path / "again")
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker processes draw only on Linux")
def test_worker_processes_write_the_same_bytes(bench, tmp_path, monkeypatch):
    """Above PARALLEL_MIN_IMAGES the images are drawn by worker processes: the tree is the same."""
    import data_recipes.synthetic.writer as writer

    monkeypatch.setattr(writer.os, "cpu_count", lambda: 2)  # two workers even on a one-core machine
    monkeypatch.setattr(writer, "PARALLEL_MIN_IMAGES", 1)
    pools = []

    class Counted(writer.ProcessPoolExecutor):
        def __init__(self, workers, **kwargs):
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(writer, "ProcessPoolExecutor", Counted)
    root, _ = bench
    generate(tmp_path / "pooled", seed=0, scale=SCALE)
    assert pools == [2]  # the worker processes drew the images
    first, second = tree_bytes(root), tree_bytes(tmp_path / "pooled")
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)


def test_other_seed_differs(bench, tmp_path):
    root, _ = bench
    generate(tmp_path / "s1", seed=1, scale=SCALE, tasks=["GQA"])
    a = load(root / "instructions/Instructions/GQA/train.json")
    b = load(tmp_path / "s1/instructions/Instructions/GQA/train.json")
    assert a != b


def test_layout_and_counts(bench):
    root, manifest = bench
    assert manifest["tasks"] == TASKS == ["ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz",
                                          "Grounding", "VQAv2", "OCRVQA"]
    assert Path(manifest["image_root"]) == (root / "images").resolve()
    instr = root / "instructions"
    for task in TASKS:
        counts = manifest["counts"][task]
        assert counts == {"train": 20 * TRAIN_WEIGHT.get(task, 1), "val": 3, "test": 3}
        for variant in ("Instructions", "Instructions_Diverse"):
            for split, n in counts.items():
                assert len(load(instr / variant / task / f"{split}.json")) == n
        assert sorted(p.name for p in (instr / "Instructions_Heldout" / task).iterdir()) == ["test.json", "val.json"]
        for split, n in counts.items():
            assert len(list((root / "images" / task / split).glob("*.png"))) == n
    assert json.loads((root / "manifest.json").read_text())["counts"] == manifest["counts"]


def test_records_well_formed(bench):
    root, _ = bench
    for variant in VARIANTS:
        for task in TASKS:
            for rec in load(root / "instructions" / variant / task / "train.json"):
                assert set(rec) == {"id", "image", "conversations"}
                human, gpt = rec["conversations"]
                assert human["from"] == "human" and human["value"].startswith("<image>\n")
                assert gpt["from"] == "gpt" and gpt["value"]
                assert not Path(rec["image"]).is_absolute() and ".." not in rec["image"]
                assert (root / "images" / rec["image"]).is_file()
            for split in EVALUATED:  # validation records have the test records' format
                for i, rec in enumerate(load(root / "instructions" / variant / task / f"{split}.json")):
                    keys = {"question_id", "image", "text", "answer"}
                    if task == "Grounding":
                        keys |= {"answer_bbox", "size"}
                        assert rec["size"] == [64, 64] and rec["answer_bbox"] == rec["answer"]
                    assert set(rec) == keys and "<image>" not in rec["text"]
                    assert rec["question_id"] == i + (VAL_ID_OFFSET if split == "val" else 0)
                    assert rec["image"] == f"{task}/{split}/{i:05d}.png"
                    with Image.open(root / "images" / rec["image"]) as im:
                        assert im.format == "PNG" and im.size == (64, 64) and im.mode == "RGB"


def test_prompt_layout_per_task(bench):
    root, _ = bench
    for variant in VARIANTS:
        for task in TASKS:
            for rec in load(root / "instructions" / variant / task / "train.json"):
                lines = rec["conversations"][0]["value"].split("\n")
                answer = rec["conversations"][1]["value"]
                assert lines[0] == "<image>"
                if task == "ImageNet":
                    assert len(lines) == 3 and lines[1] in allowed(variant, task)
                    assert lines[2] == IMAGENET_LAST_LINE and answer in ICONS
                elif task == "Grounding":
                    assert len(lines) == 2
                    instruction, expr = lines[1].split(": ")
                    assert instruction in allowed(variant, task)
                    colour, shape = re.fullmatch(r"the (\w+) (\w+)", expr).groups()
                    assert colour in COLOUR_NAMES and shape in SHAPES
                else:
                    assert len(lines) >= 3 and lines[-1] in allowed(variant, task)
                if task == "ScienceQA":
                    options = [ln[3:] for ln in lines if re.match(r"^[A-D]\. ", ln)]
                    assert options in list(SQA_OPTIONS.values())  # all four, in the fixed order
                    assert answer in "ABCD"


def test_answer_formats(bench):
    root, _ = bench
    boxes = {format_box(cell_box(2, c)) for c in range(4)}
    for task in TASKS:
        answers = [r["conversations"][1]["value"]
                   for r in load(root / "instructions/Instructions" / task / "train.json")]
        answers += [r["answer"] for split in EVALUATED
                    for r in load(root / "instructions/Instructions" / task / f"{split}.json")]
        vocab = {
            "ScienceQA": set("ABCD"), "TextVQA": set(WORDS), "ImageNet": set(ICONS),
            "GQA": set(COLOUR_NAMES) | set(SHAPES),
            "VizWiz": set(COLOUR_NAMES) | set(SHAPES) | {"unanswerable"},
            "Grounding": boxes, "VQAv2": {"1", "2", "3", "4", "yes", "no"},
            "OCRVQA": set(WORDS) | set(AUTHORS),
        }[task]
        assert set(answers) <= vocab, task
    for box in boxes:  # 2 decimals, normalised
        assert re.fullmatch(r"\[(0\.\d\d, ){3}0\.\d\d\]", box)


def test_vizwiz_unanswerable_rate(tmp_path):
    generate(tmp_path, seed=3, scale=0.5, tasks=["VizWiz"])
    answers = [r["conversations"][1]["value"]
               for r in load(tmp_path / "instructions/Instructions/VizWiz/train.json")]
    rate = answers.count("unanswerable") / len(answers)
    assert 0.2 <= rate <= 0.42


def test_textvqa_golds(bench):
    root, _ = bench
    golds = json.loads((root / "images/TextVQA/TextVQA_0.5.1_val.json").read_text())["data"]
    tests = [r for split in EVALUATED for r in load(root / f"instructions/Instructions/TextVQA/{split}.json")]
    by_id = {g["question_id"]: g["answers"] for g in golds}
    assert len(by_id) == len(golds) == 6  # the test and validation ids never collide
    assert set(by_id) == {r["question_id"] for r in tests}
    for rec in tests:
        answers = by_id[rec["question_id"]]
        assert len(answers) == 10 and {a.lower() for a in answers} == {rec["answer"]}
        assert answers.count(rec["answer"]) >= 8


def test_heldout_same_questions_new_wording(bench):
    root, _ = bench
    trained = set(ORIGINAL_INSTRUCTIONS.values()) | {t for v in DIVERSE_INSTRUCTIONS.values() for t in v}
    heldout = {t for v in HELDOUT_INSTRUCTIONS.values() for t in v}
    assert not trained & heldout
    assert all(": " not in t for t in trained | heldout)  # would break Grounding's split
    for task, split in ((t, s) for t in TASKS for s in EVALUATED):
        div = load(root / "instructions/Instructions_Diverse" / task / f"{split}.json")
        held = load(root / "instructions/Instructions_Heldout" / task / f"{split}.json")
        assert [(r["question_id"], r["image"], r["answer"]) for r in div] == \
               [(r["question_id"], r["image"], r["answer"]) for r in held]
        for d, h in zip(div, held):
            if task == "ImageNet":
                assert h["text"].split("\n")[0] in HELDOUT_INSTRUCTIONS[task]
            elif task == "Grounding":
                assert h["text"].split(": ")[1] == d["text"].split(": ")[1]
            else:
                assert h["text"].split("\n")[:-1] == d["text"].split("\n")[:-1]
                assert h["text"].split("\n")[-1] in HELDOUT_INSTRUCTIONS[task]


def test_original_instruction_groups():
    assert len({ORIGINAL_INSTRUCTIONS[t] for t in VQA_LIKE}) == 1
    assert ORIGINAL_INSTRUCTIONS["TextVQA"] == VQA_INSTRUCTION
    others = [ORIGINAL_INSTRUCTIONS[t] for t in ("ScienceQA", "ImageNet", "Grounding")]
    assert len(set(others)) == 3 and VQA_INSTRUCTION not in others
    for task in TASKS:
        assert 4 <= len(set(DIVERSE_INSTRUCTIONS[task])) <= 6
        assert 2 <= len(set(HELDOUT_INSTRUCTIONS[task])) <= 3


_STOP = set("a an the and or of to in on with this that is are be it its by for from as at if not "
            "when then what which than can does do how your you".split())


def _tfidf_cos(a: str, b: str) -> float:
    """Cosine of two sentences' TF-IDF vectors fitted on the pair alone (like LCIA's reference)."""
    docs = [[w for w in re.findall(r"[a-z]+", s.lower()) if w not in _STOP] for s in (a, b)]
    idf = {w: 1 + math.log(3 / (1 + sum(w in d for d in docs))) for d in docs for w in d}
    vecs = []
    for d in docs:
        v = {w: d.count(w) * idf[w] for w in set(d)}
        n = math.sqrt(sum(x * x for x in v.values())) or 1.0
        vecs.append({w: x / n for w, x in v.items()})
    return sum(x * vecs[1].get(w, 0.0) for w, x in vecs[0].items())


def test_paraphrase_families_route_to_their_task():
    """Each held-out wording is closest (mean pairwise similarity) to its own task's family."""
    for task in TASKS:
        for sentence in HELDOUT_INSTRUCTIONS[task]:
            sims = {t: sum(_tfidf_cos(sentence, d) for d in DIVERSE_INSTRUCTIONS[t])
                    / len(DIVERSE_INSTRUCTIONS[t]) for t in TASKS}
            assert max(sims, key=sims.get) == task, (sentence, sims)


def test_pretrain_captions(bench):
    root, manifest = bench
    records = load(root / "instructions/Pretrain/train.json")
    assert len(records) == manifest["pretrain"] == 2 * 8 * 8  # a caption and a focused description
    focused = {KIND_QUESTION, *REGIONS, "List the colors.", "List the shapes.", "Read the text.", BOX_PROMPT}
    captions = []
    for caption, focus in zip(records[::2], records[1::2]):
        assert caption["image"] == focus["image"] and focus["id"] == caption["id"] + "_focus"
        assert caption["conversations"][0]["value"] == "<image>\n" + PRETRAIN_PROMPT
        assert focus["conversations"][0]["value"].removeprefix("<image>\n") in focused
        assert caption["image"].startswith("Pretrain/") and (root / "images" / caption["image"]).is_file()
        captions.append(caption["conversations"][1]["value"])
    text = " ".join(captions)
    for marker in ("book cover", "word ", "noisy photo:", ", 1 object", " objects", "title ", "author "):
        assert marker in text
    assert any(re.search(r" (top|middle|bottom) (left|middle|right)\b", c) for c in captions)


def test_focused_descriptions_by_hand():
    scene = Scene("objects", (255, 255, 255), grid=2,
                  objects=[Obj("star", "red", 3), Obj("circle", "blue", 0)])
    got = dict(focused_descriptions(scene))
    assert got["Describe the left side."] == "blue circle top left"
    assert got["Describe the right side."] == "red star bottom right"
    assert got["Describe the top."] == "blue circle top left"
    assert got["Describe the bottom."] == "red star bottom right"
    assert got["List the colors."] == "blue, red" and got["List the shapes."] == "circle, star"
    assert got[KIND_QUESTION] == "A" and BOX_PROMPT not in got  # a box only for a single object
    single = dict(focused_descriptions(Scene("objects", (255, 255, 255), grid=2, objects=[Obj("star", "red", 2)])))
    assert single[BOX_PROMPT] == format_box(cell_box(2, 2)) == "[0.06, 0.56, 0.44, 0.94]"
    empty = dict(focused_descriptions(Scene("objects", (255, 255, 255), grid=2)))
    assert empty["Describe the top."] == "nothing" and empty["List the shapes."] == "nothing"
    cover = dict(focused_descriptions(Scene("cover", (255, 255, 255), colour="red", word="cat",
                                            author="Ann", icon="star")))
    assert cover == {KIND_QUESTION: "D", "List the colors.": "red", "Read the text.": "cat Ann"}


def test_answers_follow_the_scenes():
    """Each sampler's gold answer is what its scene shows (checked from the scene, not the text)."""
    import random

    rng = random.Random(7)
    for _ in range(300):
        it = SAMPLERS["ScienceQA"](rng)
        (obj,) = it.scene.objects
        question, *options = it.question.split("\n")
        shown = {"Which": obj.shape, "What": obj.colour,
                 "Where": ["top left", "top right", "bottom left", "bottom right"][obj.cell]}[question.split()[0]]
        assert options["ABCD".index(it.answer)] == f"{it.answer}. {shown}"

        it = SAMPLERS["GQA"](rng)
        top, bottom = sorted(it.scene.objects, key=lambda o: o.cell)
        assert (top.cell // 2, bottom.cell // 2) == (0, 1)
        o = top if it.question.endswith("top?") else bottom
        assert it.answer == (o.colour if it.question.startswith("What color") else o.shape)

        it = SAMPLERS["VizWiz"](rng)
        assert it.scene.noise_seed is not None and len(it.scene.objects) <= 1
        if not it.scene.objects:
            assert it.answer == UNANSWERABLE
        else:
            o = it.scene.objects[0]
            assert it.answer == (o.colour if "color" in it.question else o.shape)

        it = SAMPLERS["VQAv2"](rng)
        cells = {o.cell for o in it.scene.objects}
        if it.question.startswith("How many"):
            assert it.answer == str(len(it.scene.objects))
        else:
            n = int(re.fullmatch(r"Are there more than (\d) objects\?", it.question).group(1))
            assert it.answer == ("yes" if len(it.scene.objects) > n else "no")

        it = SAMPLERS["Grounding"](rng)
        (obj,) = it.scene.objects
        assert it.question == f"the {obj.colour} {obj.shape}" and it.answer == format_box(cell_box(2, obj.cell))


def test_data_cache_key_follows_train_weight(tmp_path, monkeypatch):
    """Cached copies are keyed by the per-task training sizes, so changing them regenerates."""
    import data_recipes.synthetic.reader as reader
    from data_recipes.synthetic import synthetic_root
    from mmcit.data.config import DataConfig

    cfg = DataConfig(sample_factor=0.02, pretrain_per_task=100)
    first = synthetic_root(cfg, tmp_path, log=lambda m: None)
    assert synthetic_root(cfg, tmp_path, log=lambda m: None) == first  # cached
    monkeypatch.setattr(reader, "TRAIN_WEIGHT", {**reader.TRAIN_WEIGHT, "TextVQA": 3})
    assert synthetic_root(cfg, tmp_path, log=lambda m: None) != first


# ---- held-out splits (version 4) ------------------------------------------------------------------

def test_replay_no_evaluated_sample_seen_in_training(tmp_path):
    """Replay the generator and compare decoded pixels: no test or validation image of any task is a
    training or pretraining image, and no (image, question, answer) of them is a training sample."""
    generate(tmp_path, seed=0, scale=0.2, pretrain_per_task=250)  # 50 pretraining scenes per kind
    for variant in ("Instructions", "Instructions_Diverse"):
        report = overlap_report(tmp_path, variant)
        assert list(report) == TASKS
        for task in TASKS:
            assert set(report[task]) == set(EVALUATED)
            for split, o in report[task].items():
                assert o.samples == 12, (task, split)
                assert (o.image_in_task_train, o.image_in_train, o.image_in_pretrain, o.copy_of_train) \
                    == (0, 0, 0, 0), (variant, task, split, o)


def test_overlap_report_counts_copies(tmp_path):
    """The report does count what it claims: a test record pointed at a training image (by another
    file name) and given that sample's question and answer counts once in every column."""
    import shutil

    generate(tmp_path, seed=0, scale=SCALE, tasks=["GQA"])
    instr = tmp_path / "instructions/Instructions/GQA"
    train, test = load(instr / "train.json"), load(instr / "test.json")
    shutil.copy(tmp_path / "images" / train[0]["image"], tmp_path / "images/GQA/test/copy.png")
    test[0].update(image="GQA/test/copy.png", text=train[0]["conversations"][0]["value"].removeprefix("<image>\n"),
                   answer=train[0]["conversations"][1]["value"])
    (instr / "test.json").write_text(json.dumps(test))
    o = overlap_report(tmp_path)["GQA"]["test"]
    assert (o.samples, o.image_in_task_train, o.image_in_train, o.copy_of_train) == (3, 1, 1, 1)


def test_held_out_pools_are_explicit_and_cover_training():
    """Each small scene space deals 1 in HELD_OUT_EVERY of its keys to test and to val; every
    attribute value of it stays in the training pool; the pools follow the seed."""
    pools = dealt_pools(0)
    seen: set = set()
    for name, keys in small_spaces().items():
        fresh = [k for k in dict.fromkeys(keys) if k not in seen]
        seen |= set(fresh)
        # dealt in seeded-hash order: the 1st, 9th, 17th... key to test, the 2nd, 10th... to val
        for split, first in (("test", 0), ("val", 1)):
            assert sum(pools[k] == split for k in fresh) == len(range(first, len(fresh), HELD_OUT_EVERY)), name
        def attributes(key: tuple) -> tuple:  # (cell, shape, colour) of a one-object scene, else the slots
            return key[3][0] if key[0] == "objects" else key[1:]

        train = [attributes(k) for k in keys if pools[k] == "train"]
        for i, values in enumerate(zip(*map(attributes, keys))):
            assert {a[i] for a in train} == set(values), (name, i)
    assert dealt_pools(1) != pools and dealt_pools(0) == pools


def test_samplers_draw_only_from_their_pool():
    import random

    from data_recipes.synthetic.splits import draw

    for task in TASKS:
        for split in ("train", "val", "test", "pretrain"):
            rng = random.Random(5)
            for _ in range(40):
                item = draw(task, rng, split, seed=0)
                assert pool_of(scene_key(item.scene), 0) in (None, "train" if split == "pretrain" else split)
                if item.scene.noise_seed is not None:  # degraded photos: the split is in the seed's low bits
                    assert item.scene.noise_seed & 3 == {"train": 0, "pretrain": 0, "val": 1, "test": 2}[split]


def test_tokenizer_corpus_is_training_text_only(bench):
    """The tiny model's tokenizer learns from training and pretraining records only: the held-out
    wordings, which only evaluated files carry, are absent; every training turn is present."""
    from mmcit.models.tiny_llava.tokenizer import corpus_texts

    root, _ = bench
    texts = corpus_texts(root / "instructions")
    joined = "\n".join(texts)
    assert not [h for v in HELDOUT_INSTRUCTIONS.values() for h in v if h in joined]
    train_files = sorted((root / "instructions").rglob("train.json"))
    assert {p.parent.name for p in train_files} == {*TASKS, "Pretrain"}
    assert len(texts) == 2 * sum(len(load(p)) for p in train_files)


def test_pretraining_records_are_read_only_when_used(bench):
    """A run whose base is cached never needs the pretraining records: the reader defers them."""
    from data_recipes.coin import read_stream

    root, _ = bench
    data = read_stream(root / "instructions", root / "images", "original", ["GQA"], key="k")
    assert callable(data.pretrain_records)  # not read yet
    captions = data.captions
    expected = load(root / "instructions/Pretrain/train.json")
    assert [s.id for s in captions] == [r["id"] for r in expected]
    assert data.pretrain_records is captions and data.captions is captions  # read once, then kept
