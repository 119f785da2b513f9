"""Adaptive exponential moving average of the trainable weights (LCIA; docs/method.md, "The adaptive EMA").

After every optimizer step, while the gradients are still present, each group of trainable tensors
(one tensor, or the LoRA A and B of one module, ...) gets its own balance weight

    a = ||theta - E||_1,  b = ||g||_1,  c = ||g - g_prev||_1
    alpha = scale * (1 + b) / (a * c)      -> ``fallback`` if not finite or not in (0, 1)
    E = (1 - alpha) * E + alpha * theta,   g_prev = g

which is the authors' reference code, computed differently:

* no host synchronisation: the norms come from ``torch._foreach_norm``, are stacked into one small
  tensor and every decision (fallback, skip) is a ``torch.where`` on the device; counters stay
  device tensors until somebody reads them;
* the state (E and g_prev) is float32 whatever the training dtype, so a 1% blend survives rounding;
* with sharded parameters (FSDP2 DTensors, FSDP1 ``use_orig_params`` views or any manual sharding)
  the per-group partial sums are all-reduced in one collective, so every rank computes the alpha of
  the full tensors;
* on a GPU the norms and the blend run as fused Triton kernels over all tensors at once
  (:mod:`mmcit.ema.kernels`: three launches a step, at the memory-traffic floor); the plain
  PyTorch path (a few operations per tensor) serves CPUs and the steps the kernels cannot take.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from mmcit.ema import plain
from mmcit.ema.groups import GroupLayout, is_dtensor, layer_group, local_part, shard_group
from mmcit.ema.trace import AlphaTrace

__all__ = ["AdaptiveEMA"]


ALPHA_NORMS = ("sum", "mean")


def _check_arguments(named: list, kernel: str, granularity: str, fallback: float,
                     fixed_alpha: float | None, alpha_norm: str) -> None:
    if not named:
        raise ValueError("AdaptiveEMA needs at least one parameter")
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ValueError("parameter names must be unique")
    if kernel not in ("auto", "torch", "triton"):
        raise ValueError(f"kernel must be 'auto', 'torch' or 'triton', got {kernel!r}")
    if granularity not in ("tensor", "layer"):
        raise ValueError(f"granularity must be 'tensor' or 'layer', got {granularity!r}")
    if not 0.0 < fallback <= 1.0:
        raise ValueError(f"fallback must be in (0, 1], got {fallback}")
    if fixed_alpha is not None and not 0.0 < fixed_alpha <= 1.0:
        raise ValueError(f"fixed_alpha must be in (0, 1], got {fixed_alpha}")
    if alpha_norm not in ALPHA_NORMS:
        raise ValueError(f"alpha_norm must be 'sum' or 'mean', got {alpha_norm!r}")


def _reduce_group(params: list[torch.Tensor], sharded: bool,
                  process_group: "dist.ProcessGroup | None") -> "dist.ProcessGroup | None":
    """Which ranks' partial sums make up one tensor's norms (None: every tensor is whole here)."""
    dtensor_group = shard_group(params)
    if sharded or process_group is not None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("sharded=True / process_group need torch.distributed to be initialised")
        return process_group or dtensor_group or dist.group.WORLD
    if dtensor_group is not None:
        # Local norms of shards are not the norms of the tensors: refuse rather than be wrong.
        raise ValueError("parameters are sharded DTensors (FSDP2): pass sharded=True")
    return None


class AdaptiveEMA:
    """EMA of named trainable parameters with LCIA's adaptive per-group balance weight.

    Args:
        named_params: ``(name, parameter)`` pairs, typically the model's trainable parameters.
        scale: numerator constant of alpha (2 in the reference).
        fallback: alpha used when the formula gives no valid weight (0.01 in the reference).
        granularity: ``"tensor"`` (reference: one alpha per tensor) or ``"layer"`` (see
            :func:`layer_group`).
        group_fn: custom ``name -> group key``; overrides ``granularity``.
        state_dtype: dtype of E and g_prev (float32 unless you know better).
        fixed_alpha: constant balance weight for a plain EMA (decay 0.99 -> 0.01); None = adaptive.
        alpha_norm: ``"sum"`` (reference: the three L1 norms summed over a group's elements, so
            alpha grows as tensors shrink) or ``"mean"`` (the norms divided by the group's element
            count, so alpha does not depend on the tensors' sizes).
        process_group: all-reduce the per-group partial norms over this group. Only for sharded
            parameters: with replicated parameters the sums would be counted once per rank.
        sharded: parameters are sharded (each rank holds a part of each tensor); reduces over
            ``process_group``, else the DTensors' shard group, else the default group.
        chunk_numel: bound on the elements per batch of norm computations, which bounds the
            temporary memory (differences ``theta - E`` and ``g - g_prev``) of :meth:`update`.
        kernel: ``"auto"`` (default: the fused Triton kernels of :mod:`mmcit.ema.kernels` on CUDA
            when Triton is installed, else the plain PyTorch path), ``"torch"`` or ``"triton"``
            (also on CPU under ``TRITON_INTERPRET=1``, as the tests do). A step the kernels cannot
            take (a missing gradient, tensors of mixed dtypes or not contiguous) runs the plain path.

    Construct it over the parameters as they are during training (after FSDP wrapping), because
    the state mirrors the local shapes.
    """

    def __init__(
        self,
        named_params: Iterable[tuple[str, torch.nn.Parameter]],
        *,
        scale: float = 2.0,
        fallback: float = 0.01,
        granularity: str = "tensor",
        group_fn: Callable[[str], str] | None = None,
        state_dtype: torch.dtype = torch.float32,
        fixed_alpha: float | None = None,
        alpha_norm: str = "sum",
        process_group: "dist.ProcessGroup | None" = None,
        sharded: bool = False,
        chunk_numel: int = 1 << 27,
        kernel: str = "auto",
    ) -> None:
        named = list(named_params)
        _check_arguments(named, kernel, granularity, fallback, fixed_alpha, alpha_norm)
        self.scale = float(scale)
        self.fallback = float(fallback)
        self.fixed_alpha = None if fixed_alpha is None else float(fixed_alpha)
        self.granularity = granularity
        self.alpha_norm = alpha_norm
        self.names = [n for n, _ in named]
        self._params = [p for _, p in named]
        local = [local_part(p) for p in self._params]
        devices = {t.device for t in local}
        if len(devices) != 1:
            raise ValueError(f"all parameters must be on one device, found {sorted(map(str, devices))}")
        self.device = devices.pop()
        self._reduce_group = _reduce_group(self._params, sharded, process_group)
        key_of = group_fn or (layer_group if granularity == "layer" else (lambda n: n))
        self._layout = GroupLayout(self.names, [t.numel() for t in local], key_of, self.device, chunk_numel)
        self._group_names = self._layout.group_names
        self.state_dtype = state_dtype
        # Norms and alphas are accumulated in at least float32, even for bf16 gradients.
        self._acc_dtype = torch.promote_types(state_dtype, torch.float32)
        self._init_state(local)
        self._fused = self._make_fused(kernel, local)
        self._plain_params = not any(is_dtensor(p) for p in self._params)

    def _init_state(self, local: list[torch.Tensor]) -> None:
        """Persistent state: one state_dtype copy of the weights and one of the gradients, and the
        per-group counters, all on the device."""
        n_groups = len(self._group_names)
        self._shadow = [t.to(self.state_dtype, copy=True) for t in local]
        self._grad_prev = [torch.zeros_like(t, dtype=self.state_dtype) for t in local]
        f32 = dict(dtype=self._acc_dtype, device=self.device)
        self._initialized = torch.zeros(n_groups, dtype=torch.bool, device=self.device)
        self._fallbacks = torch.zeros(n_groups, dtype=torch.long, device=self.device)
        self._skipped = torch.zeros(n_groups, dtype=torch.long, device=self.device)
        self._last_alpha = torch.full((n_groups,), math.nan, **f32)
        # Sum of the blend weights and number of blends per group (for the mean alpha; no host sync).
        self._alpha_sum = torch.zeros(n_groups, **f32)
        self._blends = torch.zeros(n_groups, dtype=torch.long, device=self.device)
        self._trace = AlphaTrace(n_groups, self.device, self._acc_dtype)  # every blend's alpha, per step
        # Device constants, so that update() never builds a tensor from host data.
        self._nan = torch.tensor(math.nan, **f32)
        self._zero = torch.zeros((), **f32)
        self._fallback_t = torch.tensor(self.fallback, **f32)
        self._fixed_t = torch.tensor(self.fixed_alpha if self.fixed_alpha is not None else math.nan, **f32)
        # Elements per group, of the whole tensors (a DTensor's numel is its global one): "mean" norms.
        numel = torch.tensor([p.numel() for p in self._params], dtype=self._acc_dtype, device=self.device)
        self._group_numel = self._layout.group_sums(numel[None])[0]
        self._steps = 0
        self._backup: list[torch.Tensor] | None = None

    def _make_fused(self, kernel: str, local: list[torch.Tensor]):
        if kernel == "torch" or (kernel == "auto" and self.device.type != "cuda"):
            return None
        if self.state_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            if kernel == "triton":
                raise ValueError(f"kernel='triton' supports float32/bfloat16/float16 state, not {self.state_dtype}")
            return None
        try:
            from mmcit.ema.kernels import FusedUpdate  # lazy: needs Triton (CUDA builds of torch)
        except ImportError:
            if kernel == "triton":
                raise
            return None
        return FusedUpdate([t.numel() for t in local], self.device)

    def _launch(self):
        """The fused kernels' arguments for this step (``kernels.Launch``), or None for the plain path."""
        if self._fused is None:
            return None
        if self._plain_params:  # pointers straight from the parameters: no per-tensor views each step
            return self._fused.prepare_params(self._params, self._shadow, self._grad_prev)
        grads = [None if p.grad is None else local_part(p.grad) for p in self._params]
        return self._fused.prepare([local_part(p) for p in self._params], self._shadow, grads, self._grad_prev)

    @property
    def kernel(self) -> str:
        """Which path update() takes when it can: ``"triton"`` (fused kernels) or ``"torch"``."""
        return "torch" if self._fused is None else "triton"

    # -- the step -------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self) -> None:
        """Blend the live weights into the EMA. Call after ``optimizer.step()``, before ``zero_grad``.

        The first call after construction or :meth:`reset` copies the weights and only records the
        gradient. A group is *skipped* (EMA and g_prev untouched, counted in :attr:`num_skipped`)
        when one of its gradients holds NaN/inf or one of its parameters has ``.grad is None``.
        """
        fused = self._launch()
        if fused is not None:
            per_tensor = self._fused.norms(fused)
            sums = self._layout.group_sums(per_tensor.to(self._acc_dtype))
        else:
            thetas = [local_part(p) for p in self._params]
            grads = [None if p.grad is None else local_part(p.grad) for p in self._params]
            sums = self._layout.group_sums(plain.norms(thetas, self._shadow, grads, self._grad_prev,
                                                       self._layout.chunks, self._acc_dtype, self._nan, self._zero))
        if self._reduce_group is not None:
            # One collective for all three norms of all groups: shard sums -> full-tensor norms.
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=self._reduce_group)
        if self.alpha_norm == "mean":
            sums = sums / self._group_numel
        a, b, c = sums.unbind(0)

        valid = torch.isfinite(b)  # NaN/inf gradient, or a missing one (NaN placeholder)
        blend = valid & self._initialized
        first = valid & ~self._initialized
        if self.fixed_alpha is None:
            raw = self.scale * (1.0 + b) / (a * c)
            ok = torch.isfinite(raw) & (raw > 0) & (raw < 1)
            alpha = torch.where(ok, raw, self._fallback_t)
            self._fallbacks.add_(blend & ~ok)
        else:
            alpha = self._fixed_t.expand_as(a)
        # Weight 1 on the first step makes lerp return theta exactly (lerp's w >= 0.5 branch).
        weight = torch.where(blend, alpha, first.to(self._acc_dtype))
        self._skipped.add_(~valid)
        self._last_alpha.copy_(torch.where(blend, alpha, self._last_alpha))
        self._alpha_sum.add_(torch.where(blend, alpha, self._zero))
        self._blends.add_(blend)
        self._trace.record(torch.where(blend, alpha, self._nan))
        self._initialized.logical_or_(valid)

        per_tensor_weight = weight.to(self.state_dtype)[self._layout.tensor_group]  # lerp wants E's dtype
        per_tensor_valid = valid[self._layout.tensor_group]
        if fused is not None:
            self._fused.blend(fused, per_tensor_weight, per_tensor_valid)
            self._steps += 1
            return
        plain.blend(self._shadow, thetas, grads, self._grad_prev, per_tensor_weight, per_tensor_valid)
        self._steps += 1

    # -- using the EMA weights --------------------------------------------------------------------
    @torch.no_grad()
    def copy_to(self) -> None:
        """Overwrite the live parameters with the EMA weights (cast to the parameters' dtype)."""
        torch._foreach_copy_([local_part(p) for p in self._params], self._shadow)

    @torch.no_grad()
    def store(self) -> None:
        """Keep a copy of the live weights, e.g. before :meth:`copy_to` for an evaluation."""
        self._backup = [local_part(p).clone() for p in self._params]

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by :meth:`store` and free the copy."""
        if self._backup is None:
            raise RuntimeError("restore() without a preceding store()")
        torch._foreach_copy_([local_part(p) for p in self._params], self._backup)
        self._backup = None

    @torch.no_grad()
    def reset(self) -> None:
        """Start afresh (next task): the next update() copies the weights again; counters cleared."""
        torch._foreach_copy_(self._shadow, [local_part(p) for p in self._params])
        torch._foreach_zero_(self._grad_prev)
        self._initialized.zero_()
        self._fallbacks.zero_()
        self._skipped.zero_()
        self._last_alpha.fill_(math.nan)
        self._alpha_sum.zero_()
        self._blends.zero_()
        self._trace.reset()
        self._steps = 0

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """State as a dict of tensors (aliases of the live state, like ``nn.Module.state_dict``).

        Under sharding every rank returns its own shards.
        """
        return {
            "steps": self._steps,
            "names": list(self.names),
            "groups": list(self._group_names),
            "shadow": dict(zip(self.names, self._shadow)),
            "grad_prev": dict(zip(self.names, self._grad_prev)),
            "initialized": self._initialized,
            "fallbacks": self._fallbacks,
            "skipped": self._skipped,
            "last_alpha": self._last_alpha,
            "alpha_sum": self._alpha_sum,
            "blends": self._blends,
            "alpha_trace": self._trace.rows(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Load a :meth:`state_dict` taken over the same parameter names and grouping."""
        if list(state["names"]) != self.names or list(state["groups"]) != self._group_names:
            raise ValueError("state was saved over other parameters or another grouping")
        for key, mine in (("shadow", self._shadow), ("grad_prev", self._grad_prev)):
            for name, dst in zip(self.names, mine):
                src = state[key][name]
                if src.shape != dst.shape:
                    raise ValueError(f"{key}[{name}]: shape {tuple(src.shape)} != {tuple(dst.shape)}")
                dst.copy_(src)
        for key in ("initialized", "fallbacks", "skipped", "last_alpha"):
            getattr(self, "_" + key).copy_(state[key])
        # States written before the mean alpha was kept lack these two: start them at zero.
        for key in ("alpha_sum", "blends"):
            if key in state:
                getattr(self, "_" + key).copy_(state[key])
            else:
                getattr(self, "_" + key).zero_()
        self._steps = int(state["steps"])
        # States written before the trace was kept lack it: its rows are then unknown (NaN).
        trace = state.get("alpha_trace")
        self._trace.load(trace if trace is not None else torch.full((self._steps, len(self._group_names)), math.nan))

    # -- reading (these synchronise with the device) -----------------------------------------------
    @property
    def groups(self) -> dict[str, list[str]]:
        """Group name -> names of its parameters."""
        return {g: [self.names[t] for t in m] for g, m in zip(self._group_names, self._layout.members)}

    @property
    def params(self) -> list[torch.nn.Parameter]:
        """The parameters this EMA follows, in construction order."""
        return list(self._params)

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """Parameter name -> EMA tensor (local shard under sharding); aliases, do not modify."""
        return dict(zip(self.names, self._shadow))

    @property
    def last_alphas(self) -> dict[str, float]:
        """Group -> alpha of its latest blend (NaN before its first blend)."""
        return dict(zip(self._group_names, self._last_alpha.tolist()))

    @property
    def mean_alpha(self) -> float:
        """Mean blend weight over all blends of all groups since the last reset (NaN before any).

        1 / mean_alpha is roughly the number of recent steps the EMA averages over: near 1, the
        EMA follows the live weights; near 0, it stays where the task started.
        """
        blends = int(self._blends.sum())
        return float(self._alpha_sum.sum()) / blends if blends else math.nan

    def alpha_trace(self) -> torch.Tensor:
        """(updates since the last reset, groups) float32 on the CPU: the alpha of each group's blend
        at each update, NaN where it did not blend (the first update, skipped ones). Columns follow
        :attr:`groups`."""
        return self._trace.rows().float().cpu()

    @property
    def num_fallbacks(self) -> int:
        """Blends since the last reset that used the fallback weight, over all groups."""
        return int(self._fallbacks.sum())

    @property
    def num_skipped(self) -> int:
        """Group updates since the last reset skipped for a non-finite or missing gradient."""
        return int(self._skipped.sum())

    @property
    def fallbacks_per_group(self) -> dict[str, int]:
        """Group -> number of fallbacks since the last reset."""
        return dict(zip(self._group_names, self._fallbacks.tolist()))

    @property
    def skipped_per_group(self) -> dict[str, int]:
        """Group -> number of skipped updates since the last reset."""
        return dict(zip(self._group_names, self._skipped.tolist()))

    @property
    def num_updates(self) -> int:
        """update() calls since construction or the last reset."""
        return self._steps
