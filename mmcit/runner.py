"""The outer loop of a continual run (DESIGN.md): stream -> model -> method hooks -> train ->
evaluate -> results. Reads top to bottom."""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from mmcit.config import ConfigError, RunConfig
from mmcit.data.stream import corpus_texts, load_data
from mmcit.evaluate import evaluate_task
from mmcit.io import save_safetensors, write_json, write_text
from mmcit.methods import RunContext, build_method
from mmcit.model import LoraSettings, MMModel
from mmcit.pretrain import default_cache_dir, load_or_pretrain
from mmcit.report import build_results, environment, write_run_report
from mmcit.train import train_stage


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Create the run folder; refuse one that holds a different run."""
    run_dir = Path(cfg.output_dir)
    resolved = yaml.safe_dump(asdict(cfg), sort_keys=False)
    existing = run_dir / "config.yaml"
    if existing.exists() and existing.read_text() != resolved:
        raise ConfigError(f"output_dir {run_dir} holds a different run (its config.yaml differs); choose another")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(existing, resolved)
    return run_dir


def build_model(cfg: RunConfig, data, cache_dir: Path, log=print, progress: bool = True) -> MMModel:
    base, processor = load_or_pretrain(
        cfg.model, corpus_texts(data.instruction_root), data.captions, data_key=data.key, seed=cfg.seed,
        cache_dir=cache_dir, progress=progress, log=log,
    )
    lora = LoraSettings(r=cfg.model.lora_r, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout,
                        target_modules=list(cfg.model.lora_targets))
    torch.manual_seed(cfg.seed)  # LoRA A matrices are random: same seed, same start
    return MMModel.from_base(base, processor, lora)


def save_checkpoint(run_dir: Path, index: int, stage: str, model: MMModel, method) -> Path:
    """The trainable weights of every adapter after a stage, as safetensors, plus method state."""
    folder = run_dir / "checkpoints" / f"{index + 1:02d}_{stage}"
    tensors = {}
    for name in model.adapters:
        tensors.update(model.adapter_state(name))
    save_safetensors(folder / "adapters.safetensors", tensors, metadata={"stage": stage})
    write_json(folder / "method_state.json", {"adapters": model.adapters, "active": model.active_adapter,
                                              "method": _jsonable(method.state_dict())})
    return folder


def _jsonable(obj):
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return {"note": "method state is not JSON-serialisable"}


def run(cfg: RunConfig, *, progress: bool = True, log=print) -> dict:
    """Run one experiment end to end; returns the results dict also written to results.json."""
    t0 = time.perf_counter()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    data = load_data(cfg.data, cache_dir, log)  # validates every record and image first
    run_dir = prepare_run_dir(cfg)
    model = build_model(cfg, data, cache_dir, log, progress)
    method = build_method(cfg.method)
    method.setup(model, RunContext(run_dir=run_dir, task_names=[t.name for t in data.tasks], seed=cfg.seed))

    tasks = [t.name for t in data.tasks]
    stages = method.plan(data.tasks)
    joint = bool(getattr(method, "joint", False))
    matrix: list[list[float | None]] = []
    timing: list[dict] = []
    env = environment()
    for stage in stages:
        log(f"[{cfg.name}] stage {stage.index + 1}/{len(stages)}: {stage.name}")
        method.before_task(stage, model)
        samples = [s for t in stage.train for s in t.train]
        stats = train_stage(model, method, samples, cfg.train, seed=cfg.seed + stage.index,
                            desc=f"train {stage.name}", progress=progress)
        method.after_task(stage, model)
        save_checkpoint(run_dir, stage.index, stage.name, model, method)
        row: list[float | None] = [None] * len(tasks)
        eval_seconds = 0.0
        for task in stage.evaluate:
            res = evaluate_task(
                model, method, task, batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                scoring_mode=cfg.eval.scoring_mode, model_id=cfg.name, progress=progress,
                answers_file=run_dir / "answers" / f"{stage.index + 1:02d}_{stage.name}" / f"{task.name}.jsonl",
            )
            row[tasks.index(task.name)] = round(res.accuracy, 4)
            eval_seconds += res.seconds
        matrix.append(row if joint else row[: stage.index + 1])
        timing.append({"stage": stage.name, "train_seconds": stats.seconds, "steps": stats.steps,
                       "first_loss": stats.first_loss, "last_loss": stats.last_loss, "eval_seconds": eval_seconds})
        log(f"[{cfg.name}] after {stage.name}: " + ", ".join(
            f"{t}={v:.1f}" for t, v in zip(tasks, row) if v is not None))
        results = build_results(
            cfg.method.type, tasks, [s.name for s in stages[: len(matrix)]], matrix, joint,
            {"name": cfg.name, "scoring_mode": cfg.eval.scoring_mode, "complete": len(matrix) == len(stages),
             "timing": {"stages": timing, "total_seconds": time.perf_counter() - t0},
             "method_summary": method.summary(), "environment": env},
        )
        write_json(run_dir / "results.json", results)
    write_run_report(run_dir, results)
    return results
