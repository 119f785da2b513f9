"""Fused Triton kernels for :class:`mmcit.ema.AdaptiveEMA` on GPUs.

The plain path of ``AdaptiveEMA.update()`` runs a few PyTorch operations per tensor; with LLaVA's
452 LoRA and projector tensors that is about two thousand kernel launches per step, and the GPU
waits on the launches rather than on memory (measured on an H200: 37 ms per update against a 2.5 ms
memory-traffic floor). Here the whole update is three launches over all tensors of one dtype:

1. ``_norms_kernel``: one program per block of ``BLOCK`` elements of one tensor reads theta, E, g
   and g_prev once and writes the block's three partial L1 sums;
2. ``_reduce_kernel``: one program per tensor sums its blocks' partials in a fixed order
   (deterministic, so data-parallel ranks stay bit-identical);
3. ``_blend_kernel``: after the balance weights are computed on the device (in ``ema.py``), one
   program per block reads theta, E, g and g_prev again and writes E and g_prev:
   ``E = lerp(E, valid ? theta : E, w)`` and ``g_prev = valid ? g : g_prev``.

That is exactly the memory-traffic floor of docs/method.md (read the four twice, write two). The kernels address the
tensors of a list through one base tensor and per-tensor element offsets from it, so no tensor is
copied into a flat buffer. Without a GPU they run under Triton's interpreter
(``TRITON_INTERPRET=1``), which is how the CPU tests check them against the plain path.
"""
from __future__ import annotations

from typing import Callable

import torch
import triton
import triton.language as tl

BLOCK = 4096  # elements per program of the two streaming kernels
RBLOCK = 1024  # partials per iteration of the per-tensor reduction


@triton.jit
def _norms_kernel(theta, E, g, gp, t_off, e_off, g_off, p_off, block_tensor, block_start, numel, partial,
                  n_blocks, BLOCK: tl.constexpr, AT: tl.constexpr, AE: tl.constexpr, AG: tl.constexpr,
                  AP: tl.constexpr):
    b = tl.program_id(0)
    t = tl.load(block_tensor + b)
    start = tl.load(block_start + b)
    idx = start + tl.arange(0, BLOCK)
    mask = idx < tl.load(numel + t)
    th = tl.load(theta + tl.multiple_of(tl.load(t_off + t), AT) + idx, mask=mask, other=0.0).to(tl.float32)
    e = tl.load(E + tl.multiple_of(tl.load(e_off + t), AE) + idx, mask=mask, other=0.0).to(tl.float32)
    gr = tl.load(g + tl.multiple_of(tl.load(g_off + t), AG) + idx, mask=mask, other=0.0).to(tl.float32)
    prev = tl.load(gp + tl.multiple_of(tl.load(p_off + t), AP) + idx, mask=mask, other=0.0).to(tl.float32)
    tl.store(partial + b, tl.sum(tl.abs(th - e), axis=0))
    tl.store(partial + n_blocks + b, tl.sum(tl.abs(gr), axis=0))
    tl.store(partial + 2 * n_blocks + b, tl.sum(tl.abs(gr - prev), axis=0))


@triton.jit
def _reduce_kernel(partial, first_block, out, n_blocks, n_tensors, RBLOCK: tl.constexpr):
    t = tl.program_id(0)
    k = tl.program_id(1)  # which of the three norms
    lo = tl.load(first_block + t)
    hi = tl.load(first_block + t + 1)
    acc = tl.zeros((RBLOCK,), dtype=tl.float32)
    for s in range(lo, hi, RBLOCK):
        i = s + tl.arange(0, RBLOCK)
        acc += tl.load(partial + k * n_blocks + i, mask=i < hi, other=0.0)
    tl.store(out + k * n_tensors + t, tl.sum(acc, axis=0))


@triton.jit
def _blend_kernel(theta, E, g, gp, t_off, e_off, g_off, p_off, block_tensor, block_start, numel, weight, valid,
                  BLOCK: tl.constexpr, AT: tl.constexpr, AE: tl.constexpr, AG: tl.constexpr, AP: tl.constexpr):
    b = tl.program_id(0)
    t = tl.load(block_tensor + b)
    start = tl.load(block_start + b)
    idx = start + tl.arange(0, BLOCK)
    mask = idx < tl.load(numel + t)
    w = tl.load(weight + t)
    ok = tl.load(valid + t) != 0  # valid: a bool tensor, read as is
    e_ptr = E + tl.multiple_of(tl.load(e_off + t), AE) + idx
    p_ptr = gp + tl.multiple_of(tl.load(p_off + t), AP) + idx
    th = tl.load(theta + tl.multiple_of(tl.load(t_off + t), AT) + idx, mask=mask, other=0.0)
    e = tl.load(e_ptr, mask=mask, other=0.0)
    # A skipped tensor blends towards E itself (its theta may hold NaN): E stays bit-identical.
    target = tl.where(ok, th.to(e.dtype), e).to(tl.float32)
    e32 = e.to(tl.float32)
    diff = target - e32
    # torch.lerp's two branches, so that weight 1 (the first step) gives theta exactly.
    new = tl.where(w < 0.5, e32 + w * diff, target - diff * (1.0 - w))
    tl.store(e_ptr, new.to(e.dtype), mask=mask)
    gr = tl.load(g + tl.multiple_of(tl.load(g_off + t), AG) + idx, mask=mask, other=0.0)
    prev = tl.load(p_ptr, mask=mask, other=0.0)
    tl.store(p_ptr, tl.where(ok, gr.to(prev.dtype), prev), mask=mask)


def _align(t: torch.Tensor) -> int:
    """Elements per 16 bytes: every tensor's start is 16-byte aligned (checked in ``offsets``)."""
    return max(1, 16 // t.element_size())


def offsets(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """Element offsets of each tensor's start from the first one's, or None if some tensor is not
    contiguous, has another dtype, or starts off a 16-byte boundary (the kernels then do not apply)."""
    host = _offsets_of(tensors, [t.data_ptr() for t in tensors])
    return None if host is None else torch.tensor(host, dtype=torch.int64)


def _offsets_of(tensors: list[torch.Tensor], ptrs: list[int]) -> list[int] | None:
    base, size = tensors[0], tensors[0].element_size()
    if any(p % 16 for p in ptrs) or any(t.dtype != base.dtype or not t.is_contiguous() for t in tensors):
        return None
    return [(p - ptrs[0]) // size for p in ptrs]


class Launch:
    """What the kernels of one step take: the first tensor of each of the four lists (the base the
    offsets count from) and the four device offset tables."""

    __slots__ = ("bases", "tables")

    def __init__(self, bases: list[torch.Tensor], tables: list[torch.Tensor]):
        self.bases = bases
        self.tables = tables


class FusedUpdate:
    """The block layout of a fixed list of tensors (their numels), built once, and the launches.

    The launch arguments are prepared once and reused: the block layout and the work buffers at
    construction, each offset table when its tensors first come and again only when they moved
    (the gradients may, under ``zero_grad(set_to_none=True)``; the caching allocator mostly hands
    the same addresses back, and then nothing is rebuilt). A step costs the host one pointer read per
    parameter and gradient (:meth:`prepare_params`), no tensor objects, and three kernel launches.
    """

    def __init__(self, numels: list[int], device: torch.device):
        block_tensor, block_start, first = [], [], [0]
        for t, n in enumerate(numels):
            starts = range(0, max(n, 1), BLOCK)
            block_tensor += [t] * len(starts)
            block_start += list(starts)
            first.append(len(block_tensor))
        self.n_tensors = len(numels)
        self.n_blocks = len(block_tensor)
        self.device = device
        self.block_tensor = torch.tensor(block_tensor, dtype=torch.int32, device=device)
        self.block_start = torch.tensor(block_start, dtype=torch.int64, device=device)
        self.first_block = torch.tensor(first, dtype=torch.int64, device=device)
        self.numel = torch.tensor(numels, dtype=torch.int64, device=device)
        self._partial = torch.empty(3 * self.n_blocks, dtype=torch.float32, device=device)
        # Per list (theta, E, g, g_prev): the pointers its table was built for, and the table. Only
        # pointers are kept, never the tensors: holding last step's gradient would keep its memory
        # from being handed to this step's gradient, and move the gradients every step.
        self._ptrs: list[list[int] | None] = [None] * 4
        self._tables: list[torch.Tensor | None] = [None] * 4
        self._theta_base: torch.Tensor | None = None

    def _table(self, k: int, ptrs: list[int], tensors: Callable[[], list[torch.Tensor]]) -> bool:
        """Make list ``k``'s table current for these pointers (rebuilt from ``tensors()`` only when
        they changed); False where the kernels do not apply to those tensors."""
        if ptrs == self._ptrs[k]:
            return True
        host = _offsets_of(tensors(), ptrs)
        if host is None:
            self._ptrs[k] = None
            return False
        host = torch.tensor(host, dtype=torch.int64)
        if self.device.type == "cuda":
            host = host.pin_memory()  # a fresh pinned block: no race with an earlier copy
        self._tables[k] = host.to(self.device, non_blocking=True)
        self._ptrs[k] = ptrs
        return True

    def prepare(self, thetas, shadow, grads, grad_prev) -> Launch | None:
        """The launch arguments for :meth:`norms` and :meth:`blend` over these four lists, or None
        where the kernels do not apply this step (a missing gradient; mixed dtypes, non-contiguous
        or unaligned tensors)."""
        if any(g is None for g in grads):
            return None
        lists = (thetas, shadow, grads, grad_prev)
        if not all(self._table(k, [t.data_ptr() for t in ts], lambda ts=ts: ts) for k, ts in enumerate(lists)):
            return None
        return Launch([ts[0] for ts in lists], list(self._tables))

    def prepare_params(self, params: list[torch.Tensor], shadow: list[torch.Tensor],
                       grad_prev: list[torch.Tensor]) -> Launch | None:
        """:meth:`prepare` for plain (not DTensor) parameters and their ``.grad``, read as pointers:
        no detached views are made unless a table has to be rebuilt. ``shadow`` and ``grad_prev``
        are the EMA's own lists, whose tensors never move once their tables exist."""
        grads = [p.grad for p in params]
        if any(g is None for g in grads):
            return None
        rebuilt = self._ptrs[0] is None
        ok = (self._table(0, [p.data_ptr() for p in params], lambda: [p.detach() for p in params])
              and (self._ptrs[1] is not None or self._table(1, [t.data_ptr() for t in shadow], lambda: shadow))
              and self._table(2, [g.data_ptr() for g in grads], lambda: grads)
              and (self._ptrs[3] is not None or self._table(3, [t.data_ptr() for t in grad_prev], lambda: grad_prev)))
        if not ok:
            return None
        if rebuilt or self._theta_base is None or self._theta_base.data_ptr() != self._ptrs[0][0]:
            self._theta_base = params[0].detach()
        return Launch([self._theta_base, shadow[0], grads[0], grad_prev[0]], list(self._tables))

    def norms(self, launch: Launch) -> torch.Tensor:
        """(3, n_tensors) float32: per-tensor ||theta - E||_1, ||g||_1, ||g - g_prev||_1."""
        (th, e, g, gp), off = launch.bases, launch.tables
        _norms_kernel[(self.n_blocks,)](
            th, e, g, gp, off[0], off[1], off[2], off[3], self.block_tensor, self.block_start, self.numel,
            self._partial, self.n_blocks, BLOCK=BLOCK, AT=_align(th), AE=_align(e), AG=_align(g), AP=_align(gp))
        out = torch.empty(3, self.n_tensors, dtype=torch.float32, device=self.device)
        _reduce_kernel[(self.n_tensors, 3)](self._partial, self.first_block, out, self.n_blocks, self.n_tensors,
                                            RBLOCK=RBLOCK)
        return out

    def blend(self, launch: Launch, weight: torch.Tensor, valid: torch.Tensor) -> None:
        """``weight`` (float32) and ``valid`` (bool): one per tensor, on the device."""
        (th, e, g, gp), off = launch.bases, launch.tables
        _blend_kernel[(self.n_blocks,)](
            th, e, g, gp, off[0], off[1], off[2], off[3], self.block_tensor, self.block_start, self.numel,
            weight.to(torch.float32).contiguous(), valid, BLOCK=BLOCK, AT=_align(th), AE=_align(e),
            AG=_align(g), AP=_align(gp))
