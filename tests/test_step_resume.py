"""Step checkpoints inside a task (``train.checkpoint_every``) and resuming with fixed settings.

* A tiny 2-task adaptive_ema run (5 steps a task, a step checkpoint every 2) is SIGKILLed as soon as
  task 2's first step checkpoint is complete, then resumed with ``mmcit run --resume``: the
  accuracy matrix, the method summary and every final adapter tensor equal those of an
  uninterrupted run without step checkpoints (so checkpointing itself perturbs nothing either).
  The child is forked from this warm process, as in tests/test_faults.py (a fresh interpreter
  costs ~9 s of imports); a SIGKILL of it is just as abrupt. In the child only, writing a step
  checkpoint of task 2 is followed by a long sleep, so the kill lands mid-task every time.
* The same for lcia (a new adapter is added inside the task), interrupted in-process after a step
  checkpoint: cheaper, and it exercises the resume path through ``run(cfg, resume=True)``.
* A NaN loss stops task 2; the run is resumed with a fixed ``train.lr``: it completes, task 1's
  row is unchanged, config.yaml holds the fix and results.json records it; keys a resume may not
  change are refused.
"""
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mmcit.recipe
from mmcit.training.checkpoint import MANIFEST, STEPS, step_checkpoints
from mmcit.cli import main
from tests.forking import fork_cli, kill_once_written
from mmcit.config import ConfigError
from mmcit.io import is_temp_file
from mmcit.methods.base import METHODS, Method, MethodConfig
from mmcit.recipe import run
from mmcit.training.resume import resume_config
from mmcit.errors import NonFiniteLoss
from tests.test_integration import tiny_cfg

STEPPED = ["train.max_steps=5", "train.checkpoint_every=2"]


def _quiet(msg):
    pass


def _adapters(run_dir: Path, stage: str = "02_GQA") -> dict:
    return load_file(run_dir / "checkpoints" / stage / "adapters.safetensors")


def _assert_same_run(run_dir: Path, ref_dir: Path, ref: dict) -> None:
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["complete"] and saved["accuracy_matrix"] == ref["accuracy_matrix"]
    assert saved["method_summary"] == ref["method_summary"]
    assert [t["steps"] for t in saved["timing"]["stages"]] == [5, 5]
    assert [t["first_loss"] for t in saved["timing"]["stages"]] == [t["first_loss"] for t in ref["timing"]["stages"]]
    a, b = _adapters(ref_dir), _adapters(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not step_checkpoints(run_dir), "step checkpoints must go once their stage checkpoint is complete"
    assert not [p for p in run_dir.rglob("*") if is_temp_file(p)]


def _fork_run_sleeping_after_step_checkpoint(config: Path) -> int:
    """``mmcit run CONFIG`` in a forked child that sleeps after its first step checkpoint of task 2."""

    def setup() -> None:
        real = mmcit.recipe.save_step_checkpoint

        def save_then_sleep(run_dir, index, *args, **kwargs):
            folder = real(run_dir, index, *args, **kwargs)
            if index == 1:
                time.sleep(120)  # the parent kills us here
            return folder

        mmcit.recipe.save_step_checkpoint = save_then_sleep

    return fork_cli(["run", str(config), "--no-progress"], setup)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_inside_task_2_then_resume_from_step_checkpoint_equals_uninterrupted(tmp_path, cache_dir, capsys):
    method = "method={type: adaptive_ema}"  # its state inside a task holds tensors (the EMA)
    ref = run(tiny_cfg(tmp_path / "ref", cache_dir, method, "train.max_steps=5"), progress=False, log=_quiet)
    cfg = tiny_cfg(tmp_path, cache_dir, method, *STEPPED)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    run_dir = tmp_path / "run"
    manifest = run_dir / "checkpoints" / "02_GQA" / STEPS / "step_000002" / MANIFEST
    pid = _fork_run_sleeping_after_step_checkpoint(config)
    kill_once_written(pid, manifest)
    assert manifest.exists() and not (run_dir / "checkpoints" / "02_GQA" / MANIFEST).exists()
    assert not (run_dir / "checkpoints" / "01_TextVQA" / STEPS).exists()  # removed with task 1's checkpoint
    written = set(load_file(manifest.parent / "method_tensors.safetensors"))
    assert written, "the adaptive EMA's tensors belong in the step checkpoint"

    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resuming after stage 1/2" in out and "resuming GQA at step 2/5" in out
    _assert_same_run(run_dir, tmp_path / "ref" / "run", ref)


class _Interrupt(BaseException):
    """Stands in for a kill (BaseException: nothing in the runner may swallow it)."""


def _run_interrupted_after_step(cfg, step: int, monkeypatch) -> None:
    """Run ``cfg`` in-process and stop it right after task 2's step checkpoint at ``step``."""
    real = mmcit.recipe.save_step_checkpoint

    def save_then_stop(run_dir, index, stage, model, method, state, extra=None):
        folder = real(run_dir, index, stage, model, method, state, extra)
        if index == 1 and state.step == step:
            raise _Interrupt
        return folder

    monkeypatch.setattr(mmcit.recipe, "save_step_checkpoint", save_then_stop)
    with pytest.raises(_Interrupt):
        run(cfg, progress=False, log=_quiet)
    monkeypatch.undo()


def test_interrupted_lcia_task_resumes_from_its_latest_step_checkpoint(tmp_path, cache_dir, monkeypatch):
    method = "method={type: lcia}"  # task 2 gets a new adapter in before_stage
    ref = run(tiny_cfg(tmp_path / "ref", cache_dir, method, *STEPPED), progress=False, log=_quiet)
    cfg = tiny_cfg(tmp_path, cache_dir, method, *STEPPED)
    _run_interrupted_after_step(cfg, 4, monkeypatch)
    run_dir = tmp_path / "run"
    # Only the newest step checkpoint of the task is kept.
    assert [(i, s) for i, s, _ in step_checkpoints(run_dir)] == [(1, 4)]
    logs: list[str] = []
    run(cfg, progress=False, log=logs.append, resume=True)
    assert any("resuming GQA at step 4/5" in m for m in logs)
    _assert_same_run(run_dir, tmp_path / "ref" / "run", ref)


@dataclass
class _LRConfig(MethodConfig):
    type: str = "nan_when_lr_high"


class _NaNWhenLRHigh(Method):
    """Test-only method: task 2's loss turns NaN from its 3rd step while the run's train.lr > 1e-3.

    It reads train.lr from the run folder's config.yaml, which is what a resume with a fixed
    ``train.lr`` rewrites, so the fix is what cures it.
    """

    name = "nan_when_lr_high"
    config_cls = _LRConfig

    def before_stage(self, stage, model):
        lr = yaml.safe_load((self.ctx.run_dir / "config.yaml").read_text())["train"]["lr"]
        self.poison, self.calls = stage.index == 1 and lr > 1e-3, 0

    def extra_loss(self, model, batch, outputs):
        self.calls += 1
        return torch.tensor(float("nan")) if self.poison and self.calls > 2 else None


@pytest.fixture
def nan_method():
    with METHODS.temporarily(_NaNWhenLRHigh):
        yield


def test_resume_with_a_fixed_lr_after_a_nan_loss(tmp_path, cache_dir, capsys, nan_method):
    cfg = tiny_cfg(tmp_path, cache_dir, "method={type: nan_when_lr_high}", "train.lr=0.002", *STEPPED)
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 3"):
        run(cfg, progress=False, log=_quiet)
    run_dir = tmp_path / "run"
    first = json.loads((run_dir / "results.json").read_text())
    assert len(first["accuracy_matrix"]) == 1 and not first["complete"]
    assert [(i, s) for i, s, _ in step_checkpoints(run_dir)] == [(1, 2)]  # taken under the bad lr
    config_before = (run_dir / "config.yaml").read_text()

    # Keys that would change what task 1 computed are refused, naming the key and the allowed set.
    assert main(["run", "--resume", str(run_dir), "data.sample_factor=0.1", "train.lr=0.0002"]) == 2
    err = capsys.readouterr().err
    assert "data.sample_factor" in err and "train.*" in err and "eval.max_new_tokens" in err
    with pytest.raises(ConfigError, match="eval.scoring_mode"):
        resume_config(run_dir, ["eval.scoring_mode=reference"])
    changed_seed = resume_config(run_dir)
    changed_seed.seed = 1  # the Python API checks the cfg itself too
    with pytest.raises(ConfigError, match="cannot change seed"):
        run(changed_seed, progress=False, log=_quiet, resume=True)
    assert (run_dir / "config.yaml").read_text() == config_before

    assert main(["run", "--resume", str(run_dir), "train.lr=0.0002", "eval.batch_size=8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "discarded step checkpoint" in out and "train.lr" in out  # computed under the old lr
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["complete"] and len(saved["accuracy_matrix"]) == 2
    assert saved["accuracy_matrix"][0] == first["accuracy_matrix"][0]  # task 1's row is unchanged
    assert saved["resumed_with"] == [{"after_stages": 1, "changes": [
        {"key": "eval.batch_size", "old": 32, "new": 8}, {"key": "train.lr", "old": 0.002, "new": 0.0002}]}]
    fixed = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert fixed["train"]["lr"] == 0.0002 and fixed["eval"]["batch_size"] == 8
    assert not step_checkpoints(run_dir)


def test_corrupt_step_checkpoint_is_refused_and_an_incomplete_one_is_skipped(tmp_path, cache_dir, monkeypatch):
    cfg = tiny_cfg(tmp_path, cache_dir, *STEPPED)
    ref = run(tiny_cfg(tmp_path / "ref", cache_dir, "train.max_steps=5"), progress=False, log=_quiet)
    _run_interrupted_after_step(cfg, 2, monkeypatch)
    (_, _, folder), = step_checkpoints(tmp_path / "run")
    optimizer = folder / "optimizer.safetensors"
    good = optimizer.read_bytes()
    optimizer.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ConfigError, match="optimizer.safetensors"):  # a CheckpointError
        run(cfg, progress=False, log=_quiet, resume=True)
    optimizer.write_bytes(good)
    (folder / MANIFEST).unlink()  # as if killed while writing it: task 2 restarts from its beginning
    logs: list[str] = []
    run(cfg, progress=False, log=logs.append, resume=True)
    assert not any("resuming GQA at step" in m for m in logs)
    _assert_same_run(tmp_path / "run", tmp_path / "ref" / "run", ref)
