"""Tests of ``mmcit data check`` and of the reader options it relies on (collecting mode,
``skip_missing_images``), on tiny synthetic CoIN trees broken on purpose."""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import pytest

from data_recipes.coin import DataError, SkippedSamplesWarning, load_stream, load_task
from data_recipes.synthetic import generate
from mmcit.cli import data as data_cli

TASKS = ["GQA", "VizWiz"]


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh two-task tree (40 train / 3 test records per task) that a test may break."""
    generate(tmp_path, seed=0, scale=0.05, tasks=TASKS)
    return tmp_path / "instructions", tmp_path / "images"


def task_file(instr: Path, task: str, split: str) -> Path:
    return instr / "Instructions" / task / f"{split}.json"


def edit(path: Path, fn) -> None:
    """Apply ``fn`` to the records of a JSON list file, in place."""
    records = json.loads(path.read_text())
    fn(records)
    path.write_text(json.dumps(records))


def run_check(capsys, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="mmcit")
    data_cli.add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "check", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def roots(instr: Path, images: Path) -> list[str]:
    return ["--instruction-root", str(instr), "--image-root", str(images)]


# ---- mmcit data check ---------------------------------------------------------------------------

def test_clean_tree_passes(tree, capsys):
    code, out = run_check(capsys, *roots(*tree), "--tasks", ",".join(TASKS), "--verify-images")
    assert code == 0
    assert "no problems: 86 records in 4 file(s)" in out
    report = data_cli.check_tree(*tree, "Instructions", TASKS)
    assert [(s.task, s.split, s.records, s.ok, s.status) for s in report.splits] == [
        ("GQA", "train", 40, 40, "ok"), ("GQA", "test", 3, 3, "ok"),
        ("VizWiz", "train", 40, 40, "ok"), ("VizWiz", "test", 3, 3, "ok")]


def test_collects_every_problem(tree, capsys):
    instr, images = tree
    gqa_train = task_file(instr, "GQA", "train")

    def break_gqa(recs):
        recs[2]["image"] = "GQA/gone/a.png"
        recs[3]["image"] = "GQA/gone/a.png"  # same missing image twice: 2 records, 1 distinct
        recs[4]["image"] = "GQA/gone/b.png"
        del recs[7]["conversations"]
        recs[9]["image"] = "../outside.png"
    edit(gqa_train, break_gqa)
    edit(task_file(instr, "GQA", "test"), lambda recs: recs[1].pop("answer"))
    task_file(instr, "VizWiz", "test").unlink()
    task_file(instr, "VizWiz", "train").write_text('[{"id": 1,')

    code, out = run_check(capsys, *roots(instr, images), "--tasks", "GQA,VizWiz")
    assert code == 1
    report = data_cli.check_tree(instr, images, "original", TASKS)
    by = {(s.task, s.split): s for s in report.splits}
    train = by["GQA", "train"]
    assert (train.records, train.ok, len(train.missing_images), len(train.malformed)) == (40, 35, 3, 2)
    assert sorted(e.index for e in train.malformed) == [7, 9]
    assert by["GQA", "test"].records == 3 and [e.index for e in by["GQA", "test"].malformed] == [1]
    assert by["VizWiz", "test"].status == "MISSING FILE" and by["VizWiz", "test"].records is None
    assert by["VizWiz", "train"].status == "BAD FILE"
    assert report.n_problems == 3 + 2 + 1 + 1 + 1
    # The printed report names every problem: files, record indices, the missing image paths.
    assert "8 problem(s) in 4 of 4 file(s)" in out
    assert "3 record(s) with a missing image (2 distinct): GQA/gone/a.png, GQA/gone/b.png" in out
    assert f"{gqa_train}, record 7: missing key 'conversations'" in out
    assert f"{gqa_train}, record 9: image path '../outside.png' escapes the image root" in out
    assert "record 1: test record has no gold answer" in out
    assert f"{task_file(instr, 'VizWiz', 'test')}: file not found" in out
    assert "invalid JSON" in out


def test_many_missing_images_are_counted_and_abbreviated(tree, capsys):
    instr, images = tree
    for p in sorted((images / "GQA" / "train").glob("*.png"))[:8]:
        p.unlink()
    code, out = run_check(capsys, *roots(instr, images), "--tasks", "GQA")
    assert code == 1
    assert "8 record(s) with a missing image (8 distinct)" in out and "... and 3 more" in out


def test_unreadable_images_found_by_header_and_by_verify(tree, capsys):
    instr, images = tree
    (images / "GQA" / "test" / "00001.png").write_bytes(b"")  # 0 bytes: the header check finds it
    code, out = run_check(capsys, *roots(instr, images), "--tasks", "GQA")
    assert code == 1 and "1 record(s) with an unreadable image: GQA/test/00001.png" in out
    png = images / "GQA" / "test" / "00002.png"
    png.write_bytes(png.read_bytes()[:60])  # header intact, pixels cut: only a full decode finds it
    code, out = run_check(capsys, *roots(instr, images), "--tasks", "GQA")
    assert code == 1 and "1 record(s) with an unreadable image: GQA/test/00001.png" in out
    code, out = run_check(capsys, *roots(instr, images), "--tasks", "GQA", "--verify-images")
    assert code == 1 and "2 record(s) with an unreadable image: GQA/test/00001.png, GQA/test/00002.png" in out


def test_json_output(tree, capsys):
    instr, images = tree
    task_file(instr, "VizWiz", "test").unlink()
    code, out = run_check(capsys, *roots(instr, images), "--tasks", "VizWiz", "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["problems"] == 1
    assert [(s["split"], s["status"], s["records"]) for s in data["splits"]] == [
        ("train", "ok", 40), ("test", "MISSING FILE", None)]


def test_user_errors_raise(tree, capsys):
    instr, images = tree
    with pytest.raises(DataError, match="unknown task"):
        run_check(capsys, *roots(instr, images), "--tasks", "GQA,Nope")
    with pytest.raises(DataError, match="variant folder not found"):
        run_check(capsys, *roots(instr, images), "--variant", "Instructions_10Type")
    with pytest.raises(DataError, match="image root not found"):
        run_check(capsys, "--instruction-root", str(instr), "--image-root", str(instr / "nope"))


# ---- reader: gold answers and escaping paths (default raise-on-first behaviour) -----------------

@pytest.mark.parametrize("answer", [None, "", "  ", "missing"])
def test_test_record_without_gold_answer(tree, answer):
    instr, images = tree
    path = task_file(instr, "GQA", "test")
    edit(path, lambda recs: recs[2].pop("answer") if answer == "missing" else recs[2].update(answer=answer))
    with pytest.raises(DataError, match="no gold answer") as info:
        load_task(instr, images, "original", "GQA", splits=("test",))
    assert f"{path}, record 2" in str(info.value)


@pytest.mark.parametrize("image", ["/abs/x.png", "GQA/../../x.png", "..\\x.png"])
def test_test_image_escaping_root(tree, image):
    instr, images = tree
    path = task_file(instr, "GQA", "test")
    edit(path, lambda recs: recs[0].update(image=image))
    with pytest.raises(DataError, match="escapes the image root") as info:
        load_task(instr, images, "original", "GQA", splits=("test",), check_images=False)
    assert f"{path}, record 0" in str(info.value)


def test_default_still_raises_first_problem(tree):
    instr, images = tree
    edit(task_file(instr, "GQA", "train"), lambda recs: [recs[i].pop("id") for i in (4, 6)])
    with pytest.raises(DataError, match="record 4"):
        load_task(instr, images, "original", "GQA")


def test_collecting_mode_keeps_good_records(tree):
    instr, images = tree
    edit(task_file(instr, "GQA", "train"), lambda recs: [recs[i].pop("id") for i in (4, 6)])
    errors: list[DataError] = []
    td = load_task(instr, images, "original", "GQA", errors=errors)
    assert (len(td.train), len(td.test)) == (38, 3)
    assert [(e.kind, e.index, e.path.name) for e in errors] == [("record", 4, "train.json"),
                                                                ("record", 6, "train.json")]


# ---- reader: skip_missing_images ----------------------------------------------------------------

def test_skip_missing_images_counts(tree):
    instr, images = tree
    (images / "GQA" / "train" / "00003.png").unlink()
    (images / "GQA" / "train" / "00011.png").unlink()
    (images / "VizWiz" / "test" / "00000.png").unlink()
    with pytest.raises(DataError, match="not found"):  # the default is unchanged
        load_stream(instr, images, "original", TASKS)
    skipped: dict[str, dict[str, int]] = {}
    gqa, vizwiz = load_stream(instr, images, "original", TASKS, skip_missing_images=True, skipped=skipped)
    assert skipped == {"GQA": {"train": 2, "test": 0, "val": 0}, "VizWiz": {"train": 0, "test": 1, "val": 0}}
    assert (len(gqa.train), len(gqa.test), len(vizwiz.train), len(vizwiz.test)) == (38, 3, 40, 2)
    assert all(s.image.is_file() for td in (gqa, vizwiz) for s in td.train + td.test)


def test_skip_missing_images_warns_without_dict(tree):
    instr, images = tree
    (images / "GQA" / "test" / "00000.png").unlink()
    with pytest.warns(SkippedSamplesWarning, match="GQA: skipped 1 test sample"):
        load_task(instr, images, "original", "GQA", skip_missing_images=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped: no warning
        load_task(instr, images, "original", "VizWiz", skip_missing_images=True)


def test_skip_missing_images_does_not_hide_other_problems(tree):
    instr, images = tree
    (images / "GQA" / "train" / "00001.png").unlink()
    edit(task_file(instr, "GQA", "train"), lambda recs: recs[5].update(image="../x.png"))
    with pytest.raises(DataError, match="record 5"):
        load_task(instr, images, "original", "GQA", skip_missing_images=True, skipped={})
    with pytest.raises(ValueError, match="check_images"):
        load_task(instr, images, "original", "GQA", skip_missing_images=True, check_images=False)


def test_skip_bad_images_and_the_parse_cache_keeping_image_problems_until_fixed(tree, tmp_path, monkeypatch):
    from data_recipes import coin

    instr, images = tree
    (images / "GQA" / "train" / "00003.png").write_bytes(b"")
    (images / "GQA" / "train" / "00005.png").unlink()
    bad = images / "GQA" / "test" / "00001.png"
    good = bad.read_bytes()
    bad.write_bytes(b"")
    skipped: dict[str, dict[str, int]] = {}
    dropped: list[DataError] = []
    gqa = load_task(instr, images, "original", "GQA", skip_bad_images=True, skipped=skipped, dropped=dropped)
    assert skipped == {"GQA": {"train": 2, "test": 1, "val": 0}} and (len(gqa.train), len(gqa.test)) == (38, 2)
    assert [(e.kind, e.index, e.image) for e in dropped] == [
        ("unreadable_image", 3, "GQA/train/00003.png"), ("missing_image", 5, "GQA/train/00005.png"),
        ("unreadable_image", 1, "GQA/test/00001.png")]
    cache = tmp_path / "arrow"

    def read() -> tuple[int, list[DataError]]:
        dropped: list[DataError] = []
        td = coin.load_task(instr, images, "original", "GQA", splits=("test",), cache_dir=cache,
                            skip_bad_images=True, skipped={}, dropped=dropped)
        return len(td.test), dropped

    n, first = read()
    assert n == 2 and [e.image for e in first] == ["GQA/test/00001.png"]
    probed: list[int] = []
    probe = coin.probe_images
    monkeypatch.setattr(coin, "probe_images", lambda paths, **kw: probed.append(len(paths)) or probe(paths, **kw))
    n, again = read()  # a hit: the samples from Arrow, only the bad image looked at again
    assert n == 2 and [str(e) for e in again] == [str(e) for e in first] and probed == [1]
    with pytest.raises(DataError, match="record 1: image 'GQA/test/00001.png' cannot be read"):
        coin.load_task(instr, images, "original", "GQA", splits=("test",), cache_dir=cache)
    bad.write_bytes(good)  # fixed: the entry is parsed again
    probed.clear()
    assert read() == (3, []) and probed == [1, 3]


def test_notes_for_absent_gold_files_and_text_only_records_pass(tmp_path, capsys):
    generate(tmp_path, seed=0, scale=0.05, tasks=["ScienceQA", "TextVQA"])
    instr, images = tmp_path / "instructions", tmp_path / "images"
    (images / "TextVQA" / "TextVQA_0.5.1_val.json").unlink()
    edit(task_file(instr, "ScienceQA", "train"), lambda recs: recs[0].pop("image"))
    code, out = run_check(capsys, *roots(instr, images), "--tasks", "ScienceQA,TextVQA", "--verify-images")
    assert code == 0 and "no problems: 66 records in 4 file(s)" in out
    problems = images / "ScienceQA" / "problems.json"
    assert f"note: ScienceQA: {problems} not found; the number of choices is counted" in out
    assert "note: TextVQA test: 3 of 3 test sample(s): no ten gold answers" in out


@pytest.mark.parametrize("slow", [False, True])
def test_probe_images_in_order_serial_or_threaded(tmp_path, monkeypatch, slow):
    """Fast files are probed one after another, slow ones in threads: the same answers, in order."""
    from PIL import Image

    from mmcit.data import check

    paths = []
    for k in range(150):
        p = tmp_path / f"{k}.png"
        if k % 7 == 3:
            p.write_bytes(b"")  # unreadable
        elif k % 11 != 5:  # k % 11 == 5: missing
            Image.new("RGB", (2 + k % 3, 2), (k, 0, 0)).save(p)
        paths.append(p)
    want = [check.probe_image(p) for p in paths]
    threaded = []
    real_pool = check.ThreadPoolExecutor
    monkeypatch.setattr(check, "ThreadPoolExecutor", lambda **kw: threaded.append(kw) or real_pool(**kw))
    monkeypatch.setattr(check, "PROBE_SLOW_S", -1.0 if slow else 1e9)
    got = check.probe_images(paths)
    assert got == want
    bad = [k for k in range(150) if k % 7 == 3 or k % 11 == 5]
    assert [k for k, w in enumerate(got) if w is not None] == bad
    assert {got[k][0] for k in bad} == {"missing_image", "unreadable_image"}
    assert bool(threaded) is slow
