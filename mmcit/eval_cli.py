"""``mmcit eval answers`` and ``mmcit eval suite``: score existing CoIN answer files.

An answer file is CoIN's layout (``mmcit.evaluate.answer_records``): JSON lines, each an object
with at least ``question_id`` and ``text`` (the model output). Answers are matched to the task's
test records by ``question_id`` (compared as strings, since files mix ints and strings). A test
question without an answer is scored as wrong, as the reference evaluators do; answers whose id
is not in the test file are not scored but reported, since they usually mean the wrong file.

Note on ImageNet: the reference script pairs answers with gold labels by line order; matching by
id gives the same result for a complete file in test order and the right one for any other order.

A suite (``eval/coin.yaml``, format in ``eval/README.md``) lists the tasks of a continual stream and
each task's answer file name; ``mmcit eval suite`` scores them all and prints a table and the mean.
User errors raise ``DataError`` (answer and test files) or ``ConfigError`` (the suite file).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data_recipes.coin import COIN_TASKS, TASK_SCORERS, DataError, load_task
from mmcit.config import ConfigError
from mmcit.data.sample import TaskData
from mmcit.data_cli import format_table
from mmcit.scoring import MODES, score_task

#: How many unknown / unanswered ids are listed in a report; the counts are always complete.
SHOW_FIRST = 5


# ---- answers ------------------------------------------------------------------------------------

def read_answers(path: Path | str) -> dict[str, str]:
    """``question_id -> text`` from a CoIN answer file (JSON lines; blank lines are ignored).

    Raises ``DataError`` naming the file and line for a missing file, a line that is not a JSON
    object, a missing or mistyped ``question_id`` / ``text``, or a question id given twice (which
    answer counts would be a guess).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: answer file not found", kind="missing_file", path=path)
    answers: dict[str, str] = {}
    first_line: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}", kind="bad_file", path=path) from e
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON: {e.msg}", path=path) from e
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}", path=path)
        qid, text = row.get("question_id"), row.get("text")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            raise DataError(f"{where}: 'question_id' missing or not a string/int: {qid!r}", path=path)
        if not isinstance(text, str):
            raise DataError(f"{where}: 'text' missing or not a string: {text!r}", path=path)
        key = str(qid)
        if key in answers:
            raise DataError(f"{where}: question_id {qid!r} already answered on line {first_line[key]}",
                            path=path)
        answers[key], first_line[key] = text, n
    return answers


@dataclass
class AnswerScore:
    """The score of one answer file against one task's test set."""

    task: str
    scorer: str
    mode: str
    accuracy: float  # in %, unanswered questions counted wrong
    questions: int
    answered: int
    missing: int  # test questions without an answer (counted wrong)
    unknown: int  # answers whose question_id is not in the test file (not scored)
    missing_ids: list[str] = field(default_factory=list)  # the first few
    unknown_ids: list[str] = field(default_factory=list)  # the first few
    answers_file: str = ""


def score_answers(answers: dict[str, str], task: TaskData, mode: str = "default",
                  answers_file: str = "") -> AnswerScore:
    """Score ``answers`` (``question_id -> text``) on ``task.test`` with the task's scorer."""
    if mode not in MODES:
        raise ConfigError(f"unknown scoring mode {mode!r}; valid modes: {', '.join(MODES)}")
    if not task.test:
        raise DataError(f"{task.name}: the test set is empty")
    # None is the scorers' "no prediction": it scores 0 in every scorer and mode.
    predictions = [answers.get(s.id) for s in task.test]
    try:
        accuracy, _ = score_task(task.scorer, predictions, task.test, mode=mode)
    except ValueError as e:  # a test record lacking what its scorer needs (10 TextVQA answers...)
        raise DataError(f"{task.name}: cannot score: {e}") from e
    test_ids = {s.id for s in task.test}
    missing = [s.id for s in task.test if s.id not in answers]
    unknown = [q for q in answers if q not in test_ids]
    return AnswerScore(task.name, task.scorer, mode, accuracy, len(task.test),
                       len(task.test) - len(missing), len(missing), len(unknown),
                       missing[:SHOW_FIRST], unknown[:SHOW_FIRST], answers_file)


def load_test_set(instruction_root: Path | str, image_root: Path | str, variant: str, task: str) -> TaskData:
    """A task's test split, without looking at the images (scoring does not need them; the image
    root is still read for TextVQA's ten gold answers)."""
    return load_task(instruction_root, image_root, variant, task, splits=("test",), check_images=False)


def format_answer_score(r: AnswerScore) -> str:
    """A few readable lines for ``mmcit eval answers``."""
    lines = [f"{r.task} (scorer {r.scorer}, mode {r.mode}): accuracy {r.accuracy:.2f} "
             f"on {r.questions} test question(s)",
             f"  answered {r.answered}, without an answer {r.missing} (counted wrong), "
             f"unknown question ids {r.unknown} (not scored)"]
    if r.missing:
        lines.append(f"  unanswered, first: {', '.join(r.missing_ids)}")
    if r.unknown:
        lines.append(f"  unknown ids, first: {', '.join(r.unknown_ids)}")
    return "\n".join(lines)


def add_answers_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmcit eval answers``."""
    parser.add_argument("--answers", required=True, type=Path, help="answer file (JSON lines, CoIN layout)")
    _add_data_arguments(parser)
    parser.add_argument("--task", required=True, help=f"task name, one of {', '.join(COIN_TASKS)}")
    parser.add_argument("--variant", default="Instructions", help="instruction variant folder or alias")
    parser.add_argument("--mode", choices=MODES, default="default",
                        help="default (plain bugs fixed) or reference (the original scripts' results)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instruction-root", required=True, type=Path,
                        help="folder holding <Variant>/<Task>/test.json")
    parser.add_argument("--image-root", required=True, type=Path,
                        help="image root (TextVQA's gold answers are read from it)")


def cmd_answers(args: argparse.Namespace) -> int:
    """Score one answer file; 0 on success (problems with the files raise DataError)."""
    if args.task not in TASK_SCORERS:
        raise DataError(f"unknown task {args.task!r}; CoIN tasks are {', '.join(COIN_TASKS)}")
    answers = read_answers(args.answers)
    task = load_test_set(args.instruction_root, args.image_root, args.variant, args.task)
    result = score_answers(answers, task, args.mode, str(args.answers))
    print(json.dumps(asdict(result), indent=2) if args.json else format_answer_score(result))
    return 0


# ---- suites -------------------------------------------------------------------------------------

@dataclass
class Suite:
    """A suite file: which tasks to score, and the answer file name of each."""

    name: str
    variant: str
    mode: str
    tasks: list[tuple[str, str]]  # (task, answer file name relative to --answers-dir)


_SUITE_KEYS = {"name", "variant", "mode", "tasks"}


def load_suite(path: Path | str) -> Suite:
    """Read and validate a suite YAML (format: eval/README.md); ``ConfigError`` on any problem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with a 'tasks' list")
    unknown = set(data) - _SUITE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(_SUITE_KEYS))}")
    mode = data.get("mode", "default")
    if mode not in MODES:
        raise ConfigError(f"{path}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    entries = data.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'tasks' must be a non-empty list")
    tasks: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        # An entry is a task name, or {task: NAME, answers: FILE}; the file defaults to NAME.jsonl,
        # the name mmcit's runner gives answer files.
        if isinstance(entry, str):
            entry = {"task": entry}
        if not isinstance(entry, dict) or set(entry) - {"task", "answers"} or "task" not in entry:
            raise ConfigError(f"{path}: tasks[{i}] must be a task name or {{task: NAME, answers: FILE}}, "
                              f"got {entry!r}")
        task = entry["task"]
        if task not in TASK_SCORERS:
            raise ConfigError(f"{path}: tasks[{i}]: unknown task {task!r}; CoIN tasks are {', '.join(COIN_TASKS)}")
        answers = entry.get("answers", f"{task}.jsonl")
        if not isinstance(answers, str) or not answers:
            raise ConfigError(f"{path}: tasks[{i}]: 'answers' must be a file name, got {answers!r}")
        if task in (t for t, _ in tasks):
            raise ConfigError(f"{path}: task {task!r} is listed twice")
        tasks.append((task, answers))
    return Suite(str(data.get("name", path.stem)), str(data.get("variant", "Instructions")), mode, tasks)


@dataclass
class SuiteResult:
    suite: str
    mode: str
    results: list[AnswerScore]
    absent: list[tuple[str, str]]  # (task, answer file path) of tasks without an answer file

    @property
    def mean(self) -> float | None:
        """Mean accuracy over the scored tasks (None if none was scored)."""
        if not self.results:
            return None
        return sum(r.accuracy for r in self.results) / len(self.results)


def score_suite(suite: Suite, answers_dir: Path | str, instruction_root: Path | str,
                image_root: Path | str) -> SuiteResult:
    """Score every task of ``suite`` whose answer file exists in ``answers_dir``."""
    answers_dir = Path(answers_dir)
    if not answers_dir.is_dir():
        raise DataError(f"answers folder not found: {answers_dir}")
    results, absent = [], []
    for task, name in suite.tasks:
        path = answers_dir / name
        if not path.is_file():
            absent.append((task, str(path)))
            continue
        test = load_test_set(instruction_root, image_root, suite.variant, task)
        results.append(score_answers(read_answers(path), test, suite.mode, str(path)))
    return SuiteResult(suite.name, suite.mode, results, absent)


def format_suite(r: SuiteResult) -> str:
    """Table with one row per task (absent answer files included), then the mean."""
    rows: list[list[Any]] = []
    by_task = {x.task: x for x in r.results}
    order = [x.task for x in r.results] + [t for t, _ in r.absent]
    for task in order:
        if task in by_task:
            x = by_task[task]
            rows.append([task, x.scorer, x.questions, x.answered, x.missing, x.unknown, f"{x.accuracy:.2f}"])
        else:
            rows.append([task, TASK_SCORERS[task], None, None, None, None, "no answer file"])
    out = [f"suite {r.suite} (mode {r.mode})", "",
           format_table(["task", "scorer", "questions", "answered", "unanswered", "unknown ids", "accuracy"],
                        rows), ""]
    n = len(r.results) + len(r.absent)
    if r.mean is not None:
        out.append(f"mean accuracy: {r.mean:.2f} over {len(r.results)} of {n} task(s)")
    else:
        out.append(f"no task scored: none of the {n} answer file(s) exists")
    for task, path in r.absent:
        out.append(f"missing answer file for {task}: {path}")
    return "\n".join(out)


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmcit eval suite``."""
    parser.add_argument("suite", type=Path, help="suite YAML, e.g. eval/coin.yaml")
    parser.add_argument("--answers-dir", required=True, type=Path,
                        help="folder with the answer files the suite names (e.g. a run's last "
                             "answers/NN_<stage> folder)")
    _add_data_arguments(parser)
    parser.add_argument("--variant", default=None, help="instruction variant (overrides the suite's)")
    parser.add_argument("--mode", choices=MODES, default=None, help="scoring mode (overrides the suite's)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def cmd_suite(args: argparse.Namespace) -> int:
    """Score a suite; 0 when every task had an answer file, 1 when some were missing."""
    suite = load_suite(args.suite)
    if args.variant is not None:
        suite.variant = args.variant
    if args.mode is not None:
        suite.mode = args.mode
    result = score_suite(suite, args.answers_dir, args.instruction_root, args.image_root)
    if args.json:
        print(json.dumps({"suite": result.suite, "mode": result.mode, "variant": suite.variant,
                          "mean": result.mean, "tasks": [asdict(x) for x in result.results],
                          "missing_answer_files": [{"task": t, "path": p} for t, p in result.absent]},
                         indent=2))
    else:
        print(format_suite(result))
    return 1 if result.absent else 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Convenience for the CLI: adds ``eval`` with its ``answers`` and ``suite`` subcommands."""
    ev = subparsers.add_parser("eval", help="score existing answer files")
    sub = ev.add_subparsers(dest="eval_command", required=True)
    p = sub.add_parser("answers", help="score one CoIN answer file against a task's test set")
    add_answers_arguments(p)
    p.set_defaults(func=cmd_answers)
    p = sub.add_parser("suite", help="score every task of a suite (e.g. eval/coin.yaml) and print the mean")
    add_suite_arguments(p)
    p.set_defaults(func=cmd_suite)
