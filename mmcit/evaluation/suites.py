"""Scoring a suite's answer files: ``score_suite`` scores a folder of answer files against a suite
(``mmcit/data/suites.py`` defines suites; its names are re-exported here).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmcit.data.suites import SUITE_DIR, SUITES, Suite, SuiteTask, find_suite, load_suite
from mmcit.errors import DataError
from mmcit.evaluation.answers import AnswerScore, read_answers, score_answers

__all__ = ["SUITE_DIR", "SUITES", "Suite", "SuiteResult", "SuiteTask", "find_suite", "load_suite", "score_suite"]


@dataclass
class SuiteResult:
    """A suite's scores: one ``AnswerScore`` per task with an answer file, and the tasks without."""

    suite: str
    mode: str
    results: list[AnswerScore]
    absent: list[tuple[str, str]]  # (task, answer file path) of tasks without an answer file
    layout: str = "coin"
    scorers: dict[str, str] = field(default_factory=dict)  # task -> scorer name, answered or not

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
    for entry in suite.tasks:
        path = answers_dir / entry.answers
        if not path.is_file():
            absent.append((entry.task, str(path)))
            continue
        test = suite.reader_for(entry.task).load_task(instruction_root, image_root, suite.variant, entry.task,
                                                      splits=("test",), check_images=False)
        test.scorer = entry.scorer
        results.append(score_answers(read_answers(path), test, suite.mode, str(path)))
    return SuiteResult(suite.name, suite.mode, results, absent, suite.layout,
                       {t.task: t.scorer for t in suite.tasks})
