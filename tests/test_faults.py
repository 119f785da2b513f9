"""Fault injection: runs SIGKILLed at random moments never leave a broken run folder.

Every run is its own process running the CLI (``mmcit run CONFIG`` first, then ``mmcit run --resume
RUN_DIR``) and is SIGKILLed at a moment drawn from a seeded RNG. The processes are forked from this
(already warm) test process and call ``mmcit.cli.main`` directly rather than being started as
``python -m mmcit.cli``: importing torch + transformers costs about 9 s per process on the 2-core
CI machine against ~2 s of actual work, which would push 20+ kills far past the time budget. A
SIGKILL of a forked child is exactly as abrupt as of a fresh interpreter (no handlers, no atexit,
no flushing). The last resume of one folder does go through a real ``python -m mmcit.cli``.

After every kill each visible file of the run folder must load (JSON parses, JSONL lines parse,
safetensors load, PNG has its header, YAML parses), only ``atomic_path`` temporaries
(``.<name>.*.tmp``) may be unreadable, every checkpoint with a manifest must verify, and no file
that was visible before may disappear. Finally the resumed run must equal an uninterrupted one.
"""
import json
import os
import random
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

from mmcit.training.checkpoint import MANIFEST, checkpoint_folders, verify_checkpoint, visible_files
from mmcit.io import is_temp_file
from mmcit.recipe import run
from tests.forking import fork_cli
from tests.test_integration import tiny_cfg

REPO = Path(__file__).resolve().parent.parent
THREE = "data.tasks=[TextVQA, GQA, VizWiz]"
# One run folder per entry. The default suite kills one folder twice (LCIA: the EMA's state,
# the codebook and several adapters; every method's own kill-and-resume runs in test_methods.py);
# the slow variant the four of the original fault campaign and the per-task-adapter methods
# (eproj, disco, hide_llava).
QUICK = (["lcia"], 1)  # one random kill by default; test_step_resume kills inside a task deterministically
FULL = (["lora_ft", "lcia", "adaptive_ema", "lcia", "eproj", "disco", "hide_llava"], 6)
SEED = 20250607  # the kill moments are reproducible


def _kill_at(pid: int, delay: float) -> bool:
    """SIGKILL ``pid`` after ``delay`` s unless it exits first; True if it was killed."""
    end = time.monotonic() + delay
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "a run failed instead of being killed"
            return False
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, -signal.SIGKILL), code
    return code == -signal.SIGKILL


def _check_file(path: Path) -> None:
    """Raise if a visible file of a run folder does not load as what its name says."""
    suffix = path.suffix
    if suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".jsonl":
        for line in path.read_text(encoding="utf-8").splitlines():
            json.loads(line)
    elif suffix == ".safetensors":
        load_file(str(path))
    elif suffix == ".png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    elif suffix == ".yaml":
        yaml.safe_load(path.read_text(encoding="utf-8"))
    else:
        path.read_text(encoding="utf-8")


def _check_folder(run_dir: Path, before: set[Path], counts: dict) -> set[Path]:
    """Check every visible file after a kill; returns the visible set for the next check."""
    files = set(visible_files(run_dir))
    for path in files:
        counts["files_checked"] += 1
        try:
            _check_file(path)
        except Exception as e:  # noqa: BLE001 - counted and reported below
            counts["broken"].append(f"{path}: {e}")
    counts["lost"] += [str(p) for p in before - files]
    counts["temp_seen"] += sum(1 for p in run_dir.rglob("*") if is_temp_file(p))
    for _, folder in checkpoint_folders(run_dir):
        if (folder / MANIFEST).is_file():
            verify_checkpoint(folder)
            counts["checkpoints_verified"] += 1
    return files


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("methods, kills_per_run", [QUICK, pytest.param(*FULL, marks=pytest.mark.slow)],
                         ids=["quick", "full"])
def test_random_sigkills_never_break_the_run_folder(tmp_path, cache_dir, methods, kills_per_run):
    references, duration = {}, 0.0
    for method in sorted(set(methods)):  # uninterrupted runs; also warms every import
        start = time.perf_counter()
        references[method] = run(tiny_cfg(tmp_path / f"ref_{method}", cache_dir, THREE, f"method={{type: {method}}}"),
                                 progress=False, log=lambda m: None)["accuracy_matrix"]
        duration = time.perf_counter() - start
    rng = random.Random(SEED)
    counts = {"kills": 0, "runs_finished_before_kill": 0, "files_checked": 0, "broken": [], "lost": [],
              "temp_seen": 0, "checkpoints_verified": 0}
    folders = []
    for n, method in enumerate(methods):
        cfg = tiny_cfg(tmp_path / f"f{n}", cache_dir, THREE, f"method={{type: {method}}}")
        config = tmp_path / f"f{n}.yaml"
        config.write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
        run_dir = Path(cfg.output_dir)
        folders.append((method, run_dir))
        visible: set[Path] = set()
        argv = ["run", str(config), "--no-progress"]
        kills = 0
        while kills < kills_per_run:
            pid = fork_cli(argv)
            if _kill_at(pid, rng.uniform(0.0, 1.1 * duration)):
                kills += 1
                counts["kills"] += 1
            else:
                counts["runs_finished_before_kill"] += 1
            visible = _check_folder(run_dir, visible, counts)
            if (run_dir / "config.yaml").exists():
                argv = ["run", "--resume", str(run_dir), "--no-progress"]
        # Finish: the last folder through a real interpreter, the others forked.
        if n == len(methods) - 1:
            proc = subprocess.run([sys.executable, "-m", "mmcit.cli", *argv], cwd=REPO, capture_output=True,
                                  text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
            assert proc.returncode == 0, proc.stderr[-2000:]
        else:
            pid = fork_cli(argv)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    for method, run_dir in folders:
        saved = json.loads((run_dir / "results.json").read_text())
        assert saved["complete"] and saved["accuracy_matrix"] == references[method], run_dir
        # ... and the weights: every adapter tensor of the final checkpoint equals the reference's.
        final = load_file(run_dir / "checkpoints" / "03_VizWiz" / "adapters.safetensors")
        ref = load_file(tmp_path / f"ref_{method}" / "run" / "checkpoints" / "03_VizWiz" / "adapters.safetensors")
        assert final.keys() == ref.keys() and all(torch.equal(final[k], ref[k]) for k in ref), run_dir
        assert not [p for p in run_dir.rglob("*") if is_temp_file(p)], "resume left temporary files"
        _check_folder(run_dir, set(), counts)
    print(f"\nfault injection: {counts['kills']} kills ({counts['runs_finished_before_kill']} runs finished "
          f"first), {counts['files_checked']} files checked, {len(counts['broken'])} broken, "
          f"{len(counts['lost'])} lost, {counts['temp_seen']} temporary files seen after kills, "
          f"{counts['checkpoints_verified']} checkpoint verifications")
    assert counts["checkpoints_verified"] > 0  # kills landed while checkpoints existed, and they verified
    assert not counts["broken"], counts["broken"][:5]
    assert not counts["lost"], counts["lost"][:5]
