"""The fused Triton kernels of AdaptiveEMA (mmcit/ema_kernels.py), checked on CPU under Triton's
interpreter: the exactness tests of test_ema.py run again with kernel="triton", plus the kernels'
own edge cases. On a GPU the same kernels are compiled (benchmarks/bench_ema.py times them)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
# The tests of test_ema.py about the update's values (not the method hooks or the Trainer callback,
# which build their EMA through mmcit's own code and so take the plain path on a CPU).
EXACTNESS = ("matches_reference or hand_computed or first_step or fallback or nonfinite or missing_gradient "
             "or layer_granularity or custom_group_fn or bf16 or fixed_alpha or state_dict or store_copy "
             "or reset or mean_alpha or mean_norms or alpha_trace_records")


def interpreted(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1", "MMCIT_TEST_EMA_KERNEL": "triton", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_exactness_tests_pass_with_the_fused_kernels():
    r = interpreted(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "tests/test_ema.py", "-k", EXACTNESS])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", r.stdout).group(1))
    assert passed >= 20, r.stdout[-2000:]


SCRIPT = r"""
import math, torch
from mmcit.ema import AdaptiveEMA
from mmcit.ema.kernels import BLOCK, FusedUpdate

# 1. Per-tensor norms over tensors of 1 element to several blocks, against float64 sums.
torch.manual_seed(0)
sizes = [1, 7, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17]
th = [torch.randn(n) for n in sizes]
E = [torch.randn(n) for n in sizes]
g = [torch.randn(n).bfloat16() for n in sizes]
gp = [torch.randn(n) for n in sizes]
fu = FusedUpdate(sizes, torch.device("cpu"))
out = fu.norms(fu.prepare(th, E, g, gp), th, E, g, gp)
for i in range(len(sizes)):
    ref = [(th[i].double() - E[i].double()).abs().sum(), g[i].double().abs().sum(),
           (g[i].double() - gp[i].double()).abs().sum()]
    for k in range(3):
        assert abs(out[k, i].item() - ref[k].item()) <= 1e-6 * ref[k].item(), (sizes[i], k)

# 2. A step the kernels cannot take (a missing gradient) falls back to the plain path, same result.
ps = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))]
fused = AdaptiveEMA([("a", ps[0]), ("b", ps[1])], kernel="triton")
plain = AdaptiveEMA([("a", ps[0]), ("b", ps[1])], kernel="torch")
for step in range(3):
    for p in ps:
        p.grad = torch.randn_like(p)
        with torch.no_grad():
            p.add_(torch.randn_like(p))
    if step == 2:
        ps[1].grad = None
    fused.update(), plain.update()
assert fused.skipped_per_group == plain.skipped_per_group == {"a": 0, "b": 1}
for n in ("a", "b"):
    assert torch.allclose(fused.shadow[n], plain.shadow[n], rtol=1e-6, atol=0)

# 3. Tensors of mixed dtypes are not fused either (the plain path again), and say so.
mixed = [torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(4).bfloat16())]
for p in mixed:
    p.grad = torch.ones_like(p)
ema = AdaptiveEMA([("f", mixed[0]), ("h", mixed[1])], kernel="triton")
assert ema._fused.prepare([p.detach() for p in mixed], ema._shadow, [p.grad for p in mixed], ema._grad_prev) is None
ema.update()
print("ok")
"""


def test_kernels_edge_cases():
    r = interpreted(["-c", SCRIPT])
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-3000:]


def test_auto_takes_the_plain_path_on_a_cpu():
    from mmcit.ema import AdaptiveEMA

    p = torch.nn.Parameter(torch.zeros(3))
    assert AdaptiveEMA([("w", p)]).kernel == "torch"
    with pytest.raises(ValueError, match="kernel must be"):
        AdaptiveEMA([("w", p)], kernel="cuda")
