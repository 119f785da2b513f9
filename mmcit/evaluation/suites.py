"""Evaluation suites: a YAML file in ``eval/`` names a continual stream's tasks, the layout they are
read with, and the answer file of each (format: ``eval/README.md``). ``score_suite`` scores a
folder of answer files against it. ``SUITES`` lists the suite files shipped in ``eval/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from mmcit.data.check import layout_reader
from mmcit.errors import ConfigError, DataError
from mmcit.evaluation.answers import AnswerScore, load_test_set, read_answers, score_answers
from mmcit.evaluation.scoring import MODES
from mmcit.registry import Registry

#: The repository's suite files (``eval/*.yaml``), for ``mmcit ls suites``.
SUITE_DIR = Path(__file__).resolve().parents[2] / "eval"


def _load_shipped(registry: Registry) -> None:
    for path in sorted(SUITE_DIR.glob("*.yaml")):
        suite = load_suite(path)
        registry.register(path, name=path.stem, doc=suite.description or f"{suite.name}: {len(suite.tasks)} tasks")


SUITES: Registry[Path] = Registry("suites", loader=_load_shipped)


@dataclass
class Suite:
    """A suite file: which tasks to score, and the answer file name of each."""

    name: str
    variant: str
    mode: str
    tasks: list[tuple[str, str]]  # (task, answer file name relative to --answers-dir)
    layout: str = "coin"  # the reader of the suite's data layout
    description: str = ""


_SUITE_KEYS = {"name", "description", "layout", "variant", "mode", "tasks"}


def load_suite(path: Path | str) -> Suite:
    """Read and validate a suite YAML (format: eval/README.md); ``ConfigError`` on any problem."""
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
    layout = str(data.get("layout", "coin"))
    reader = layout_reader(layout)
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
        if task not in reader.task_scorers:
            raise ConfigError(f"{path}: tasks[{i}]: unknown task {task!r}; the {layout} tasks are "
                              f"{', '.join(reader.task_names)}")
        answers = entry.get("answers", f"{task}.jsonl")
        if not isinstance(answers, str) or not answers:
            raise ConfigError(f"{path}: tasks[{i}]: 'answers' must be a file name, got {answers!r}")
        if task in (t for t, _ in tasks):
            raise ConfigError(f"{path}: task {task!r} is listed twice")
        tasks.append((task, answers))
    return Suite(str(data.get("name", path.stem)), str(data.get("variant", "Instructions")), mode, tasks, layout,
                 str(data.get("description", "")))


@dataclass
class SuiteResult:
    """A suite's scores: one ``AnswerScore`` per task with an answer file, and the tasks without."""

    suite: str
    mode: str
    results: list[AnswerScore]
    absent: list[tuple[str, str]]  # (task, answer file path) of tasks without an answer file
    layout: str = "coin"

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
        test = load_test_set(instruction_root, image_root, suite.variant, task, suite.layout)
        results.append(score_answers(read_answers(path), test, suite.mode, str(path)))
    return SuiteResult(suite.name, suite.mode, results, absent, suite.layout)
