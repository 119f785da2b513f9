"""``mmcit eval answers`` and ``mmcit eval suite``: score existing answer files
(``mmcit/evaluation/answers.py`` says how answers are matched and counted).

A suite (``eval/coin.yaml``, format in ``eval/README.md``) lists the tasks of a continual stream and
each task's answer file name; ``mmcit eval suite`` scores them all and prints a table and the mean.
User errors raise ``DataError`` (answer and test files) or ``ConfigError`` (the suite file).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmcit.cli.format import format_table
from mmcit.evaluation.answers import AnswerScore, load_test_set, read_answers, score_answers
from mmcit.evaluation.scoring import MODES
from mmcit.evaluation.suites import SuiteResult, find_suite, load_suite, score_suite  # noqa: F401 (load_suite: API)

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
    lines += [f"  warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def add_answers_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmcit eval answers``."""
    parser.add_argument("--answers", required=True, type=Path, help="answer file (JSON lines, CoIN layout)")
    _add_data_arguments(parser)
    parser.add_argument("--task", required=True, help="task name (e.g. GQA)")
    parser.add_argument("--layout", default="coin", help="the reader of the tree's layout (default: coin)")
    parser.add_argument("--suite", default=None, help="read and score the task as this suite does (a name or YAML)")
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
    answers = read_answers(args.answers)
    if args.suite:
        suite = find_suite(args.suite)
        variant = suite.variant if args.variant == "Instructions" else args.variant
        task = suite.reader_for(args.task).load_task(args.instruction_root, args.image_root, variant, args.task,
                                                     splits=("test",), check_images=False)
        task.scorer = suite.scorer_for(args.task)
    else:
        task = load_test_set(args.instruction_root, args.image_root, args.variant, args.task, args.layout)
    result = score_answers(answers, task, args.mode, str(args.answers))
    print(json.dumps(asdict(result), indent=2) if args.json else format_answer_score(result))
    return 0


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
            rows.append([task, r.scorers.get(task, ""), None, None, None, None, "no answer file"])
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
    out += [f"warning: {x.task}: {w}" for x in r.results for w in x.warnings]
    return "\n".join(out)


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmcit eval suite``."""
    parser.add_argument("suite", help="a suite's name (mmcit ls suites) or YAML file, e.g. eval/coin.yaml")
    parser.add_argument("--answers-dir", required=True, type=Path,
                        help="folder with the answer files the suite names (e.g. a run's last "
                             "answers/NN_<stage> folder)")
    _add_data_arguments(parser)
    parser.add_argument("--variant", default=None, help="instruction variant (overrides the suite's)")
    parser.add_argument("--mode", choices=MODES, default=None, help="scoring mode (overrides the suite's)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def cmd_suite(args: argparse.Namespace) -> int:
    """Score a suite; 0 when every task had an answer file, 1 when some were missing."""
    suite = find_suite(args.suite)
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
    """Adds ``eval`` with its ``answers`` and ``suite`` subcommands."""
    ev = subparsers.add_parser("eval", help="score existing answer files")
    sub = ev.add_subparsers(dest="eval_command", required=True)
    p = sub.add_parser("answers", help="score one answer file against a task's test set")
    add_answers_arguments(p)
    p.set_defaults(func=cmd_answers)
    p = sub.add_parser("suite", help="score every task of a suite (e.g. eval/coin.yaml) and print the mean")
    add_suite_arguments(p)
    p.set_defaults(func=cmd_suite)
