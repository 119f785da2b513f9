"""Resuming a run: what a resume may change, the run folder's config, and where to continue.

A run folder's ``config.yaml`` defines the run. A resume may change only settings that do not alter
what the completed stages computed (``RESUME_OVERRIDABLE``); the change is recorded in results.json
(``resumed_with``). It continues after the newest complete stage checkpoint (weights, method state,
RNG, accuracy rows and timing restored) and, where the next stage has a complete step checkpoint
(``train.checkpoint_every``), from inside that stage.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from mmcit.config import RunConfig, from_dict, load_config
from mmcit.errors import CheckpointError, ConfigError
from mmcit.io import write_text
from mmcit.training import distributed as dist
from mmcit.training.checkpoint import (MANIFEST, METHOD_STATE, checkpoint_folders, last_checkpoint,
                                       last_step_checkpoint, read_rng, read_state, read_step_checkpoint,
                                       remove_step_checkpoints, restore_adapters)
from mmcit.training.rng import restore_rng
from mmcit.training.state import TrainState

if TYPE_CHECKING:
    from mmcit.methods.base import Method, Stage
    from mmcit.models.wrapper import MMModel

# What a resume may change (``mmcit run --resume RUN_DIR key=value``, or ``run(cfg, resume=True)``
# with such a cfg): only settings that do not alter what the completed stages computed. A key
# ending in ".*" allows every key under it. Anything else (data, model, method, seed, scoring) would
# make the kept rows and checkpoints belong to a different run.
RESUME_OVERRIDABLE = ("train.*", "eval.batch_size", "eval.max_new_tokens", "threads", "logging.*")
# Changes that keep a task's step checkpoints valid: they do not alter the training of the steps done.
_KEEPS_STEP_CHECKPOINTS = {"train.checkpoint_every", "train.tower_token_cache", "eval.batch_size",
                           "eval.max_new_tokens", "threads", "logging.tracker", "logging.dir", "logging.project"}


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


@dataclass
class ResumePoint:
    """Where a resumed run continues: the rows and timing of its finished stages, the seconds they
    took, the ``resumed_with`` history, and the step checkpoint of the next stage if it has one."""

    matrix: list[list[float | None]] = field(default_factory=list)
    timing: list[dict] = field(default_factory=list)
    elapsed: float = 0.0
    history: list[dict] = field(default_factory=list)
    step: tuple[Path, dict, TrainState] | None = None

    @property
    def done(self) -> int:
        """Stages completed."""
        return len(self.matrix)


def resume_point(cfg: RunConfig, run_dir: Path, model: "MMModel", method: "Method", stages: list["Stage"],
                 changes: list[dict], log: Callable[[str], None]) -> ResumePoint:
    """Load the run folder's newest complete checkpoint into ``model`` and ``method`` and find the
    step checkpoint to continue from; records ``changes`` in the history."""
    point = ResumePoint(history=_resume_history(run_dir))
    restored = _restore(cfg, run_dir, model, method, stages, log)
    if restored is not None:
        point.matrix, point.timing, point.elapsed = restored["matrix"], restored["timing"], restored["elapsed"]
    if changes:
        point.history.append({"after_stages": point.done, "changes": changes})
        log(f"[{cfg.name}] resuming with changed settings: " + ", ".join(
            f"{c['key']}: {c['old']!r} -> {c['new']!r}" for c in changes))
    point.step = _find_step_checkpoint(cfg, run_dir, stages, point.done, changes, log)
    if point.step is not None:
        point.elapsed = float(point.step[1].get("elapsed_seconds", 0.0))  # newer than the stage's
    return point


def resume_inside_stage(point: ResumePoint, model: "MMModel", method: "Method", stage: "Stage", total: int,
                        log: Callable[[str], None], name: str) -> TrainState | None:
    """The TrainState to continue ``stage`` from, with the weights and method state of its step
    checkpoint loaded (after ``before_stage``, so what it set up is overwritten with the state of
    the checkpoint's moment); None when the stage starts from its beginning. Used once."""
    if point.step is None:
        return None
    folder, state, train = point.step
    point.step = None
    if train.total != total:
        raise CheckpointError(f"step checkpoint {folder} was taken in a stage of {train.total} steps; "
                              f"this run's {stage.name} has {total}")
    restore_adapters(model, folder, state)
    method.load_state_dict(state.get("method", {}))
    log(f"[{name}] resuming {stage.name} at step {train.step}/{train.total} from {folder}")
    return train


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


