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

from mmcit.checkpoint import (MANIFEST, METHOD_STATE, CheckpointError, checkpoint_folders, last_checkpoint,
                              read_rng, read_state, restore_adapters, restore_rng, save_checkpoint)
from mmcit.config import ConfigError, RunConfig
from mmcit.data.stream import corpus_texts, load_data
from mmcit.evaluate import evaluate_task
from mmcit.io import clean_temp_files, write_json, write_text
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
        cfg.model, lambda: corpus_texts(data.instruction_root), data.captions, data_key=data.key, seed=cfg.seed,
        cache_dir=cache_dir, progress=progress, log=log,
    )
    lora = LoraSettings(r=cfg.model.lora_r, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout,
                        target_modules=list(cfg.model.lora_targets))
    torch.manual_seed(cfg.seed)  # LoRA A matrices are random: same seed, same start
    return MMModel.from_base(base, processor, lora)


def _restore(cfg: RunConfig, run_dir: Path, model: MMModel, method, stages: list, log) -> dict | None:
    """Load the newest complete checkpoint of ``run_dir`` into ``model`` and ``method``.

    Returns ``{"done": stages completed, "matrix", "timing", "elapsed"}``, or None when the folder
    has no complete checkpoint (the run then starts from the beginning). Raises CheckpointError
    for a corrupt checkpoint or one that does not fit this run's stream.
    """
    if not any((f / MANIFEST).is_file() for _, f in checkpoint_folders(run_dir)):
        return None
    folder = last_checkpoint(run_dir)  # verified against its manifest
    state = read_state(folder)
    done = int(state.get("stage_index", int(folder.name.split("_", 1)[0]) - 1)) + 1
    if done > len(stages) or stages[done - 1].name != state.get("stage", stages[done - 1].name) \
            or folder.name != f"{done:02d}_{stages[done - 1].name}":
        raise CheckpointError(f"checkpoint {folder} does not belong to this run's stream "
                              f"({', '.join(s.name for s in stages)})")
    if isinstance(state.get("method"), dict) and set(state["method"]) == {"note"}:
        raise CheckpointError(f"checkpoint file {folder / METHOD_STATE}: {state['method']['note']}; cannot resume")
    results_path = run_dir / "results.json"
    try:
        saved = json.loads(results_path.read_text(encoding="utf-8"))
        matrix, timing = saved["accuracy_matrix"][:done], saved["timing"]["stages"][:done]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot resume from {folder}: {results_path} is unreadable ({e})") from None
    # results.json is written before the checkpoint, so it holds at least the checkpoint's rows.
    if len(matrix) < done or [t.get("stage") for t in timing] != [s.name for s in stages[:done]]:
        raise CheckpointError(f"cannot resume from {folder}: {results_path} lacks the rows of its "
                              f"{done} stage(s)")
    restore_adapters(model, folder, state)
    method.load_state_dict(state.get("method", {}))
    rng = read_rng(folder)
    if rng is not None:  # last: recreating adapters above consumed torch's generator
        restore_rng(rng)
    log(f"[{cfg.name}] resuming after stage {done}/{len(stages)} from {folder}")
    return {"done": done, "matrix": matrix, "timing": timing, "elapsed": float(state.get("elapsed_seconds", 0.0))}


def run(cfg: RunConfig, *, progress: bool = True, log=print, resume: bool = False) -> dict:
    """Run one experiment end to end; returns the results dict also written to results.json.

    With ``resume=True`` an interrupted run in ``cfg.output_dir`` continues after its newest
    complete checkpoint (weights, method state, RNG, accuracy rows and timing restored), so the
    result equals an uninterrupted run's; leftover temporary files are removed first. A folder with
    no complete checkpoint starts from the beginning.
    """
    t0 = time.perf_counter()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    data = load_data(cfg.data, cache_dir, log)  # validates every record and image first
    run_dir = prepare_run_dir(cfg)
    if resume:
        for path in clean_temp_files(run_dir):  # left by a killed writer; never real files
            log(f"[{cfg.name}] removed leftover temporary file {path}")
    model = build_model(cfg, data, cache_dir, log, progress)
    method = build_method(cfg.method)
    method.setup(model, RunContext(run_dir=run_dir, task_names=[t.name for t in data.tasks], seed=cfg.seed))

    tasks = [t.name for t in data.tasks]
    stages = method.plan(data.tasks)
    joint = bool(getattr(method, "joint", False))
    matrix: list[list[float | None]] = []
    timing: list[dict] = []
    restored = _restore(cfg, run_dir, model, method, stages, log) if resume else None
    if restored is not None:
        matrix, timing = restored["matrix"], restored["timing"]
        t0 -= restored["elapsed"]  # total_seconds counts the interrupted run's time too
    env = environment()

    def results_now() -> dict:
        return build_results(
            cfg.method.type, tasks, [s.name for s in stages[: len(matrix)]], matrix, joint,
            {"name": cfg.name, "scoring_mode": cfg.eval.scoring_mode, "complete": len(matrix) == len(stages),
             "timing": {"stages": timing, "total_seconds": time.perf_counter() - t0},
             "method_summary": method.summary(), "environment": env},
        )

    results = results_now()
    for stage in stages[len(matrix):]:
        log(f"[{cfg.name}] stage {stage.index + 1}/{len(stages)}: {stage.name}")
        method.before_task(stage, model)
        samples = [s for t in stage.train for s in t.train]
        stats = train_stage(model, method, samples, cfg.train, seed=cfg.seed + stage.index,
                            desc=f"train {stage.name}", progress=progress)
        method.after_task(stage, model)
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
        results = results_now()
        write_json(run_dir / "results.json", results)
        # The checkpoint comes after the evaluation and results.json: it then captures the method's
        # state after evaluation (LCIA's routing counts), and a complete checkpoint NN always has
        # its row in results.json, which is what a resume reads back.
        save_checkpoint(run_dir, stage.index, stage.name, model, method,
                        extra={"elapsed_seconds": time.perf_counter() - t0})
    write_run_report(run_dir, results)
    return results
