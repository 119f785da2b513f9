"""General-skill retention: the general-skill sets of ``eval.general`` scored on the base model (before
the first stage) and after the last stage, and how much of the base's score the stream kept.

Answers go to ``<run>/general/<base|final>/<set>.jsonl`` and scores to ``<run>/general/<base|final>.json``;
a resumed run reads the base's scores back instead of recomputing them. The base is answered with the
model as built (its first adapter's LoRA B matrices are zero); after the stream each question is
routed as the method routes task questions (``select_adapter``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from mmcit.data.sample import Sample
from mmcit.evaluation.config import EvalConfig, GeneralSetConfig
from mmcit.evaluation.general_scores import score_mme, score_mmbench, score_pope, score_seed
from mmcit.evaluation.general_sets import read_mmbench, read_mme, read_pope, read_seed
from mmcit.evaluation.generate import answer_records, generate_answers
from mmcit.io import write_json, write_jsonl
from mmcit.methods.base import Method
from mmcit.models.wrapper import MMModel
from mmcit.training import distributed as dist

#: The headline numbers of each set (what the retention table compares).
HEADLINE: dict[str, tuple[str, ...]] = {"mme": ("perception", "cognition"), "pope": ("f1", "accuracy"),
                                        "seed": ("image_accuracy",), "mmbench": ("circular_accuracy",)}


def load_general_set(cfg: GeneralSetConfig, cache_dir: Path) -> tuple[list[Sample], Callable[[list[str]], dict]]:
    """A set's samples and the function that scores answers to them."""
    q, images, anno = Path(cfg.questions), Path(cfg.images or "."), Path(cfg.anno or ".")
    if cfg.set == "mme":
        samples = read_mme(q, images, cfg.limit)
        return samples, lambda preds: score_mme(preds, samples)
    if cfg.set == "pope":
        samples = read_pope(q, images, anno, cfg.limit)
        return samples, lambda preds: score_pope(preds, samples)
    if cfg.set == "seed":
        samples, totals = read_seed(q, images, anno, cfg.limit)
        return samples, lambda preds: score_seed(preds, samples, totals)
    samples = read_mmbench(q, cache_dir, cfg.limit)
    return samples, lambda preds: score_mmbench(preds, samples)


def evaluate_general(model: MMModel, method: Method | None, cfg: EvalConfig, run_dir: Path, label: str,
                     cache_dir: Path, progress: bool = False) -> dict:
    """Score every set of ``cfg.general`` now (``label``: base or final); ``method`` None answers with
    the active adapter. A base score already on disk (a resumed run) is read back."""
    folder = Path(run_dir) / "general"
    saved = folder / f"{label}.json"
    if label == "base" and saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))
    results = {}
    for set_cfg in cfg.general:
        name = set_cfg.name or set_cfg.set
        samples, score = load_general_set(set_cfg, cache_dir)
        adapters = method.select_adapter(samples) if method is not None else [None] * len(samples)
        predictions = dist.gather_shards(generate_answers(
            model, dist.shard(samples), dist.shard(adapters), cfg.batch_size, cfg.max_new_tokens, progress,
            desc=f"{label} {name}", options=cfg), len(samples))
        results[name] = {"set": set_cfg.set, "questions": len(samples), **score(predictions)}
        if dist.is_main():
            write_jsonl(folder / label / f"{name}.jsonl", answer_records(samples, predictions, label))
    if dist.is_main():
        write_json(saved, results)
    return results


def retention(base: dict, final: dict) -> dict:
    """Per set and headline number: base, final, change (final - base) and % of the base retained."""
    out: dict = {}
    for name, b in base.items():
        f = final.get(name)
        if f is None:
            continue
        out[name] = {}
        for metric in HEADLINE.get(b.get("set", name), ()):
            bv, fv = b[metric], f[metric]
            out[name][metric] = {"base": bv, "final": fv, "change": fv - bv,
                                 "retained": 100 * fv / bv if bv else None}
    return out

