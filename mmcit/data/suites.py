"""Suites as data: a YAML file in ``eval/`` names a continual stream's tasks, their order(s), the
reader and scorer of each task, its answer file and where its files are (format: ``eval/README.md``).

A task's ``reader`` is a registered ``LayoutReader`` (default: the suite's ``layout``) and its
``scorer`` a registered scorer (default: the reader's own scorer for that task). Keys other than
``task``, ``answers``, ``reader`` and ``scorer`` are the layout's per-task settings (file names,
image folders, prompt suffixes): the reader declares which it accepts (``task_keys``) and gets
them through ``with_tasks``, so a new suite in an existing layout is a new YAML file, no code.

``SUITES`` lists the suite files shipped in ``eval/`` (``mmcit ls suites``); ``find_suite`` takes
such a name or a path. A run reads a suite's tasks with ``data.source: suite`` and ``data.suite``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from mmcit.data.check import layout_reader
from mmcit.data.order import BUILTIN_ORDERS
from mmcit.data.readers import LayoutReader
from mmcit.errors import ConfigError
from mmcit.evaluation.config import MODES
from mmcit.evaluation.scoring import SCORERS
from mmcit.registry import Registry

#: The repository's suite files (``eval/*.yaml``), for ``mmcit ls suites``.
SUITE_DIR = Path(__file__).resolve().parents[2] / "eval"

_SUITE_KEYS = {"name", "description", "layout", "variant", "variants", "mode", "orders", "tasks"}
_TASK_KEYS = {"task", "answers", "reader", "scorer"}


def _load_shipped(registry: Registry) -> None:
    for path in sorted(SUITE_DIR.glob("*.yaml")):
        suite = load_suite(path)
        registry.register(path, name=path.stem, doc=suite.description or f"{suite.name}: {len(suite.tasks)} tasks")


SUITES: Registry[Path] = Registry("suites", loader=_load_shipped)


@dataclass
class SuiteTask:
    """One task of a suite: its reader, scorer, answer file and the layout's settings for it."""

    task: str
    answers: str  # answer file name, relative to an answers folder
    reader: str
    scorer: str
    spec: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[str]:
        """Unpacks as ``(task, answers)``, the pair a suite entry was before tasks had readers."""
        return iter((self.task, self.answers))


@dataclass
class Suite:
    """A suite file: its tasks in origin order, named orders, instruction variants and mode."""

    name: str
    variant: str
    mode: str
    tasks: list[SuiteTask]
    layout: str = "coin"  # the default reader of its tasks
    description: str = ""
    variants: list[str] = field(default_factory=list)  # the instruction variants its layout offers
    orders: dict[str, list[str]] = field(default_factory=dict)  # named orders besides the built-in ones

    @property
    def task_names(self) -> list[str]:
        """The tasks in origin order."""
        return [t.task for t in self.tasks]

    def entry(self, task: str) -> SuiteTask:
        """The suite's entry for ``task`` (``ConfigError`` if it has none)."""
        for t in self.tasks:
            if t.task == task:
                return t
        raise ConfigError(f"suite {self.name}: no task {task!r}; its tasks are {', '.join(self.task_names)}")

    def reader_for(self, task: str) -> LayoutReader:
        """The reader of ``task``, given the settings of every suite task it reads."""
        name = self.entry(task).reader
        return layout_reader(name).with_tasks({t.task: t.spec for t in self.tasks if t.reader == name})

    def scorer_for(self, task: str) -> str:
        """The scorer name of ``task``."""
        return self.entry(task).scorer


def _fail(path: Path, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {msg}")


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"suite file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise _fail(path, f"not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise _fail(path, "the top level must be a mapping with a 'tasks' list")
    unknown = set(data) - _SUITE_KEYS
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_SUITE_KEYS))}")
    return data


def _task_entry(path: Path, i: int, entry: Any, layout: str) -> SuiteTask:
    # An entry is a task name, or a mapping {task: NAME, answers: FILE, reader, scorer, layout keys};
    # the answer file defaults to NAME.jsonl, the name mmcit's runner gives answer files.
    if isinstance(entry, str):
        entry = {"task": entry}
    if not isinstance(entry, dict) or "task" not in entry:
        raise _fail(path, f"tasks[{i}] must be a task name or {{task: NAME, answers: FILE, ...}}, got {entry!r}")
    task = str(entry["task"])
    reader_name = str(entry.get("reader", layout))
    reader = layout_reader(reader_name)
    spec = {k: v for k, v in entry.items() if k not in _TASK_KEYS}
    unknown = set(spec) - set(reader.task_keys)
    if unknown:
        allowed = sorted(_TASK_KEYS | set(reader.task_keys))
        raise _fail(path, f"tasks[{i}] must be a task name or {{task: NAME, answers: FILE, ...}}: unknown key(s) "
                    f"{', '.join(sorted(unknown))} for the {reader_name} reader; allowed: {', '.join(allowed)}")
    scorer = entry.get("scorer") or reader.with_tasks({task: spec}).task_scorers.get(task)
    if scorer is None:
        raise _fail(path, f"tasks[{i}]: unknown task {task!r}; the {reader_name} tasks are "
                    f"{', '.join(reader.task_names)} (or give the task a 'scorer')")
    answers = entry.get("answers", f"{task}.jsonl")
    if not isinstance(answers, str) or not answers:
        raise _fail(path, f"tasks[{i}]: 'answers' must be a file name, got {answers!r}")
    return SuiteTask(task, answers, reader_name, str(scorer), spec)


def _orders(path: Path, raw: Any, names: list[str]) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, "'orders' must map an order name to a list of task names")
    orders = {}
    for key, value in raw.items():
        if key in BUILTIN_ORDERS:
            raise _fail(path, f"orders: {key!r} is built in ({', '.join(BUILTIN_ORDERS)}) and cannot be redefined")
        if not isinstance(value, list) or sorted(map(str, value)) != sorted(names):
            raise _fail(path, f"orders.{key} must list each of the suite's tasks once")
        orders[str(key)] = [str(v) for v in value]
    return orders


def load_suite(path: Path | str) -> Suite:
    """Read and validate a suite YAML (format: eval/README.md); ``ConfigError`` on any problem."""
    path = Path(path)
    data = _read_mapping(path)
    mode = data.get("mode", "default")
    if mode not in MODES:
        raise _fail(path, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    entries = data.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise _fail(path, "'tasks' must be a non-empty list")
    layout = str(data.get("layout", "coin"))
    tasks = [_task_entry(path, i, e, layout) for i, e in enumerate(entries)]
    names = [t.task for t in tasks]
    for name in names:
        if names.count(name) > 1:
            raise _fail(path, f"task {name!r} is listed twice")
    for t in tasks:  # every scorer must exist (a typo would otherwise surface after training)
        _check_scorer(path, t)
    variant = str(data.get("variant", "Instructions"))
    variants = [str(v) for v in data.get("variants") or [variant]]
    if variant not in variants:
        raise _fail(path, f"variant {variant!r} is not among its variants {variants}")
    return Suite(str(data.get("name", path.stem)), variant, mode, tasks, layout, str(data.get("description", "")),
                 variants, _orders(path, data.get("orders"), names))


def _check_scorer(path: Path, task: SuiteTask) -> None:
    if task.scorer not in SCORERS:
        raise _fail(path, f"task {task.task}: unknown scorer {task.scorer!r}; registered: {', '.join(SCORERS.names())}")


def find_suite(name: str | Path) -> Suite:
    """A suite by its name in ``eval/`` (``mmcit ls suites``) or by the path of a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return load_suite(path)
    return load_suite(SUITES.get(str(name), "suite"))
