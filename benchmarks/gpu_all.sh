#!/usr/bin/env bash
# Every GPU measurement the open issues ask for, in one go (one H100/H200, meant to stay within 5 minutes):
# the fused EMA kernels' agreement with the plain path and their host synchronisation (bench_ema),
# then the end-to-end check (gpu_check) at LLaVA-1.5-7B shapes (training step and hooks, the
# training speed options on a CoIN-like length mix, the EMA update back to back and timed alone
# against the memory-traffic floor, evaluation side by side with a plain transformers + peft loop
# and the batch-1 loop, the static-cache evaluation) and at Qwen2.5-VL-7B shapes (training step,
# EMA, batched evaluation). docs/performance.md says what each figure is.
# Test it first on CPU at toy sizes: TOY=1 bash benchmarks/gpu_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [[ "${TOY:-0}" == 1 ]]; then
    $PY benchmarks/gpu_check.py --toy
    $PY benchmarks/bench_ema.py --llava7b --toy --compare
    TRITON_INTERPRET=1 $PY benchmarks/bench_ema.py --llava7b --toy --compare --kernel triton --iters 2 --warmup 1
else
    # The EMA benchmark first: it also checks the fused kernels against the plain path on the GPU;
    # should they fail there, the end-to-end check still runs, on the plain path.
    kernel=auto
    $PY benchmarks/bench_ema.py --device cuda --llava7b --check-sync --compare --iters 10 || kernel=torch
    $PY benchmarks/gpu_check.py --ema-kernel $kernel
fi
