"""What a run costs: the ``costs`` block of results.json.

``run_costs`` counts, at the moment results.json is written (after every stage; the last write is
the cost after the stream):

* ``trainable_parameters``: values the optimizer updates at a step (the active adapter's LoRA
  matrices and projector copy);
* ``stored_parameters``: values kept beyond the frozen base model: every adapter (``adapters``,
  with ``per_adapter``) and what the method keeps besides (``method``, by kind, from
  ``Method.stored_tensors()``: EWC's Fisher and anchor), their sum (``total``) and its size in
  bytes as stored in memory (``total_bytes``);
* ``stored_samples``: training samples the method keeps (``Method.stored_samples()``: a replay
  buffer), by kind;
* ``peak_memory_bytes`` with ``peak_memory_source``: on a GPU ``torch.cuda.max_memory_allocated``
  of the model's device, on a CPU the process's peak resident set size (``VmHWM`` on Linux, else
  ``ru_maxrss``). ``run`` resets both counters when it starts (:func:`reset_peak_memory`), so a run
  in a worker process that ran others before (``mmcit demo``, ``mmcit sweep``) counts its own peak
  only; where the kernel refuses the reset, the figure is the process's peak so far. A resumed run
  counts its own process only;
* time: ``wall_seconds`` (the run's total, interrupted runs included), ``train_seconds`` and
  ``eval_seconds`` summed over stages, ``train_steps`` and ``seconds_per_step``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mmcit.methods.base import Method
    from mmcit.models.wrapper import MMModel

__all__ = ["peak_memory", "reset_peak_memory", "run_costs"]

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_memory() -> None:
    """Start this process's peak-memory counters afresh: CUDA's peak statistics, and on Linux the
    peak resident set size (writing 5 to ``/proc/self/clear_refs`` resets ``VmHWM`` and nothing else)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for k in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(k)
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:  # not Linux, or not allowed: the peak stays the process's
        pass


def peak_memory(device: torch.device) -> tuple[int, str]:
    """``(bytes, source)``: the peak of this process on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "VmHWM"
    except (OSError, ValueError, IndexError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"


def run_costs(model: "MMModel", method: "Method", timing: list[dict], total_seconds: float) -> dict[str, Any]:
    """The ``costs`` block (see the module docstring) for the run as it stands now."""
    trainable, _ = model.num_parameters()
    per_adapter = model.adapter_sizes()
    held = method.stored_tensors()
    by_kind = {kind: sum(t.numel() for t in tensors) for kind, tensors in held.items()}
    method_bytes = sum(t.numel() * t.element_size() for tensors in held.values() for t in tensors)
    adapters = sum(per_adapter.values())
    peak, source = peak_memory(model.device)
    train_seconds = sum(t.get("train_seconds", 0.0) for t in timing)
    steps = sum(t.get("steps", 0) for t in timing)
    return {
        "trainable_parameters": trainable,
        "stored_parameters": {"total": adapters + sum(by_kind.values()), "adapters": adapters,
                              "per_adapter": per_adapter, "method": by_kind,
                              "total_bytes": model.adapter_bytes() + method_bytes},
        "stored_samples": dict(method.stored_samples()),
        "peak_memory_bytes": peak,
        "peak_memory_source": source,
        "wall_seconds": total_seconds,
        "train_seconds": train_seconds,
        "eval_seconds": sum(t.get("eval_seconds", 0.0) for t in timing),
        "train_steps": steps,
        "seconds_per_step": train_seconds / steps if steps else None,
    }
