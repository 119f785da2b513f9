"""Cost of AdaptiveEMA.update() against the per-tensor reference loop and a training step.

    python benchmarks/bench_ema.py                          # CPU: tiny LLaVA-like model, real step
    python benchmarks/bench_ema.py --llava7b --toy          # LLaVA-1.5-7B LoRA layout, toy sizes
    python benchmarks/bench_ema.py --device cuda --llava7b  # 340.8M values in 452 tensors
    python benchmarks/bench_ema.py --trace-cost             # what recording the alpha trace costs

Prints figures only (no assertions). The reference loop is the authors' form: one ``float(...)``
host sync per norm per tensor. The memory-traffic floor (docs/method.md): read theta, E, g and g_prev
twice, write E and g_prev once, at the dtypes in use. Without a model (``--llava7b``) the training
step is the reference's measured 1.43 s on one H200 unless ``--train-step-ms`` says otherwise.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

import torch

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mmcit, installed or not

from mmcit.ema import AdaptiveEMA  # noqa: E402

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# -- what is being timed ----------------------------------------------------------------------------


class ReferenceLoop:
    """The reference update, tensor by tensor, with a host sync per norm (float32 state)."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], scale: float = 2.0, fallback: float = 0.01):
        self.params = [p for _, p in named]
        self.scale, self.fallback = scale, fallback
        self.E = [p.detach().float().clone() for p in self.params]
        self.gp = [torch.zeros_like(e) for e in self.E]

    @torch.no_grad()
    def update(self) -> None:
        for p, E, gp in zip(self.params, self.E, self.gp):
            theta, g = p.detach().float(), p.grad.float()
            a = float(torch.norm(theta - E, 1))
            b = float(torch.norm(g, 1))
            c = float(torch.norm(g - gp, 1))
            try:
                alpha = self.scale * (1 + b) / (a * c)
                if not math.isfinite(alpha) or not 0 < alpha < 1:
                    alpha = self.fallback
            except ZeroDivisionError:
                alpha = self.fallback
            E.mul_(1 - alpha).add_(theta, alpha=alpha)
            gp.copy_(g)


def lora_shapes(layers: int, hidden: int, inter: int, r: int, vision: int) -> dict[str, tuple[int, ...]]:
    """Trainable tensors of LLaVA with LoRA on every LLM linear layer plus a trainable projector."""
    io = {"q_proj": (hidden, hidden), "k_proj": (hidden, hidden), "v_proj": (hidden, hidden),
          "o_proj": (hidden, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
          "down_proj": (inter, hidden)}
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        for m in LORA_TARGETS:
            fan_in, fan_out = io[m]
            prefix = f"model.language_model.layers.{i}.{'self_attn' if m.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}.{m}"
            shapes[f"{prefix}.lora_A.default.weight"] = (r, fan_in)
            shapes[f"{prefix}.lora_B.default.weight"] = (fan_out, r)
    proj = "model.multi_modal_projector.modules_to_save.default"
    shapes[f"{proj}.linear_1.weight"] = (hidden, vision)
    shapes[f"{proj}.linear_1.bias"] = (hidden,)
    shapes[f"{proj}.linear_2.weight"] = (hidden, hidden)
    shapes[f"{proj}.linear_2.bias"] = (hidden,)
    return shapes


def random_params(shapes: dict[str, tuple[int, ...]], device: str, dtype: torch.dtype) -> list:
    named = []
    for n, s in shapes.items():
        p = torch.nn.Parameter(torch.randn(s, device=device, dtype=dtype) * 0.02)
        p.grad = torch.randn(s, device=device, dtype=dtype) * 1e-3
        named.append((n, p))
    return named


def tiny_training_setup(device: str, dtype: torch.dtype):
    """A tiny LLaVA-like model (projector + Llama with LoRA r=16 on every linear) and one AdamW step."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1024, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    llm = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGETS)))

    class TinyMM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.multi_modal_projector = torch.nn.Sequential(
                torch.nn.Linear(96, 128), torch.nn.GELU(), torch.nn.Linear(128, 128))
            self.llm = llm

        def forward(self, feats, ids):
            text = self.llm.get_input_embeddings()(ids)
            embeds = torch.cat([self.multi_modal_projector(feats), text], dim=1)
            labels = torch.cat([torch.full(feats.shape[:2], -100, device=ids.device), ids], dim=1)
            return self.llm(inputs_embeds=embeds, labels=labels).loss

    model = TinyMM().to(device=device, dtype=dtype)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([p for _, p in named], lr=1e-4)
    feats = torch.randn(4, 16, 96, device=device, dtype=dtype)
    ids = torch.randint(0, 1024, (4, 112), device=device)

    def step() -> None:
        model(feats, ids).backward()
        opt.step()  # gradients stay: the EMA timings below need them

    def full_step() -> None:
        opt.zero_grad(set_to_none=True)
        step()

    step()
    return named, full_step


def agreement(named: list, granularity: str, kernel: str, steps: int = 5) -> None:
    """``kernel`` (the fused one where it applies) against plain (torch) AdaptiveEMA on copies of the tensors over perturbed steps:
    the largest relative differences of E and of the balance weights."""
    gen = torch.Generator(device=named[0][1].device).manual_seed(0)
    copies = [(n, torch.nn.Parameter(p.detach().clone())) for n, p in named]
    fused = AdaptiveEMA(copies, granularity=granularity, kernel=kernel)
    plain = AdaptiveEMA(copies, granularity=granularity, kernel="torch")
    worst_alpha = 0.0
    for _ in range(steps):
        with torch.no_grad():
            for _, p in copies:
                p.grad = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) * 1e-3
                p.add_(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) * 1e-4)
        fused.update()
        plain.update()
        fa, pa = fused.last_alphas, plain.last_alphas
        worst_alpha = max([worst_alpha] + [abs(fa[k] - pa[k]) / abs(pa[k]) for k in pa if pa[k] == pa[k]])
    worst_e = max(((fused.shadow[n] - plain.shadow[n]).abs().max() / plain.shadow[n].abs().max()).item()
                  for n, _ in copies)
    print(f"agreement [{fused.kernel}] vs [torch] over {steps} steps: balance weights {worst_alpha:.2e}, "
          f"EMA {worst_e:.2e} (largest relative differences); fallbacks {fused.num_fallbacks} vs "
          f"{plain.num_fallbacks}")
    if worst_e > 1e-5 or worst_alpha > 1e-4 or fused.num_fallbacks != plain.num_fallbacks:
        raise SystemExit(f"kernel {fused.kernel} disagrees with the plain path")
    del fused, plain, copies


# -- timing ---------------------------------------------------------------------------------------


def timer(device: str) -> Callable[[Callable[[], None], int, int], float]:
    """Median milliseconds per call; CUDA events on a GPU, perf_counter on CPU."""

    def run(fn: Callable[[], None], warmup: int, iters: int) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            if device.startswith("cuda"):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return run


def traffic_floor_bytes(named: list, state_dtype: torch.dtype = torch.float32) -> int:
    """The floor: read theta, E, g, g_prev twice, write E and g_prev once."""
    total = 0
    s = torch.tensor([], dtype=state_dtype).element_size()
    for _, p in named:
        t = p.element_size()
        total += p.numel() * (2 * (t + s + t + s) + s + s)
    return total


def copy_bandwidth_gbs(device: str) -> float:
    """Effective bandwidth of a large clone (read + write), a ceiling for this machine."""
    x = torch.empty(1 << 25, device=device)
    ms = timer(device)(lambda: x.clone(), 2, 5)
    return 2 * x.numel() * 4 / (ms * 1e-3) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--llava7b", action="store_true", help="random tensors at LLaVA-1.5-7B LoRA r=128 shapes")
    ap.add_argument("--toy", action="store_true", help="with --llava7b: the same layout at toy sizes")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                    help="parameter/gradient dtype (default: bfloat16 for --llava7b on cuda, else float32)")
    ap.add_argument("--granularity", default="tensor", choices=["tensor", "layer"])
    ap.add_argument("--iters", type=int, default=None, help="timed calls (default 20 on a GPU, 200 on a CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3 on a GPU, 20 on a CPU)")
    ap.add_argument("--train-step-ms", type=float, default=None,
                    help="training step to compare with when there is no model (default 1430, the reference step on one H200)")
    ap.add_argument("--bandwidth-gbs", type=float, default=4300.0, help="for the floor time (H200: 4300)")
    ap.add_argument("--check-sync", action="store_true", help="cuda: fail if update() syncs with the host")
    ap.add_argument("--kernel", default="auto", choices=["auto", "torch", "triton"], help="AdaptiveEMA's kernel")
    ap.add_argument("--compare", action="store_true",
                    help="also time kernel='torch', and check the fused path's values against it over 5 steps")
    ap.add_argument("--trace-cost", action="store_true",
                    help="also time update() with the alpha trace's per-step row write switched off")
    args = ap.parse_args()
    dev = args.device
    gpu = dev.startswith("cuda")
    # A shared CPU is noisy: many more calls for a stable median.
    args.iters = args.iters if args.iters is not None else (20 if gpu else 200)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 20)
    dtype = getattr(torch, args.dtype) if args.dtype else (
        torch.bfloat16 if args.llava7b and gpu else torch.float32)
    run = timer(dev)

    step_ms: float | None = None
    if args.llava7b:
        sizes = dict(layers=2, hidden=256, inter=688, r=8, vision=64) if args.toy else \
            dict(layers=32, hidden=4096, inter=11008, r=128, vision=1024)
        named = random_params(lora_shapes(**sizes), dev, dtype)
        label = "LLaVA-1.5-7B LoRA layout" + (" (toy sizes)" if args.toy else "")
        step_ms = args.train_step_ms if args.train_step_ms is not None else (None if args.toy else 1430.0)
    else:
        named, full_step = tiny_training_setup(dev, dtype)
        label = "tiny LLaVA-like model (projector + 4-layer Llama, LoRA r=16)"
        step_ms = run(full_step, args.warmup, args.iters)

    numel = sum(p.numel() for _, p in named)
    if args.compare and args.kernel != "torch":
        agreement(named, args.granularity, args.kernel)
    ema = AdaptiveEMA(named, granularity=args.granularity, kernel=args.kernel)
    ref = ReferenceLoop(named)
    ema.update()  # the first call only copies; time the blending ones
    if args.check_sync and gpu:
        ema.update()  # compile the fused kernels first
        torch.cuda.set_sync_debug_mode("error")
        ema.update()
        torch.cuda.set_sync_debug_mode(0)
        print(f"sync check: update() [{ema.kernel}] made no host synchronisation")
    fns = {"ema": ema.update, "ref": ref.update}
    if args.compare and ema.kernel != "torch":
        plain = AdaptiveEMA(named, granularity=args.granularity, kernel="torch")
        plain.update()
        fns["plain"] = plain.update
    if args.trace_cost:
        untraced = AdaptiveEMA(named, granularity=args.granularity, kernel=args.kernel)
        untraced._trace.record = lambda alphas: None  # the same update without writing the trace's row
        untraced.update()
        fns["untraced"] = untraced.update
    # Interleaved, one call of each in turn, so that a drift of the machine's speed hits all alike.
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    for _ in range(args.iters):
        for k, fn in fns.items():
            times[k].append(run(fn, 0, 1))
    ema_ms, ref_ms = statistics.median(times["ema"]), statistics.median(times["ref"])
    others = {"update() [torch]": statistics.median(times["plain"])} if "plain" in times else {}
    if "untraced" in times:
        others["update() no trace"] = statistics.median(times["untraced"])
    fns.clear()

    floor = traffic_floor_bytes(named)
    print(f"{label} on {dev}, {dtype}: {numel / 1e6:.2f}M trainable values in {len(named)} tensors, "
          f"granularity {args.granularity}, threads {torch.get_num_threads()}")
    print(f"  update() [{ema.kernel}]{' ' * (9 - len(ema.kernel))}{ema_ms:9.3f} ms")
    for name, ms in others.items():
        print(f"  {name:18s}  {ms:9.3f} ms   ratio to update() [{ema.kernel}] = {ms / ema_ms:.2f}x")
    print(f"  reference loop      {ref_ms:9.3f} ms   ratio reference/update = {ref_ms / ema_ms:.2f}x")
    if step_ms is not None:
        source = "measured" if not args.llava7b else "given"
        print(f"  training step       {step_ms:9.3f} ms ({source})   update = {100 * ema_ms / step_ms:.2f}% "
              f"of a step, reference = {100 * ref_ms / step_ms:.2f}%")
    bw = copy_bandwidth_gbs(dev)
    print(f"  traffic floor       {floor / 1e9:.4f} GB: {floor / args.bandwidth_gbs / 1e6:.4f} ms at "
          f"{args.bandwidth_gbs:.0f} GB/s, {floor / bw / 1e6:.4f} ms at this {dev}'s measured "
          f"{bw:.1f} GB/s copy bandwidth; update() reaches {floor / (ema_ms * 1e-3) / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
