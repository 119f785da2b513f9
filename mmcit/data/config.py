"""The ``data:`` block of a run's config: which reader builds the stream, from where, how much."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mmcit.data.order import resolve_order
from mmcit.data.readers import READERS
from mmcit.errors import ConfigError

#: The CoIN tasks in CoIN's order: the default stream.
COIN_TASKS = ["ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCRVQA"]


def default_cache_dir() -> Path:
    """Where generated data, parsed files, pretrained bases and tower tokens are cached:
    ``$MMCIT_CACHE``, else ``~/.cache/mmcit``."""
    return Path(os.environ.get("MMCIT_CACHE", Path.home() / ".cache" / "mmcit"))


@dataclass
class DataConfig:
    """Where the stream's tasks come from (``source`` names a registered reader, ``mmcit ls readers``)."""

    source: str = "synthetic"  # synthetic | coin (or any registered reader)
    variant: str = "Instructions"
    tasks: list[str] = field(default_factory=lambda: list(COIN_TASKS))
    instruction_root: str | None = None  # coin: <instruction_root>/<variant>/<task>/{train,test[,val]}.json
    image_root: str | None = None
    seed: int = 0  # synthetic: generator seed
    sample_factor: float = 1.0  # synthetic: multiplies the per-task sample counts
    image_size: int = 64  # synthetic: image side in pixels
    pretrain_per_task: int = 2400  # synthetic: pretraining scenes per task kind (each captioned and focused)
    train_limit: int | None = None  # keep at most this many training samples per task
    test_limit: int | None = None
    val_limit: int | None = None  # keep at most this many validation samples per task
    cache_dir: str | None = None  # where generated data and pretrained bases are cached
    # A sample whose image is missing or unreadable: false, the run refuses to start (one line per
    # image); true, the run leaves those samples out and counts them in results.json.
    skip_bad_images: bool = False
    suite: str | None = None  # source suite: a suite's name (mmcit ls suites) or YAML file
    # origin (data.tasks as listed) | reverse | alphabet | a suite's named order | an explicit list
    order: str | list[str] = "origin"

    def validate(self) -> None:
        """Checks of the values alone, then the reader's own (no file is opened)."""
        if not self.tasks:
            raise ConfigError("data.tasks is empty: a stream needs at least one task")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"data.tasks has duplicates: {self.tasks}")
        if self.sample_factor <= 0:
            raise ConfigError("data.sample_factor must be > 0")
        if self.suite is not None and self.source != "suite":
            raise ConfigError(f"data.suite is read with data.source: suite (got data.source: {self.source})")
        if self.suite is None:
            resolve_order(self.order, self.tasks)  # a suite's reader checks it against the suite's orders
        READERS.get(self.source, "data.source")().validate(self)

    def cache_path(self) -> Path:
        """``cache_dir`` as a path, or the default cache folder."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()
