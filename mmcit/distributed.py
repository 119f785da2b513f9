"""Data parallelism: what a run needs to know when ``accelerate launch`` (or torchrun) starts it.

Every process holds the whole model and draws the same global batch from the same seeded RNG; each
takes its share (rows ``rank::world``), scales its loss by its share of the global batch's label
tokens, and the gradients of the trainable weights are summed across processes. The result is the
gradient of the single-process loss over the global batch, so every process makes the same
optimizer step, the adaptive EMA sees the same gradients and weights on every rank, and an adapter
switch (LCIA adds adapters between tasks) needs no re-wrapping of the model, as DDP would. Trainable
weights are LoRA and the projector, so the one un-overlapped all-reduce per step is small.
Evaluation shards the test samples the same way and gathers the answers; only rank 0 writes files.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

import torch


def world_size() -> int:
    return torch.distributed.get_world_size() if _initialized() else 1


def rank() -> int:
    return torch.distributed.get_rank() if _initialized() else 0


def is_main() -> bool:
    return rank() == 0


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_from_environment() -> str | None:
    """Join the process group a launcher describes (WORLD_SIZE > 1); returns this process's device.

    ``accelerate launch --multi_gpu`` (and torchrun, which it runs) set RANK, WORLD_SIZE,
    LOCAL_RANK and the rendezvous address. GPUs use nccl, one per local rank; without GPUs the
    processes use gloo on the CPU (accelerate's own state object would fall back to a single
    process there, so the group is joined directly).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _initialized():
        return None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        torch.distributed.init_process_group(backend="nccl", device_id=torch.device("cuda", local))
        return f"cuda:{local}"
    torch.distributed.init_process_group(backend="gloo")
    return "cpu"


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _initialized():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``params`` across processes, in one flat all-reduce."""
    if not _initialized():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def shard(items: list) -> list:
    """This process's share of ``items``: every world-th element, starting at its rank."""
    return items[rank()::world_size()]


def gather_shards(local: list[Any], total: int) -> list[Any]:
    """Inverse of :func:`shard`: the full list, in the original order, on every process."""
    if not _initialized():
        return local
    parts: list[list[Any]] = [None] * world_size()  # type: ignore[list-item]
    torch.distributed.all_gather_object(parts, local)
    out: list[Any] = [None] * total
    for r, part in enumerate(parts):
        out[r::world_size()] = part
    return out


@contextmanager
def main_first():
    """Rank 0 runs the block first, the others after it (to reuse what it cached)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def barrier() -> None:
    if _initialized():
        torch.distributed.barrier()
