"""Scoring existing answer files (written by an mmcit run, or by other tools) against a task's test set.

An answer file is CoIN's layout (``mmcit.evaluation.generate.answer_records``): JSON lines, each an
object with at least ``question_id`` and ``text`` (the model output). Answers are matched to the
task's test records by ``question_id`` (compared as strings, since files mix ints and strings). A
test question without an answer is scored as wrong, as the reference evaluators do; answers whose id
is not in the test file are not scored but reported, since they usually mean the wrong file.

The ``text`` of each answer is scored as the mode says (``mmcit.evaluation.scoring``): stripped in
default mode, exactly as written in reference mode, as the original evaluators read it. Before
scoring, the test set is run through ``check_samples``: a question the scorer cannot score in this
mode (TextVQA without its ten gold answers, in reference mode) refuses the whole file with one
line; one default mode scores with a fallback is counted in ``AnswerScore.warnings``.

Note on ImageNet: the reference script pairs answers with gold labels by line order; matching by
id gives the same result for a complete file in test order and the right one for any other order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mmcit.data.check import layout_reader
from mmcit.data.sample import TaskData
from mmcit.errors import ConfigError, DataError
from mmcit.evaluation.scoring import MODES, check_samples, score_task

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
    warnings: list[str] = field(default_factory=list)  # questions scored with a fallback (check_samples)


def score_answers(answers: dict[str, str], task: TaskData, mode: str = "default",
                  answers_file: str = "") -> AnswerScore:
    """Score ``answers`` (``question_id -> text``) on ``task.test`` with the task's scorer."""
    if mode not in MODES:
        raise ConfigError(f"unknown scoring mode {mode!r}; valid modes: {', '.join(MODES)}")
    if not task.test:
        raise DataError(f"{task.name}: the test set is empty")
    error, warning = check_samples(task.scorer, task.test, mode)
    if error is not None:
        raise DataError(f"{task.name}: {error}")
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
                       missing[:SHOW_FIRST], unknown[:SHOW_FIRST], answers_file, [warning] if warning else [])


def load_test_set(instruction_root: Path | str, image_root: Path | str, variant: str, task: str,
                  layout: str = "coin") -> TaskData:
    """A task's test split, without looking at the images (scoring does not need them; the image
    root is still read for TextVQA's ten gold answers)."""
    reader = layout_reader(layout)
    if task not in reader.task_scorers:
        raise DataError(f"unknown task {task!r}; the {reader.name} tasks are {', '.join(reader.task_names)}")
    return reader.load_task(instruction_root, image_root, variant, task, splits=("test",), check_images=False)
