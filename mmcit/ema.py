"""Adaptive exponential moving average of the trainable weights (LCIA, docs LCIA.md section 1).

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
  (:mod:`mmcit.ema_kernels`: three launches a step, at LCIA.md's memory-traffic floor); the plain
  PyTorch path (a few operations per tensor) serves CPUs and the steps the kernels cannot take.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Iterable

import torch
import torch.distributed as dist

try:  # torch builds without distributed support have no DTensor
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - depends on the torch build
    DTensor = None  # type: ignore[assignment,misc]

__all__ = ["AdaptiveEMA", "layer_group", "is_sharded_dtensor", "PROJECTOR_MARKERS"]

#: Module names whose tensors (weights and biases of all their layers) form one group at "layer"
#: granularity: HF LLaVA's projector and the original LLaVA code's.
PROJECTOR_MARKERS: tuple[str, ...] = ("multi_modal_projector", "mm_projector")

_LORA_RE = re.compile(
    r"^(?P<module>.+)\.lora_(?:A|B|embedding_A|embedding_B|magnitude_vector)\.(?P<adapter>[^.]+)"
    r"(?:\.(?:weight|bias))?$"
)
_SAVED_RE = re.compile(r"^(?P<module>.+?)\.modules_to_save\.(?P<adapter>[^.]+)\.")


def layer_group(name: str) -> str:
    """Group key of a parameter name at "layer" granularity.

    * anything under a projector module (``PROJECTOR_MARKERS``): the projector, one group per
      adapter copy when peft wraps it in ``modules_to_save``;
    * ``<module>.lora_A.<adapter>.weight`` / ``lora_B``: ``"<module>:<adapter>"``, so A and B of one
      module (and one adapter) share a group;
    * ``<module>.modules_to_save.<adapter>....``: ``"<module>:<adapter>"``;
    * anything else: the owning module (weight and bias of a plain layer together).
    """
    parts = name.split(".")
    for marker in PROJECTOR_MARKERS:
        if marker in parts:
            k = parts.index(marker)
            key = ".".join(parts[: k + 1])
            if len(parts) > k + 2 and parts[k + 1] == "modules_to_save":
                key += ":" + parts[k + 2]
            return key
    m = _LORA_RE.match(name)
    if m:
        return f"{m['module']}:{m['adapter']}"
    m = _SAVED_RE.match(name)
    if m:
        return f"{m['module']}:{m['adapter']}"
    return name.rsplit(".", 1)[0] if "." in name else name


def _is_dtensor(t: torch.Tensor) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def is_sharded_dtensor(t: torch.Tensor) -> bool:
    """Whether ``t`` is a DTensor split over ranks (FSDP2 parameters and their gradients are)."""
    return _is_dtensor(t) and any(pl.is_shard() for pl in t.placements)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this process holds: the local shard of a DTensor, else ``t`` itself."""
    return t.to_local() if _is_dtensor(t) else t.detach()


def _shard_group(params: list[torch.Tensor]) -> "dist.ProcessGroup | None":
    """The process group the DTensor parameters are sharded over (None: no DTensors)."""
    for p in params:
        if not _is_dtensor(p):
            continue
        dims = [i for i, pl in enumerate(p.placements) if pl.is_shard()]
        if len(dims) == 1:
            return p.device_mesh.get_group(dims[0])
        if len(dims) > 1:
            raise ValueError(
                "parameters are sharded over several mesh dimensions; pass the process_group "
                "that spans all of them"
            )
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
        process_group: all-reduce the per-group partial norms over this group. Only for sharded
            parameters: with replicated parameters the sums would be counted once per rank.
        sharded: parameters are sharded (each rank holds a part of each tensor); reduces over
            ``process_group``, else the DTensors' shard group, else the default group.
        chunk_numel: bound on the elements per batch of norm computations, which bounds the
            temporary memory (differences ``theta - E`` and ``g - g_prev``) of :meth:`update`.
        kernel: ``"auto"`` (default: the fused Triton kernels of :mod:`mmcit.ema_kernels` on CUDA
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
        process_group: "dist.ProcessGroup | None" = None,
        sharded: bool = False,
        chunk_numel: int = 1 << 27,
        kernel: str = "auto",
    ) -> None:
        named = list(named_params)
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
        self.scale = float(scale)
        self.fallback = float(fallback)
        self.fixed_alpha = None if fixed_alpha is None else float(fixed_alpha)
        self.granularity = granularity
        self.names = names
        self._params = [p for _, p in named]

        local = [_local(p) for p in self._params]
        devices = {t.device for t in local}
        if len(devices) != 1:
            raise ValueError(f"all parameters must be on one device, found {sorted(map(str, devices))}")
        self.device = devices.pop()

        # Which ranks' partial sums make up one tensor's norms.
        dtensor_group = _shard_group(self._params)
        if sharded or process_group is not None:
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("sharded=True / process_group need torch.distributed to be initialised")
            self._reduce_group = process_group or dtensor_group or dist.group.WORLD
        elif dtensor_group is not None:
            # Local norms of shards are not the norms of the tensors: refuse rather than be wrong.
            raise ValueError("parameters are sharded DTensors (FSDP2): pass sharded=True")
        else:
            self._reduce_group = None

        # Groups, in order of first appearance.
        key_of = group_fn or (layer_group if granularity == "layer" else (lambda n: n))
        keys = [key_of(n) for n in names]
        self._group_names: list[str] = list(dict.fromkeys(keys))
        index = {k: i for i, k in enumerate(self._group_names)}
        tensor_group = [index[k] for k in keys]
        n, n_groups = len(names), len(self._group_names)
        members: list[list[int]] = [[] for _ in range(n_groups)]
        for t, g in enumerate(tensor_group):
            members[g].append(t)
        width = max(len(m) for m in members)
        # Group sums as a gather over a padded (group, member) table and a fixed-order sum: unlike
        # index_add_/scatter_add_ it is deterministic on GPUs and exact to the summation order.
        pad = [m + [n] * (width - len(m)) for m in members]
        self._members = members
        self._pad_idx = torch.tensor(pad, dtype=torch.long, device=self.device)
        self._gidx = torch.tensor(tensor_group, dtype=torch.long, device=self.device)

        # Batches of tensors for the norm pass, each at most chunk_numel elements (or one tensor).
        self._chunks: list[list[int]] = []
        cur: list[int] = []
        cur_numel = 0
        for i, t in enumerate(local):
            if cur and cur_numel + t.numel() > chunk_numel:
                self._chunks.append(cur)
                cur, cur_numel = [], 0
            cur.append(i)
            cur_numel += t.numel()
        self._chunks.append(cur)

        # Persistent state: one state_dtype copy of the weights and one of the gradients.
        self.state_dtype = state_dtype
        # Norms and alphas are accumulated in at least float32, even for bf16 gradients.
        self._acc_dtype = torch.promote_types(state_dtype, torch.float32)
        self._shadow = [t.to(state_dtype, copy=True) for t in local]
        self._grad_prev = [torch.zeros_like(t, dtype=state_dtype) for t in local]
        f32 = dict(dtype=self._acc_dtype, device=self.device)
        self._initialized = torch.zeros(n_groups, dtype=torch.bool, device=self.device)
        self._fallbacks = torch.zeros(n_groups, dtype=torch.long, device=self.device)
        self._skipped = torch.zeros(n_groups, dtype=torch.long, device=self.device)
        self._last_alpha = torch.full((n_groups,), math.nan, **f32)
        # Sum of the blend weights and number of blends per group (for the mean alpha; no host sync).
        self._alpha_sum = torch.zeros(n_groups, **f32)
        self._blends = torch.zeros(n_groups, dtype=torch.long, device=self.device)
        # Device constants, so that update() never builds a tensor from host data.
        self._nan = torch.tensor(math.nan, **f32)
        self._zero = torch.zeros((), **f32)
        self._fallback_t = torch.tensor(self.fallback, **f32)
        self._fixed_t = torch.tensor(self.fixed_alpha if self.fixed_alpha is not None else math.nan, **f32)
        self._steps = 0
        self._backup: list[torch.Tensor] | None = None
        self._fused = self._make_fused(kernel, local)

    def _make_fused(self, kernel: str, local: list[torch.Tensor]):
        if kernel == "torch" or (kernel == "auto" and self.device.type != "cuda"):
            return None
        if self.state_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            if kernel == "triton":
                raise ValueError(f"kernel='triton' supports float32/bfloat16/float16 state, not {self.state_dtype}")
            return None
        try:
            from mmcit.ema_kernels import FusedUpdate
        except ImportError:
            if kernel == "triton":
                raise
            return None
        return FusedUpdate([t.numel() for t in local], self.device)

    @property
    def kernel(self) -> str:
        """Which path update() takes when it can: ``"triton"`` (fused kernels) or ``"torch"``."""
        return "torch" if self._fused is None else "triton"

    # -- the step -------------------------------------------------------------------------------
    def _group_norms(self, thetas: list[torch.Tensor], grads: list[torch.Tensor | None]) -> torch.Tensor:
        """(3, n_groups) in the accumulation dtype: per-group sums of ||theta-E||_1, ||g||_1, ||g-g_prev||_1.

        A tensor without a gradient contributes NaN to its group's b, which marks the group skipped.
        """
        n = len(thetas)
        a: list[torch.Tensor] = [self._zero] * n
        b: list[torch.Tensor] = [self._nan] * n
        c: list[torch.Tensor] = [self._zero] * n
        for chunk in self._chunks:
            # theta (any dtype) - E (state dtype) promotes to the state dtype: no separate cast pass.
            diff = torch._foreach_sub([thetas[i] for i in chunk], [self._shadow[i] for i in chunk])
            for i, v in zip(chunk, self._l1(diff, scratch=True)):
                a[i] = v
            del diff
            present = [i for i in chunk if grads[i] is not None]
            if not present:
                continue
            g = [grads[i] for i in present]
            for i, v in zip(present, self._l1(g)):
                b[i] = v
            gdiff = torch._foreach_sub(g, [self._grad_prev[i] for i in present])
            for i, v in zip(present, self._l1(gdiff, scratch=True)):
                c[i] = v
            del gdiff
        return self._group_sums(torch.stack(a + b + c).view(3, n))

    def _l1(self, tensors: list[torch.Tensor], scratch: bool = False) -> list[torch.Tensor]:
        """L1 norm of each tensor in the accumulation dtype (``scratch``: the tensors may be overwritten).

        On a CPU, one foreach ``abs`` and then a ``sum`` per tensor (a cascade sum):
        ``torch._foreach_norm`` there accumulates sequentially, 2e-6 relative off for 10^4 elements
        and 2e-5 for 10^6 (measured against float64 sums), and is slower too (10 against 3.7 ms for
        twenty 128 x 4096 tensors). On a GPU the foreach norm is a tree reduction (accurate)."""
        if self.device.type == "cpu":
            if scratch:
                torch._foreach_abs_(tensors)
            else:
                tensors = torch._foreach_abs(tensors)
            return [t.sum(dtype=self._acc_dtype) for t in tensors]
        return list(torch._foreach_norm(tensors, 1, dtype=self._acc_dtype))

    def _group_sums(self, per_tensor: torch.Tensor) -> torch.Tensor:
        """(3, n_tensors) -> (3, n_groups) in a fixed summation order."""
        # Column n is the zero that pads groups with fewer members than the largest one.
        padded = torch.cat([per_tensor, per_tensor.new_zeros(3, 1)], dim=1)
        return padded[:, self._pad_idx].sum(dim=-1)

    @torch.no_grad()
    def update(self) -> None:
        """Blend the live weights into the EMA. Call after ``optimizer.step()``, before ``zero_grad``.

        The first call after construction or :meth:`reset` copies the weights and only records the
        gradient. A group is *skipped* (EMA and g_prev untouched, counted in :attr:`num_skipped`)
        when one of its gradients holds NaN/inf or one of its parameters has ``.grad is None``.
        """
        thetas = [_local(p) for p in self._params]
        grads = [None if p.grad is None else _local(p.grad) for p in self._params]
        fused = None if self._fused is None else self._fused.prepare(thetas, self._shadow, grads, self._grad_prev)
        if fused is not None:
            per_tensor = self._fused.norms(fused, thetas, self._shadow, grads, self._grad_prev)
            sums = self._group_sums(per_tensor.to(self._acc_dtype))
        else:
            sums = self._group_norms(thetas, grads)
        if self._reduce_group is not None:
            # One collective for all three norms of all groups: shard sums -> full-tensor norms.
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=self._reduce_group)
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
        self._initialized.logical_or_(valid)

        per_tensor_weight = weight.to(self.state_dtype)[self._gidx]  # lerp wants E's dtype
        per_tensor_valid = valid[self._gidx]
        if fused is not None:
            self._fused.blend(fused, thetas, self._shadow, grads, self._grad_prev, per_tensor_weight,
                              per_tensor_valid)
            self._steps += 1
            return
        for E, theta, g, gp, w, ok_t in zip(self._shadow, thetas, grads, self._grad_prev,
                                            per_tensor_weight.unbind(0), per_tensor_valid.unbind(0)):
            # A skipped group's parameters may hold NaN (the optimizer applied its NaN gradient):
            # lerping towards E itself keeps E bit-identical, where weight 0 * NaN would poison it.
            target = torch.where(ok_t, theta, E)
            E.lerp_(target if target.dtype == E.dtype else target.to(E.dtype), w)
            if g is not None:
                if g.dtype == gp.dtype:
                    torch.where(ok_t, g, gp, out=gp)  # in place: no temporary
                else:
                    gp.copy_(torch.where(ok_t, g, gp))
        self._steps += 1

    # -- using the EMA weights --------------------------------------------------------------------
    @torch.no_grad()
    def copy_to(self) -> None:
        """Overwrite the live parameters with the EMA weights (cast to the parameters' dtype)."""
        torch._foreach_copy_([_local(p) for p in self._params], self._shadow)

    @torch.no_grad()
    def store(self) -> None:
        """Keep a copy of the live weights, e.g. before :meth:`copy_to` for an evaluation."""
        self._backup = [_local(p).clone() for p in self._params]

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by :meth:`store` and free the copy."""
        if self._backup is None:
            raise RuntimeError("restore() without a preceding store()")
        torch._foreach_copy_([_local(p) for p in self._params], self._backup)
        self._backup = None

    @torch.no_grad()
    def reset(self) -> None:
        """Start afresh (next task): the next update() copies the weights again; counters cleared."""
        torch._foreach_copy_(self._shadow, [_local(p) for p in self._params])
        torch._foreach_zero_(self._grad_prev)
        self._initialized.zero_()
        self._fallbacks.zero_()
        self._skipped.zero_()
        self._last_alpha.fill_(math.nan)
        self._alpha_sum.zero_()
        self._blends.zero_()
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

    # -- reading (these synchronise with the device) -----------------------------------------------
    @property
    def groups(self) -> dict[str, list[str]]:
        """Group name -> names of its parameters."""
        return {g: [self.names[t] for t in m] for g, m in zip(self._group_names, self._members)}

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
