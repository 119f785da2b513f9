"""Overlap between the evaluated splits of a generated tree and what its model trains on.

``overlap_report(root)`` reads a tree written by ``generate`` (any version) and counts, per task and
evaluated split (``test``, and ``val`` where present), the samples whose image is pixel-identical to
a training image of the same task, of any task, or to a pretraining image, and the samples whose (image, prompt,
answer) also occurs as a training sample. Images are compared by the hash of their decoded RGB
pixels, never by file name. ``benchmarks/synthetic_overlap.py`` prints the report.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from data_recipes.synthetic.vocab import TASKS

EVALUATED_SPLITS: tuple[str, ...] = ("test", "val")


def pixel_hash(path: Path) -> str:
    """SHA-256 of an image's size and decoded RGB pixels (identical pictures, whatever the file)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        return hashlib.sha256(repr(rgb.size).encode() + rgb.tobytes()).hexdigest()


@dataclass
class SplitOverlap:
    """One task's evaluated split: its size and how much of it training or pretraining has seen."""

    samples: int
    image_in_task_train: int  # image pixel-identical to a training image of the same task
    image_in_train: int  # image pixel-identical to a training image of any task
    image_in_pretrain: int  # image pixel-identical to a pretraining image
    copy_of_train: int  # (image, prompt, answer) identical to a training sample's


class _Hashes:
    """Pixel hashes of a tree's images, each file decoded once."""

    def __init__(self, image_root: Path) -> None:
        self.root, self.cache = image_root, {}

    def __call__(self, rel: str) -> str:
        if rel not in self.cache:
            self.cache[rel] = pixel_hash(self.root / rel)
        return self.cache[rel]


def _records(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def _train_triple(rec: dict, hashes: _Hashes) -> tuple[str, str, str]:
    human, gpt = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
    return hashes(rec["image"]), human.replace("<image>", "").strip(), gpt.strip()


def overlap_report(root: Path | str, variant: str = "Instructions") -> dict[str, dict[str, SplitOverlap]]:
    """Per task and evaluated split of ``root/instructions/<variant>``, the overlap counts."""
    root = Path(root)
    instr, hashes = root / "instructions" / variant, _Hashes(root / "images")
    tasks = [t for t in TASKS if (instr / t / "train.json").is_file()]
    task_images: dict[str, set[str]] = {t: set() for t in tasks}
    train_triples: set[tuple[str, str, str]] = set()
    for task in tasks:
        for rec in _records(instr / task / "train.json"):
            triple = _train_triple(rec, hashes)
            task_images[task].add(triple[0])
            train_triples.add(triple)
    train_images = set().union(*task_images.values())
    pretrain_images = {hashes(r["image"]) for r in _records(root / "instructions" / "Pretrain" / "train.json")}
    report: dict[str, dict[str, SplitOverlap]] = {}
    for task in tasks:
        for split in EVALUATED_SPLITS:
            records = _records(instr / task / f"{split}.json")
            if not records:
                continue
            pixels = [hashes(r["image"]) for r in records]
            report.setdefault(task, {})[split] = SplitOverlap(
                samples=len(records),
                image_in_task_train=sum(h in task_images[task] for h in pixels),
                image_in_train=sum(h in train_images for h in pixels),
                image_in_pretrain=sum(h in pretrain_images for h in pixels),
                copy_of_train=sum((h, r["text"].strip(), str(r["answer"]).strip()) in train_triples
                                  for h, r in zip(pixels, records)),
            )
    return report


def report_table(report: dict[str, dict[str, SplitOverlap]]) -> str:
    """The report as a Markdown table (one row per task and split)."""
    lines = ["| task | split | samples | image in the task's training | image in any training | "
             "image in pretraining | (image, question, answer) in training |", "|---|---|---|---|---|---|---|"]
    for task, splits in report.items():
        for split, o in splits.items():
            lines.append(f"| {task} | {split} | {o.samples} | {o.image_in_task_train} | {o.image_in_train} | "
                         f"{o.image_in_pretrain} | {o.copy_of_train} |")
    return "\n".join(lines)


def report_json(report: dict[str, dict[str, SplitOverlap]]) -> dict:
    """The report as plain data."""
    return {task: {split: asdict(o) for split, o in splits.items()} for task, splits in report.items()}
