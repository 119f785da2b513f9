"""Tests of ``mmcit eval answers`` / ``mmcit eval suite`` on hand-written test and answer files
whose accuracies are worked out by hand, and of the shipped eval/coin.yaml on a synthetic tree."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from data_recipes.coin import COIN_TASKS, DataError, load_stream
from data_recipes.synthetic import generate
from mmcit.cli import eval as eval_cli
from mmcit.config import ConfigError
from mmcit.evaluation.generate import answer_records

REPO = Path(__file__).resolve().parent.parent
PROMPT = "What is it?\nAnswer the question using a single word or phrase."


def write_test(instr: Path, task: str, golds: dict[int, str]) -> None:
    """A test.json for ``task`` with one record per (question_id, gold answer)."""
    path = instr / "Instructions" / task / "test.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"question_id": q, "image": f"{task}/{q}.png", "text": PROMPT, "answer": a}
                                for q, a in golds.items()]))


def write_answers(path: Path, answers: list[tuple[object, str]]) -> Path:
    """An answer file in CoIN's layout (extra keys included, as the reference files have them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question_id": q, "prompt": PROMPT, "text": t, "answer_id": f"a{q}",
                                        "model_id": "m", "metadata": {}}) + "\n" for q, t in answers))
    return path


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """Instruction root with hand-made GQA and ImageNet test files; an empty image root (the
    scorers need no image, and eval does not look for them)."""
    instr, images = tmp_path / "instr", tmp_path / "images"
    images.mkdir()
    write_test(instr, "GQA", {1: "cat", 2: "dog", 3: "red", 4: "two"})
    write_test(instr, "ImageNet", {1: "heart", 2: "arrow"})
    return instr, images


def run(capsys, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="mmcit")
    eval_cli.add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def answers_args(roots: tuple[Path, Path], answers: Path, task: str, *extra: str) -> list[str]:
    return ["answers", "--answers", str(answers), "--instruction-root", str(roots[0]),
            "--image-root", str(roots[1]), "--task", task, *extra]


# ---- one answer file ----------------------------------------------------------------------------

def test_three_of_four_right(roots, tmp_path, capsys):
    # GQA lower-cases the prediction and strips trailing periods: "Cat." is right, "blue" is not.
    # Written out of order: matching is by question_id, not by line.
    ans = write_answers(tmp_path / "GQA.jsonl", [(4, "two"), (1, "Cat."), (3, "blue"), ("2", "dog")])
    code, out = run(capsys, *answers_args(roots, ans, "GQA", "--json"))
    result = json.loads(out)
    assert code == 0
    assert result["accuracy"] == 75.0
    assert (result["questions"], result["answered"], result["missing"], result["unknown"]) == (4, 4, 0, 0)
    code, out = run(capsys, *answers_args(roots, ans, "GQA"))
    assert "GQA (scorer gqa, mode default): accuracy 75.00 on 4 test question(s)" in out


def test_missing_answers_count_wrong_and_unknown_ids_are_reported(roots, tmp_path, capsys):
    # 2 right of 4 questions (3 and 4 unanswered); ids 99 and "x" are not in the test file.
    ans = write_answers(tmp_path / "a.jsonl", [(1, "cat"), (2, "dog"), (99, "two"), ("x", "red")])
    code, out = run(capsys, *answers_args(roots, ans, "GQA", "--json"))
    result = json.loads(out)
    assert result["accuracy"] == 50.0
    assert (result["answered"], result["missing"], result["unknown"]) == (2, 2, 2)
    assert result["missing_ids"] == ["3", "4"] and result["unknown_ids"] == ["99", "x"]
    _, out = run(capsys, *answers_args(roots, ans, "GQA"))
    assert "without an answer 2 (counted wrong), unknown question ids 2 (not scored)" in out


def test_imagenet_empty_prediction_reference_vs_default(roots, tmp_path, capsys):
    # "" is a substring of every label: the reference counts it right (2/2), default wrong (1/2).
    ans = write_answers(tmp_path / "in.jsonl", [(1, ""), (2, "an arrow")])
    ref = json.loads(run(capsys, *answers_args(roots, ans, "ImageNet", "--mode", "reference", "--json"))[1])
    default = json.loads(run(capsys, *answers_args(roots, ans, "ImageNet", "--json"))[1])
    assert (ref["accuracy"], ref["mode"]) == (100.0, "reference")
    assert (default["accuracy"], default["mode"]) == (50.0, "default")


def test_answers_of_another_tool_score_as_the_original_evaluators_in_reference_mode(roots, tmp_path, capsys):
    # Another tool's answers keep whitespace: reference reads them as written ("cat " is not "cat").
    ans = write_answers(tmp_path / "g.jsonl", [(1, "cat "), (2, "dog"), (3, "red\n"), (4, " two")])
    ref = json.loads(run(capsys, *answers_args(roots, ans, "GQA", "--mode", "reference", "--json"))[1])
    default = json.loads(run(capsys, *answers_args(roots, ans, "GQA", "--json"))[1])
    assert (ref["accuracy"], default["accuracy"]) == (25.0, 100.0)
    # Grounding: the reference cuts the last character; a trailing newline is what it cuts.
    path = roots[0] / "Instructions" / "Grounding" / "test.json"
    path.parent.mkdir(parents=True)
    box = "[0.2, 0.2, 0.6, 0.6]"
    path.write_text(json.dumps([{"question_id": q, "image": "g.png", "text": "Locate it: the dog", "answer": box,
                                 "answer_bbox": box, "size": [100, 80]} for q in (1, 2, 3)]))
    ans = write_answers(tmp_path / "b.jsonl", [(1, box + "\n"), (2, box), (3, " " + box)])
    ref = json.loads(run(capsys, *answers_args(roots, ans, "Grounding", "--mode", "reference", "--json"))[1])
    default = json.loads(run(capsys, *answers_args(roots, ans, "Grounding", "--json"))[1])
    assert ref["accuracy"] == pytest.approx(100 / 3) and default["accuracy"] == 100.0


def test_textvqa_without_its_ten_answers(roots, tmp_path, capsys):
    write_test(roots[0], "TextVQA", {1: "stop", 2: "exit"})
    ans = write_answers(tmp_path / "t.jsonl", [(1, "stop"), (2, "enter")])
    with pytest.raises(DataError) as info:
        run(capsys, *answers_args(roots, ans, "TextVQA", "--mode", "reference"))
    assert str(info.value).startswith("TextVQA: 2 of 2 test sample(s) cannot be scored in reference mode; first: "
                                      "TextVQA sample '1': no ten gold answers")
    assert "\n" not in str(info.value)
    code, out = run(capsys, *answers_args(roots, ans, "TextVQA"))
    assert code == 0 and "accuracy 50.00" in out
    assert "  warning: 2 of 2 test sample(s): no ten gold answers" in out
    (roots[1] / "TextVQA").mkdir()
    (roots[1] / "TextVQA" / "TextVQA_0.5.1_val.json").write_text(json.dumps(
        {"data": [{"question_id": 1, "answers": ["stop"] * 2 + ["halt"] * 8},
                  {"question_id": 2, "answers": ["exit"] * 10}]}))
    result = json.loads(run(capsys, *answers_args(roots, ans, "TextVQA", "--mode", "reference", "--json"))[1])
    assert result["accuracy"] == pytest.approx(30.0) and result["warnings"] == []  # (0.6 + 0) / 2


@pytest.mark.parametrize("lines, needle", [
    ('{"question_id": 1, "text": "a"}\n{"question_id": 1, "text": "b"}\n', "line 2: question_id 1 already answered on line 1"),
    ('{"question_id": 1, "text": "a"}\n{"question_id": 2,\n', "line 2: invalid JSON"),
    ('\n{"question_id": 1}\n', "line 2: 'text' missing"),
    ('[1, 2]\n', "line 1: expected a JSON object"),
    ('{"text": "a"}\n', "line 1: 'question_id' missing"),
])
def test_bad_answer_files(roots, tmp_path, capsys, lines, needle):
    ans = tmp_path / "bad.jsonl"
    ans.write_text(lines)
    with pytest.raises(DataError, match="bad.jsonl") as info:
        run(capsys, *answers_args(roots, ans, "GQA"))
    assert needle in str(info.value)


def test_user_errors(roots, tmp_path, capsys):
    ans = write_answers(tmp_path / "a.jsonl", [(1, "cat")])
    with pytest.raises(DataError, match="answer file not found"):
        run(capsys, *answers_args(roots, tmp_path / "nope.jsonl", "GQA"))
    with pytest.raises(DataError, match="unknown task"):
        run(capsys, *answers_args(roots, ans, "Nope"))
    with pytest.raises(DataError, match="VizWiz/test.json: file not found"):
        run(capsys, *answers_args(roots, ans, "VizWiz"))


# ---- suites -------------------------------------------------------------------------------------

def suite_args(roots: tuple[Path, Path], suite: Path, answers_dir: Path, *extra: str) -> list[str]:
    return ["suite", str(suite), "--answers-dir", str(answers_dir), "--instruction-root", str(roots[0]),
            "--image-root", str(roots[1]), *extra]


def test_suite_table_and_mean(roots, tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: tiny\ntasks:\n  - {task: GQA, answers: gqa_answers.jsonl}\n  - ImageNet\n")
    out_dir = tmp_path / "answers"
    write_answers(out_dir / "gqa_answers.jsonl", [(1, "cat"), (2, "dog"), (3, "blue"), (4, "two")])  # 75
    write_answers(out_dir / "ImageNet.jsonl", [(1, ""), (2, "arrow")])  # default 50, reference 100
    code, out = run(capsys, *suite_args(roots, suite, out_dir))
    assert code == 0
    assert "suite tiny (mode default)" in out and "mean accuracy: 62.50 over 2 of 2 task(s)" in out
    assert [ln.split()[-1] for ln in out.splitlines() if ln.startswith(("GQA", "ImageNet"))] == ["75.00", "50.00"]
    data = json.loads(run(capsys, *suite_args(roots, suite, out_dir, "--mode", "reference", "--json"))[1])
    assert data["mode"] == "reference" and data["mean"] == 87.5
    assert [(t["task"], t["accuracy"]) for t in data["tasks"]] == [("GQA", 75.0), ("ImageNet", 100.0)]


def test_suite_missing_answer_file(roots, tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("tasks: [GQA, ImageNet]\n")
    out_dir = tmp_path / "answers"
    write_answers(out_dir / "GQA.jsonl", [(1, "cat"), (2, "dog"), (3, "red"), (4, "two")])
    code, out = run(capsys, *suite_args(roots, suite, out_dir))
    assert code == 1
    assert "no answer file" in out and "mean accuracy: 100.00 over 1 of 2 task(s)" in out
    assert f"missing answer file for ImageNet: {out_dir / 'ImageNet.jsonl'}" in out


@pytest.mark.parametrize("text, needle", [
    ("tasks: []\n", "non-empty list"),
    ("tasks: [GQA, Nope]\n", "unknown task 'Nope'"),
    ("tasks: [GQA, GQA]\n", "listed twice"),
    ("tasks: [GQA]\nmode: strict\n", "mode must be one of"),
    ("tasks: [GQA]\nvarient: x\n", "unknown key(s) varient"),
    ("tasks:\n  - {task: GQA, file: x.jsonl}\n", "tasks[0] must be"),
    ("- GQA\n", "top level must be a mapping"),
])
def test_suite_format_errors(tmp_path, text, needle):
    suite = tmp_path / "s.yaml"
    suite.write_text(text)
    with pytest.raises(ConfigError) as info:
        eval_cli.load_suite(suite)
    assert needle in str(info.value)


def test_shipped_coin_suite_on_synthetic_tree(tmp_path, capsys):
    suite = eval_cli.load_suite(REPO / "eval" / "coin.yaml")
    assert [t for t, _ in suite.tasks] == COIN_TASKS and suite.mode == "default"
    generate(tmp_path, seed=0, scale=0.05)
    instr, images = tmp_path / "instructions", tmp_path / "images"
    out_dir = tmp_path / "answers"
    # Gold answers as predictions, written the way a run writes them (answer_records, <Task>.jsonl).
    for td in load_stream(instr, images, "original", COIN_TASKS, splits=("test",)):
        rows = answer_records(td.test, [s.answer for s in td.test], "gold")
        write_answers(out_dir / f"{td.name}.jsonl", [(r["question_id"], r["text"]) for r in rows])
    code, out = run(capsys, *suite_args((instr, images), REPO / "eval" / "coin.yaml", out_dir, "--json"))
    data = json.loads(out)
    assert code == 0 and data["missing_answer_files"] == []
    acc = {t["task"]: t["accuracy"] for t in data["tasks"]}
    assert list(acc) == COIN_TASKS
    # Every scorer gives full marks to the gold answer, except TextVQA whose soft score depends on
    # how many of the ten human answers agree with the one in test.json.
    assert all(acc[t] == 100.0 for t in COIN_TASKS if t != "TextVQA") and acc["TextVQA"] > 0
    assert data["mean"] == pytest.approx(sum(acc.values()) / 8)
