"""From a ``data:`` config to the tasks of a stream (and the captions that pretrain the tiny base)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmcit.data.config import DataConfig
from mmcit.data.readers import READERS
from mmcit.data.sample import Sample, TaskData
from mmcit.errors import DataError


@dataclass
class StreamData:
    """What a reader gives a run: the tasks in stream order and what derived state is keyed on."""

    tasks: list[TaskData]
    captions: list[Sample]  # pretraining records (the synthetic benchmark's); empty for real data
    instruction_root: Path
    image_root: Path
    key: str  # identifies the data, for caching what is derived from it (the tiny base)


def load_data(cfg: DataConfig, cache_dir: Path | None = None, log=print) -> StreamData:
    """Read every task of the stream through ``cfg.source``'s reader, then apply the limits."""
    data = READERS.get(cfg.source, "data.source")().read(cfg, cache_dir or cfg.cache_path(), log)
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
