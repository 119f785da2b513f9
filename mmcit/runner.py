"""The outer loop of a continual run (DESIGN.md): stream -> model -> method hooks -> train ->
evaluate -> results. Reads top to bottom."""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import yaml

from mmcit import distributed as dist
from mmcit.backends import BuildContext, build_backend
from mmcit.checkpoint import (MANIFEST, METHOD_STATE, CheckpointError, checkpoint_folders, last_checkpoint,
                              last_step_checkpoint, read_rng, read_state, read_step_checkpoint,
                              remove_step_checkpoints, restore_adapters, restore_rng, save_checkpoint,
                              save_step_checkpoint)
from mmcit.config import ConfigError, RunConfig, TrainConfig, load_config
from mmcit.data.stream import load_data
from mmcit.evaluate import evaluate_task
from mmcit.io import clean_temp_files, write_json, write_text
from mmcit.methods import RunContext, build_method
from mmcit.model import LoraSettings, MMModel
from mmcit.pretrain import default_cache_dir
from mmcit.report import build_results, environment, write_run_report
from mmcit.train import TrainState, num_steps, train_stage

# What a resume may change (``mmcit run --resume RUN_DIR key=value``, or ``run(cfg, resume=True)``
# with such a cfg): only settings that do not alter what the completed stages computed. A key
# ending in ".*" allows every key under it. Anything else (data, model, method, seed, scoring) would
# make the kept rows and checkpoints belong to a different run.
RESUME_OVERRIDABLE = ("train.*", "eval.batch_size", "eval.max_new_tokens", "threads")
# Changes that keep a task's step checkpoints valid: they do not alter the training of the steps done.
_KEEPS_STEP_CHECKPOINTS = {"train.checkpoint_every", "eval.batch_size", "eval.max_new_tokens", "threads"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def resume_overridable(key: str) -> bool:
    """True if a resume may change config key ``key`` (dotted), per RESUME_OVERRIDABLE."""
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUME_OVERRIDABLE)


def check_resume_keys(keys: list[str]) -> None:
    """Raise ConfigError naming the first key a resume may not change, and the allowed ones."""
    for key in keys:
        if not resume_overridable(key):
            raise ConfigError(f"a resume cannot change {key}: it would alter what the finished stages "
                              f"computed; allowed: {', '.join(RESUME_OVERRIDABLE)}")


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def resume_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The config of the run in ``run_dir`` (its config.yaml), with ``key=value`` fixes applied.

    Only keys in RESUME_OVERRIDABLE may be given (ConfigError otherwise, before anything is read
    beyond config.yaml). Pass the result to ``run(cfg, resume=True)``, which rewrites config.yaml
    and records the change in results.json (``resumed_with``).
    """
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there (not a run folder written by `mmcit run`)")
    check_resume_keys([o.split("=", 1)[0] for o in overrides if "=" in o])
    cfg = load_config(saved, list(overrides))
    if Path(cfg.output_dir).resolve() != Path(run_dir).resolve():
        raise ConfigError(f"--resume {run_dir}: its config.yaml names output_dir {cfg.output_dir}; "
                          "resume from the folder the run was started in")
    return cfg


def _with_defaults(saved: dict) -> dict:
    """A saved config with the settings it predates filled in with their defaults (a key added to
    mmcit after the run started is not a change); as saved when it no longer loads."""
    from mmcit.config import from_dict

    try:
        return asdict(from_dict(RunConfig, saved))
    except ConfigError:
        return saved


def prepare_run_dir(cfg: RunConfig, resume: bool = False) -> tuple[Path, list[dict]]:
    """Create the run folder; refuse one that holds a different run.

    On a resume the saved config may differ from ``cfg`` in RESUME_OVERRIDABLE keys only; the
    folder's config.yaml is then rewritten (atomically) with ``cfg``. Returns the folder and the
    changes, ``[{"key", "old", "new"}]`` (empty when none).
    """
    run_dir = Path(cfg.output_dir)
    resolved = yaml.safe_dump(asdict(cfg), sort_keys=False)
    existing = run_dir / "config.yaml"
    changes: list[dict] = []
    if existing.exists() and existing.read_text() != resolved:
        if not resume:
            raise ConfigError(f"output_dir {run_dir} holds a different run (its config.yaml differs); choose another")
        old, new = _flatten(_with_defaults(yaml.safe_load(existing.read_text()) or {})), _flatten(asdict(cfg))
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        bad = [k for k in changed if not resume_overridable(k)]
        if bad:
            raise ConfigError(f"output_dir {run_dir} holds a different run: a resume cannot change "
                              f"{', '.join(bad)}; allowed: {', '.join(RESUME_OVERRIDABLE)}")
        changes = [{"key": k, "old": old.get(k), "new": new.get(k)} for k in changed]
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main():  # data parallel: rank 0 writes every file of the run
        write_text(existing, resolved)
    return run_dir, changes


def build_model(cfg: RunConfig, data, cache_dir: Path, log=print, progress: bool = True) -> MMModel:
    """The run's model: the backend's base (``model.type``) with the first LoRA adapter."""
    built = build_backend(cfg.model, BuildContext(data=data, cache_dir=cache_dir, seed=cfg.seed, log=log,
                                                  progress=progress))
    lora = LoraSettings(r=cfg.model.lora_r, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout,
                        target_modules=list(cfg.model.lora_targets))
    torch.manual_seed(cfg.seed)  # LoRA A matrices are random: same seed, same start
    model = MMModel.from_base(built.model, built.processor, lora, template=built.template,
                              gradient_checkpointing=getattr(cfg.model, "gradient_checkpointing", False))
    model.pad_to_square = cfg.model.image_aspect == "pad"
    return model


def stage_train_config(cfg: RunConfig, stage) -> TrainConfig:
    """The training settings of one stage: its task's global batch from train.task_batch_size."""
    if len(stage.train) == 1 and stage.train[0].name in cfg.train.task_batch_size:
        return replace(cfg.train, batch_size=cfg.train.task_batch_size[stage.train[0].name])
    return cfg.train


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


def _resume_history(run_dir: Path) -> list[dict]:
    """The ``resumed_with`` record of earlier resumes, from results.json (empty if none)."""
    try:
        saved = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    history = saved.get("resumed_with", []) if isinstance(saved, dict) else []
    return list(history) if isinstance(history, list) else []


def _find_step_checkpoint(cfg: RunConfig, run_dir: Path, stages: list, done: int, changes: list[dict],
                          log) -> tuple[Path, dict, TrainState] | None:
    """The newest complete step checkpoint of stage ``done`` (the first one not finished), read.

    Step checkpoints of other stages are stale (a finished stage whose cleanup was interrupted) and
    are deleted; so are all of them when the resume changed a training setting.
    """
    retrain = [c["key"] for c in changes if c["key"] not in _KEEPS_STEP_CHECKPOINTS]
    for i in range(len(stages) + 1) if dist.is_main() else ():  # one process deletes; the others wait
        if retrain or i != done:
            for folder in remove_step_checkpoints(run_dir, only_index=i):
                if i == done:
                    log(f"[{cfg.name}] discarded step checkpoint {folder}: {', '.join(retrain)} changed")
    dist.barrier()
    if done >= len(stages):
        return None
    folder = last_step_checkpoint(run_dir, done)  # verified against its manifest
    if folder is None:
        return None
    state, train = read_step_checkpoint(folder)
    if state.get("stage") != stages[done].name or int(state.get("stage_index", -1)) != done:
        raise CheckpointError(f"step checkpoint {folder} does not belong to this run's stream "
                              f"({', '.join(s.name for s in stages)})")
    if isinstance(state.get("method"), dict) and set(state["method"]) == {"note"}:
        log(f"[{cfg.name}] not resuming from step checkpoint {folder}: {state['method']['note']}; "
            f"{stages[done].name} restarts from its beginning")
        return None
    return folder, state, train


def run(cfg: RunConfig, *, progress: bool = True, log=print, resume: bool = False) -> dict:
    """Run one experiment end to end; returns the results dict also written to results.json.

    With ``resume=True`` an interrupted run in ``cfg.output_dir`` continues after its newest
    complete checkpoint (weights, method state, RNG, accuracy rows and timing restored), so the
    result equals an uninterrupted run's; leftover temporary files are removed first. A folder with
    no complete checkpoint starts from the beginning. When the next stage has a complete step
    checkpoint (``train.checkpoint_every``), training continues from it, mid-task, with the same
    outcome as an uninterrupted run.

    A resume's ``cfg`` may differ from the folder's config.yaml in RESUME_OVERRIDABLE keys (e.g. a
    smaller ``train.lr`` after a NaN loss stopped a task; see :func:`resume_config`): config.yaml
    is rewritten, the change is recorded in results.json under ``resumed_with``, and a changed
    training setting discards the interrupted task's step checkpoints (they were computed under the
    old setting), so that task restarts from the last stage checkpoint.
    """
    started = t0 = time.perf_counter()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    joined = dist.init_from_environment()  # under `accelerate launch`: join the data-parallel group
    main = dist.is_main()
    if not main:
        log, progress = (lambda msg: None), False  # one voice: rank 0 reports
    seed_everything(cfg.seed)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    # Rank 0 first: it generates the data and pretrains (or loads) the cached base; the others
    # then read them from the cache instead of redoing the work.
    with dist.main_first():
        data = load_data(cfg.data, cache_dir, log)  # validates every record and image first
    run_dir, changes = prepare_run_dir(cfg, resume=resume)
    if resume and main:
        for path in clean_temp_files(run_dir):  # left by a killed writer; never real files
            log(f"[{cfg.name}] removed leftover temporary file {path}")
    with dist.main_first():
        model = build_model(cfg, data, cache_dir, log, progress)
    if dist.world_size() > 1 and dist.fsdp_requested(cfg.train.fsdp):
        if getattr(cfg.model, "quantization", None):
            raise ConfigError("FSDP with model.quantization is not supported: bitsandbytes weights cannot be "
                              "sharded here; launch without --use_fsdp (plain data parallel)")
        log(f"[{cfg.name}] FSDP: frozen weights sharded in {dist.shard_frozen_weights(model)} units "
            f"over {dist.world_size()} processes")
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
        t0 = started - restored["elapsed"]  # total_seconds counts the interrupted run's time too
    history = _resume_history(run_dir) if resume else []
    if changes:
        history.append({"after_stages": len(matrix), "changes": changes})
        log(f"[{cfg.name}] resuming with changed settings: " + ", ".join(
            f"{c['key']}: {c['old']!r} -> {c['new']!r}" for c in changes))
    step_resume = None
    if resume:
        step_resume = _find_step_checkpoint(cfg, run_dir, stages, len(matrix), changes, log)
        if step_resume is not None:
            t0 = started - float(step_resume[1].get("elapsed_seconds", 0.0))  # newer than the stage's
    env = environment()

    def results_now() -> dict:
        return build_results(
            cfg.method.type, tasks, [s.name for s in stages[: len(matrix)]], matrix, joint,
            {"name": cfg.name, "scoring_mode": cfg.eval.scoring_mode, "complete": len(matrix) == len(stages),
             "timing": {"stages": timing, "total_seconds": time.perf_counter() - t0},
             "method_summary": method.summary(), "environment": env,
             **({"resumed_with": history} if history else {})},
        )

    results = results_now()
    if changes and matrix and main:  # record the change now, not only once the next stage is done
        write_json(run_dir / "results.json", results)
    for stage in stages[len(matrix):]:
        log(f"[{cfg.name}] stage {stage.index + 1}/{len(stages)}: {stage.name}")
        method.before_task(stage, model)
        samples = [s for t in stage.train for s in t.train]
        train_cfg = stage_train_config(cfg, stage)
        train_resume: TrainState | None = None
        if step_resume is not None:  # only ever for the first stage run here
            folder, state, train_resume = step_resume
            step_resume = None
            if train_resume.total != num_steps(len(samples), train_cfg):
                raise CheckpointError(f"step checkpoint {folder} was taken in a stage of {train_resume.total} "
                                      f"steps; this run's {stage.name} has {num_steps(len(samples), train_cfg)}")
            # After before_task, so what it set up (a new adapter, a fresh EMA) is overwritten with
            # the state of the checkpoint's moment; the RNG is restored by train_stage, last.
            restore_adapters(model, folder, state)
            method.load_state_dict(state.get("method", {}))
            log(f"[{cfg.name}] resuming {stage.name} at step {train_resume.step}/{train_resume.total} "
                f"from {folder}")

        def save_step(state: TrainState, stage=stage) -> None:
            if main:
                save_step_checkpoint(run_dir, stage.index, stage.name, model, method, state,
                                     extra={"elapsed_seconds": time.perf_counter() - t0})

        stats = train_stage(model, method, samples, train_cfg, seed=cfg.seed + stage.index,
                            desc=f"train {stage.name}", progress=progress, resume=train_resume,
                            on_checkpoint=save_step if cfg.train.checkpoint_every else None)
        method.after_task(stage, model)
        row: list[float | None] = [None] * len(tasks)
        eval_seconds = 0.0
        with dist.gathered(model):  # FSDP: whole weights while generating, sharded again after
            for task in stage.evaluate:
                res = evaluate_task(
                    model, method, task, batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                    scoring_mode=cfg.eval.scoring_mode, model_id=cfg.name, progress=progress,
                    answers_file=(run_dir / "answers" / f"{stage.index + 1:02d}_{stage.name}" / f"{task.name}.jsonl"
                                  if main else None),
                )
                row[tasks.index(task.name)] = round(res.accuracy, 4)
                eval_seconds += res.seconds
        matrix.append(row if joint else row[: stage.index + 1])
        timing.append({"stage": stage.name, "train_seconds": stats.seconds, "steps": stats.steps,
                       "first_loss": stats.first_loss, "last_loss": stats.last_loss, "eval_seconds": eval_seconds})
        log(f"[{cfg.name}] after {stage.name}: " + ", ".join(
            f"{t}={v:.1f}" for t, v in zip(tasks, row) if v is not None))
        results = results_now()
        if main:
            write_json(run_dir / "results.json", results)
            # The checkpoint comes after the evaluation and results.json: it then captures the
            # method's state after evaluation (LCIA's routing counts), and a complete checkpoint NN
            # always has its row in results.json, which is what a resume reads back.
            save_checkpoint(run_dir, stage.index, stage.name, model, method,
                            extra={"elapsed_seconds": time.perf_counter() - t0})
            remove_step_checkpoints(run_dir, only_index=stage.index)  # superseded by the stage checkpoint
    if main:
        write_run_report(run_dir, results)
    if joined:
        dist.shutdown()  # the group this run joined; left only on success (a failed rank just exits)
    return results
