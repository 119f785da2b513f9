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
    """Number of data-parallel processes (1 without a process group)."""
    return torch.distributed.get_world_size() if _initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if _initialized() else 0


def is_main() -> bool:
    """True on rank 0, which writes the run's files."""
    return rank() == 0


def launched_rank() -> int:
    """This process's rank, also after :func:`shutdown` left the group: the launcher's RANK then."""
    return rank() if _initialized() else int(os.environ.get("RANK", "0"))


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
    """Sum ``tensor`` over the processes, in place (a no-op alone)."""
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
    """Wait for every process (a no-op alone)."""
    if _initialized():
        torch.distributed.barrier()


def shutdown() -> None:
    """Leave the process group at the end of a run: wait for every process, then destroy it.

    Without the barrier, a process that finishes first can tear down its gloo connections while a
    peer still talks to it, and a process that exits with its group alive can abort in gloo's
    threads during interpreter teardown ("terminate called without an active exception").
    """
    if _initialized():
        barrier()
        torch.distributed.destroy_process_group()


# -- sharded frozen weights (FSDP2) -------------------------------------------------------------------
ADAPTER_MARKERS = ("lora_", "modules_to_save")


def fsdp_requested(flag: bool) -> bool:
    """``train.fsdp``, or ``accelerate launch --use_fsdp`` (which sets ACCELERATE_USE_FSDP)."""
    return flag or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def shard_frozen_weights(model) -> int:
    """Shard the frozen base weights across the processes with FSDP2; returns the number of
    sharded units (each language-model layer, plus the rest of the model as the root).

    Adapter weights (LoRA, projector copies) are left out of FSDP (``ignored_params``): they stay
    whole on every process, so the data-parallel gradient sum, the adaptive EMA, checkpoints and
    adapters added between tasks work exactly as without sharding. What sharding saves is the
    memory of the frozen LLM (and tower), which dominates LoRA training.
    """
    from torch.distributed.fsdp import fully_shard

    base = model.peft.get_base_model()
    broadcast_from_main(model.peft)
    adapters = {p for n, p in model.peft.named_parameters() if any(m in n for m in ADAPTER_MARKERS)}
    units = 0
    lm = model.parts.language_model  # "language_model"; Idefics3's is "text_model"
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.endswith("layers") and lm in name:
            for layer in module:
                fully_shard(layer, ignored_params={p for p in layer.parameters() if p in adapters})
                units += 1
    fully_shard(base, ignored_params={p for p in base.parameters() if p in adapters})
    return units + 1


def broadcast_from_main(module: torch.nn.Module) -> None:
    """Give every process rank 0's weights and buffers.

    Under ``accelerate launch --use_fsdp`` (CPU-RAM-efficient loading, its default) transformers
    loads a checkpoint on local rank 0 only and leaves zeros on the others, expecting them to be
    filled from rank 0 before sharding, as FSDP1's sync_module_states did.
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)


@contextmanager
def gathered(model):
    """Every process holds the whole model inside the block (evaluation: processes generate
    different numbers of tokens, which sharded weights could not follow); sharded again after."""
    from torch.distributed.fsdp import FSDPModule

    base = model.peft.get_base_model()
    units = [m for m in base.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    inner = [m for m in units if m is not base]
    for m in inner:
        m.set_reshard_after_forward(False, recurse=False)
    for m in units:
        m.unshard()
    try:
        yield
    finally:
        for m in inner:
            m.set_reshard_after_forward(True, recurse=False)
        for m in units:
            m.reshard()
