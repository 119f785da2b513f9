"""The ``synthetic`` reader: generates the built-in benchmark once per setting, then reads it with
the CoIN reader (it is written in CoIN's layout)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from data_recipes.coin import read_stream
from data_recipes.synthetic.writer import TRAIN_WEIGHT, VERSION, generate
from mmcit.data.config import COIN_TASKS, DataConfig
from mmcit.data.readers import READERS, Reader
from mmcit.data.stream import StreamData
from mmcit.errors import ConfigError


def data_key(cfg: DataConfig) -> str:
    """What determines the generated benchmark: the generator's options and its content version.

    (The JSON says "scale" for ``data.sample_factor``, its earlier name, so that existing caches of
    the same content stay valid.)"""
    return json.dumps({"seed": cfg.seed, "scale": cfg.sample_factor, "image_size": cfg.image_size,
                       "pretrain_per_task": cfg.pretrain_per_task, "version": VERSION,
                       "train_weight": TRAIN_WEIGHT}, sort_keys=True)


def synthetic_root(cfg: DataConfig, cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    """Generate the benchmark once per setting (under ``cache_dir/synthetic``); returns its folder."""
    blob = data_key(cfg)
    root = cache_dir / "synthetic" / hashlib.sha256(blob.encode()).hexdigest()[:16]
    if not (root / "done").exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        generate(tmp, seed=cfg.seed, scale=cfg.sample_factor, image_size=cfg.image_size,
                 pretrain_per_task=cfg.pretrain_per_task)
        (tmp / "done").write_text(blob)
        if root.exists():  # another process finished first; keep its copy
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, root)
        log(f"generated the synthetic benchmark at {root}")
    return root


@READERS.register
class SyntheticReader(Reader):
    """The built-in synthetic benchmark: eight CoIN-shaped tasks generated offline, cached by setting."""

    name = "synthetic"

    def validate(self, cfg: DataConfig) -> None:
        bad = [t for t in cfg.tasks if t not in COIN_TASKS]  # the synthetic tasks bear CoIN's names
        if bad:
            raise ConfigError(f"data.tasks: unknown synthetic task(s) {bad}; valid: {', '.join(COIN_TASKS)}")

    def read(self, cfg: DataConfig, cache_dir: Path, log: Callable[[str], None]) -> StreamData:
        root = synthetic_root(cfg, cache_dir, log)
        # The generated data is determined by its settings, not by where it is cached.
        return read_stream(root / "instructions", root / "images", cfg.variant, cfg.tasks, data_key(cfg))
