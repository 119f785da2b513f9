"""The fused Triton kernels of AdaptiveEMA (mmcit/ema/kernels.py), checked on CPU under Triton's
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


@pytest.mark.slow  # 20 s: the EMA's exactness tests again, through the interpreted Triton kernels
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
out = fu.norms(fu.prepare(th, E, g, gp))
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


def test_launch_tables_are_built_once_and_rebuilt_only_when_tensors_move():
    """The host's launch preparation (no kernel runs here): offset tables are reused while the
    parameters and gradients stay where they were, rebuilt when the gradients move, and kept in
    step with the pointers; no tensor of a step is held afterwards."""
    from mmcit.ema.kernels import FusedUpdate

    params = [torch.nn.Parameter(torch.randn(n)) for n in (8, 5, 12)]
    shadow = [p.detach().clone() for p in params]
    grad_prev = [torch.zeros_like(p) for p in params]
    fu = FusedUpdate([p.numel() for p in params], torch.device("cpu"))
    assert fu.prepare_params(params, shadow, grad_prev) is None  # no gradients yet
    flat = torch.zeros(32)  # gradients at known addresses: views into one buffer, 16-byte aligned
    for p, (a, b) in zip(params, ((0, 8), (8, 13), (16, 28))):
        p.grad = flat[a:b]
    first = fu.prepare_params(params, shadow, grad_prev)
    tables = list(first.tables)
    assert first.tables[2].tolist() == [0, 8, 16] and first.bases[2] is params[0].grad
    again = fu.prepare_params(params, shadow, grad_prev)
    assert all(a is b for a, b in zip(again.tables, tables))  # nothing rebuilt
    moved = torch.zeros(64)
    for p, (a, b) in zip(params, ((4, 12), (24, 29), (40, 52))):
        p.grad = moved[a:b]
    third = fu.prepare_params(params, shadow, grad_prev)
    assert third.tables[2].tolist() == [0, 20, 36] and third.tables[0] is tables[0]
    assert all(not (isinstance(v, torch.Tensor) and v.data_ptr() == flat.data_ptr()) for v in vars(fu).values())
    params[1].grad = moved[25:30]  # off a 16-byte boundary: the kernels do not apply
    assert fu.prepare_params(params, shadow, grad_prev) is None
