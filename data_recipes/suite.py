"""Reader ``suite``: a run's stream from a suite file (``data.source: suite``, ``data.suite: NAME``).

Each task of ``data.tasks`` is read by the reader its suite entry names (``coin``, ``mcitlib``...)
with that entry's settings, and scored by the entry's scorer; ``data.instruction_root`` and
``data.image_root`` are the roots the suite's paths are relative to. The stream's order is applied
by ``load_data`` (``data.order``, which may name one of the suite's own orders).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from mmcit.data.config import DataConfig
from mmcit.data.order import resolve_order
from mmcit.data.readers import READERS, Reader
from mmcit.data.stream import StreamData
from mmcit.data.suites import Suite, find_suite
from mmcit.errors import ConfigError


def _suite(cfg: DataConfig) -> Suite:
    if not cfg.suite:
        raise ConfigError("data.suite is required when data.source is suite (mmcit ls suites)")
    return find_suite(cfg.suite)


@READERS.register
class SuiteReader(Reader):
    """A suite's tasks, each through its own reader and scorer (data.suite names the suite)."""

    name = "suite"

    def validate(self, cfg: DataConfig) -> None:
        """The suite exists, knows every task, offers the variant, and the order fits."""
        suite = _suite(cfg)
        unknown = [t for t in cfg.tasks if t not in suite.task_names]
        if unknown:
            raise ConfigError(f"data.tasks: {', '.join(unknown)} not in suite {suite.name} "
                              f"({', '.join(suite.task_names)})")
        for key in ("instruction_root", "image_root"):
            if getattr(cfg, key) is None:
                raise ConfigError(f"data.{key} is required when data.source is suite")
        reader = suite.reader_for(cfg.tasks[0])
        if reader.variant_dir(cfg.variant) not in {reader.variant_dir(v) for v in suite.variants}:
            raise ConfigError(f"data.variant: {cfg.variant!r} is not a variant of suite {suite.name} "
                              f"({', '.join(suite.variants)})")
        resolve_order(cfg.order, cfg.tasks, suite.orders)

    def check(self, cfg: DataConfig) -> list[str]:
        """Missing roots or task files (records and images: ``mmcit data check --suite``)."""
        suite = _suite(cfg)
        if not Path(cfg.image_root).is_dir():
            return [f"data.image_root: {cfg.image_root} is not a folder"]
        problems = []
        for task in cfg.tasks:
            reader = suite.reader_for(task)
            for split in ("train", "test"):
                path = reader.split_path(cfg.instruction_root, cfg.variant, task, split)
                if not path.is_file():
                    problems.append(f"data.tasks: {task} {split} file {path} not found")
        return problems

    def read(self, cfg: DataConfig, cache_dir: Path, log: Callable[[str], None]) -> StreamData:
        """Every task of ``data.tasks``, validated record by record, with the suite's scorers."""
        suite = _suite(cfg)
        root, images = Path(cfg.instruction_root), Path(cfg.image_root)
        tasks = []
        for name in cfg.tasks:
            task = suite.reader_for(name).load_task(root, images, cfg.variant, name)
            task.scorer = suite.scorer_for(name)
            tasks.append(task)
        # What derives from the data (the tiny base's tokenizer) reads every file under the root.
        key = json.dumps({"source": "suite", "root": str(root.absolute())}, sort_keys=True)
        return StreamData(tasks, [], root, images, key)
