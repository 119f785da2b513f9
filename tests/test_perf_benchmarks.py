"""The performance benchmarks and the GPU check run end to end at toy sizes on a CPU (minutes: slow)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow
def test_gpu_check_runs_at_toy_size():
    out = run("benchmarks/gpu_check.py", "--toy")
    for line in ("training step options", "packing + loss=fused", "AdaptiveEMA.update() [torch]: back to back",
                 "timed alone", "reloaded identical", "plain batched loop (batch 4)", "reference batch-1 loop",
                 "mmcit merge + image_cache", "evaluation with a static KV cache", "mmcit static_cache"):
        assert line in out, line


@pytest.mark.slow
def test_cpu_benchmarks_run_quickly():
    out = run("benchmarks/bench_eval.py", "--quick")
    assert "mmcit default, first evaluation" in out and "vs plain" in out
    out = run("benchmarks/bench_train_step.py", "--quick")
    assert "packing + loss=fused" in out and "padding" in out
