"""From a ``data:`` config to the tasks of a stream (and the captions that pretrain the tiny base)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mmcit.data.config import DataConfig
from mmcit.data.order import resolve_order
from mmcit.data.readers import READERS
from mmcit.data.sample import Sample, TaskData
from mmcit.errors import DataError
from mmcit.data.suites import find_suite


@dataclass
class StreamData:
    """What a reader gives a run: the tasks in stream order and what derived state is keyed on."""

    tasks: list[TaskData]
    # Pretraining records (the synthetic benchmark's; empty for real data), or a function that reads
    # them: they are read on first use of ``captions``, which only pretraining a base needs (the
    # demo's 38,400 took about 6 s to read, in every run, although the base was cached).
    pretrain_records: list[Sample] | Callable[[], list[Sample]]
    instruction_root: Path
    image_root: Path
    key: str  # identifies the data, for caching what is derived from it (the tiny base)
    # Samples the reader left out because their image is missing or unreadable (one DataError
    # each, naming file, record and image) and their count per task and split: the run refuses
    # them, or goes on without them with data.skip_bad_images (mmcit/data/preflight.py).
    bad_images: list[DataError] = field(default_factory=list)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def captions(self) -> list[Sample]:
        """The pretraining records, read on first use."""
        if callable(self.pretrain_records):
            self.pretrain_records = self.pretrain_records()
        return self.pretrain_records


def stream_order(cfg: DataConfig) -> list[str]:
    """The stream's tasks in training order: ``data.order`` over ``data.tasks`` (a suite's named
    orders included)."""
    named = find_suite(cfg.suite).orders if cfg.suite else None
    return resolve_order(cfg.order, cfg.tasks, named)


def load_data(cfg: DataConfig, cache_dir: Path | None = None, log=print) -> StreamData:
    """Read every task of the stream through ``cfg.source``'s reader, put the tasks in ``data.order``,
    then apply the limits."""
    data = READERS.get(cfg.source, "data.source")().read(cfg, cache_dir or cfg.cache_path(), log)
    by_name = {t.name: t for t in data.tasks}
    data.tasks = [by_name[name] for name in stream_order(cfg)]
    for t in data.tasks:
        if cfg.train_limit is not None:
            t.train = t.train[: cfg.train_limit]
        if cfg.test_limit is not None:
            t.test = t.test[: cfg.test_limit]
        if cfg.val_limit is not None:
            t.val = t.val[: cfg.val_limit]
    return data


def require_split(tasks: list[TaskData], split: str) -> None:
    """Raise ``DataError`` (one line) when a task has no samples in the split runs evaluate on."""
    empty = [t.name for t in tasks if not t.split(split)]
    if empty:
        hint = " (no val.json beside its test.json)" if split == "val" else ""
        raise DataError(f"eval.split={split}: task(s) {', '.join(empty)} have no {split} samples{hint}")
