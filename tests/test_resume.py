"""Resuming an interrupted run (``run(cfg, resume=True)``, ``mmcit run --resume RUN_DIR``).

A tiny 3-task stream is run uninterrupted; the same config is run in a real ``python -m mmcit.cli``
subprocess that is SIGKILLed as soon as task 1's checkpoint is complete (its manifest appears),
then resumed: the accuracy matrix and every final adapter tensor must be identical.
"""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmcit.training.checkpoint import MANIFEST, CheckpointError, last_checkpoint
from mmcit.cli import main
from mmcit.io import is_temp_file
from mmcit.recipe import run
from tests.test_integration import tiny_cfg

REPO = Path(__file__).resolve().parent.parent
THREE = ["data.tasks=[TextVQA, GQA, VizWiz]", "method={type: lcia}"]  # lcia: adapters added, method state


def write_config(tmp_path: Path, cache_dir: Path, *extra: str) -> tuple[Path, object]:
    """The tiny config as a YAML file for the CLI (its run folder is ``tmp_path/run``)."""
    cfg = tiny_cfg(tmp_path, cache_dir, *extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    return path, cfg


def _quiet(msg):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """The uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    res = run(tiny_cfg(tmp, cache_dir, *THREE), progress=False, log=_quiet)
    return tmp / "run", res


def _final_adapters(run_dir: Path) -> dict:
    return load_file(run_dir / "checkpoints" / "03_VizWiz" / "adapters.safetensors")


@pytest.mark.slow  # 30 s; the default suite kills and resumes runs in test_faults, test_step_resume, test_methods
def test_sigkill_after_stage_1_then_resume_equals_uninterrupted(tmp_path, cache_dir, reference):
    ref_dir, ref = reference
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMCIT_CACHE": str(cache_dir)}
    config, cfg = write_config(tmp_path, cache_dir, *THREE)
    proc = subprocess.Popen([sys.executable, "-m", "mmcit.cli", "run", str(config), "--no-progress"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = run_dir / "checkpoints" / "01_TextVQA" / MANIFEST
    deadline = time.monotonic() + 120
    while not manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert manifest.exists()
    assert not (run_dir / "checkpoints" / "03_VizWiz" / MANIFEST).exists()

    logs: list[str] = []
    res = run(cfg, progress=False, log=logs.append, resume=True)
    assert any("resuming after stage" in m for m in logs)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["accuracy_matrix"] == ref["accuracy_matrix"] == res["accuracy_matrix"]
    assert saved["complete"] and saved["method_summary"] == ref["method_summary"]
    a, b = _final_adapters(ref_dir), _final_adapters(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [p for p in run_dir.rglob("*") if is_temp_file(p)]


def _copy_run(src: Path, dst: Path, cache_dir: Path):
    """A copy of a finished reference run whose config points at the copy."""
    import shutil

    shutil.copytree(src, dst)
    cfg = tiny_cfg(dst.parent, cache_dir, *THREE)
    (dst / "config.yaml").unlink()  # rewritten by the run for the new output_dir
    return cfg


def test_resume_skips_a_checkpoint_without_manifest_and_cleans_temp_files(tmp_path, cache_dir, reference):
    ref_dir, ref = reference
    cfg = _copy_run(ref_dir, tmp_path / "run", cache_dir)
    d = tmp_path / "run"
    (d / "checkpoints" / "03_VizWiz" / MANIFEST).unlink()  # an interrupted last checkpoint
    (d / "checkpoints" / "02_GQA" / MANIFEST).unlink()
    leftover = d / "checkpoints" / "03_VizWiz" / ".adapters.safetensors.abc123.tmp"
    leftover.write_bytes(b"half")
    assert last_checkpoint(d).name == "01_TextVQA"
    logs: list[str] = []
    res = run(cfg, progress=False, log=logs.append, resume=True)
    assert any("resuming after stage 1/3" in m for m in logs)
    assert not leftover.exists()
    assert res["accuracy_matrix"] == ref["accuracy_matrix"]
    a, b = _final_adapters(ref_dir), _final_adapters(d)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_corrupt_checkpoint_naming_the_file(tmp_path, cache_dir, reference, capsys):
    ref_dir, _ = reference
    cfg = _copy_run(ref_dir, tmp_path / "run", cache_dir)
    target = tmp_path / "run" / "checkpoints" / "03_VizWiz" / "adapters.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"03_VizWiz/adapters\.safetensors"):
        run(cfg, progress=False, log=_quiet, resume=True)
    # The CLI form reports it as a one-line error with exit code 2 (config.yaml was rewritten above).
    assert main(["run", "--resume", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "adapters.safetensors" in err and "corrupt" in err
    # predict refuses it too
    from mmcit.evaluation.predict import load_predictor as load_run

    with pytest.raises(CheckpointError, match="adapters.safetensors"):
        load_run(tmp_path / "run", log=_quiet)


def test_resume_of_a_finished_run_changes_nothing(tmp_path, cache_dir, reference):
    ref_dir, ref = reference
    cfg = _copy_run(ref_dir, tmp_path / "run", cache_dir)
    res = run(cfg, progress=False, log=_quiet, resume=True)
    assert res["accuracy_matrix"] == ref["accuracy_matrix"] and res["complete"]


def test_cli_resume_argument_errors(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path), "configs/demo/lora_ft.yaml"]) == 2
    assert "give no CONFIG" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "needs a CONFIG" in capsys.readouterr().err


def test_a_setting_added_after_the_run_started_is_not_a_change(tmp_path):
    """A run folder written before mmcit gained a config key resumes (the key takes its default)."""
    import yaml

    from mmcit.config import load_config
    from mmcit.training.resume import prepare_run_dir

    cfg = load_config(None, [f"output_dir={tmp_path / 'run'}"])
    prepare_run_dir(cfg)
    saved = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["model"]["image_aspect"], old["train"]["fsdp"]  # as an older mmcit wrote it
    saved.write_text(yaml.safe_dump(old, sort_keys=False))
    _, changes = prepare_run_dir(cfg, resume=True)
    assert changes == []
    assert yaml.safe_load(saved.read_text())["model"]["image_aspect"] == "crop"  # rewritten in full
