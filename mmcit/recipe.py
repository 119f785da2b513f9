"""The run as a recipe: stream -> model -> method hooks -> train -> evaluate -> results.

``run(cfg)`` reads top to bottom; every step is a call into the layer that owns it (data, models,
methods, training, evaluation, results). Resume policy lives in ``mmcit/training/resume.py``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch

from mmcit.config import RunConfig
from mmcit.data.preflight import preflight
from mmcit.data.stream import StreamData, load_data, require_split
from mmcit.errors import ConfigError
from mmcit.evaluation.general import evaluate_general, retention
from mmcit.evaluation.generate import evaluate_stage
from mmcit.io import clean_temp_files
from mmcit.methods.base import Method, RunContext, Stage, build_method
from mmcit.models.factory import build_model
from mmcit.models.tower_cache import TokenStore
from mmcit.models.wrapper import MMModel
from mmcit.results.costs import reset_peak_memory
from mmcit.results.record import RunRecord
from mmcit.results.report import write_run_report
from mmcit.results.tracking import Tracker, open_tracker
from mmcit.training import distributed as dist
from mmcit.training.checkpoint import remove_step_checkpoints, save_checkpoint, save_step_checkpoint
from mmcit.training.config import TrainConfig
from mmcit.training.loop import train_stage
from mmcit.training.optim import num_steps
from mmcit.training.resume import ResumePoint, prepare_run_dir, resume_inside_stage, resume_point
from mmcit.training.rng import seed_everything
from mmcit.training.sample_pass import SamplePass
from mmcit.training.state import TrainState, TrainStats

__all__ = ["run", "stage_train_config"]


def run(cfg: RunConfig, *, progress: bool = True, log: Callable[[str], None] = print, resume: bool = False) -> dict:
    """Run one experiment end to end; returns the results dict also written to results.json.

    With ``resume=True`` an interrupted run in ``cfg.output_dir`` continues after its newest complete
    checkpoint (a stage's, or a step checkpoint inside the next stage), with the same outcome as an
    uninterrupted run; ``cfg`` may differ from the folder's config.yaml in the keys a resume may
    change (``mmcit.training.resume.RESUME_OVERRIDABLE``).
    """
    started = time.perf_counter()
    reset_peak_memory()  # a worker process that ran other runs before counts this run's peak only
    joined, log, progress = _start(cfg, log, progress)
    with dist.main_first():  # rank 0 generates the data first; the others read it from the cache
        data = load_data(cfg.data, cfg.data.cache_path(), log)
    require_split(data.tasks, cfg.eval.split)  # before any model is built
    checks = preflight(data, cfg.data, cfg.eval.scoring_mode, log)  # bad images, unscorable tests: refused here
    run_dir, changes = prepare_run_dir(cfg, resume=resume)
    if resume and dist.is_main():
        for path in clean_temp_files(run_dir):  # left by a killed writer; never real files
            log(f"[{cfg.name}] removed leftover temporary file {path}")
    model = _model(cfg, data, log, progress)
    method = build_method(cfg.method)
    method.setup(model, RunContext(run_dir=run_dir, task_names=[t.name for t in data.tasks], seed=cfg.seed))
    stages = method.plan(data.tasks)
    point = resume_point(cfg, run_dir, model, method, stages, changes, log) if resume else ResumePoint()
    record = RunRecord(cfg, [t.name for t in data.tasks], stages, method, point, started, checks.record(), model)
    if changes and record.matrix and dist.is_main():  # record the change now, not only after a stage
        record.write(run_dir)
    # General-skill sets on the base model (read back when resuming), then again after the stream.
    base = evaluate_general(model, None, cfg.eval, run_dir, "base", cfg.data.cache_path()) if cfg.eval.general else {}
    tracker = open_tracker(cfg.logging, cfg.name, run_dir, asdict(cfg)) if dist.is_main() else Tracker()
    tracker.offset = sum(t["steps"] for t in record.timing)  # a resumed run continues the step axis
    for stage in stages[point.done:]:
        log(f"[{cfg.name}] stage {stage.index + 1}/{len(stages)}: {stage.name}")
        method.before_stage(stage, model)
        stats = _train(cfg, run_dir, model, method, stage, point, record, progress, log,
                       tracker.on_step if tracker.enabled else None)
        method.after_stage(stage, model)
        method.consolidate(stage, model, SamplePass(model, stage_train_config(cfg, stage)))
        row, eval_seconds = evaluate_stage(model, method, stage, record.tasks, cfg.eval, run_dir, cfg.name, progress)
        record.add(stage, row, stats, eval_seconds)
        tracker.after_stage(run_dir, stage.index, stage.name, stats.steps, record.tasks, row)
        log(f"[{cfg.name}] after {stage.name}: " + ", ".join(
            f"{t}={v:.1f}" for t, v in zip(record.tasks, row) if v is not None))
        if dist.is_main():
            record.write(run_dir)
            # After the evaluation and results.json: the checkpoint then holds the method's state
            # after evaluation (routing counts), and a complete checkpoint NN always has its row.
            save_checkpoint(run_dir, stage.index, stage.name, model, method, extra={"elapsed_seconds": record.elapsed()})
            remove_step_checkpoints(run_dir, only_index=stage.index)  # superseded by the stage checkpoint
    if cfg.eval.general:
        final = evaluate_general(model, method, cfg.eval, run_dir, "final", cfg.data.cache_path())
        record.set_general({"base": base, "final": final, "retention": retention(base, final)})
        if dist.is_main():
            record.write(run_dir)
    tracker.close()
    if dist.is_main():
        write_run_report(run_dir, record.results)
    if joined:
        dist.shutdown()  # the group this run joined; left only on success (a failed rank just exits)
    return record.results


def _start(cfg: RunConfig, log: Callable[[str], None], progress: bool) -> tuple[bool, Callable[[str], None], bool]:
    """Threads, the data-parallel group (under ``accelerate launch``) and the seed; one voice."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    joined = dist.init_from_environment() is not None
    if not dist.is_main():
        log, progress = (lambda msg: None), False  # rank 0 reports
    seed_everything(cfg.seed)
    return joined, log, progress


def _model(cfg: RunConfig, data: StreamData, log: Callable[[str], None], progress: bool) -> MMModel:
    """The run's model, built by rank 0 first (it pretrains or caches the base), sharded if asked."""
    with dist.main_first():
        model = build_model(cfg, data, cfg.data.cache_path(), log, progress)
    model.token_store = TokenStore(cfg.data.cache_path() / "tower_tokens")  # used where train.tower_token_cache
    if dist.world_size() > 1 and dist.fsdp_requested(cfg.train.fsdp):
        if getattr(cfg.model, "quantization", None):
            raise ConfigError("FSDP with model.quantization is not supported: bitsandbytes weights cannot be "
                              "sharded here; launch without --use_fsdp (plain data parallel)")
        log(f"[{cfg.name}] FSDP: frozen weights sharded in {dist.shard_frozen_weights(model)} units "
            f"over {dist.world_size()} processes")
    return model


def stage_train_config(cfg: RunConfig, stage: Stage) -> TrainConfig:
    """The training settings of one stage: its task's global batch and epochs from
    train.task_batch_size and train.task_epochs."""
    if len(stage.train) != 1:
        return cfg.train
    name = stage.train[0].name
    changes = {"batch_size": cfg.train.task_batch_size.get(name), "epochs": cfg.train.task_epochs.get(name)}
    return replace(cfg.train, **{k: v for k, v in changes.items() if v is not None})


def _train(cfg: RunConfig, run_dir: Path, model: MMModel, method: Method, stage: Stage, point: ResumePoint,
           record: RunRecord, progress: bool, log: Callable[[str], None],
           on_step: Callable[[int, float, float], None] | None = None) -> TrainStats:
    """Train the stage's samples (none: nothing to do), from its step checkpoint when resuming."""
    samples = [s for t in stage.train for s in t.train]
    if not samples:
        return TrainStats(0, 0, math.nan, math.nan, 0.0)
    train_cfg = stage_train_config(cfg, stage)
    state = resume_inside_stage(point, model, method, stage, num_steps(len(samples), train_cfg), log, cfg.name)

    def save_step(step_state: TrainState) -> None:
        if dist.is_main():
            save_step_checkpoint(run_dir, stage.index, stage.name, model, method, step_state,
                                 extra={"elapsed_seconds": record.elapsed()})

    return train_stage(model, method, samples, train_cfg, seed=cfg.seed + stage.index, desc=f"train {stage.name}",
                       progress=progress, resume=state, on_checkpoint=save_step if cfg.train.checkpoint_every else None,
                       mix=method.mixed_in(stage), on_step=on_step)
