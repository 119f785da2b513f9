"""From a DataConfig to the tasks of a stream (and the captions that pretrain the tiny base)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mmcit.config import DataConfig
from mmcit.data.sample import Sample, TaskData


@dataclass
class StreamData:
    tasks: list[TaskData]
    captions: list[Sample]
    instruction_root: Path
    image_root: Path
    key: str  # identifies the data, for caching what is derived from it


def _synthetic_key(cfg: DataConfig) -> str:
    """What determines the generated benchmark: the generator's options and its content version."""
    from data_recipes import synthetic

    return json.dumps({"seed": cfg.seed, "scale": cfg.scale, "image_size": cfg.image_size,
                       "pretrain_per_task": cfg.pretrain_per_task,
                       "version": getattr(synthetic, "VERSION", 1),
                       "train_weight": getattr(synthetic, "TRAIN_WEIGHT", {})}, sort_keys=True)


def synthetic_root(cfg: DataConfig, cache_dir: Path, log=print) -> Path:
    """Generate the built-in benchmark once per (seed, scale, image size) and return its folder."""
    from data_recipes import synthetic

    blob = _synthetic_key(cfg)
    root = cache_dir / "synthetic" / hashlib.sha256(blob.encode()).hexdigest()[:16]
    if not (root / "done").exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        synthetic.generate(tmp, seed=cfg.seed, scale=cfg.scale, image_size=cfg.image_size,
                           pretrain_per_task=cfg.pretrain_per_task)
        (tmp / "done").write_text(blob)
        if root.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, root)
        log(f"generated the synthetic benchmark at {root}")
    return root


def load_data(cfg: DataConfig, cache_dir: Path, log=print) -> StreamData:
    """Read every task of the stream, validating each record and image before any work starts."""
    from data_recipes import coin

    if cfg.source == "synthetic":
        root = synthetic_root(cfg, cache_dir, log)
        instruction_root, image_root = root / "instructions", root / "images"
    else:
        instruction_root, image_root = Path(cfg.instruction_root), Path(cfg.image_root)
    # Real CoIN files are large: parsed once, then loaded from the Arrow cache while unchanged.
    arrow = cache_dir / "coin-arrow" if cfg.source == "coin" else None
    tasks = coin.load_stream(instruction_root, image_root, cfg.variant, cfg.tasks, cache_dir=arrow)
    for t in tasks:
        if cfg.train_limit is not None:
            t.train = t.train[: cfg.train_limit]
        if cfg.test_limit is not None:
            t.test = t.test[: cfg.test_limit]
    captions: list[Sample] = []
    pretrain_file = instruction_root / "Pretrain" / "train.json"
    if pretrain_file.exists():
        captions = coin.load_records(pretrain_file, image_root, task="Pretrain", split="train")
    # The pretrained tiny base (and its tokenizer) depends on the whole benchmark, not on which
    # tasks or variant a run picks, so that every run over the same data shares one cached base.
    key = json.dumps({"source": cfg.source, "root": str(instruction_root.absolute())}, sort_keys=True)
    if cfg.source == "synthetic":  # the generated data is determined by these, not by the path
        key = _synthetic_key(cfg)
    return StreamData(tasks, captions, instruction_root, image_root, key)


def corpus_texts(instruction_root: Path) -> list[str]:
    """Every prompt and answer in every instruction file under the root (all variants, all tasks):
    the text a locally trained tokenizer must cover."""
    texts: list[str] = []
    for path in sorted(Path(instruction_root).rglob("*.json")):
        records = json.loads(path.read_text(encoding="utf-8"))
        for rec in records if isinstance(records, list) else []:
            if not isinstance(rec, dict):
                continue
            for turn in rec.get("conversations") or []:
                if isinstance(turn, dict) and isinstance(turn.get("value"), str):
                    texts.append(turn["value"].replace("<image>", ""))
            for k in ("text", "answer"):
                if isinstance(rec.get(k), str):
                    texts.append(rec[k].replace("<image>", ""))
    return texts
