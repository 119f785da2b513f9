"""Write the synthetic benchmark to disk in exactly CoIN's file layout.

    <root>/images/<Task>/{train,val,test}/<00000>.png    images (paths in records are relative to images/)
    <root>/images/TextVQA/TextVQA_0.5.1_val.json         TextVQA's ten gold answers per test and val question
    <root>/images/Pretrain/<00000>.png                   captioning images for the base's pretraining
    <root>/instructions/<Variant>/<Task>/{train,val,test}.json   Variant: Instructions, Instructions_Diverse
    <root>/instructions/Instructions_Heldout/<Task>/{val,test}.json  unseen instruction wordings, same questions
    <root>/instructions/Pretrain/train.json              "Describe the image." captions
    <root>/manifest.json                                 parameters and counts (relative paths only)

``val.json`` is a validation split in the test records' format (for choosing settings without
looking at the test split); its question ids start at ``VAL_ID_OFFSET`` so that they never collide
with the test ids in TextVQA's shared gold file. Test and validation scenes show contents held out
from training and pretraining, each split its own (``splits.py``).

Every random choice comes from a ``random.Random`` seeded by a hash of (seed, task, split, purpose),
so a task's data does not depend on which other tasks were generated or in which order.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from data_recipes.synthetic import draw as pictures
from data_recipes.synthetic.instructions import VARIANT_DIRS, build_prompt, templates
from data_recipes.synthetic.scenes import describe, focused_descriptions, render
from data_recipes.synthetic.splits import draw
from data_recipes.synthetic.tasks import Item
from data_recipes.synthetic.vocab import TASKS

PRETRAIN_PROMPT = "Describe the image."
#: Training-set size of a task as a multiple of ``train_per_task``. Measured alone with 400 samples
#: (75 LoRA steps), ScienceQA reached about 75%, GQA 45-55%, VizWiz and OCR-VQA 55-95% depending on
#: the base; they get twice the samples (calibration: docs/measurements.md). Part of the data's
#: cache key.
TRAIN_WEIGHT: dict[str, int] = {"ScienceQA": 2, "GQA": 2, "VizWiz": 2, "OCRVQA": 2}
TEXTVQA_GOLDS = "TextVQA/TextVQA_0.5.1_val.json"
#: Question id of the first validation record (test ids start at 0).
VAL_ID_OFFSET = 100_000
#: Splits written per task, and the instruction variants each split is written in.
SPLIT_VARIANTS: dict[str, tuple[str, ...]] = {
    "train": ("original", "diverse"), "val": ("original", "diverse", "heldout"),
    "test": ("original", "diverse", "heldout"),
}


def derive_seed(seed: int, *parts: str) -> int:
    """A 64-bit seed from ``seed`` and labels; stable across runs (unlike Python's ``hash``)."""
    digest = hashlib.sha256("|".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _count(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _train_record(task: str, i: int, image: str, item: Item, instruction: str) -> dict:
    prompt = build_prompt(task, item.question, instruction)
    return {"id": f"{task}_{i:05d}", "image": image,
            "conversations": [{"from": "human", "value": "<image>\n" + prompt},
                              {"from": "gpt", "value": item.answer}]}


def _test_record(task: str, i: int, image: str, item: Item, instruction: str, size: int) -> dict:
    # Like CoIN's test files, "text" carries no <image> tag: the evaluation code adds it. (The
    # validation records have the same format.)
    rec = {"question_id": i, "image": image, "text": build_prompt(task, item.question, instruction),
           "answer": item.answer}
    if task == "Grounding":
        rec["answer_bbox"] = item.answer
        rec["size"] = [size, size]
    return rec


def _question_id(split: str, i: int) -> int:
    return VAL_ID_OFFSET + i if split == "val" else i


def _textvqa_golds(items: dict[str, list[Item]], seed: int) -> dict:
    """Ten answers per TextVQA test and validation question: the gold word, sometimes 1-2 case
    variants (each split from its own random stream)."""
    data = []
    for split in ("test", "val"):
        rng = random.Random(derive_seed(seed, "TextVQA", "golds") if split == "test"
                            else derive_seed(seed, "TextVQA", "golds", split))
        for i, item in enumerate(items.get(split, [])):
            answers = [item.answer] * 10
            for k in rng.sample(range(10), rng.choice([0, 0, 1, 2])):
                answers[k] = rng.choice([item.answer.capitalize(), item.answer.upper()])
            data.append({"question_id": _question_id(split, i), "image_id": f"{split}/{i:05d}",
                         "question": item.question, "answers": answers})
    return {"dataset_name": "synthetic-textvqa", "dataset_type": "val", "data": data}


def _variant_choices(seed: int, task: str, split: str, variant: str, n: int) -> list[str]:
    """One instruction template per sample, drawn independently of the scene's randomness."""
    options = templates(variant, task)
    rng = random.Random(derive_seed(seed, task, split, variant))
    return [rng.choice(options) for _ in range(n)]


#: Below this many images they are drawn in this process; a pool of worker processes costs about a
#: second to start. (The demo's benchmark has about 25,000.)
PARALLEL_MIN_IMAGES = 2000


def _save_images(jobs: list[tuple], size: int) -> None:
    for scene, path in jobs:
        pictures.save_png(render(scene, size), path)


def _write_images(jobs: list[tuple], size: int) -> None:
    """Render and save every ``(scene, path)``. ``render`` is a pure function of the scene and
    ``save_png`` writes fixed bytes, so the files are the same whichever process writes them: with
    enough images, two worker processes (one per core, at most 4) share the work. Measured on 2
    cores: the demo's benchmark (24,960 images) in 18 s instead of 27-28."""
    workers = min(4, os.cpu_count() or 1)
    # fork, not spawn: a spawned child imports the caller's main script again, which breaks a user's
    # script without an `if __name__ == "__main__"` guard. The children only draw with Pillow and
    # NumPy. Elsewhere than Linux (no fork, or fork unsafe with the system's libraries) the images
    # are drawn in this process.
    if workers < 2 or len(jobs) < PARALLEL_MIN_IMAGES or not sys.platform.startswith("linux"):
        _save_images(jobs, size)
        return
    chunks = [jobs[k:k + 500] for k in range(0, len(jobs), 500)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        list(pool.map(partial(_save_images, size=size), chunks))  # list(): a worker's error is raised here


def _write_task(task: str, splits: dict[str, int], image_root: Path, instr_root: Path,
                seed: int, size: int, jobs: list[tuple]) -> dict[str, list[Item]]:
    """Write the task's records; its images are appended to ``jobs`` (written by the caller)."""
    generated: dict[str, list[Item]] = {}
    for split, n in splits.items():
        rng = random.Random(derive_seed(seed, task, split))
        items = [draw(task, rng, split, seed) for _ in range(n)]  # from the split's own scene pool
        generated[split] = items
        paths = [f"{task}/{split}/{i:05d}.png" for i in range(n)]
        jobs += [(item.scene, image_root / rel) for item, rel in zip(items, paths)]
        for variant in SPLIT_VARIANTS[split]:
            chosen = _variant_choices(seed, task, split, variant, n)
            if split == "train":
                records = [_train_record(task, i, p, it, ins)
                           for i, (it, p, ins) in enumerate(zip(items, paths, chosen))]
            else:
                records = [_test_record(task, _question_id(split, i), p, it, ins, size)
                           for i, (it, p, ins) in enumerate(zip(items, paths, chosen))]
            _write_json(instr_root / VARIANT_DIRS[variant] / task / f"{split}.json", records)
    return generated


def _write_pretrain(n_per_task: int, image_root: Path, instr_root: Path, seed: int, size: int,
                    jobs: list[tuple]) -> int:
    """Write the pretraining records; their images are appended to ``jobs`` (written by the caller)."""
    rng = random.Random(derive_seed(seed, "Pretrain"))
    records = []
    for i in range(n_per_task * len(TASKS)):
        # Cycle through the eight scene kinds so that every kind is equally represented; scenes come
        # from the training pool only.
        item = draw(TASKS[i % len(TASKS)], rng, "pretrain", seed)
        rel = f"Pretrain/{i:05d}.png"
        jobs.append((item.scene, image_root / rel))
        records.append({"id": f"Pretrain_{i:05d}", "image": rel,
                        "conversations": [{"from": "human", "value": "<image>\n" + PRETRAIN_PROMPT},
                                          {"from": "gpt", "value": describe(item.scene)}]})
        prompt, answer = rng.choice(focused_descriptions(item.scene))
        records.append({"id": f"Pretrain_{i:05d}_focus", "image": rel,
                        "conversations": [{"from": "human", "value": "<image>\n" + prompt},
                                          {"from": "gpt", "value": answer}]})
    _write_json(instr_root / "Pretrain" / "train.json", records)
    return len(records)


#: Bumped whenever generated content changes, so that cached copies are regenerated.
VERSION = 4


def generate(root: Path | str, *, seed: int = 0, scale: float = 1.0, image_size: int = 64,
             train_per_task: int = 400, test_per_task: int = 60, val_per_task: int = 60,
             pretrain_per_task: int = 150, tasks: list[str] | None = None) -> dict:
    """Write the synthetic CoIN-shaped benchmark under ``root`` and return its manifest.

    Sizes are ``round(n * scale)`` (at least 1) for each of ``train_per_task``, ``test_per_task``,
    ``val_per_task`` and ``pretrain_per_task`` (pretraining images per scene kind). ``tasks`` restricts generation to
    a subset (CoIN order is kept); the pretraining set always covers all eight kinds. The same
    arguments give byte-identical files on the same software stack (Pillow, zlib, font file).
    Existing files are overwritten; stale files from an earlier, larger generation are left alone.
    Returns a dict with absolute ``root``, ``image_root``, ``instruction_root``, the variant folder
    names, per-task counts and the generation parameters.
    """
    if scale <= 0 or image_size < 16:
        raise ValueError("scale must be > 0 and image_size >= 16")
    chosen = TASKS if tasks is None else [t for t in TASKS if t in set(tasks)]
    unknown = set(tasks or []) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; expected names from {TASKS}")
    root = Path(root)
    image_root, instr_root = root / "images", root / "instructions"
    counts = {}
    jobs: list[tuple] = []  # (scene, image path), written after every record is drawn
    for task in chosen:
        splits = {"train": _count(train_per_task * TRAIN_WEIGHT.get(task, 1), scale),
                  "val": _count(val_per_task, scale), "test": _count(test_per_task, scale)}
        items = _write_task(task, splits, image_root, instr_root, seed, image_size, jobs)
        counts[task] = {split: len(v) for split, v in items.items()}
        if task == "TextVQA":
            _write_json(image_root / TEXTVQA_GOLDS, _textvqa_golds(items, seed))
    n_pre = _write_pretrain(_count(pretrain_per_task, scale), image_root, instr_root, seed, image_size, jobs)
    _write_images(jobs, image_size)
    font = pictures.font_path()
    manifest = {
        "benchmark": "mmcit-synthetic", "version": 1, "generator_version": VERSION, "seed": seed, "scale": scale,
        "image_size": image_size, "tasks": chosen, "counts": counts, "pretrain": n_pre,
        "image_root": "images", "instruction_root": "instructions",
        "variants": {k: VARIANT_DIRS[k] for k in ("original", "diverse", "heldout")},
        "font": Path(font).name if font else "pillow-default",
    }
    _write_json(root / "manifest.json", manifest)
    return {**manifest, "root": str(root.resolve()), "image_root": str(image_root.resolve()),
            "instruction_root": str(instr_root.resolve()),
            "pretrain_file": str((instr_root / "Pretrain" / "train.json").resolve())}
